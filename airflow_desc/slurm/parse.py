"""Parse what sbatch, sacct, squeue and ``scontrol show job`` print.

The parsers are strict about structure (a line with the wrong number of fields is an
error naming its line number) and tolerant about formats: blank lines, surrounding
whitespace, memory with or without units, ``Unknown`` timestamps, the trailing ``|``
of ``sacct -p`` and the ``CLUSTER:`` lines of ``squeue --clusters``.

Timestamps are naive :class:`~datetime.datetime` objects in the cluster's local time,
as sacct prints them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from airflow_desc.exceptions import SlurmOutputError
from airflow_desc.slurm.commands import SACCT_FIELDS, SQUEUE_FIELDS, validate_job_id
from airflow_desc.slurm.states import ParsedState, SlurmState, StateClass, parse_state
from airflow_desc.slurm.units import MemoryScope, parse_duration, parse_memory, parse_req_mem

__all__ = [
    "CONTROLLER_NOTE",
    "ControllerJob",
    "JobAccounting",
    "SacctRow",
    "SlurmOutputError",
    "SqueueRow",
    "SubmittedJob",
    "accounting_from_payload",
    "accounting_to_payload",
    "group_accounting",
    "parse_exit_code",
    "parse_sacct",
    "parse_sbatch_output",
    "parse_scontrol_jobs",
    "parse_squeue",
]

_T = TypeVar("_T")
_SBATCH_RE = re.compile(r"^(?P<id>\d+)(?:;(?P<cluster>[^;\s]+))?$")
_EXIT_RE = re.compile(r"^(?P<code>\d+):(?P<signal>\d+)$")
_CLUSTER_RE = re.compile(r"^CLUSTER:\s*(\S+)$")
# The start of each ``Key=value`` of ``scontrol -o``: keys such as ``AllocNode:Sid``, ``CPUs/Task``.
_SCONTROL_KEY_RE = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9:/_]*)=")
_TRES_MEM_RE = re.compile(r"(?:^|,)mem=([^,]+)")
_NO_VALUE = frozenset({"", "UNKNOWN", "NONE", "(NULL)", "N/A", "NONE ASSIGNED"})


@dataclass(frozen=True)
class SubmittedJob:
    """What ``sbatch --parsable`` reported.

    :param job_id: the new job's id.
    :param cluster: the cluster name, printed only in multi-cluster setups.
    """

    job_id: str
    cluster: str | None = None


def parse_sbatch_output(stdout: str) -> SubmittedJob:
    """Read the output of ``sbatch --parsable``: ``123`` or ``123;cluster``.

    The last non-empty line counts, so a login banner printed before it is ignored.

    :param stdout: what sbatch printed on stdout.
    :return: the submitted job.
    :raises SlurmOutputError: if the last line is not a job id (the error carries the text).
    """
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    match = _SBATCH_RE.match(lines[-1]) if lines else None
    if match is None:
        raise SlurmOutputError(
            f"sbatch did not print a job id; its output was: {stdout.strip()[:500]!r}", text=stdout
        )
    return SubmittedJob(match.group("id"), match.group("cluster"))


def parse_exit_code(text: str) -> tuple[int | None, int | None]:
    """Read an ExitCode or DerivedExitCode field, ``<exit code>:<signal>``.

    :param text: e.g. ``"3:0"`` (exit 3), ``"0:9"`` (killed by signal 9), ``""``.
    :return: ``(exit_code, signal)``, both ``None`` for an empty field.
    :raises ValueError: for anything else.
    """
    value = text.strip()
    if not value:
        return None, None
    match = _EXIT_RE.match(value)
    if match is None:
        raise ValueError(f"not a SLURM exit code: {text!r}")
    return int(match.group("code")), int(match.group("signal"))


def _timestamp(text: str) -> datetime | None:
    value = text.strip()
    if value.upper() in _NO_VALUE:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not a SLURM timestamp: {text!r}") from None


def _text(text: str) -> str | None:
    value = text.strip()
    return None if value.upper() in _NO_VALUE else value


def _int(text: str) -> int | None:
    value = text.strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"not an integer: {text!r}") from None


@dataclass(frozen=True)
class SacctRow:
    """One line of ``sacct -P -n --noconvert`` output: a job or one of its steps.

    Fields that were not in the requested field list are ``None``.

    :param job_id: the job part of JobID: ``123``, ``123_4`` (array task), ``123+0`` (het job).
    :param step: the step part: ``None`` for the job line, ``batch``, ``extern``, ``0``, ...
    :param job_name: JobName (``batch`` / ``extern`` for those steps).
    :param state: the parsed State, with ``cancelled_by_uid`` for ``CANCELLED by <uid>``.
    :param exit_code: ExitCode before the colon.
    :param signal: ExitCode after the colon: the signal that killed it, or 0.
    :param derived_exit_code: DerivedExitCode before the colon (job lines only).
    :param derived_signal: DerivedExitCode after the colon.
    :param elapsed_s: Elapsed, seconds.
    :param total_cpu_s: TotalCPU (user + system), seconds.
    :param cpu_time_s: CPUTime (elapsed x allocated CPUs), seconds.
    :param max_rss_bytes: MaxRSS, bytes (empty on job lines).
    :param req_mem_bytes: ReqMem, bytes; ``None`` while pending (``16?``).
    :param req_mem_scope: ``"node"`` / ``"cpu"`` when ReqMem had the pre-21.08 ``n`` / ``c`` suffix.
    :param req_cpus: ReqCPUS.
    :param alloc_cpus: AllocCPUS.
    :param nnodes: NNodes.
    :param node_list: NodeList; ``None`` for ``None assigned``.
    :param submit: Submit time.
    :param start: Start time; ``None`` for ``Unknown``.
    :param end: End time; ``None`` for ``Unknown`` (still running).
    :param time_limit_s: Timelimit, seconds; ``None`` for ``UNLIMITED`` or steps.
    :param partition: Partition.
    :param cluster: Cluster.
    :param reason: Reason; ``None`` for ``None``.
    :param uid: UID, the uid the job runs as (only when asked for, e.g. by ``owner_sacct_command``).
    :param raw: every requested field as printed, by field name.
    :param line_number: the line of the output this row came from.
    """

    job_id: str
    step: str | None
    state: ParsedState
    job_name: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    derived_exit_code: int | None = None
    derived_signal: int | None = None
    elapsed_s: float | None = None
    total_cpu_s: float | None = None
    cpu_time_s: float | None = None
    max_rss_bytes: int | None = None
    req_mem_bytes: int | None = None
    req_mem_scope: MemoryScope | None = None
    req_cpus: int | None = None
    alloc_cpus: int | None = None
    nnodes: int | None = None
    node_list: str | None = None
    submit: datetime | None = None
    start: datetime | None = None
    end: datetime | None = None
    time_limit_s: float | None = None
    partition: str | None = None
    cluster: str | None = None
    reason: str | None = None
    uid: int | None = None
    raw: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False, repr=False)
    line_number: int | None = field(default=None, compare=False)

    @property
    def full_id(self) -> str:
        """The JobID as sacct printed it, e.g. ``123.batch``."""
        return self.job_id if self.step is None else f"{self.job_id}.{self.step}"

    @property
    def cancelled_by_uid(self) -> int | None:
        """For ``CANCELLED by <uid>``, the uid."""
        return self.state.cancelled_by_uid


def _value(values: Mapping[str, str], name: str, convert: Callable[[str], _T]) -> _T | None:
    text = values.get(name.lower())
    return None if text is None else convert(text)


def _row_from_fields(values: Mapping[str, str], line_number: int) -> SacctRow:
    full_id = values["jobid"].strip()
    if not full_id:
        raise ValueError("empty JobID")
    job_id, _, step = full_id.partition(".")
    exit_code, signal = _value(values, "ExitCode", parse_exit_code) or (None, None)
    derived_exit, derived_signal = _value(values, "DerivedExitCode", parse_exit_code) or (None, None)
    req_mem, req_scope = _value(values, "ReqMem", parse_req_mem) or (None, None)
    state_text = values.get("state")
    return SacctRow(
        job_id=job_id,
        step=step or None,
        state=parse_state(state_text) if state_text is not None else ParsedState(SlurmState.UNKNOWN, ""),
        job_name=_value(values, "JobName", str.strip),
        exit_code=exit_code,
        signal=signal,
        derived_exit_code=derived_exit,
        derived_signal=derived_signal,
        elapsed_s=_value(values, "Elapsed", parse_duration),
        total_cpu_s=_value(values, "TotalCPU", parse_duration),
        cpu_time_s=_value(values, "CPUTime", parse_duration),
        max_rss_bytes=_value(values, "MaxRSS", parse_memory),
        req_mem_bytes=req_mem,
        req_mem_scope=req_scope,
        req_cpus=_value(values, "ReqCPUS", _int),
        alloc_cpus=_value(values, "AllocCPUS", _int),
        nnodes=_value(values, "NNodes", _int),
        node_list=_value(values, "NodeList", _text),
        submit=_value(values, "Submit", _timestamp),
        start=_value(values, "Start", _timestamp),
        end=_value(values, "End", _timestamp),
        time_limit_s=_value(values, "Timelimit", parse_duration),
        partition=_value(values, "Partition", _text),
        cluster=_value(values, "Cluster", _text),
        reason=_value(values, "Reason", _text),
        uid=_value(values, "UID", _int),
        raw=dict(values),
        line_number=line_number,
    )


def _split_line(number: int, line: str, count: int, what: str, name_index: int | None = None) -> list[str]:
    """Split one stripped, non-blank line into exactly ``count`` ``|``-separated parts.

    SLURM accepts ``|`` in job names (sbatch -J 'a|b'); with ``name_index``, the position of the
    job name, surplus separators are given back to that one free-text field.
    """
    parts = line.split("|")
    extra = len(parts) - count
    if extra > 0 and name_index is not None:
        parts[name_index : name_index + extra + 1] = ["|".join(parts[name_index : name_index + extra + 1])]
    elif len(parts) == count + 1 and parts[-1] == "":
        parts.pop()  # sacct -p / --parsable ends every line with "|" (we use -P, which does not)
    if len(parts) != count:
        raise SlurmOutputError(
            f"{what} output line {number} has {len(parts)} fields, expected {count}: {line!r}",
            text=line,
            line_number=number,
        )
    return parts


def parse_sacct(stdout: str, fields: Sequence[str] = SACCT_FIELDS) -> list[SacctRow]:
    """Parse ``sacct -P -n --noconvert -o <fields>`` output.

    :param stdout: what sacct printed.
    :param fields: the field list given to ``-o``, in order; it must contain ``JobID``.
    :return: one row per non-blank line, in output order.
    :raises SlurmOutputError: for a line with the wrong number of fields or an unreadable
        value, naming the line number and its content.
    """
    names = [name.strip().lower() for name in fields]
    if "jobid" not in names:
        raise ValueError("sacct fields must include JobID")
    name_index = names.index("jobname") if "jobname" in names else None
    rows = []
    for number, raw_line in enumerate(stdout.splitlines(), start=1):
        line = raw_line.strip()
        if not line:
            continue
        parts = _split_line(number, line, len(names), "sacct", name_index)
        try:
            rows.append(_row_from_fields(dict(zip(names, parts, strict=True)), number))
        except ValueError as exc:
            raise SlurmOutputError(
                f"sacct output line {number}: {exc}: {line!r}", text=line, line_number=number
            ) from exc
    return rows


@dataclass(frozen=True)
class JobAccounting:
    """One job with its steps, as sacct reports them, and the values derived from both.

    :param job_id: the job id (``123`` or ``123_4`` for an array task).
    :param job: the job line; ``None`` if sacct printed only steps.
    :param steps: the step lines in output order (``batch``, ``extern``, ``0``, ...).
    """

    job_id: str
    job: SacctRow | None
    steps: tuple[SacctRow, ...] = ()

    @property
    def _main(self) -> SacctRow:
        if self.job is not None:
            return self.job
        return self.step("batch") or self.steps[0]

    def step(self, name: str) -> SacctRow | None:
        """Return the step called ``name`` (``"batch"``, ``"extern"``, ``"0"``), if present.

        :param name: the step part of the JobID.
        :return: the row, or ``None``.
        """
        return next((row for row in self.steps if row.step == name), None)

    @property
    def rows(self) -> tuple[SacctRow, ...]:
        """The job line (if any) followed by the steps."""
        return ((self.job,) if self.job is not None else ()) + self.steps

    @property
    def state(self) -> ParsedState:
        """The job's state (the job line's, else the batch step's)."""
        return self._main.state

    @property
    def state_class(self) -> StateClass:
        """The class of :attr:`state`."""
        return self.state.state_class

    @property
    def is_placeholder(self) -> bool:
        """Whether the job line is slurmdbd's stand-in, not the job's real record.

        When a job's step records reach slurmdbd before its own start record, sacct shows a job
        line named ``allocation`` with no partition, no time limit and a ReqMem of 2^64: recorded
        from this site in ``tests/data/site/sacct-placeholder-allocation.txt``. The real line
        replaces it within seconds, so a poller must wait rather than believe its state.
        """
        job = self.job
        if job is None:
            return False
        asked = {name.lower() for name in job.raw}
        # Only a line that was asked for Partition and Timelimit and has neither is a stand-in.
        return {"partition", "timelimit"} <= asked and job.partition is None and job.time_limit_s is None

    @property
    def is_terminal(self) -> bool:
        """Whether SLURM is done with this job id."""
        return self.state.is_terminal

    @property
    def exit_code(self) -> int | None:
        """The job's exit code."""
        return self._main.exit_code

    @property
    def signal(self) -> int | None:
        """The signal that ended the job, 0 if none."""
        return self._main.signal

    @property
    def cancelled_by_uid(self) -> int | None:
        """The uid that cancelled the job or one of its steps (``CANCELLED by <uid>``)."""
        for row in self.rows:
            if row.cancelled_by_uid is not None:
                return row.cancelled_by_uid
        return None

    @property
    def elapsed_s(self) -> float | None:
        """Wall-clock time of the job."""
        return self._main.elapsed_s

    @property
    def total_cpu_s(self) -> float | None:
        """CPU time used: the job line's TotalCPU (sacct sums the steps), else the steps' sum."""
        if self.job is not None and self.job.total_cpu_s is not None:
            return self.job.total_cpu_s
        values = [row.total_cpu_s for row in self.steps if row.total_cpu_s is not None]
        return sum(values) if values else None

    @property
    def max_rss_bytes(self) -> int | None:
        """Peak resident memory of any task of any step (the job line's MaxRSS is empty)."""
        values = [row.max_rss_bytes for row in self.rows if row.max_rss_bytes is not None]
        return max(values) if values else None

    @property
    def req_mem_bytes(self) -> int | None:
        """ReqMem as printed on the job line (or a step), in bytes."""
        for row in self.rows:
            if row.req_mem_bytes is not None:
                return row.req_mem_bytes
        return None

    @property
    def mem_limit_per_node_bytes(self) -> int | None:
        """The memory one node of the job may use, to compare with MaxRSS.

        slurm >= 21.08 prints the job's total (TRES) memory, divided here by NNodes;
        older versions print it per node (``n``) or per CPU (``c``, times AllocCPUS per node).
        """
        row = next((r for r in self.rows if r.req_mem_bytes is not None), None)
        if row is None or row.req_mem_bytes is None:
            return None
        nnodes = self._first(lambda r: r.nnodes) or 1
        if row.req_mem_scope == "node":
            return row.req_mem_bytes
        if row.req_mem_scope == "cpu":
            cpus = self._first(lambda r: r.alloc_cpus)
            return None if cpus is None else row.req_mem_bytes * max(1, cpus // nnodes)
        return row.req_mem_bytes // nnodes

    @property
    def node_list(self) -> str | None:
        """The nodes the job ran on."""
        return self._first(lambda r: r.node_list)

    @property
    def cluster(self) -> str | None:
        """The cluster, when the Cluster field was requested."""
        return self._first(lambda r: r.cluster)

    @property
    def job_name(self) -> str | None:
        """The job's name (from the job line)."""
        return self._main.job_name

    def _first(self, get: Callable[[SacctRow], _T | None]) -> _T | None:
        for row in self.rows:
            value = get(row)
            if value is not None:
                return value
        return None


def group_accounting(rows: Iterable[SacctRow]) -> dict[str, JobAccounting]:
    """Gather sacct rows into one :class:`JobAccounting` per job.

    :param rows: rows from :func:`parse_sacct`, in any order.
    :return: by job id, in order of first appearance.
    """
    jobs: dict[str, SacctRow | None] = {}
    steps: dict[str, list[SacctRow]] = {}
    for row in rows:
        jobs.setdefault(row.job_id, None)
        steps.setdefault(row.job_id, [])
        if row.step is None:
            jobs[row.job_id] = row
        else:
            steps[row.job_id].append(row)
    return {job_id: JobAccounting(job_id, job, tuple(steps[job_id])) for job_id, job in jobs.items()}


@dataclass(frozen=True)
class SqueueRow:
    """One line of ``squeue -h --format='%i|%j|%T|%r|%M|%l|%N'``.

    :param job_id: ``%i``, e.g. ``123``, ``123_4`` or ``123_[5-9]`` for pending array tasks.
    :param name: ``%j``.
    :param state: ``%T``, parsed.
    :param reason: ``%r``; ``None`` for ``None``.
    :param time_used_s: ``%M``, seconds.
    :param time_limit_s: ``%l``, seconds; ``None`` for ``UNLIMITED``.
    :param node_list: ``%N``; ``None`` while pending.
    :param cluster: from the preceding ``CLUSTER: name`` line of ``squeue --clusters``.
    :param line_number: the line of the output this row came from.
    """

    job_id: str
    name: str
    state: ParsedState
    reason: str | None
    time_used_s: float | None
    time_limit_s: float | None
    node_list: str | None
    cluster: str | None = None
    line_number: int | None = field(default=None, compare=False)


def parse_squeue(stdout: str) -> list[SqueueRow]:
    """Parse the output of :func:`~airflow_desc.slurm.commands.squeue_command`.

    :param stdout: what squeue printed.
    :return: one row per job line.
    :raises SlurmOutputError: for a malformed line, naming its number and content.
    """
    rows = []
    cluster: str | None = None
    for number, raw_line in enumerate(stdout.splitlines(), start=1):
        line = raw_line.strip()
        if not line:
            continue
        header = _CLUSTER_RE.match(line)
        if header is not None:
            cluster = header.group(1)
            continue
        parts = _split_line(number, line, len(SQUEUE_FIELDS), "squeue", SQUEUE_FIELDS.index("Name"))
        job_id, name, state, reason, used, limit, nodes = (part.strip() for part in parts)
        try:
            if not job_id:
                raise ValueError("empty job id")
            row = SqueueRow(
                job_id=job_id,
                name=name,
                state=parse_state(state),
                reason=_text(reason),
                time_used_s=parse_duration(used),
                time_limit_s=parse_duration(limit),
                node_list=_text(nodes),
                cluster=cluster,
                line_number=number,
            )
        except ValueError as exc:
            raise SlurmOutputError(
                f"squeue output line {number}: {exc}: {line!r}", text=line, line_number=number
            ) from exc
        rows.append(row)
    return rows


def accounting_to_payload(accounting: JobAccounting) -> dict[str, Any]:
    """Turn a job's accounting into a JSON-able dict (the raw sacct fields of each row)."""
    return {"job_id": accounting.job_id, "rows": [dict(row.raw) for row in accounting.rows]}


def accounting_from_payload(payload: Mapping[str, Any]) -> JobAccounting:
    """Rebuild a job's accounting from :func:`accounting_to_payload` output (e.g. a trigger event)."""
    rows = payload["rows"]
    fields = tuple(rows[0].keys()) if rows else ()
    text = "\n".join("|".join(row[f] for f in fields) for row in rows)
    job_id = str(payload["job_id"])
    found = group_accounting(parse_sacct(text, fields)).get(job_id)
    if found is None:
        raise ValueError(f"the event carries no accounting rows for job {job_id}")
    return found


#: What a record of a job settled from the controller says: sacct had no line of it.
CONTROLLER_NOTE = (
    "accounting purged: state from the controller (scontrol), sacct had no record of the job; "
    "CPU time and peak memory unknown"
)


@dataclass(frozen=True)
class ControllerJob:
    """One job as ``scontrol -o show job`` reports it: what the controller knows, slurmdbd aside.

    The controller keeps a job for ``MinJobAge`` seconds after it ends, so it still answers for a
    job whose accounting rows were purged from slurmdbd. It knows no CPU time and no peak memory.

    :param job_id: JobId, or ``<ArrayJobId>_<ArrayTaskId>`` for an array task.
    :param job_name: JobName.
    :param state: JobState, parsed.
    :param fields: every ``Key=value`` of the line, as printed.
    """

    job_id: str
    job_name: str
    state: ParsedState
    fields: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def is_terminal(self) -> bool:
        """Whether SLURM is done with this job."""
        return self.state.is_terminal

    def to_accounting(self) -> JobAccounting:
        """Return the job as a :class:`JobAccounting` of one job line, in sacct's fields.

        The controller knows the state, exit code, run time, nodes, times and limits; TotalCPU,
        CPUTime, MaxRSS and DerivedExitCode stay empty.

        Its :func:`accounting_to_payload` reads back through :func:`accounting_from_payload`.
        """
        get = self.fields.get
        mem = _TRES_MEM_RE.search(get("TRES", ""))
        raw = {
            "JobID": self.job_id,
            "JobName": self.job_name,
            "State": self.state.raw,
            "ExitCode": get("ExitCode", ""),
            "DerivedExitCode": "",
            "Elapsed": get("RunTime", ""),
            "TotalCPU": "",
            "CPUTime": "",
            "MaxRSS": "",
            "ReqMem": mem.group(1) if mem else "",
            "ReqCPUS": get("NumCPUs", ""),
            "AllocCPUS": get("NumCPUs", ""),
            "NNodes": get("NumNodes", ""),
            "NodeList": get("NodeList", ""),
            "Submit": get("SubmitTime", ""),
            "Start": get("StartTime", ""),
            "End": get("EndTime", ""),
            "Timelimit": get("TimeLimit", ""),
            "Partition": get("Partition", ""),
            "Cluster": get("ClusterName", ""),
            "Reason": get("Reason", ""),
        }
        values = {name.lower(): raw.get(name, "") for name in SACCT_FIELDS}
        return JobAccounting(self.job_id, _row_from_fields(values, 1))


def _scontrol_fields(line: str) -> dict[str, str]:
    keys = list(_SCONTROL_KEY_RE.finditer(line))
    fields = {}
    for here, after in zip(keys, [*keys[1:], None], strict=True):
        end = after.start() if after is not None else len(line)
        fields[here.group(1)] = line[here.end() : end].strip()
    return fields


def parse_scontrol_jobs(stdout: str) -> dict[str, ControllerJob]:
    """Parse ``scontrol -o show job`` output: one ``Key=value Key=value ...`` line per job.

    Lines not starting with ``JobId=`` (an error scontrol printed for an id it does not know, a
    login banner) are skipped: such a job is simply absent.

    :param stdout: what :func:`~airflow_desc.slurm.commands.controller_jobs_command` printed.
    :return: by job id; an array task under ``<ArrayJobId>_<ArrayTaskId>`` as well as its own JobId.
    :raises SlurmOutputError: for a job line without a valid JobId or JobState, naming its number.
    """
    jobs: dict[str, ControllerJob] = {}
    for number, raw_line in enumerate(stdout.splitlines(), start=1):
        line = raw_line.strip()
        if not line.startswith("JobId="):
            continue
        fields = _scontrol_fields(line)
        try:
            job_id = validate_job_id(fields.get("JobId", ""))
            if "JobState" not in fields:
                raise ValueError("no JobState")
            state = parse_state(fields["JobState"])
            ids = [job_id]
            array_job, array_task = fields.get("ArrayJobId"), fields.get("ArrayTaskId")
            if array_job and array_task and array_task.isdigit():
                ids.insert(0, validate_job_id(f"{array_job}_{array_task}"))
        except ValueError as exc:
            raise SlurmOutputError(
                f"scontrol output line {number}: {exc}: {line[:300]!r}", text=line, line_number=number
            ) from exc
        for key in ids:
            jobs[key] = ControllerJob(key, fields.get("JobName", ""), state, fields)
    return jobs
