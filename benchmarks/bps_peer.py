"""One BPS submission through ctrl_bps_parsl and through airflow-desc, side by side on the local site.

Not part of ``make test`` (a full run takes ~15-20 min). Each side fills perlmutter's two nodes
(``--concurrent``: one each), so it runs under the exclusive site lock; it starts a real Airflow
deployment (tests/deploy.py, which holds /tmp/desc-e2e-deployment.lock while it runs: another
helper's e2e test waits for it)::

    source /var/lib/airflow-desc-site/env.sh
    PYTHONPATH=$PWD flock -x /tmp/desc-site.lock .venv/bin/python benchmarks/bps_peer.py \
        [--quanta 210] [--labels 3] [--side both|ours|parsl] [--ours chains|labels]
        [--launcher srun|direct] [--ours-first | --concurrent] [--warm DETECTORS] [--control-nice N]
        [--keep]

``--quanta 12`` is the quick run (~6 min with the deployment's start).

``--concurrent`` runs the two sides at the same time, each on a node of its own (ours on pm-n1 through
a copy of the site's cluster profiles with ``sbatch_options: {nodelist: pm-n1}``, Parsl's block on
pm-n2 through its site's ``scheduler_options``), both ``bps submit`` started together: both meet the
same load of this shared machine, whose speed drifts by 10-20 % between runs minutes apart (the same
210 quanta took 318-396 CPU-s), and both control planes take their CPU from both sides' quanta, as
neither would in production.

For each side, the same submission, made by tests/bps_lsst/make_submission.py in the LSST venv
(``make lsst-venv``): a butler repo on the shared file system and a pipeline YAML of ``--labels``
chained AddTask labels (``lsst.pipe.base.tests.simpleQGraph``), whose QuantumGraph ``bps submit``
builds (BPS's createQuantumGraph, ``pipetask qgraph``), one quantum per detector and label, every
quantum run by ``pipetask run-qbb`` in a SLURM allocation of perlmutter (2 nodes of 2
cores), as the site's user, then the final job's ``butler aggregate-graph``. One quantum of the last
label is made to fail (a directory stands where its output file goes); it is removed before
``bps restart``.

- Parsl: ``bps submit`` with ``lsst.ctrl.bps.parsl.ParslService`` run on perlmutter's login node
  over SSH (Parsl runs sbatch where it runs), site ``benchmarks/peers/bps_parsl_site.py``: one
  HighThroughputExecutor block of both nodes, one worker per core; ``bps submit`` returns when
  the workflow has ended (its init and final jobs run on the login node).
- airflow-desc: ``bps submit`` with ``airflow_desc.bps.AirflowService`` against a LocalExecutor
  deployment (as tests/e2e/test_bps_submit.py), ``bps submit`` returning once the DAG run is
  queued. ``--ours chains`` (default): ``airflowChains: true``, the quanta by data id in one
  sub-task, bundles of a node's share of the data ids (``airflowBundling: target_instances``,
  lowered by the bundle sizing to what fits the cluster's walltime, and taking each other over:
  a pilot out of work runs the bundles still pending, ``bundling.take_over``, on for BPS);
  ``--ours labels``: a sub-task per label, bundles of a node's share of its quanta.

Both sides' control planes run at ``--control-nice`` (default 10): ``bps`` itself (Parsl's runs its
interchange and, on the login node, the init and final jobs), and Airflow's components with the task
processes they start. In production they run on hosts of their own (SLAC's Airflow, NERSC's login
nodes), not on the compute nodes; on this one 2-core machine they would otherwise take CPU from the
quanta (Airflow's idle components: ~4 CPU-s a minute). What runs in the allocations (Parsl's worker
pools, our pilots, every quantum) and the SLURM jobs (our init and final jobs) is not niced.

Both sides get the same BPS config but for the WMS keys: requestMemory 1500 MB (two quanta per
4 GB node), ``requestWalltime: 1`` (minute) per label, no retries (Parsl's site ``retries: 0``).
Both sides' quanta run with ``OMP_NUM_THREADS=1``: our pilot sets it to a quantum's cores, and
Parsl's site gets it as its ``commandPrefix`` (``--parsl-stock-threads``: not, as its workers set
none). ``pipetask`` itself wants one thread (``disable_implicit_threading``), but only once numpy is
imported: without the variable numpy's OpenBLAS has started a thread per core by then, and the same
quanta burn 2-3 % more CPU (measured: ``import numpy, lsst.pipe.base`` 1.8 CPU-s vs 1.5), which the
CPU-based utilisation below would count as use.

Printed per side: the wall time from ``bps submit`` to the end of the last quantum (``endUtc`` in
the quanta's metadata in the butler: the same clock for both; the DAG parse wait included), to
the first quantum's start, and to the run's end; the quanta's CPU (``endCpuTime`` in their
metadata) over the allocations that ran them (allocated cpus x sacct Elapsed); what sacct sees
(allocations, steps); how many quanta have their own CPU / wall / MaxRSS in a history (ours:
our history; Parsl keeps none); after the restart, which quanta ran again. Then the ratios
ours / Parsl. It fails (exit 1, naming what) when a quantum's outputs are missing in the butler
after the restart, or when ours lacks a quantum in the history with its label, data id (as the
stream), CPU, wall and MaxRSS.

Also printed, per side: what ran when (ours: each task's queued / start / end; the allocations'
submit / start / end from sacct) and where the machine's CPU went during the quanta phase
(:mod:`benchmarks.cpu_groups`: cpuacct groups of the compute nodes' slurmd, the login's sshd,
Airflow's components one by one, PostgreSQL, and the rest).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bps_peer_sides import (  # noqa: E402
    LSST_VENV,
    NODES,
    Side,
    block_output,
    butler_quanta,
    make_submission,
    sacct_rows,
)
from benchmarks.cpu_groups import CpuGroups  # noqa: E402
from tests.integration.site import Site  # noqa: E402

OUTPUT_RUN = "u/tester/simple/run1"


@dataclasses.dataclass
class Result:
    """What one side did."""

    side: str
    quanta: int
    first_start_s: float
    last_end_s: float
    run_s: float
    quantum_cpu_s: float
    alloc_core_s: float
    jobs: int
    steps: int
    accounted: int
    total: int
    failed_first: list[str]
    reran: list[str]
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def utilisation(self) -> float:
        return self.quantum_cpu_s / self.alloc_core_s if self.alloc_core_s else float("nan")


def _utc(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _fail(message: str) -> None:
    raise SystemExit(f"bps_peer: {message}")


def check_butler(side: str, quanta: Sequence[Mapping[str, Any]], datasets: Mapping[str, int], labels: int,
                 detectors: int) -> None:  # fmt: skip
    """Every quantum of every label wrote its metadata, and the last label's outputs are all there."""
    for label in range(labels):
        found = sorted(q["detector"] for q in quanta if q["label"] == f"task{label}")
        if found != list(range(detectors)):
            missing = sorted(set(range(detectors)) - set(found))
            _fail(
                f"{side}: task{label} lacks the metadata of detectors {missing} in the butler ({OUTPUT_RUN})"
            )
    last = f"add_dataset{labels}"
    if datasets.get(last) != detectors:
        _fail(f"{side}: the butler holds {datasets.get(last)} {last} datasets, not {detectors}")


