"""Take the documentation's screenshots from running UIs with Debian's headless Chromium.

Start the UIs first (each in its own terminal, after `make run` and an Airflow training run):

    AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True make airflow
                        # Airflow on 127.0.0.1:8080, no login page for the headless shot
    make mlflow-ui      # MLflow on 127.0.0.1:5000
    make dashboards     # Evidently on 127.0.0.1:8000
    make plots          # writes dvc_plots/index.html

then

    .venv/bin/python docs/screenshots.py

writes docs/images/{airflow-grid,mlflow-model-version,evidently-dashboard,dvc-plots}.png, which
README.md and the tutorials show, and mlflow-model-card.png (the model catalogue page: take it
alone with --only mlflow-model-card --size 1400,2600). Each shot runs Chromium with a fresh
profile, no network services of its own (no sync, updates or background fetches) and a fixed window size. A UI
that does not answer is skipped with a message; the script exits 1 if any shot is missing.
Standard library only.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)


def evidently_project(workspace: Path) -> str:
    """The on-call project's page (``projects/<id>``): the one project folder of the workspace the
    monitor stage fills; the project list when there is none or several."""
    folders = [p for p in workspace.iterdir() if p.is_dir()] if workspace.is_dir() else []
    return f"projects/{folders[0].name}" if len(folders) == 1 else ""


def shots(args: argparse.Namespace) -> dict[str, str]:
    """Image name -> URL of each page to take."""
    airflow = f"http://127.0.0.1:{args.airflow_port}/dags/nextbuy_training"
    if args.airflow_run:
        airflow += f"/runs/{args.airflow_run}"
    return {
        "airflow-grid": airflow,
        "mlflow-model-version": f"http://127.0.0.1:{args.mlflow_port}/#/models/{args.model}/versions/{args.version}",
        # the same page, taken tall (--size 1400,2600) to show the version's model card
        "mlflow-model-card": f"http://127.0.0.1:{args.mlflow_port}/#/models/{args.model}/versions/{args.version}",
        "evidently-dashboard": f"http://127.0.0.1:{args.evidently_port}/{evidently_project(args.workspace)}",
        "dvc-plots": (ROOT / "dvc_plots" / "index.html").as_uri(),
    }


def answers(url: str) -> bool:
    if url.startswith("file://"):
        return Path(url.removeprefix("file://")).exists()
    try:
        with urllib.request.urlopen(url, timeout=10):
            return True
    except Exception:  # noqa: BLE001 - any failure means "not running"
        return False


def take(chromium: str, url: str, out: Path, size: str, wait_ms: int) -> bool:
    with tempfile.TemporaryDirectory(prefix="nextbuy-shot-") as profile:
        command = [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={wait_ms}",
            f"--screenshot={out}",
            f"--window-size={size}",
            url,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or not out.exists():
        print(f"  failed: {done.stderr.strip()[-500:]}", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Screenshots of the running UIs (Airflow, MLflow, Evidently, DVC plots), docs/images/.",
        epilog="Start the UIs first: make airflow, make mlflow-ui, make dashboards, make plots.",
    )
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium", help="browser")
    parser.add_argument(
        "--out", type=Path, default=IMAGES, help="folder for the PNG files (default: docs/images)"
    )
    parser.add_argument("--size", default="1400,900", help="window size WIDTH,HEIGHT (default: 1400,900)")
    parser.add_argument("--wait-ms", type=int, default=8000, help="virtual time a page gets to render (ms)")
    parser.add_argument("--airflow-port", type=int, default=8080, help="Airflow UI port")
    parser.add_argument(
        "--airflow-run", default="", help="run id of a finished nextbuy_training run (grid view)"
    )
    parser.add_argument("--mlflow-port", type=int, default=5000, help="MLflow UI port")
    parser.add_argument("--model", default="nextbuy", help="registered model name")
    parser.add_argument("--version", default="1", help="model version to show")
    parser.add_argument("--evidently-port", type=int, default=8000, help="Evidently UI port")
    parser.add_argument(
        "--workspace",
        type=Path,
        default=ROOT / "monitoring" / "workspace",
        help="Evidently workspace (its one project is shot)",
    )
    parser.add_argument("--only", action="append", default=[], help="take only this image (repeatable)")
    args = parser.parse_args(argv)

    if not Path(args.chromium).exists():
        print(
            f"no Chromium at {args.chromium}: apt-get install chromium, or pass --chromium", file=sys.stderr
        )
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    missing = []
    for name, url in shots(args).items():
        if args.only and name not in args.only:
            continue
        out = args.out / f"{name}.png"
        if not answers(url):
            print(f"{name}: {url} does not answer; start it first (skipped)", file=sys.stderr)
            missing.append(name)
            continue
        print(f"{name}: {url} -> {out}")
        if not take(args.chromium, url, out, args.size, args.wait_ms):
            missing.append(name)
    if missing:
        print(f"not taken: {', '.join(missing)}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
