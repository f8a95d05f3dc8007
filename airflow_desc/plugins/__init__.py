"""The Airflow plugin of airflow-desc: the listener that records script processes (UI pages come later)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_desc.plugins import listener


class DescPlugin(AirflowPlugin):
    """Registers airflow-desc with Airflow: the script-process listener."""

    name = "airflow_desc"
    listeners = [listener]
