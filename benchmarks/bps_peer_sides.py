"""The two sides of ``benchmarks/bps_peer.py``: ctrl_bps_parsl and airflow-desc, each behind one interface.

Also the pieces both use: the submission (tests/bps_lsst/make_submission.py), the injected failure
(a directory where a quantum's output file goes), what the butler holds (peers/bps_quanta.py, in
the LSST venv) and sacct's rows of a set of allocations.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import yaml

from benchmarks.cpu_groups import CpuGroups
from tests.deploy import PORT, Deployment
from tests.integration.site import Site

REPO = pathlib.Path(__file__).resolve().parents[1]
LSST_VENV = pathlib.Path(
    os.environ.get("DESC_LSST_VENV")
    or pathlib.Path(os.environ.get("DESC_SITE_DIR", "/var/lib/airflow-desc-site")) / "lsst-venv"
)
PEERS = REPO / "benchmarks" / "peers"
#: perlmutter's nodes, and cores per node (the site's slurm.conf, tests/data/clusters/site.yaml).
NODES, CORES = 2, 2
CLUSTER = "perlmutter"
#: The deployment's user: ``bps`` logs in as it (as tests/e2e/test_bps_submit.py).
USER, PASSWORD = "bps", "bps-peer"
SERVICE = "airflow_desc.bps.AirflowService"


def label_walltimes(labels: int) -> str:
    """BPS config: a minute of requestWalltime per quantum (an AddTask quantum takes seconds), both sides."""
    return "pipetask:\n" + "".join(f"  task{i}:\n    requestWalltime: 1\n" for i in range(labels))


def lsst_env(**extra: str) -> dict[str, str]:
    """The environment of ``bps`` in the LSST venv, this checkout's airflow_desc.bps first on its path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "PYTHONPATH"))}
    return env | {"PYTHONPATH": str(REPO), "CTRL_MPEXEC_DIR": str(LSST_VENV)} | extra


