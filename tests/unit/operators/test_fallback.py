"""Fallback clusters: where a try's job goes (maintenance on its cluster, retries spent, a full queue).

The choice (:func:`~airflow_desc.operators.fallback.place_job`) is tested on its own, with each
cluster's answer given; then a SlurmOperator with a fallback runs against recording hooks, one per
cluster (see ``test_untrusted_reads``), its cluster in the site's recorded maintenance.
"""

from __future__ import annotations

import pathlib
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from airflow_desc.exceptions import ClusterUnreachable
from airflow_desc.operators.fallback import (
    MAINTENANCE,
    RETRIES_SPENT,
    Placement,
    place_job,
    queue_room,
    retry_fallback,
)
from airflow_desc.operators.job_names import job_name_for
from airflow_desc.operators.slurm import SlurmOperator
from airflow_desc.slurm import accounting_to_payload, group_accounting, parse_sacct, parse_squeue
from airflow_desc.slurm.maintenance import SubmissionHold
from tests.unit.operators.test_job_rules import submits_as
from tests.unit.operators.test_submission_hold import in_maintenance
from tests.unit.operators.test_untrusted_reads import HONEST, SITE, TI, ListRecorder, RecordingHook, Store

MAINT = SubmissionHold("waiting for maintenance to end at 2026-12-06 16:10 UTC (perlmutter)")


def place(
    held: dict[str, SubmissionHold] | None = None,
    full: dict[str, str] | None = None,
    *,
    fallbacks: tuple[str, ...] = ("s3df",),
    retry_target: str | None = None,
) -> tuple[Placement, list[str]]:
    """Place a perlmutter job; return the placement and the clusters asked, in order."""
    asked: list[str] = []

    def hold_of(name: str) -> SubmissionHold | None:
        asked.append(name)
        return (held or {}).get(name)

    return place_job(
        "perlmutter", fallbacks, retry_target=retry_target, hold_of=hold_of,
        full=lambda name: (full or {}).get(name),
    ), asked  # fmt: skip


# --- the choice ---


def test_a_cluster_that_can_take_the_job_keeps_it_and_no_fallback_is_asked() -> None:
    placement, asked = place()
    assert placement == Placement("perlmutter") and asked == ["perlmutter"]
    assert placement.record() is None


def test_maintenance_on_the_cluster_moves_the_job_to_the_fallback() -> None:
    placement, asked = place({"perlmutter": MAINT})
    assert (placement.cluster, placement.moved_from, placement.why, placement.hold) == (
        "s3df", "perlmutter", MAINTENANCE, None
    )  # fmt: skip
    assert placement.reason == f"perlmutter cannot take it now: moved to fallback s3df ({MAINT.reason})"
    assert placement.record() == {
        "from": "perlmutter",
        "to": "s3df",
        "why": "maintenance",
        "reason": placement.reason,
    }
    assert asked == ["perlmutter", "s3df"]


def test_a_fallback_also_in_maintenance_leaves_the_job_waiting_for_its_own_cluster() -> None:
    s3df = SubmissionHold("waiting for partition roma of s3df to come up: sinfo says it is down")
    placement, _ = place({"perlmutter": MAINT, "s3df": s3df})
    assert (placement.cluster, placement.hold, placement.record()) == ("perlmutter", MAINT, None)
    assert placement.reason == f"no cluster can take it now: {MAINT.reason}; {s3df.reason}"


def test_a_full_fallback_is_passed_over_and_said() -> None:
    full = {"s3df": "fallback s3df is full: 3 airflow-desc jobs queued or running, max_queued_jobs 3"}
    placement, _ = place({"perlmutter": MAINT}, full)
    assert (placement.cluster, placement.hold) == ("perlmutter", MAINT)
    assert full["s3df"] in placement.reason
    # With a second fallback that has room, the job goes there.
    placement, _ = place({"perlmutter": MAINT}, full, fallbacks=("s3df", "in2p3"))
    assert (placement.cluster, placement.moved_from) == ("in2p3", "perlmutter")
    assert full["s3df"] in placement.reason


def test_spent_retries_send_the_last_try_to_the_fallback() -> None:
    placement, asked = place(retry_target="s3df")
    assert (placement.cluster, placement.why, asked) == ("s3df", RETRIES_SPENT, ["s3df"])
    assert placement.reason == "its tries on perlmutter are spent: the last go to fallback s3df"


