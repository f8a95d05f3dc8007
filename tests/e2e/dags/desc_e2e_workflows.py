"""Generated DAGs for the end-to-end tests: a script makes visits, a bundle runs them, a summary follows.

desc_e2e_live (tests/data/specs/desc-e2e-live.yaml): 3 visits whose calibration sleeps 15 s. While
the bundle's job runs, ``airflow-desc status`` must show setupVisits Success (recorded by the
listener), calibrateVisit Running x3 (the deferred bundle task instance, one per stream, its job
RUNNING in SLURM) and summary Waiting (no task-instance state yet), then all Success once the run ends.

desc_e2e_rerun, derived from it: 2 visits; each calibration writes its output file next to the run
conf's ``marker`` (an absolute path on the cluster) and exits 0, and an output check asks for the
file to be non-empty. Visit 2's stays empty until the marker exists: the job "succeeds", the check
fails it (reason output-check). ``summary`` depends on the visits. The operator restores the
input and runs ``airflow-desc rerun``; later reruns select successes.

desc_e2e_notify: desc_e2e_rerun whose verdict mails (``notify``): the run's failure to the operators,
its end to the campaign list, through the SMTP provider's ``SmtpNotifier`` on the connection
``desc_e2e_smtp`` that the deployment gives its workers (tests/deploy.py). A run whose ``marker``
exists on the cluster before it starts is green.

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
    calibrate = visits["processes"]["calibrateVisit"]
    calibrate["command"] = (
        "out={{ marker }}.v{{ visit }}; if [ {{ visit }} = 2 ] && [ ! -e {{ marker }} ]; then"
        ' : > "$out"; else echo calibrated > "$out"; fi'
    )
    calibrate["checks"] = [
        {"non_empty": "{{ marker }}.v{{ visit }}", "message": "the calibration wrote no output"}
    ]
    return yaml.safe_dump(spec, sort_keys=False)


def notify_spec(rerun: str) -> str:
    """Return the spec of desc_e2e_notify: desc_e2e_rerun mailing its failure and its end."""
    spec = yaml.safe_load(rerun)
    spec["name"] = "desc_e2e_notify"
    smtp = {"notifier": "airflow.providers.smtp.notifications.smtp:SmtpNotifier"}
    mail = {"from_email": "airflow@desc.example.org", "smtp_conn_id": "desc_e2e_smtp"}
    spec["notify"] = {
        "on_failure": [{**smtp, "kwargs": {"to": "desc-ops@desc.example.org", **mail}}],
        "on_end": [{**smtp, "kwargs": {"to": "campaign@desc.example.org", **mail}}],
    }
    return yaml.safe_dump(spec, sort_keys=False)


for _spec in (LIVE, rerun_spec(LIVE), notify_spec(rerun_spec(LIVE)), CELERY):
    globals().update(render_dags(parse_spec(_spec, source=__file__)))
