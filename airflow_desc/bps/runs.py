"""A BPS submission as one Airflow DAG run, through the REST API: submit, read, cancel, restart.

No LSST and no Airflow import: :mod:`airflow_desc.bps.service` turns what this returns into
ctrl_bps objects. The DAG id is the submission's workflow name, and its one run's id, the wms id
``bps submit`` prints, is ``bps__<dag id>`` (:func:`run_id_for`; :func:`dag_id_of` reads it back, and
takes a bare DAG id too). The run's conf carries what ``bps report`` shows besides the states
(:class:`Submission`: run name, operator, project, campaign, payload, submit directory, and the
jobs of each label), so that nothing but Airflow is asked.

- **submit** (:meth:`AirflowRuns.submit`): the spec and the DAG file go into the DAG folder (spec
  first, each written beside and renamed, so that the dag-processor never reads half a file); then
  ``GET /api/v2/dags/{dag_id}`` until the DAG is parsed (an import error of the DAG file is
  reported at once, with Airflow's traceback), ``PATCH`` it unpaused, ``POST`` its run.
- **report**: the run (``GET .../dagRuns/{run}``) and the status page's
  ``/desc/status.json?workflow=<dag id>&run=<run>`` (the history merged with live task-instance
  states), per label by :func:`~airflow_desc.bps.states.label_states` (:func:`summarize`).
- **cancel**: ``PATCH .../dagRuns/{run}`` to ``failed`` with the note ``bps cancel``. Airflow marks
  the running and deferred task instances failed and the rest skipped; a running task's
  ``on_kill`` and a deferred one's trigger ``scancel`` their SLURM jobs. The report then says
  ``DELETED``.
- **restart** (:func:`restart_targets`): ``clearTaskInstances`` of the task instances that failed
  and of every one downstream of them (the labels below, whose streams tasks made no streams, and
  the final job, which registers the rerun's outputs; a cleared bundle reruns only its quanta that
  did not succeed), but not a quantum that succeeded alone in its task instance, nor a bundle of
  the failed task whose quanta all succeeded. The run id stays.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import tempfile
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow_desc.bps.api import AirflowRestApi
from airflow_desc.bps.states import label_states, run_state
from airflow_desc.exceptions import BpsApiError

__all__ = [
    "CANCEL_NOTE",
    "CONF_KEY",
    "RUN_ID_PREFIX",
    "AirflowRuns",
    "RunSummary",
    "Submission",
    "dag_id_of",
    "install_dag_files",
    "restart_targets",
    "run_id_for",
    "summarize",
    "wms_state",
]

RUN_ID_PREFIX = "bps__"
#: The run conf key holding the :class:`Submission`.
CONF_KEY = "bps_submission"
#: The note ``bps cancel`` leaves on the run it fails, and ``bps restart`` on the run it clears.
CANCEL_NOTE = "bps cancel"
RESTART_NOTE = "bps restart"
#: The task id suffix of a sub-task's bundles (airflow_desc.workflow.naming's BUNDLE_TASK, which the
#: LSST environment does not have: a unit test compares them).
BUNDLE_SUFFIX = ".bundle"
#: Task-instance states that make a restart: the task failed, or Airflow found its upstream failed.
FAILED_STATES = frozenset({"failed", "upstream_failed"})
#: Run states of a run still going: it is not restarted, cancel it first or wait.
ACTIVE_RUN_STATES = frozenset({"queued", "running"})


def run_id_for(dag_id: str) -> str:
    """Return the run id (the wms id) of the submission whose DAG is ``dag_id``."""
    return f"{RUN_ID_PREFIX}{dag_id}"


def dag_id_of(wms_id: str) -> str:
    """Return the DAG id of a wms id (``bps__<dag id>``), or the wms id itself if it is a bare DAG id."""
    wms_id = str(wms_id).strip()
    if not wms_id:
        raise BpsApiError("no run id given: pass the id `bps submit` printed (bps__<DAG id>)")
    return wms_id.removeprefix(RUN_ID_PREFIX)


def _q(text: str) -> str:
    return urllib.parse.quote(text, safe="")


@dataclasses.dataclass(frozen=True)
class Submission:
    """What the run's conf carries for ``bps report``.

    :param run: the BPS run name.
    :param jobs: each label's number of jobs (init and final jobs too), in the workflow's order.
    :param path: the submit directory.
    """

    run: str
    jobs: Mapping[str, int]
    path: str = ""
    operator: str = ""
    project: str = ""
    campaign: str = ""
    payload: str = ""

    def to_conf(self) -> dict[str, Any]:
        """Return the run conf holding it."""
        return {CONF_KEY: {**dataclasses.asdict(self), "jobs": dict(self.jobs)}}

    @classmethod
    def from_conf(cls, conf: Mapping[str, Any] | None, dag_id: str) -> Submission:
        """Read it from a run's conf (a run triggered otherwise: the DAG id, no jobs)."""
        found = dict((conf or {}).get(CONF_KEY) or {})
        text = {k: str(found.get(k) or "") for k in ("path", "operator", "project", "campaign", "payload")}
        jobs = {str(k): int(v) for k, v in dict(found.get("jobs") or {}).items()}
        return cls(run=str(found.get("run") or dag_id), jobs=jobs, **text)


