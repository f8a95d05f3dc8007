"""A single job's record takes the job script's own timing of its payload; sacct's stays the fallback."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_desc.exceptions import ClusterUnreachable
from airflow_desc.operators.slurm import SlurmOperator
from airflow_desc.slurm import accounting_to_payload, group_accounting, parse_sacct
from airflow_desc.slurm.log_tails import LOG_TAIL_LINES
from tests.unit.operators.test_untrusted_reads import HONEST, SITE, TASK_DIR, context, operator

# What sacct said of a 2.7 s single-core job: Elapsed in whole seconds, TotalCPU in milliseconds.
SACCT = "900|COMPLETED|0:0|00:00:02|00:02.690\n900.batch|COMPLETED|0:0|00:00:02|00:02.690"
FIELDS = ("JobID", "State", "ExitCode", "Elapsed", "TotalCPU")
TIMING = (
    "airflow-desc: job 900 payload timing: wall 100.000 102.714 cpu 0m0.004s 0m0.000s -> 0m2.600s 0m0.090s\n"
)


class TailHook:
    def __init__(self, tail: str | Exception) -> None:
        self.tail, self.reads = tail, []  # type: ignore[var-annotated]

    def read_tail(self, path: str, *, lines: int = 60) -> str:
        self.reads.append((path, lines))
        if isinstance(self.tail, Exception):
            raise self.tail
        return self.tail


def finish(monkeypatch: pytest.MonkeyPatch, hook: TailHook) -> tuple[dict[str, Any], Any]:
    monkeypatch.setenv("DESC_CLUSTERS_FILE", str(SITE))
    monkeypatch.setattr(SlurmOperator, "_hook", lambda self, profile: hook)
    acct = group_accounting(parse_sacct(SACCT, FIELDS))["900"]
    task = operator()
    summary = task.execute_complete(context(slurm=HONEST), {"status": "done", **accounting_to_payload(acct)})
    [record] = task.recorder.records  # type: ignore[union-attr]
    return summary, record


def test_the_record_takes_the_script_s_timing_and_keeps_sacct_s(monkeypatch: pytest.MonkeyPatch) -> None:
    hook = TailHook("payload output\n" + TIMING)
    summary, record = finish(monkeypatch, hook)
    # One read of a success's log: its tail for the task log and the history, the timing line in it.
    assert hook.reads == [(f"{TASK_DIR}/t1-900.out", LOG_TAIL_LINES)]
    assert (record.elapsed_s, record.total_cpu_s) == (2.714, 2.686)
    assert record.total_cpu_s <= record.elapsed_s  # sacct said 2.69 s of CPU in 2 s
    assert record.extra["timing"] == "job script"
    assert record.extra["sacct"] == {"elapsed_s": 2.0, "total_cpu_s": 2.69}
    assert (summary["elapsed_s"], summary["total_cpu_s"]) == (2.714, 2.686)


@pytest.mark.parametrize(
    "tail", ["an old script's log: no timing line\n", ClusterUnreachable("ssh: no route")]
)
def test_without_the_line_sacct_s_times_are_recorded(monkeypatch: pytest.MonkeyPatch, tail: Any) -> None:
    summary, record = finish(monkeypatch, TailHook(tail))
    assert summary["state"] == "success"  # a log that cannot be read does not fail a success
    assert (record.elapsed_s, record.total_cpu_s) == (2.0, 2.69)
    assert "timing" not in record.extra and "sacct" not in record.extra
