"""What the bundle's job script carries: the manifest and the launcher in quoted here-documents."""

from __future__ import annotations

import json
import pathlib
import signal
import stat
import subprocess
from typing import Any

import pytest

from airflow_desc.pilot import (
    ManifestError,
    TakeOver,
    bundle_job_command,
    launcher_source,
    parse_records,
    parse_summary,
    validate_manifest,
)
from airflow_desc.slurm import JobSpec, render_job_script
from tests.unit.pilot.pilot_process import LAUNCHER, clean_env, instance
from tests.waiting import wait_for

TRICKY = "echo \"$HOME\" '`x`' $(echo sub) \\n EOF DESC_PILOT_MANIFEST_EOF > out.txt"


def manifest(*instances: dict[str, object]) -> str:
    return json.dumps({"bundle": "b7", "instances": list(instances)}, indent=2)


def test_launcher_source_is_the_module_file() -> None:
    assert launcher_source() == LAUNCHER.read_text()


def test_the_job_command_writes_both_files_and_runs_the_launcher(tmp_path: pathlib.Path) -> None:
    text = bundle_job_command(
        manifest(instance("v:visit", TRICKY), instance("v/s:sensor", "cat out.txt", depends_on=["v:visit"])),
        launcher="direct",
        records_path=str(tmp_path / "run" / "records.jsonl"),
        logs_dir=str(tmp_path / "run" / "logs"),
        cores=2,
        memory_mb=1000,
        kill_grace_s=1,
    )
    assert text.endswith("\n") and "exec python3 " in text
    proc = subprocess.run(
        ["bash", "-c", f"umask 022\n{text}"], cwd=tmp_path, capture_output=True, text=True, env=clean_env()
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [pilot_dir] = (tmp_path / "run").glob("pilot-*")
    # The pilot's files are the job owner's alone; the payload's output keeps the job's umask.
    made = (*pilot_dir.iterdir(), *(tmp_path / "run").iterdir())
    mode = {p.name: stat.S_IMODE(p.stat().st_mode) for p in made}
    assert mode == {
        "launcher.py": 0o600, "manifest.json": 0o600, "records.jsonl": 0o600, "logs": 0o700,
        pilot_dir.name: 0o700,
    }  # fmt: skip
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == 0o644
    assert (pilot_dir / "launcher.py").read_text() == launcher_source()
    assert json.loads((pilot_dir / "manifest.json").read_text())["bundle"] == "b7"
    recs = parse_records((tmp_path / "run" / "records.jsonl").read_text())
    assert [(r["id"], r["state"]) for r in recs] == [("v:visit", "success"), ("v/s:sensor", "success")]
    # Nothing in the manifest was expanded on the way: the command ran exactly as written.
    written = (tmp_path / "out.txt").read_text()
    assert "sub" in written and "`x`" in written and "$HOME" not in written
    summary = parse_summary(proc.stdout)
    assert summary is not None and summary["cores"] == 2 and summary["states"] == {"success": 2}


def test_a_b_term_signal_reaches_the_launcher_through_the_rendered_script(tmp_path: pathlib.Path) -> None:
    """``--signal=B:TERM@60``: the batch shell forwards SIGTERM to the payload, which is the launcher."""
    command = bundle_job_command(
        manifest(instance("a", "sleep 30"), instance("b", "true", depends_on=["a"])),
        launcher="direct",
        records_path="records.jsonl",
        logs_dir="logs",
        kill_grace_s=1,
    )
    script = render_job_script(JobSpec(job_name="bundle", command=command, signal="B:TERM@60"))
    proc = subprocess.Popen(
        ["bash", "-c", script], cwd=tmp_path, stdout=subprocess.PIPE, text=True, env=clean_env()
    )
    try:
        wait_for(
            lambda: (tmp_path / "logs" / "a.log").exists(), timeout=60, interval=0.05, what="a.log appears"
        )
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    recs = {r["id"]: r for r in parse_records((tmp_path / "records.jsonl").read_text())}
    assert (recs["a"]["state"], recs["a"]["reason"]) == ("terminated", "time-limit"), out
    assert (recs["b"]["state"], recs["b"]["reason"]) == ("skipped", "allocation-ended")
    assert f"payload exit code {128 + signal.SIGTERM}" in out


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"launcher": "mpirun"}, "launcher must be one of"),
        ({"records_path": "a\nb"}, "line break"),
        ({"logs_dir": ""}, "logs_dir is empty"),
        ({"cores": 0}, "--cores must be a positive integer"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"launcher": "srun", "records_path": "r.jsonl", "logs_dir": "logs", **kwargs}
    with pytest.raises(ValueError, match=message):
        bundle_job_command(manifest(instance("a", "true")), **args)  # type: ignore[arg-type]


