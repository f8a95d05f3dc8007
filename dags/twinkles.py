"""Twinkles (dags/workflows/twinkles.yaml): year-by-year runs, one DAG per variant."""

from airflow_desc.workflow.render import load_workflow_dags

globals().update(load_workflow_dags(__file__, "workflows/twinkles.yaml"))
