"""One module per pipeline stage: read inputs -> pure core -> write outputs.

Each module exposes ``run(params_file)`` (the edge, used by the CLI, DVC and
Airflow alike) and a pure core function that the tests call on small frames.
"""
