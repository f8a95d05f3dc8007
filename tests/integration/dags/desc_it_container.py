"""Integration DAGs: payloads in containers on the site (tests/data/specs/desc-it-container.yaml).

desc_it_container: a single job and a bundle of two visits, every batch process in the site's
payload image (docker/site/payload-image) with the cluster's rootless podman.

desc_it_container_missing: the same spec naming an image the site does not have: every payload fails
to start its container (podman's --pull=never, from the site's cluster profiles).
"""

from __future__ import annotations

import pathlib

from airflow_desc.workflow.overlays import RenderOptions
from airflow_desc.workflow.render import render_dags
from airflow_desc.workflow.spec import parse_spec

TEXT = (pathlib.Path(__file__).resolve().parents[2] / "data" / "specs" / "desc-it-container.yaml").read_text()
MISSING = TEXT.replace("name: desc_it_container", "name: desc_it_container_missing").replace(
    "localhost/desc-payload:test", "localhost/desc-payload:missing"
)

globals().update(render_dags(parse_spec(TEXT, f"{__file__}#desc_it_container"), options=RenderOptions()))
globals().update(
    render_dags(parse_spec(MISSING, f"{__file__}#desc_it_container_missing"), options=RenderOptions())
)
