"""Values are data: the hostile corpus (tests/hostile.py) through every shell context of a spec.

Each command is rendered as the operators render it and run by a real shell here (bash, as the
job script runs it; /bin/sh -c for output checks, as the checks program does; the real pilot for a
bundle): the canary never appears, and the command sees the value to the letter, or the value is
refused with a message that names it.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from airflow_desc.clusters import load_cluster_profiles
from airflow_desc.exceptions import WorkflowSpecError
from airflow_desc.operators.output_checks import CheckRequest, output_checks_command, parse_output_checks
from airflow_desc.pilot import bundle_job_command
from airflow_desc.slurm import JobSpec, render_job_script
from airflow_desc.workflow.bundle_planner import plan_bundle
from airflow_desc.workflow.registry import LoadedWorkflow, load_workflow
from tests.hostile import hostile_values

ROOT = pathlib.Path(__file__).parents[3]
SPEC = ROOT / "tests" / "data" / "specs" / "hostile.yaml"
SITE = ROOT / "tests" / "data" / "clusters" / "site.yaml"


@pytest.fixture(scope="module")
def workflow() -> LoadedWorkflow:
    return load_workflow(SPEC, clusters=load_cluster_profiles(SITE))


@pytest.fixture
def canary(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "CANARY"


def corpus(canary: pathlib.Path) -> list[tuple[str, str]]:
    return [(f"v{i}", v) for i, v in enumerate(hostile_values(str(canary)))]


def run_bash(command: str, cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=30)


def text_of(path: pathlib.Path) -> str:
    """A file's text to the letter (``read_text`` would turn a carriage return into a newline)."""
    return path.read_bytes().decode()


def test_the_corpus_is_big_enough(canary: pathlib.Path) -> None:
    values = hostile_values(str(canary))
    assert len(values) >= 40 and len(set(values)) == len(values)


@pytest.mark.parametrize("dm", [False, True], ids=["command", "dm_command"])
def test_a_run_conf_value_is_one_word_of_a_batch_command(
    workflow: LoadedWorkflow, canary: pathlib.Path, tmp_path: pathlib.Path, dm: bool
) -> None:
    process = workflow.process(None, "Hostile/printLabel")
    for name, value in corpus(canary):
        work = tmp_path / name
        work.mkdir()
        variables = workflow.spec.variables_for(None, {"label": value})
        if "\0" in value:
            with pytest.raises(WorkflowSpecError, match=r"\{\{ label \}\} contains a NUL byte"):
                process.render_command(None, variables, dm=dm)
            continue
        command = process.render_command(None, variables, dm=dm)
        done = run_bash(command, work)
        assert done.returncode == 0, (value, command, done.stderr)
        out = work / ("out.txt.dm" if dm else "out.txt")
        assert text_of(out) == value, (value, command)
        assert not canary.exists(), (value, command)


@pytest.mark.parametrize("dm", [False, True], ids=["command", "dm_command"])
def test_a_stream_value_is_one_word_of_a_batch_command(
    workflow: LoadedWorkflow, canary: pathlib.Path, tmp_path: pathlib.Path, dm: bool
) -> None:
    process = workflow.process(None, "Hostile/perValue/printValue")
    for name, value in corpus(canary):
        work = tmp_path / name
        work.mkdir()
        if "\0" in value:
            with pytest.raises(WorkflowSpecError, match=r"\{\{ value \}\} contains a NUL byte"):
                process.render_command({"value": value}, dm=dm)
            continue
        command = process.render_command({"value": value}, dm=dm)
        done = run_bash(command, work)
        assert done.returncode == 0, (value, command, done.stderr)
        assert text_of(work / ("out.txt.dm" if dm else "out.txt")) == value
        assert not canary.exists(), (value, command)


