"""`make demo`'s progress: a line per task instance that ends, read from `airflow dags test` output."""

from __future__ import annotations

import io
import itertools

from airflow_desc.demo import DagTestProgress

# As `airflow dags test` writes them (tail of each line cut).
LOG = """\
2026-12-06T04:46:11Z [info     ] [DAG TEST] starting task_id=serialingest map_index=-1 [airflow.sdk]
2026-12-06T04:46:15Z [info     ] Task instance state updated    [airflow] new_state=deferred rows_affected=1
2026-12-06T04:46:15Z [info     ] [DAG TEST] running trigger in line [airflow.sdk.definitions.dag]
2026-12-06T04:46:22Z [info     ] Task instance state updated    [airflow] new_state=success rows_affected=1
2026-12-06T04:46:22Z [info     ] [DAG TEST] end task task_id=serialingest map_index=-1 [airflow.sdk]
2026-12-06T04:46:29Z [info     ] [DAG TEST] starting task_id=processVisit.bundle map_index=3 [airflow.sdk]
2026-12-06T04:46:45Z [info     ] Task instance state updated    [airflow] new_state=failed rows_affected=1
2026-12-06T04:46:45Z [info     ] [DAG TEST] end task task_id=processVisit.bundle map_index=3 [airflow.sdk]
2026-12-06T04:49:17Z [info     ] run FAILED: 3 process instances (failed 1, success 2) [airflow.task]
airflow.sdk.exceptions.AirflowFailException: run FAILED: 3 process instances (failed 1, success 2)
"""


def test_a_line_per_finished_task_with_the_counts_so_far() -> None:
    out = io.StringIO()
    progress = DagTestProgress(out, clock=itertools.count().__next__)
    for line in LOG.splitlines(keepends=True):
        progress.feed(line)
    lines = [" ".join(line.split()) for line in out.getvalue().splitlines()]
    assert lines == [
        "[demo] 1s serialingest success (success 1)",
        "[demo] 2s processVisit.bundle[3] failed (failed 1, success 1)",
        "[demo] 3s verdict: run FAILED: 3 process instances (failed 1, success 2)",
    ]
