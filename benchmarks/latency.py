"""Job-end latency: from a job's end to its task instance's success, under the real scheduler and triggerer.

Not part of ``make test``, nor of ``make bench`` (~20 min at the default ``--repeat 8``). It resets
the site's Airflow metadata DB and uses the deployment's fixed ports, so it holds the site::

    source /var/lib/airflow-desc-site/env.sh
    flock -x /tmp/desc-site.lock .venv/bin/python benchmarks/latency.py \\
        [--repeat 8] [--intervals profile,5] [--ssh-intervals 1,5] [--rows floor,slurm,bundle,ssh]

What it does (issue #13, item 2):

1. Writes a DAGs folder and a cluster profile file: the site's profiles, plus ``perlmutter-pollN``
   (perlmutter with ``poll_interval: N``) per interval of ``--intervals`` other than ``profile``
   (perlmutter's own, 2 s on the local site). DAGs, one task of interest each:

   - ``latency_floor``: a no-op deferrable task deferring for ``--nap`` seconds to a trigger that
     fires at its moment (``tests/exact_trigger.py``: Airflow's ``DateTimeTrigger`` fires up to 1 s
     late, sleeping a second at a time). Its latency, from the trigger's moment to the task
     instance's success, is the floor Airflow itself imposes on a resumed task (the event, the
     scheduler queueing the task, a task process starting and running ``execute_complete``).
   - ``latency_slurm_<interval>``: one ``SlurmOperator`` job on perlmutter.
   - ``latency_bundle_<interval>``: a workflow spec (``load_workflow_dags``): a script makes 3
     visits, one ``SlurmBundleOperator`` task instance runs them in one allocation.
   - ``latency_ssh_<interval>``: the peer, the same payload through the SSH provider's
     ``SSHRemoteJobOperator`` on perlmutter's login node (``poll_interval`` = interval).

   Every payload sleeps a seeded U(``--sleep``, ``--sleep`` + 5) s (so that the job outlasts the
   trigger's first poll, and ends at a random phase of the poll interval), burns 0.5 s of CPU
   (``airflow_desc.emulate``'s payload), and then writes its own end time (``date +%s.%N``) to a
   file in the cluster user's home.
2. Starts ``Deployment.local`` of ``tests/deploy.py`` (LocalExecutor: api-server, scheduler,
   dag-processor, triggerer) on that folder.
3. ``--repeat`` rounds; in each, one run of every row, triggered through the REST API and waited
   for to its end before the next (never two at a time), the rows' order shuffled per round (seeded)
   so that a drift of the machine's load falls on every row alike.
4. Per run: ``end`` = the payload's own end time (the latest of the bundle's streams), ``sacct`` =
   the job's sacct End (whole seconds, the allocation's for a bundle; none for the SSH peer), and
   ``success`` = the task instance's ``end_date`` in the metadata DB. Latency = success - end (and
   success - sacct End beside it). The phases between: ``event`` = the task instance's
   ``scheduled_dttm`` (set when the triggerer hands the trigger's event over), ``queued`` = its
   ``queued_dttm`` (the scheduler queued the resumed task), then ``success``.

Prints per row the median and p95 (nearest rank) of the latency, the median from sacct End, the
medians of the phases, and the target check: median <= floor median + interval / 2 + 0.5 s, as a
ratio measured / target. Exit status 1 when one of ours (``slurm``, ``bundle``) misses it at the
largest interval of ``--intervals`` (5 s by default); other rows are printed for information.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import random
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.deploy: the deployment the e2e tests run

from tests.deploy import Deployment, api  # noqa: E402
from tests.integration.site import Site  # noqa: E402
from tests.waiting import wait_for  # noqa: E402

CLUSTER = "perlmutter"
SSH_CONN_ID = "perlmutter_ssh"
#: Streams of the bundle row (one allocation of a whole perlmutter node: 2 cores).
BUNDLE_STREAMS = 3
PAYLOAD_CPU_S = 0.5
#: Latency measured on this machine before this benchmark, SSHRemoteJobOperator (issue #13).
SSH_ANCHOR = {1.0: 5.7, 5.0: 7.9}
#: What a row of ours may take beyond the floor and half the interval (issue #13, item 2).
SLACK_S = 0.5
KINDS = ("floor", "slurm", "bundle", "ssh")


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the table: a DAG whose one task of interest is measured.

    :param kind: ``floor``, ``slurm``, ``bundle`` or ``ssh``.
    :param interval: the poll interval in seconds (``None`` for the floor).
    :param cluster: the cluster profile of a SLURM row.
    """

    kind: str
    interval: float | None = None
    cluster: str = CLUSTER

    @property
    def label(self) -> str:
        return self.kind if self.interval is None else f"{self.kind}_{self.interval:g}s"

    @property
    def dag_id(self) -> str:
        return "latency_" + self.label.replace(".", "_")


