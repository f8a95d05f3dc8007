"""Integration DAGs: bundled sub-tasks on the local site, rendered from the specs below.

desc_it_bundle: 4 visits -> 3 rafts each -> 2 sensors each, one batch process per stream (visit 5 s,
raft 3 s, sensor 1 s of CPU): 40 heterogeneous instances with dependencies (a raft's streams are
made by a script that depends on its visit's batch process, and so on) in ONE allocation of
perlmutter's node (bundle_size 4), srun launcher.

desc_it_bundle_rerun: 3 visits in one bundle, direct launcher; the visit process of visit 202
fails on its first try only (a marker file named by the run's conf), so the retry of the
bundle task reruns that visit's streams and nothing else.
"""

from __future__ import annotations

from airflow_desc.workflow.overlays import RenderOptions
from airflow_desc.workflow.render import render_dags
from airflow_desc.workflow.spec import parse_spec

SPEC = """
name: desc_it_bundle
version: "2.0"
description: 40 heterogeneous instances with dependencies, one allocation
variables:
  visits: "101^102^103^104"
  out: it-bundle/default
  seed: "1"
defaults:
  resources: {cluster: perlmutter, cpus: 1, memory_mb: 400, walltime: "0:10:00"}
  retries: 0
  emulate: {seed: "{{ seed }}", output_mb: 0.01}
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
    expected_streams: 4
    bundle: always
    bundle_size: 4
    processes:
      calibrateVisit:
        type: batch
        emulate: {cpu_seconds: 5, memory_mb: 120, outputs: ["{{ out }}/v{{ visit }}/calib.dat"]}
      setupRafts:
        type: script
        depends_on: [calibrateVisit]
        callable: airflow_desc.emulate.scripts:make_streams
        kwargs: {kind: raft, visit: "{{ visit }}"}
      wrapupRafts:
        type: script
        depends_on: [processRaft]
        callable: airflow_desc.emulate.scripts:wrapup
        kwargs: {visit: "{{ visit }}"}
    tasks:
      processRaft:
        streams_from: setupRafts
        stream_var: raft
        expected_streams: 3
        processes:
          assembleRaft:
            type: batch
            emulate:
              cpu_seconds: 3
              memory_mb: 100
              inputs: ["{{ out }}/v{{ visit }}/calib.dat"]
              outputs: ["{{ out }}/v{{ visit }}/{{ raft }}/raft.dat"]
          setupSensors:
            type: script
            depends_on: [assembleRaft]
            callable: airflow_desc.emulate.scripts:make_streams
            kwargs: {kind: sensor, visit: "{{ visit }}", raft: "{{ raft }}"}
        tasks:
          processSensor:
            streams_from: setupSensors
            stream_var: sensor
            expected_streams: 2
            processes:
              processEimage:
                type: batch
                emulate:
                  cpu_seconds: 1
                  memory_mb: 100
                  inputs: ["{{ out }}/v{{ visit }}/{{ raft }}/raft.dat"]
                  outputs: ["{{ out }}/v{{ visit }}/{{ raft }}/{{ sensor }}.fits"]
                checks:
                  - exists: "{{ out }}/v{{ visit }}/{{ raft }}/{{ sensor }}.fits"
"""

RERUN_SPEC = """
name: desc_it_bundle_rerun
version: "1.0"
variables:
  visits: "201^202^203"
  flaky_visit: 202
  marker: it-bundle-rerun/default.flaky
  out: it-bundle-rerun/default
defaults:
  resources: {cluster: perlmutter, cpus: 1, memory_mb: 300, walltime: "0:05:00"}
  retries: 1
processes:
  setupVisits:
    type: script
    callable: airflow_desc.emulate.scripts:make_streams
    kwargs: {kind: visit, visits: "{{ visits }}"}
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
        command: >-
          mkdir -p {{ out }} && echo calibrated > {{ out }}/v{{ visit }}.calib &&
          if [ {{ visit }} = {{ flaky_visit }} ] && [ ! -e {{ marker }} ]; then
          touch {{ marker }}; echo "flaky: the first try of visit {{ visit }} fails" >&2; exit 3; fi
      setupSensors:
        type: script
        depends_on: [calibrateVisit]
        callable: airflow_desc.emulate.scripts:make_streams
        kwargs: {kind: sensor, visit: "{{ visit }}"}
    tasks:
      processSensor:
        streams_from: setupSensors
        stream_var: sensor
        expected_streams: 2
        processes:
          processEimage:
            type: batch
            emulate: {cpu_seconds: 0.5, outputs: ["{{ out }}/v{{ visit }}-{{ sensor }}.fits"]}
"""

globals().update(render_dags(parse_spec(SPEC, f"{__file__}#desc_it_bundle"), options=RenderOptions()))
globals().update(
    render_dags(
        parse_spec(RERUN_SPEC, f"{__file__}#desc_it_bundle_rerun"),
        options=RenderOptions(launcher="direct", retry_delay_s=0),
    )
)
