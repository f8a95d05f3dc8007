"""``AirflowService``: the ctrl_bps WMS service of airflow-desc (imports ``lsst.ctrl.bps``, never Airflow).

``bps prepare`` / ``bps submit`` call :meth:`AirflowService.prepare` with the GenericWorkflow;
it writes, into ``<submit dir>/airflow/``, the workflow spec (:mod:`airflow_desc.bps.translate`)
and the one-line DAG file that renders it. ``bps submit`` then copies both into Airflow's DAG
folder and triggers the DAG's run; ``bps report``, ``status``, ``cancel``, ``restart`` and ``ping``
go through Airflow's REST API (:mod:`airflow_desc.bps.runs`, :mod:`airflow_desc.bps.api`). The
BPS config keys it reads (all optional but ``airflowDagFolder`` for ``bps submit``):

==========================  ========================================================================
key                         meaning
==========================  ========================================================================
``airflowWorkflowName``     the workflow name, hence the DAG id (default: the run name, e.g.
                            ``u_jdoe_pipelines_check_20261206T144000Z``)
``airflowCluster``          the cluster profile every job runs on (default: each job's ``computeSite``)
``airflowDefaultWalltime``  the walltime of a job that requests none (default ``1:00:00``)
``airflowBundling``         the spec's ``bundling`` settings, e.g. ``{threshold: 100, target_instances: 64}``
``airflowChains``          ``true``: quanta that make chains by data id run as one sub-task, a stream
                            per data id (:mod:`airflow_desc.bps.translate`; default ``false``: a
                            sub-task per label)
``airflowLauncher``        how the bundles' pilot starts each quantum: ``srun`` (default: a SLURM step
                            each, in sacct) or ``direct`` (a child process of the pilot, no step: less
                            start-up per quantum; its CPU, wall and MaxRSS measured by the pilot)
``airflowDagFolder``        the DAGs folder of Airflow's dag-processor (else ``$AIRFLOW_DESC_DAG_FOLDER``)
``airflowParseTimeout``     seconds ``bps submit`` waits for the DAG to be parsed (default 300)
``airflowApiUrl`` ...       the api-server and the user (:mod:`airflow_desc.bps.api`; the other
                            commands read them from the environment only: ctrl_bps gives them no config)
==========================  ========================================================================

The wms id is the DAG run's id, ``bps__<DAG id>``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lsst.ctrl.bps import BaseWmsService, BaseWmsWorkflow, WmsRunReport, WmsStates

from airflow_desc.bps.api import AirflowRestApi, ApiSettings
from airflow_desc.bps.jobs import jobs_from_generic_workflow
from airflow_desc.bps.runs import AirflowRuns, RunSummary, Submission, install_dag_files, wms_state
from airflow_desc.bps.translate import (
    LAUNCHERS,
    SpecSettings,
    dag_file_text,
    job_counts,
    overlay_text,
    refuse_other_wms_options,
    spec_text,
    workflow_spec,
)
from airflow_desc.exceptions import BpsApiError, BpsWorkflowError

__all__ = ["AirflowService", "AirflowWorkflow"]

#: The environment variable naming the DAG folder when the BPS config does not.
DAG_FOLDER_ENV = "AIRFLOW_DESC_DAG_FOLDER"


def _setting(config: Any, key: str, default: Any) -> Any:
    found, value = config.search(key, opt={"default": default})
    return value if found else default


def _settings(config: Any) -> SpecSettings:
    bundling = _setting(config, "airflowBundling", None)
    return SpecSettings(
        name=_setting(config, "airflowWorkflowName", None) or None,
        cluster=_setting(config, "airflowCluster", None) or None,
        walltime=str(_setting(config, "airflowDefaultWalltime", "1:00:00")),
        bundling=dict(bundling) if bundling else {},
        chains=bool(_setting(config, "airflowChains", False)),
    )


def _launcher(config: Any) -> str:
    launcher = str(_setting(config, "airflowLauncher", "srun"))
    if launcher not in LAUNCHERS:
        raise BpsWorkflowError(
            f"BPS config airflowLauncher: {launcher!r} is not a launcher of airflow-desc's bundles; "
            f"use one of {', '.join(LAUNCHERS)}"
        )
    return launcher


class AirflowWorkflow(BaseWmsWorkflow):  # type: ignore[misc]  # lsst.ctrl.bps: untyped here
    """A BPS submission as an airflow-desc workflow: a spec and the DAG file that renders it.

    :param name: the BPS run name.
    :param config: the BPS config.
    :param spec: the spec as YAML text.
    :param dag_id: the DAG id (the spec's name).
    """

    def __init__(self, name: str, config: Any, spec: str, dag_id: str, launcher: str = "srun") -> None:
        super().__init__(name, config)
        self.spec = spec
        self.dag_id = dag_id
        self.launcher = launcher
        self.generic_workflow: Any = None
        self.job_counts: dict[str, int] = {}

    @classmethod
    def from_generic_workflow(
        cls, config: Any, generic_workflow: Any, out_prefix: str, service_class: str
    ) -> AirflowWorkflow:
        """Translate ``generic_workflow`` into a spec (see :mod:`airflow_desc.bps.translate`)."""
        settings = _settings(config)
        jobs = jobs_from_generic_workflow(generic_workflow)
        spec = workflow_spec(generic_workflow.name, jobs, settings)
        text = spec_text(spec, generic_workflow.name)
        workflow = cls(generic_workflow.name, config, text, spec["name"], _launcher(config))
        workflow.service_class = service_class
        workflow.run_id = generic_workflow.run_id
        workflow.generic_workflow = generic_workflow
        workflow.job_counts = job_counts(jobs)
        return workflow

    def submission(self) -> Submission:
        """Return what the DAG run's conf carries for ``bps report``."""
        attrs = dict(getattr(self.generic_workflow, "run_attrs", None) or {})
        return Submission(
            run=str(self.name),
            jobs=self.job_counts,
            path=str(self.submit_path or ""),
            **{
                key: str(attrs.get(f"bps_{key}") or "")
                for key in ("operator", "project", "campaign", "payload")
            },
        )

    @property
    def spec_path(self) -> Path:
        """Where :meth:`write` puts the spec."""
        return Path(self.submit_path or ".") / "airflow" / f"{self.dag_id}.yaml"

    @property
    def overlay_path(self) -> Path | None:
        """Where :meth:`write` puts the render overlay (the launcher), if the submission needs one."""
        return self.spec_path.with_suffix(".site.yaml") if self.launcher != "srun" else None

    @property
    def dag_path(self) -> Path:
        """Where :meth:`write` puts the DAG file."""
        return self.spec_path.with_suffix(".py")

    @property
    def files(self) -> list[Path]:
        """What :meth:`write` writes, in the order to install them: the DAG file last."""
        return [self.spec_path, *([self.overlay_path] if self.overlay_path else []), self.dag_path]

    def write(self, out_prefix: str) -> None:
        """Write the spec (and its overlay) and the DAG file under ``<out_prefix>/airflow/``."""
        self.submit_path = out_prefix
        self.spec_path.parent.mkdir(parents=True, exist_ok=True)
        self.spec_path.write_text(self.spec, encoding="utf-8")
        rendered = self.spec_path
        if self.overlay_path is not None:
            self.overlay_path.write_text(overlay_text(self.spec_path.name, self.launcher), encoding="utf-8")
            rendered = self.overlay_path
        self.dag_path.write_text(dag_file_text(rendered.name), encoding="utf-8")


class AirflowService(BaseWmsService):  # type: ignore[misc]
    """The WMS service ctrl_bps loads for ``wmsServiceClass: airflow_desc.bps.AirflowService``."""

    def prepare(self, config: Any, generic_workflow: Any, out_prefix: str | None = None) -> AirflowWorkflow:
        """Write the submission's spec and DAG file; refuse what airflow-desc does not run.

        :raises airflow_desc.exceptions.BpsWorkflowError: naming each job and the feature it uses, or
            each BPS config key only another WMS plugin reads (``site.<name>.profile`` ...:
            :func:`~airflow_desc.bps.translate.refuse_other_wms_options`).
        """
        service_class = f"{type(self).__module__}.{type(self).__name__}"
        refuse_other_wms_options(config.toDict())
        workflow = AirflowWorkflow.from_generic_workflow(
            config, generic_workflow, out_prefix or ".", service_class
        )
        workflow.write(out_prefix or ".")
        return workflow

    def submit(self, workflow: Any, **kwargs: Any) -> AirflowWorkflow:
        """Copy the spec and DAG file into the DAG folder, wait for the DAG, unpause it and trigger its run.

        The run id (the wms id) is set as ``workflow.run_id``.

        :raises airflow_desc.exceptions.BpsApiError: no DAG folder, the DAG not parsed in time (or its
            import error), or Airflow refusing a call.
        """
        config = kwargs.get("config") or workflow.config
        folder = _setting(config, "airflowDagFolder", None) or os.environ.get(DAG_FOLDER_ENV)
        if not folder:
            raise BpsApiError(
                "no DAG folder to submit to: set airflowDagFolder in the BPS config (or "
                f"{DAG_FOLDER_ENV}) to the DAGs folder of Airflow's dag-processor"
            )
        dag_file = install_dag_files(workflow.files, Path(str(folder)))
        runs = _runs(lambda key: _setting(config, key, None))
        timeout = float(_setting(config, "airflowParseTimeout", 300))
        workflow.run_id = runs.submit(workflow.dag_id, dag_file, workflow.submission(), timeout=timeout)
        return workflow  # type: ignore[no-any-return]

    def report(
        self,
        wms_workflow_id: str | None = None,
        user: str | None = None,
        hist: float = 0,
        pass_thru: str | None = None,
        is_global: bool = False,
        return_exit_codes: bool = False,
    ) -> tuple[list[Any], str]:
        """Report one submission (its id) or every one going on (and ended within ``hist`` days)."""
        runs = _runs()
        if wms_workflow_id:
            found = runs.dag_run(wms_workflow_id)
            dag_runs = [found] if found is not None else []
        else:
            dag_runs = runs.dag_runs(user=user, hist_days=float(hist or 0))
        reports = [_run_report(runs.summary(run)) for run in dag_runs]
        message = ""
        if wms_workflow_id and dag_runs:
            run = dag_runs[0]
            where = f"workflow={run['dag_id']}&run={run['dag_run_id']}"
            message = f"Per process and attempt: {runs.api.base}/desc/?{where}"
        return reports, message

    def get_status(self, wms_workflow_id: str, hist: float = 1, is_global: bool = False) -> tuple[Any, str]:
        """Return the state of one submission's run."""
        run = _runs().dag_run(wms_workflow_id)
        if run is None:
            return WmsStates.UNKNOWN, f"no run {wms_workflow_id!r} in Airflow"
        return WmsStates[wms_state(run)], ""

    def list_submitted_jobs(
        self,
        wms_id: str | None = None,
        user: str | None = None,
        require_bps: bool = True,
        pass_thru: str | None = None,
        is_global: bool = False,
    ) -> list[str]:
        """Return the run ids of one submission (if it exists) or of every one going on."""
        runs = _runs()
        if wms_id:
            found = runs.dag_run(wms_id)
            return [str(found["dag_run_id"])] if found is not None else []
        return [str(run["dag_run_id"]) for run in runs.dag_runs(user=user)]

    def cancel(self, wms_id: str, pass_thru: str | None = None) -> tuple[bool, str]:
        """Fail the submission's run: Airflow stops its tasks, and their SLURM jobs are cancelled."""
        try:
            return _runs().cancel(wms_id)
        except BpsApiError as exc:
            return False, str(exc)

    def restart(self, wms_workflow_id: str) -> tuple[str | None, str | None, str]:
        """Rerun what did not succeed in an ended run (and what depends on it); the run id stays."""
        try:
            run, why = _runs().restart(wms_workflow_id)
        except BpsApiError as exc:
            return None, None, str(exc)
        if run is None:
            return None, None, why
        return str(run["dag_run_id"]), Submission.from_conf(run.get("conf"), str(run["dag_id"])).run, ""

    def ping(self, pass_thru: str | None = None) -> tuple[int, str]:
        """Check that the api-server answers and lets the user in."""
        try:
            _runs().api.call("GET", "/api/v2/dags", query={"limit": 1}, what="list DAGs")
        except BpsApiError as exc:
            return 1, str(exc)
        return 0, ""


def _runs(config_value: Any = None) -> AirflowRuns:
    return AirflowRuns(AirflowRestApi(ApiSettings.load(config_value)))


def _run_report(summary: RunSummary) -> Any:
    """Return ctrl_bps's report of one run: its state, and its jobs per label and state."""
    totals = summary.totals()
    submission = summary.submission
    return WmsRunReport(
        wms_id=summary.run_id,
        global_wms_id=summary.run_id,
        path=submission.path,
        run=submission.run,
        project=submission.project,
        campaign=submission.campaign,
        payload=submission.payload,
        operator=submission.operator,
        run_summary=summary.run_summary,
        state=WmsStates[summary.state],
        total_number_jobs=sum(submission.jobs.values()),
        job_state_counts={state: totals.get(state.name, 0) for state in WmsStates},
        job_summary={
            label: {state: counts.get(state.name, 0) for state in WmsStates}
            for label, counts in summary.labels.items()
        },
    )
