"""`airflow-desc status | report | history` on an embedded SQLite history (no services)."""

from __future__ import annotations

import argparse
import json
import pathlib

import pytest

from airflow_desc.cli import main
from airflow_desc.history import ProcessRecord, open_history


@pytest.fixture
def db(tmp_path: pathlib.Path) -> str:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    records = [
        ProcessRecord(
            workflow="DC1-DM12",
            task="processSensor",
            version="1.0",
            process="processEimage",
            state="success" if i < 4 else "terminated",
            dag_id="DC1",
            run_id="r1",
            task_id="bundle",
            map_index=0,
            stream=f"visit=2201/sensor=S{i}",
            elapsed_s=10 + i,
            total_cpu_s=9 + i,
            max_rss_bytes=2**30,
            req_mem_bytes=2 * 2**30,
            req_cpus=1,
            req_walltime_s=600,
            cluster="perlmutter",
            reason="out-of-memory" if i == 4 else "success",
            log_path=f"/home/desc/airflow-desc/DC1/r1/bundle.0/logs/S{i}.log",
            log_tail=f"sensor S{i} done\n" if i != 3 else None,
        )  # fmt: skip
        for i in range(5)
    ]
    open_history(url).record(records)
    return url


def test_status_prints_the_dc1_table(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--db", db, "--no-live"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header[:4] == ["Task", "Version", "Process", "Type"]
    assert header[-2:] == ["Total", "Links"]
    row = next(line for line in out.splitlines() if "processEimage" in line).split()
    assert row[:4] == ["processSensor", "1.0", "processEimage", "Batch"]
    assert row[-8:-2] == [
        "4",
        "0",
        "1",
        "0",
        "0",
        "0",
    ]  # success failed terminated cancelling cancelled skipped


def test_status_json_and_csv(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--db", db, "--format", "json", "--no-live"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["Process"] == "processEimage"
    assert rows[0]["Terminated"] == 1
    assert main(["status", "--db", db, "--format", "csv", "--no-live"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("Task,Version,Process,Type,Waiting")


def test_history_filters_and_names_valid_states(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "--db", db, "--reason", "out-of-memory", "--format", "json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["stream"] == "visit=2201/sensor=S4"
    assert main(["history", "--db", db, "--stream", "visit=2201/*", "--format", "csv"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 6  # header + 5 rows
    assert main(["history", "--db", db, "--stream", "visit=9999/*", "--format", "csv"]) == 0
    assert len(capsys.readouterr().out.splitlines()) <= 1
    assert main(["history", "--db", db, "--state", "bogus"]) == 2
    err = capsys.readouterr().err
    assert "unknown state 'bogus'" in err
    assert "terminated" in err


def test_report_writes_html_with_plot_links(db: str, tmp_path: pathlib.Path) -> None:
    out = tmp_path / "report"
    assert main(["report", "--db", db, "--out", str(out), "--no-live"]) == 0
    html = (out / "index.html").read_text()
    assert "processEimage" in html
    assert (out / "plots").is_dir()
    assert any((out / "plots").iterdir())


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["status", "--help"], ["report", "--help"], ["history", "--help"],
                 ["clusters", "check", "--help"], ["pools", "sync", "--help"],
                 ["rerun", "--help"], ["logs", "--help"]):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0
        assert "usage: airflow-desc" in capsys.readouterr().out


def test_the_commands_are_also_airflow_desc_in_the_airflow_cli(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from airflow.cli.cli_parser import get_parser

    parser = get_parser()  # finds `desc` through the provider's "cli" entry (get_provider_info)
    args = parser.parse_args(["desc", "status", "--db", db, "--format", "json", "--no-live"])
    args.func(args)
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["Process"] == "processEimage"
    assert rows[0]["Success"] == 4
    args = parser.parse_args(["desc", "history", "--db", db, "--reason", "out-of-memory", "--format", "csv"])
    args.func(args)
    assert "visit=2201/sensor=S4" in capsys.readouterr().out
    args = parser.parse_args(["desc", "history", "--db", db, "--state", "bogus"])
    with pytest.raises(SystemExit) as exit_:
        args.func(args)  # Airflow ignores return values: a failed command must exit non-zero
    assert exit_.value.code == 2
    assert "unknown state 'bogus'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["desc", "status", "--help"])
    assert "--no-live" in capsys.readouterr().out


def test_a_database_without_history_says_so(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    assert main(["history", "--db", empty]) == 2
    assert "holds no airflow-desc history" in capsys.readouterr().err
    assert main(["status", "--db", empty, "--no-live"]) == 2
    assert "Check --db" in capsys.readouterr().err


def test_the_selection_flags_make_one_history_filter() -> None:
    from datetime import datetime

    from airflow_desc.cli import build_parser
    from airflow_desc.cli.selection import selection_of as _selection
    from airflow_desc.history import HistoryFilter

    parser = build_parser()
    listing = parser.parse_args([
        "history", "--workflow", "DC1-DM12", "--run", "r1", "--process", "processEimage", "--stream",
        "visit=2201/*", "--state", "terminated", "--reason", "out-of-memory", "--cluster", "perlmutter",
        "--node", "nid001", "--since", "2018-01-08", "--until", "2018-01-09T12:00",
    ])  # fmt: skip
    assert _selection(listing) == HistoryFilter(
        workflow="DC1-DM12", run_id="r1", process="processEimage", stream_glob="visit=2201/*",
        state="terminated", reason="out-of-memory", cluster="perlmutter", node="nid001",
        since=datetime(2018, 1, 8), until=datetime(2018, 1, 9, 12),
    )  # fmt: skip
    rerun = parser.parse_args(["rerun", "--reason", "fixed", "--reason-class", "time-limit", "--run", "r1"])
    assert _selection(rerun) == HistoryFilter(run_id="r1", reason="time-limit")
    status = parser.parse_args(["status", "--workflow", "DC1-DM12", "--variant", "", "--no-live"])
    assert _selection(status) == HistoryFilter(workflow="DC1-DM12", variant="")
    # Every command selects by the workflow's version and variant (versions side by side).
    for command in (["history"], ["status"], ["report", "--out", "x"], ["rerun", "--reason", "r"]):
        args = parser.parse_args([*command, "--version", "1.17", "--variant", "phosim"])
        assert _selection(args) == HistoryFilter(version="1.17", variant="phosim"), command


def test_status_json_stays_json(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty selection still prints a table a program can read; --attempts makes one document."""
    assert main(["status", "--db", db, "--since", "2100-01-01", "--format", "json",
                 "--no-live"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    [totals] = json.loads(captured.out)
    assert totals["Type"] == "Totals"
    assert totals["Total"] == 0
    assert "no process instance" in captured.err
    assert main(["status", "--db", db, "--format", "json", "--attempts", "--no-live"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert both["status"][0]["Process"] == "processEimage"
    assert both["attempts"][0]["Attempts"] == 5
    assert main(["status", "--db", db, "--since", "2100-01-01", "--no-live"]) == 0
    assert capsys.readouterr().out == ""


def test_logs_prints_the_kept_tails_of_the_selected_instances(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["logs", "processEimage", "--stream", "*S4", "--db", db]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "== processEimage visit=2201/sensor=S4 | DC1 r1 | try 1 | terminated (out-of-memory) | "
        "perlmutter:/home/desc/airflow-desc/DC1/r1/bundle.0/logs/S4.log",
        "sensor S4 done",
    ]
    assert main(["logs", "processEimage", "--stream", "*S3", "--try", "1", "--run", "r1", "--db", db]) == 0
    assert "(no log tail kept" in capsys.readouterr().out
    assert main(["logs", "processEimage", "--try", "2", "--db", db]) == 1
    assert "no try 2 of processEimage instance matches" in capsys.readouterr().err
    assert main(["logs", "nope", "--db", db]) == 2
    assert "unknown process 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "--no-live"],
        ["status", "--no-live", "--format", "json"],
        ["history", "--latest"],
        ["report", "--no-live", "--out", "{tmp}/report"],
    ],
)
@pytest.mark.parametrize("named_by", ["--db", "connection"])
def test_history_only_commands_do_not_import_airflow(
    db: str, tmp_path: pathlib.Path, argv: list[str], named_by: str
) -> None:
    """With the history named by --db, or by a connection id whose URI is in the environment."""
    import os
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__DESC__", "AIRFLOW_CONN_"))}
    env.update(PYTHONPATH=str(root), AIRFLOW_HOME=str(tmp_path), AIRFLOW__SECRETS__BACKEND="")
    (tmp_path / "airflow.cfg").write_text("[desc]\nhistory_statement_timeout = 9\n")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if named_by == "--db":
        argv += ["--db", db]
    else:
        env.update(DESC_HISTORY_CONN_ID="desc_history", AIRFLOW_CONN_DESC_HISTORY=db)
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "airflow_desc.cli", *argv],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert not {m for m in imported if m == "airflow" or m.startswith("airflow.")}
    if argv[0] == "status":  # the status table through the DBAPI: no SQLAlchemy, no pandas either
        assert "airflow_desc.history.status_read" in imported
        assert not imported & {"alembic", "jinja2", "matplotlib", "seaborn", "pandas", "numpy", "sqlalchemy"}
    else:
        assert "airflow_desc.history.queries" in imported


def test_importing_the_cli_imports_no_heavy_library() -> None:
    """What a history-only command starts with: the parser and its commands, imported lazily."""
    import os
    import subprocess
    import sys

    heavy = ("airflow", "pandas", "numpy", "sqlalchemy", "matplotlib", "seaborn", "jinja2", "paramiko")
    code = (
        "import sys, airflow_desc.cli; airflow_desc.cli.build_parser(); "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
@pytest.mark.parametrize(
    "selection",
    [[], ["--workflow", "DC1-DM12", "--run", "r1"], ["--version", ""], ["--run", "nope"], "empty"],
)
def test_status_without_pandas_prints_what_the_general_path_prints(
    db: str, tmp_path: pathlib.Path, fmt: str, selection: list[str] | str,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The DBAPI and plain-rows path against SQLAlchemy and pandas: same output, errors and exit status."""
    from airflow_desc.cli import history_commands

    if selection == "empty":  # a history with its tables and no record
        db, selection = f"sqlite:///{tmp_path / 'empty.db'}", []
        open_history(db).upgrade()
    argv = ["status", "--no-live", "--db", db, "--format", fmt, *selection]
    answered: list[bool] = []
    without_pandas = history_commands._status_without_pandas

    def spied(args: argparse.Namespace) -> bool:
        answered.append(without_pandas(args))
        return answered[-1]

    monkeypatch.setattr(history_commands, "_status_without_pandas", spied)
    fast = main(argv), capsys.readouterr()
    assert answered == ["nope" not in selection]  # an unknown name is said by the general path
    monkeypatch.setattr(history_commands, "_status_without_pandas", lambda args: False)
    general = main(argv), capsys.readouterr()
    assert fast == general
    assert general[1].out or general[1].err


def test_status_of_a_postgresql_history_that_refuses_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["status", "--no-live", "--db", f"postgresql://desc@127.0.0.1:{port}/history"]) == 2
    err = capsys.readouterr().err
    assert f"the history at 127.0.0.1:{port}/history cannot be reached" in err
    assert "Traceback" not in err
