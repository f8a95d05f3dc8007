"""The tables of the history store (SQLAlchemy Core), the same on PostgreSQL and SQLite.

::

    workflows          one row per (name, variant, version) of a top-level workflow
    runs               one row per DAG run (a top-level stream): its conf, survey year and the
                       digest of the spec that rendered its DAG
    streams            one row per stream path of a run; ``parent_ref`` is the enclosing stream
                       (each run has a root stream with path ``""``, the top level)
    process_instances  one row per attempt of a process instance (a :class:`ProcessRecord`)
    rerun_requests     one row per task instance cleared by ``airflow-desc rerun``: who and why;
                       the writer copies them into the attempts that follow (``triggered_by``,
                       ``rerun_reason``)
    rerun_selections   one row per task instance a rerun cleared: the process instances it selected
                       there, which a bundle's next try reruns even if they succeeded
    process_plans      one row per DAG: which process instances its task instances stand for and
                       its workflow's order, as JSON (written by the plugin's listener when a task
                       of the DAG starts, read by the status page instead of the DAG file)
    slurm_job_states   one row per SLURM job a triggerer watches: its state as sacct last said, and
                       when (written by the triggers' per-cluster pollers, one write per poll)
    log_tails          one row per attempt whose log the worker read when it ended: the log's last
                       lines (bounded, secrets redacted), so that the status page and
                       ``airflow-desc logs`` never reach a cluster; keyed by the attempt's row
    instance_counts    one row per (run, workflow, task, version, process, process_type, state): how
                       many process instances of the run have their latest attempt there
                       (``instances``), and how many attempts those instances have (``attempts``)
    ssh_key_checks     one row per cluster login: until when its SSH key logs in and who says so
                       (written by the pollers, ``airflow-desc clusters check`` and tasks waiting
                       for a renewed key; the status page warns from it)

The attempt identity, :meth:`ProcessRecord.key`, is ``(dag_id, run_id, task_id, map_index,
stream, process, try_number, resubmit)``: ``resubmit`` tells apart the SLURM jobs of one try (0,
then 1, 2 for those resubmitted after node failures). ``(dag_id, run_id)`` is unique in ``runs`` and
``(run, path)`` in ``streams``, so the unique constraint ``uq_process_instances_attempt`` on
``(run_ref, stream_ref, task_id, map_index, process, try_number, resubmit)`` is that identity:
writing the same record twice updates the row instead of adding one. ``latest`` marks the latest
attempt of each instance (the highest ``(try_number, resubmit)``); the writer keeps it right in the
same transaction, so that the per-process queries read one small index instead of ranking a
million attempts. In that transaction it also moves each instance it touches in
``instance_counts`` (out of its old latest attempt's row, into its new one's), so that the status
table sums a few thousand rows, whatever the number of attempts and retries.

Times are stored without a time zone, as SLURM prints them (the cluster's local time); aware
datetimes are converted to UTC first. This module is the model the migrations in
``history/migrations`` must produce (a test compares them); change both together.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

from airflow_desc.history.latest import COUNT_GROUP

__all__ = [
    "DB_JSON",
    "ID",
    "HistoryDateTime",
    "instance_counts",
    "log_tails",
    "metadata",
    "process_instances",
    "process_plans",
    "rerun_requests",
    "rerun_selections",
    "runs",
    "slurm_job_states",
    "ssh_key_checks",
    "streams",
    "workflows",
]

#: Autoincrementing primary keys: BIGINT on PostgreSQL, INTEGER (the rowid) on SQLite.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
#: JSON documents: JSONB on PostgreSQL, JSON text on SQLite.
DB_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


class HistoryDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp without time zone; aware values are stored in UTC."""

    impl = sa.DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Store naive values as they are, aware ones in UTC."""
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Return a naive datetime."""
        return value if value is None or isinstance(value, datetime) else datetime.fromisoformat(str(value))


metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

