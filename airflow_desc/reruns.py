"""Bulk reruns: clear, through Airflow's REST API, the task instances behind the selected process instances.

``airflow-desc rerun --reason TEXT [filters]`` is what an operator runs after fixing a cause:
"rerun every processEimage that ran out of memory in run X", or "rerun these processEimage that
succeeded: their PSF model was wrong". The filters are those of ``airflow-desc history`` and select
the latest attempt of each process instance, whatever its state; each selected instance belongs to
a task instance (for a bundled stream: its bundle's), and those task instances are cleared with
Airflow's public API (``POST /api/v2/dags/{dag_id}/clearTaskInstances``, what the UI's Clear calls),
with their downstream tasks by default, as one authenticated user: the auth manager decides who
may clear which DAG. The status page's **Rerun** does the same as the logged-in user.

Before clearing, one :class:`~airflow_desc.history.records.RerunSelection` per selected task
instance goes to the history: which of its process instances were selected. A cleared bundle's next
try reruns exactly those, with what waits for them inside the bundle, and not its other successes
(``SlurmBundleOperator``); a cleared task instance that is one process instance reruns whole.

Who cleared and why is not the caller's word: the clear's ``note`` carries the reason (Airflow
shows it on the task instance), and the plugin's middleware on the api-server
(:mod:`airflow_desc.plugins.clears`) records every clear made through the API (ours, the UI's,
anyone's REST call) with the user Airflow's audit log names and that note, as
:class:`~airflow_desc.history.records.RerunRequest` rows; the history writer copies them into the
``triggered_by`` and ``rerun_reason`` of the attempts that follow.

The credentials of the CLI: the Airflow connection ``[desc] api_conn_id`` (default ``desc_api``):
host (a URL, or a host name with ``schema`` http / https) and port of the api-server, and either
login and password (exchanged at ``/auth/token``, as the simple and FAB auth managers take them) or
a ready token in the extra (``{"token": "..."}``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_desc.exceptions import DescError

if TYPE_CHECKING:
    import pandas as pd

    from airflow_desc.history import HistoryStore
    from airflow_desc.history.records import RerunRequest

__all__ = [
    "DEFAULT_API_CONN_ID",
    "AirflowApi",
    "RerunPlan",
    "RerunRefused",
    "clear_through_api",
    "plan_reruns",
    "requests_from_clear",
    "rerun_targets",
]

#: The Airflow connection of the CLI's API credentials when ``[desc] api_conn_id`` is not set.
DEFAULT_API_CONN_ID = "desc_api"
#: Airflow keeps a task instance's note up to this many characters; the reason travels as the note.
MAX_REASON = 1000
#: What the rerun_reason of a task instance cleared as downstream of the selected ones says.
DOWNSTREAM = " (downstream of the rerun)"


class RerunRefused(DescError):
    """Airflow's API refused a clear, or could not be reached; ``status`` is the HTTP status (0: none)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class RerunPlan:
    """What to clear in one DAG run.

    :param dag_id: the DAG.
    :param run_id: the run.
    :param targets: ``(task_id, map_index)`` of the task instances the query selected.
    :param selected: by target, the ids (``<stream path>:<process>``) of its selected process instances.
    :param instances: how many selected process instances they hold.
    """

    dag_id: str
    run_id: str
    targets: list[tuple[str, int]] = field(default_factory=list)
    selected: dict[tuple[str, int], tuple[str, ...]] = field(default_factory=dict)
    instances: int = 0

    def task_ids(self) -> list[str | list[str | int]]:
        """Return the ``task_ids`` of Airflow's clear: a task id, or ``[task_id, map_index]`` if mapped."""
        return [task_id if index < 0 else [task_id, index] for task_id, index in self.targets]


def rerun_targets(instances: pd.DataFrame) -> pd.DataFrame:
    """Return the task instances behind selected process instances, with how many each holds.

    :param instances: latest attempts (``history.queries.process_instances(latest_only=True)``).
    :return: columns ``dag_id, run_id, task_id, map_index, instances, processes`` (the process
        names, comma-separated), ``ids`` (the instance ids, ``<stream path>:<process>``), sorted.
    """
    import pandas as pd

    columns = ["dag_id", "run_id", "task_id", "map_index", "instances", "processes", "ids"]
    if instances.empty:
        return pd.DataFrame(columns=columns)
    frame = instances.assign(iid=instances["stream"].astype(str) + ":" + instances["process"].astype(str))
    grouped = frame.groupby(["dag_id", "run_id", "task_id", "map_index"], sort=True)
    out = grouped.agg(
        instances=("process", "size"),
        processes=("process", lambda p: ",".join(sorted(set(map(str, p))))),
        ids=("iid", lambda i: tuple(sorted(set(i)))),
    )
    return out.reset_index()[columns]


