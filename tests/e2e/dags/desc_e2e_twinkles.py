"""Twinkles_all-at-once_local, as dags/twinkles.py renders it (dags/workflows/twinkles-local.yaml).

The production DAG, in the e2e DAGs folder so that tests/e2e/test_twinkles_years.py runs it under the
real scheduler: survey years 1-3, all due at once, catchup on. Paused at creation like every DAG
here, so no other e2e test sees its runs.
"""

from __future__ import annotations

import pathlib

from airflow_desc.workflow.render import render_dags

OVERLAY = pathlib.Path(__file__).resolve().parents[3] / "dags" / "workflows" / "twinkles-local.yaml"

globals().update(render_dags(OVERLAY))