def install_dag_files(files: Sequence[Path], folder: Path) -> Path:
    """Copy ``files`` (the spec, its overlay if any, then the DAG file) into the DAG folder, in order.

    Returns the last one's new path (the DAG file's).

    Each is written beside its target and renamed onto it: the dag-processor reads whole files.
    A file of the same name but other content is a different submission's and is not overwritten.

    :raises BpsApiError: the folder is missing, or holds another submission of that name.
    """
    if not folder.is_dir():
        raise BpsApiError(
            f"the DAG folder {folder} (airflowDagFolder) is not a directory: set airflowDagFolder in the "
            "BPS config (or AIRFLOW_DESC_DAG_FOLDER) to the DAGs folder Airflow's dag-processor reads"
        )
    for source in files:
        target = folder / source.name
        text = source.read_bytes()
        if target.exists():
            if target.read_bytes() == text:
                continue
            raise BpsApiError(
                f"{target} exists and is another submission's: a DAG of this name was submitted before; "
                "give this submission another name (airflowWorkflowName, or a new outputRun), or remove "
                "that DAG's files"
            )
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{source.name}.", suffix=".part")
        with os.fdopen(fd, "wb") as out:
            out.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    return folder / files[-1].name


def restart_targets(
    task_instances: Iterable[Mapping[str, Any]], downstream: Mapping[str, Sequence[str]]
) -> list[str | list[str | int]]:
    """Return the ``task_ids`` of ``clearTaskInstances`` that restart a run (see the module docs).

    :param task_instances: the run's task instances (``task_id``, ``map_index``, ``state``).
    :param downstream: each task's direct downstream task ids (``GET /dags/{dag_id}/tasks``).
    :return: ``task_id`` (unmapped) or ``[task_id, map_index]`` (mapped) each; none: nothing failed.
    """
    instances = list(task_instances)
    failed = {str(ti["task_id"]) for ti in instances if ti.get("state") in FAILED_STATES}
    below, todo = set(failed), list(failed)
    while todo:
        for child in downstream.get(todo.pop(), ()):
            if child not in below:
                below.add(child)
                todo.append(child)
    targets: list[str | list[str | int]] = []
    for ti in sorted(instances, key=lambda t: (str(t["task_id"]), int(t.get("map_index", -1)))):
        task_id, index = str(ti["task_id"]), int(ti.get("map_index", -1))
        if task_id not in below:
            continue
        # Kept when it succeeded: a quantum alone in its task instance, and a bundle of the failed
        # task itself (its quanta all succeeded). Below it a bundle that succeeded holds quanta it
        # skipped, and a sub-task's streams task made none (its upstream had failed): both go again.
        if (
            ti.get("state") == "success"
            and index >= 0
            and (task_id in failed or not task_id.endswith(BUNDLE_SUFFIX))
        ):
            continue
        targets.append(task_id if index < 0 else [task_id, index])
    return targets


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """One submission's run as ``bps report`` shows it.

    :param run_id: the wms id.
    :param dag_id: its DAG.
    :param state: the run's ``WmsStates`` name.
    :param submission: what its conf carries.
    :param labels: each label's job count per ``WmsStates`` name.
    """

    run_id: str
    dag_id: str
    state: str
    submission: Submission
    labels: Mapping[str, Mapping[str, int]]

    def totals(self) -> dict[str, int]:
        """Return the jobs of every label per state name."""
        out: dict[str, int] = {}
        for counts in self.labels.values():
            for state, n in counts.items():
                out[state] = out.get(state, 0) + n
        return out

    @property
    def run_summary(self) -> str:
        """ctrl_bps's ``label:jobs;label:jobs`` (the report's EXPECTED column and its label order)."""
        return ";".join(f"{label}:{n}" for label, n in self.submission.jobs.items())


def wms_state(dag_run: Mapping[str, Any]) -> str:
    """Return the ``WmsStates`` name of a submission's run: ``DELETED`` once ``bps cancel`` failed it."""
    state = run_state(dag_run.get("state"))
    if state == "FAILED" and str(dag_run.get("note") or "").startswith(CANCEL_NOTE):
        return "DELETED"
    return state


