"""nextbuy.allocator: freed blocks are reused, so an allocate-free loop stops faulting memory in."""

import os
import subprocess
import sys

import pytest

LOOP = """
import resource, sys
import numpy as np
if sys.argv[1] == "tuned":
    from nextbuy.allocator import keep_freed_memory
    assert keep_freed_memory()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    block = np.ones(8 << 20)  # 64 MB written: every page touched, then freed
    del block
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(mode: str) -> int:
    # Without numpy's huge-page advice: with it, a 64 MB block faults in as 32 huge pages when the
    # kernel has them free and as 16k small ones when it has not, so the default's count (660 or
    # 10,880 on one machine within the hour) says more about fragmentation than about reuse.
    env = {**os.environ, "NUMPY_MADVISE_HUGEPAGE": "0"}
    command = [sys.executable, "-c", LOOP, mode]
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return int(done.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    default, tuned = _page_faults("default"), _page_faults("tuned")
    # default: each 64 MB block is a fresh mmap (~16k page faults x 20); tuned: the heap is reused
    assert tuned < default / 4, (default, tuned)


RELEASE = """
import resource, sys
import numpy as np
from nextbuy.allocator import keep_freed_memory, release_freed_memory

def rss_mb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20

assert keep_freed_memory()
block = np.ones(32 << 20)  # 256 MB from the heap
keep = np.ones(1 << 10)  # above it: the heap top is not free, trimming the top cannot help
del block
kept = rss_mb()
assert release_freed_memory()
print(kept - rss_mb())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_released_memory_leaves_the_resident_set():
    done = subprocess.run([sys.executable, "-c", RELEASE], capture_output=True, text=True, check=True)
    assert float(done.stdout.strip()) > 200  # MB of the freed 256 MB block handed back
