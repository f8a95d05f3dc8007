"""Log tails on the local site: a real job's log end in the task log and the history; `airflow-desc logs`."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from airflow_desc.history import JsonLinesRecorder, open_history
from tests.integration.airflow_env import AirflowEnv, explain
from tests.integration.site import Site

CLI = pathlib.Path(sys.executable).with_name("airflow-desc")
SECRETS = ("hunter2-pw-9", "AbCd1234EfGh5678")


def test_a_successful_jobs_log_end_is_in_the_task_log_and_the_history_redacted_then_printed(
    airflow_env: AirflowEnv, tmp_path: pathlib.Path, site: Site
) -> None:
    history = tmp_path / "history.jsonl"
    proc = airflow_env.dags_test("desc_it_logs", history=history)
    assert proc.returncode == 0, explain(proc)
    [rec] = JsonLinesRecorder(history).read()
    assert rec.state == "success" and rec.log_path and rec.log_tail, rec
    # The task log shows the job's output on success: the end of it, bounded, secrets redacted.
    task_log = proc.stdout + proc.stderr
    assert f"output of SLURM job {rec.job_id}" in task_log
    assert "chatty progress 400" in task_log and "chatty done" in task_log
    assert not any(secret in task_log for secret in SECRETS)
    # The history keeps the last 200 lines, redacted where a secret showed.
    lines = rec.log_tail.splitlines()
    assert len(lines) == 200 and "chatty done" in lines[-3:], lines[-5:]
    assert "chatty progress 1" not in lines and "chatty progress 400" in lines
    assert "connecting to postgresql://desc:[REDACTED]@db.example.org/repo" in lines
    assert "butler api_key=[REDACTED]" in lines
    # The whole log on the cluster holds the secrets: only what we keep and show is redacted.
    assert "hunter2-pw-9" in site.run("perlmutter", f"cat {rec.log_path}").stdout

    # `airflow-desc logs` prints the kept tail from the history, without reaching the cluster ...
    db = f"sqlite:///{tmp_path / 'history.db'}"
    open_history(db).record([rec])
    env = {**os.environ, "AIRFLOW_HOME": str(airflow_env.home)}

    def logs(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CLI), "logs", "chatty", "--db", db, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    kept = logs("--run", rec.run_id, "--try", "1")
    assert kept.returncode == 0, kept.stderr
    heading, *body = kept.stdout.splitlines()
    assert (
        heading.startswith("== chatty (top level) | desc_it_logs ")
        and f"perlmutter:{rec.log_path}" in heading
    )
    assert body == lines
    # ... and --full reads the whole log over SSH, from the task's own directory, redacted too.
    full = logs("--full")
    assert full.returncode == 0, full.stderr
    assert "chatty progress 1\n" in full.stdout and "chatty progress 400\n" in full.stdout
    assert "postgresql://desc:[REDACTED]@" in full.stdout
    assert not any(secret in full.stdout for secret in SECRETS)