def summarize(dag_run: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> RunSummary:
    """Return a run's :class:`RunSummary` from the REST API's DAG run and ``status.json``'s rows."""
    dag_id = str(dag_run["dag_id"])
    submission = Submission.from_conf(dag_run.get("conf"), dag_id)
    return RunSummary(
        run_id=str(dag_run["dag_run_id"]),
        dag_id=dag_id,
        state=wms_state(dag_run),
        submission=submission,
        labels=label_states(
            rows, submission.jobs, "UNREADY" if dag_run.get("state") in ACTIVE_RUN_STATES else "PRUNED"
        ),
    )


class AirflowRuns:
    """The REST calls behind ``bps submit``, ``report``, ``cancel`` and ``restart``.

    :param api: the REST API, as the submitting user.
    """

    def __init__(self, api: AirflowRestApi) -> None:
        self.api = api

    # --- submit ---------------------------------------------------------------------------------------

    def submit(
        self, dag_id: str, dag_file: Path, submission: Submission, *, timeout: float, interval: float = 0.5
    ) -> str:
        """Wait for ``dag_id`` (``dag_file``, in the DAG folder) to be parsed, unpause it, trigger its run.

        :return: the run id.
        :raises BpsApiError: the DAG file failed to import, the DAG was not parsed within ``timeout``
            seconds, or Airflow refused the trigger (a run of that id exists: a submission of this name).
        """
        self.wait_parsed(dag_id, dag_file, timeout=timeout, interval=interval)
        path = f"/api/v2/dags/{_q(dag_id)}"
        self.api.call("PATCH", path, {"is_paused": False}, what=f"unpause DAG {dag_id!r}")
        run_id = run_id_for(dag_id)
        body = {"dag_run_id": run_id, "logical_date": None, "conf": submission.to_conf(),
                "note": f"bps submit {submission.run}"}  # fmt: skip
        try:
            self.api.call("POST", f"{path}/dagRuns", body, what=f"trigger DAG {dag_id!r}")
        except BpsApiError as exc:
            if exc.status == 409:
                raise BpsApiError(
                    f"DAG {dag_id!r} has a run {run_id!r} already: this submission was made before; "
                    f"`bps report --id {run_id}` shows it, `bps restart --id {run_id}` reruns what failed",
                    status=409,
                ) from None
            raise
        return run_id

    def wait_parsed(self, dag_id: str, dag_file: Path, *, timeout: float, interval: float = 0.5) -> None:
        """Return once the REST API knows ``dag_id``; raise on its file's import error, after ``timeout``.

        Asks every ``interval`` s (the dag-processor lists the folder on its own clock: nothing
        wakes us sooner), and for import errors every fourth time.
        """
        deadline = time.monotonic() + timeout
        what = f"look up DAG {dag_id!r}"
        for asked in itertools.count():
            try:
                self.api.call("GET", f"/api/v2/dags/{_q(dag_id)}", what=what)
                return
            except BpsApiError as exc:
                if exc.status != 404:
                    raise
            out_of_time = time.monotonic() >= deadline
            error = self.import_error(dag_file.name) if asked % 4 == 3 or out_of_time else None
            if error is not None:
                raise BpsApiError(
                    f"Airflow could not import the DAG file {dag_file}:\n{error}\nfix the submission "
                    f"(the spec {dag_file.with_suffix('.yaml').name} beside it) and submit again"
                )
            if out_of_time:
                raise BpsApiError(
                    f"DAG {dag_id!r} was not parsed within {timeout:.0f} s after copying {dag_file.name} "
                    f"into {dag_file.parent}: is it the DAGs folder of Airflow's dag-processor "
                    "(airflowDagFolder)? Is the dag-processor running? A slow one: raise airflowParseTimeout"
                )
            time.sleep(interval)

    def import_error(self, file_name: str) -> str | None:
        """Return Airflow's import error of the DAG file ``file_name`` (its stack trace), if any."""
        for error in self.api.pages("/api/v2/importErrors", "import_errors", what="list import errors"):
            if Path(str(error.get("filename") or "")).name == file_name:
                return str(error.get("stack_trace") or "").strip()
        return None

    # --- report ---------------------------------------------------------------------------------------

    def dag_run(self, wms_id: str) -> dict[str, Any] | None:
        """Return the submission's DAG run (none: no such run)."""
        dag_id = dag_id_of(wms_id)
        try:
            return dict(
                self.api.call(
                    "GET", f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id_for(dag_id))}",
                    what=f"read run {run_id_for(dag_id)!r}",
                )
            )  # fmt: skip
        except BpsApiError as exc:
            if exc.status == 404:
                return None
            raise

    def dag_runs(self, *, user: str | None = None, hist_days: float = 0.0) -> list[dict[str, Any]]:
        """Return the submissions' runs: those going on, and those that ended within ``hist_days`` days."""
        runs = self.api.pages(
            "/api/v2/dags/~/dagRuns", "dag_runs", query={"run_id_prefix_pattern": RUN_ID_PREFIX},
            what="list the submissions' runs",
        )  # fmt: skip
        since = time.time() - hist_days * 86400
        out = []
        for run in runs:
            if not str(run.get("dag_run_id") or "").startswith(RUN_ID_PREFIX):  # "_" matches any in LIKE
                continue
            if user and run.get("triggering_user_name") not in (None, user):
                continue
            if run.get("state") not in ACTIVE_RUN_STATES and not _ended_after(run.get("end_date"), since):
                continue
            out.append(dict(run))
        return out

    def status_rows(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Return the status page's rows of one run (none yet: the history knows nothing of it)."""
        try:
            rows = self.api.call(
                "GET", "/desc/status.json", query={"workflow": dag_id, "run": run_id},
                what=f"read the status of run {run_id!r}",
            )  # fmt: skip
        except BpsApiError as exc:
            if exc.status == 404:  # no process instance recorded or running yet
                return []
            raise
        return [dict(row) for row in rows]

    def summary(self, dag_run: Mapping[str, Any]) -> RunSummary:
        """Return one run's :class:`RunSummary`."""
        return summarize(dag_run, self.status_rows(str(dag_run["dag_id"]), str(dag_run["dag_run_id"])))

    # --- cancel, restart ------------------------------------------------------------------------------

    def cancel(self, wms_id: str) -> tuple[bool, str]:
        """Fail the submission's run (its SLURM jobs are cancelled); return whether it was, and why not."""
        run = self.dag_run(wms_id)
        if run is None:
            return False, f"no run {wms_id!r} in Airflow"
        if run.get("state") not in ACTIVE_RUN_STATES:
            return False, f"run {run['dag_run_id']!r} has ended already ({run.get('state')})"
        self.api.call(
            "PATCH", f"/api/v2/dags/{_q(run['dag_id'])}/dagRuns/{_q(run['dag_run_id'])}",
            {"state": "failed", "note": CANCEL_NOTE}, what=f"cancel run {run['dag_run_id']!r}",
        )  # fmt: skip
        return True, ""

    def restart(self, wms_id: str) -> tuple[dict[str, Any] | None, str]:
        """Clear what did not succeed of an ended run (see :func:`restart_targets`).

        :return: the run (none: not restarted) and why not.
        """
        run = self.dag_run(wms_id)
        if run is None:
            return None, f"no run {wms_id!r} in Airflow"
        dag_id, run_id = str(run["dag_id"]), str(run["dag_run_id"])
        if run.get("state") in ACTIVE_RUN_STATES:
            return (
                None,
                f"run {run_id!r} is still {run['state']}: wait for it to end, or `bps cancel` it first",
            )
        path = f"/api/v2/dags/{_q(dag_id)}"
        instances = self.api.pages(
            f"{path}/dagRuns/{_q(run_id)}/taskInstances",
            "task_instances",
            what=f"list the tasks of {run_id!r}",
        )
        tasks = self.api.call("GET", f"{path}/tasks", what=f"read the tasks of DAG {dag_id!r}")["tasks"]
        downstream = {str(t["task_id"]): list(t.get("downstream_task_ids") or ()) for t in tasks}
        targets = restart_targets(instances, downstream)
        if not targets:
            return None, f"run {run_id!r} ended {run.get('state')} with no failed task: nothing to restart"
        body = {"dry_run": False, "dag_run_id": run_id, "task_ids": targets, "only_failed": False,
                "reset_dag_runs": True, "note": RESTART_NOTE}  # fmt: skip
        self.api.call("POST", f"{path}/clearTaskInstances", body, what=f"restart run {run_id!r}")
        # The run is going again: a note of `bps cancel` no longer says what became of it.
        self.api.call("PATCH", f"{path}/dagRuns/{_q(run_id)}", {"note": RESTART_NOTE},
                      query={"update_mask": "note"}, what=f"note the restart of run {run_id!r}")  # fmt: skip
        return run, ""


def _ended_after(end_date: Any, since: float) -> bool:
    if not end_date:
        return False
    try:
        return datetime.fromisoformat(str(end_date).replace("Z", "+00:00")).timestamp() >= since
    except ValueError:
        return True
