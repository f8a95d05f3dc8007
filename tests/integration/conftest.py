from __future__ import annotations

import fcntl
import filecmp
import pathlib
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from airflow_desc.hooks.slurm import SlurmHook
from airflow_desc.slurm import scancel_command
from tests.integration.airflow_env import AirflowEnv
from tests.integration.site import Site


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def site() -> Site:
    return Site.from_env()


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory: pytest.TempPathFactory, site: Site) -> AirflowEnv:
    return AirflowEnv.create(tmp_path_factory.mktemp("airflow-home"))


DM_STANDINS = pathlib.Path(__file__).resolve().parents[2] / "docker" / "site" / "dm-standins"


@pytest.fixture(scope="session")
def dm_stack(site: Site) -> pathlib.Path:
    """The DM stand-ins on the site's PATH (docker/site/up installs them; installed here if missing or old).

    The site runs on this machine, so the stand-ins' install script runs here, under a lock (tests in
    parallel, other sessions); a running site needs no restart. Returns their data set's directory.
    """
    prefix = pathlib.Path(site.dir) / "dm-stack"
    with open("/tmp/desc-dm-standins.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        installed = prefix / "lib" / "dmstandin.py"
        on_path = site.run("perlmutter", "command -v processEimage.py", check=False).returncode == 0
        if not (on_path and installed.is_file() and filecmp.cmp(installed, DM_STANDINS / "dmstandin.py")):
            subprocess.run([str(DM_STANDINS / "install"), "--prefix", str(prefix)], check=True, timeout=120)
    return prefix


PAYLOAD_IMAGE = pathlib.Path(__file__).resolve().parents[2] / "docker" / "site" / "payload-image"


@pytest.fixture(scope="session")
def payload_image(site: Site) -> str:
    """The site's payload image in the login user's podman (docker/site/up builds it; here if missing or old).

    The build is quick when the image is up to date; under a lock, as the tests' processes share it.
    Returns the image's name.
    """
    with open("/tmp/desc-payload-image.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run([str(PAYLOAD_IMAGE / "build"), "--user", site.user], check=True, timeout=300)
    return "localhost/desc-payload:test"


@pytest.fixture
def in_process_airflow_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A throwaway AIRFLOW_HOME for tests that use hooks in-process (connections come from env vars)."""
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow-home")))


@pytest.fixture
def token() -> str:
    """A short unique string for job names, so that parallel tests never touch each other's jobs."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def hook(site: Site) -> Iterator[SlurmHook]:
    """A perlmutter hook whose first command opens a new connection; closed at the end."""
    hook = SlurmHook("perlmutter_ssh", cluster="perlmutter")
    hook.close()
    yield hook
    hook.close()


@pytest.fixture
def jobs(hook: SlurmHook) -> Iterator[list[str]]:
    """Ids of the jobs a test submits; whatever is left is cancelled at the end (a no-op for ended jobs)."""
    submitted: list[str] = []
    yield submitted
    if submitted:
        hook.run(scancel_command(submitted), check=False)
