"""Add process_plans (what each DAG's task instances stand for) and slurm_job_states (polled states).

With them the status page reads databases only: no DAG file is parsed and no cluster is asked
where the api-server runs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Frozen copies of the types of schema.py as of this revision.
DB_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    """Create the two tables and the pruning index."""
    op.create_table(
        "process_plans",
        sa.Column("dag_id", sa.Text, nullable=False),
        sa.Column("digest", sa.Text, nullable=False),
        sa.Column("plan", DB_JSON, nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=False), nullable=False),
        sa.PrimaryKeyConstraint("dag_id", name="pk_process_plans"),
    )
    op.create_table(
        "slurm_job_states",
        sa.Column("ssh_conn_id", sa.Text, nullable=False),
        sa.Column("jump_conn_id", sa.Text, nullable=False, server_default=""),
        sa.Column("job_id", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("polled_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("poll_interval_s", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("ssh_conn_id", "jump_conn_id", "job_id", name="pk_slurm_job_states"),
    )
    op.create_index("ix_slurm_job_states_polled_at", "slurm_job_states", ["polled_at"])


def downgrade() -> None:
    """Drop the tables."""
    op.drop_table("slurm_job_states")
    op.drop_table("process_plans")
