"""Make a real ctrl_bps submission and prepare it with airflow_desc.bps: run by the LSST venv's python.

    make_submission.py WORKDIR --labels 3 --detectors 8 [--cluster perlmutter] [--no-prepare]

In WORKDIR: a butler repo (SQLite registry, POSIX datastore) holding ``add_dataset0`` for
``--detectors`` detectors; a pipeline YAML file of a chain of ``--labels`` AddTask labels
(``lsst.pipe.base.tests.simpleQGraph``); a BPS config naming them (``pipelineYaml``, no
``qgraphFile``) and ``airflow_desc.bps.AirflowService``; then ``bps prepare`` as ctrl_bps's own
driver runs it (acquire, cluster, transform, prepare). Acquiring runs BPS's ``createQuantumGraph``
command, ``pipetask qgraph``: the QuantumGraph (one quantum per detector and label, with datastore
records) is BPS's ``<submit directory>/<uniqProcName>.qg``, and that command's output is
``quantumGraphGeneration.out`` beside it. Prints one JSON line: the submit directory, the spec and
DAG files written there, the GenericWorkflow's job counts per label and its jobs
(:meth:`airflow_desc.bps.jobs.BpsJob.to_dict`). With ``--no-prepare`` (for ``bps submit``, which
builds the graph the same way): the BPS config's path and each detector's ``add_dataset0`` file
instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy
from lsst.ctrl.bps.drivers import prepare_driver
from lsst.pipe.base.tests.simpleQGraph import (
    makeSimpleButler,
    makeSimplePipeline,
    registerDatasetTypes,
)

from airflow_desc.bps.jobs import jobs_from_generic_workflow

INSTRUMENT = "INSTR"


def make_inputs(root: Path, labels: int, detectors: int) -> tuple[Path, dict[int, str]]:
    """Write the butler repo with its inputs and the pipeline YAML file; return the latter and each
    detector's input file."""
    pipeline = makeSimplePipeline(labels)
    butler = makeSimpleButler(str(root / "repo"), run="test", inMemory=False)
    registerDatasetTypes(butler.registry, pipeline.to_graph())
    butler.registry.insertDimensionData("instrument", {"name": INSTRUMENT})
    for detector in range(detectors):
        butler.registry.insertDimensionData(
            "detector", {"instrument": INSTRUMENT, "id": detector, "full_name": f"det{detector}"}
        )
        butler.put(
            numpy.array([0.0, 1.0, 2.0, 5.0]), "add_dataset0", instrument=INSTRUMENT, detector=detector
        )
    path = root / "pipeline.yaml"
    pipeline.write_to_uri(str(path))
    inputs = {
        d: butler.getURI("add_dataset0", instrument=INSTRUMENT, detector=d).ospath for d in range(detectors)
    }
    return path, inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--labels", type=int, default=3)
    parser.add_argument("--detectors", type=int, default=8)
    parser.add_argument("--cluster", default="perlmutter")
    parser.add_argument("--retries", type=int, default=2, help="numberOfRetries")
    parser.add_argument("--extra", default="", help="more BPS config lines (YAML), appended")
    parser.add_argument("--no-prepare", action="store_true", help="write the config, do not prepare")
    args = parser.parse_args()
    root = args.workdir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    pipeline, inputs = make_inputs(root, args.labels, args.detectors)
    # ctrl_bps's default commands run ${CTRL_MPEXEC_DIR}/bin/pipetask, here as on the clusters.
    os.environ.setdefault("CTRL_MPEXEC_DIR", sys.prefix)
    config = root / "bps.yaml"
    config.write_text(
        f"""\
# No qgraphFile: BPS's createQuantumGraph (`pipetask qgraph ... --qgraph-datastore-records`, so that
# `pipetask run-qbb` reads the inputs without the registry) writes {{uniqProcName}}.qg in the new
# format, the only one the final job's `butler aggregate-graph` reads.
pipelineYaml: {pipeline}
operator: tester
project: dev
campaign: airflow-desc
computeSite: {args.cluster}
payload:
  payloadName: simple
  butlerConfig: {root / "repo"}
  inCollection: test
  dataQuery: "instrument = '{INSTRUMENT}'"
  output: u/tester/simple
  outputRun: u/tester/simple/run1
submitPath: {root}/submit/{{outputRun}}
wmsServiceClass: airflow_desc.bps.AirflowService
requestMemory: 1500
numberOfRetries: {args.retries}
memoryMultiplier: 1.5
# Within the local site's nodes (tests/data/clusters/site.yaml: 2 cores, 4 GB, 30 minutes).
airflowDefaultWalltime: "0:20:00"
finalJob:
  requestCpus: 1
  requestMemory: 2000
pipetask:
  task0:
    requestCpus: 2
    requestWalltime: 25
{args.extra}
""",
        encoding="utf-8",
    )
    if args.no_prepare:
        print(json.dumps({"config": str(config), "repo": str(root / "repo"), "inputs": inputs}))
        return
    _, workflow = prepare_driver(str(config))
    generic = workflow.generic_workflow
    print(
        json.dumps(
            {
                "submit_path": workflow.submit_path,
                "spec": str(workflow.spec_path),
                "dag_file": str(workflow.dag_path),
                "job_counts": dict(generic.job_counts),
                "jobs": [job.to_dict() for job in jobs_from_generic_workflow(generic)],
            }
        )
    )


if __name__ == "__main__":
    main()
