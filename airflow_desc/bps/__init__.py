"""A ctrl_bps WMS plugin: DESC's ``bps submit`` runs through airflow-desc (issue #16).

It runs in the LSST environment, beside ``lsst.ctrl.bps``, and imports no Airflow (a unit test
loads it in a fresh interpreter and checks ``sys.modules``); it is installed there as its own small
distribution, ``airflow-desc-bps`` (``bps/pyproject.toml``: this package and
``airflow_desc.exceptions``, no Airflow), since ``airflow-desc`` itself requires Airflow. In a BPS
config::

    wmsServiceClass: airflow_desc.bps.AirflowService
    computeSite: perlmutter            # a cluster profile name (or airflowCluster: ...)

Modules, bottom up: :mod:`~airflow_desc.bps.jobs` (a GenericWorkflow's jobs as plain data, what
is refused), :mod:`~airflow_desc.bps.commands` (a job's command, placeholders resolved, values
quoted), :mod:`~airflow_desc.bps.translate` (the workflow spec), :mod:`~airflow_desc.bps.states`
(airflow-desc's status table as ctrl_bps's ``WmsStates`` per label),
:mod:`~airflow_desc.bps.streams` (the script the DAG runs on the Airflow worker: no LSST import),
:mod:`~airflow_desc.bps.api` (Airflow's REST API with the standard library: where, as whom),
:mod:`~airflow_desc.bps.runs` (a submission as one DAG run: submit, report, cancel, restart) and
:mod:`~airflow_desc.bps.service` (``AirflowService``, the only module that imports
``lsst.ctrl.bps``; loaded on first use of the name, so that the Airflow worker can import
``airflow_desc.bps.streams`` without the LSST stack).

**How a submission reaches Airflow**:

- ``prepare`` writes ``<submit dir>/airflow/<dag id>.yaml`` (the spec) and ``<dag id>.py`` (the
  one-line DAG file that renders it, as ``dags/*.py`` do). The DAG id is the BPS run name, so
  each submission is a DAG of its own with one run.
- ``submit`` copies both into the DAG folder named by ``airflowDagFolder`` (a directory the DAG
  processor reads: on the submit host, or a shared filesystem), waits until the REST API knows
  the DAG (``GET /api/v2/dags/{dag_id}``; an import error from ``/api/v2/importErrors`` is
  reported with Airflow's traceback), unpauses it (``PATCH``) and triggers one run
  (``POST /api/v2/dags/{dag_id}/dagRuns``, run id ``bps__<dag id>``: the wms id). The api-server
  and the user: :mod:`~airflow_desc.bps.api`.
- ``report`` / ``get_status`` read the run (``GET .../dagRuns/{run}``) and the status page's
  ``/desc/status.json?workflow=<dag id>&run=<run id>`` (never the history database), mapped per
  label by :func:`~airflow_desc.bps.states.label_states`; ``list_submitted_jobs`` lists the runs
  whose id starts ``bps__``.
- ``cancel`` marks the run failed (``PATCH .../dagRuns/{run}``: the deferred tasks' triggers and
  the running tasks' ``on_kill`` cancel their SLURM jobs); ``restart`` clears what failed and what
  lies below it (``POST .../clearTaskInstances``, :func:`~airflow_desc.bps.runs.restart_targets`):
  a cleared bundle reruns only its quanta that did not succeed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_desc.bps.service import AirflowService

__all__ = ["AirflowService"]


def __getattr__(name: str) -> Any:
    if name == "AirflowService":
        from airflow_desc.bps.service import AirflowService

        return AirflowService
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
