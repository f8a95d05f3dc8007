"""SlurmJobSensor through `airflow dags test`: jobs submitted outside Airflow, by id and by name."""

from __future__ import annotations

import pathlib
import uuid

from tests.integration.airflow_env import AirflowEnv, task_outcomes
from tests.integration.site import Site


def test_sensor_follows_foreign_jobs(airflow_env: AirflowEnv, site: Site, tmp_path: pathlib.Path) -> None:
    name = f"foreign-{uuid.uuid4().hex[:10]}"
    ok = site.sbatch("s3df", "#!/bin/bash\nsleep 3\n", "-t", "1", "-o", "/dev/null")
    bad = site.sbatch("s3df", "#!/bin/bash\nexit 4\n", "-t", "1", "-o", "/dev/null")
    # Submitted a little later than the DAG starts looking for it: the sensor waits for the name.
    site.run(
        "perlmutter", f"(sleep 8; sbatch -J {name} -t 1 -o /dev/null --wrap 'sleep 2') >/dev/null 2>&1 &"
    )
    proc = airflow_env.dags_test(
        "desc_it_sensor",
        history=tmp_path / "history.jsonl",
        conf={"job_id": ok, "job_name": name, "failing_id": bad},
    )
    log = proc.stdout + proc.stderr
    assert task_outcomes(log) == {"by_id": "success", "by_name": "success", "failing": "failed"}, log[-4000:]
    # The failing job's sensor says why, naming the job.
    assert f"job {bad}" in log, log[-4000:]
