"""deploy: build the serving pyfunc, register it in MLflow, and move the
``champion`` alias only when the release passes the floors in params."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import nextbuy

from nextbuy import io, paths, tracking
from nextbuy.config import DeployConfig, load_section

CHAMPION = "champion"


def check_floors(calibrate_metrics: dict, thresholds_metrics: dict, cfg: DeployConfig) -> tuple[bool, list[str], dict]:
    """Pure core: every absolute floor must hold; returns (passed, reasons, figures)."""
    figures = {
        "recall_test": thresholds_metrics["per_bucket"]["test_delay_corrected"]["recall"],
        "precision_test": thresholds_metrics["per_bucket"]["test_delay_corrected"]["precision"],
        "ece_test": calibrate_metrics["test_delay_corrected"]["ece_calibrated"],
    }
    reasons = []
    if not figures["recall_test"] >= cfg.min_recall:
        reasons.append(f"recall {figures['recall_test']:.3f} < floor {cfg.min_recall:.3f}")
    if figures["ece_test"] is None or not figures["ece_test"] <= cfg.max_calibration_error:
        reasons.append(f"calibration error {figures['ece_test']} > floor {cfg.max_calibration_error:.3f}")
    return not reasons, reasons, figures


# What the pyfunc needs at load time besides its bundled code (src/nextbuy), pinned
# to this environment. Listing them skips MLflow's requirement inference, which
# re-imports the model in a subprocess (~8 s).
SERVING_PACKAGES = ("mlflow", "numpy", "pandas", "scikit-learn", "scipy", "pandera", "pydantic", "pyyaml")


def serving_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in SERVING_PACKAGES]


def input_example(n_products: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"source_id": rng.integers(0, n_products, 5), "candidate_id": rng.integers(0, n_products, 5)})


def run(params_file: str = "params.yaml") -> dict:
    import mlflow
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    from nextbuy.serving import NextbuyModel, ServingBundle

    cfg = load_section("deploy", params_file)
    passed, reasons, figures = check_floors(io.read_json(paths.metrics_file("calibrate")),
                                            io.read_json(paths.metrics_file("thresholds")), cfg)
    bundle = ServingBundle.load(paths.GNN_MOMENTS, paths.CALIBRATION_MODEL, paths.THRESHOLDS_MODEL)
    example = input_example(bundle.n_products)
    with warnings.catch_warnings():
        # Product ids are never missing (validate_request refuses them), so int64 is the right schema.
        warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
        signature = infer_signature(example, bundle.score(example["source_id"], example["candidate_id"]))
    tracking.configure()
    client = MlflowClient()
    with mlflow.start_run(run_name="deploy"):
        mlflow.set_tags({"stage": "deploy", **tracking.lineage_tags()})
        mlflow.log_metrics({k: float(v) for k, v in figures.items() if v is not None})
        info = mlflow.pyfunc.log_model(
            name="model", python_model=NextbuyModel(),
            artifacts={"moments": str(paths.GNN_MOMENTS), "calibration": str(paths.CALIBRATION_MODEL),
                       "thresholds": str(paths.THRESHOLDS_MODEL)},
            signature=signature, input_example=example, registered_model_name=cfg.model_name,
            code_paths=[str(Path(nextbuy.__file__).parent)], pip_requirements=serving_requirements())
    version = str(info.registered_model_version)
    client.set_model_version_tag(cfg.model_name, version, "passed", str(passed).lower())
    client.set_model_version_tag(cfg.model_name, version, "reasons", "; ".join(reasons) or "all floors hold")
    if passed:
        client.set_registered_model_alias(cfg.model_name, CHAMPION, version)
    champion = client.get_model_version_by_alias(cfg.model_name, CHAMPION).version if passed else _champion(client, cfg)
    metrics = {"model_name": cfg.model_name, "version": int(version), "passed": passed, "reasons": reasons,
               "champion_version": int(champion) if champion else None, **figures}
    io.write_json(metrics, paths.metrics_file("deploy"))
    return metrics


def _champion(client, cfg: DeployConfig) -> str | None:
    try:
        return client.get_model_version_by_alias(cfg.model_name, CHAMPION).version
    except Exception:  # noqa: BLE001 - no champion yet
        return None