def plan_reruns(targets: pd.DataFrame) -> list[RerunPlan]:
    """Group the task instances to clear by DAG run.

    :param targets: :func:`rerun_targets`.
    """
    plans: dict[tuple[str, str], RerunPlan] = {}
    for row in targets.itertuples(index=False):
        plan = plans.setdefault(
            (str(row.dag_id), str(row.run_id)), RerunPlan(str(row.dag_id), str(row.run_id))
        )
        target = (str(row.task_id), int(row.map_index))
        plan.targets.append(target)
        plan.selected[target] = tuple(row.ids)
        plan.instances += int(row.instances)
    return list(plans.values())


# --- Airflow's REST API ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AirflowApi:
    """Airflow's public REST API (``/api/v2``) as one authenticated user.

    :param base_url: the api-server, e.g. ``http://airflow.example.org:8080``.
    :param token: a JWT Airflow issued to the user.
    :param timeout: seconds for each call.
    """

    base_url: str
    token: str
    timeout: float = 120.0

    @classmethod
    def login(cls, base_url: str, username: str, password: str, *, timeout: float = 60.0) -> AirflowApi:
        """Exchange a user name and password for a token at the api-server's ``/auth/token``."""
        import httpx

        base = base_url.rstrip("/")
        try:
            answer = httpx.post(
                f"{base}/auth/token", json={"username": username, "password": password}, timeout=timeout
            )
        except httpx.HTTPError as exc:
            raise RerunRefused(f"cannot reach Airflow's API at {base}: {exc}") from exc
        if answer.status_code not in (200, 201):
            raise RerunRefused(
                f"Airflow's API at {base} refused the login of {username!r} ({answer.status_code}: "
                f"{_detail(answer)}); check the API connection's login and password",
                answer.status_code,
            )
        return cls(base, str(answer.json()["access_token"]), timeout)

    @classmethod
    def from_connection(cls, conn_id: str | None = None) -> AirflowApi:
        """Log in with the Airflow connection ``conn_id`` (default: :func:`api_conn_id`)."""
        conn_id = conn_id or api_conn_id()
        try:
            from airflow.sdk import BaseHook

            conn = BaseHook.get_connection(conn_id)
        except Exception as exc:  # AirflowNotFoundException, an unreachable secrets backend, ...
            raise RerunRefused(
                f"cannot resolve the API connection {conn_id!r}: {exc}. Define it with the api-server's "
                f"URL and your Airflow user, e.g. AIRFLOW_CONN_{conn_id.upper()}="
                '\'{"conn_type": "http", "host": "https://airflow.example.org", "login": "me", '
                '"password": "..."}\''
            ) from exc
        host = str(conn.host or "")
        if not host:
            raise RerunRefused(f"the API connection {conn_id!r} has no host: set the api-server's URL")
        base = host if "://" in host else f"{conn.schema or 'http'}://{host}"
        if conn.port:
            base = f"{base.rstrip('/')}:{conn.port}"
        extra = conn.extra_dejson or {}
        if extra.get("token"):
            return cls(base.rstrip("/"), str(extra["token"]))
        if not conn.login:
            raise RerunRefused(
                f"the API connection {conn_id!r} has neither login and password nor a token in its extra"
            )
        return cls.login(base, str(conn.login), str(conn.password or ""))

    def clear(
        self,
        dag_id: str,
        run_id: str,
        task_ids: Sequence[str | Sequence[str | int]],
        *,
        downstream: bool,
        dry_run: bool,
        note: str | None = None,
    ) -> list[dict[str, Any]]:
        """Clear task instances of one run (``clearTaskInstances``); return those cleared (or that would be).

        Every state is cleared (``only_failed`` false: a success that only appeared to be one too).
        """
        body: dict[str, Any] = {
            "dry_run": dry_run,
            "dag_run_id": run_id,
            "task_ids": [t if isinstance(t, str) else list(t) for t in task_ids],
            "include_downstream": downstream,
            "only_failed": False,
            "reset_dag_runs": True,
        }
        if note is not None and not dry_run:
            body["note"] = note
        answer = self.post(f"/api/v2/dags/{_quoted(dag_id)}/clearTaskInstances", body, what=f"DAG {dag_id!r}")
        return list(answer.get("task_instances") or [])

    def post(self, path: str, body: Mapping[str, Any], *, what: str) -> dict[str, Any]:
        """POST ``body`` to ``path`` as the user; raise :class:`RerunRefused` naming ``what`` on refusal."""
        import httpx

        try:
            answer = httpx.post(
                self.base_url + path, json=dict(body), timeout=self.timeout,
                headers={"Authorization": f"Bearer {self.token}"},
            )  # fmt: skip
        except httpx.HTTPError as exc:
            raise RerunRefused(f"cannot reach Airflow's API at {self.base_url}: {exc}") from exc
        if answer.status_code == 403:
            raise RerunRefused(
                f"Airflow refused to clear task instances of {what}: your user may not (403 from the auth "
                "manager); ask an administrator for the permission to clear its task instances",
                403,
            )
        if answer.status_code >= 400:
            raise RerunRefused(
                f"Airflow's API refused the clear of {what} ({answer.status_code}: {_detail(answer)})",
                answer.status_code,
            )
        return dict(answer.json())


