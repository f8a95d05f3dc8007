"""Integration DAG: escalation and ``after`` inside a bundle, rendered from a spec in tests/data/specs.

desc_it_bundle_escalation: one visit in one bundle (direct launcher). ``hungry`` holds the 160 MB
it asks for, and its Python interpreter takes it over: the pilot kills it (out-of-memory) on the
first try, and the retry of the bundle task reruns it with 320 MB (``memory_factor: 2``).
``tally`` runs ``after`` hungry: it runs on the first try although hungry was terminated, and is
not rerun.
"""

from __future__ import annotations

import pathlib

from airflow_desc.workflow.overlays import RenderOptions
from airflow_desc.workflow.render import render_dags
from airflow_desc.workflow.spec import parse_spec

SPEC = pathlib.Path(__file__).resolve().parents[2] / "data" / "specs" / "desc-it-bundle-escalation.yaml"

globals().update(
    render_dags(
        parse_spec(SPEC.read_text(), f"{__file__}#desc_it_bundle_escalation"),
        options=RenderOptions(launcher="direct", retry_delay_s=0),
    )
)
