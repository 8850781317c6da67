"""Candidate retrieval for top-K: an inner-product index (faiss) over the products'
target side, so a source's top-K is ranked among a few hundred retrieved candidates
instead of the whole catalogue.

The mean conversion logit of u -> v is an inner product plus the head's bias,
``(s̄_u ∘ w) · t̄_v + b``: the index holds ``x_v = t̄_v ∘ w`` (the head folded in) and
the query is ``s̄_u``. ``flat`` searches that inner product exactly. ``ivf`` and ``hnsw``
search the equivalent nearest-neighbour problem instead (``x_v -> [x_v, sqrt(M² - |x_v|²)]``
with M the largest norm, ``q -> [q, 0]``: the L2 order is the inner-product order): an
inner-product HNSW graph leaves many products unreachable on clustered embeddings
(measured on a trained model's 5,000 products: recall of the top-200 0.92 at efSearch
1,000, against 1.00 after the reduction). The retrieved candidates are then scored
exactly (score, uncertainty, bucket, calibrated probability, decision) and ranked like
the exact method: accepted first, then calibrated probability, score breaking ties
(:func:`rank`).

The served ranking is not the mean logit: the score shrinks with the logit variance,
which also picks the bucket, its calibration and its threshold. So the re-rank proves,
per source, that no product left out could enter its top-K (:func:`key_bound`): every
product not retrieved has a mean logit of at most the last one retrieved, ``m_C``, and
a variance within the bounds its source allows, so in bucket ``b`` its score is at most
``sigmoid(m_C / sqrt(1 + π var / 8))`` at the end of the bucket's variance range that
favours it, and its ranking key at most that score's through the bucket's threshold and
(monotone) calibration. A source whose k-th key beats that bound in every bucket is
complete. The others are completed exactly by a scan (:func:`_scan`): the mean logit of
every product (one matrix product, the cheap part of scoring), and an exact re-rank of
the products whose mean logit is high enough that they could still reach the k-th key
found so far (:func:`entry_threshold`).

``flat`` searches exactly, so the proof holds and top-K is exact. ``ivf`` and ``hnsw``
search approximately: a product above ``m_C`` they miss can make a proof wrong, so their
recall against the exact method is measured (``nextbuy bench serve``).

The scan is exact but costs a pass over the catalogue per unproven source, and the proof is
a worst case: it lets an unretrieved product take the most favourable variance found anywhere
in the catalogue. On a trained 1M-product model (its products' summed target variances run
from 0.004 to 6.1) no source's list of 500 was provable, so scanning them all would take about a day,
while the re-ranked candidates alone already held 99.7% of the exact top-20 (``flat``, 2,000
sampled sources). ``completion`` therefore chooses: ``scan`` always completes unproven
sources, ``none`` serves their re-ranked candidates, and ``auto`` scans with ``flat`` (top-K
stays exact where the catalogue is small enough for an exact search) and not with the
approximate indexes, whose lists are approximate anyway.
"""

from nextbuy.domain.retrieval.index import (
    CandidateIndex,
    build,
    index_kind,
    ivf_lists,
    scans_unproven,
    search,
    source_weights,
    to_l2,
)
from nextbuy.domain.retrieval.ranking import (
    BOUND_SLACK,
    GATHER_FLOATS,
    RESULT_COLUMNS,
    SCAN_BLOCK,
    SCAN_CELLS,
    SCAN_MAX_BLOCK,
    Ranking,
    entry_threshold,
    key_bound,
    rank,
    ranking_key,
    retrieve,
    top_k,
)

__all__ = [
    "BOUND_SLACK",
    "GATHER_FLOATS",
    "RESULT_COLUMNS",
    "SCAN_BLOCK",
    "SCAN_CELLS",
    "SCAN_MAX_BLOCK",
    "CandidateIndex",
    "Ranking",
    "build",
    "entry_threshold",
    "index_kind",
    "ivf_lists",
    "key_bound",
    "rank",
    "ranking_key",
    "retrieve",
    "scans_unproven",
    "search",
    "source_weights",
    "to_l2",
    "top_k",
]