def api_conn_id() -> str:
    """Return the connection of the CLI's API credentials: ``[desc] api_conn_id``, else ``desc_api``."""
    try:
        from airflow.configuration import conf
    except ImportError:
        return DEFAULT_API_CONN_ID
    return (conf.get("desc", "api_conn_id", fallback="") or "").strip() or DEFAULT_API_CONN_ID


def _quoted(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def _detail(answer: Any) -> str:
    try:
        detail = answer.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail if detail is not None else answer.text)[:500]


def check_reason(reason: str) -> str:
    """Return the reason stripped; refuse an empty one, or one longer than Airflow keeps in a note."""
    reason = reason.strip()
    if not reason:
        raise ValueError("the reason is empty: say why these instances run again (it is kept in the history)")
    if len(reason) > MAX_REASON:
        raise ValueError(f"the reason has {len(reason)} characters: Airflow keeps at most {MAX_REASON}")
    return reason


def clear_through_api(
    api: AirflowApi,
    plans: Sequence[RerunPlan],
    *,
    store: HistoryStore,
    reason: str,
    downstream: bool = True,
    dry_run: bool = False,
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Clear each plan's task instances through Airflow's API, as the API's user.

    First a dry run of each plan (Airflow says what it would clear, and refuses a user who may
    not), then, unless ``dry_run``: the selections go to the history, and the clear, with the
    reason as its note. A clear that fails takes its selections back.

    :param api: the API as the user.
    :param plans: :func:`plan_reruns`.
    :param store: the history the selections go to (the one the operators read).
    :param reason: why (the clear's note: the middleware records it with the user).
    :param downstream: clear what is downstream of the targets too.
    :param dry_run: only return what would be cleared.
    :return: (dag_id, run_id) -> the task instances (the API's JSON) cleared, or that would be.
    """
    from airflow_desc.history.records import RerunSelection

    would = {
        (p.dag_id, p.run_id): api.clear(p.dag_id, p.run_id, p.task_ids(), downstream=downstream, dry_run=True)
        for p in plans
    }
    if dry_run:
        return would
    done: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for plan in plans:
        tries = {(str(t["task_id"]), int(t.get("map_index", -1))): int(t.get("try_number") or 0)
                 for t in would[(plan.dag_id, plan.run_id)]}  # fmt: skip
        now = datetime.now(timezone.utc)
        ids = store.select_reruns([
            RerunSelection(plan.dag_id, plan.run_id, task_id, index, tries.get((task_id, index), 0),
                           plan.selected.get((task_id, index), ()), now)
            for task_id, index in plan.targets
        ])  # fmt: skip
        try:
            done[(plan.dag_id, plan.run_id)] = api.clear(
                plan.dag_id, plan.run_id, plan.task_ids(), downstream=downstream, dry_run=False, note=reason
            )
        except BaseException:
            store.drop_selections(ids)
            raise
    return done


# --- what the middleware records ------------------------------------------------------------------------


def requests_from_clear(
    dag_id: str, body: Mapping[str, Any], cleared: Sequence[Mapping[str, Any]], *, who: str, at: datetime
) -> list[RerunRequest]:
    """Return the rerun requests of one clear made through the API: who, and why (its note).

    :param dag_id: the DAG (the clear's path).
    :param body: the clear's request body (``task_ids``, ``note`` ...).
    :param cleared: the task instances the API answered it cleared (``task_instances``).
    :param who: the user Airflow's audit log names.
    :param at: when.
    """
    from airflow_desc.history.records import RerunRequest

    note = str(body.get("note") or "").strip()
    chosen_ids = body.get("task_ids")
    plain = {t for t in chosen_ids or () if isinstance(t, str)}
    mapped = {(str(t[0]), int(t[1])) for t in chosen_ids or () if isinstance(t, list | tuple) and len(t) == 2}
    requests = []
    for ti in cleared:
        task_id, index = str(ti.get("task_id")), int(ti.get("map_index", -1))
        chosen = chosen_ids is None or task_id in plain or (task_id, index) in mapped
        why = note if chosen or not note else note + DOWNSTREAM
        requests.append(
            RerunRequest(
                dag_id,
                str(ti.get("dag_run_id") or ti.get("run_id")),
                task_id,
                index,
                int(ti.get("try_number") or 0),
                who,
                why,
                at,
            )  # fmt: skip
        )
    return requests


def same_clear(logged_extra: str | None, body: Mapping[str, Any]) -> bool:
    """Whether an audit-log row's ``extra`` is the one Airflow wrote for a clear of this body."""
    try:
        extra = json.loads(logged_extra or "{}")
    except ValueError:
        return False
    return isinstance(extra, dict) and all(
        extra.get(key) == body.get(key) for key in ("task_ids", "note", "include_downstream")
    )
