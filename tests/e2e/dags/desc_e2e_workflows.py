"""Generated DAGs for the end-to-end tests: a script makes visits, a bundle runs them, a summary follows.

desc_e2e_live: 3 visits whose calibration sleeps 15 s. While the bundle's job runs,
``airflow-desc status`` must show setupVisits Success (recorded by the listener), calibrateVisit
Running x3 (the deferred bundle task instance, one per stream, its job RUNNING in SLURM) and
summary Waiting (no task-instance state yet), then all Success once the run ends.

desc_e2e_rerun: 2 visits; visit 2's calibration fails until its input (the run conf's ``marker``,
an absolute path on the cluster) exists, and ``summary`` depends on the visits. The operator
restores the input and runs ``airflow-desc rerun``.
"""

from __future__ import annotations

from airflow_desc.workflow.render import render_dags
from airflow_desc.workflow.spec import parse_spec


def visits_spec(name: str, visits: str, summary_edge: str, calibrate: str, variables: str = "") -> str:
    """Return the spec of a workflow of visits, each calibrated in one bundle."""
    return f"""
name: {name}
version: "1.0"
variables:
  visits: "{visits}"{variables}
defaults:
  resources: {{cluster: perlmutter, cpus: 1, memory_mb: 200, walltime: "0:05:00"}}
  retries: 0
processes:
  setupVisits:
    type: script
    callable: airflow_desc.emulate.scripts:make_streams
    kwargs: {{kind: visit, visits: "{{{{ visits }}}}"}}
  summary:
    type: script
    {summary_edge}: [processVisit]
    callable: airflow_desc.emulate.scripts:report
tasks:
  processVisit:
    streams_from: setupVisits
    stream_var: visit
    expected_streams: {visits.count("^") + 1}
    bundle: always
    bundle_size: {visits.count("^") + 1}
    processes:
      calibrateVisit:
        type: batch
        command: >-
          {calibrate}
"""


LIVE = visits_spec("desc_e2e_live", "1^2^3", "after", "sleep 15")
RERUN = visits_spec(
    "desc_e2e_rerun", "1^2", "depends_on",
    'if [ {{ visit }} = 2 ] && [ ! -e {{ marker }} ]; then echo "calibration input of visit 2 is missing: '
    '{{ marker }}" >&2; exit 3; fi; echo calibrated',
    "\n  marker: /tmp/desc-e2e-rerun.default",
)  # fmt: skip

for _spec in (LIVE, RERUN):
    globals().update(render_dags(parse_spec(_spec, source=__file__)))
