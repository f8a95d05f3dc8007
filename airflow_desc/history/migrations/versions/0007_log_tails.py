"""Add log_tails: the end of each attempt's log, read by the worker when it ended.

One row per attempt (``attempt_ref``: its ``process_instances`` row) holding the last lines of its
log, bounded and with secrets redacted, so that the status page and ``airflow-desc logs`` show a
log without reaching the cluster. Existing attempts have none.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Frozen copy of schema.ID as of this revision.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the table."""
    op.create_table(
        "log_tails",
        sa.Column("attempt_ref", ID, nullable=False),
        sa.Column("tail", sa.Text, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=False), nullable=False),
        sa.ForeignKeyConstraint(
            ["attempt_ref"], ["process_instances.id"], name="fk_log_tails_attempt_ref_process_instances"
        ),
        sa.PrimaryKeyConstraint("attempt_ref", name="pk_log_tails"),
    )


def downgrade() -> None:
    """Drop the table (the tails are lost; the attempts keep their ``log_path``)."""
    op.drop_table("log_tails")
