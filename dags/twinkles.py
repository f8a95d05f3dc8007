"""Twinkles (dags/workflows/twinkles.yaml): year-by-year runs, one DAG per variant.

twinkles-local.yaml renders it for the local test site (Twinkles_all-at-once_local: survey years 1-3).
"""

from airflow_desc.workflow.render import load_workflow_dags

globals().update(load_workflow_dags(__file__, "workflows/twinkles.yaml", "workflows/twinkles-local.yaml"))
