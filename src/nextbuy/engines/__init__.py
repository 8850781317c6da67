"""The engines that run the data-heavy parts of the stages (params.yaml ``engine.kind``).

``pandas`` (the default) runs them in the stage's own process, as the stage modules read.
``spark`` runs them on Apache Spark (``engine.spark.master``: ``local[N]``, a standalone
cluster, YARN, Kubernetes or Spark Connect), each in a module of its own here:

* ``spark_label_delay``: label_delay's weights for every impression (the delay models fitted
  on the driver from ``label_delay.fit_sample_rows`` train rows, applied on the executors);
* ``spark_monitor``: monitor's scoring of the traffic and its per-window x per-bucket table;
* ``spark_batch``: ``batch-topk``'s sources partitioned over the executors, the serving
  bundle (and its faiss index) loaded once per executor process;
* ``spark_ingest``: ingest's validation and session split of an impressions log.

Every Spark module writes the same files, with the same schemas, as the pandas engine
(``tests/engines`` checks it, locally and on a standalone cluster), so train and everything
downstream never know which engine ran. pyspark is imported only here, and only when
``engine.kind`` is ``spark``: ``make run`` with the default needs no JVM.
"""
