"""Facts shared across layers, declared once. Standard library only: the DAG files
import modules that import this one when Airflow parses them."""

ALERT_EXIT_CODE = (
    3  # `nextbuy alerts` exits with this when the monitor raised alerts (Airflow branches on it)
)
