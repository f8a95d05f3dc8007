"""Generated DAGs for the end-to-end tests: a script makes visits, a bundle runs them, a summary follows.

desc_e2e_live (tests/data/specs/desc-e2e-live.yaml): 3 visits whose calibration sleeps 15 s. While
the bundle's job runs, ``airflow-desc status`` must show setupVisits Success (recorded by the
listener), calibrateVisit Running x3 (the deferred bundle task instance, one per stream, its job
RUNNING in SLURM) and summary Waiting (no task-instance state yet), then all Success once the run ends.

desc_e2e_rerun, derived from it: 2 visits; visit 2's calibration fails until its input (the run
conf's ``marker``, an absolute path on the cluster) exists, and ``summary`` depends on the visits.
The operator restores the input and runs ``airflow-desc rerun``.

desc_e2e_celery (tests/data/specs/desc-e2e-celery.yaml): 4 bundles of one visit and a single job at
once, for the Celery deployment (tests/e2e/test_celery_deployment.py).
"""

from __future__ import annotations

import pathlib

import yaml

from airflow_desc.workflow.render import render_dags
from airflow_desc.workflow.spec import parse_spec

SPECS = pathlib.Path(__file__).resolve().parents[2] / "data" / "specs"
LIVE = (SPECS / "desc-e2e-live.yaml").read_text()
CELERY = (SPECS / "desc-e2e-celery.yaml").read_text()


def rerun_spec(live: str) -> str:
    """Return the spec of desc_e2e_rerun: desc_e2e_live with a visit that fails until its input exists."""
    spec = yaml.safe_load(live)
    spec["name"] = "desc_e2e_rerun"
    spec["variables"] = {"visits": "1^2", "marker": "/tmp/desc-e2e-rerun.default"}
    summary = spec["processes"]["summary"]
    summary["depends_on"] = summary.pop("after")
    visits = spec["tasks"]["processVisit"]
    visits.update(expected_streams=2, bundle_size=2)
    visits["processes"]["calibrateVisit"]["command"] = (
        "if [ {{ visit }} = 2 ] && [ ! -e {{ marker }} ]; then"
        ' echo "calibration input of visit 2 is missing:" {{ marker }} >&2; exit 3; fi; echo calibrated'
    )
    return yaml.safe_dump(spec, sort_keys=False)


for _spec in (LIVE, rerun_spec(LIVE), CELERY):
    globals().update(render_dags(parse_spec(_spec, source=__file__)))
