"""A Spark standalone cluster on 127.0.0.1 from the installed pyspark: a master and its
workers, each the leader of its own process group (``procs.GroupServer``), stopped as a whole
group; a context manager as each of those is (``procs.Started``). The tests run the stages
against it (``spark://127.0.0.1:PORT``), as on a real cluster: executors in other JVMs, their
Python workers started by those, tasks shipped over the network."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Self

from nextbuy import procs


def spark_home() -> Path:
    """The installed pyspark's folder: its bin/spark-class starts the master and the workers."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


class StandaloneCluster(procs.Started):
    """``workers`` workers of ``cores`` cores and ``memory`` each, logs and work dirs in ``root``."""

    def __init__(
        self, root: Path, workers: int = 2, cores: int = 1, memory: str = "1g", start_timeout: float = 180.0
    ):
        self.root, self.workers, self.cores, self.memory = Path(root), workers, cores, memory
        self.start_timeout = start_timeout
        # every port at once, all different: the master's, then each server's web UI and each
        # worker's own
        self.port, *self._ports = procs.free_ports(2 + 2 * workers)
        self.servers: list[procs.GroupServer] = []

    @property
    def master(self) -> str:
        return f"spark://{procs.HOST}:{self.port}"

    def _env(self) -> dict[str, str]:
        return os.environ | {
            "SPARK_HOME": str(spark_home()),
            "SPARK_LOCAL_IP": procs.HOST,
            "SPARK_NO_DAEMONIZE": "1",
        }

    def _server(self, name: str, main: str, port: int, args: list[str]) -> procs.GroupServer:
        cmd = [str(spark_home() / "bin" / "spark-class"), main, "--host", procs.HOST, "--port", str(port)]
        cmd += ["--webui-port", str(self._ports.pop()), *args]
        server = procs.GroupServer(cmd, port, self._env(), self.root / f"{name}.log", self.start_timeout)
        self.servers.append(server)
        return server.start()

    def registered(self) -> int:
        """Workers the master has registered so far (from its log)."""
        return self.servers[0].log().count("Registering worker") if self.servers else 0

    def start(self) -> Self:
        self.root.mkdir(parents=True, exist_ok=True)
        self._server("master", "org.apache.spark.deploy.master.Master", self.port, [])
        for i in range(self.workers):
            work = self.root / f"worker{i}"
            work.mkdir(exist_ok=True)
            args = ["--cores", str(self.cores), "--memory", self.memory, "--work-dir", str(work), self.master]
            self._server(f"worker{i}", "org.apache.spark.deploy.worker.Worker", self._ports.pop(), args)
        deadline = time.monotonic() + self.start_timeout
        while self.registered() < self.workers:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.registered()} of {self.workers} workers registered:\n{self.servers[0].log()}"
                )
            time.sleep(0.5)
        return self

    def stop(self) -> bool:
        """Stop the workers, then the master (each process group as a whole); True when none is left."""
        return all([server.stop() for server in reversed(self.servers)])