workflows = sa.Table(
    "workflows",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("variant", sa.Text, nullable=False, server_default=""),
    sa.Column("version", sa.Text, nullable=False, server_default=""),
    sa.UniqueConstraint("name", "variant", "version", name="uq_workflows_identity"),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("workflow_ref", ID, sa.ForeignKey("workflows.id"), nullable=False, index=True),
    sa.Column("dag_id", sa.Text, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("conf", DB_JSON, nullable=True),
    sa.Column("survey_year", sa.Integer, nullable=True),
    sa.Column("created_at", HistoryDateTime, nullable=False),
    # What rendered the run's DAG: the spec file's SHA-256 (+ the render overlay's); the latest written.
    sa.Column("spec_digest", sa.Text, nullable=True),
    sa.UniqueConstraint("dag_id", "run_id", name="uq_runs_identity"),
)

streams = sa.Table(
    "streams",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("run_ref", ID, sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("parent_ref", ID, sa.ForeignKey("streams.id"), nullable=True, index=True),
    sa.UniqueConstraint("run_ref", "path", name="uq_streams_identity"),
)

process_instances = sa.Table(
    "process_instances",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("workflow_ref", ID, sa.ForeignKey("workflows.id"), nullable=False),
    sa.Column("run_ref", ID, sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("stream_ref", ID, sa.ForeignKey("streams.id"), nullable=False),
    sa.Column("task_id", sa.Text, nullable=False),
    sa.Column("map_index", sa.Integer, nullable=False),
    sa.Column("process", sa.Text, nullable=False),
    sa.Column("try_number", sa.Integer, nullable=False),
    # The SLURM job of the try: 0, then 1, 2 for its resubmissions after node failures.
    sa.Column("resubmit", sa.Integer, nullable=False, server_default="0"),
    sa.Column("task", sa.Text, nullable=False),
    sa.Column("version", sa.Text, nullable=False),
    sa.Column("process_type", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("cluster", sa.Text, nullable=True),
    sa.Column("job_id", sa.Text, nullable=True),
    sa.Column("step", sa.Text, nullable=True),
    sa.Column("slurm_state", sa.Text, nullable=True),
    sa.Column("exit_code", sa.Integer, nullable=True),
    sa.Column("signal", sa.Integer, nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("message", sa.Text, nullable=True),
    sa.Column("submit_time", HistoryDateTime, nullable=True),
    sa.Column("start_time", HistoryDateTime, nullable=True),
    sa.Column("end_time", HistoryDateTime, nullable=True),
    sa.Column("elapsed_s", sa.Float, nullable=True),
    sa.Column("total_cpu_s", sa.Float, nullable=True),
    sa.Column("max_rss_bytes", sa.BigInteger, nullable=True),
    sa.Column("req_cpus", sa.Integer, nullable=True),
    sa.Column("req_mem_bytes", sa.BigInteger, nullable=True),
    sa.Column("req_walltime_s", sa.Float, nullable=True),
    sa.Column("node", sa.Text, nullable=True),
    sa.Column("log_path", sa.Text, nullable=True),
    sa.Column("triggered_by", sa.Text, nullable=True),
    sa.Column("rerun_reason", sa.Text, nullable=True),
    sa.Column("extra", DB_JSON, nullable=True),
    sa.Column("recorded_at", HistoryDateTime, nullable=False),
    # True when no later attempt (higher (try_number, resubmit)) of the same process instance is recorded.
    sa.Column("latest", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.UniqueConstraint(
        "run_ref",
        "stream_ref",
        "task_id",
        "map_index",
        "process",
        "try_number",
        "resubmit",
        name="uq_process_instances_attempt",
    ),
)

# The live merge of ``airflow-desc status`` asks which live process instances have a recorded
# (latest) attempt, by run and task instance: this partial index answers from itself, and finds the
# attempts of the task instances it reads whole. The next one finds the superseded attempts (a few
# percent), which the windowed status table joins to their instance's latest one.
sa.Index(
    "ix_process_instances_live",
    process_instances.c.run_ref,
    process_instances.c.task_id,
    process_instances.c.map_index,
    process_instances.c.process,
    process_instances.c.stream_ref,
    # Spelled as the queries' WHERE renders on each dialect: SQLite uses a partial index only then.
    sqlite_where=sa.text("latest = 1"),
    postgresql_where=sa.text("latest"),
)
sa.Index(
    "ix_process_instances_superseded",
    process_instances.c.run_ref,
    process_instances.c.stream_ref,
    process_instances.c.task_id,
    process_instances.c.map_index,
    process_instances.c.process,
    sqlite_where=sa.text("latest = 0"),
    postgresql_where=sa.text("NOT latest"),
)
# Per-process figures, and checking a process name.
sa.Index("ix_process_instances_process", process_instances.c.process, process_instances.c.end_time)

rerun_requests = sa.Table(
    "rerun_requests",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("dag_id", sa.Text, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("task_id", sa.Text, nullable=False),
    sa.Column("map_index", sa.Integer, nullable=False),
    # The try the task instance had when it was cleared: later tries are the rerun.
    sa.Column("after_try", sa.Integer, nullable=False),
    sa.Column("requested_by", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("requested_at", HistoryDateTime, nullable=False),
)
sa.Index(
    "ix_rerun_requests_task_instance",
    rerun_requests.c.dag_id,
    rerun_requests.c.run_id,
    rerun_requests.c.task_id,
    rerun_requests.c.map_index,
)

rerun_selections = sa.Table(
    "rerun_selections",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("dag_id", sa.Text, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("task_id", sa.Text, nullable=False),
    sa.Column("map_index", sa.Integer, nullable=False),
    # The try the task instance had when it was cleared: the selection is for the next one.
    sa.Column("after_try", sa.Integer, nullable=False),
    # The selected process instances' ids (``<stream path>:<process>``), a JSON list.
    sa.Column("instances", DB_JSON, nullable=False),
    sa.Column("requested_at", HistoryDateTime, nullable=False),
)
sa.Index(
    "ix_rerun_selections_task_instance",
    rerun_selections.c.dag_id,
    rerun_selections.c.run_id,
    rerun_selections.c.task_id,
    rerun_selections.c.map_index,
)

process_plans = sa.Table(
    "process_plans",
    metadata,
    sa.Column("dag_id", sa.Text, primary_key=True),
    # The plan's digest: a writer compares it before writing, so that a DAG's plan is written once.
    sa.Column("digest", sa.Text, nullable=False),
    sa.Column("plan", DB_JSON, nullable=False),
    sa.Column("written_at", HistoryDateTime, nullable=False),
)

slurm_job_states = sa.Table(
    "slurm_job_states",
    metadata,
    # The cluster login: the SSH connection and its bastion ("" for none), as the trigger names them.
    sa.Column("ssh_conn_id", sa.Text, primary_key=True),
    sa.Column("jump_conn_id", sa.Text, primary_key=True, server_default=""),
    sa.Column("job_id", sa.Text, primary_key=True),
    # As sacct prints it (``RUNNING``, ``PENDING``, ``CANCELLED by 0`` ...).
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("polled_at", HistoryDateTime, nullable=False),
    # The poller's interval then: a reader calls a state stale after a few of them.
    sa.Column("poll_interval_s", sa.Float, nullable=False),
)
# Pruning deletes the rows not polled for a while.
sa.Index("ix_slurm_job_states_polled_at", slurm_job_states.c.polled_at)

log_tails = sa.Table(
    "log_tails",
    metadata,
    # The attempt (its process_instances row, whose id an upsert of the same attempt keeps).
    sa.Column("attempt_ref", ID, sa.ForeignKey("process_instances.id"), primary_key=True),
    sa.Column("tail", sa.Text, nullable=False),
    sa.Column("recorded_at", HistoryDateTime, nullable=False),
)

instance_counts = sa.Table(
    "instance_counts",
    metadata,
    sa.Column("run_ref", ID, sa.ForeignKey("runs.id"), nullable=False),
    # The latest attempt's: an instance's attempts may name different workflow versions.
    sa.Column("workflow_ref", ID, sa.ForeignKey("workflows.id"), nullable=False),
    sa.Column("task", sa.Text, nullable=False),
    sa.Column("version", sa.Text, nullable=False),
    sa.Column("process", sa.Text, nullable=False),
    sa.Column("process_type", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    # Process instances whose latest attempt is this row's; a row that falls to 0 is deleted.
    sa.Column("instances", sa.BigInteger, nullable=False),
    # All the attempts of those instances (superseded ones included).
    sa.Column("attempts", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint(*COUNT_GROUP, name="pk_instance_counts"),
)

ssh_key_checks = sa.Table(
    "ssh_key_checks",
    metadata,
    # The cluster login: the SSH connection and its bastion ("" for none), as the hook names them.
    sa.Column("ssh_conn_id", sa.Text, primary_key=True),
    sa.Column("jump_conn_id", sa.Text, primary_key=True, server_default=""),
    # The cluster profile's name, for the page ("" when not known).
    sa.Column("cluster", sa.Text, nullable=False, server_default=""),
    # What says when the key expires: a certificate file, or a profile's key_expires.
    sa.Column("source", sa.Text, nullable=False),
    # The certificate file, when a certificate says so.
    sa.Column("cert_path", sa.Text, nullable=True),
    # When the key stops logging in (NULL: never).
    sa.Column("expires_at", HistoryDateTime, nullable=True),
    sa.Column("checked_at", HistoryDateTime, nullable=False),
    # Who checked: "poll", "clusters check", "task".
    sa.Column("checked_by", sa.Text, nullable=False),
)
