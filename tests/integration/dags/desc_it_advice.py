"""Integration DAG desc_it_advice: the spec ``tests/data/specs/desc-it-advice.yaml``, or, when
``DESC_IT_ADVICE_OVERLAY`` names one, the render overlay ``airflow-desc advice --write`` wrote over it
(``tests/integration/test_advice_overlay.py``). Either way the same DAG id, as a site renders it.
"""

from __future__ import annotations

import os
import pathlib

from airflow_desc.workflow.render import load_workflow_dags

SPEC = pathlib.Path(__file__).parents[2] / "data" / "specs" / "desc-it-advice.yaml"

globals().update(load_workflow_dags(__file__, os.environ.get("DESC_IT_ADVICE_OVERLAY") or str(SPEC)))
