"""Integration DAG: escalation and ``after`` inside a bundle, rendered from the spec below.

desc_it_bundle_escalation: one visit in one bundle (direct launcher). ``hungry`` holds the 160 MB
it asks for, and its Python interpreter takes it over: the pilot kills it (out-of-memory) on the
first try, and the retry of the bundle task reruns it with 320 MB (``memory_factor: 2``).
``tally`` runs ``after`` hungry: it runs on the first try although hungry was terminated, and is
not rerun.
"""

from __future__ import annotations

from airflow_desc.workflow.overlays import RenderOptions
from airflow_desc.workflow.render import render_dags
from airflow_desc.workflow.spec import parse_spec

SPEC = """
name: desc_it_bundle_escalation
version: "1.0"
variables:
  out: it-bundle-escalation/default
defaults:
  resources: {cluster: perlmutter, cpus: 1, memory_mb: 160, walltime: "0:02:00"}
  retries: 1
processes:
  setupVisits:
    type: script
    callable: airflow_desc.emulate.scripts:make_streams
    kwargs: {kind: visit, visits: "301"}
tasks:
  processVisit:
    streams_from: setupVisits
    stream_var: visit
    expected_streams: 1
    bundle: always
    bundle_size: 1
    processes:
      hungry:
        type: batch
        escalation: {memory_factor: 2, walltime_factor: 2}
        emulate:
          cpu_seconds: 0.5
          sleep_seconds: 1.5
          memory_mb: 160
          outputs: ["{{ out }}/v{{ visit }}.dat"]
      tally:
        type: batch
        after: [hungry]
        command: echo tallied
"""

globals().update(
    render_dags(
        parse_spec(SPEC, f"{__file__}#desc_it_bundle_escalation"),
        options=RenderOptions(launcher="direct", retry_delay_s=0),
    )
)
