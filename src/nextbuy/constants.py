"""Facts shared across layers, declared once. Standard library only: the DAG files
import modules that import this one when Airflow parses them."""

# A command that refused its configuration or input (nothing a retry can fix) exits with
# this code, as click's usage errors do; an Airflow stage task that exits with it fails at
# once, without retries.
INPUT_ERROR_EXIT_CODE = 2
ALERT_EXIT_CODE = (
    3  # `nextbuy alerts` exits with this when the monitor raised alerts (Airflow branches on it)
)

# How the train stage learns from labels that may still flip (label_delay writes a
# ``target_<method>`` and a ``weight_<method>`` column per method): naive (every observed label
# as is), wait (only matured impressions), importance (the delay model's importance weights,
# Rao-Blackwellised: each not-yet-converted impression carries its flip probability as
# positive mass), its no-engagement and no-features ablations, and importance_ipw (the plain
# P/Q weights, 1/F on observed conversions: the high-variance form, kept as an ablation). The
# oracle (eventual labels from the simulator's truth) lives only in `nextbuy bench delay`: no
# stage can reach it.
WEIGHTING_METHODS = (
    "naive",
    "wait",
    "importance",
    "importance_no_engagement",
    "importance_no_features",
    "importance_ipw",
)
# The delay model's pair features (``nextbuy.domain.delay.pair_features``), carried in the
# weighted impressions so the train stage can refit the delay model with its own score.
DELAY_PAIR_FEATURES = (
    "log_price",
    "shown_popularity",
    "source_activity",
    "pair_copurchases",
    "category_lift",
)