def warm_up(side: Side, site: Site, labels: int, detectors: int) -> None:
    """Run an earlier submission of the same pipeline through ``side``, unmeasured (``--warm``).

    For airflow-desc, its quanta's run times are in the history when the measured submission's
    streams task sizes the bundles (``bundling.run_times_from: any``); for both, the LSST venv and
    the file system are as warm as after any earlier submission.
    """
    workdir = side.workdir / "warm"
    made = make_submission(workdir, labels, detectors, side.extra(labels, detectors))
    subprocess.run(["chown", "-R", f"{site.user}:", str(side.workdir)], check=True)
    print(f"{side.name}: warming up with {labels * detectors} quanta", flush=True)
    t0 = time.time()
    side.wait(side.submit(made["config"]))
    side.notes.append(f"warmed up by an earlier submission of {labels * detectors} quanta "
                      f"({time.time() - t0:.0f} s)")  # fmt: skip


def measure(side: Side, site: Site, labels: int, detectors: int, broken: tuple[int, int],
            start: threading.Barrier | None = None) -> Result:  # fmt: skip
    """Submit, wait, read the butler and sacct, restart after removing the failure, check the butler.

    With ``start``, the submission waits there for the other side's (``--concurrent``).
    """
    workdir = side.workdir
    made = make_submission(workdir, labels, detectors, side.extra(labels, detectors))
    blocker = block_output(pathlib.Path(made["repo"]), OUTPUT_RUN, *broken)
    subprocess.run(["chown", "-R", f"{site.user}:", str(workdir)], check=True)
    if start is not None:
        start.wait()
    print(f"{side.name}: submitting {labels * detectors} quanta ({labels} labels x {detectors} detectors)",
          flush=True)  # fmt: skip
    t0 = time.time()
    run_id = side.submit(made["config"])
    side.wait(run_id)
    run_s = time.time() - t0
    first = butler_quanta(made["repo"], OUTPUT_RUN)
    done = first["quanta"]
    if not done:
        _fail(f"{side.name}: no quantum wrote its metadata; see {workdir}")
    expected = {(f"task{la}", d) for la in range(labels) for d in range(detectors)}
    failed_first = sorted(f"{la}:{d}" for la, d in expected - {(q["label"], q["detector"]) for q in done})
    first_start = min(_utc(q["start"]) for q in done) - t0
    last_end = max(_utc(q["end"]) for q in done) - t0
    cpu = sum(float(q["cpu_s"]) for q in done)
    allocations = side.allocations(run_id, t0)
    jobs = sacct_rows(site, allocations)
    core_s = sum(r["alloc_cpus"] * r["elapsed_s"] for r in jobs if r["step"] is None)
    steps = sum(1 for r in jobs if r["step"] is not None)
    print(f"{side.name}: first pass {run_s:.0f} s, {len(done)} quanta, failed {failed_first}", flush=True)
    window = last_end - first_start
    spent = side.cpu.between(t0 + first_start, t0 + last_end)
    parts = side.cpu.describe(spent)
    side.notes.append(
        f"quanta phase {window:.0f} s: the machine busy {spent['busy']:.0f} of {window * side.cpu.cpus:.0f} "
        f"CPU-s" + (f" ({parts})" if parts else "") + f"; the quanta's own {cpu:.0f} (pipetask's rusage)"
    )
    for line in side.timeline(run_id, t0):
        print(f"  {side.name}: {line}", flush=True)

    shutil.rmtree(blocker)
    t1 = time.time()
    side.restart(run_id)
    again = butler_quanta(made["repo"], OUTPUT_RUN)
    check_butler(side.name, again["quanta"], again["datasets"], labels, detectors)
    reran = side.reran(run_id, t1)
    accounted = side.accounted(run_id, again["quanta"])  # every quantum, the rerun ones too
    print(f"{side.name}: restart {time.time() - t1:.0f} s, reran {reran}", flush=True)
    return Result(
        side=side.name, quanta=len(done), first_start_s=first_start, last_end_s=last_end, run_s=run_s,
        quantum_cpu_s=cpu, alloc_core_s=core_s, jobs=len(jobs) - steps, steps=steps, accounted=accounted,
        total=len(again["quanta"]),
        failed_first=failed_first, reran=reran, notes=side.notes,
    )  # fmt: skip


