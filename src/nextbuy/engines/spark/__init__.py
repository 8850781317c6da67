"""The Spark engine (params.yaml ``engine.kind: spark``): the data-heavy parts of the stages run
on Apache Spark (``engine.spark.master``: ``local[N]``, a standalone cluster, YARN, Kubernetes
or Spark Connect), each in a module of its own here:

* ``events``: ingest's graph and labels of a store's raw logs (``ingest.source: events``)
  and traffic's labels of the logs after the snapshot, per bucket of customers on the executors;
* ``logs``: ingest's raw parquet logs read, checked, cleaned and coded per row group, with
  ``log_checks`` (what needs the whole log: duplicate rows, returns, shared ids, the ids);
* ``impressions``: ingest's labelled impressions of those logs split, sorted, checked and
  counted on Spark, and streamed from Spark's parts into the one impressions file;
* ``edge_list``: ingest's edge list (``ingest.source: edge_list``) read, checked per part by
  the pandas engine's checks, keyed and its duplicate edges merged on the executors;
* ``label_delay``: label_delay's weights for every impression (the delay models fitted
  on the driver from ``label_delay.fit_sample_rows`` train rows, applied on the executors),
  its metrics and plot tables from ``label_metrics``;
* ``monitor``: monitor's scoring of the traffic and its per-window x per-bucket table;
* ``maturity``: monitor's (and ``nextbuy models mature``'s) re-scoring of the recent
  versions on the matured traffic for their model cards: counts and recall as Spark sums, the
  AUC as a rank sum over distinct scores summed per range of scores;
* ``batch``: ``batch-topk``'s sources partitioned over the executors, the serving
  bundle (and its faiss index) loaded once per executor process.

The shared pieces: ``session`` (the session from ``engine.spark``; the driver's JVM maps the
class archive when there is one), ``daemon`` (the executors' Python daemon: pyspark's, from the
installed package), ``classes`` (writes that class archive: ``make spark``), ``table``
(stage tables read into Spark with exact nanosecond times, frames of the stage's process staged
as parquet for the executors, results streamed back into the one parquet file a stage declares
or into the stage's process, objects shared once per executor process, exact quantiles) and
``standalone`` (a standalone cluster on 127.0.0.1, for the tests). A stage's Spark twin
reads its inputs with ``table.read``, applies the pandas engine's own per-row domain
function to each Arrow batch (``mapInPandas``; per-customer rules: to each bucket of customers,
``applyInPandas``), aggregates what needs every row in Spark, and writes through
``table.spilled`` and ``merge_parts``.

Every Spark module writes the same files, with the same schemas, as the pandas engine
(``tests/engines/spark`` checks it, locally and on a standalone cluster), so train and everything
downstream never know which engine ran. pyspark is imported only here, inside the functions
that use it, and a stage imports its Spark twin only when ``engine.kind`` is ``spark``:
``make run`` with the default needs no JVM. This ``__init__`` holds this text alone, so
importing a part loads no other part.
"""
