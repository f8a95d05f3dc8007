"""SlurmOperator end to end through `airflow dags test`, on both clusters of the local site."""

from __future__ import annotations

import os
import pathlib

from airflow_desc.history import JsonLinesRecorder, ProcessRecord
from tests.integration.airflow_env import AirflowEnv, explain
from tests.integration.site import NODES, Site


def records(path: pathlib.Path) -> list[ProcessRecord]:
    return sorted(JsonLinesRecorder(path).read(), key=lambda r: (r.task_id, r.try_number))


def test_jobs_routed_to_both_clusters_with_accounting(
    airflow_env: AirflowEnv, tmp_path: pathlib.Path
) -> None:
    history = tmp_path / "history.jsonl"
    proc = airflow_env.dags_test("desc_it_routing", history=history)
    recs = {r.task_id: r for r in records(history)}
    assert set(recs) == {"burn_perlmutter", "burn_s3df", "burn_s3df_via_bastion"}, explain(proc)
    assert recs["burn_perlmutter"].cluster == "perlmutter"
    assert recs["burn_perlmutter"].node in NODES["perlmutter"]
    assert recs["burn_s3df"].node == "s3df-n1"
    assert recs["burn_s3df_via_bastion"].node == "s3df-n1"
    for rec in recs.values():
        assert rec.state == "success", rec
        assert rec.slurm_state == "COMPLETED"
        assert rec.total_cpu_s is not None and rec.total_cpu_s >= 1.0, rec
        assert rec.max_rss_bytes is not None and rec.max_rss_bytes >= 150 * 2**20, rec
        assert rec.req_mem_bytes == 400 * 2**20
        assert rec.job_id and rec.log_path and rec.log_path.endswith(f"-{rec.job_id}.out")
        # The job script timed its payload (sacct's Elapsed is whole seconds, its TotalCPU is not):
        # one busy core shows no more CPU than wall clock.
        assert rec.extra.get("timing") == "job script", rec
        assert rec.elapsed_s is not None and rec.total_cpu_s <= rec.elapsed_s, rec
        assert rec.extra["sacct"]["elapsed_s"] == int(rec.extra["sacct"]["elapsed_s"]), rec
    assert proc.returncode == 0, explain(proc)


def test_python_exception_is_classified(airflow_env: AirflowEnv, tmp_path: pathlib.Path, site: Site) -> None:
    history = tmp_path / "history.jsonl"
    proc = airflow_env.dags_test("desc_it_traceback", history=history)
    [rec] = records(history)
    assert rec.state == "failed", explain(proc)
    assert rec.slurm_state == "FAILED" and rec.exit_code == 1
    assert rec.reason == "python-exception"
    # The diagnosis read the tail of the log the task state store names: a path the saved-state
    # check let through, as it lies in the task instance's own directory.
    assert "PSF determination failed: too few stars" in (rec.message or "")
    assert rec.log_path and rec.log_path.startswith(f"airflow-desc/{rec.dag_id}/"), rec.log_path
    # The log on the cluster holds the traceback the diagnosis read.
    assert "Traceback" in site.run("s3df", f"cat {rec.log_path}").stdout


def test_timeout_is_retried_with_more_walltime(airflow_env: AirflowEnv, tmp_path: pathlib.Path) -> None:
    history = tmp_path / "history.jsonl"
    proc = airflow_env.dags_test("desc_it_timeout", history=history)
    recs = records(history)
    assert [(r.try_number, r.slurm_state) for r in recs] == [(1, "TIMEOUT"), (2, "COMPLETED")], explain(proc)
    first, second = recs
    assert first.state == "terminated" and first.reason == "time-limit"
    assert first.req_walltime_s == 60 and second.req_walltime_s == 120
    assert first.job_id != second.job_id


def test_out_of_memory_is_retried_with_more_memory(
    airflow_env: AirflowEnv, tmp_path: pathlib.Path, site: Site
) -> None:
    history = tmp_path / "history.jsonl"
    proc = airflow_env.dags_test("desc_it_oom", history=history)
    recs = records(history)
    assert [r.try_number for r in recs] == [1, 2], explain(proc)
    first, second = recs
    assert first.reason == "out-of-memory" and first.state == "terminated", first
    if site.proctrack == "cgroup":
        assert first.slurm_state == "OUT_OF_MEMORY"
    assert first.req_mem_bytes == 100 * 2**20 and second.req_mem_bytes == 200 * 2**20
    assert second.state == "success", second


def test_out_of_memory_on_a_memory_per_core_cluster_is_retried_with_more_cores(
    airflow_env: AirflowEnv, tmp_path: pathlib.Path, site: Site
) -> None:
    # perlmutter as a cluster whose nodes give memory only with cores: 200 MB each.
    profiles = tmp_path / "clusters.yaml"
    text = pathlib.Path(os.environ["DESC_CLUSTERS_FILE"]).read_text()
    profiles.write_text(text.replace("  perlmutter:\n", "  perlmutter:\n    mem_per_cpu_mb: 200\n", 1))
    history = tmp_path / "history.jsonl"
    proc = airflow_env.dags_test(
        "desc_it_oom_per_core", history=history, extra_env={"DESC_CLUSTERS_FILE": str(profiles)}
    )
    recs = records(history)
    assert [(r.try_number, r.state) for r in recs] == [(1, "terminated"), (2, "success")], explain(proc)
    assert recs[0].reason == "out-of-memory", recs[0]
    cpus = {
        rec.try_number: site.run("perlmutter", f"sacct -X -n -P -j {rec.job_id} -o AllocCPUS").stdout.strip()
        for rec in recs
    }
    assert cpus == {1: "1", 2: "2"}, cpus  # more cores, for the memory they carry
    task_dir = recs[1].log_path.rsplit("/", 1)[0] if recs[1].log_path else ""
    script = site.run("perlmutter", f"cat {task_dir}/t2.sh").stdout
    assert "#SBATCH --mem-per-cpu=200M" in script and "#SBATCH --mem=" not in script, script
