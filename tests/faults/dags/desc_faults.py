"""The workflow of the fault matrix (tests/data/specs/desc-faults.yaml), retried after 5 s."""

from __future__ import annotations

import pathlib

from airflow_desc.workflow.overlays import RenderOptions
from airflow_desc.workflow.render import render_dags

SPEC = pathlib.Path(__file__).resolve().parents[2] / "data" / "specs" / "desc-faults.yaml"

globals().update(render_dags(SPEC, options=RenderOptions(retry_delay_s=5)))