@dataclasses.dataclass
class Sample:
    """One run of one row: epoch seconds of the job's end and of what followed."""

    end: float  # the payload's own end (the floor: the trigger's moment)
    success: float  # the task instance's end_date
    sacct_end: float | None = None
    event: float | None = None  # scheduled_dttm: the trigger's event handed to the scheduler
    queued: float | None = None  # queued_dttm: the scheduler queued the resumed task

    @property
    def latency(self) -> float:
        return self.success - self.end


# --- the DAGs folder and the cluster profiles --------------------------------------------------------


def write_profiles(path: pathlib.Path, intervals: Sequence[float]) -> dict[float | None, str]:
    """Write the site's profiles plus ``perlmutter-pollN`` per interval; return interval -> profile name."""
    profiles = yaml.safe_load(pathlib.Path(os.environ["DESC_CLUSTERS_FILE"]).read_text())
    base = profiles["clusters"][CLUSTER]
    names: dict[float | None, str] = {None: CLUSTER}
    for interval in intervals:
        name = f"{CLUSTER}-poll{interval:g}".replace(".", "_")
        profiles["clusters"][name] = {**base, "poll_interval": interval}
        names[interval] = name
    path.write_text(
        "# The site's cluster profiles, plus perlmutter at other poll intervals (benchmarks/latency.py)\n"
        + yaml.safe_dump(profiles, sort_keys=False)
    )
    return names


SINGLE_DAGS = '''"""DAGs of benchmarks/latency.py: the floor, single SLURM jobs, the SSH peer."""

from __future__ import annotations

import shlex
from datetime import datetime, timedelta, timezone

from airflow.providers.ssh.operators.ssh_remote_job import SSHRemoteJobOperator
from airflow.sdk import DAG, BaseOperator

from airflow_desc.emulate import payload_command
from airflow_desc.operators.slurm import SlurmOperator
from tests.exact_trigger import ExactDateTimeTrigger

ROWS = {rows!r}
NAP_S = {nap!r}
# The job: sleep (the run's conf), burn CPU, then write its own end time where the benchmark reads it.
COMMAND = (
    "sleep {{{{ params.sleep | sh }}}}\\n"
    + payload_command("--name", "latency", "--cpu-seconds", {cpu!r})
    + "date +%s.%N > {{{{ params.stamp | sh }}}}\\n"
)


class Nap(BaseOperator):
    """A no-op deferrable task: defers for NAP_S seconds, then succeeds; returns the trigger's moment."""

    def execute(self, context):
        moment = datetime.now(timezone.utc) + timedelta(seconds=NAP_S)
        self.defer(trigger=ExactDateTimeTrigger(moment.isoformat()), method_name="execute_complete",
                   kwargs={{"moment": moment.isoformat()}})

    def execute_complete(self, context, event=None, moment=None):
        return moment


def dag_of(dag_id):
    return DAG(
        dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["latency"],
        params={{"sleep": "5", "stamp": "/dev/null"}}, user_defined_filters={{"sh": shlex.quote}},
    )


for _dag_id, _kind, _interval, _cluster in ROWS:
    with dag_of(_dag_id) as _dag:
        if _kind == "floor":
            Nap(task_id="job")
        elif _kind == "slurm":
            SlurmOperator(task_id="job", cluster=_cluster, command=COMMAND, time_limit=5, retries=0)
        else:
            # In braces: its wrapper appends the log's redirection to the command's last line (the
            # stamp's), and Jinja drops the trailing newline that would keep them apart.
            SSHRemoteJobOperator(
                task_id="job", ssh_conn_id={ssh!r}, command="{{\\n" + COMMAND + "}}", poll_interval=_interval,
                retries=0,
            )
    globals()[_dag_id] = _dag
'''


