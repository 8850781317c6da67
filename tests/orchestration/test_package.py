"""The import rule of nextbuy.orchestration: DAG files import it when Airflow parses
them, so its modules load only the standard library, PyYAML and stdlib-only nextbuy
modules at import time (Airflow, pydantic and the ML stack inside functions)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import nextbuy.orchestration

PACKAGE = nextbuy.orchestration
# plugin.py is loaded by Airflow itself (and by DAG files, which import Airflow anyway).
MODULES = sorted(
    f"{PACKAGE.__name__}.{m.name}" for m in pkgutil.iter_modules(PACKAGE.__path__) if m.name != "plugin"
)
FORBIDDEN = {
    "torch",
    "pandas",
    "numpy",
    "sklearn",
    "scipy",
    "mlflow",
    "torch_geometric",
    "pydantic",
    "airflow",
    "typer",
    "rich",
    "nextbuy.bench",
    "nextbuy.config",
    "nextbuy.mlops",
}


def test_every_module_imports_light():
    code = (
        "import importlib, sys\n"
        f"for name in {MODULES!r}:\n    importlib.import_module(name)\n"
        f"print(sorted(m for m in {sorted(FORBIDDEN)!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
