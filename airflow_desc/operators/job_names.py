"""What a task instance's SLURM job is called and where its files live on the cluster (no Airflow).

The job of each try is named deterministically from (dag_id, run_id, task_id, map_index) and the
try number (:func:`job_name_for`), so that a later try finds the jobs of earlier ones by name.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["home_relative", "is_job_name", "job_name_for", "task_dir_for", "try_of_name"]

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_NAME = re.compile(r"\.[0-9a-f]{12}\.t[0-9]+$")


def _ident(dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    return hashlib.sha256(f"{dag_id}\0{run_id}\0{task_id}\0{map_index}".encode()).hexdigest()[:12]


def job_name_for(dag_id: str, run_id: str, task_id: str, map_index: int, try_number: int) -> str:
    """Name the SLURM job of one try of one task instance: readable, unique and deterministic.

    ``<task id tail>.<hash of dag, run, task, map index>.t<try>``, e.g. ``processEimage.3f9a0c1e2b4d.t2``.
    """
    tail = _SAFE.sub("_", task_id.rsplit(".", 1)[-1])[-40:]
    return f"{tail}.{_ident(dag_id, run_id, task_id, map_index)}.t{int(try_number)}"


def is_job_name(name: str) -> bool:
    """Whether ``name`` is one :func:`job_name_for` makes: a job of an airflow-desc task instance."""
    return _NAME.search(name) is not None


def try_of_name(name: str) -> int:
    """Return the try a job name says submitted it (:func:`job_name_for` ends it with ``.t<try>``)."""
    return int(name.rsplit(".t", 1)[1])


def task_dir_for(work_dir: str, dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    """Where a task instance's job scripts and logs live on the cluster.

    Each id is one plain directory name: anything but letters, digits, ``.``, ``_`` and ``-`` becomes
    ``_``, and leading dots go (an id of ``..`` must not climb out of the work directory).
    """
    parts = [_SAFE.sub("_", p).lstrip(".") or "_" for p in (dag_id, run_id, task_id)]
    if map_index >= 0:
        parts[-1] += f".{map_index}"
    return "/".join([work_dir.rstrip("/"), *parts])


def home_relative(path: str) -> str:
    """Write a ``~/`` path as SLURM reads it in an ``#SBATCH`` line: relative to the home directory."""
    if path == "~" or path.startswith("~/"):
        return path[2:] or "."
    return path
