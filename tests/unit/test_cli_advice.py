"""`airflow-desc advice` on an embedded SQLite history (no services)."""

from __future__ import annotations

import json
import pathlib

import pytest

from airflow_desc.cli import main
from airflow_desc.workflow.overlays import load_overlay
from tests.unit.test_cli import db  # noqa: F401 - the fixture

ROOT = pathlib.Path(__file__).parents[2]
DC1 = ROOT / "dags" / "workflows" / "dc1.yaml"


def test_advice_prints_the_table(
    db: str,  # noqa: F811 - the fixture
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["advice", "--db", db, "--format", "json", "--quantile", "0.5"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["Process"], row["Instances"], row["Out of memory"]) == ("processEimage", 5, 1)


def test_advice_writes_an_overlay_the_renderer_reads(
    db: str,  # noqa: F811 - the fixture
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "advice.yaml"
    assert (
        main(["advice", "--db", db, "--workflow", "DC1-DM12", "--write", str(out), "--extends", str(DC1)])
        == 0
    )
    assert f"wrote {out}: memory and walltime of 1 process(es)" in capsys.readouterr().out
    spec, options = load_overlay(out)
    assert spec.resolve() == DC1.resolve()
    assert options.resources["processEimage"].memory_mb is not None
    assert "from 5 attempts of batch processes (workflow DC1-DM12)" in out.read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--write", "x.yaml"], "--write and --extends go together"),
        (["--write", "x.yaml", "--extends", "nowhere.yaml"], "--extends nowhere.yaml: no such file"),
        (["--quantile", "2"], "quantile must be between 0 and 1"),
        (["--workflow", "nope"], "nope"),
    ],
)
def test_bad_arguments_are_named(
    db: str,  # noqa: F811 - the fixture
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    assert main(["advice", "--db", db, *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.yaml").exists()


def test_advice_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["advice", "--help"])
    assert exit_.value.code == 0
    assert "--extends SPEC" in capsys.readouterr().out
