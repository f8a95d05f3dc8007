"""A throwaway Airflow home per test worker, and `airflow dags test` runs in it."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import subprocess
import sys

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
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        env = {**self.env, "DESC_HISTORY_JSONL": str(history), **(extra_env or {})}
        return subprocess.run(
            [str(AIRFLOW), "dags", "test", dag_id], env=env, capture_output=True, text=True, timeout=timeout
        )