def test_a_bad_manifest_is_refused_before_it_travels() -> None:
    with pytest.raises(ManifestError, match=r"\(a\): depends_on names 'x'"):
        bundle_job_command(
            manifest(instance("a", "true", depends_on=["x"])), launcher="srun", records_path="r", logs_dir="l"
        )
    assert validate_manifest(manifest(instance("a", "true")))["bundle"] == "b7"


def test_home_relative_paths_stay_home_relative() -> None:
    text = bundle_job_command(
        manifest(instance("a", "true")),
        launcher="srun",
        records_path="~/runs/b7/records.jsonl",
        logs_dir="~/runs/b7/logs",
        skip_done="~/runs/b7/records-1.jsonl",
    )
    assert 'desc_pilot_dir="$HOME"/runs/b7/pilot-"${SLURM_JOB_ID:-$$}"' in text
    assert '--records "$HOME"/runs/b7/records.jsonl' in text
    assert '--skip-done "$HOME"/runs/b7/records-1.jsonl' in text
    assert "--launcher srun" in text


def test_parse_records_leaves_out_a_torn_last_line() -> None:
    text = '{"id": "a", "state": "success"}\n\n{"id": "b", "state": "failed"}\n{"id": "c", "sta'
    assert [r["id"] for r in parse_records(text)] == ["a", "b"]
    assert parse_records("") == []


def test_parse_summary_takes_the_last_summary_line() -> None:
    log = 'airflow-desc-pilot: summary {"cores": 1}\nother\nairflow-desc-pilot: summary {"cores": 2}\n'
    assert parse_summary(log) == {"cores": 2}
    assert parse_summary("the job died early") is None


def test_a_profile_without_binding_runs_the_launcher_with_no_bind(tmp_path: pathlib.Path) -> None:
    def exec_line(**kwargs: Any) -> str:
        text = bundle_job_command(
            manifest(instance("v:visit", "true")), launcher="direct", records_path=str(tmp_path / "r.jsonl"),
            logs_dir=str(tmp_path / "logs"), **kwargs,
        )  # fmt: skip
        [line] = [line for line in text.splitlines() if line.startswith("exec ")]
        return line

    assert "--no-bind" not in exec_line()
    assert exec_line(bind=False).endswith(" --no-bind")


def test_hostile_bundle_dir_and_cluster_name_reach_the_launcher_as_data(tmp_path: pathlib.Path) -> None:
    """``--bundle-dir`` and ``--take-over``'s cluster are quoted: the pilot claims its bundle where told."""
    bundle_dir = tmp_path / "run $(touch CANARY) `touch CANARY`" / "task.0"
    bundle_dir.mkdir(parents=True)
    text = bundle_job_command(
        manifest(instance("a", "true")),
        launcher="direct",
        records_path=str(bundle_dir / "records.jsonl"),
        logs_dir=str(bundle_dir / "logs"),
        cores=1,
        memory_mb=1000,
        bundle_dir=str(bundle_dir),
        take_over=TakeOver("pm'; touch CANARY; echo '", 600),
    )
    (tmp_path / "job.sh").write_text(text)
    env = clean_env(SLURM_JOB_ID="4711")
    proc = subprocess.run(["bash", "job.sh"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (bundle_dir / "claim-4711").read_text().strip() == "4711"
    assert [r["state"] for r in parse_records((bundle_dir / "records.jsonl").read_text())] == ["success"]
    assert not (tmp_path / "CANARY").exists() and not (bundle_dir / "CANARY").exists()
    with pytest.raises(ValueError, match="take_over needs bundle_dir"):
        bundle_job_command(
            manifest(instance("a", "true")), launcher="direct", records_path="r", logs_dir="l",
            take_over=TakeOver("pm", 60),
        )  # fmt: skip
    with pytest.raises(ValueError, match="time_limit_s"):
        TakeOver("pm", 0)
