"""One real Airflow at a time on the site (tests/deploy.py): LocalExecutor, or CeleryExecutor.

Tests ask for ``airflow`` (LocalExecutor), ``celery_airflow`` (CeleryExecutor, two workers, two
triggerers), ``airflow_with_users`` (LocalExecutor whose auth manager has users of different
roles, :data:`USERS`, instead of everyone an admin) or ``airflow_with_fab`` (LocalExecutor under the
FAB auth manager, :data:`FAB_USERS`, for permissions per DAG); a session starts each at most once per switch,
and stops the one running before starting another (all use the one metadata DB and the same
api-server port). The workers write
the PostgreSQL history into a schema of the deployment's own (``Deployment.history``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.deploy import Deployment
from tests.integration.site import Site

#: The deployment fixtures, in the order the session starts them: the e2e tests run grouped by the
#: deployment they ask for, so that each kind starts once (a start takes ~30 s).
DEPLOYMENT_FIXTURES = ("airflow", "airflow_with_users", "airflow_with_fab", "celery_airflow", "bps_airflow")


def deployment_rank(item: pytest.Item) -> int:
    used = [
        DEPLOYMENT_FIXTURES.index(f) for f in getattr(item, "fixturenames", ()) if f in DEPLOYMENT_FIXTURES
    ]
    return min(used, default=len(DEPLOYMENT_FIXTURES))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    e2e = [item for item in items if "tests/e2e/" in str(item.fspath)]
    for item in e2e:
        item.add_marker(pytest.mark.e2e)
        item.add_marker(pytest.mark.serial)  # one real Airflow on the one metadata DB
    others = [item for item in items if "tests/e2e/" not in str(item.fspath)]

    def order(item: pytest.Item) -> tuple[int, int]:
        # Last of its deployment's tests: the one that starts a background run, then the one that
        # checks it (no other test runs beside that run). sorted() is stable: file order within a kind.
        late = ("starts_background_run", "checks_background_run")
        marked = [i + 1 for i, name in enumerate(late) if item.get_closest_marker(name)]
        return deployment_rank(item), max(marked, default=0)

    items[:] = others + sorted(e2e, key=order)


@pytest.fixture(scope="session")
def site() -> Site:
    return Site.from_env()


class OneAtATime:
    """The deployment of the session now running; asking for another kind stops it first."""

    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        self.tmp = tmp
        self.current: Deployment | None = None
        self.kind = ""

    def get(self, kind: str, make: Callable[..., Deployment]) -> Deployment:
        if self.current is not None and self.kind == kind:
            return self.current
        self.stop()
        deployment = make(self.tmp.mktemp(kind.lower()))
        self.current, self.kind = deployment, kind
        deployment.start()
        return deployment

    def stop(self) -> None:
        if self.current is not None:
            current, self.current = self.current, None
            current.stop()


@pytest.fixture(scope="session")
def deployments(tmp_path_factory: pytest.TempPathFactory, site: Site) -> Iterator[OneAtATime]:
    one = OneAtATime(tmp_path_factory)
    try:
        yield one
    finally:
        one.stop()


@pytest.fixture
def airflow(deployments: OneAtATime) -> Deployment:
    return deployments.get("LocalExecutor", Deployment.local)


#: DC1 at scale 0.001 (tests/e2e/dags/desc_e2e_dc1.py): the longest e2e run.
DC1_DAG_ID = "DC1-DM12_imsim-dithered_local"


@pytest.fixture
def dc1_run(airflow: Deployment) -> str:
    """The run id of DC1 at scale 0.001 on ``airflow``, triggered by the first test that asks for it.

    Twinkles' survey years ask for it first (``starts_background_run``), so that DC1 runs beside them
    (the two longest e2e runs, ~4-5 min each, overlap); tests/e2e/test_dc1_e2e.py
    (``checks_background_run``) checks it right after. The two are the last tests of their deployment,
    so no other test runs beside DC1. Neither kills task processes or reads the other's runs.
    """
    return airflow.trigger_once(DC1_DAG_ID, {"scale": 0.001})


#: The users of ``airflow_with_users``: name -> (simple auth manager role, password). ``ops`` (an admin)
#: is the client's API connection ``desc_api``; a viewer may read but not clear.
USERS = {"ops": ("admin", "ops-e2e"), "lead": ("user", "lead-e2e"), "viewer": ("viewer", "viewer-e2e")}


@pytest.fixture
def airflow_with_users(deployments: OneAtATime) -> Deployment:
    return deployments.get("LocalExecutor-users", lambda root: Deployment.local(root, users=USERS))


#: The users of ``airflow_with_fab``: name -> (FAB role, password). ``ops`` is FAB's Admin; ``astro``'s
#: role is made empty, for tests/e2e/test_user_views.py to give it one DAG to read.
FAB_USERS = {"ops": ("Admin", "ops-e2e"), "astro": ("desc-live-readers", "astro-e2e")}


@pytest.fixture
def airflow_with_fab(deployments: OneAtATime) -> Deployment:
    return deployments.get(
        "LocalExecutor-fab", lambda root: Deployment.local(root, users=FAB_USERS, auth="fab")
    )


@pytest.fixture
def celery_airflow(deployments: OneAtATime) -> Deployment:
    return deployments.get("CeleryExecutor", Deployment.celery)
