"""Domain algorithms: arrays and DataFrames in, arrays and DataFrames out.

Nothing here touches files, MLflow or Airflow (the stages do that), so every
algorithm is testable on small arrays: delay model and importance weights,
uncertainty and calibration, per-bucket thresholds, the release gate's
statistics, delay-aware positivity, and the directed-graph GNN (``graph/``).
"""
