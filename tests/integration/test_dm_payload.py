"""payload: dm on the local site: the DM stand-ins run the specs' dm_command, single jobs and bundles.

tests/integration/dags/desc_it_dm.py renders tests/data/specs/desc-it-dm.yaml: ingest and a sky map
as single SLURM jobs, processEimage of two visits in one allocation through the pilot, each running
its real DM command line on the stand-ins (docker/site/dm-standins, on the logins' PATH). The
stand-ins check their inputs and write their outputs, so the spec's output checks and the files on
the cluster say that each ran with the right arguments; the history says which payload ran. The
same spec with an argument mistake fails, each failed record carrying the stand-in's own error.
"""

from __future__ import annotations

import pathlib
import shlex
import uuid

import pytest

from tests.integration.airflow_env import AirflowEnv, batch_records, explain
from tests.integration.site import Site

# A bundle asks for a whole perlmutter node: beside the parallel suite it would wait in SLURM's queue.
pytestmark = [pytest.mark.serial, pytest.mark.usefixtures("dm_stack")]

WORK_DIR = "airflow-desc"  # the site's clusters.yaml work_dir, relative to the home directory


def conf_for(site: Site, **more: object) -> dict[str, object]:
    return {"out": f"it-dm/{uuid.uuid4().hex[:10]}", "stack": f"{site.dir}/dm-stack", **more}


def test_dm_commands_run_on_the_stand_ins_in_single_jobs_and_a_bundle(
    airflow_env: AirflowEnv, tmp_path: pathlib.Path, site: Site
) -> None:
    history = tmp_path / "history.jsonl"
    conf = conf_for(site)
    proc = airflow_env.dags_test("desc_it_dm", history=history, conf=conf, timeout=300)
    recs = batch_records(history)
    assert {p: len(r) for p, r in recs.items()} == {"ingest": 1, "makeSkyMap": 1, "processEimage": 2}, (
        explain(proc)
    )
    assert proc.returncode == 0, explain(proc)
    for rec in (r for records in recs.values() for r in records):
        assert rec.state == "success", rec
        assert rec.extra.get("payload") == "dm", rec.extra
    assert len({r.job_id for r in recs["processEimage"]}) == 1  # one allocation
    # What the stand-ins wrote, each line the arguments it was given: the DM command lines ran.
    repo = shlex.quote(f"{WORK_DIR}/{conf['out']}/repo")
    written = site.run(
        "perlmutter", f"cd {repo} && find . -type f | sort && cat rerun/it/calexp/*/R22/*"
    ).stdout
    for path in ("./_mapper", "./registry.sqlite3", "./rerun/it/deepCoadd/skyMap.pickle"):
        assert path in written.splitlines(), written
    for visit in ("2201", "2202"):
        assert f"./rerun/it/calexp/v{visit}/R22/calexp_S11.fits" in written.splitlines(), written
        assert (
            f"processEimage.py {conf['out']}/repo --rerun it --id visit={visit} raft=R22 sensor=S11"
            in written
        )


def test_a_run_conf_chooses_the_emulated_payload_of_a_dm_spec(
    airflow_env: AirflowEnv, tmp_path: pathlib.Path, site: Site
) -> None:
    history = tmp_path / "history.jsonl"
    conf = conf_for(site, desc_payload="emulate")
    proc = airflow_env.dags_test("desc_it_dm", history=history, conf=conf, timeout=300)
    assert proc.returncode == 0, explain(proc)
    recs = [r for records in batch_records(history).values() for r in records]
    assert len(recs) == 4 and all(r.state == "success" for r in recs), recs
    assert {r.extra.get("payload") for r in recs} == {"emulate"}
    # The emulated payload writes no DM repository marker; the stand-ins' ingest would have.
    repo = shlex.quote(f"{WORK_DIR}/{conf['out']}/repo")
    assert site.run("perlmutter", f"test ! -e {repo}/_mapper", check=False).returncode == 0


def test_an_argument_mistake_in_a_dm_command_fails_with_the_stand_ins_error(
    airflow_env: AirflowEnv, tmp_path: pathlib.Path, site: Site
) -> None:
    history = tmp_path / "history.jsonl"
    proc = airflow_env.dags_test("desc_it_dm_bad", history=history, conf=conf_for(site), timeout=300)
    assert proc.returncode != 0, explain(proc)
    recs = batch_records(history)
    assert [r.state for r in recs["ingest"]] == ["success"], recs
    failed = [*recs["makeSkyMap"], *recs["processEimage"]]
    assert len(failed) == 3, recs
    for rec in failed:
        assert rec.state == "failed" and rec.exit_code == 2, rec
        assert "error: argument --id: unknown data ID key 'bogus'" in (rec.message or ""), rec
        assert rec.extra.get("payload") == "dm", rec.extra
