"""``[desc]`` options and history connections read without importing Airflow, as Airflow reads them."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from airflow_desc.history.desc_config import connection_uri_from_environment, desc_option

# A fresh interpreter, so that Airflow is not imported already (it is in this one, by other tests).
_COMPARE = """
import json, sys
from airflow_desc.history.desc_config import desc_option
ours = {o: desc_option(o) for o in sys.argv[1:]}
assert "airflow" not in sys.modules, "desc_option imported Airflow"
from airflow.sdk.configuration import conf
theirs = {o: conf.get("desc", o, fallback=None) for o in sys.argv[1:]}
print(json.dumps([ours, theirs]))
"""


def _fresh(env: dict[str, str], *options: str) -> list[dict[str, str | None]]:
    import json

    root = pathlib.Path(__file__).resolve().parents[3]
    full = {**os.environ, **env, "PYTHONPATH": str(root)}
    for name in [k for k in full if k.startswith("AIRFLOW__DESC__")]:
        if name not in env:
            del full[name]
    out = subprocess.run(
        [sys.executable, "-c", _COMPARE, *options], env=full, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.splitlines()[-1])


def test_options_from_the_environment_and_airflow_cfg_agree_with_airflow(tmp_path: pathlib.Path) -> None:
    (tmp_path / "airflow.cfg").write_text(
        textwrap.dedent(
            """\
            [core]
            load_examples = False
            [desc]
            spool_dir = $DESC_TEST_BASE/spool
            history_statement_timeout = 7
            clusters_file = /data/100%%/clusters.yaml
            history_conn_id = from_file
            """
        )
    )
    env = {"AIRFLOW_HOME": str(tmp_path), "DESC_TEST_BASE": "/data"}
    env["AIRFLOW__DESC__HISTORY_CONN_ID"] = "from_env"
    options = (
        "spool_dir",
        "history_statement_timeout",
        "history_conn_id",
        "clusters_file",
        "history_reply_timeout",
    )
    ours, theirs = _fresh(env, *options)
    assert ours == theirs == {
        "spool_dir": "/data/spool", "history_statement_timeout": "7", "history_conn_id": "from_env",
        "clusters_file": "/data/100%/clusters.yaml", "history_reply_timeout": None,
    }  # fmt: skip


def test_no_configuration_file_means_unset(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONFIG", str(tmp_path / "nowhere.cfg"))
    monkeypatch.delenv("AIRFLOW__DESC__SPOOL_DIR", raising=False)
    monkeypatch.delitem(sys.modules, "airflow.sdk.configuration", raising=False)  # as if not imported
    assert desc_option("spool_dir") is None


def test_a_connection_uri_in_the_environment_needs_no_airflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__SECRETS__BACKEND", "")
    monkeypatch.setenv("AIRFLOW_CONN_DESC_HISTORY", "postgres://u:p@h:5432/db?connect_timeout=5")
    assert connection_uri_from_environment("desc_history") == "postgres://u:p@h:5432/db?connect_timeout=5"
    monkeypatch.setenv("AIRFLOW_CONN_DESC_HISTORY", '{"conn_type": "postgres", "host": "h"}')
    assert connection_uri_from_environment("desc_history") is None  # JSON: Airflow's to read
    monkeypatch.setenv("AIRFLOW_CONN_DESC_HISTORY", "postgres://u:p@h:5432/db")
    monkeypatch.setenv("AIRFLOW__SECRETS__BACKEND", "some.Backend")
    assert connection_uri_from_environment("desc_history") is None  # a backend is asked first
