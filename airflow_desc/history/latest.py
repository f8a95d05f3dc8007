"""What a batch of attempts changes: which attempt of each process instance is latest, and the counts.

Pure Python, no SQL: the writer (:meth:`~airflow_desc.history.writer.HistoryStore.record`) reads
the attempts already recorded of the instances a batch touches (:class:`HeldAttempt`), under the
lock on their runs, and :func:`plan_batch` says

* the ``latest`` flag of each row of the batch, and the recorded attempts whose flag changes;
* how ``instance_counts`` moves: each touched instance leaves the row of its old latest attempt
  (one instance, its old number of attempts) and joins that of its new one.

An instance's latest attempt is its highest ``(try_number, resubmit)``; a rewrite of an attempt
(same key: a spool replay, a record updated) replaces it, and an earlier attempt arriving late is
superseded on arrival.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["COUNT_GROUP", "INSTANCE_COLUMNS", "BatchPlan", "HeldAttempt", "plan_batch"]

#: The columns of a process instance's identity (an attempt adds ``try_number, resubmit``).
INSTANCE_COLUMNS = ("run_ref", "stream_ref", "task_id", "map_index", "process")
#: The key of an ``instance_counts`` row: taken from an instance's latest attempt.
COUNT_GROUP = ("run_ref", "workflow_ref", "task", "version", "process", "process_type", "state")

InstanceKey = tuple[Any, ...]
Group = tuple[Any, ...]


@dataclass(frozen=True)
class HeldAttempt:
    """An attempt already recorded: its row id, its ``latest`` flag, and its columns by name.

    :param id: ``process_instances.id``.
    :param latest: the flag as stored.
    :param columns: at least :data:`INSTANCE_COLUMNS`, :data:`COUNT_GROUP`, ``try_number`` and
        ``resubmit``.
    """

    id: int
    latest: bool
    columns: Mapping[str, Any]


@dataclass
class BatchPlan:
    """What :func:`plan_batch` decided.

    :param flips: recorded attempts (ids) not in the batch whose ``latest`` becomes the value.
    :param counts: ``instance_counts`` changes by :data:`COUNT_GROUP`: (instances, attempts) to
        add, non-zero only.
    """

    flips: dict[bool, list[int]] = field(default_factory=lambda: {True: [], False: []})
    counts: dict[Group, tuple[int, int]] = field(default_factory=dict)


# itemgetters: a batch plans a row per attempt, up to tens of thousands a batch.
_instance: Callable[[Mapping[str, Any]], InstanceKey] = operator.itemgetter(*INSTANCE_COLUMNS)
_group: Callable[[Mapping[str, Any]], Group] = operator.itemgetter(*COUNT_GROUP)
_attempt: Callable[[Mapping[str, Any]], tuple[int, int]] = operator.itemgetter("try_number", "resubmit")


def plan_batch(held: Iterable[HeldAttempt], rows: Sequence[dict[str, Any]]) -> BatchPlan:
    """Set ``latest`` in each of ``rows`` and return the flips of held attempts and the count changes.

    :param held: every recorded attempt of the instances ``rows`` belong to (others are ignored).
    :param rows: the batch's rows, one per attempt key, with the columns of :class:`HeldAttempt`;
        each gets its ``latest``.
    """
    before: dict[InstanceKey, dict[tuple[int, int], Mapping[str, Any]]] = {}
    held_by_attempt: dict[tuple[InstanceKey, tuple[int, int]], HeldAttempt] = {}
    for h in held:
        key = _instance(h.columns)
        before.setdefault(key, {})[_attempt(h.columns)] = h.columns
        held_by_attempt[(key, _attempt(h.columns))] = h
    after = {key: dict(attempts) for key, attempts in before.items()}
    written: dict[tuple[InstanceKey, tuple[int, int]], dict[str, Any]] = {}
    for row in rows:
        key = _instance(row)
        after.setdefault(key, {})[_attempt(row)] = row
        written[(key, _attempt(row))] = row
    plan = BatchPlan()
    moves: dict[Group, list[int]] = {}
    for key, attempts in after.items():
        newest = max(attempts)
        for attempt in attempts:
            latest = attempt == newest
            if (key, attempt) in written:
                written[(key, attempt)]["latest"] = latest
            elif held_by_attempt[(key, attempt)].latest != latest:
                plan.flips[latest].append(held_by_attempt[(key, attempt)].id)
        old = before.get(key)
        if old:
            _move(moves, _group(old[max(old)]), -1, -len(old))
        _move(moves, _group(attempts[newest]), 1, len(attempts))
    plan.counts = {g: (n, a) for g, (n, a) in moves.items() if n or a}
    return plan


def _move(moves: dict[Group, list[int]], group: Group, instances: int, attempts: int) -> None:
    change = moves.setdefault(group, [0, 0])
    change[0] += instances
    change[1] += attempts
