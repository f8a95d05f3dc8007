"""DC1-DM12_imsim-dithered_local, as dags/dc1.py renders it (dags/workflows/dc1-local.yaml).

The production DAG, in the e2e DAGs folder so that tests/e2e/test_dc1_e2e.py runs it under the real
scheduler (tasks side by side, the bundles in the cluster pools) at scale 0.001. Paused at creation
like every DAG here.
"""

from __future__ import annotations

import pathlib

from airflow_desc.workflow.render import render_dags

OVERLAY = pathlib.Path(__file__).resolve().parents[3] / "dags" / "workflows" / "dc1-local.yaml"

globals().update(render_dags(OVERLAY))
