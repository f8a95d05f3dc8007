"""Integration DAGs: a sub-task of 4 streams, one failing (conf ``fail_visit``), and a process after it.

desc_it_min_success_075: ``combine`` depends on ``work`` with ``min_success: 0.75`` (3 of 4 is
enough: it runs, and the failure is tolerated by the run's verdict); desc_it_min_success_100: with
``min_success: 1.0`` (it is Skipped, and the verdict fails the run). A run with
``{"fail_visit": "0"}`` fails no stream.
"""

from __future__ import annotations

import yaml

from airflow_desc.workflow.render import render_dags
from airflow_desc.workflow.spec import parse_spec

SPEC = {
    "version": "1",
    "variables": {"fail_visit": "3"},
    "patterns": {"fail_visit": "[0-9]+"},
    "defaults": {
        "resources": {"cluster": "perlmutter", "cpus": 1, "memory_mb": 100, "walltime": "0:05:00"},
        "retries": 0,
    },
    "processes": {
        "makeVisits": {
            "type": "script",
            "callable": "airflow_desc.emulate.scripts:make_streams",
            "kwargs": {"kind": "visit", "visits": "1^2^3^4"},
        },
        "combine": {"type": "script", "callable": "airflow_desc.emulate.scripts:wrapup"},
    },
    "tasks": {
        "work": {
            "streams_from": "makeVisits",
            "stream_var": "visit",
            "expected_streams": 4,
            "bundle": "never",
            "processes": {
                "step": {
                    "type": "batch",
                    "command": "if [ {{ visit }} = {{ fail_visit }} ]; then echo no input for {{ visit }}"
                    " >&2; exit 3; fi; echo done {{ visit }}",
                }
            },
        }
    },
}

for name, threshold in (("desc_it_min_success_075", 0.75), ("desc_it_min_success_100", 1.0)):
    spec = {"name": name, **SPEC}
    spec["processes"] = {**SPEC["processes"]}
    spec["processes"]["combine"] = {
        **SPEC["processes"]["combine"],
        "depends_on": {"work": {"min_success": threshold}},
    }
    globals().update(render_dags(parse_spec(yaml.safe_dump(spec, sort_keys=False), source=__file__)))
