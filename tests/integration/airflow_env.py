"""A throwaway Airflow home per test worker, and `airflow dags test` runs in it."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import subprocess
import sys

from airflow_desc.history import JsonLinesRecorder, ProcessRecord

DAGS = pathlib.Path(__file__).parent / "dags"
AIRFLOW = pathlib.Path(sys.executable).with_name("airflow")


@dataclasses.dataclass
class AirflowEnv:
    home: pathlib.Path
    env: dict[str, str]

    @classmethod
    def create(cls, home: pathlib.Path) -> AirflowEnv:
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        }
        proc = subprocess.run(
            [str(AIRFLOW), "db", "migrate"], env=env, capture_output=True, text=True, timeout=300
        )
        if proc.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{proc.stdout}\n{proc.stderr}")
        return cls(home, env)

    def dags_test(
        self,
        dag_id: str,
        *,
        history: pathlib.Path,
        timeout: float = 900,
        conf: dict[str, object] | None = None,
        extra_env: dict[str, str] | None = None,
        logical_date: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``dag_id`` through `airflow dags test`, its records going to ``history``.

        A ``logical_date`` names the run: ``manual__<logical date>``, and `dags test` deletes an
        earlier run of that id first, so a second call re-creates the same run id (as another
        Airflow's run of it would). Airflow 3.3's `dags test` names a manual run after its
        ``run_after`` (now), not its logical date; :data:`_AT_LOGICAL_DATE` runs the same command
        with ``run_after`` set to the logical date.
        """
        env = {**self.env, **(extra_env or {}), "DESC_HISTORY_JSONL": str(history)}
        command = [sys.executable, "-c", _AT_LOGICAL_DATE] if logical_date else [str(AIRFLOW)]
        args = [*command, "dags", "test", dag_id, *([logical_date] if logical_date else [])]
        if conf is not None:
            args += ["--conf", json.dumps(conf)]
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)

    def dags_test_start(
        self,
        dag_id: str,
        *,
        history: pathlib.Path,
        output: pathlib.Path,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.Popen[str]:
        """Start `airflow dags test` in the background, its output going to ``output``; the caller waits."""
        env = {**self.env, **(extra_env or {}), "DESC_HISTORY_JSONL": str(history)}
        with output.open("w") as out:
            return subprocess.Popen(
                [str(AIRFLOW), "dags", "test", dag_id],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )


#: `airflow dags test DAG LOGICAL_DATE` with the run's ``run_after`` at its logical date, so that the
#: run id is ``manual__<logical date>`` (``DAG.test`` takes ``run_after``; the command does not).
_AT_LOGICAL_DATE = """
import sys
from airflow.__main__ import main
from airflow.sdk.definitions.dag import DAG

_test = DAG.test

def test(self, *args, **kwargs):
    kwargs.setdefault("run_after", kwargs.get("logical_date"))
    return _test(self, *args, **kwargs)

DAG.test = test
sys.exit(main())
"""


def batch_records(history: pathlib.Path) -> dict[str, list[ProcessRecord]]:
    """The batch process instances a run recorded in ``history``, by process name, in record order."""
    found: dict[str, list[ProcessRecord]] = {}
    for rec in JsonLinesRecorder(history).read():
        if rec.process_type == "batch":
            found.setdefault(rec.process, []).append(rec)
    return found


def explain(proc: object) -> str:
    """The end of a finished command's output (stdout, then stderr), for a failed assertion's message."""
    return (getattr(proc, "stdout", "") + getattr(proc, "stderr", ""))[-8000:]


def task_outcomes(log: str) -> dict[str, str]:
    """Final state of each task from `airflow dags test` output: its last `new_state=` after it started."""
    outcomes: dict[str, str] = {}
    current: str | None = None
    for line in log.splitlines():
        if started := re.search(r"\[DAG TEST\] starting task_id=(\S+)", line):
            current = started.group(1)
        elif current and (state := re.search(r"new_state=(\w+)", line)):
            outcomes[current] = state.group(1)
    return outcomes
