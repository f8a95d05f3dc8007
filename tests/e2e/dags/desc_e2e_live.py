"""A generated DAG for the live status table: a script, a bundle of 3 visits that sleep, a wrapup.

While the bundle's job runs, ``airflow-desc status`` must show setupVisits Success (recorded by
the listener), calibrateVisit Submitted x3 (the deferred bundle task instance, one per stream) and
summary Waiting (no task-instance state yet), then all Success once the run ends.
"""

from __future__ import annotations

from airflow_desc.workflow.render import render_dags
from airflow_desc.workflow.spec import parse_spec

SPEC = """
name: desc_e2e_live
version: "1.0"
variables:
  visits: "1^2^3"
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
    after: [processVisit]
    callable: airflow_desc.emulate.scripts:report
tasks:
  processVisit:
    streams_from: setupVisits
    stream_var: visit
    expected_streams: 3
    bundle: always
    bundle_size: 3
    processes:
      calibrateVisit:
        type: batch
        command: sleep 15
"""

globals().update(render_dags(parse_spec(SPEC, source=__file__)))