def test_an_output_check_command_gets_its_values_quoted(
    workflow: LoadedWorkflow, canary: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """The checks program runs a check's command with /bin/sh -c, in the work directory."""
    [check] = workflow.process(None, "Hostile/printLabel").checks
    requests, works = [], {}
    for name, value in corpus(canary):
        variables = workflow.spec.variables_for(None, {"label": value, "out": f"{name}/out.txt"})
        if "\0" in value:
            with pytest.raises(WorkflowSpecError, match="NUL byte"):
                check.target(variables)
            continue
        requests.append(CheckRequest(name, "command", check.target(variables), message=name))
        (tmp_path / name).mkdir()
        works[name] = value
    payload = json.dumps([r.__dict__ for r in requests])
    done = subprocess.run(
        ["bash", "-c", output_checks_command(str(tmp_path), python=sys.executable)],
        input=payload, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert parse_output_checks(done.stdout) == {}
    for name, value in works.items():
        assert text_of(tmp_path / name / "out.txt.check") == value
    assert not canary.exists()


def test_a_raw_placeholder_takes_only_values_of_its_pattern(
    workflow: LoadedWorkflow, canary: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    process = workflow.process(None, "Hostile/listIds")
    for _name, value in corpus(canary):
        with pytest.raises(WorkflowSpecError, match=r"ids: .* does not match its pattern"):
            workflow.spec.variables_for(None, {"ids": value})
    variables = workflow.spec.variables_for(None, {"ids": "7,8"})
    done = run_bash(process.render_command(None, variables), tmp_path)
    assert done.returncode == 0 and text_of(tmp_path / "out.txt") == "id 7\nid 8\n"
    # A value that reached the renderer another way is checked there too.
    with pytest.raises(WorkflowSpecError, match="does not match its pattern"):
        process.render_command(None, {**variables, "ids": f"1; touch {canary}"})
    assert not canary.exists()


@pytest.mark.parametrize("dm", [False, True], ids=["command", "dm_command"])
def test_a_bundled_instance_gets_the_value_through_the_manifest_and_the_pilot(
    workflow: LoadedWorkflow, canary: pathlib.Path, tmp_path: pathlib.Path, dm: bool
) -> None:
    """The real pilot (direct launcher) runs each instance's command (or dm_command) from the manifest."""
    task = workflow.task(None, "Hostile/perValueBundled")
    streams, kept = [], {}
    for name, value in corpus(canary):
        if "\0" in value:
            continue  # refused by the renderer (see the tests above); a stream value in JSON may hold it
        streams.append({"value": value})
        kept[name] = value
    variables = workflow.spec.variables_for(None, {"label": f"$(touch {canary})", "out": "out.txt"})
    plan = plan_bundle(workflow, task, streams, variables, dm=dm)
    assert len(plan.instances) == len(streams)
    # Each instance writes out.txt in its own working directory: give each one.
    for index, inst in enumerate(plan.instances):
        (tmp_path / f"i{index}").mkdir()
        inst.command = f"cd {tmp_path / f'i{index}'} && {inst.command}"
    manifest = json.dumps(plan.manifest("hostile"))
    script = bundle_job_command(
        manifest, launcher="direct", records_path=str(tmp_path / "records.jsonl"),
        logs_dir=str(tmp_path / "logs"), python=sys.executable, cores=2, memory_mb=4000,
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    (tmp_path / "job.sh").write_text(script)  # as sbatch runs it: a file (an argument is at most 128 KiB)
    done = subprocess.run(
        ["bash", str(tmp_path / "job.sh")], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**env, "SLURM_JOB_ID": "77"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    for index, stream in enumerate(streams):
        out = tmp_path / f"i{index}" / ("out.txt.dm" if dm else "out.txt")
        assert text_of(out) == f"{stream['value']}|$(touch {canary})"
    assert not canary.exists()


@pytest.mark.parametrize("where", ["workdir", "command"])
def test_a_job_script_keeps_a_hostile_work_dir_and_command_argument_data(
    canary: pathlib.Path, tmp_path: pathlib.Path, where: str
) -> None:
    """The job script, as sbatch would run it, under bash here ($HOME is the test's directory)."""
    import shlex

    for name, value in corpus(canary):
        if any(c in value for c in "\0\n\r") or value in ("", ".", ".."):
            with pytest.raises(ValueError, match="NUL|line break"):
                render_job_script(JobSpec(job_name="j", command="true", workdir=f"~/{value}"))
            continue
        if where == "workdir" and ("/" in value or len(value.encode()) > 255 or value in (".", "..")):
            continue  # not one directory name; the command variant carries these values
        workdir = f"~/{name}/{value}" if where == "workdir" else f"~/{name}"
        command = f"printf '%s' {shlex.quote(value)} > out.txt"
        script = render_job_script(JobSpec(job_name="j", command=command, workdir=workdir))
        target = tmp_path / name / value if where == "workdir" else tmp_path / name
        target.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, timeout=30,
            env={"HOME": str(tmp_path), "PATH": os.environ["PATH"]},
        )  # fmt: skip
        assert done.returncode == 0, (value, done.stdout, done.stderr)
        assert text_of(target / "out.txt") == value
        assert not canary.exists(), value


def test_refused_values_say_which_field(workflow: LoadedWorkflow) -> None:
    process = workflow.process(None, "Hostile/perValue/printValue")
    match = r"perValue/printValue: the value of \{\{ value \}\} contains a NUL"
    with pytest.raises(WorkflowSpecError, match=match):
        process.render_command({"value": "a\0b"})


def test_hostile_ids_make_plain_job_names_and_task_dirs(canary: pathlib.Path) -> None:
    """A run id (a REST API caller chooses it) or a task id never becomes a path or an sbatch option."""
    from airflow_desc.operators.job_names import job_name_for, task_dir_for
    from airflow_desc.slurm import sbatch_command

    for _name, value in corpus(canary):
        name = job_name_for(value, value, f"group.{value}", 3, 1)
        JobSpec(job_name=name, command="true")  # sbatch and sacct take it
        task_dir = task_dir_for("airflow-desc", value, value, value, 3)
        parts = task_dir.split("/")
        assert parts[0] == "airflow-desc" and len(parts) == 4, task_dir
        assert all(part and not part.startswith(".") for part in parts[1:]), task_dir
        assert sbatch_command(f"{task_dir}/t1.sh").split()[-1] == f"{task_dir}/t1.sh"  # one plain word
