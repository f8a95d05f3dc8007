"""The Airflow plugin of airflow-desc (UI pages, timetables and listeners are registered here)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin


class DescPlugin(AirflowPlugin):
    """Registers airflow-desc with Airflow; grows the UI page, timetables and listeners."""

    name = "airflow_desc"