def print_table(results: Sequence[Result], total: int) -> None:
    print()
    print(f"{total} quanta; times from `bps submit` (s); util = quanta CPU (metadata endCpuTime) / "
          "(allocated cpus x sacct Elapsed of the allocations that ran quanta)")  # fmt: skip
    head = ("side", "to 1st", "to last", "run", "quanta", "CPU s", "core-s", "util", "jobs", "steps",
            "accounted", "failed", "restart reran")  # fmt: skip
    rows = [
        (r.side, f"{r.first_start_s:.1f}", f"{r.last_end_s:.1f}", f"{r.run_s:.1f}", str(r.quanta),
         f"{r.quantum_cpu_s:.0f}", f"{r.alloc_core_s:.0f}", f"{r.utilisation:.1%}", str(r.jobs), str(r.steps),
         f"{r.accounted}/{r.total}", ",".join(r.failed_first) or "-", ",".join(r.reran) or "-")
        for r in results
    ]  # fmt: skip
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    for row in (head, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    for r in results:
        for note in r.notes:
            print(f"  {r.side}: {note}")
    by = {r.side: r for r in results}
    if "airflow-desc" in by and "parsl" in by:
        ours, peer = by["airflow-desc"], by["parsl"]
        print(
            f"ratio ours / Parsl: wall to the last quantum {ours.last_end_s / peer.last_end_s:.3f} "
            f"(< 1: ours faster), utilisation {ours.utilisation / peer.utilisation:.3f} (> 1: ours better)"
        )
        # The same quanta are the same work, whatever CPU each side's pipetask processes burn for it.
        cost = ours.alloc_core_s / peer.alloc_core_s
        print(
            f"allocated core-s for the same quanta, ours / Parsl: {cost:.3f} "
            f"(< 1: ours cheaper); the quanta's own CPU-s {ours.quantum_cpu_s:.0f} / {peer.quantum_cpu_s:.0f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--quanta", type=int, default=210, help="quanta in all (rounded up to labels x detectors)"
    )
    parser.add_argument("--labels", type=int, default=3)
    parser.add_argument("--side", choices=("both", "ours", "parsl"), default="both")
    parser.add_argument(
        "--ours", choices=("chains", "labels"), default="chains",
        help="airflow-desc: the quanta by data id in one sub-task (airflowChains), or one per label",
    )  # fmt: skip
    parser.add_argument(
        "--launcher", choices=("srun", "direct"), default="srun",
        help="airflow-desc: the bundles' pilot launcher (airflowLauncher): a step per quantum, or none",
    )  # fmt: skip
    parser.add_argument("--ours-first", action="store_true", help="run airflow-desc's side first")
    parser.add_argument(
        "--warm", type=int, default=0, metavar="DETECTORS",
        help="first an unmeasured submission of this many detectors per label through each side "
        "(airflow-desc then sizes bundles from its run times); 0: none",
    )  # fmt: skip
    parser.add_argument(
        "--control-nice", type=int, default=10, metavar="N",
        help="niceness of both sides' control planes (bps, Parsl's interchange, Airflow), which run on "
        "hosts of their own in production; 0: as they are",
    )  # fmt: skip
    parser.add_argument(
        "--concurrent", action="store_true",
        help="both sides at the same time, a node each (ours pm-n1, Parsl pm-n2), so that both meet the "
        "same load of this shared machine",
    )  # fmt: skip
    parser.add_argument(
        "--parsl-stock-threads",
        action="store_true",
        help="leave Parsl's quanta without OMP_NUM_THREADS (its workers set none; the pilot sets ours)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directories")
    args = parser.parse_args()
    if args.labels < 1 or args.quanta < args.labels * NODES:
        parser.error(f"--quanta must be at least {NODES} per label")
    detectors = math.ceil(args.quanta / args.labels)
    if not (LSST_VENV / ".installed").exists():
        _fail(f"no LSST venv at {LSST_VENV}: `make lsst-venv` makes it")
    site = Site.from_env()
    broken = (args.labels - 1, 1)  # the last label's quantum of detector 1
    from benchmarks.bps_peer_sides import OursSide, ParslSide

    OursSide.mode = args.ours
    OursSide.launcher = args.launcher
    Side.control_nice = args.control_nice

    sides: list[type[Side]] = []
    if args.side in ("both", "parsl"):
        sides.append(ParslSide)
    if args.side in ("both", "ours"):
        sides.append(OursSide)
    if args.ours_first:
        sides.reverse()
    ParslSide.one_thread = not args.parsl_stock_threads
    if args.concurrent:
        Side.nodes = 1
        OursSide.nodelist, ParslSide.nodelist = "pm-n1", "pm-n2"
    with no_autogroup():
        made = run_sides(sides, site, args, detectors, broken)
    failed = [side for side in made if side.result is None]
    if failed:
        _fail(f"{', '.join(side.name for side in failed)} did not finish; see above")
    print_table([side.result for side in made if side.result is not None], args.labels * detectors)
    return 0


AUTOGROUP = pathlib.Path("/proc/sys/kernel/sched_autogroup_enabled")


@contextlib.contextmanager
def no_autogroup() -> Iterator[None]:
    """Turn the kernel's autogroup scheduling off while the sides run, then back as it was.

    With it on (this machine's default), CFS shares the CPU between sessions, not processes: each of
    our quanta is a session of its own (the pilot's ``start_new_session``) where Parsl's worker pool
    runs its quanta in one, so running side by side (``--concurrent``) ours got two thirds of the
    CPU; and a nice value only ranks a process within its session, so ``--control-nice`` did
    nothing to Airflow's components, each a session of its own. Off, the CPU goes by process (and
    nice), as on a compute node where each job's tasks are processes of one session anyway.
    """
    try:
        before = AUTOGROUP.read_text().strip()
        AUTOGROUP.write_text("0")
    except OSError as exc:
        print(f"bps_peer: warning: autogroup scheduling stays as it is ({exc})", flush=True)
        yield
        return
    try:
        yield
    finally:
        AUTOGROUP.write_text(before)


def run_sides(sides: Sequence[type[Side]], site: Site, args: argparse.Namespace, detectors: int,
              broken: tuple[int, int]) -> list[Side]:  # fmt: skip
    """Make, warm up and measure each side, one after the other or (``--concurrent``) at the same time."""
    # Before the deployment starts: Airflow's components are this process's children, in its group.
    Side.cpu = CpuGroups()
    made: list[Side] = []
    try:
        for kind in sides:
            workdir = pathlib.Path(tempfile.mkdtemp(prefix=f"bpspeer-{kind.name}-"))
            workdir.chmod(0o755)
            made.append(kind(workdir, site))
            if args.warm:
                warm_up(made[-1], site, args.labels, args.warm)
            if not args.concurrent:
                made[-1].result = measure(made[-1], site, args.labels, detectors, broken)
                made[-1].close(args.keep)
        if args.concurrent:
            start = threading.Barrier(len(made))
            threads = [
                threading.Thread(
                    target=_measure_into, args=(side, site, args.labels, detectors, broken, start)
                )
                for side in made
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        for side in made:
            side.close(args.keep)
            if not args.keep:
                shutil.rmtree(side.workdir, ignore_errors=True)
        Side.cpu.stop()
    return made


def _measure_into(side: Side, site: Site, labels: int, detectors: int, broken: tuple[int, int],
                  start: threading.Barrier) -> None:  # fmt: skip
    """A thread of ``--concurrent``: measure ``side``; a failure is printed, ``side.result`` stays None."""
    try:
        side.result = measure(side, site, labels, detectors, broken, start)
    except BaseException as exc:  # noqa: BLE001 (the other side goes on; main() names the failure)
        start.abort()
        print(f"bps_peer: {side.name}: {exc}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
