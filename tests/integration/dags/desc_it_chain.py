"""Integration DAG: three sub-tasks in a chain, a -> b -> c (as a BPS submission's labels), and a last script.

``makeQuanta`` feeds each of ``a``, ``b``, ``c`` two streams (``q``: d0, d1); each runs one SLURM job
per stream on perlmutter. ``a``'s job of stream ``fail_q`` (conf; default d1) exits 3: ``b`` is then
blocked (no streams), so ``c`` is not run either; ``finish`` runs ``after`` them all; the verdict fails
the run. With ``{"fail_q": "none"}`` everything runs and the run is green.
"""

from __future__ import annotations

import yaml

from airflow_desc.workflow.render import render_dags
from airflow_desc.workflow.spec import parse_spec


def _label(name: str, depends_on: list[str]) -> dict[str, object]:
    fails = (
        " if [ {{ q }} = {{ fail_q }} ]; then echo no input for {{ q }} >&2; exit 3; fi;"
        if name == "a"
        else ""
    )
    return {
        "streams_from": "makeQuanta",
        "stream_var": "q",
        "expected_streams": 2,
        "bundle": "never",
        **({"depends_on": depends_on} if depends_on else {}),
        "processes": {f"step_{name}": {"type": "batch", "command": f"{fails} echo {name} {{{{ q }}}}"}},
    }


SPEC = {
    "name": "desc_it_chain",
    "version": "1",
    "variables": {"fail_q": "d1"},
    "patterns": {"fail_q": "[a-z0-9]+"},
    "defaults": {
        "resources": {"cluster": "perlmutter", "cpus": 1, "memory_mb": 100, "walltime": "0:05:00"},
        "retries": 0,
    },
    "processes": {
        "makeQuanta": {
            "type": "script",
            "callable": "airflow_desc.bps.streams:quanta_by_label",
            "kwargs": {"quanta": {label: ["d0", "d1"] for label in ("a", "b", "c")}},
        },
        "finish": {
            "type": "script",
            "after": ["a", "b", "c"],
            "callable": "airflow_desc.emulate.scripts:wrapup",
        },
    },
    "tasks": {"a": _label("a", []), "b": _label("b", ["a"]), "c": _label("c", ["b"])},
}

globals().update(render_dags(parse_spec(yaml.safe_dump(SPEC, sort_keys=False), source=__file__)))
