"""Maintenance: a cluster's reservations and partition states, and whether a job may be submitted now.

A job sent into a maintenance window does not fail in SLURM, it waits in the queue; but NERSC's
monthly maintenance lasts a day and a job that waits there holds its Airflow try, while a job sent
to a partition that is down is refused by sbatch. So before sbatch, :func:`submission_hold` says
whether a job of a given walltime and node count could start now and end before the next window,
and if not, until when it has to wait (``waiting for maintenance to end at ...``).

What is read, in one command line (:func:`availability_command`), each in UTC (``TZ=UTC``):

- ``scontrol -o show reservation``: every reservation, one ``Key=value`` line each
  (https://slurm.schedmd.com/scontrol.html#SECTION_RESERVATIONS). A job submitted without
  ``--reservation`` (ours never name one) cannot run on a reserved node while the reservation lasts,
  whether it is flagged ``MAINT`` or reserves the nodes for someone else. A reservation therefore
  blocks a job when, while the job would run, it leaves fewer free nodes of the job's partition than
  the job asks for: a ``nodes=ALL`` or partition-wide one always, one of some nodes only when the rest
  are too few. A reservation of no nodes (licenses, burst buffers) blocks nothing.
- ``sinfo -h --format='%P|%a|%N'``: each partition's availability (``up``, ``down``, ``drain``,
  ``inact``; https://slurm.schedmd.com/sinfo.html, ``%a``) and its nodes; ``*`` marks the default
  partition, where a job naming none goes. A partition that is not ``up`` takes no job (sbatch
  refuses one for a down or inactive partition, a drained one keeps it pending forever).

A profile may also list windows by hand (``maintenance:`` in the cluster profile): they cover every
node of the cluster.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from airflow_desc.slurm.nodes import expand_hostlist
from airflow_desc.slurm.parse import SlurmOutputError
from airflow_desc.slurm.parse_controller import scontrol_fields
from airflow_desc.slurm.units import format_walltime

__all__ = [
    "SINFO_PARTITION_FORMAT",
    "ClusterAvailability",
    "MaintenanceWindow",
    "PartitionState",
    "Reservation",
    "SubmissionHold",
    "availability_command",
    "parse_availability",
    "parse_reservations",
    "parse_sinfo_partitions",
    "submission_hold",
]

#: ``sinfo --format``: partition (``*`` after the default one), availability, its nodes.
SINFO_PARTITION_FORMAT = "%P|%a|%N"
_NO_NODES = ("", "(null)")


@dataclass(frozen=True)
class Reservation:
    """One reservation as ``scontrol -o show reservation`` prints it (times read in UTC).

    :param name: ReservationName.
    :param start: StartTime.
    :param end: EndTime.
    :param nodes: Nodes, expanded; empty for a reservation of no nodes.
    :param flags: Flags, e.g. ``{"MAINT", "SPEC_NODES"}``.
    :param partition: PartitionName, ``None`` for ``(null)``.
    :param state: ``ACTIVE`` or ``INACTIVE`` (not started yet).
    """

    name: str
    start: datetime
    end: datetime
    nodes: frozenset[str]
    flags: frozenset[str] = frozenset()
    partition: str | None = None
    state: str = ""

    def window(self) -> MaintenanceWindow | None:
        """Return the window in which no job of ours runs on its nodes (``None``: it takes no node)."""
        if not self.nodes:
            return None
        kind = "maintenance reservation" if "MAINT" in self.flags else "reservation"
        return MaintenanceWindow(self.start, self.end, f"{kind} {self.name}", self.nodes)


@dataclass(frozen=True)
class PartitionState:
    """One partition as ``sinfo -h --format='%P|%a|%N'`` prints it.

    :param name: the partition, without the default marker.
    :param availability: ``up``, ``down``, ``drain`` or ``inact``, lower case.
    :param nodes: its nodes, expanded.
    :param default: whether it is the default partition (``*``).
    """

    name: str
    availability: str
    nodes: frozenset[str]
    default: bool = False

    @property
    def up(self) -> bool:
        """Whether the partition takes jobs."""
        return self.availability == "up"


@dataclass(frozen=True)
class MaintenanceWindow:
    """A time in which no job of ours may run on some nodes.

    :param start: when it starts (UTC).
    :param end: when it ends (UTC).
    :param source: what it is, for messages: ``maintenance reservation X``, ``the profile's window``.
    :param nodes: the nodes it takes; ``None``: every node of the cluster.
    """

    start: datetime
    end: datetime
    source: str
    nodes: frozenset[str] | None = None

    def overlaps(self, start: datetime, end: datetime) -> bool:
        """Whether a job running from ``start`` to ``end`` would run into this window."""
        return self.start < end and self.end > start


@dataclass(frozen=True)
class ClusterAvailability:
    """What a cluster said of its reservations and partitions, at one time.

    :param reservations: every reservation.
    :param partitions: by name.
    """

    reservations: tuple[Reservation, ...] = ()
    partitions: Mapping[str, PartitionState] = field(default_factory=dict)

    def partition(self, name: str | None) -> PartitionState | None:
        """Return the partition ``name`` (``None``: the default one); ``None`` if sinfo did not list it."""
        if name is not None:
            return self.partitions.get(name)
        return next((p for p in self.partitions.values() if p.default), None)

    def windows(self) -> list[MaintenanceWindow]:
        """Return the windows of the reservations that take nodes."""
        return [w for w in (r.window() for r in self.reservations) if w is not None]


@dataclass(frozen=True)
class SubmissionHold:
    """Why a job is not submitted now, and until when (``None``: until the partition comes up).

    :param reason: ``waiting for ...``: for the task log and the status page.
    :param until: when the blocking window ends (UTC), if a window blocks.
    """

    reason: str
    until: datetime | None = None


def _utc(text: str, what: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a time") from None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _nodes(text: str) -> frozenset[str]:
    return frozenset() if text.strip() in _NO_NODES else frozenset(expand_hostlist(text))


def parse_reservations(stdout: str) -> list[Reservation]:
    """Read ``TZ=UTC scontrol -o show reservation``: one ``ReservationName=...`` line per reservation.

    Other lines (``No reservations in the system``) are skipped. Times are read as UTC: run the
    command with ``TZ=UTC``, as :func:`availability_command` does.

    :raises SlurmOutputError: for a reservation line without readable StartTime / EndTime.
    """
    found = []
    for number, raw in enumerate(stdout.splitlines(), start=1):
        line = raw.strip()
        if not line.startswith("ReservationName="):
            continue
        fields = scontrol_fields(line)
        try:
            start = _utc(fields.get("StartTime", ""), "StartTime")
            end = _utc(fields.get("EndTime", ""), "EndTime")
        except ValueError as exc:
            raise SlurmOutputError(
                f"scontrol reservation line {number}: {exc}: {line[:300]!r}", text=line, line_number=number
            ) from None
        flags = frozenset(f for f in fields.get("Flags", "").split(",") if f and f != "(null)")
        partition = fields.get("PartitionName", "")
        found.append(
            Reservation(
                fields["ReservationName"],
                start,
                end,
                _nodes(fields.get("Nodes", "")),
                flags,
                None if partition in _NO_NODES else partition,
                fields.get("State", ""),
            )  # fmt: skip
        )
    return found


def parse_sinfo_partitions(stdout: str) -> dict[str, PartitionState]:
    """Read ``sinfo -h --format='%P|%a|%N'``: one line per partition (nodes of one partition merged).

    :raises SlurmOutputError: for a line that is not three fields.
    """
    partitions: dict[str, PartitionState] = {}
    for number, raw in enumerate(stdout.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        parts = line.split("|")
        if len(parts) != 3:
            raise SlurmOutputError(
                f"sinfo output line {number} has {len(parts)} fields, expected 3 (%P|%a|%N): {line!r}",
                text=line,
                line_number=number,
            )
        name, availability, nodes = (p.strip() for p in parts)
        default = name.endswith("*")
        name = name.rstrip("*")
        earlier = partitions.get(name)
        merged = _nodes(nodes) | (earlier.nodes if earlier else frozenset())
        partitions[name] = PartitionState(name, availability.lower(), merged, default)
    return partitions


def availability_command(marker: str) -> str:
    """One command line printing the reservations and the partitions, each after a ``marker`` line.

    ``<marker>:reservations``, ``TZ=UTC scontrol -o show reservation``, ``<marker>:partitions``,
    ``sinfo -h --format='%P|%a|%N'``, ``<marker>:end``: the end line is printed only when both
    commands succeeded, so that :func:`parse_availability` never takes a half answer for the whole.
    The job poll runs it after its sacct (``sacct ... && { <this>; true; }``), in the same SSH call.

    :param marker: a line no command prints, e.g. :func:`~airflow_desc.slurm.log_tails.new_marker`.
    """
    if not marker or any(c.isspace() for c in marker):
        raise ValueError(f"invalid marker {marker!r}")

    def echo(part: str) -> str:
        return f"printf '%s\\n' {shlex.quote(f'{marker}:{part}')}"

    sinfo = shlex.join(["sinfo", "-h", f"--format={SINFO_PARTITION_FORMAT}"])
    return (
        f"{echo('reservations')} && TZ=UTC scontrol -o show reservation && {echo('partitions')} && "
        f"{sinfo} && {echo('end')}"
    )


def parse_availability(stdout: str, marker: str) -> tuple[str, ClusterAvailability | None]:
    """Split what a command ending in :func:`availability_command` printed.

    :return: the text printed before it (a sacct's output), and the availability, ``None`` when it is
        not complete (scontrol or sinfo failed, or the command was not run).
    :raises SlurmOutputError: for a reservation or partition line that cannot be read.
    """
    before, sep, rest = stdout.partition(f"{marker}:reservations\n")
    if not sep:
        return stdout, None
    reservations, sep, rest = rest.partition(f"{marker}:partitions\n")
    partitions, end, _ = rest.partition(f"{marker}:end")
    if not sep or not end:
        return before, None
    return before, ClusterAvailability(
        tuple(parse_reservations(reservations)), parse_sinfo_partitions(partitions)
    )


def _stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def submission_hold(
    availability: ClusterAvailability | None,
    *,
    cluster: str,
    partition: str | None,
    walltime_s: int,
    nodes: int = 1,
    now: datetime,
    windows: Iterable[MaintenanceWindow] = (),
) -> SubmissionHold | None:
    """Say whether a job may be submitted now, or what it waits for.

    A partition that is not up holds the job until it comes up. Else the job, running from now for
    ``walltime_s``, must leave the window of every reservation (and of every window of ``windows``)
    enough free nodes of its partition; if it does not, the hold lasts until the earliest time from
    which it would (windows one after another are waited out together).

    :param availability: what the cluster said (``None``: not known; only ``windows`` count).
    :param cluster: the cluster, for the reason.
    :param partition: the job's partition (``None``: the default one).
    :param walltime_s: the job's walltime in seconds.
    :param nodes: the nodes it asks for.
    :param now: the time to judge by (aware).
    :param windows: further windows, e.g. a profile's, of every node.
    :return: ``None`` when the job may go now.
    """
    part = availability.partition(partition) if availability is not None else None
    where = f"partition {part.name if part else partition or '(default)'} of {cluster}"
    if part is not None and not part.up:
        return SubmissionHold(f"waiting for {where} to come up: sinfo says it is {part.availability}")
    known: Sequence[MaintenanceWindow] = [*windows, *(availability.windows() if availability else ())]
    usable = part.nodes if part is not None else None
    if usable is None and availability is not None and availability.partitions:
        # A partition sinfo does not list (sbatch will say so): judge by every node of the cluster.
        usable = frozenset().union(*(p.nodes for p in availability.partitions.values()))
    duration = timedelta(seconds=walltime_s)

    def blocking(start: datetime) -> list[MaintenanceWindow]:
        overlapping = [w for w in known if w.overlaps(start, start + duration)]
        if usable is None:  # the cluster's nodes are not known: only whole-cluster windows count
            return [w for w in overlapping if w.nodes is None]
        taken = set().union(*(usable if w.nodes is None else w.nodes for w in overlapping))
        return overlapping if len(usable - taken) < nodes else []

    start = now
    in_the_way: list[MaintenanceWindow] = []
    for _ in range(len(known) + 1):  # each turn waits out at least one window
        found = blocking(start)
        if not found:
            break
        in_the_way += found
        start = min(w.end for w in found)
    if start == now:
        return None
    names = ", ".join(dict.fromkeys(w.source for w in in_the_way))
    return SubmissionHold(
        f"waiting for maintenance to end at {_stamp(start)} ({names} on {where}: a job of "
        f"{format_walltime(walltime_s)} would run into it)",
        start,
    )
