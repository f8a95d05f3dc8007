"""Resource advice: what each process should ask SLURM for, learnt from what its instances used.

:func:`resource_advice` looks at every instance of a process and suggests a memory request
and a walltime that a chosen fraction (``quantile``) of instances fit in, with headroom, and
says in one line what to change. It is meant for the DC1 pains: 2 GB/core nodes against coadds
that take more than 20 GB, queue time limits, jobs killed for time or memory and rerun by hand.

How the numbers are made
------------------------

- Memory comes from the peak RSS (``max_rss_bytes``) of *successful* instances. An instance
  killed for memory (``reason == "out-of-memory"`` or SLURM state ``OUT_OF_MEMORY``) needed
  *more than it was given*: it counts as a value known only to exceed its request (or its
  MaxRSS, if larger). Failed instances (the payload's fault) and timed-out ones say nothing
  reliable about memory and are left out.
- Walltime comes from the wall-clock time (``elapsed_s``) of successful instances; an
  instance that hit its time limit (``reason == "time-limit"`` or ``TIMEOUT``) counts as
  needing more than its limit (or its elapsed time, if larger).
- The quantile is taken with those lower-bounded values placed above every measured one,
  which is conservative. If more than ``1 - quantile`` of the instances are lower bounds the
  quantile itself is unknown, only bounded below (by the quantile with every lower bound taken
  at its value, and by the smallest bound that must lie under the quantile): the suggestion is
  then a lower bound, flagged, and the advice says "at least".
- Suggested memory = quantile x ``headroom``, rounded up to 100 MB; suggested walltime =
  quantile x ``headroom``, rounded up to a minute. MB are SLURM's (1024 x 1024 bytes), so the
  numbers go straight into ``--mem`` and ``--time``.
- Current requests are the medians of ``req_mem_bytes``, ``req_walltime_s``, ``req_cpus``.
  CPUs used is the quantile of ``total_cpu_s / elapsed_s`` over successful instances.

:func:`advice_overlay` turns the table into a render overlay (``airflow-desc advice --write``):
each process's suggested ``memory_mb`` and ``walltime``, with its evidence (instances, how many
ran out of memory or time, the quantiles used) as a field and its advice as a comment.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from airflow_desc.slurm.units import format_walltime

__all__ = ["ADVICE_COLUMNS", "advice_overlay", "resource_advice"]

#: The columns of :func:`resource_advice`, in order.
ADVICE_COLUMNS: tuple[str, ...] = (
    "Task",
    "Process",
    "Instances",
    "Succeeded",
    "Out of memory",
    "Timed out",
    "Other failures",
    "Mem requested MB",
    "Mem used MB",
    "Mem suggested MB",
    "Mem is lower bound",
    "Walltime requested min",
    "Walltime used min",
    "Walltime suggested min",
    "Walltime is lower bound",
    "CPUs requested",
    "CPUs used",
    "Advice",
)
_REQUIRED = ("task", "process", "state", "elapsed_s", "max_rss_bytes")
_MIB = 1024 * 1024
# A request this many times the suggestion wastes enough to say so.
_OVERSIZED = 2.0


@dataclass(frozen=True)
class _Estimate:
    """A quantile, and whether it is only a lower bound because too many values were."""

    value: float | None
    lower_bound: bool


def _censored_quantile(measured: np.ndarray, bounds: np.ndarray, quantile: float) -> _Estimate:
    """Take the ``quantile`` of measured values and of values known only to exceed ``bounds``."""
    n = len(measured) + len(bounds)
    if n == 0:
        return _Estimate(None, False)
    position = quantile * (n - 1)
    if math.ceil(position) < len(measured):
        # The lower bounds sort above every measured value: the quantile falls among measured values.
        values = np.concatenate([np.sort(measured), np.full(len(bounds), np.inf)])
        low, high = values[math.floor(position)], values[math.ceil(position)]
        return _Estimate(float(low + (high - low) * (position - math.floor(position))), False)
    # Too many lower bounds: at least ``needed`` of them lie at or under the quantile, so it exceeds the
    # ``needed``-th smallest bound (and the quantile of measured values and bounds taken as they are).
    needed = math.ceil(position) + 1 - len(measured)
    floor = float(np.sort(bounds)[needed - 1])
    return _Estimate(max(floor, float(np.quantile(np.concatenate([measured, bounds]), quantile))), True)


def _matches(df: pd.DataFrame, reason: str, slurm_state: str) -> pd.Series:
    found = pd.Series(False, index=df.index)
    if "reason" in df.columns:
        found |= df["reason"].astype(object).eq(reason).fillna(False).astype(bool)
    if "slurm_state" in df.columns:
        found |= df["slurm_state"].astype(object).eq(slurm_state).fillna(False).astype(bool)
    return found


def _numbers(df: pd.DataFrame, column: str) -> pd.Series:
    if column not in df.columns:
        return pd.Series(np.nan, index=df.index, dtype="float64")
    return pd.to_numeric(df[column], errors="coerce").astype("float64")


def _median(values: pd.Series) -> float | None:
    value = values.median()
    return None if pd.isna(value) else float(value)


def _round_up(value: float | None, step: float) -> int | None:
    # At least one step: an instance that used ~nothing (a script done in 0 s) still needs a request.
    return None if value is None else int(max(1, math.ceil(value / step - 1e-9)) * step)


@dataclass(frozen=True)
class _Usage:
    instances: int
    succeeded: int
    out_of_memory: int
    timed_out: int
    other_failures: int
    mem_requested: float | None
    mem_used: _Estimate
    mem_suggested: int | None
    wall_requested: float | None
    wall_used: _Estimate
    wall_suggested: int | None
    cpus_requested: float | None
    cpus_used: float | None


def _usage(group: pd.DataFrame, quantile: float, headroom: float) -> _Usage:
    success = group["state"].astype(str).eq("success").to_numpy()
    oom = _matches(group, "out-of-memory", "OUT_OF_MEMORY").to_numpy() & ~success
    timeout = _matches(group, "time-limit", "TIMEOUT").to_numpy() & ~success & ~oom
    finished_badly = group["state"].astype(str).isin(("failed", "terminated")).to_numpy()
    rss, req_mem = _numbers(group, "max_rss_bytes"), _numbers(group, "req_mem_bytes")
    elapsed, req_wall = _numbers(group, "elapsed_s"), _numbers(group, "req_walltime_s")
    mem = _censored_quantile(
        rss[success].dropna().to_numpy() / _MIB,
        np.fmax(req_mem[oom], rss[oom]).fillna(0.0).to_numpy() / _MIB,
        quantile,
    )
    wall = _censored_quantile(
        elapsed[success].dropna().to_numpy() / 60.0,
        np.fmax(req_wall[timeout], elapsed[timeout]).fillna(0.0).to_numpy() / 60.0,
        quantile,
    )
    cores = (_numbers(group, "total_cpu_s") / elapsed.where(elapsed > 0))[success].dropna()
    return _Usage(
        instances=len(group),
        succeeded=int(success.sum()),
        out_of_memory=int(oom.sum()),
        timed_out=int(timeout.sum()),
        other_failures=int((finished_badly & ~oom & ~timeout).sum()),
        mem_requested=None if (m := _median(req_mem)) is None else m / _MIB,
        mem_used=mem,
        mem_suggested=_round_up(None if mem.value is None else mem.value * headroom, 100),
        wall_requested=None if (w := _median(req_wall)) is None else w / 60.0,
        wall_used=wall,
        wall_suggested=_round_up(None if wall.value is None else wall.value * headroom, 1),
        cpus_requested=_median(_numbers(group, "req_cpus")),
        cpus_used=float(cores.quantile(quantile)) if not cores.empty else None,
    )


def _memory_advice(u: _Usage, quantile: float) -> str | None:
    if u.mem_suggested is None:
        return None
    now = f" (now {u.mem_requested:.0f} MB)" if u.mem_requested is not None else ""
    if u.mem_used.lower_bound:
        return (
            f"{u.out_of_memory} of {u.instances} ran out of memory: raise memory to at least "
            f"{u.mem_suggested} MB{now}: too many were killed to know the real need"
        )
    if u.mem_requested is None:
        return f"request {u.mem_suggested} MB of memory"
    if u.mem_suggested > u.mem_requested:
        why = f"{u.out_of_memory} ran out of memory, " if u.out_of_memory else ""
        used = f"{quantile:.0%} use up to {u.mem_used.value:.0f} MB"
        return f"raise memory to {u.mem_suggested} MB{now}: {why}{used}"
    if u.mem_requested >= _OVERSIZED * u.mem_suggested and u.out_of_memory == 0:
        return f"lower memory to {u.mem_suggested} MB{now}: more instances fit on a node"
    return None


def _walltime_advice(u: _Usage, quantile: float) -> str | None:
    if u.wall_suggested is None:
        return None
    suggested = format_walltime(u.wall_suggested * 60)
    now = f" (now {format_walltime(u.wall_requested * 60)})" if u.wall_requested else ""
    if u.wall_used.lower_bound:
        return (
            f"{u.timed_out} of {u.instances} hit the time limit: raise walltime to at least "
            f"{suggested}{now}, or checkpoint"
        )
    if not u.wall_requested:
        return f"request walltime {suggested}"
    if u.wall_suggested > u.wall_requested:
        why = f"{u.timed_out} timed out, " if u.timed_out else ""
        used = format_walltime(max(u.wall_used.value or 0.0, 1 / 60) * 60)
        return f"raise walltime to {suggested}{now}: {why}{quantile:.0%} take up to {used}"
    if u.wall_requested >= _OVERSIZED * u.wall_suggested and u.timed_out == 0:
        return f"lower walltime to {suggested}{now}: shorter jobs start sooner (backfill)"
    return None


def _cpu_advice(u: _Usage) -> str | None:
    if u.cpus_used is None or u.cpus_requested is None:
        return None
    needed = max(1, math.ceil(u.cpus_used - 0.05))
    if u.cpus_requested > 1 and needed <= u.cpus_requested / 2:
        return f"uses about {u.cpus_used:.1f} of {u.cpus_requested:g} CPUs: request {needed}"
    if needed > u.cpus_requested:
        return f"keeps {u.cpus_used:.1f} cores busy on {u.cpus_requested:g} requested: request {needed} CPUs"
    return None


def _limit_advice(u: _Usage, mem_per_core_mb: float | None, max_walltime_s: float | None) -> list[str]:
    notes: list[str] = []
    if mem_per_core_mb and u.mem_suggested is not None:
        cores = math.ceil(u.mem_suggested / mem_per_core_mb)
        if cores > max(u.cpus_requested or 1.0, 1.0):
            notes.append(
                f"needs the memory of {cores} cores at {mem_per_core_mb:g} MB/core: "
                f"request --cpus-per-task={cores} or a high-memory partition"
            )
    if max_walltime_s and u.wall_suggested is not None and u.wall_suggested * 60 > max_walltime_s:
        limit = format_walltime(max_walltime_s)
        notes.append(f"needs more than the queue limit {limit}: checkpoint or split it")
    return notes


def _advice(u: _Usage, quantile: float, mem_per_core_mb: float | None, max_walltime_s: float | None) -> str:
    if u.mem_suggested is None and u.wall_suggested is None:
        return "nothing to learn from yet: no instance succeeded or ran out of memory or time"
    notes = [n for n in (_memory_advice(u, quantile), _walltime_advice(u, quantile), _cpu_advice(u)) if n]
    notes += _limit_advice(u, mem_per_core_mb, max_walltime_s)
    if u.other_failures and u.other_failures >= 0.1 * u.instances:
        notes.append(
            f"{u.other_failures} of {u.instances} failed for other reasons: more resources will not fix those"
        )
    return "; ".join(notes) if notes else "requests fit: no change"


def _row(task: str, process: str, u: _Usage, advice: str) -> list[object]:
    def rounded(value: float | None, digits: int) -> float:
        return math.nan if value is None else round(value, digits)

    return [
        task,
        process,
        u.instances,
        u.succeeded,
        u.out_of_memory,
        u.timed_out,
        u.other_failures,
        rounded(u.mem_requested, 0),
        rounded(u.mem_used.value, 0),
        u.mem_suggested,
        u.mem_used.lower_bound,
        rounded(u.wall_requested, 1),
        rounded(u.wall_used.value, 1),
        u.wall_suggested,
        u.wall_used.lower_bound,
        rounded(u.cpus_requested, 1),
        rounded(u.cpus_used, 2),
        advice,
    ]


def resource_advice(
    df: pd.DataFrame,
    quantile: float = 0.95,
    headroom: float = 1.2,
    *,
    mem_per_core_mb: float | None = None,
    max_walltime_s: float | None = None,
) -> pd.DataFrame:
    """Suggest memory and walltime requests per (task, process), with one line of advice each.

    :param df: process instances: ``task``, ``process``, ``state``, ``elapsed_s``,
        ``max_rss_bytes``, and when known ``total_cpu_s``, ``req_mem_bytes``,
        ``req_walltime_s``, ``req_cpus``, ``reason``, ``slurm_state``.
    :param quantile: the fraction of instances the suggestion must fit, e.g. 0.95.
    :param headroom: the factor applied on top of the quantile, e.g. 1.2 for 20 % more.
    :param mem_per_core_mb: the target cluster's memory per core (e.g. 2000 at NERSC in DC1);
        when given, advice says how many cores' worth of memory a process takes.
    :param max_walltime_s: the target queue's time limit; when given, advice flags a process
        whose walltime would exceed it.
    :return: one row per (task, process) in first-seen order, columns :data:`ADVICE_COLUMNS`:
        counts, the current requests (medians), the quantiles used (``Mem used MB``,
        ``Walltime used min``, ``CPUs used``), the suggestions (memory in MB rounded up to
        100, walltime in whole minutes), whether each suggestion is only a lower bound, and
        ``Advice``. ``attrs["quantile"]`` and ``attrs["headroom"]`` keep the parameters.
    :raises ValueError: for a quantile outside [0, 1], a headroom below 1, or missing columns.
    """
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be between 0 and 1, got {quantile!r}")
    if headroom < 1.0:
        raise ValueError(f"headroom must be at least 1 (1.2 = 20 % more than used), got {headroom!r}")
    rows: list[list[object]] = []
    if not df.empty:
        missing = [c for c in _REQUIRED if c not in df.columns]
        if missing:
            raise ValueError(f"resource_advice: the frame lacks column(s) {', '.join(missing)}")
        for (task, process), group in df.groupby(["task", "process"], sort=False, dropna=False):
            usage = _usage(group, quantile, headroom)
            rows.append(
                _row(
                    str(task), str(process), usage, _advice(usage, quantile, mem_per_core_mb, max_walltime_s)
                )
            )
    table = pd.DataFrame(rows, columns=list(ADVICE_COLUMNS))
    for column in ("Mem suggested MB", "Walltime suggested min"):
        table[column] = table[column].astype("Int64")
    for column in ("Instances", "Succeeded", "Out of memory", "Timed out", "Other failures"):
        table[column] = table[column].astype("int64")
    for column in ("Mem is lower bound", "Walltime is lower bound"):
        table[column] = table[column].astype(bool)
    table.attrs.update(quantile=quantile, headroom=headroom)
    return table


def _plain(value: Any) -> Any:
    """Return a table cell as YAML writes it: a number, a bool, or ``None`` for a missing value."""
    value = value.item() if hasattr(value, "item") else value
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _flow(mapping: dict[str, object]) -> str:
    """Write a mapping as one YAML flow line (JSON is YAML; names are quoted whatever they hold)."""
    return "{" + ", ".join(f"{key}: {json.dumps(value)}" for key, value in mapping.items()) + "}"


def advice_overlay(advice: pd.DataFrame, extends: str, *, header: Sequence[str] = ()) -> str:
    """Write the advice as a render overlay over ``extends``: each process's suggested requests.

    A process is named by its name, or ``task/name`` when two tasks have a process of that name.
    Only suggestions are written (a process without one is listed in a comment); ``evidence`` says
    what each was learnt from, and the advice line follows as a comment.

    :param advice: the table of :func:`resource_advice` (of batch processes: a script has no requests).
    :param extends: the spec or overlay the written one extends, as it is to be written (a path
        relative to the written file).
    :param header: comment lines for the top of the file (without ``#``).
    :return: the YAML text.
    """
    lines = [f"# {line}".rstrip() for line in header]
    lines += [f"extends: {json.dumps(extends)}", "resources:"]
    names = advice["Process"].astype(str)
    repeated = set(names[names.duplicated(keep=False)])
    nothing: list[str] = []
    for row in advice.to_dict("records"):
        name = (
            str(row["Process"]) if str(row["Process"]) not in repeated else f"{row['Task']}/{row['Process']}"
        )
        memory, walltime = _plain(row["Mem suggested MB"]), _plain(row["Walltime suggested min"])
        if memory is None and walltime is None:
            nothing.append(name)
            continue
        evidence = {
            "task": str(row["Task"]),
            "instances": _plain(row["Instances"]),
            "succeeded": _plain(row["Succeeded"]),
            "out_of_memory": _plain(row["Out of memory"]),
            "timed_out": _plain(row["Timed out"]),
            "other_failures": _plain(row["Other failures"]),
            "memory_used_mb": _plain(row["Mem used MB"]),
            "memory_requested_mb": _plain(row["Mem requested MB"]),
            "memory_is_lower_bound": _plain(row["Mem is lower bound"]),
            "walltime_used_min": _plain(row["Walltime used min"]),
            "walltime_requested_min": _plain(row["Walltime requested min"]),
            "walltime_is_lower_bound": _plain(row["Walltime is lower bound"]),
        }
        advice_text = " ".join(str(row["Advice"]).split())
        lines.append(f"  {json.dumps(name)}:  # {advice_text}")
        if memory is not None:
            lines.append(f"    memory_mb: {int(memory)}")
        if walltime is not None:
            lines.append(f"    walltime: {json.dumps(format_walltime(int(walltime) * 60))}")
        lines.append(f"    evidence: {_flow(evidence)}")
    if len(lines) and lines[-1] == "resources:":
        lines[-1] = "resources: {}"
    lines += [f"# {name}: nothing to learn from yet (no instance succeeded or ran out of memory or time)"
              for name in nothing]  # fmt: skip
    return "\n".join(lines) + "\n"
