"""Create the history schema: workflows, runs, streams, process_instances.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copies of the types of schema.py as of this revision: later changes there must not change
# what this revision creates.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
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


def upgrade() -> None:
    """Create the four tables and their indexes."""
    op.create_table(
        "workflows",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("variant", sa.Text, nullable=False, server_default=""),
        sa.Column("version", sa.Text, nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("id", name="pk_workflows"),
        sa.UniqueConstraint("name", "variant", "version", name="uq_workflows_identity"),
    )
    op.create_table(
        "runs",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("workflow_ref", ID, nullable=False),
        sa.Column("dag_id", sa.Text, nullable=False),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("conf", DB_JSON, nullable=True),
        sa.Column("survey_year", sa.Integer, nullable=True),
        sa.Column("created_at", HistoryDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        sa.ForeignKeyConstraint(["workflow_ref"], ["workflows.id"], name="fk_runs_workflow_ref_workflows"),
        sa.UniqueConstraint("dag_id", "run_id", name="uq_runs_identity"),
    )
    op.create_index("ix_runs_workflow_ref", "runs", ["workflow_ref"])
    op.create_table(
        "streams",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("run_ref", ID, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("parent_ref", ID, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_streams"),
        sa.ForeignKeyConstraint(["run_ref"], ["runs.id"], name="fk_streams_run_ref_runs"),
        sa.ForeignKeyConstraint(["parent_ref"], ["streams.id"], name="fk_streams_parent_ref_streams"),
        sa.UniqueConstraint("run_ref", "path", name="uq_streams_identity"),
    )
    op.create_index("ix_streams_parent_ref", "streams", ["parent_ref"])
    op.create_table(
        "process_instances",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("workflow_ref", ID, nullable=False),
        sa.Column("run_ref", ID, nullable=False),
        sa.Column("stream_ref", ID, nullable=False),
        sa.Column("task_id", sa.Text, nullable=False),
        sa.Column("map_index", sa.Integer, nullable=False),
        sa.Column("process", sa.Text, nullable=False),
        sa.Column("try_number", sa.Integer, nullable=False),
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
        sa.Column("latest", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.PrimaryKeyConstraint("id", name="pk_process_instances"),
        sa.ForeignKeyConstraint(
            ["workflow_ref"], ["workflows.id"], name="fk_process_instances_workflow_ref_workflows"
        ),
        sa.ForeignKeyConstraint(["run_ref"], ["runs.id"], name="fk_process_instances_run_ref_runs"),
        sa.ForeignKeyConstraint(
            ["stream_ref"], ["streams.id"], name="fk_process_instances_stream_ref_streams"
        ),
        sa.UniqueConstraint(
            "run_ref",
            "stream_ref",
            "task_id",
            "map_index",
            "process",
            "try_number",
            name="uq_process_instances_attempt",
        ),
    )
    op.create_index(
        "ix_process_instances_latest",
        "process_instances",
        ["task", "version", "process", "process_type", "state", "workflow_ref", "run_ref"],
        sqlite_where=sa.text("latest = 1"),
        postgresql_where=sa.text("latest"),
    )
    op.create_index(
        "ix_process_instances_superseded",
        "process_instances",
        ["run_ref", "stream_ref", "task_id", "map_index", "process"],
        sqlite_where=sa.text("latest = 0"),
        postgresql_where=sa.text("NOT latest"),
    )
    op.create_index("ix_process_instances_process", "process_instances", ["process", "end_time"])


def downgrade() -> None:
    """Drop the four tables."""
    op.drop_table("process_instances")
    op.drop_table("streams")
    op.drop_table("runs")
    op.drop_table("workflows")
