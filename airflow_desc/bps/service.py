"""``AirflowService``: the ctrl_bps WMS service of airflow-desc (imports ``lsst.ctrl.bps``, never Airflow).

``bps prepare`` / ``bps submit`` call :meth:`AirflowService.prepare` with the GenericWorkflow;
it writes, into ``<submit dir>/airflow/``, the workflow spec (:mod:`airflow_desc.bps.translate`)
and the one-line DAG file that renders it. The BPS config keys it reads (all optional):

==========================  ========================================================================
key                         meaning
==========================  ========================================================================
``airflowWorkflowName``     the workflow name, hence the DAG id (default: the run name, e.g.
                            ``u_jdoe_pipelines_check_20261206T144000Z``)
``airflowCluster``          the cluster profile every job runs on (default: each job's ``computeSite``)
``airflowDefaultWalltime``  the walltime of a job that requests none (default ``1:00:00``)
``airflowBundling``         the spec's ``bundling`` settings, e.g. ``{threshold: 100, target_instances: 64}``
==========================  ========================================================================

``submit``, ``report``, ``get_status``, ``list_submitted_jobs``, ``cancel`` and ``restart`` go
through Airflow's REST API (see :mod:`airflow_desc.bps`); they are not built yet and say so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lsst.ctrl.bps import BaseWmsService, BaseWmsWorkflow

from airflow_desc.bps.jobs import jobs_from_generic_workflow
from airflow_desc.bps.translate import SpecSettings, dag_file_text, spec_text, workflow_spec

__all__ = ["AirflowService", "AirflowWorkflow"]

_NOT_YET = (
    "airflow_desc.bps does not {what} yet (it prepares the DAG only): copy the spec and the DAG file "
    "that `bps prepare` wrote under <submit dir>/airflow/ into Airflow's DAG folder and trigger the DAG"
)


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
    )


class AirflowWorkflow(BaseWmsWorkflow):  # type: ignore[misc]  # lsst.ctrl.bps: untyped here
    """A BPS submission as an airflow-desc workflow: a spec and the DAG file that renders it.

    :param name: the BPS run name.
    :param config: the BPS config.
    :param spec: the spec as YAML text.
    :param dag_id: the DAG id (the spec's name).
    """

    def __init__(self, name: str, config: Any, spec: str, dag_id: str) -> None:
        super().__init__(name, config)
        self.spec = spec
        self.dag_id = dag_id
        self.generic_workflow: Any = None

    @classmethod
    def from_generic_workflow(
        cls, config: Any, generic_workflow: Any, out_prefix: str, service_class: str
    ) -> AirflowWorkflow:
        """Translate ``generic_workflow`` into a spec (see :mod:`airflow_desc.bps.translate`)."""
        settings = _settings(config)
        spec = workflow_spec(generic_workflow.name, jobs_from_generic_workflow(generic_workflow), settings)
        workflow = cls(generic_workflow.name, config, spec_text(spec, generic_workflow.name), spec["name"])
        workflow.service_class = service_class
        workflow.run_id = generic_workflow.run_id
        workflow.generic_workflow = generic_workflow
        return workflow

    @property
    def spec_path(self) -> Path:
        """Where :meth:`write` puts the spec."""
        return Path(self.submit_path or ".") / "airflow" / f"{self.dag_id}.yaml"

    @property
    def dag_path(self) -> Path:
        """Where :meth:`write` puts the DAG file."""
        return self.spec_path.with_suffix(".py")

    def write(self, out_prefix: str) -> None:
        """Write the spec and the DAG file under ``<out_prefix>/airflow/``."""
        self.submit_path = out_prefix
        self.spec_path.parent.mkdir(parents=True, exist_ok=True)
        self.spec_path.write_text(self.spec, encoding="utf-8")
        self.dag_path.write_text(dag_file_text(self.spec_path.name), encoding="utf-8")


class AirflowService(BaseWmsService):  # type: ignore[misc]
    """The WMS service ctrl_bps loads for ``wmsServiceClass: airflow_desc.bps.AirflowService``."""

    def prepare(self, config: Any, generic_workflow: Any, out_prefix: str | None = None) -> AirflowWorkflow:
        """Write the submission's spec and DAG file; refuse what airflow-desc does not run.

        :raises airflow_desc.exceptions.BpsWorkflowError: naming each job and the feature it uses.
        """
        service_class = f"{type(self).__module__}.{type(self).__name__}"
        workflow = AirflowWorkflow.from_generic_workflow(
            config, generic_workflow, out_prefix or ".", service_class
        )
        workflow.write(out_prefix or ".")
        return workflow

    def submit(self, workflow: Any, **kwargs: Any) -> None:
        """Not built yet (see the module docs)."""
        raise NotImplementedError(_NOT_YET.format(what="submit"))

    def restart(self, wms_workflow_id: str) -> tuple[str | None, str | None, str]:
        """Not built yet (see the module docs)."""
        return None, None, _NOT_YET.format(what="restart")

    def cancel(self, wms_id: str, pass_thru: str | None = None) -> tuple[bool, str]:
        """Not built yet (see the module docs)."""
        return False, _NOT_YET.format(what="cancel")
