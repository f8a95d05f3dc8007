"""The fault matrix's checker: what the history, Airflow and SLURM say about one DAG run, compared.

Pure: rows in, one :class:`FaultRow` out (the harness, :mod:`tests.faults.__main__`, reads the rows
from the history PostgreSQL, Airflow's metadata DB and ``sacct`` on each cluster). The columns:

``submitted``
    The SLURM jobs of the run: every job, on any cluster, whose name is the deterministic name of
    one try of one of the run's task instances (:func:`airflow_desc.operators.job_names.job_name_for`,
    tries 1 to the task instance's last try + 2), as ``sacct`` lists them.
``duplicates``
    Jobs that repeated the work of an earlier job (by submit time) of the same task instance: they
    ran while it was still running (their start-to-end intervals overlap), or they completed a
    process instance it had already completed: for a single job, both jobs ``COMPLETED``; for a
    bundle, the history records the same process instance ``success`` in both jobs.
``lost``
    Process instances the history lost: one whose latest attempt is not final (``waiting``...
    ``running``, ``cancelling``); a SLURM task instance that ran (``success`` / ``failed``) with no
    attempt in the history at all; a task instance still not final when the run's time was up; and
    a job that started in SLURM whose id no history attempt records (it ran but is not recorded).
    The harness reads the history after writing out the spool (``python -m airflow_desc.history
    flush``, as an operator would) and notes how many records were still waiting there.
``wrong``
    States that disagree. A single job's attempt whose state is not the one its ``sacct`` end state
    means (:func:`expected_history_states`: ``COMPLETED`` success, ``FAILED`` failed, ``TIMEOUT`` /
    ``OUT_OF_MEMORY`` / ``NODE_FAIL`` / ``PREEMPTED`` / ... terminated, ``CANCELLED by <the job
    owner's uid>`` cancelled, ``CANCELLED`` by anyone else terminated), or whose job is still
    queued or running in SLURM after the run ended; an attempt that records a job of another task
    instance (its name is not one of this task instance's); a task instance ``success`` whose
    latest attempts are not all success / skipped, or ``failed`` with none failed / terminated /
    cancelled; and every broken :class:`Expectation` of the fault (e.g. a user's ``scancel``: the
    attempt Cancelled, the task instance failed, no job of a later try).
``recover_s``
    Seconds from the moment the site was whole again (the fault's injection ended, the service
    restored) to the moment the DAG run reached a final state; empty when it did not.

A row meets the target when the run finished and duplicates, lost and wrong are all 0.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime

__all__ = [
    "Expectation",
    "FaultRow",
    "HistoryAttempt",
    "SlurmJob",
    "TaskInstance",
    "check_run",
    "expected_history_states",
    "format_table",
]

FINAL_HISTORY_STATES = frozenset({"success", "failed", "terminated", "cancelled", "skipped"})
FINAL_TI_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})
_TERMINATED = frozenset(
    {"TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE", "REVOKED"}
)
_ACTIVE = frozenset(
    {"PENDING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED", "CONFIGURING", "COMPLETING", "STOPPED"}
)
TiKey = tuple[str, int]


@dataclasses.dataclass(frozen=True)
class TaskInstance:
    """One task instance of the run, from Airflow's metadata DB.

    :param slurm: True for a task that submits SLURM jobs (a batch or bundle operator).
    :param bundle: True for a bundle (one job runs many process instances).
    """

    task_id: str
    map_index: int
    state: str | None
    try_number: int
    slurm: bool
    bundle: bool = False

    @property
    def key(self) -> TiKey:
        return (self.task_id, self.map_index)


@dataclasses.dataclass(frozen=True)
class HistoryAttempt:
    """One row of the history's ``process_instances`` for the run."""

    task_id: str
    map_index: int
    stream: str
    process: str
    try_number: int
    state: str
    job_id: str | None = None
    cluster: str | None = None
    reason: str | None = None

    @property
    def instance(self) -> tuple[str, int, str, str]:
        return (self.task_id, self.map_index, self.stream, self.process)


