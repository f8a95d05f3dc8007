"""The Airflow plugin of airflow-desc: the status page, the script-process listener, the timetable."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_desc.plugins import defer_race, listener, pools, warm_imports
from airflow_desc.timetables import SurveyYearTimetable


class DescPlugin(AirflowPlugin):
    """Registers airflow-desc with Airflow.

    * the UI page (:mod:`airflow_desc.plugins.ui`): a FastAPI app on the api-server at ``/desc``
      and a "DESC status" entry in the UI's navigation;
    * the listener that records script processes (:mod:`airflow_desc.plugins.listener`);
    * the listener that creates a starting run's missing cluster pools (:mod:`airflow_desc.plugins.pools`);
    * the listener that installs, in the scheduler, the guard against Airflow's resume-after-defer race
      (:mod:`airflow_desc.plugins.defer_race`);
    * the listener that imports airflow-desc in each Airflow job process, so that the task processes it
      forks inherit it (:mod:`airflow_desc.plugins.warm_imports`);
    * the api-server middleware that records who cleared which task instances through Airflow's API,
      and why (:mod:`airflow_desc.plugins.clears`), for the history's ``triggered_by`` / ``rerun_reason``;
    * :class:`~airflow_desc.timetables.SurveyYearTimetable`.
    """

    name = "airflow_desc"
    listeners = [listener, pools, defer_race, warm_imports]
    # DAGs scheduled by a custom timetable only serialize if a plugin registers its class.
    timetables = [SurveyYearTimetable]

    @property
    def fastapi_apps(self) -> list[dict[str, object]]:  # type: ignore[override]
        """The status page, imported only where Airflow asks for it (the api-server)."""
        from airflow_desc.plugins.ui import URL_PREFIX, app

        return [{"app": app, "url_prefix": URL_PREFIX, "name": "DESC status"}]

    @property
    def fastapi_root_middlewares(self) -> list[dict[str, object]]:  # type: ignore[override]
        """The recorder of clears, imported only where Airflow asks for it (the api-server)."""
        from airflow_desc.plugins.clears import ClearRecorder

        return [{"middleware": ClearRecorder, "args": [], "kwargs": {}, "name": "desc-clear-recorder"}]

    @property
    def external_views(self) -> list[dict[str, object]]:  # type: ignore[override]
        """The navigation entry of the status page."""
        from airflow_desc.plugins.ui import EXTERNAL_VIEW

        return [dict(EXTERNAL_VIEW)]
