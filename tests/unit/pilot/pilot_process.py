"""Run the launcher as the job script does: a separate ``python3 launcher.py`` process."""

from __future__ import annotations

import dataclasses
import datetime
import glob
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

from airflow_desc.pilot import parse_records

LAUNCHER = pathlib.Path(__file__).parents[3] / "airflow_desc" / "pilot" / "launcher.py"
UTILISATION = re.compile(r"utilisation ([\d.]+) / ([\d.]+) core-s held by instances \(([\d.]+)%\)")


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without SLURM's variables, so nothing depends on where pytest runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    env.update(extra)
    return env


def instance(iid: str, command: str, **fields: Any) -> dict[str, Any]:
    return {"id": iid, "command": command, "cpus": 1, "memory_mb": 100, **fields}


def ts(value: str) -> datetime.datetime:
    """A record's timestamp (its ``start`` or ``end``)."""
    return datetime.datetime.fromisoformat(value)


@dataclasses.dataclass
class PilotRun:
    dir: pathlib.Path
    returncode: int
    stdout: str
    stderr: str
    wall: float

    @property
    def records_path(self) -> pathlib.Path:
        return self.dir / "records.jsonl"

    @property
    def records(self) -> list[dict[str, Any]]:
        return parse_records(self.records_path.read_text()) if self.records_path.exists() else []

    @property
    def by_id(self) -> dict[str, dict[str, Any]]:
        return {r["id"]: r for r in self.records}

    def explain(self) -> str:
        return f"rc={self.returncode}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


#: The ``run_pilot`` fixture (tests/unit/pilot/conftest.py): instances and launcher arguments -> the run.
Runner = Callable[..., PilotRun]


def write_manifest(
    directory: pathlib.Path, instances: Sequence[dict[str, Any]], bundle: str = "b", rerun: Sequence[str] = ()
) -> pathlib.Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "manifest.json"
    data: dict[str, Any] = {"bundle": bundle, "instances": list(instances)}
    if rerun:
        data["rerun"] = list(rerun)
    path.write_text(json.dumps(data))
    return path


def pilot_argv(
    directory: pathlib.Path, *args: str, python: str = sys.executable, cores: int = 2
) -> list[str]:
    return [
        python, str(LAUNCHER), "--manifest", str(directory / "manifest.json"),
        "--records", str(directory / "records.jsonl"), "--launcher", "direct",
        "--cores", str(cores), "--memory-mb", "4000", "--kill-grace", "0.5", "--poll-interval", "0.1", *args,
    ]  # fmt: skip


def python_3_8() -> str | None:
    candidates = [
        *glob.glob(os.path.expanduser("~/.pyenv/versions/3.8*/bin/python3.8")),
        shutil.which("python3.8"),
    ]
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 8)"], check=False
        )
        if probe.returncode == 0:
            return candidate
    return None


def children_of(pid: int) -> list[int]:
    """The pids whose parent is ``pid``, from /proc."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_bytes()
            except OSError:
                continue
            if int(stat[stat.rfind(b")") + 2 :].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def skip_when(
    *groups: Sequence[str], states: Sequence[Sequence[str]], known: Sequence[Sequence[str]] = ()
) -> Any:
    """A manifest's ``skip_when``: one upstream group per ``groups`` entry (its ids), the combinations."""
    return {
        "upstream": [
            {"ids": list(ids), "known": list(known[i]) if known else []} for i, ids in enumerate(groups)
        ],
        "states": [list(c) for c in states],
        "message": "skip_if holds: make in ('failed', 'terminated', 'skipped')",
    }


#: DC1's level1AssembleCoadd: waits for make (after), skipped where make did not succeed.
NOT_MADE = (("failed",), ("terminated",), ("skipped",))


def make_then_assemble(edge: str, *, fail: bool) -> list[dict[str, Any]]:
    """make (fails or not) -> assemble (``edge`` make, skip_when make did not succeed) -> two below it."""
    return [
        instance("make", "exit 3" if fail else "true"),
        instance("assemble", "true", **{edge: ["make"]}, skip_when=skip_when(["make"], states=NOT_MADE)),
        instance("after-assemble", "true", after=["assemble"]),
        instance("needs-assemble", "true", depends_on=["assemble"]),
    ]
