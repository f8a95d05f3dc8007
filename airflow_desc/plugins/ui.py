"""The Airflow UI page of airflow-desc: the DC1 status table, live, with a plot per process.

:class:`~airflow_desc.plugins.DescPlugin` mounts :data:`app` on the api-server at ``/desc`` and
adds "DESC status" to the UI's navigation (an external view shown in an iframe at
``/plugin/desc-status``). Routes, relative to ``/desc``; each takes the query parameters
``workflow``, ``run`` and ``variant`` (empty: all)::

    GET /                      the status table (history + live states of runs in progress),
                               attempts, a selection form; every link relative
    GET /status.json           the table as ``airflow-desc status --format json`` prints it
    GET /status.csv            ... and as CSV
    GET /plots/<process>.png   CPU vs wall clock of every attempt of the process (the "Plot" link)
    GET /usage                 a chosen process's figures by stream (``process``, ``variable``),
                               the selection's throughput per cluster, failures by stream level,
                               CPU and memory of every process, and the resource advice table
    GET /figures/<name>.png    those figures (:data:`~airflow_desc.reports.html.USAGE_FIGURES`)
    POST /rerun                the Rerun form (checked rows, or a state / streams; a reason): first
                               the task instances it would clear (Airflow's dry run), then, with
                               ``confirm=1``, the clear, through Airflow's REST API as the user
    GET /instances             a count drilled down (``process`` and ``state`` besides the
                               selection): those process instances, their latest attempt each
                               (stream, try, state, reason, message, node, CPU, wall, MaxRSS)
    GET /log/<attempt id>      one attempt's log tail as the history keeps it (the list's "tail")

Every route needs a logged-in Airflow user (the UI's session token, or an API bearer token, as
the REST API does): without one the answer is 401. A user who may not read every DAG sees only
the runs of the DAGs the auth manager lets them read (``get_authorized_dag_ids``; under the FAB
auth manager, the ``DAG:<dag id>`` resources their roles may ``can_read``): the page, the JSON and
CSV, the figures, the drill-downs and the Rerun form leave the others out, and a selection
(workflow, variant, run, process) that only DAGs they may not read hold answers 403, as does the
log of such a DAG's attempt. The table is the one the CLI prints
(:func:`~airflow_desc.status.current.current_counts`), from the configured history store.

**Rerun** clears with the user's own credential (the session cookie or bearer token the page got),
passed on to Airflow's ``clearTaskInstances`` on this api-server (reached as :func:`_api_base` says,
never at the address a request's Host header names): the auth manager decides (a user who may
read a DAG but not edit it gets Airflow's 403, passed on), the audit log names the user, and
:mod:`airflow_desc.plugins.clears` records who and why for the history. A user sees and selects
only instances of the DAGs they may read.

The api-server reads databases only: Airflow's metadata DB and the history (its records, the
DAGs' process plans the listener stores, the SLURM job states the triggers' pollers store, the SSH
key checks the pollers, ``airflow-desc clusters check`` and waiting tasks store: a line per cluster
whose key has expired or expires within two hours). It
needs no DAG files and no SSH keys or cluster connections: nothing here parses a DAG or asks a
cluster (:mod:`airflow_desc.status.live`).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import threading
from typing import TYPE_CHECKING, Any

from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd
    from matplotlib.figure import Figure

    from airflow_desc.history import HistoryFilter

__all__ = ["EXTERNAL_VIEW", "URL_PREFIX", "app"]

log = logging.getLogger(__name__)

#: Where the api-server mounts :data:`app`.
URL_PREFIX = "/desc"
#: The UI's navigation entry (Airflow 3.1+ ``external_views``): the page in an iframe.
EXTERNAL_VIEW = {
    "name": "DESC status",
    "href": "desc/",
    "destination": "nav",
    "url_route": "desc-status",
    "category": "browse",
}

#: The states the Rerun form offers: those an attempt is recorded with.
RERUN_STATES = ("success", "failed", "terminated", "cancelled", "skipped")

_FIGURES = threading.Lock()

app = FastAPI(
    title="airflow-desc",
    description="The DESC campaign status table, live, with per-process plots.",
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)


#: A DAG id no permission can name (a DAG id has no spaces): a user the auth manager lets read it may
#: read every DAG (FAB's ``DAGs`` resource), not only some named ones (FAB's ``DAG:<dag id>``).
_ANY_DAG = "any DAG (airflow-desc)"


def _readable_dags(user: Any) -> set[str] | None:
    """Return the DAG ids the user may read, or ``None`` when they may read every DAG.

    Asked of a DAG no one names, not without a DAG: ``is_authorized_dag`` without details asks
    whether the user may *list* DAGs, which FAB grants to anyone who may read one of them.
    """
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    manager = get_auth_manager()
    if manager.is_authorized_dag(method="GET", user=user, details=DagDetails(id=_ANY_DAG)):
        return None
    return set(manager.get_authorized_dag_ids(user=user, method="GET"))


#: The fields of a selection that name what it shows (its state and streams only narrow it).
_NAMING = ("workflow", "variant", "version", "run_id", "process")


def _forbid_unreadable(selection: HistoryFilter, dag_ids: set[str] | None) -> None:
    """Answer 403 when what the selection names is held only by DAGs the user may not read.

    A readable process without failures lists none (not a 403); unknown names pass, for the query
    that follows to answer 404.
    """
    from airflow_desc.history import HistoryFilter

    if dag_ids is None:
        return
    named = HistoryFilter(**{field: getattr(selection, field) for field in _NAMING})
    if named.narrowed_by() and not _holds(named, dag_ids) and _holds(named, None):
        raise HTTPException(status_code=403, detail="you may not read the DAGs of this selection")


def _holds(selection: HistoryFilter, dag_ids: set[str] | None) -> bool:
    """Return whether the history holds an attempt of the selection among these DAGs (``None``: all)."""
    from airflow_desc.history.queries import process_instances
    from airflow_desc.status.current import readable_history

    try:
        found = process_instances(
            readable_history(_store()), dataclasses.replace(selection, dag_ids=dag_ids), limit=1
        )
    except ValueError:  # unknown names
        return False
    return not found.empty


def _selection(
    request: Request, keys: tuple[str, ...] = ("workflow", "run", "variant")
) -> dict[str, str | None]:
    params = request.query_params
    return {k: (params.get(k) or "").strip() or None for k in keys}


_STORES: dict[str, Any] = {}
_STORES_LOCK = threading.Lock()


def _store() -> Any:
    """Return the configured history store, one per target for the life of the api-server.

    A store owns an engine and its connection pool: one per request would open a pool per page.
    """
    from airflow_desc.history import default_sqlite_url, history_conn_id, open_history

    target = history_conn_id() or default_sqlite_url()
    with _STORES_LOCK:
        if target not in _STORES:
            _STORES[target] = open_history(target)
        return _STORES[target]


def _filter(selected: dict[str, str | None], dag_ids: set[str] | None) -> Any:
    """Return the history selection of a request; refuse a DAG the user may not read."""
    from airflow_desc.history import HistoryFilter

    selection = HistoryFilter(
        workflow=selected["workflow"], run_id=selected["run"], variant=selected["variant"], dag_ids=dag_ids
    )
    _forbid_unreadable(selection, dag_ids)
    return selection


def _plain_json(selected: dict[str, str | None], dag_ids: set[str] | None) -> str | None:
    """Return the status table as JSON read and merged as ``airflow-desc status`` does, or None.

    Through the DBAPI and plain rows (:func:`~airflow_desc.status.current_rows.current_rows`): the
    live merge at DC1's worst case in 0.83 s instead of pandas' 1.38 s (issue #13 item 3). None when
    that path does not apply, or finds nothing (an unknown name: :func:`_current` says which).
    """
    from airflow.configuration import conf

    from airflow_desc.history import default_sqlite_url, history_conn_id
    from airflow_desc.reports.status_rows import TABLE_COLUMNS, json_text, status_rows
    from airflow_desc.status.current_rows import current_rows

    fernet = conf.get("core", "fernet_key", fallback=None) or None
    metadata = (conf.get("database", "sql_alchemy_conn"), fernet)
    current = current_rows(history_conn_id() or default_sqlite_url(), _filter(selected, dag_ids), metadata)
    if current is None or current.empty:
        return None
    return json_text(TABLE_COLUMNS, status_rows([*current.counts, *current.live], current.order))


def _current(selected: dict[str, str | None], dag_ids: set[str] | None) -> Any:
    from airflow_desc.status.current import current_counts

    selection = _filter(selected, dag_ids)
    try:
        return current_counts(_store(), selection)
    except ValueError as exc:
        # The message lists names across every DAG: a user who may not read them all gets less.
        detail = (
            str(exc) if dag_ids is None else "no such workflow, run or variant among the DAGs you can read"
        )
        raise HTTPException(status_code=404, detail=detail) from None


def _table(current: Any) -> pd.DataFrame:
    from airflow_desc.reports.status import status_table

    return status_table(current.counts, current.live, order=current.order)


def _key_notes() -> list[str]:
    """Return a line per cluster whose SSH key has expired or expires within 2 h, as the last check wrote."""
    from airflow_desc.history.key_checks import key_checks
    from airflow_desc.ssh_keys import key_notes

    try:
        return key_notes(key_checks(_store().engine))
    except Exception as exc:  # noqa: BLE001 - the table is shown without the key warnings
        log.warning("the SSH key checks could not be read: %s", exc)
        return []


@app.get("/", response_class=HTMLResponse)
def status_page(request: Request, user: GetUserDep) -> HTMLResponse:
    """Render the status page."""
    from airflow_desc.history.queries import known_workflows
    from airflow_desc.reports.html import render_status_page
    from airflow_desc.reports.status import attempts_table

    selected = _selection(request)
    dag_ids = _readable_dags(user)
    current = _current(selected, dag_ids)
    notes = [current.warning] if current.warning else []
    notes.extend(current.notes)
    if current.live is not None and not current.live.empty:
        notes.append(f"{int(current.live['count'].sum()):,} process instances of DAG runs in progress, "
                     "counted from their task-instance states")  # fmt: skip
    if current.empty:
        notes.append("No process instance recorded or in progress for this selection.")
    notes.extend(_key_notes())
    known = (
        known_workflows(_store().engine, dag_ids=dag_ids) if not current.empty or dag_ids is None else None
    )
    workflows = sorted(set(known["name"])) if known is not None else []
    variants = sorted({v for v in known["variant"] if v}) if known is not None else []
    page = render_status_page(
        _table(current), attempts_table(current.counts, order=current.order), workflows=workflows,
        variants=variants, selected=selected, notes=notes, rerun_states=RERUN_STATES,
    )  # fmt: skip
    return HTMLResponse(page)


@app.post("/rerun", response_class=HTMLResponse)
async def rerun(request: Request, user: GetUserDep) -> HTMLResponse:
    """Show what the Rerun form selects (Airflow's dry run); with ``confirm=1``, clear it as the user."""
    from starlette.concurrency import run_in_threadpool

    form = await request.form()
    fields = {key: [str(v).strip() for v in form.getlist(key) if str(v).strip()]
              for key in ("workflow", "run", "variant", "process", "state", "stream", "reason")}  # fmt: skip
    token = _credential(request)
    base = _api_base()
    status, page = await run_in_threadpool(
        _rerun_page, fields, form.get("confirm") == "1", user, _readable_dags(user), base, token
    )
    return HTMLResponse(page, status_code=status)


def _rerun_page(
    fields: dict[str, list[str]], confirm: bool, user: Any, dag_ids: set[str] | None, base: str, token: str
) -> tuple[int, str]:
    """Select, dry-run or clear; return the HTTP status and the page."""
    from urllib.parse import urlencode

    from airflow_desc.reports.html import render_rerun_page
    from airflow_desc.reruns import AirflowApi, RerunRefused, check_reason, clear_through_api, plan_reruns

    first = {k: (v[0] if v else None) for k, v in fields.items()}
    back = urlencode({k: first[k] for k in ("workflow", "run", "variant") if first[k]})
    name = str(user.get_name())

    def answer(status: int, message: str, rows: list[dict[str, Any]], ask: bool = False) -> tuple[int, str]:
        page = render_rerun_page(
            message=message, rows=rows, fields=fields, user=name, confirm=ask, back=f"?{back}" if back else ""
        )
        return status, page

    try:
        reason = check_reason(first["reason"] or "")
        targets = _rerun_selection(fields, first, dag_ids)
    except ValueError as exc:
        return answer(400, str(exc), [])
    except HTTPException as exc:
        return answer(exc.status_code, str(exc.detail), [])
    if targets.empty:
        return answer(200, "No process instance matches: nothing to rerun.", [])
    plans = plan_reruns(targets)
    api = AirflowApi(base, token)
    try:
        tis = clear_through_api(api, plans, store=_store(), reason=reason, dry_run=not confirm)
    except RerunRefused as exc:
        return answer(exc.status if exc.status in (401, 403) else 502, str(exc), [])
    chosen = {(p.dag_id, p.run_id, t): len(p.selected[t]) for p in plans for t in p.targets}
    rows = [
        {"dag_id": dag_id, "run_id": run_id, "task_id": ti["task_id"], "map_index": ti.get("map_index", -1),
         "state": ti.get("state") or "", "try_number": ti.get("try_number"),
         "selected": chosen.get((dag_id, run_id, (ti["task_id"], ti.get("map_index", -1))), "downstream")}
        for (dag_id, run_id), found in tis.items() for ti in found
    ]  # fmt: skip
    count = sum(p.instances for p in plans)
    if confirm:
        return answer(200, f"Cleared {len(rows)} task instance(s) as {name} ({count} selected process "
                      "instance(s)); the scheduler runs them again.", rows)  # fmt: skip
    would = f"{count} process instance(s) selected; clearing them clears these {len(rows)} task instance(s)"
    return answer(200, f"{would} (with what is downstream). Nothing is cleared yet.", rows, ask=True)


def _rerun_selection(
    fields: dict[str, list[str]], first: dict[str, str | None], dag_ids: set[str] | None
) -> Any:
    """Return the task instances behind the form's selection (:func:`~airflow_desc.reruns.rerun_targets`)."""
    import pandas as pd

    from airflow_desc.history import HistoryFilter
    from airflow_desc.history.queries import process_instances
    from airflow_desc.reruns import rerun_targets
    from airflow_desc.status.current import readable_history

    if not fields["process"] and not first["state"] and not first["stream"]:
        raise ValueError("check at least one row, or choose a state or streams: what should run again?")
    engine = readable_history(_store())
    processes: list[str | None] = list(fields["process"]) or [None]
    chosen = HistoryFilter(
        state=first["state"], stream_glob=first["stream"], workflow=first["workflow"], run_id=first["run"],
        variant=first["variant"], dag_ids=dag_ids,
    )  # fmt: skip
    selections = [dataclasses.replace(chosen, process=process) for process in processes]
    for selection in selections:
        _forbid_unreadable(selection, dag_ids)
    frames = [process_instances(engine, selection, latest_only=True) for selection in selections]
    return rerun_targets(pd.concat(frames, ignore_index=True))


def _credential(request: Request) -> str:
    """Return the credential the request was authenticated with: its bearer token, else the UI's cookie."""
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN

    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.cookies.get(COOKIE_NAME_JWT_TOKEN, "")


def _api_base() -> str:
    """Return where this api-server's REST API is reached from itself; never the request's Host header.

    ``[desc] api_url`` if set, else ``[api] base_url``, else the api-server's own port on the
    loopback address (https when it serves TLS).
    """
    from airflow.configuration import conf

    for section, key in (("desc", "api_url"), ("api", "base_url")):
        value = (conf.get(section, key, fallback="") or "").strip()
        if value:
            return value.rstrip("/")
    scheme = "https" if (conf.get("api", "ssl_cert", fallback="") or "").strip() else "http"
    return f"{scheme}://127.0.0.1:{conf.getint('api', 'port', fallback=8080)}"


@app.get("/status.json")
def status_json(request: Request, user: GetUserDep) -> Response:
    """Return the status table as JSON (``airflow-desc status --format json``)."""
    from airflow_desc.reports.status import to_json

    selected, dag_ids = _selection(request), _readable_dags(user)
    text = _plain_json(selected, dag_ids)
    if text is None:
        text = to_json(_table(_current(selected, dag_ids)))
    return Response(text, media_type="application/json")


@app.get("/status.csv", response_class=PlainTextResponse)
def status_csv(request: Request, user: GetUserDep) -> Response:
    """Return the status table as CSV."""
    from airflow_desc.reports.status import to_csv

    current = _current(_selection(request), _readable_dags(user))
    return Response(to_csv(_table(current)), media_type="text/csv")


@app.get("/plots/{name}.png")
def process_plot(name: str, request: Request, user: GetUserDep) -> Response:
    """Return the CPU vs wall-clock figure of the process whose "Plot" link this is."""
    from airflow_desc.history.queries import process_names
    from airflow_desc.reports.figures import cpu_vs_wall
    from airflow_desc.reports.status import plot_path
    from airflow_desc.status.current import readable_history

    wanted = f"plots/{name}.png"
    process = next((p for p in process_names(readable_history(_store())) if plot_path(p) == wanted), None)
    if process is None:
        raise HTTPException(status_code=404, detail=f"no process is plotted as {wanted}")
    instances = _instances(_selection(request), _readable_dags(user), process=process)
    return _png(lambda: cpu_vs_wall(instances, process=process))


def _png(make: Callable[[], Figure]) -> Response:
    """Return the figure ``make`` draws as a PNG response."""
    buffer = io.BytesIO()
    with _FIGURES:  # seaborn's style contexts change matplotlib's global rcParams meanwhile
        make().savefig(buffer, format="png", dpi=100)
    return Response(buffer.getvalue(), media_type="image/png")


_USAGE_KEYS = ("workflow", "run", "variant", "process", "variable")


def _instances(
    selected: dict[str, str | None], dag_ids: set[str] | None, *, process: str | None
) -> pd.DataFrame:
    """Return every attempt of the selection (of one process, if given) from the history."""
    from airflow_desc.history import HistoryFilter
    from airflow_desc.history.queries import process_instances
    from airflow_desc.status.current import readable_history

    selection = HistoryFilter(
        workflow=selected["workflow"], run_id=selected["run"], variant=selected["variant"], process=process,
        dag_ids=dag_ids,
    )  # fmt: skip
    _forbid_unreadable(selection, dag_ids)
    try:
        return process_instances(readable_history(_store()), selection)
    except ValueError as exc:
        raise HTTPException(status_code=404, detail=str(exc) if dag_ids is None else "not found") from None


@app.get("/usage", response_class=HTMLResponse)
def usage_page(request: Request, user: GetUserDep) -> HTMLResponse:
    """Render the usage view: one process's figures by stream, the overall figures, the advice table."""
    from airflow_desc.reports.advice import resource_advice
    from airflow_desc.reports.html import render_usage_page
    from airflow_desc.reports.streams import stream_variables

    selected = _selection(request, _USAGE_KEYS)
    instances = _instances(selected, _readable_dags(user), process=None)
    processes = sorted(set(instances["process"].astype(str)))
    if selected["process"] not in processes:
        selected["process"] = selected["variable"] = None
    variables = stream_variables(instances, selected["process"]) if selected["process"] else []
    if selected["variable"] not in variables:
        selected["variable"] = None
    page = render_usage_page(resource_advice(instances), processes=processes, variables=variables,
                             selected=selected)  # fmt: skip
    return HTMLResponse(page)


@app.get("/figures/{name}.png")
def usage_figure(name: str, request: Request, user: GetUserDep) -> Response:
    """Return one figure of the usage view, of the selection (and its chosen process and variable)."""
    from airflow_desc.reports import figures
    from airflow_desc.reports.html import USAGE_FIGURES
    from airflow_desc.reports.streams import failures_by_stream, usage_by_stream

    if name not in USAGE_FIGURES:
        raise HTTPException(
            status_code=404, detail=f"no figure {name!r}; the figures: {', '.join(USAGE_FIGURES)}"
        )
    selected = _selection(request, _USAGE_KEYS)
    process, variable = selected["process"], selected["variable"]
    if name == "usage_by_stream" and process is None:
        raise HTTPException(status_code=400, detail="usage_by_stream needs ?process=<name>")
    instances = _instances(
        selected, _readable_dags(user), process=process if name == "usage_by_stream" else None
    )

    def make() -> Figure:
        if name == "usage_by_stream":
            return usage_by_stream(instances, str(process), variable)
        if name == "failures_by_stream":
            return failures_by_stream(instances, variable)
        if name == "throughput_by_cluster":
            return figures.throughput(instances, by_cluster=True)
        figure: Figure = getattr(figures, name)(instances)
        return figure

    return _png(make)


#: The most instances one drill-down lists.
INSTANCES_SHOWN = 2000


@app.get("/instances", response_class=HTMLResponse)
def instances_page(request: Request, user: GetUserDep) -> HTMLResponse:
    """List the process instances of one count of the status table: a process, in a recorded state."""
    from airflow_desc.history import PROCESS_STATES, HistoryFilter
    from airflow_desc.history.queries import attempt_logs
    from airflow_desc.reports.html import render_instances_page
    from airflow_desc.status.current import readable_history

    selected = _selection(request)
    process = (request.query_params.get("process") or "").strip()
    state = (request.query_params.get("state") or "").strip()
    if not process or state not in PROCESS_STATES:
        raise HTTPException(
            status_code=400, detail=f"give process=<name> and state=<one of {', '.join(PROCESS_STATES)}>"
        )
    dag_ids = _readable_dags(user)
    engine = readable_history(_store())
    chosen = HistoryFilter(workflow=selected["workflow"], variant=selected["variant"], run_id=selected["run"],
                           process=process, state=state, dag_ids=dag_ids)  # fmt: skip
    _forbid_unreadable(chosen, dag_ids)
    try:
        rows = attempt_logs(engine, chosen, limit=INSTANCES_SHOWN + 1)
    except ValueError as exc:
        raise HTTPException(status_code=404, detail=str(exc) if dag_ids is None else "not found") from None
    notes = [
        "The latest attempt of each process instance in this state, as the history records it (instances "
        "of runs in progress not recorded yet are counted on the status page but not listed here)."
    ]
    if len(rows) > INSTANCES_SHOWN:
        rows = rows.iloc[:INSTANCES_SHOWN]
        notes.append(f"The first {INSTANCES_SHOWN:,} are listed: choose a run to see fewer.")
    page = render_instances_page(rows, process=process, state=state, selected=selected, notes=notes)
    return HTMLResponse(page)


@app.get("/log/{attempt_id}", response_class=HTMLResponse)
def log_page(attempt_id: int, user: GetUserDep) -> HTMLResponse:
    """Show one attempt's log tail, as the history keeps it (never read from a cluster)."""
    from airflow_desc.history.queries import attempt_logs
    from airflow_desc.reports.html import render_log_page
    from airflow_desc.status.current import readable_history

    rows = attempt_logs(readable_history(_store()), attempt_id=attempt_id, with_tails=True)
    if rows.empty:
        raise HTTPException(status_code=404, detail=f"no attempt {attempt_id} in the history")
    row = rows.iloc[0].to_dict()
    dag_ids = _readable_dags(user)
    if dag_ids is not None and row["dag_id"] not in dag_ids:
        raise HTTPException(status_code=403, detail="you may not read this DAG")
    return HTMLResponse(render_log_page(row))
