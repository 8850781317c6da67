"""Container health checks of docker/compose.yaml, light enough for a loaded 2-core host.

    python /opt/nextbuy/docker/healthcheck.py url http://localhost:8080/api/v2/version
    python /opt/nextbuy/docker/healthcheck.py process airflow triggerer

``url``: the service answers below 500 within 5 s.  ``process``: a process of this container
runs with every given word in its command line (the Airflow CLI's own checks import Airflow,
take > 30 s under load and pile up; this reads /proc and imports nothing).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import urlopen


def url_answers(url: str) -> bool:
    try:
        with urlopen(url, timeout=5) as reply:
            return reply.status < 500
    except HTTPError as error:
        return error.code < 500
    except OSError:
        return False


def process_runs(words: list[str]) -> bool:
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:  # ended meanwhile
            continue
        line = " ".join(argv)
        if all(word in line for word in words) and "healthcheck.py" not in line:
            return True
    return False


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "url":
        return 0 if url_answers(argv[1]) else 1
    if len(argv) >= 2 and argv[0] == "process":
        return 0 if process_runs(argv[1:]) else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
