"""A small client of Airflow 3's REST API (v2) with a token from the simple auth manager: what
the scheduler test and ``docker/stack_check.py`` drive a real deployment with."""

from __future__ import annotations

import json
import time
from urllib.request import Request, urlopen

FINISHED = ("success", "failed")
POLL_S = 1.0  # between two questions while waiting: one GET a second is little to an API server


class AirflowApi:
    """``/api/v2`` of the API server at ``base`` (e.g. ``http://127.0.0.1:8080``), as ``user``."""

    def __init__(self, base: str, user: str, password: str, timeout: float = 120.0):
        self.base, self.timeout = base.rstrip("/"), timeout
        reply = self._call("POST", "/auth/token", {"username": user, "password": password}, auth=False)
        self.token = reply["access_token"]

    def _call(self, method: str, path: str, body: dict | None = None, auth: bool = True) -> dict:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body).encode()
        request = Request(self.base + path, data=data, headers=headers, method=method)
        with urlopen(request, timeout=self.timeout) as reply:
            return json.loads(reply.read() or b"{}")

    def get(self, path: str) -> dict:
        return self._call("GET", path)

    def patch(self, path: str, body: dict) -> dict:
        return self._call("PATCH", path, body)

    def post(self, path: str, body: dict) -> dict:
        return self._call("POST", path, body)

    def wait_for_dag(self, dag_id: str, timeout: float) -> dict:
        """The DAG once the DAG processor has parsed it (OSError/HTTP errors until then)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.get(f"/api/v2/dags/{dag_id}")
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{dag_id} never appeared (DAG processor)") from None
                time.sleep(POLL_S)

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        """Unpause ``dag_id`` and start a manual run now; returns its run id."""
        self.patch(f"/api/v2/dags/{dag_id}", {"is_paused": False})
        run = self.post(f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return run["dag_run_id"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> dict:
        """The run once it succeeded or failed."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in FINISHED:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"{dag_id} {run_id} still {run['state']} after {timeout:.0f} s")
            time.sleep(POLL_S)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
