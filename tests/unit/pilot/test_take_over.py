"""A pilot out of its own work takes over a sibling bundle whose job is still pending (``--take-over``).

The claim files and offers are real files and the pilots real processes; SLURM's ``squeue`` and
``scancel`` are two small scripts on ``PATH`` that answer from a file the test writes (the pending
job) and write down what they were asked. tests/integration/test_bundle_take_over.py runs the same
on the site's SLURM, through the operator.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from typing import Any

from airflow_desc.pilot import offer_json
from airflow_desc.pilot.launcher import claim_file, read_offer, sibling_dirs
from tests.unit.pilot.pilot_process import clean_env, instance, pilot_argv, write_manifest

FAKE_SQUEUE = """#!/bin/sh
# squeue -h -j ID -t PENDING -o %i: the ids listed in $FAKE_SLURM/pending
grep -qx "$3" "$FAKE_SLURM/pending" 2>/dev/null && echo "$3"
exit 0
"""
FAKE_SCANCEL = """#!/bin/sh
echo "$*" >> "$FAKE_SLURM/scancel"
"""


def fake_slurm(tmp_path: pathlib.Path, pending: list[str]) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("squeue", FAKE_SQUEUE), ("scancel", FAKE_SCANCEL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "pending").write_text("".join(f"{job}\n" for job in pending))
    env = clean_env(FAKE_SLURM=str(tmp_path), SLURM_JOB_ID="777")
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    return env


def offer(
    directory: pathlib.Path,
    instances: list[dict[str, Any]],
    *,
    job_id: str,
    cluster: str = "pm",
    bundle: str = "v",
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    manifest = {"bundle": bundle, "instances": instances}
    text = offer_json(
        manifest, job_id=job_id, cluster=cluster, records_path=str(directory / "records.jsonl"),
        logs_dir=str(directory / "logs"), skip_done=str(directory / "records.jsonl"),
    )  # fmt: skip
    (directory / "offer.json").write_text(text)


def run_thief(
    tmp_path: pathlib.Path, env: dict[str, str], own: list[dict[str, Any]], *, time_limit: int = 600
) -> subprocess.CompletedProcess[str]:
    directory = tmp_path / "run" / "dag" / "task.0"
    write_manifest(directory, own, bundle="t")
    argv = pilot_argv(directory, "--bundle-dir", str(directory), "--take-over", "--cluster", "pm",
                      "--time-limit", str(time_limit), python=sys.executable)  # fmt: skip
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env=env, cwd=directory, check=False
    )


def records(path: pathlib.Path) -> list[dict[str, Any]]:
    return (
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    )


def chain(prefix: str, walltime_s: float = 60) -> list[dict[str, Any]]:
    """A stream of two instances of processes ``a`` then ``b``, each a fifth of a second of CPU."""
    burn = "python3 -c 'import time; t=time.time()\nwhile time.time()-t<0.2: pass'"
    return [
        instance(f"{prefix}:a", burn, walltime_s=walltime_s),
        instance(f"{prefix}:b", burn, walltime_s=walltime_s, depends_on=[f"{prefix}:a"]),
    ]


def test_a_pilot_out_of_work_takes_over_a_pending_sibling_records_it_there_and_cancels_its_job(
    tmp_path: pathlib.Path,
) -> None:
    env = fake_slurm(tmp_path, pending=["4242"])
    victim = tmp_path / "run" / "dag" / "task.1"
    offer(victim, [*chain("s=3"), *chain("s=4")], job_id="4242")
    other_cluster = tmp_path / "run" / "dag" / "task.2"
    offer(other_cluster, chain("s=5"), job_id="4343", cluster="elsewhere")
    (tmp_path / "pending").write_text("4242\n4343\n")

    done = run_thief(tmp_path, env, [*chain("s=1"), *chain("s=2")])

    assert done.returncode == 0, done.stdout + done.stderr
    assert "took over bundle v (job 4242, pending): 4 instances" in done.stdout
    own = records(tmp_path / "run" / "dag" / "task.0" / "records.jsonl")
    assert {r["id"] for r in own} == {"s=1:a", "s=1:b", "s=2:a", "s=2:b"}
    theirs = records(victim / "records.jsonl")
    assert {r["id"]: r["state"] for r in theirs} == dict.fromkeys(
        ["s=3:a", "s=3:b", "s=4:a", "s=4:b"], "success"
    )
    assert {r["bundle"] for r in theirs} == {"v"} and {r["job_id"] for r in theirs} == {"777"}
    assert all(pathlib.Path(r["log_path"]).parent == victim / "logs" for r in theirs)
    assert (victim / "claim-4242").read_text().strip() == "777"
    assert (tmp_path / "scancel").read_text().split() == ["--state=PENDING", "4242"]
    # Another cluster's bundle is never taken: its job id means nothing to this cluster's SLURM.
    assert not (other_cluster / "claim-4343").exists() and not (other_cluster / "records.jsonl").exists()
    summary = json.loads(done.stdout.rsplit("summary ", 1)[1])
    assert summary["took_over"] == ["v"] and summary["instances"] == 8


def test_a_sibling_that_does_not_fit_the_time_left_or_is_not_pending_stays_where_it_is(
    tmp_path: pathlib.Path,
) -> None:
    env = fake_slurm(tmp_path, pending=["5001"])
    # Process "c" never ran here: its walltime request (60 s) twice is more than what is left.
    too_long = tmp_path / "run" / "dag" / "task.1"
    offer(too_long, [instance("s=3:c", "true", walltime_s=60)], job_id="5001")
    started = tmp_path / "run" / "dag" / "task.2"
    offer(started, chain("s=4"), job_id="5002")  # not pending: it runs, or ended

    done = run_thief(tmp_path, env, chain("s=1"), time_limit=150)  # 150 - 60 - kill grace: ~90 s left

    assert done.returncode == 0, done.stdout + done.stderr
    assert "took over" not in done.stdout
    for directory in (too_long, started):
        assert not list(directory.glob("claim-*")) and not (directory / "records.jsonl").exists()
    assert not (tmp_path / "scancel").exists()


def test_a_pilot_whose_bundle_was_taken_over_runs_nothing(tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "task.3"
    write_manifest(directory, chain("s=1"))
    (directory / "claim-888").write_text("777\n")  # the pilot of job 777 took it over
    argv = pilot_argv(directory, "--bundle-dir", str(directory))
    env = clean_env(SLURM_JOB_ID="888")
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env=env, cwd=directory, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "taken over by job 777" in done.stdout
    assert not (directory / "records.jsonl").exists()
    # Its own claim (a requeued job finds it) does not stop it.
    (directory / "claim-888").write_text("888\n")
    again = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env=env, cwd=directory, check=False
    )
    assert again.returncode == 0 and len(records(directory / "records.jsonl")) == 2


def test_claims_are_exclusive_and_offers_are_checked(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "claim-1"
    assert claim_file(str(path), "10") is None
    assert claim_file(str(path), "11") == "10"
    for name in ("t.0", "t.2", "t.10", "u.1", "t.x", "t"):
        (tmp_path / name).mkdir()
    assert [pathlib.Path(p).name for p in sibling_dirs(str(tmp_path / "t.2"))] == ["t.0", "t.10"]
    assert sibling_dirs(str(tmp_path / "t")) == []
    offer(tmp_path / "t.0", chain("s=1"), job_id="12")
    assert read_offer(str(tmp_path / "t.0" / "offer.json"), "pm") is not None
    assert read_offer(str(tmp_path / "t.0" / "offer.json"), "other") is None
    bad = json.loads((tmp_path / "t.0" / "offer.json").read_text())
    for field, value in (("job_id", "12; touch x"), ("records", None), ("manifest", [])):
        (tmp_path / "t.2" / "offer.json").write_text(json.dumps({**bad, field: value}))
        assert read_offer(str(tmp_path / "t.2" / "offer.json"), "pm") is None, field
