"""Poll cost: SSH connections and remote commands per poll interval while N jobs are watched.

Run by ``make bench`` (never by ``make test``) against the local site::

    source /var/lib/airflow-desc-site/env.sh
    AIRFLOW_HOME=$(mktemp -d) .venv/bin/python benchmarks/poll_cost.py [--sizes 10,100,1000]

Side by side, in one run, on the ``perlmutter`` login of the site:

* **ours**: N held SLURM jobs (``sbatch --hold``), watched by N ``SlurmJobTrigger`` coroutines in one
  event loop, i.e. by the one ``ClusterPoller`` they share.
* **theirs**: the trigger a deferred ``SSHRemoteJobOperator`` task runs in the triggerer
  (``SSHRemoteJobTrigger`` of apache-airflow-providers-ssh), for N real remote jobs started with the
  operator's own wrapper (``build_posix_wrapper_command``: a detached ``sleep`` writing its exit code
  to ``<job dir>/exit_code`` when it ends), so every trigger keeps polling.

An *interval* is one poll round in which every watched job is checked once: one ``poll_once`` of our
poller; one completion check + log read of each of their N triggers. The first round (which opens
the connections) is a warm-up; the next ``--polls`` rounds are measured and reported per interval.
Counts are deterministic; wall-clock times are printed as information only.

Where the numbers come from: per-interval counts are taken client-side (ours: ``SlurmHook.stats``,
snapshotted after each poll; theirs: a counting subclass of the trigger, attributing each connection
and command to the trigger's poll round). Each phase's totals are checked against the server: the
sshd of perlmutter logs each accepted connection (``Accepted publickey for desc ... port P``) and each
command (``Starting session: command for desc ... port P``) at LogLevel VERBOSE; only lines on the
client ports this process used for the measured component are counted, so other users of the site
do not pollute them. Their cost at sizes not measured is extrapolated from a least-squares line
through the sizes measured, and marked so.

Exit status: 0 when the ratio (theirs / ours, connections + commands per interval) at N=1000 is at
least the target (100), 1 when it is missed or a count disagrees with the sshd log.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import os
import re
import secrets
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow.providers.ssh.triggers.ssh_remote_job import SSHRemoteJobTrigger
from airflow.providers.ssh.utils.remote_job import (
    RemoteJobPaths,
    build_posix_cleanup_command,
    build_posix_kill_command,
    build_posix_wrapper_command,
    generate_job_id,
)

from airflow_desc.hooks.slurm import SlurmHook
from airflow_desc.triggers.slurm import ClusterPoller, SlurmJobTrigger

CONN_ID = "perlmutter_ssh"
TARGET_N = 1000
TARGET_RATIO = 100.0
SUBMIT_CHUNK = 250  # sbatch calls per ssh command
REMOTE_JOB_SECONDS = 900  # their fake jobs end by themselves even if the cleanup never runs

_ACCEPTED = re.compile(r"Accepted publickey for \S+ from \S+ port (\d+) ")
_SESSION = re.compile(r"Starting session: command for \S+ from \S+ port (\d+) ")


# --- server-side counter ------------------------------------------------------------------------
class SshdLog:
    """Reads what the perlmutter sshd logged since :meth:`mark`, per client port."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size

    def since_mark(self) -> tuple[collections.Counter[int], collections.Counter[int]]:
        """Accepted connections and command sessions per client port since the mark."""
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        text = data[: data.rfind(b"\n") + 1].decode(errors="replace")
        accepted = collections.Counter(int(m.group(1)) for m in _ACCEPTED.finditer(text))
        sessions = collections.Counter(int(m.group(1)) for m in _SESSION.finditer(text))
        return accepted, sessions


@dataclass
class Measure:
    """One side at one N."""

    who: str
    n: int
    polls: int
    connections: float = 0.0  # opened per interval, measured window
    commands: float = 0.0  # run per interval, measured window
    startup_connections: int = 0  # opened during the warm-up round
    startup_commands: int = 0
    held: int = 0  # connections open while watching
    by_command: dict[str, float] = field(default_factory=dict)  # per interval, by first word
    seconds_per_round: float = 0.0  # wall clock, information only
    client_total: tuple[int, int] = (0, 0)  # connections, commands over the whole phase
    server_total: tuple[int, int] = (0, 0)  # the same from the sshd log, on this phase's ports
    others: int = 0  # connections of other clients of the site during the phase
    extrapolated: bool = False

    @property
    def total(self) -> float:
        return self.connections + self.commands

    @property
    def agrees(self) -> bool:
        return self.client_total == self.server_total