def make_submission(workdir: pathlib.Path, labels: int, detectors: int, extra: str) -> dict[str, Any]:
    """Write the butler repo, pipeline YAML and BPS config (``extra`` appended) into ``workdir``."""
    command = [
        str(LSST_VENV / "bin" / "python"), str(REPO / "tests" / "bps_lsst" / "make_submission.py"),
        str(workdir), "--labels", str(labels), "--detectors", str(detectors), "--retries", "0",
        "--extra", extra, "--no-prepare",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=lsst_env(), check=False)
    if done.returncode != 0:
        raise SystemExit(f"bps_peer: make_submission.py failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def block_output(repo: pathlib.Path, run: str, label: int, detector: int) -> pathlib.Path:
    """Put a directory where ``task<label>`` writes its output of ``detector``: that quantum fails."""
    name = f"add_dataset{label + 1}"
    path = repo / run / name / f"{name}_INSTR_det{detector}_{run.replace('/', '_')}.pickle"
    path.mkdir(parents=True)
    return path


def butler_quanta(repo: str, run: str) -> dict[str, Any]:
    """The datasets per type and the quanta's metadata in ``run`` (peers/bps_quanta.py)."""
    command = [str(LSST_VENV / "bin" / "python"), str(PEERS / "bps_quanta.py"), repo, run]
    done = subprocess.run(command, capture_output=True, text=True, env=lsst_env(), check=False)
    if done.returncode != 0:
        raise SystemExit(f"bps_peer: reading the butler {repo} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def sacct_rows(site: Site, job_ids: Sequence[str]) -> list[dict[str, Any]]:
    """sacct's rows of ``job_ids`` on perlmutter: allocations (``step`` None) and their steps."""
    if not job_ids:
        return []
    out = site.run(CLUSTER, "sacct -P -n --noconvert -o JobID,AllocCPUS,ElapsedRaw,State -j "
                   + shlex.quote(",".join(job_ids))).stdout  # fmt: skip
    rows = []
    for line in out.splitlines():
        job, cpus, elapsed, state = line.split("|")
        base, _, step = job.partition(".")
        rows.append({"job": base, "step": step or None, "alloc_cpus": int(cpus or 0),
                     "elapsed_s": int(elapsed or 0), "state": state})  # fmt: skip
    return rows


def sacct_timeline(site: Site, since: float, name_filter: str = "") -> list[str]:
    """perlmutter's allocations since ``since`` (epoch s): name, submit, start and end relative to it."""
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(since - 5))
    out = site.run(CLUSTER, f"sacct -X -P -n -o JobID,JobName,Submit,Start,End,State -S {start}").stdout
    lines = []
    for line in out.splitlines():
        job, name, *moments, state = line.split("|")
        if name_filter not in name:
            continue
        rel = []
        for moment in moments:
            try:
                rel.append(f"{time.mktime(time.strptime(moment, '%Y-%m-%dT%H:%M:%S')) - since:6.0f}")
            except ValueError:
                rel.append(f"{moment:>6}")
        lines.append(f"job {job:>6} {name[:40]:<40} submit {rel[0]} start {rel[1]} end {rel[2]} {state}")
    return lines


def _group_pids(pgid: int) -> list[int]:
    """The processes of a process group (a component leads one)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and os.getpgid(int(entry)) == pgid:
                found.append(int(entry))
        except OSError:
            pass
    return found


def _detector(name: str) -> int | None:
    found = re.search(r"detector=(\d+)", name)
    return int(found.group(1)) if found else None


class Side:
    """One WMS: submit, wait, the allocations, per-quantum accounting, restart, what reran."""

    name: ClassVar[str] = ""
    #: The niceness of the side's control plane (``bps`` itself; Parsl's interchange and its init and
    #: final jobs on the login node; Airflow's components and the task processes they start), which
    #: in production runs on hosts of its own, not on the compute nodes: 0 leaves it as it is.
    control_nice: ClassVar[int] = 0
    #: Where the machine's CPU goes (:mod:`benchmarks.cpu_groups`), sampled through all sides.
    cpu: ClassVar[CpuGroups]
    #: The nodes of perlmutter the side's allocations use: both, or one (``--concurrent``: the two
    #: sides at the same time, a node each).
    nodes: ClassVar[int] = NODES
    nodelist: ClassVar[str | None] = None

    def __init__(self, workdir: pathlib.Path, site: Site) -> None:
        self.workdir = workdir
        self.site = site
        self.notes: list[str] = []
        self.result: Any = None  # bps_peer.Result, once measured
        self._closed = False

    def extra(self, labels: int, detectors: int) -> str:
        raise NotImplementedError

    def submit(self, config: str) -> str:
        raise NotImplementedError

    def wait(self, run_id: str) -> None:
        raise NotImplementedError

    def allocations(self, run_id: str, since: float) -> list[str]:
        raise NotImplementedError

    def accounted(self, run_id: str, quanta: Sequence[Mapping[str, Any]]) -> int:
        raise NotImplementedError

    def restart(self, run_id: str) -> None:
        raise NotImplementedError

    def reran(self, run_id: str, since: float) -> list[str]:
        raise NotImplementedError

    def timeline(self, run_id: str, since: float) -> list[str]:
        """What ran when, in s from ``since`` (``bps submit``): its allocations, and for ours its tasks."""
        return []

    def close(self, keep: bool = False) -> None:
        self._closed = True


class ParslSide(Side):
    """ctrl_bps_parsl: ``bps submit`` on perlmutter's login node, as the site's user, blocking to the end."""

    name = "parsl"
    #: Its quanta get ``OMP_NUM_THREADS=1`` as ours do (``commandPrefix``); ``False``: none, as stock.
    one_thread: ClassVar[bool] = True

    def extra(self, labels: int, detectors: int) -> str:
        (self.workdir / "bps_parsl_site.py").write_text((PEERS / "bps_parsl_site.py").read_text())
        self.campaign = f"bpspeer-{time.time_ns()}"
        # --concurrent: the block on the node left to it (the stock site's #SBATCH lines)
        where = f'    scheduler_options: "#SBATCH --nodelist={self.nodelist}"\n' if self.nodelist else ""
        if self.one_thread:  # what our pilot sets for a one-core quantum, before numpy starts its threads
            where += '    commandPrefix: "export OMP_NUM_THREADS=1"\n'
            note = "its quanta with OMP_NUM_THREADS=1 (site commandPrefix), as ours get from the pilot"
            self.notes.extend([note] if note not in self.notes else [])  # once, warmed up or not
        return f"""\
wmsServiceClass: lsst.ctrl.bps.parsl.ParslService
campaign: {self.campaign}
{label_walltimes(labels)}site:
  {CLUSTER}:
    class: bps_parsl_site.LocalSlurm
    nodes: {self.nodes}
{where}    cores_per_node: {CORES}
    walltime: "00:30:00"
    account: desc
    partition: regular
    retries: 0
"""

    def _bps(self, *args: str) -> str:
        env = {"PATH": f"{LSST_VENV}/bin:$PATH", "PYTHONPATH": str(self.workdir),
               "CTRL_MPEXEC_DIR": str(LSST_VENV), "DAF_BUTLER_DIR": str(LSST_VENV),
               "BPS_WMS_SERVICE_CLASS": "lsst.ctrl.bps.parsl.ParslService"}  # fmt: skip
        exports = " ".join(f"{k}={shlex.quote(v) if k != 'PATH' else v}" for k, v in env.items())
        nice = f"nice -n {self.control_nice} " if self.control_nice else ""
        command = f"cd {shlex.quote(str(self.workdir))} && export {exports} && {nice}bps " + " ".join(
            map(shlex.quote, args)
        )
        done = subprocess.run([*self.site.ssh_argv(CLUSTER), command], capture_output=True, text=True,
                              timeout=3600, check=False)  # fmt: skip
        (self.workdir / f"bps-{args[0]}.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise SystemExit(f"bps_peer: parsl: bps {' '.join(args)} exited {done.returncode}:\n"
                             f"{done.stderr[-3000:]}")  # fmt: skip
        return done.stdout + done.stderr

    def submit(self, config: str) -> str:
        out = self._bps("submit", config)
        [submit_dir] = re.findall(r"^Submit dir: (\S+)$", out, re.MULTILINE)
        self.submit_dir = pathlib.Path(submit_dir)
        return submit_dir

    def wait(self, run_id: str) -> None:
        pass  # `bps submit` returned when the workflow had ended

    def allocations(self, run_id: str, since: float) -> list[str]:
        start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(since - 5))
        out = self.site.run(CLUSTER, f"sacct -X -P -n -o JobID,JobName -S {start}").stdout
        jobs = [line.split("|")[0] for line in out.splitlines() if line.endswith(f".{self.campaign}")]
        self.notes.append(
            f"{len(jobs)} Parsl block(s) of {self.nodes} node(s); init and final jobs ran on the login node"
            + (f"; bps at nice {self.control_nice}" if self.control_nice else "")
        )
        return jobs

    def timeline(self, run_id: str, since: float) -> list[str]:
        return sacct_timeline(self.site, since, self.campaign)

    def accounted(self, run_id: str, quanta: Sequence[Mapping[str, Any]]) -> int:
        return 0  # Parsl records no CPU, wall or memory of a task; its block's sacct rows hold the lot

    def restart(self, run_id: str) -> None:
        self._bps("restart", "--id", run_id)

    def reran(self, run_id: str, since: float) -> list[str]:
        """Quanta whose pipetask log was written after ``since`` (a memoized job writes none)."""
        found = []
        for path in (self.submit_dir / "logs").glob("task*/*.stderr"):
            if path.stat().st_mtime > since:
                found.append(f"{path.parent.name}:{path.stem.rsplit('_', 1)[1]}")
        return sorted(found)


class OursSide(Side):
    """airflow-desc: ``bps submit`` to a LocalExecutor deployment, the quanta in whole-node bundles."""

    name = "airflow-desc"

    #: ``chains``: the quanta by data id in one sub-task (``airflowChains``); ``labels``: one per label.
    mode: ClassVar[str] = "chains"
    #: The bundles' pilot launcher (``airflowLauncher``): ``srun`` (a step per quantum) or ``direct``.
    launcher: ClassVar[str] = "srun"

    def __init__(self, workdir: pathlib.Path, site: Site) -> None:
        super().__init__(workdir, site)
        self.root = pathlib.Path(tempfile.mkdtemp(prefix="bpspeer-airflow-"))
        (self.root / "dags").mkdir()
        if self.nodelist:  # the site's profiles, every perlmutter job on the one node
            profiles = yaml.safe_load(pathlib.Path(os.environ["DESC_CLUSTERS_FILE"]).read_text())
            profiles["clusters"][CLUSTER].setdefault("sbatch_options", {})["nodelist"] = self.nodelist
            clusters = self.root / "clusters.yaml"
            clusters.write_text(yaml.safe_dump(profiles))
            os.environ["DESC_CLUSTERS_FILE"] = str(clusters)  # the deployment's components read it
            self.notes.append(f"every job on {self.nodelist} (sbatch --nodelist)")
        self.airflow = Deployment.local(self.root, dags=self.root / "dags", history_prefix="bpspeer",
                                        users={USER: ("admin", PASSWORD)})  # fmt: skip
        print("airflow-desc: starting the deployment (waits for any other e2e deployment)", flush=True)
        self.airflow.start()
        for name, component in self.airflow.components.items():  # each with what it starts later
            if component.proc is not None:
                self.cpu.split("airflow", name, _group_pids(component.proc.pid))
        if self.control_nice:
            # Each component leads a process group; the task processes it starts later inherit it.
            for component in self.airflow.components.values():
                if component.proc is not None:
                    os.setpriority(os.PRIO_PGRP, component.proc.pid, self.control_nice)
            self.notes.append(f"Airflow's components and bps at nice {self.control_nice}")

    def extra(self, labels: int, detectors: int) -> str:
        self.dag_id = f"bpspeer_{time.time_ns()}"  # a DAG, a workflow, per submission
        # A node's share of the data ids per bundle (lowered by the bundle sizing to fit the walltime,
        # fitted again from the history's run times of an earlier submission, if any).
        per_bundle = -(-detectors // self.nodes) * (labels if self.mode == "chains" else 1)
        self.notes.append(
            f"mode {self.mode}, launcher {self.launcher}: airflowBundling target_instances {per_bundle}"
        )
        return (
            f"airflowDagFolder: {self.airflow.dags}\nairflowWorkflowName: {self.dag_id}\n"
            f"airflowBundling: {{threshold: 1, target_instances: {per_bundle}}}\n"
            f"airflowChains: {'true' if self.mode == 'chains' else 'false'}\n"
            f"airflowLauncher: {self.launcher}\n"
            f"environment:\n  CTRL_MPEXEC_DIR: {LSST_VENV}\n  DAF_BUTLER_DIR: {LSST_VENV}\n"
            + label_walltimes(labels)
        )

    def _bps(self, *args: str, cwd: pathlib.Path) -> str:
        env = lsst_env(BPS_WMS_SERVICE_CLASS=SERVICE, AIRFLOW_DESC_API_URL=f"http://127.0.0.1:{PORT}",
                       AIRFLOW_DESC_API_USER=USER, AIRFLOW_DESC_API_PASSWORD=PASSWORD)  # fmt: skip
        nice = ["nice", "-n", str(self.control_nice)] if self.control_nice else []
        done = subprocess.run([*nice, str(LSST_VENV / "bin" / "bps"), *args], capture_output=True,
                              text=True, env=env, cwd=cwd, timeout=900, check=False)  # fmt: skip
        (self.workdir / f"bps-{args[0]}.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise SystemExit(f"bps_peer: airflow-desc: bps {' '.join(args)} exited {done.returncode}:\n"
                             f"{done.stderr[-3000:]}")  # fmt: skip
        return done.stdout

    def submit(self, config: str) -> str:
        out = self._bps("submit", config, cwd=pathlib.Path(config).parent)
        [run_id] = re.findall(r"^Run Id: (\S+)$", out, re.MULTILINE)
        return run_id

    def wait(self, run_id: str) -> None:
        state = self.airflow.wait_run(self.dag_id, run_id, timeout=1800)
        self.notes.append(f"first pass: DAG run {state}")

    def _rows(self, run_id: str) -> list[dict[str, Any]]:
        return [r for r in self.airflow.history_rows(run_id) if r["process_type"] == "batch"]

    def allocations(self, run_id: str, since: float) -> list[str]:
        rows = self._rows(run_id)
        quanta = sorted(
            {str(r["job_id"]) for r in rows if r["job_id"] and re.match(r"task\d+$", r["process"])}
        )
        others = sorted({str(r["job_id"]) for r in rows if r["job_id"]} - set(quanta))
        self.notes.append(f"{len(quanta)} bundle allocation(s) ran the quanta; {len(others)} job(s) for "
                          "init and final (not in core-s)")  # fmt: skip
        return quanta

    def timeline(self, run_id: str, since: float) -> list[str]:
        rows = self.airflow.sql(
            "SELECT task_id, map_index, extract(epoch from queued_dttm), extract(epoch from start_date), "
            "extract(epoch from end_date) FROM task_instance WHERE dag_id = %s AND run_id = %s "
            "ORDER BY start_date", self.dag_id, run_id)  # fmt: skip

        def rel(t: Any) -> str:
            return "     -" if t is None else f"{float(t) - since:6.1f}"

        lines = [f"task {t}[{m}] queued {rel(q)} start {rel(b)} end {rel(e)}" for t, m, q, b, e in rows]
        return lines + sacct_timeline(self.site, since)

    def accounted(self, run_id: str, quanta: Sequence[Mapping[str, Any]]) -> int:
        """Every quantum that ended has a history row: its label, data id as the stream, CPU, wall, MaxRSS."""
        have = {
            (r["process"], _detector(str(r["stream"])))
            for r in self._rows(run_id)
            if r["state"] == "success"
            and all(r[k] is not None for k in ("total_cpu_s", "elapsed_s", "max_rss_bytes"))
        }
        missing = sorted(
            f"{q['label']}:{q['detector']}" for q in quanta if (q["label"], q["detector"]) not in have
        )
        if missing:
            raise SystemExit(
                f"bps_peer: airflow-desc: quanta without CPU / wall / MaxRSS in the history: {missing}"
            )
        return len(quanta)

    def restart(self, run_id: str) -> None:
        self._bps("restart", "--id", run_id, cwd=self.workdir)
        state = self.airflow.wait_run(self.dag_id, run_id, timeout=1800)
        if state != "success":
            raise SystemExit(f"bps_peer: airflow-desc: the restarted run ended {state}; logs in {self.root}")

    def reran(self, run_id: str, since: float) -> list[str]:
        tries: dict[tuple[str, int | None], int] = {}
        for r in self._rows(run_id):
            if re.match(r"task\d+$", r["process"]):
                key = (r["process"], _detector(str(r["stream"])))
                tries[key] = tries.get(key, 0) + 1
        return sorted(f"{label}:{det}" for (label, det), n in tries.items() if n > 1)

    def close(self, keep: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        self.airflow.stop()
        if not keep:  # the deployment's homes and logs
            shutil.rmtree(self.root, ignore_errors=True)
