"""Monitoring: Evidently reports per traffic window and the on-call dashboard they feed.

The monitor stage computes the numbers (per window and uncertainty bucket); this package only turns them
into Evidently snapshots and a dashboard (see monitoring/dashboard.yaml and monitoring/README.md):

* ``metrics`` — custom Evidently metrics, one snapshot per window (``window_snapshot``), reading values back.
* ``spec`` — the dashboard spec (dashboard.yaml) as pydantic models; ``load_dashboard_spec`` validates it.
* ``publish`` — the Evidently dashboard built from the spec, and ``publish`` to a local Workspace.

Import the modules directly; this package stays import-light (no Evidently).
"""