async def _park() -> None:
    """Wait until cancelled: a measured component stops here, between two polls, never mid-command."""
    await asyncio.get_running_loop().create_future()


def _server_totals(log: SshdLog, ports: set[int]) -> tuple[tuple[int, int], int]:
    time.sleep(0.5)  # let sshd flush the last lines
    accepted, sessions = log.since_mark()
    ours = (sum(accepted[p] for p in ports), sum(sessions[p] for p in ports))
    return ours, sum(c for p, c in accepted.items() if p not in ports)


# --- ours ---------------------------------------------------------------------------------------
def submit_held_jobs(hook: SlurmHook, n: int, name: str) -> list[str]:
    """Submit ``n`` held jobs named ``name``, in a few ssh commands; return their ids."""
    ids: list[str] = []
    while len(ids) < n:
        count = min(SUBMIT_CHUNK, n - len(ids))
        sbatch = f"sbatch --parsable --hold -J {shlex.quote(name)} -t 1 -o /dev/null --wrap true"
        result = hook.run(f"for i in $(seq {count}); do {sbatch} || exit 1; done", idempotent=False)
        ids.extend(line.split(";")[0] for line in result.stdout.split() if line.strip())
    return ids


def wait_known_to_sacct(hook: SlurmHook, ids: list[str], timeout: float = 60.0) -> None:
    """Wait until slurmdbd has recorded every job (so the measured polls need no squeue)."""
    deadline = time.monotonic() + timeout
    wanted = set(ids)
    while time.monotonic() < deadline:
        known: set[str] = set()
        for i in range(0, len(ids), 500):
            chunk = ",".join(ids[i : i + 500])
            known.update(hook.run(f"sacct -X -n -P -o JobID -j {chunk}").stdout.split())
        if wanted <= known:
            return
        time.sleep(1)
    print(f"warning: sacct does not know {len(wanted - known)} jobs yet", file=sys.stderr)


def measure_ours(ids: list[str], polls: int, interval: float, log: SshdLog) -> Measure:
    """Watch ``ids`` with one SlurmJobTrigger each; count one warm-up poll plus ``polls`` polls."""
    n = len(ids)
    SlurmHook(CONN_ID).close()  # the poller opens its own connection, as in a fresh triggerer
    ClusterPoller._registry.clear()  # a poller left by a previous phase's (closed) loop
    ports: set[int] = set()
    snapshots: list[tuple[int, collections.Counter[str], float]] = []  # (watched, stats, time)
    original_poll, original_connect = ClusterPoller.poll_once, SlurmHook._connect

    def connect(self: SlurmHook) -> Any:
        client = original_connect(self)
        ports.add(client.get_transport().sock.getsockname()[1])
        return client

    async def poll_once(self: ClusterPoller, hook: SlurmHook) -> None:
        watched = len(self.watches)
        await original_poll(self, hook)
        snapshots.append((watched, collections.Counter(SlurmHook.stats[CONN_ID]), time.monotonic()))
        full = [i for i, s in enumerate(snapshots) if s[0] == n]
        if full and len(snapshots) - 1 - full[0] >= polls:
            await _park()

    async def main() -> None:
        tasks = [
            asyncio.create_task(
                _drain(SlurmJobTrigger(job_id=i, ssh_conn_id=CONN_ID, poll_interval=interval))
            )
            for i in ids
        ]
        try:
            held = "a trigger ended while its job is held"
            await _run_until(tasks, lambda: _done(snapshots, n, polls), held)
        finally:
            for poller in ClusterPoller._registry.values():
                if poller._task is not None:
                    poller._task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    start_stats = collections.Counter(SlurmHook.stats[CONN_ID])
    log.mark()
    ClusterPoller.poll_once, SlurmHook._connect = poll_once, connect  # type: ignore[method-assign]
    try:
        asyncio.run(main())
    finally:
        ClusterPoller.poll_once, SlurmHook._connect = original_poll, original_connect  # type: ignore[method-assign]
        SlurmHook(CONN_ID).close()
    warm = next(i for i, s in enumerate(snapshots) if s[0] == n)
    (_, s0, t0), (_, s1, t1) = snapshots[warm], snapshots[warm + polls]
    window = s1 - s0
    startup = s0 - start_stats
    end = snapshots[-1][1] - start_stats
    m = Measure("ours", n, polls)
    m.connections, m.commands = window["connections"] / polls, window["commands"] / polls
    m.by_command = {k: v / polls for k, v in sorted(window.items()) if k not in ("connections", "commands")}
    m.startup_connections, m.startup_commands = startup["connections"], startup["commands"]
    m.held = 1
    m.seconds_per_round = (t1 - t0) / polls
    m.client_total = (end["connections"], end["commands"])
    m.server_total, m.others = _server_totals(log, ports)
    return m


