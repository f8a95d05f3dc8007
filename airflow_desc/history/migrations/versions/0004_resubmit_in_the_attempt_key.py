"""Add process_instances.resubmit: each SLURM job of one Airflow try is an attempt of its own.

A try that resubmits its job after a node failure (``NODE_FAIL``) runs several SLURM jobs under
one try number; with ``resubmit`` (0 for the try's first job, 1, 2 for its resubmissions) in the
attempt's key, the node-failed job keeps its own row instead of being overwritten by the next.
Existing rows get 0.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_INSTANCE = ["run_ref", "stream_ref", "task_id", "map_index", "process"]
# Frozen copies of the partial indexes of 0001: SQLite's batch mode rebuilds the table, and they
# are made again as they were rather than trusting the reflection of their WHERE.
_PARTIAL = {
    "ix_process_instances_latest": (
        ["task", "version", "process", "process_type", "state", "workflow_ref", "run_ref"],
        "latest = 1",
        "latest",
    ),
    "ix_process_instances_superseded": (_INSTANCE, "latest = 0", "NOT latest"),
}


def _swap_key(new: list[str]) -> None:
    for name in _PARTIAL:
        op.drop_index(name, table_name="process_instances")
    with op.batch_alter_table("process_instances") as batch:
        if "resubmit" in new:
            batch.add_column(sa.Column("resubmit", sa.Integer, nullable=False, server_default="0"))
        batch.drop_constraint("uq_process_instances_attempt", type_="unique")
        batch.create_unique_constraint("uq_process_instances_attempt", new)
        if "resubmit" not in new:
            batch.drop_column("resubmit")
    for name, (columns, sqlite_where, postgresql_where) in _PARTIAL.items():
        op.create_index(
            name, "process_instances", columns,
            sqlite_where=sa.text(sqlite_where), postgresql_where=sa.text(postgresql_where),
        )  # fmt: skip


def upgrade() -> None:
    """Add the column (0 for every row) and make it part of the attempt's unique key."""
    _swap_key([*_INSTANCE, "try_number", "resubmit"])


def downgrade() -> None:
    """Drop it (a try's node-failed jobs then collide: keep only the last of each try first)."""
    op.execute(
        "DELETE FROM process_instances WHERE resubmit < "
        "(SELECT max(o.resubmit) FROM process_instances o WHERE "
        + " AND ".join(f"o.{c} = process_instances.{c}" for c in [*_INSTANCE, "try_number"])
        + ")"
    )
    _swap_key([*_INSTANCE, "try_number"])