def bundle_spec(row: Row) -> dict[str, Any]:
    """A workflow of one bundle: a script makes the visits, one allocation runs them."""
    from airflow_desc.emulate import payload_command

    return {
        "name": row.dag_id,
        "version": "1.0",
        "description": f"benchmarks/latency.py: {BUNDLE_STREAMS} streams in one allocation",
        "variables": {
            "visits": "^".join(str(v + 1) for v in range(BUNDLE_STREAMS)),
            "sleep": "5",
            "stamp": "/dev/null",
        },
        "defaults": {
            "resources": {"cluster": row.cluster, "cpus": 1, "memory_mb": 200, "walltime": "0:05:00"},
            "retries": 0,
        },
        "processes": {
            "setupVisits": {
                "type": "script",
                "callable": "airflow_desc.emulate.scripts:make_streams",
                "kwargs": {"kind": "visit", "visits": "{{ visits }}"},
            }
        },
        "tasks": {
            "processVisit": {
                "streams_from": "setupVisits",
                "stream_var": "visit",
                "expected_streams": BUNDLE_STREAMS,
                "bundle": "always",
                "bundle_size": BUNDLE_STREAMS,
                "processes": {
                    "work": {
                        "type": "batch",
                        "command": "sleep {{ sleep }}\n"
                        + payload_command("--name", "latency", "--cpu-seconds", str(PAYLOAD_CPU_S))
                        + "date +%s.%N > {{ stamp }}.{{ visit }}\n",
                    }
                },
            }
        },
    }


def write_dags(folder: pathlib.Path, rows: Sequence[Row], nap_s: float) -> None:
    """The DAG files: the single-task DAGs in one file, the bundles' specs and their one-line DAG file."""
    folder.mkdir(parents=True, exist_ok=True)
    singles = [(r.dag_id, r.kind, r.interval, r.cluster) for r in rows if r.kind != "bundle"]
    (folder / "latency_dags.py").write_text(
        SINGLE_DAGS.format(rows=singles, nap=nap_s, cpu=str(PAYLOAD_CPU_S), ssh=SSH_CONN_ID)
    )
    bundles = [r for r in rows if r.kind == "bundle"]
    if not bundles:
        return
    workflows = folder / "workflows"
    workflows.mkdir(exist_ok=True)
    for row in bundles:
        (workflows / f"{row.dag_id}.yaml").write_text(yaml.safe_dump(bundle_spec(row), sort_keys=False))
    paths = ", ".join(repr(f"workflows/{r.dag_id}.yaml") for r in bundles)
    (folder / "latency_bundles.py").write_text(
        '"""Bundles of benchmarks/latency.py."""\n\n'
        "from airflow_desc.workflow.render import load_workflow_dags\n\n"
        f"globals().update(load_workflow_dags(__file__, {paths}))\n"
    )


# --- one run ---------------------------------------------------------------------------------------------


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


