"""Add rerun_requests: who cleared which task instances with ``airflow-desc rerun``, and why.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Frozen copies of the types of schema.py as of this revision.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the table and its index."""
    op.create_table(
        "rerun_requests",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("dag_id", sa.Text, nullable=False),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("task_id", sa.Text, nullable=False),
        sa.Column("map_index", sa.Integer, nullable=False),
        sa.Column("after_try", sa.Integer, nullable=False),
        sa.Column("requested_by", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=False), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rerun_requests"),
    )
    op.create_index(
        "ix_rerun_requests_task_instance", "rerun_requests", ["dag_id", "run_id", "task_id", "map_index"]
    )


def downgrade() -> None:
    """Drop the table."""
    op.drop_table("rerun_requests")
