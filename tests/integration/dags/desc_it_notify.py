"""Integration DAG: a workflow whose verdict sends mail (``notify``), version 2.0 side by side.

Two streams of ``step`` (a SLURM job each on perlmutter), visit 2's failing unless the run's conf
says ``{"fail_visit": "0"}``. ``notify.on_failure`` and ``notify.on_end`` name the SMTP provider's
``SmtpNotifier`` on the connection ``desc_it_smtp`` (the test points it at its SMTP sink);
``side_by_side: true`` makes the DAG id ``desc_it_notify_v2.0``.
"""

from __future__ import annotations

import yaml

from airflow_desc.workflow.render import render_dags
from airflow_desc.workflow.spec import parse_spec

SMTP = "airflow.providers.smtp.notifications.smtp:SmtpNotifier"
MAIL = {"from_email": "airflow@desc.example.org", "smtp_conn_id": "desc_it_smtp"}
SPEC = {
    "name": "desc_it_notify",
    "version": "2.0",
    "side_by_side": True,
    "variables": {"fail_visit": "2"},
    "patterns": {"fail_visit": "[0-9]+"},
    "notify": {
        "on_failure": [{"notifier": SMTP, "kwargs": {"to": "desc-ops@desc.example.org", **MAIL}}],
        "on_end": [
            {
                "notifier": SMTP,
                "kwargs": {
                    "to": ["campaign@desc.example.org"],
                    "subject": "{{ dag_run.dag_id }}: {{ desc_counts.get('success', 0) }} succeeded",
                    **MAIL,
                },
            }
        ],
    },
    "defaults": {
        "resources": {"cluster": "perlmutter", "cpus": 1, "memory_mb": 100, "walltime": "0:05:00"},
        "retries": 0,
    },
    "processes": {
        "makeVisits": {
            "type": "script",
            "callable": "airflow_desc.emulate.scripts:make_streams",
            "kwargs": {"kind": "visit", "visits": "1^2"},
        },
    },
    "tasks": {
        "work": {
            "streams_from": "makeVisits",
            "stream_var": "visit",
            "expected_streams": 2,
            "bundle": "never",
            "processes": {
                "step": {
                    "type": "batch",
                    "command": "if [ {{ visit }} = {{ fail_visit }} ]; then "
                    "echo PSF model failed for {{ visit }} >&2; exit 3; fi; echo done {{ visit }}",
                }
            },
        }
    },
}

globals().update(render_dags(parse_spec(yaml.safe_dump(SPEC, sort_keys=False), source=__file__)))
