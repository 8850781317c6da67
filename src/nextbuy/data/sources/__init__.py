"""Real data through the same schemas: a directed edge list, a PPNP-style
``.npz`` graph, an impressions log, a catalogue, and a store's raw logs (orders,
impressions, interactions).

Self-loops and duplicate edges are the field's convention, not errors: they
are cleaned, counted in ``GraphSource.cleaning`` and logged; so are exact duplicate
rows of an impressions log (a row logged twice). Anything else wrong raises
``DataError`` naming the file, the column and the first rows: among them edge-list
ids that would silently become new products (``abc`` in an integer-keyed list,
``1.5``, ``-5``), see :func:`read_edge_list`.

One module per source: ``keys`` (shared checks, product keys, times, cleaning, raw log files),
``edge_list``, ``npz``, ``impressions``, ``catalogue``, ``events``; their public names are
importable from here.
"""

from __future__ import annotations

from nextbuy.data.sources.catalogue import graph_with_catalogue, read_catalogue
from nextbuy.data.sources.edge_list import read_edge_list
from nextbuy.data.sources.events import EventLogs, read_event_logs
from nextbuy.data.sources.impressions import read_impressions_log
from nextbuy.data.sources.keys import (
    EVENT_COLUMNS,
    INTEGER_KEYED_SHARE,
    NPZ_ADJ_KEYS,
    NPZ_ATTR_KEYS,
    GraphSource,
    read_log,
)
from nextbuy.data.sources.npz import read_npz_graph

__all__ = [
    "EVENT_COLUMNS",
    "INTEGER_KEYED_SHARE",
    "NPZ_ADJ_KEYS",
    "NPZ_ATTR_KEYS",
    "EventLogs",
    "GraphSource",
    "graph_with_catalogue",
    "read_catalogue",
    "read_edge_list",
    "read_event_logs",
    "read_impressions_log",
    "read_log",
    "read_npz_graph",
]