def test_spent_retries_stay_on_the_cluster_when_the_fallback_cannot_take_the_job() -> None:
    placement, _ = place(full={"s3df": "fallback s3df is full"}, retry_target="s3df")
    assert (placement.cluster, placement.moved_from) == ("perlmutter", None)
    assert placement.reason == "stays on perlmutter: fallback s3df is full"
    held, _ = place({"s3df": MAINT, "perlmutter": MAINT}, retry_target="s3df")
    assert (held.cluster, held.hold) == ("s3df", MAINT)  # waits for the one it was sent to


@pytest.mark.parametrize(
    ("fallbacks", "retries", "clusters"),
    [
        (("s3df",), 2, [None, None, "s3df"]),
        (("s3df", "in2p3"), 2, [None, "s3df", "in2p3"]),
        (("s3df", "in2p3"), 1, [None, "s3df"]),  # one retry: the first try stays, the last moves
        (("s3df",), 0, [None]),  # no retry: never moved for spent retries
    ],
)
def test_which_tries_go_to_which_fallback(
    fallbacks: tuple[str, ...], retries: int, clusters: list[Any]
) -> None:
    got = [
        retry_fallback(fallbacks, try_number=t, max_tries=retries, retries=retries)
        for t in range(1, retries + 2)
    ]
    assert got == clusters
    # A clear starts again on the cluster: Airflow raises max_tries by the retries from the try it cleared.
    cleared = retries + 1
    assert (
        retry_fallback(fallbacks, try_number=cleared + 1, max_tries=cleared + retries, retries=retries)
        is None
        or retries == 0
    )


def test_a_fallback_is_full_at_max_queued_jobs_of_its_own_jobs() -> None:
    ours = [job_name_for("d", "r", "t", i, 1) for i in range(3)]
    text = "".join(f"10{i}|{name}|PENDING|Priority|0:00|5:00|\n" for i, name in enumerate(ours))
    text += "200|someone-elses|RUNNING|None|1:00|5:00|n1\n"
    rows = parse_squeue(text)
    assert queue_room("s3df", rows, 4) is None
    said = queue_room("s3df", rows, 3)
    assert said == "fallback s3df is full: 3 airflow-desc jobs queued or running, max_queued_jobs 3"


# --- a SlurmOperator with a fallback, on recording hooks ---