@dataclasses.dataclass(frozen=True)
class SlurmJob:
    """One job line of ``sacct``, attributed to a task instance try by its deterministic name.

    :param state: sacct's State as printed, e.g. ``COMPLETED`` or ``CANCELLED by 1001``.
    """

    cluster: str
    job_id: str
    task_id: str
    map_index: int
    try_number: int
    state: str
    submit: datetime | None = None
    start: datetime | None = None
    end: datetime | None = None

    @property
    def ti(self) -> TiKey:
        return (self.task_id, self.map_index)

    @property
    def base_state(self) -> str:
        return self.state.split()[0].rstrip("+") if self.state else ""

    def cancelled_by(self) -> int | None:
        parts = self.state.split()
        if self.base_state == "CANCELLED" and len(parts) == 3 and parts[1] == "by" and parts[2].isdigit():
            return int(parts[2])
        return None


@dataclasses.dataclass(frozen=True)
class Expectation:
    """What a fault must leave behind for one task instance, beyond the general rules.

    :param ti_state: Airflow's final state of the task instance.
    :param history_state: the state the history records for the job of try ``try_number`` (the job
        named ``...t<try>``), under whichever try the attempt is recorded (a retry that re-attached
        to it records it as its own).
    :param try_number: that try (default: the task instance's first job).
    :param no_later_jobs: no job of a later try may exist (a user's cancel is not retried).
    """

    task_id: str
    map_index: int = -1
    ti_state: str | None = None
    history_state: str | None = None
    try_number: int = 1
    no_later_jobs: bool = False


@dataclasses.dataclass
class FaultRow:
    """One row of the matrix: the counts, and one line of evidence per thing counted."""

    fault: str
    submitted: int = 0
    duplicates: int = 0
    lost: int = 0
    wrong: int = 0
    recover_s: float | None = None
    finished: bool = True
    skipped: str | None = None
    evidence: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the row meets the target (a skipped row does not fail the matrix)."""
        if self.skipped is not None:
            return True
        return self.finished and self.duplicates == 0 and self.lost == 0 and self.wrong == 0


def expected_history_states(job: SlurmJob, owner_uid: int) -> frozenset[str] | None:
    """The history states that ``job``'s sacct end state allows; None while it is not final."""
    state = job.base_state
    if state == "COMPLETED":
        return frozenset({"success"})
    if state == "FAILED":
        # A payload that ran out of memory may end FAILED; the log tail says so.
        return frozenset({"failed", "terminated"})
    if state in _TERMINATED:
        return frozenset({"terminated"})
    if state == "CANCELLED":
        return frozenset({"cancelled"}) if job.cancelled_by() == owner_uid else frozenset({"terminated"})
    return None


def _overlaps(a: SlurmJob, b: SlurmJob) -> bool:
    if a.start is None or b.start is None:
        return False
    a_end, b_end = a.end or datetime.max, b.end or datetime.max
    return a.start < b_end and b.start < a_end


def _duplicates(
    tis: dict[TiKey, TaskInstance], jobs: Sequence[SlurmJob], history: Sequence[HistoryAttempt]
) -> list[str]:
    by_ti: dict[TiKey, list[SlurmJob]] = defaultdict(list)
    for job in jobs:
        by_ti[job.ti].append(job)
    completed_by_job: dict[str, set[tuple[str, int, str, str]]] = defaultdict(set)
    for att in history:
        if att.state == "success" and att.job_id:
            completed_by_job[att.job_id].add(att.instance)
    found = []
    for key, ti_jobs in by_ti.items():
        ti = tis.get(key)
        ti_jobs = sorted(ti_jobs, key=lambda j: (j.submit or datetime.min, j.job_id))
        for i, job in enumerate(ti_jobs):
            for earlier in ti_jobs[:i]:
                if _overlaps(earlier, job):
                    found.append(
                        f"{job.task_id}[{job.map_index}]: job {job.job_id} ran while {earlier.job_id} ran"
                    )
                    break
                if ti is not None and ti.bundle:
                    same = completed_by_job[job.job_id] & completed_by_job[earlier.job_id]
                    if same:
                        stream, process = sorted(same)[0][2:]
                        found.append(
                            f"{job.task_id}[{job.map_index}]: jobs {earlier.job_id} and {job.job_id} both "
                            f"completed {stream}:{process}"
                        )
                        break
                elif job.base_state == "COMPLETED" and earlier.base_state == "COMPLETED":
                    found.append(
                        f"{job.task_id}[{job.map_index}]: jobs {earlier.job_id} and {job.job_id}"
                        " both COMPLETED"
                    )
                    break
    return found


