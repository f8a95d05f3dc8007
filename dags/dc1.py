"""DC1 (dags/workflows/dc1.yaml): one DAG per variant; dc1-local.yaml renders it for the local test site."""

from airflow_desc.workflow.render import load_workflow_dags

globals().update(load_workflow_dags(__file__, "workflows/dc1.yaml", "workflows/dc1-local.yaml"))