class Runner:
    """Triggers one run of a row at a time, waits for its end, reads its sample."""

    def __init__(self, af: Deployment, site: Site, stamps: str, tag: str, seed: int, sleep_s: float) -> None:
        self.af, self.site, self.stamps, self.tag = af, site, stamps, tag
        self.rng = random.Random(seed)
        self.sleep_s = sleep_s

    def unpause(self, rows: Sequence[Row]) -> None:
        ids = [row.dag_id for row in rows]

        def parsed() -> list[str]:
            found = {str(d) for (d,) in self.af.sql("SELECT dag_id FROM dag WHERE dag_id = ANY(%s)", ids)}
            return sorted(set(ids) - found)

        wait_for(parsed, until=lambda missing: not missing, timeout=300,
                 what=f"every DAG parsed; logs in {self.af.root}", interval=2)  # fmt: skip
        for dag_id in ids:
            api("PATCH", f"/dags/{dag_id}", {"is_paused": False})

    def run(self, row: Row, index: int) -> Sample:
        run_id = f"latency__{self.tag}__{row.label}__{index:02d}"
        stamp = f"{self.stamps}/{run_id}.end"
        conf = {"sleep": f"{self.rng.uniform(self.sleep_s, self.sleep_s + 5):.2f}", "stamp": stamp}
        api("POST", f"/dags/{row.dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": None, "conf": conf})
        state = wait_for(
            lambda: self.af.run_state(row.dag_id, run_id),
            until=lambda s: s in ("success", "failed"),
            timeout=600,
            what=f"run {run_id} ends; logs in {self.af.root}",
            interval=0.5,
        )
        ti = self.af.sql(
            "SELECT state, scheduled_dttm, queued_dttm, end_date, task_id, map_index FROM task_instance "
            "WHERE dag_id = %s AND run_id = %s AND (task_id = 'job' OR task_id LIKE %s)",
            row.dag_id,
            run_id,
            "%.bundle",
        )
        if state != "success" or len(ti) != 1 or ti[0][0] != "success":
            raise RuntimeError(f"run {run_id} ended {state} (task instances {ti}); logs in {self.af.root}")
        _, scheduled, queued, end_date, task_id, map_index = ti[0]
        success = end_date.timestamp()
        if row.kind == "floor":
            moment = self._xcom(row.dag_id, run_id, task_id, map_index)
            return Sample(
                datetime.fromisoformat(moment).timestamp(), success, None, _epoch(scheduled), _epoch(queued)
            )
        end = self._payload_end(stamp, row)
        sacct = self._sacct_end(row, run_id, task_id, map_index) if row.kind != "ssh" else None
        return Sample(end, success, sacct, _epoch(scheduled), _epoch(queued))

    def _xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
        rows = self.af.sql(
            "SELECT value FROM xcom WHERE dag_id = %s AND run_id = %s AND task_id = %s AND map_index = %s "
            "AND key = 'return_value'",
            dag_id,
            run_id,
            task_id,
            map_index,
        )
        if len(rows) != 1:
            raise RuntimeError(f"{dag_id} {run_id}: the floor task's moment is not in XCom ({rows})")
        value = rows[0][0]
        return str(value if not isinstance(value, str) or not value.startswith('"') else json.loads(value))

    def _payload_end(self, stamp: str, row: Row) -> float:
        """The payload's own end time; for a bundle, the latest of its streams'."""
        pattern = shlex.quote(stamp) + (".*" if row.kind == "bundle" else "")
        out = self.site.run(CLUSTER, f"cat {pattern}").stdout.split()
        expected = BUNDLE_STREAMS if row.kind == "bundle" else 1
        if len(out) != expected:
            raise RuntimeError(f"{stamp}: {len(out)} end time(s), expected {expected}: {out}")
        return max(float(t) for t in out)

    def _sacct_end(self, row: Row, run_id: str, task_id: str, map_index: int) -> float:
        """The job's sacct End (whole seconds), found by the name the operator gave it."""
        from airflow_desc.operators.job_names import job_name_for

        name = job_name_for(row.dag_id, run_id, task_id, map_index, 1)
        out = self.site.run(
            CLUSTER, f"SLURM_TIME_FORMAT=%s sacct -X -n -P -S now-3600 --name {shlex.quote(name)} -o End"
        ).stdout.split()
        if len(out) != 1 or not out[0].isdigit():
            raise RuntimeError(f"sacct End of the job named {name}: {out!r}")
        return float(out[0])


# --- the table ---------------------------------------------------------------------------------------------


