"""An exclusive lock file shared across processes and threads (``flock``).

The spool (:mod:`airflow_desc.history.spool`) serialises its writers and flushers with one, and
the migrations of an SQLite history (:mod:`airflow_desc.history.engine`) with another.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

__all__ = ["file_lock"]


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) across processes and threads.

    :param path: the lock file; its directory is created.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
