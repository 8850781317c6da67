"""The built-in simulated store, with a ground truth only evaluation may read.

A store is a ``StoreWorld`` (products, their hidden latent vectors and
popularity, and the directed co-purchase graph) plus ``Traffic`` drawn from it
(recommendation impressions with click, cart and conversion times, and the
true conversion probability behind each). Everything is pure and vectorised;
the same seed gives the same store.

Stores launch products continuously (``launch_rate``): a random share of the
catalogue launches during the impression history, and nobody buys or is shown
a product before its launch (``truth_products.launched_at``, NaT = there from
before the purchase history). So the freshest days hold products with no
matured history: waiting for their labels loses them, and training naively on
the censored labels under-scores them.

Affinity of "bought u, shown v" is ``src_u · tgt_v``. Its scale is fixed by
the constants of ``world``, so a world built from a real graph (``world_from_graph``)
converts at rates comparable to a simulated one.
"""

from nextbuy.data.simulator.purchases import complement_relations, simulate_world
from nextbuy.data.simulator.timeline import simulate_history, simulate_span, simulate_store, store_purchases
from nextbuy.data.simulator.traffic import PAIR_NOISE, Window, conversion_probability, simulate_traffic
from nextbuy.data.simulator.world import StoreWorld, Traffic, store_world, world_from_graph

__all__ = [
    "PAIR_NOISE",
    "StoreWorld",
    "Traffic",
    "Window",
    "complement_relations",
    "conversion_probability",
    "simulate_history",
    "simulate_span",
    "simulate_store",
    "simulate_traffic",
    "simulate_world",
    "store_purchases",
    "store_world",
    "world_from_graph",
]
