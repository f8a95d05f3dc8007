"""Integration DAGs: bundled sub-tasks on the local site, rendered from tests/data/specs.

desc_it_bundle: 4 visits -> 3 rafts each -> 2 sensors each, one batch process per stream (visit 5 s,
raft 3 s, sensor 1 s of CPU): 40 heterogeneous instances with dependencies (a raft's streams are
made by a script that depends on its visit's batch process, and so on) in ONE allocation of
perlmutter's node (bundle_size 4), srun launcher.

desc_it_hostile: a run conf that tries to become shell code (tests/data/specs/desc-it-hostile.yaml).

desc_it_bundle_rerun: 3 visits in one bundle, direct launcher; the visit process of visit 202
fails on its first try only (a marker file named by the run's conf), so the retry of the
bundle task reruns that visit's streams and nothing else.

desc_it_bundle_skip: 4 visits in one bundle, srun launcher; skip_if on siblings' states decided
inside the allocation (tests/data/specs/desc-it-bundle-skip.yaml).

desc_it_bundle_fallback: desc_it_bundle's first visit alone (10 instances), on perlmutter with s3df as
its fallback cluster (test_maintenance.py puts perlmutter in maintenance: the allocation goes to s3df).
"""

from __future__ import annotations

import pathlib

from airflow_desc.workflow.overlays import RenderOptions
from airflow_desc.workflow.render import render_dags
from airflow_desc.workflow.spec import WorkflowSpec, parse_spec

# The specs are kept under tests/data/specs; this file renders them as inline specs of its own
# (registered under its path and their names), as a DAG file with several workflows does.
SPECS = pathlib.Path(__file__).resolve().parents[2] / "data" / "specs"


def inline_spec(name: str) -> WorkflowSpec:
    return parse_spec((SPECS / f"{name.replace('_', '-')}.yaml").read_text(), f"{__file__}#{name}")


globals().update(render_dags(inline_spec("desc_it_bundle"), options=RenderOptions()))
globals().update(
    render_dags(
        inline_spec("desc_it_bundle_rerun"), options=RenderOptions(launcher="direct", retry_delay_s=0)
    )
)
globals().update(render_dags(inline_spec("desc_it_hostile"), options=RenderOptions()))
globals().update(render_dags(inline_spec("desc_it_bundle_skip"), options=RenderOptions()))

_FALLBACK = (
    (SPECS / "desc-it-bundle.yaml")
    .read_text()
    .replace("name: desc_it_bundle\n", "name: desc_it_bundle_fallback\n")
    .replace('visits: "101^102^103^104"', 'visits: "101"')
    .replace("out: it-bundle/default", "out: it-bundle/fallback")
    .replace("{cluster: perlmutter,", "{cluster: perlmutter, fallback_clusters: [s3df],")
)
globals().update(
    render_dags(parse_spec(_FALLBACK, f"{__file__}#desc_it_bundle_fallback"), options=RenderOptions())
)
