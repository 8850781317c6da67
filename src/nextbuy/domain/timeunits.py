"""Time units of the event tables (timestamps are naive UTC ``datetime64[ns]``;
durations such as ``elapsed_days`` are counted in days)."""

from __future__ import annotations

import pandas as pd

DAY = pd.Timedelta(days=1)