def _lost(
    tis: dict[TiKey, TaskInstance], jobs: Sequence[SlurmJob], history: Sequence[HistoryAttempt]
) -> list[str]:
    found = []
    for inst, att in sorted(_latest(history).items()):
        if att.state not in FINAL_HISTORY_STATES:
            found.append(f"{inst[0]}[{inst[1]}] {inst[2]}:{inst[3]}: latest attempt (try {att.try_number}) "
                         f"is still {att.state}")  # fmt: skip
    recorded_tis = {(a.task_id, a.map_index) for a in history}
    for key, ti in sorted(tis.items()):
        if ti.state not in FINAL_TI_STATES:
            found.append(f"{key[0]}[{key[1]}]: task instance still {ti.state} when the run's time was up")
        elif ti.slurm and ti.state in ("success", "failed") and key not in recorded_tis:
            found.append(f"{key[0]}[{key[1]}]: task instance {ti.state}, no attempt in the history")
    recorded_jobs = {(a.cluster, a.job_id) for a in history if a.job_id}
    recorded_ids = {a.job_id for a in history if a.job_id}
    for job in jobs:
        if job.start is None:
            continue
        if (job.cluster, job.job_id) not in recorded_jobs and not (
            job.job_id in recorded_ids and all(a.cluster is None for a in history if a.job_id == job.job_id)
        ):
            found.append(f"{job.task_id}[{job.map_index}]: job {job.job_id} on {job.cluster} (try "
                         f"{job.try_number}, {job.state}) ran but is not recorded")  # fmt: skip
    return found


def _latest(history: Sequence[HistoryAttempt]) -> dict[tuple[str, int, str, str], HistoryAttempt]:
    latest: dict[tuple[str, int, str, str], HistoryAttempt] = {}
    for att in history:
        if att.instance not in latest or att.try_number > latest[att.instance].try_number:
            latest[att.instance] = att
    return latest


def _wrong_attempts(
    tis: dict[TiKey, TaskInstance],
    jobs: Sequence[SlurmJob],
    history: Sequence[HistoryAttempt],
    owner_uid: int,
) -> list[str]:
    """Attempts against their jobs' sacct end states."""
    found = []
    job_by_id = {(j.cluster, j.job_id): j for j in jobs}
    for att in history:
        if not att.job_id:
            continue
        where = f"{att.task_id}[{att.map_index}] {att.stream}:{att.process} try {att.try_number}"
        job = job_by_id.get((att.cluster or "", att.job_id)) or next(
            (j for j in jobs if j.job_id == att.job_id and att.cluster is None), None
        )
        if job is None or job.ti != (att.task_id, att.map_index):
            owner = f"{job.task_id}[{job.map_index}]'s" if job else "no task instance's"
            found.append(f"{where}: records job {att.job_id} on {att.cluster}, {owner} job")
            continue
        ti = tis.get(job.ti)
        if job.base_state in _ACTIVE:
            found.append(f"{where}: {att.state}, but job {att.job_id} is still {job.state} in SLURM")
            continue
        if ti is not None and ti.bundle:
            continue  # an instance's state is the pilot's, not the allocation's
        allowed = expected_history_states(job, owner_uid)
        if allowed is None or att.state in allowed:
            continue
        if att.state == "failed" and job.base_state == "COMPLETED" and "check" in (att.reason or ""):
            continue  # an output check failed after the payload succeeded
        found.append(f"{where}: history {att.state}, sacct {job.state} (job {att.job_id})")
    return found


def _wrong_task_instances(tis: dict[TiKey, TaskInstance], history: Sequence[HistoryAttempt]) -> list[str]:
    """Airflow's task-instance states against their latest attempts."""
    found = []
    by_ti: dict[TiKey, list[HistoryAttempt]] = defaultdict(list)
    for att in _latest(history).values():
        by_ti[(att.task_id, att.map_index)].append(att)
    for key, atts in sorted(by_ti.items()):
        ti = tis.get(key)
        if ti is None or not ti.slurm:
            continue
        states = sorted({a.state for a in atts})
        if ti.state == "success" and not set(states) <= {"success", "skipped"}:
            found.append(f"{key[0]}[{key[1]}]: task instance success, latest attempts {', '.join(states)}")
        if ti.state == "failed" and not set(states) & {"failed", "terminated", "cancelled"}:
            found.append(f"{key[0]}[{key[1]}]: task instance failed, latest attempts {', '.join(states)}")
    return found


