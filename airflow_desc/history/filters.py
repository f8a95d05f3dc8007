"""Which part of the history a query reads: one :class:`HistoryFilter`, built once per request.

The CLI builds it from its arguments, the UI page from its form, and every query of
:mod:`airflow_desc.history.queries` (and :func:`airflow_desc.status.current.current_counts`)
takes it, so that a selection means the same thing everywhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

__all__ = ["INSTANCE_FIELDS", "HistoryFilter"]

#: The fields that select whole process instances (by their workflow, run and when their latest
#: attempt began): all that the status table's queries take.
INSTANCE_FIELDS: tuple[str, ...] = ("workflow", "variant", "version", "run_id", "dag_ids", "since", "until")


@dataclass(frozen=True)
class HistoryFilter:
    """A selection of process instances and attempts; a field left ``None`` does not narrow it.

    Unknown workflow, variant, version, run, process or state names make the queries raise
    :class:`ValueError` listing the names the history holds. Time windows select attempts by when
    they began (start time, else submit time, else end time); ``since`` is inclusive, ``until``
    exclusive; aware bounds are compared in UTC.

    :param workflow: only this workflow (the history's workflow name, e.g. ``DC1-DM12``).
    :param variant: only this workflow variant (``""``: the workflow without one).
    :param version: only this version of the workflow (its spec's top-level ``version``, not a
        sub-task's own).
    :param run_id: only this DAG run.
    :param dag_ids: only runs of these DAGs (e.g. those a UI user may read); none of them selects
        nothing, without an error. Kept as a frozenset.
    :param process: only this process (e.g. ``processEimage``).
    :param stream_glob: only streams whose path matches: ``*`` any text (``/`` included), ``?``
        one character, case-sensitive; e.g. ``visit=2201/*``.
    :param state: only attempts in this state (one of
        :data:`~airflow_desc.history.records.PROCESS_STATES`).
    :param reason: only this reason class (e.g. ``out-of-memory``).
    :param cluster: only attempts run on this cluster.
    :param node: only attempts run on this node (list).
    :param since: only attempts that began at or after this time.
    :param until: only attempts that began before this time.
    """

    workflow: str | None = None
    variant: str | None = None
    version: str | None = None
    run_id: str | None = None
    dag_ids: Collection[str] | None = None
    process: str | None = None
    stream_glob: str | None = None
    state: str | None = None
    reason: str | None = None
    cluster: str | None = None
    node: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        # A frozenset keeps the filter immutable and hashable whatever collection it was given.
        if self.dag_ids is not None and not isinstance(self.dag_ids, frozenset):
            object.__setattr__(self, "dag_ids", frozenset(self.dag_ids))

    def narrowed_by(self) -> tuple[str, ...]:
        """Return the names of the fields that narrow the selection (those not ``None``)."""
        return tuple(f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None)

    def require_only(self, fields: Collection[str], query: str) -> None:
        """Raise :class:`TypeError` when a field outside ``fields`` narrows the selection.

        A query that cannot filter by a field says so rather than return more than was asked.

        :param fields: the fields ``query`` filters by.
        :param query: its name, for the message.
        """
        extra = [name for name in self.narrowed_by() if name not in fields]
        if extra:
            raise TypeError(
                f"{query} selects by {', '.join(fields)}, not by {', '.join(extra)}: leave those None"
            )