@pytest.fixture
def hooks(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> dict[str, RecordingHook]:
    # The site's clusters, s3df keeping its files elsewhere than perlmutter (as real sites do).
    profiles = tmp_path / "clusters.yaml"
    profiles.write_text(
        SITE.read_text().replace("    partition: roma\n", "    partition: roma\n    work_dir: /sdf/desc\n")
    )
    monkeypatch.setenv("DESC_CLUSTERS_FILE", str(profiles))
    by_cluster = {"perlmutter": RecordingHook(), "s3df": RecordingHook()}
    monkeypatch.setattr(SlurmOperator, "_hook", lambda self, profile: by_cluster[profile.name])
    return by_cluster


def operator(**kwargs: Any) -> SlurmOperator:
    return SlurmOperator(
        task_id="group.processEimage", command="true", cluster="perlmutter", fallback_clusters=["s3df"],
        cpus=2, mem_mb=3000, time_limit="00:20:00", recorder=ListRecorder(), **kwargs,
    )  # fmt: skip


def context(ti: Any = None, **state: Any) -> Any:
    return {"ti": ti or TI(), "task_state_store": Store(**state), "dag_run": None, "params": {}}


def completed(job_id: str) -> dict[str, Any]:
    acct = group_accounting(parse_sacct(f"{job_id}|COMPLETED|0:0", ("JobID", "State", "ExitCode")))
    return {"status": "done", **accounting_to_payload(acct[job_id])}


def test_a_job_whose_cluster_is_in_maintenance_runs_on_the_fallback_capped_and_recorded(
    hooks: dict[str, RecordingHook],
) -> None:
    until = (datetime.now(timezone.utc) + timedelta(hours=1)).replace(microsecond=0)
    hooks["perlmutter"].availability = lambda: in_maintenance(until)  # type: ignore[method-assign]
    submitted = submits_as(hooks["s3df"], "7001")
    # Try 1's job ran on perlmutter and was recorded: its id and log path are perlmutter's.
    op, ctx = operator(), context(slurm={**HONEST, "recorded": ["900"]})
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(ctx)
    assert deferred.value.trigger.ssh_conn_id == "s3df_ssh" and deferred.value.trigger.job_id == "7001"
    [job] = submitted
    # Capped to s3df's one core; s3df's partition, not perlmutter's; 8 GB nodes take the 3000 MB.
    assert "#SBATCH --cpus-per-task=1" in job["script"] and "#SBATCH --partition=roma" in job["script"]
    assert "#SBATCH --mem=3000M" in job["script"] and "#SBATCH --time=0-00:20:00" in job["script"]
    saved = ctx["task_state_store"].get("slurm")
    assert (
        saved["cluster"] == "s3df" and saved["log_path"] == "/sdf/desc/d/r/group.processEimage.0/t2-7001.out"
    )
    assert (
        saved["fallback"]["why"] == "maintenance"
        and "maintenance reservation desc_maint" in saved["fallback"]["reason"]
    )

    # The trigger fires in another operator object: it finds the job on s3df from the saved state.
    later, asked_before = operator(), len(hooks["perlmutter"].calls)
    summary = later.execute_complete(ctx, completed("7001"))
    assert summary["cluster"] == "s3df"
    [record] = later.recorder.records  # type: ignore[union-attr]
    assert record.cluster == "s3df"
    assert record.extra["fallback"]["from"] == "perlmutter" and record.extra["fallback"]["to"] == "s3df"
    assert len(hooks["perlmutter"].calls) == asked_before  # the end of the job needs only s3df


class LastTry(TI):
    max_tries = 1  # one retry: try 2 is the last


def test_the_last_try_goes_to_the_fallback_and_a_full_fallback_keeps_it_home(
    hooks: dict[str, RecordingHook],
) -> None:
    submitted = submits_as(hooks["s3df"], "7002")
    with pytest.raises(TaskDeferred):
        operator(retries=1).execute(context(LastTry()))
    assert len(submitted) == 1
    assert [c for c, _ in hooks["perlmutter"].calls if c == "availability"] == []  # not even asked

    hooks["s3df"].own_queue = lambda: parse_squeue(  # type: ignore[method-assign]
        "".join(f"{i}|{job_name_for('d', 'r', 't', i, 1)}|RUNNING|None|0:01|5:00|n\n" for i in range(200))
    )
    home = submits_as(hooks["perlmutter"], "8001")
    with pytest.raises(TaskDeferred) as deferred:
        operator(retries=1).execute(context(LastTry()))
    assert deferred.value.trigger.ssh_conn_id == "perlmutter_ssh" and len(home) == 1
    assert "#SBATCH --cpus-per-task=2" in home[0]["script"]  # its own request, not capped


def test_a_fallback_that_cannot_be_reached_is_passed_over(hooks: dict[str, RecordingHook]) -> None:
    until = (datetime.now(timezone.utc) + timedelta(hours=1)).replace(microsecond=0)
    hooks["perlmutter"].availability = lambda: in_maintenance(until)  # type: ignore[method-assign]

    def unreachable() -> None:
        raise ClusterUnreachable("s3df: connection refused")

    hooks["s3df"].availability = unreachable  # type: ignore[method-assign]
    op = operator()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context())
    assert deferred.value.method_name == "execute_after_hold"
    assert deferred.value.trigger.ssh_conn_id == "perlmutter_ssh"


def test_a_saved_cluster_that_is_no_fallback_of_the_task_is_refused(hooks: dict[str, RecordingHook]) -> None:
    with pytest.raises(AirflowFailException) as raised:
        operator().execute(context(slurm={"cluster": "s3df-via-bastion"}))
    assert "cluster = 's3df-via-bastion' is none of this task's fallback clusters (s3df)" in str(raised.value)
    assert hooks["perlmutter"].calls == hooks["s3df"].calls == []


def test_a_try_that_died_between_the_move_and_sbatch_leaves_a_state_the_next_try_trusts(
    hooks: dict[str, RecordingHook],
) -> None:
    until = (datetime.now(timezone.utc) + timedelta(hours=1)).replace(microsecond=0)
    hooks["perlmutter"].availability = lambda: in_maintenance(until)  # type: ignore[method-assign]

    def dies(script: str, **_: Any) -> None:
        raise ClusterUnreachable("s3df: connection lost during sbatch")

    hooks["s3df"].submit = dies  # type: ignore[method-assign]
    ctx = context(slurm={**HONEST, "recorded": ["900"]})  # try 1 ran on perlmutter, in its work_dir
    with pytest.raises(ClusterUnreachable):
        operator().execute(ctx)
    saved = operator()._state(ctx)  # read with s3df's work_dir: perlmutter's paths would be refused
    assert saved["cluster"] == "s3df" and "log_path" not in saved and "job_id" not in saved
