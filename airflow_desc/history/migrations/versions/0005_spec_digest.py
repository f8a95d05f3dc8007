"""Add runs.spec_digest: which spec rendered each run's DAG, so that a report names it exactly.

The digest is the spec file's SHA-256 (hex, as ``sha256sum`` prints it), followed by ``+`` and the
render overlay's when the DAG was rendered through one (``LoadedWorkflow.spec_digest``). Runs
recorded before this revision have none (NULL).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the nullable column (a plain ADD COLUMN on both databases: no table rebuild)."""
    op.add_column("runs", sa.Column("spec_digest", sa.Text, nullable=True))


def downgrade() -> None:
    """Drop it with ALTER TABLE ... DROP COLUMN on both databases (SQLite 3.35+).

    Not SQLite's batch mode: rebuilding ``runs``, which other tables reference, breaks their foreign keys.
    """
    op.drop_column("runs", "spec_digest")
