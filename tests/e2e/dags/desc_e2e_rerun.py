"""A generated DAG for the bulk rerun: visit 2's calibration fails until its input (a marker file) exists.

The run's conf names the marker (an absolute path on the cluster). The first run fails visit 2
and skips ``summary``; the operator restores the input and runs ``airflow-desc rerun``.
"""

from __future__ import annotations

from airflow_desc.workflow.render import render_dags
from airflow_desc.workflow.spec import parse_spec

SPEC = """
name: desc_e2e_rerun
version: "1.0"
variables:
  visits: "1^2"
  marker: /tmp/desc-e2e-rerun.default
defaults:
  resources: {cluster: perlmutter, cpus: 1, memory_mb: 200, walltime: "0:05:00"}
  retries: 0
processes:
  setupVisits:
    type: script
    callable: airflow_desc.emulate.scripts:make_streams
    kwargs: {kind: visit, visits: "{{ visits }}"}
  summary:
    type: script
    depends_on: [processVisit]
    callable: airflow_desc.emulate.scripts:report
tasks:
  processVisit:
    streams_from: setupVisits
    stream_var: visit
    expected_streams: 2
    bundle: always
    bundle_size: 2
    processes:
      calibrateVisit:
        type: batch
        command: >-
          if [ {{ visit }} = 2 ] && [ ! -e {{ marker }} ]; then
          echo "calibration input of visit 2 is missing: {{ marker }}" >&2; exit 3; fi; echo calibrated
"""

globals().update(render_dags(parse_spec(SPEC, source=__file__)))
