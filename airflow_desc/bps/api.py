"""Airflow's REST API as the ctrl_bps plugin reaches it: the standard library only, no Airflow, no LSST.

Where and as whom (:class:`ApiSettings`), from the environment (``bps report``, ``cancel``,
``restart`` and ``status`` get no BPS config from ctrl_bps) or, for ``bps submit``, the BPS config
first:

===============================  =====================  ==============================================
environment                      BPS config (submit)    meaning
===============================  =====================  ==============================================
``AIRFLOW_DESC_API_URL``         ``airflowApiUrl``      the api-server (default ``http://127.0.0.1:8080``)
``AIRFLOW_DESC_API_USER``        ``airflowApiUser``     a user, logged in at ``/auth/token`` ...
``AIRFLOW_DESC_API_PASSWORD``    ``airflowApiPassword`` ... with this password
``AIRFLOW_DESC_API_TOKEN``       ``airflowApiToken``    or a ready token (a JWT Airflow issued)
===============================  =====================  ==============================================

With neither a token nor a user no ``Authorization`` is sent (an api-server whose simple auth
manager makes everyone an admin). Every failure is a :class:`~airflow_desc.exceptions.BpsApiError`
saying what was asked, what Airflow answered and what to do.
"""

from __future__ import annotations

import dataclasses
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from airflow_desc.exceptions import BpsApiError

__all__ = ["ENV", "AirflowRestApi", "ApiSettings"]

#: Each setting's environment variable.
ENV = {
    "url": "AIRFLOW_DESC_API_URL",
    "user": "AIRFLOW_DESC_API_USER",
    "password": "AIRFLOW_DESC_API_PASSWORD",
    "token": "AIRFLOW_DESC_API_TOKEN",
}
#: Each setting's BPS config key (read by ``bps submit`` only).
CONFIG_KEYS = {"url": "airflowApiUrl", "user": "airflowApiUser", "password": "airflowApiPassword",
               "token": "airflowApiToken"}  # fmt: skip
DEFAULT_URL = "http://127.0.0.1:8080"
#: Rows per page of a list call (Airflow's default ``[api] maximum_page_limit``).
PAGE = 100


@dataclasses.dataclass(frozen=True)
class ApiSettings:
    """Where the api-server is and who calls it.

    :param url: the api-server's base URL.
    :param user: a user name, exchanged with ``password`` for a token at ``/auth/token``.
    :param password: that user's password.
    :param token: a ready token (wins over the user).
    """

    url: str = DEFAULT_URL
    user: str | None = None
    password: str | None = None
    token: str | None = None

    @classmethod
    def load(cls, config_value: Callable[[str], Any] | None = None) -> ApiSettings:
        """Read the settings: the BPS config's (``config_value(key)``) first, then the environment."""
        found: dict[str, str] = {}
        for name, env in ENV.items():
            value = config_value(CONFIG_KEYS[name]) if config_value is not None else None
            value = value or os.environ.get(env)
            if value:
                found[name] = str(value)
        settings = cls(**found)
        if settings.user and not settings.password and not settings.token:
            raise BpsApiError(
                f"the Airflow user {settings.user!r} has no password: set {ENV['password']} "
                f"(or {ENV['token']} to a token)"
            )
        return settings


class AirflowRestApi:
    """Calls to ``<url>/api/v2`` (and the status page's ``/desc``) as one user.

    :param settings: where and as whom.
    :param timeout: seconds for each call.
    """

    def __init__(self, settings: ApiSettings, timeout: float = 60.0) -> None:
        self.settings = settings
        self.base = settings.url.rstrip("/")
        self.timeout = timeout
        self._token = settings.token

    def _bearer(self) -> dict[str, str]:
        if self._token is None and self.settings.user:
            answer = self._send(
                "POST", "/auth/token", {"username": self.settings.user, "password": self.settings.password},
                {}, what=f"log in as {self.settings.user!r}",
            )  # fmt: skip
            self._token = str(answer["access_token"])
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        query: Mapping[str, Any] | None = None,
        what: str,
    ) -> Any:
        """Send one request to ``path`` (from the server's root, e.g. ``/api/v2/dags/x``); return its JSON.

        :param what: what is asked, for the error message (``trigger DAG 'x'``).
        :raises BpsApiError: the answer was not a success, or none came.
        """
        if query:
            path += "?" + urllib.parse.urlencode(
                {k: v for k, v in query.items() if v is not None}, doseq=True
            )
        return self._send(method, path, body, self._bearer(), what=what)

    def _send(
        self, method: str, path: str, body: Mapping[str, Any] | None, headers: Mapping[str, str], *, what: str
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + path, data=data, method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json", **headers},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                text = answer.read()
        except urllib.error.HTTPError as exc:
            raise BpsApiError(self._refused(what, exc), status=exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BpsApiError(
                f"{what}: the Airflow api-server at {self.base} did not answer ({reason}); "
                f"set {ENV['url']} to its URL, or start it"
            ) from None
        return json.loads(text) if text.strip() else {}

    def _refused(self, what: str, exc: urllib.error.HTTPError) -> str:
        try:
            detail: Any = json.loads(exc.read() or b"{}").get("detail")
        except (ValueError, AttributeError):
            detail = None
        said = f"{exc.code} {exc.reason}" + (f": {detail}" if detail else "")
        hint = {
            401: f"log in: set {ENV['user']} and {ENV['password']}, or {ENV['token']} (a fresh one)",
            403: "the auth manager does not let this user do it; ask for the DAG's edit permission",
        }.get(exc.code, "")
        return f"{what}: Airflow answered {said}" + (f"; {hint}" if hint else "")

    def pages(
        self, path: str, key: str, *, query: Mapping[str, Any] | None = None, what: str
    ) -> Iterator[Any]:
        """Yield every item of a list endpoint's ``key``, page by page (``limit`` / ``offset``)."""
        offset = 0
        while True:
            answer = self.call(
                "GET", path, query={**(query or {}), "limit": PAGE, "offset": offset}, what=what
            )
            items = list(answer.get(key) or [])
            yield from items
            offset += len(items)
            if not items or offset >= int(answer.get("total_entries") or 0):
                return
