"""The DM stand-ins (docker/site/dm-standins) run every dm_command of the shipped specs, as rendered.

Each batch process of DC1 (dags/workflows/dc1.yaml) and Twinkles (twinkles.yaml) renders its
``dm_command`` as a ``dm`` run does, for one value of each stream variable, and runs it under bash
here with the stand-ins first on PATH, upstream first: every one must parse its arguments, find its
inputs and write the outputs the spec's emulated payload lists (what its output checks look at). A
mistaken option or data ID key in a spec fails here, with the stand-in's own error.
"""

from __future__ import annotations

import os
import pathlib
import subprocess

import pytest

from airflow_desc.workflow.graph import ProcessNode
from airflow_desc.workflow.registry import load_workflow
from airflow_desc.workflow.spec_templates import Template

ROOT = pathlib.Path(__file__).parents[3]
STANDINS = ROOT / "docker" / "site" / "dm-standins"
# One value of each stream variable of the two specs.
STREAM = {
    "visit": "2201", "raft": "R22", "sensor": "S11", "filter": "r", "patch": "1,2", "tract": 0,
}  # fmt: skip

# The order of DM's pipeline, by process name, so that most commands find their inputs at once.
REFCAT = "refcat/dc1_reference_catalog.txt"
DM_ORDER = ("ingest", "Eimage", "TempExp", "ssemble", "detect", "mergeDetections", "measure")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    prefix = tmp_path_factory.mktemp("dm-stack")
    subprocess.run(["bash", str(STANDINS / "install"), "--prefix", str(prefix), "--no-link"], check=True)
    return prefix


def run(command: str, cwd: pathlib.Path, stack: pathlib.Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{stack / 'bin'}:{os.environ['PATH']}", "PYTHONPATH": str(stack / "python"),
           "DM_STANDIN_CPU_SECONDS": "0"}  # fmt: skip
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def run_all(
    processes: list[ProcessNode], values: dict[str, object], cwd: pathlib.Path, stack: pathlib.Path
) -> None:
    """Run each process's dm_command, upstream first (a round retries what lacked an input)."""
    pending = {p.path: p for p in sorted(processes, key=lambda p: next(
        (i for i, step in enumerate(DM_ORDER) if step in p.name), len(DM_ORDER)))}  # fmt: skip
    errors: dict[str, str] = {}
    while pending:
        done: list[tuple[str, dict[str, object]]] = []
        for path, process in pending.items():
            stream = {k: v for k, v in STREAM.items() if k in process.stream_vars}
            proc = run(process.render_command(stream, values, dm=True), cwd, stack)
            if proc.returncode == 0:
                done.append((path, stream))
            errors[path] = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.stdout
        if not done:
            raise AssertionError("\n".join(f"{p}: {errors[p]}" for p in pending))
        for path, stream in done:
            process = pending.pop(path)
            for output in _emulated_outputs(process, {**values, **stream}):
                assert (cwd / output).is_file(), (path, output)


def _emulated_outputs(process: ProcessNode, values: dict[str, object]) -> list[str]:
    """The files the process's emulated payload writes (``--output`` arguments of its command)."""
    parts = process.command_parts
    return [Template.parse(parts[i + 1]).render(values) for i, part in enumerate(parts) if part == "--output"]


@pytest.mark.parametrize(
    ("spec", "variant", "overrides"),
    [
        ("dc1.yaml", "imsim-dithered", {"raw_dir": "{stack}/raw", "ref_catalog": f"{{stack}}/{REFCAT}"}),
        ("twinkles.yaml", None, {"raw_dir": "{stack}/raw"}),
    ],
    ids=["dc1", "twinkles"],
)  # fmt: skip
def test_every_dm_command_of_a_shipped_spec_runs_on_the_stand_ins(
    stack: pathlib.Path, tmp_path: pathlib.Path, spec: str, variant: str | None, overrides: dict[str, str]
) -> None:
    workflow = load_workflow(ROOT / "dags" / "workflows" / spec)
    given = {k: v.format(stack=stack) for k, v in {**overrides, "config_dir": "{stack}/config"}.items()}
    values = workflow.spec.variables_for(variant, given)
    batch = [p for p in workflow.graph(variant).iter_processes() if p.type == "batch"]
    assert batch and all(p.dm_command_template for p in batch)
    run_all(batch, dict(values), tmp_path, stack)


def test_an_argument_mistake_fails_with_the_stand_ins_error(
    stack: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    assert run("ingestDriver.py repo --mode link raw-missing/*.fits.gz", tmp_path, stack).returncode == 1
    raw = f"{stack}/raw/lsst_e_*.fits.gz"
    assert run(f"ingestDriver.py repo --mode link {raw}", tmp_path, stack).returncode == 0
    cases = {
        "processEimage.py repo --rerun r --id vist=1": "argument --id: unknown data ID key 'vist'",
        "processEimage.py repo --rerun r --idd visit=1": "unrecognized arguments: --idd",
        "processEimage.py repo --id visit=1": "the following arguments are required: --rerun",
        "processEimage.py repo --rerun r --id visit=1 -C nowhere.py": "cannot read config file 'nowhere.py'",
        "processEimage.py repo --rerun r --id visit": "'visit' is not of the form key=value",
        "assembleCoadd.py repo --rerun r --id filter=r tract=0 patch=1,2": "FileNotFoundError",
        "processEimage.py elsewhere --rerun r --id visit=1": "no data repository: ingest first",
    }
    for command, error in cases.items():
        proc = run(command, tmp_path, stack)
        assert proc.returncode in (1, 2) and error in proc.stderr.strip().splitlines()[-1], (
            command,
            proc.stderr,
        )
