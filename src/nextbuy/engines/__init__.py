"""The engines that run the data-heavy parts of the stages (params.yaml ``engine.kind``).

``pandas`` (the default) runs them in the stage's own process, as the stage modules read.
``spark`` runs them on Apache Spark, in the ``spark`` package here (its docstring lists the
modules): each writes the same files as the pandas engine, and a stage imports its Spark twin
only when ``engine.kind`` is ``spark``.
"""
