"""Monitoring: Evidently reports per traffic window and the on-call dashboard they feed.

The monitor stage computes the numbers (per window and uncertainty bucket); `evidently_reports` only turns
them into Evidently snapshots and a dashboard (see monitoring/dashboard.yaml and monitoring/README.md).
Import from `nextbuy.mlops.dashboards.evidently_reports` directly; this package stays import-light (no Evidently).
"""
