"""Replace ix_process_instances_latest by ix_process_instances_live: the live merge's index, narrower.

The status table sums ``instance_counts`` since 0008: the grouped index of the latest attempts
(five texts a row) served only the windowed table (``--since`` / ``--until``), which reads every
latest attempt's times anyway. What the live merge of ``airflow-desc status`` asks instead is
which live process instances have a recorded attempt, by run and task instance: the new partial
index answers it from the index alone (two texts a row), and finds the attempts of the task
instances that can supersede theirs. One index less to keep for the writer's every attempt.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# Frozen copies: (columns, SQLite's WHERE, PostgreSQL's WHERE).
_OLD = (
    "ix_process_instances_latest",
    ["task", "version", "process", "process_type", "state", "workflow_ref", "run_ref"],
)
_NEW = ("ix_process_instances_live", ["run_ref", "task_id", "map_index", "process", "stream_ref"])


def _create(name: str, columns: list[str]) -> None:
    op.create_index(
        name,
        "process_instances",
        columns,
        sqlite_where=sa.text("latest = 1"),
        postgresql_where=sa.text("latest"),
    )


def upgrade() -> None:
    """Make the live merge's index, then drop the grouped one."""
    _create(*_NEW)
    op.drop_index(_OLD[0], table_name="process_instances")


def downgrade() -> None:
    """Make the grouped index again, then drop the live merge's."""
    _create(*_OLD)
    op.drop_index(_NEW[0], table_name="process_instances")
