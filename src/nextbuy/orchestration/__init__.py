"""What the Airflow DAGs in ``dags/`` call, kept out of the DAG files so they stay
thin (which task runs after which) and so this logic is testable without Airflow.

* ``names``: DAG ids, the pool, the champion Asset, file names: declared once.
* ``airflow_tasks``: where and how a DVC stage runs, as an Airflow task.
* ``params_lock``: run-only params.yaml overrides and the workspace lock.
* ``task_bodies``: what the DAGs' Python tasks do (set/restore params, gate, alerts).
* ``batch``: the nightly batch of recommendations (pin the champion, shards, publish).
* ``standalone``: ``nextbuy airflow standalone`` (``make airflow``).

Only the standard library, PyYAML and the stdlib-only nextbuy modules (constants,
files, procs, stage_list) are imported at module level: DAG files import this
package when they are parsed. Airflow and pydantic are imported inside functions.
"""
