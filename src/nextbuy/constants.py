"""Facts shared across layers, declared once. Standard library only: the DAG files
import modules that import this one when Airflow parses them."""

ALERT_EXIT_CODE = (
    3  # `nextbuy alerts` exits with this when the monitor raised alerts (Airflow branches on it)
)

# How the train stage weights the conversion loss (label_delay writes one ``weight_<method>``
# column per method): naive (every observed label as is), wait (only matured impressions),
# importance (the delay model's P/Q weights), and its two ablations. The oracle (eventual labels
# from the simulator's truth) lives only in `nextbuy bench delay`: no stage can reach it.
WEIGHTING_METHODS = (
    "naive",
    "wait",
    "importance",
    "importance_no_engagement",
    "importance_no_features",
    "label_correction",
)
