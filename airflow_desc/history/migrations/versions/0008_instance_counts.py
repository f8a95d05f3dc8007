"""Add instance_counts: the status table's counts, kept by the writer, and fill it from the attempts.

The status table counted the latest attempt of every process instance and joined the superseded
attempts to theirs: 1.6 s at a million attempts with one instance in seven retried, more with more
retries. The writer now keeps one row per (run, workflow, task, version, process, process_type,
state) up to date in the transaction that records an attempt, so that the table sums a few
thousand rows. The upgrade counts the attempts already recorded.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Frozen copy of schema.py's ID as of this revision.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_GROUP = "run_ref, workflow_ref, task, version, process, process_type, state"
_INSTANCE = ("run_ref", "stream_ref", "task_id", "map_index", "process")


def upgrade() -> None:
    """Create the table and count every recorded instance into it."""
    op.create_table(
        "instance_counts",
        sa.Column("run_ref", ID, sa.ForeignKey("runs.id", name="fk_instance_counts_run_ref_runs"),
                  nullable=False),
        sa.Column("workflow_ref", ID,
                  sa.ForeignKey("workflows.id", name="fk_instance_counts_workflow_ref_workflows"),
                  nullable=False),
        sa.Column("task", sa.Text, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("process", sa.Text, nullable=False),
        sa.Column("process_type", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("instances", sa.BigInteger, nullable=False),
        sa.Column("attempts", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint(*_GROUP.split(", "), name="pk_instance_counts"),
    )  # fmt: skip
    same = " AND ".join(f"n.{c} = l.{c}" for c in _INSTANCE)
    op.execute(
        f"INSERT INTO instance_counts ({_GROUP}, instances, attempts) "
        f"SELECT {', '.join('l.' + c for c in _GROUP.split(', '))}, count(*), sum(n.attempts) "
        "FROM process_instances l JOIN ("
        f"SELECT {', '.join(_INSTANCE)}, count(*) AS attempts FROM process_instances "
        f"GROUP BY {', '.join(_INSTANCE)}) n ON {same} "
        f"WHERE l.latest GROUP BY {', '.join('l.' + c for c in _GROUP.split(', '))}"
    )


def downgrade() -> None:
    """Drop the table (the attempts it counted stay)."""
    op.drop_table("instance_counts")
