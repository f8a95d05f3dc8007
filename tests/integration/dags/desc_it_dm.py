"""Integration DAGs: payload dm on the site's DM stand-ins (tests/data/specs/desc-it-dm.yaml).

desc_it_dm: ingest and a sky map as single jobs, processEimage of two visits in one bundle, each
running its dm_command (the stand-ins of docker/site/dm-standins).

desc_it_dm_bad: the same spec with an argument mistake in its DM command lines (a data ID key the
tasks do not know, ``--id bogus=1``): the stand-ins refuse it, and so the processes fail.
"""

from __future__ import annotations

import pathlib

from airflow_desc.workflow.overlays import RenderOptions
from airflow_desc.workflow.render import render_dags
from airflow_desc.workflow.spec import parse_spec

TEXT = (pathlib.Path(__file__).resolve().parents[2] / "data" / "specs" / "desc-it-dm.yaml").read_text()
BAD = TEXT.replace("name: desc_it_dm", "name: desc_it_dm_bad").replace("--id ", "--id bogus=1 ")

globals().update(render_dags(parse_spec(TEXT, f"{__file__}#desc_it_dm"), options=RenderOptions()))
globals().update(render_dags(parse_spec(BAD, f"{__file__}#desc_it_dm_bad"), options=RenderOptions()))