def _broken_expectations(
    tis: dict[TiKey, TaskInstance],
    jobs: Sequence[SlurmJob],
    history: Sequence[HistoryAttempt],
    expectations: Iterable[Expectation],
) -> list[str]:
    found = []
    for exp in expectations:
        key = (exp.task_id, exp.map_index)
        where = f"{exp.task_id}[{exp.map_index}]"
        ti = tis.get(key)
        if exp.ti_state is not None and (ti is None or ti.state != exp.ti_state):
            found.append(f"{where}: task instance {ti.state if ti else 'missing'}, expected {exp.ti_state}")
        if exp.history_state is not None:
            ids = {j.job_id for j in jobs if j.ti == key and j.try_number == exp.try_number}
            states = sorted({a.state for a in history if (a.task_id, a.map_index) == key and a.job_id in ids})
            if exp.history_state not in states:
                recorded = ", ".join(states) or "nothing"
                found.append(
                    f"{where}: try {exp.try_number}'s job recorded {recorded}, expected {exp.history_state}"
                )
        if exp.no_later_jobs:
            later = sorted(j.job_id for j in jobs if j.ti == key and j.try_number > exp.try_number)
            if later:
                found.append(f"{where}: resubmitted after try {exp.try_number}: job(s) {', '.join(later)}")
    return found


def _relabelled(jobs: Sequence[SlurmJob], history: Sequence[HistoryAttempt]) -> list[str]:
    """Attempts recorded under another try than the one that submitted their job (not counted)."""
    by_id = {(j.cluster, j.job_id): j for j in jobs}
    return [
        f"{a.task_id}[{a.map_index}] {a.stream}:{a.process}: job {a.job_id} of try {job.try_number} "
        f"recorded as try {a.try_number}"
        for a in history
        if a.job_id and (job := by_id.get((a.cluster or "", a.job_id))) is not None
        and job.ti == (a.task_id, a.map_index) and job.try_number != a.try_number
    ]  # fmt: skip


def check_run(
    fault: str,
    *,
    tis: Iterable[TaskInstance],
    history: Sequence[HistoryAttempt],
    jobs: Sequence[SlurmJob],
    owner_uid: int,
    expectations: Iterable[Expectation] = (),
    recover_s: float | None = None,
    finished: bool = True,
) -> FaultRow:
    """Compare one run's task instances, history attempts and SLURM jobs; see the module docstring.

    :param owner_uid: the uid the jobs run as (a cancel by it is the user's: Cancelled).
    :param finished: False when the run had not finished when its time was up.
    """
    ti_map = {ti.key: ti for ti in tis}
    dups = _duplicates(ti_map, jobs, history)
    lost = _lost(ti_map, jobs, history)
    wrong = (
        _wrong_attempts(ti_map, jobs, history, owner_uid)
        + _wrong_task_instances(ti_map, history)
        + _broken_expectations(ti_map, jobs, history, expectations)
    )
    evidence = [f"duplicate: {e}" for e in dups] + [f"lost: {e}" for e in lost]
    evidence += [f"wrong: {e}" for e in wrong]
    evidence += [f"note: {e}" for e in _relabelled(jobs, history)]
    if not finished:
        evidence.insert(0, "the run did not finish in time")
    return FaultRow(
        fault,
        submitted=len(jobs),
        duplicates=len(dups),
        lost=len(lost),
        wrong=len(wrong),
        recover_s=recover_s,
        finished=finished,
        evidence=evidence,
    )


def format_table(rows: Sequence[FaultRow]) -> str:
    """The matrix as text: one line per fault, then the evidence of the rows that miss the target."""
    head = (
        f"{'fault':<22} {'submitted':>9} {'duplicates':>10} {'lost':>5} {'wrong':>5} {'recover_s':>9}  result"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        if row.skipped is not None:
            lines.append(f"{row.fault:<22} {'':>9} {'':>10} {'':>5} {'':>5} {'':>9}  SKIPPED: {row.skipped}")
            continue
        rec = "" if row.recover_s is None else f"{row.recover_s:.0f}"
        result = "ok" if row.ok else ("MISSED" if row.finished else "MISSED (run unfinished)")
        lines.append(
            f"{row.fault:<22} {row.submitted:>9} {row.duplicates:>10} {row.lost:>5} {row.wrong:>5}"
            f" {rec:>9}  {result}"
        )
    for row in rows:
        if row.evidence and row.skipped is None:
            lines.append("")
            lines.append(f"{row.fault}:")
            lines.extend(f"  {line}" for line in row.evidence)
    return "\n".join(lines)
