"""Parse what sbatch, sacct and squeue print.

The parsers are strict about structure (a line with the wrong number of fields is an
error naming its line number) and tolerant about formats: blank lines, surrounding
whitespace, memory with or without units, ``Unknown`` timestamps, the trailing ``|``
of ``sacct -p`` and the ``CLUSTER:`` lines of ``squeue --clusters``.

Timestamps are naive :class:`~datetime.datetime` objects in the cluster's local time,
as sacct prints them. A job's sacct rows are gathered in :mod:`~airflow_desc.slurm.accounting`;
``scontrol show job`` is read in :mod:`~airflow_desc.slurm.parse_controller`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from airflow_desc.exceptions import SlurmOutputError
from airflow_desc.slurm.commands import SACCT_FIELDS, SQUEUE_FIELDS
from airflow_desc.slurm.states import ParsedState, SlurmState, parse_state
from airflow_desc.slurm.units import MemoryScope, parse_duration, parse_memory, parse_req_mem

__all__ = [
    "SacctRow",
    "SlurmOutputError",
    "SqueueRow",
    "SubmittedJob",
    "parse_exit_code",
    "parse_sacct",
    "parse_sbatch_output",
    "parse_squeue",
]

_T = TypeVar("_T")
_SBATCH_RE = re.compile(r"^(?P<id>\d+)(?:;(?P<cluster>[^;\s]+))?$")
_EXIT_RE = re.compile(r"^(?P<code>\d+):(?P<signal>\d+)$")
_CLUSTER_RE = re.compile(r"^CLUSTER:\s*(\S+)$")
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
