"""Add ssh_key_checks: until when each cluster login's SSH key logs in, for the status page's warning.

The pollers, ``airflow-desc clusters check`` and tasks waiting for a renewed key write it; the
api-server, which has no keys, reads it.

Revision ID: 0009_ssh_key_checks
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the table."""
    op.create_table(
        "ssh_key_checks",
        sa.Column("ssh_conn_id", sa.Text, nullable=False),
        sa.Column("jump_conn_id", sa.Text, nullable=False, server_default=""),
        sa.Column("cluster", sa.Text, nullable=False, server_default=""),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("cert_path", sa.Text, nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=False), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("checked_by", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("ssh_conn_id", "jump_conn_id", name="pk_ssh_key_checks"),
    )


def downgrade() -> None:
    """Drop the table."""
    op.drop_table("ssh_key_checks")
