"""What a lost worker spooled is written by the next task on another host: ``[desc] spool_dir`` shared.

Two processes with their own ``AIRFLOW_HOME`` stand for two hosts, each recording as the operators
do (``default_recorder()``, configured by ``[desc] history_conn_id`` and ``[desc] spool_dir``).
Host A cannot reach the history (its ``desc_history`` connection names a closed port, as when its
network is cut) and spools its record, then is gone; host B writes the site's PostgreSQL history
(a schema of this test's own) and, first, what waits in the shared spool: host A's record too.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator

import pytest

from airflow_desc.history import ProcessRecord
from tests.deploy import HistorySchema
from tests.integration.site import Site
from tests.unit.history.test_store import rec

pytestmark = pytest.mark.integration

RECORD = """
import json, sys
from airflow_desc.history import ProcessRecord, default_recorder
default_recorder().record([ProcessRecord.from_json(json.loads(sys.argv[1]))])
"""


@pytest.fixture
def schema(site: Site) -> Iterator[HistorySchema]:
    s = HistorySchema.fresh("spool")
    yield s
    s.drop()


def record_on(host: pathlib.Path, spool: pathlib.Path, conn_uri: str, record: ProcessRecord) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DESC_HISTORY", "DESC_SPOOL_DIR"))}
    env.update(
        AIRFLOW_HOME=str(host),
        AIRFLOW_CONN_DESC_HISTORY=conn_uri,
        AIRFLOW__DESC__HISTORY_CONN_ID="desc_history",
        AIRFLOW__DESC__SPOOL_DIR=str(spool),
    )
    proc = subprocess.run(
        [sys.executable, "-c", RECORD, json.dumps(record.to_json())],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_a_record_spooled_on_host_a_is_flushed_by_host_b(
    tmp_path: pathlib.Path, schema: HistorySchema
) -> None:
    spool = tmp_path / "shared-volume" / "desc-spool"
    cut_off = "postgresql://desc:desc@127.0.0.1:1/desc_history"
    a, b = rec("visit=1", run_id="shared-spool"), rec("visit=2", run_id="shared-spool")

    record_on(tmp_path / "host-a", spool, cut_off, a)
    assert [json.loads(x)["stream"] for x in (spool / "history-spool.jsonl").read_text().splitlines()] == [
        "visit=1"
    ]
    assert not (tmp_path / "host-a" / "desc" / "history-spool.jsonl").exists()  # not on host A's disk

    record_on(tmp_path / "host-b", spool, schema.conn_uri, b)
    rows = schema.sql(
        "SELECT s.path, p.try_number FROM process_instances p JOIN streams s ON s.id = p.stream_ref"
    )
    assert sorted(rows) == [("visit=1", 1), ("visit=2", 1)]
    assert (spool / "history-spool.jsonl").read_text().strip() == ""
