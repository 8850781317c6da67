"""The params.yaml section of ``nextbuy serve``: how much work one server process takes on
at once, what it answers when that is full, and how long SIGTERM gives it to drain. No DVC
stage reads it: changing it re-runs nothing, a restarted server takes it up."""

from __future__ import annotations

from pydantic import Field

from nextbuy.config_base import _Section

# Requests computed at once run on the event loop's default thread pool, which asyncio sizes
# min(32, CPUs + 4): more slots than that would queue inside the pool, out of reach of the
# queue bound and of cancellation.
MAX_CONCURRENT = 32


class ServingConfig(_Section):
    max_concurrent: int = Field(ge=1, le=MAX_CONCURRENT)
    max_queue: int = Field(ge=0, le=10_000)
    retry_after_s: int = Field(ge=1, le=3600)
    drain_s: int = Field(ge=2, le=600)  # the last second is for writing the 503s of what is cut off
