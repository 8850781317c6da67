"""MLOps plumbing between the domain algorithms and the stages: validated table
schemas and atomic I/O, MLflow tracking and registry, the serving model, batch
top-K, the summary report, and the Evidently dashboards (``dashboards/``)."""