def _done(snapshots: list[tuple[int, collections.Counter[str], float]], n: int, polls: int) -> bool:
    full = [i for i, s in enumerate(snapshots) if s[0] == n]
    return bool(full) and len(snapshots) - 1 - full[0] >= polls


async def _drain(trigger: Any) -> Any:
    async for event in trigger.run():
        return event.payload
    return None


async def _run_until(tasks: list[asyncio.Task[Any]], done: Callable[[], bool], ended_early: str) -> None:
    """Wait until ``done()``; a task that ends first is an error (its job still runs). Cancel the tasks."""
    try:
        while not done():
            for task in tasks:
                if task.done():
                    raise RuntimeError(f"{ended_early}: {task.result()}")
            await asyncio.sleep(0.05)
    finally:
        for task in tasks:
            task.cancel()


# --- theirs -------------------------------------------------------------------------------------
class CountingRemoteJobTrigger(SSHRemoteJobTrigger):
    """The provider's trigger, counting connections and commands per poll round.

    A round is what ``run()`` does per iteration: a completion check, then a log read. Round 0 opens
    the connection (warm-up); after round ``stop_after`` the trigger parks until cancelled.
    """

    def __init__(self, *args: Any, stop_after: int, on_port: Callable[[int], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stop_after = stop_after
        self.on_port = on_port
        self.round = 0
        self.connections: collections.Counter[int] = collections.Counter()  # per round
        self.commands: collections.Counter[int] = collections.Counter()
        self.by_command: collections.Counter[str] = collections.Counter()  # in measured rounds
        self.round_ended: dict[int, float] = {}

    async def _connect(self) -> Any:
        conn = await super()._connect()
        self.connections[self.round] += 1
        self.on_port(conn.get_extra_info("sockname")[1])
        return conn

    async def _run_command(self, conn: Any, command: str) -> tuple[int, str, str]:
        self.commands[self.round] += 1
        if self.round >= 1:
            self.by_command[command.split(" ", 1)[0]] += 1
        return await super()._run_command(conn, command)

    async def _read_log_chunk(self, conn: Any) -> tuple[str, int]:
        result = await super()._read_log_chunk(conn)
        self.round_ended[self.round] = time.monotonic()
        self.round += 1
        if self.round > self.stop_after:
            await _park()
        return result


def start_remote_jobs(hook: SlurmHook, n: int, token: str) -> list[RemoteJobPaths]:
    """Start ``n`` detached remote jobs exactly as SSHRemoteJobOperator.execute does, in one ssh command."""
    paths = [
        RemoteJobPaths(
            job_id=generate_job_id("poll_cost", f"watch_{i}", f"bench_{token}", 1), remote_os="posix"
        )
        for i in range(n)
    ]
    script = "\n".join(build_posix_wrapper_command(f"sleep {REMOTE_JOB_SECONDS}", p) for p in paths)
    started = hook.run("bash -s", stdin=script + "\n", idempotent=False).stdout.split()
    if started != [p.job_id for p in paths]:
        raise RuntimeError(f"started {len(started)} of {n} remote jobs")
    return paths


def stop_remote_jobs(hook: SlurmHook, paths: list[RemoteJobPaths]) -> None:
    """Kill the remote jobs and remove their directories (the operator's own kill and cleanup commands)."""
    lines = [
        f"{build_posix_kill_command(p.pid_file)}; {build_posix_cleanup_command(p.job_dir)}" for p in paths
    ]
    hook.run("bash -s", stdin="\n".join(lines) + "\n", check=False)


def measure_theirs(paths: list[RemoteJobPaths], polls: int, interval: float, log: SshdLog) -> Measure:
    """Run one SSHRemoteJobTrigger per remote job; count one warm-up round plus ``polls`` rounds."""
    n = len(paths)
    ports: set[int] = set()
    triggers = [
        CountingRemoteJobTrigger(
            ssh_conn_id=CONN_ID,
            remote_host=None,
            job_id=p.job_id,
            job_dir=p.job_dir,
            log_file=p.log_file,
            exit_code_file=p.exit_code_file,
            remote_os="posix",
            poll_interval=int(interval),
            stop_after=polls,
            on_port=ports.add,
        )
        for p in paths
    ]

    async def main() -> None:
        tasks = [asyncio.create_task(_drain(t)) for t in triggers]
        try:
            runs = "a remote-job trigger ended while its job runs"
            await _run_until(tasks, lambda: min(t.round for t in triggers) > polls, runs)
        finally:
            await asyncio.gather(*tasks, return_exceptions=True)

    log.mark()
    asyncio.run(main())
    window = range(1, polls + 1)
    m = Measure("theirs", n, polls)
    m.connections = sum(t.connections[r] for t in triggers for r in window) / polls
    m.commands = sum(t.commands[r] for t in triggers for r in window) / polls
    by_command: collections.Counter[str] = sum((t.by_command for t in triggers), collections.Counter())
    m.by_command = {k: v / polls for k, v in sorted(by_command.items())}
    m.startup_connections = sum(t.connections[0] for t in triggers)
    m.startup_commands = sum(t.commands[0] for t in triggers)
    m.held = n
    m.seconds_per_round = (
        max(t.round_ended[polls] for t in triggers) - max(t.round_ended[0] for t in triggers)
    ) / polls
    m.client_total = (
        sum(sum(t.connections.values()) for t in triggers),
        sum(sum(t.commands.values()) for t in triggers),
    )
    m.server_total, m.others = _server_totals(log, ports)
    return m


# --- report -------------------------------------------------------------------------------------
def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares ``y = a*N + b`` (through the origin for a single point)."""
    if len(points) == 1:
        n, y = points[0]
        return y / n, 0.0
    mean_n = sum(n for n, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    a = sum((n - mean_n) * (y - mean_y) for n, y in points) / sum((n - mean_n) ** 2 for n, _ in points)
    return a, mean_y - a * mean_n


def extrapolate(measured: list[Measure], n: int, polls: int) -> tuple[Measure, str]:
    a_conn, b_conn = fit([(m.n, m.connections) for m in measured])
    a_cmd, b_cmd = fit([(m.n, m.commands) for m in measured])
    m = Measure("theirs", n, polls, extrapolated=True)
    m.connections, m.commands = max(0.0, a_conn * n + b_conn), max(0.0, a_cmd * n + b_cmd)
    m.held = m.startup_connections = n  # one connection per trigger, held (see the measured rows)
    law = (
        f"theirs per interval (fit on N={','.join(str(x.n) for x in measured)}): "
        f"connections = {a_conn:.3f}*N + {b_conn:.3f}, commands = {a_cmd:.3f}*N + {b_cmd:.3f}"
    )
    return m, law


def fmt(x: float) -> str:
    return f"{x:.0f}" if abs(x - round(x)) < 1e-9 else f"{x:.2f}"


def _row(n: int, o: Measure | None, t: Measure | None) -> tuple[str, float | None]:
    star = "*" if t is not None and t.extrapolated else ""
    ratio = t.total / o.total if o and t and o.total else None
    cells = [
        f"{n:>5}",
        f"{fmt(o.connections) if o else '-':>13} {fmt(o.commands) if o else '-':>12}",
        f"{fmt(t.connections) + star if t else '-':>15} {fmt(t.commands) + star if t else '-':>14}",
        f"{f'{ratio:.0f}x' + star if ratio is not None else '-':>8}",
        f"{(str(o.held) if o else '-') + ' / ' + (str(t.held) + star if t else '-'):>16}",
        f"{(f'{o.seconds_per_round:.2f}' if o else '-') + ' / ' + (f'{t.seconds_per_round:.2f}' if t and not t.extrapolated else '-'):>19}",  # noqa: E501
    ]
    return " | ".join(cells), ratio


LEGEND = """\
Counters: conn/int and cmd/int are client-side (ours: SlurmHook.stats snapshotted after each poll;
  theirs: a counting subclass of SSHRemoteJobTrigger, per poll round of each trigger).
  ratio = theirs / ours, (connections + commands) per interval. held = SSH connections kept open
  while watching. s/round = wall clock of one round, information only (this machine is noisy).
Cross-check per phase: client totals (connections, commands, warm-up included) vs the sshd log of
  perlmutter (Accepted publickey / Starting session: command lines on this phase's client ports):"""


def report(ours: dict[int, Measure], theirs: dict[int, Measure], law: str, args: argparse.Namespace) -> int:
    print()
    print(
        f"Poll cost on {CONN_ID}, per poll interval (one round checking every watched job once): "
        f"{args.polls} measured rounds after one warm-up round, poll interval {args.interval:g} s"
    )
    head = (
        f"{'N':>5} | {'ours conn/int':>13} {'ours cmd/int':>12} | {'theirs conn/int':>15} "
        f"{'theirs cmd/int':>14} | {'ratio':>8} | {'held ours/theirs':>16} | {'s/round ours/theirs':>19}"
    )
    print(head)
    print("-" * len(head))
    ratios: dict[int, float] = {}
    for n in sorted(set(ours) | set(theirs)):
        line, ratio = _row(n, ours.get(n), theirs.get(n))
        print(line)
        if ratio is not None:
            ratios[n] = ratio
    print()
    if any(t.extrapolated for t in theirs.values()):
        print(f"* extrapolated from the measured sizes, not measured: {law}")
    print(LEGEND)
    ok = True
    for m in [*ours.values(), *(t for t in theirs.values() if not t.extrapolated)]:
        per_cmd = ", ".join(f"{k} {fmt(v)}" for k, v in m.by_command.items())
        ok &= m.agrees
        print(
            f"  {m.who:>6} N={m.n:<5} client {m.client_total} sshd {m.server_total} "
            f"{'agree' if m.agrees else 'DISAGREE'}; warm-up round {m.startup_connections} conn "
            f"{m.startup_commands} cmd; per interval: {per_cmd}; other clients' connections: {m.others}"
        )
    print()
    if TARGET_N not in ratios:
        print(f"ratio at N={TARGET_N}: not measured (add {TARGET_N} to --sizes); target not evaluated")
        return 0 if ok else 1
    star = " (theirs extrapolated)" if theirs[TARGET_N].extrapolated else ""
    print(f"ratio at N={TARGET_N}: {ratios[TARGET_N]:.0f}{star} (target >= {TARGET_RATIO:.0f})")
    if not ok:
        print("FAILED: a client-side count disagrees with the sshd log")
        return 1
    return 0 if ratios[TARGET_N] >= TARGET_RATIO else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    def sizes(text: str) -> list[int]:
        return sorted({int(x) for x in text.split(",") if x.strip()})

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=sizes, default=[10, 100, 1000], help="N for ours (default 10,100,1000)"
    )
    parser.add_argument(
        "--theirs-sizes", type=sizes, default=[10, 100], help="N measured for theirs (default 10,100)"
    )
    parser.add_argument(
        "--polls", type=int, default=3, help="measured poll rounds after the warm-up (default 3)"
    )
    parser.add_argument("--interval", type=int, default=2, help="poll interval, seconds (default 2)")
    args = parser.parse_args(argv)
    if args.polls < 1 or args.interval < 1 or not args.sizes or not args.theirs_sizes:
        parser.error("--polls and --interval must be >= 1, and the size lists non-empty")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for name in ("asyncssh", "paramiko"):
        logging.getLogger(name).setLevel(logging.WARNING)
    site = os.environ.get("DESC_SITE_DIR")
    if not site or f"AIRFLOW_CONN_{CONN_ID.upper()}" not in os.environ:
        print(
            "source /var/lib/airflow-desc-site/env.sh first (needs DESC_SITE_DIR and the site's connections)"
        )
        return 2
    log = SshdLog(Path(site) / "log" / "sshd-perlmutter.log")
    hook = SlurmHook(CONN_ID)
    token = secrets.token_hex(4)
    ours: dict[int, Measure] = {}
    theirs: dict[int, Measure] = {}
    job_ids: list[str] = []
    t_start = time.monotonic()
    try:
        t = time.monotonic()
        job_ids = submit_held_jobs(hook, max(args.sizes), f"desc-bench-{token}")
        wait_known_to_sacct(hook, job_ids)
        print(
            f"submitted {len(job_ids)} held jobs ({job_ids[0]}..{job_ids[-1]}) "
            f"in {time.monotonic() - t:.1f} s",
            flush=True,
        )
        for n in args.sizes:
            ours[n] = measure_ours(job_ids[:n], args.polls, args.interval, log)
            print(
                f"ours   N={n}: {fmt(ours[n].connections)} conn + {fmt(ours[n].commands)} cmd per interval",
                flush=True,
            )
    finally:
        if job_ids:
            for i in range(0, len(job_ids), 500):
                hook.run("scancel " + " ".join(job_ids[i : i + 500]), check=False)
    for n in args.theirs_sizes:
        paths: list[RemoteJobPaths] = []
        try:
            paths = start_remote_jobs(hook, n, f"{token}_{n}")
            theirs[n] = measure_theirs(paths, args.polls, args.interval, log)
            print(
                f"theirs N={n}: {fmt(theirs[n].connections)} conn + {fmt(theirs[n].commands)} cmd "
                "per interval",
                flush=True,
            )
        finally:
            if paths:
                stop_remote_jobs(hook, paths)
    law = ""
    missing = [n for n in args.sizes if n not in theirs]
    for n in missing:
        theirs[n], law = extrapolate(
            [theirs[k] for k in sorted(theirs) if not theirs[k].extrapolated], n, args.polls
        )
    status = report(ours, theirs, law, args)
    print(f"(whole run {time.monotonic() - t_start:.0f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
