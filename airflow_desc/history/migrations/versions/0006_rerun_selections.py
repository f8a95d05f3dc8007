"""Add rerun_selections: which process instances of a task instance a rerun selected.

``airflow-desc rerun`` and the status page's Rerun select process instances; a bundle task
instance holds many, and its next try reruns exactly the selected ones (and what depends on them
inside the bundle), even those that succeeded. One row per task instance cleared, its instance ids
as a JSON list.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Frozen copies of the types of schema.py as of this revision.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
DB_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    """Create the table and its index."""
    op.create_table(
        "rerun_selections",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("dag_id", sa.Text, nullable=False),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("task_id", sa.Text, nullable=False),
        sa.Column("map_index", sa.Integer, nullable=False),
        sa.Column("after_try", sa.Integer, nullable=False),
        sa.Column("instances", DB_JSON, nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=False), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rerun_selections"),
    )
    op.create_index(
        "ix_rerun_selections_task_instance",
        "rerun_selections",
        ["dag_id", "run_id", "task_id", "map_index"],
    )


def downgrade() -> None:
    """Drop the table."""
    op.drop_table("rerun_selections")