def p95(values: Sequence[float]) -> float:
    """The 95th percentile, nearest rank (the largest value below 20 samples)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _fmt(value: float | None, width: int = 6) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width}.2f}"


def report(rows: Sequence[Row], samples: Mapping[Row, list[Sample]], checked: float) -> int:
    """Print the table; return 1 when a row of ours misses its target at the ``checked`` interval."""
    floor_rows = [r for r in rows if r.kind == "floor"]
    floor = statistics.median(s.latency for s in samples[floor_rows[0]]) if floor_rows else None
    print()
    print(
        "latency = task instance success - the payload's own end; from sacct = success - sacct End (whole s)"
    )
    print(
        "phases (medians): end->event = the trigger's event handed over (scheduled_dttm), event->queued = "
        "the scheduler, queued->success = task process + execute_complete"
    )
    header = (
        f"{'row':<14} {'poll s':>6} {'n':>3} {'median':>6} {'p95':>6} {'sacct':>6} "
        f"{'->event':>7} {'->queue':>7} {'->succ':>6} {'target':>6} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    missed = []
    for row in rows:
        got = samples.get(row) or []
        if not got:
            continue
        latencies = [s.latency for s in got]
        median = statistics.median(latencies)
        from_sacct = _median([None if s.sacct_end is None else s.success - s.sacct_end for s in got])
        to_event = _median([None if s.event is None else s.event - s.end for s in got])
        to_queued = _median(
            [None if s.event is None or s.queued is None else s.queued - s.event for s in got]
        )
        to_success = _median([None if s.queued is None else s.success - s.queued for s in got])
        target = None if floor is None or row.interval is None else floor + row.interval / 2 + SLACK_S
        ratio = None if target is None else median / target
        print(
            f"{row.label:<14} {row.interval if row.interval is not None else '-':>6} {len(got):>3} "
            f"{median:6.2f} {p95(latencies):6.2f} {_fmt(from_sacct)} {_fmt(to_event, 7)} "
            f"{_fmt(to_queued, 7)} {_fmt(to_success)} {_fmt(target)} {_fmt(ratio)}"
        )
        if row.kind in ("slurm", "bundle") and row.interval == checked and ratio is not None and ratio > 1:
            missed.append(row.label)
    for row in rows:
        if row.kind == "ssh" and row.interval in SSH_ANCHOR and samples.get(row):
            median = statistics.median(s.latency for s in samples[row])
            print(f"{row.label}: measured earlier here {SSH_ANCHOR[row.interval]} s; now {median:.2f} s")
    ours = {
        r.interval: statistics.median(s.latency for s in samples[r])
        for r in rows
        if r.kind == "slurm" and samples.get(r)
    }
    for row in rows:
        if row.kind == "ssh" and row.interval in ours and samples.get(row):
            theirs = statistics.median(s.latency for s in samples[row])
            print(
                f"at poll {row.interval:g} s: SSHRemoteJobOperator / SlurmOperator = "
                f"{theirs / ours[row.interval]:.2f}"
            )
    if floor is None:
        print("no floor row: no target check")
        return 0
    print(
        f"target at poll {checked:g} s: median <= floor {floor:.2f} + {checked:g}/2 + {SLACK_S} = "
        f"{floor + checked / 2 + SLACK_S:.2f} s: " + (f"MISSED by {', '.join(missed)}" if missed else "met")
    )
    return 1 if missed else 0


# --- main ------------------------------------------------------------------------------------------------


def parse_intervals(text: str, allow_profile: bool) -> list[float | None]:
    out: list[float | None] = []
    for part in text.split(","):
        part = part.strip()
        if part == "profile" and allow_profile:
            out.append(None)
            continue
        try:
            value = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"interval {part!r}: give seconds, e.g. 5" + (", or 'profile'" if allow_profile else "")
            ) from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"interval {part!r}: must be above 0 s")
        out.append(value)
    return out


def plan_rows(
    kinds: Sequence[str],
    intervals: Sequence[float | None],
    ssh_intervals: Sequence[float],
    profiles: Mapping[float | None, str],
    profile_interval: float,
) -> list[Row]:
    rows = []
    for kind in kinds:
        if kind == "floor":
            rows.append(Row("floor"))
        elif kind in ("slurm", "bundle"):
            rows += [Row(kind, profile_interval if i is None else i, profiles[i]) for i in intervals]
        else:
            rows += [Row("ssh", i) for i in ssh_intervals]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=8, help="runs of each row (default 8)")
    parser.add_argument(
        "--intervals",
        default="profile,5",
        help="poll intervals of ours, s; 'profile' = perlmutter's own (default profile,5)",
    )
    parser.add_argument("--ssh-intervals", default="1,5", help="poll intervals of the SSH peer (default 1,5)")
    parser.add_argument("--rows", default=",".join(KINDS), help=f"kinds of row (default {','.join(KINDS)})")
    parser.add_argument("--nap", type=float, default=5.0, help="seconds the floor's task defers (default 5)")
    parser.add_argument(
        "--sleep",
        type=float,
        default=4.0,
        help="a payload sleeps U(SLEEP, SLEEP+5) s before its CPU burn (default 4)",
    )
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--root", help="where the deployment lives (default: a new temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the deployment's files and history schema")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.rows.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        parser.error(f"--rows: unknown {', '.join(unknown)}; use some of {', '.join(KINDS)}")
    try:
        intervals = parse_intervals(args.intervals, allow_profile=True)
        ssh_intervals = [i for i in parse_intervals(args.ssh_intervals, allow_profile=False) if i is not None]
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if "DESC_SITE_AIRFLOW_DB_URI" not in os.environ:
        print("the site's environment is missing: source /var/lib/airflow-desc-site/env.sh first")
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)

    root = pathlib.Path(args.root or tempfile.mkdtemp(prefix="latency-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    clusters_file = root / "clusters.yaml"
    profiles = write_profiles(clusters_file, [i for i in intervals if i is not None])
    base = yaml.safe_load(clusters_file.read_text())["clusters"][CLUSTER]
    rows = plan_rows(kinds, intervals, ssh_intervals, profiles, float(base.get("poll_interval", 30)))
    checked = (
        max(r.interval for r in rows if r.interval is not None and r.kind != "ssh")
        if any(r.kind in ("slurm", "bundle") for r in rows)
        else 5.0
    )
    write_dags(root / "dags", rows, args.nap)
    os.environ["DESC_CLUSTERS_FILE"] = str(clusters_file)  # every component's profiles (tests/deploy.py)

    site = Site.from_env()
    tag = uuid.uuid4().hex[:8]
    stamps = site.run(CLUSTER, "echo $HOME").stdout.strip() + f"/latency-bench/{tag}"
    site.run(CLUSTER, f"mkdir -p {shlex.quote(stamps)}")
    af = Deployment.local(root, dags=root / "dags", history_prefix="latency")
    print(
        f"[latency] deployment in {root}; rows {', '.join(r.label for r in rows)}; {args.repeat} round(s)",
        flush=True,
    )
    samples: dict[Row, list[Sample]] = {r: [] for r in rows}
    started = time.monotonic()
    try:
        af.start()
        runner = Runner(af, site, stamps, tag, args.seed, args.sleep)
        runner.unpause(rows)
        order = random.Random(args.seed)
        for index in range(args.repeat):
            for row in order.sample(rows, len(rows)):
                sample = runner.run(row, index)
                samples[row].append(sample)
                print(
                    f"[latency] round {index + 1}/{args.repeat} {row.label:<14} {sample.latency:6.2f} s"
                    f"  ({time.monotonic() - started:5.0f} s)",
                    flush=True,
                )
    finally:
        for component in af.components.values():
            component.signal(signal.SIGTERM)
        for component in af.components.values():
            component.stop()
        site.run(CLUSTER, f"rm -rf {shlex.quote(stamps)}", check=False)
        if args.keep:
            print(f"[latency] kept {root} and the history schema {af.history.name}")
        else:
            af.history.drop()
            shutil.rmtree(root, ignore_errors=True)
    print(
        f"[latency] {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {args.repeat} round(s) in "
        f"{time.monotonic() - started:.0f} s"
    )
    return report(rows, samples, checked)


if __name__ == "__main__":
    sys.exit(main())
