"""Exclusive lock files shared across processes and threads (``flock``).

The spool (:mod:`airflow_desc.history.spool`) guards its files with one and lets one flusher at a
time write it out with another (:func:`try_file_lock`: nobody waits for it); the migrations of an
SQLite history (:mod:`airflow_desc.history.engine`) are serialised with a third.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

__all__ = ["file_lock", "try_file_lock"]


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


@contextlib.contextmanager
def try_file_lock(path: Path) -> Iterator[bool]:
    """Take the exclusive ``flock`` on ``path`` if it is free; yield whether it was taken (never wait).

    :param path: the lock file; its directory is created.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
