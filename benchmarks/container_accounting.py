"""A payload in a podman container: what sacct and our record show, beside the same payload run plainly.

Not part of ``make test``. Runs on the local site's ``perlmutter`` (~1 min when the queue is free)::

    source /var/lib/airflow-desc-site/env.sh
    .venv/bin/python benchmarks/container_accounting.py [--cpu-s 4] [--mb 100] [--repeat 1]

Each round submits two single jobs with the same payload (python3 burning ``--cpu-s`` CPU-seconds
while holding ``--mb`` MB), rendered by ``render_job_script``: ``plain`` runs it in the job's shell,
``podman`` in the site's payload image (``localhost/desc-payload:test``, rootless podman). It waits
for both, reads sacct (``TotalCPU``, batch step ``MaxRSS``) and the job script's timing line, and
prints per job sacct's figures and the record's (``precise_usage`` / ``precise_max_rss``: what
``job_record`` keeps), then the ratios podman / plain. SLURM sees only podman's client, so the
container's sacct ratios are ~0.03 / ~0.15; the record's should be ~1 (its MaxRSS adds the client's
~17 MB and the container's page cache).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
import uuid

from airflow_desc.slurm import (
    group_accounting,
    parse_payload_timing,
    parse_sacct,
    precise_max_rss,
    precise_usage,
)
from airflow_desc.slurm.script import ContainerSpec, JobSpec, render_job_script

IMAGE = "localhost/desc-payload:test"
PAYLOAD = (
    "python3 -c 'import time\n"
    "b = bytearray({mb} * 1024 * 1024)\n"
    "for i in range(0, len(b), 4096): b[i] = 1\n"
    "t = time.process_time()\n"
    "while time.process_time() - t < {cpu}: pass'"
)


def ssh(command: str, stdin: str | None = None) -> str:
    """Run a command on the site's perlmutter login, as the cluster user."""
    env = os.environ
    argv = [
        "ssh", "-p", env["DESC_SITE_SSH_PORT_PERLMUTTER"], "-i", env["DESC_SITE_SSH_KEY"],
        "-o", f"UserKnownHostsFile={env['DESC_SITE_KNOWN_HOSTS']}", "-o", "BatchMode=yes",
        f"{env['DESC_SITE_USER']}@127.0.0.1", command,
    ]  # fmt: skip
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=True, timeout=120).stdout


def submit(name: str, command: str, container: ContainerSpec, mb: int) -> str:
    """Submit one job of the payload; return its id."""
    spec = JobSpec(
        job_name=name,
        command=command,
        partition="regular",
        mem_mb=mb + 300,
        time_limit_s=600,
        output=f"bench-container/{name}.out",
        container=container,
    )
    ssh("mkdir -p bench-container")
    return ssh("sbatch --parsable", stdin=render_job_script(spec)).strip().split(";")[0]


def wait(job_ids: list[str], timeout_s: float = 1800) -> None:
    """Wait until SLURM no longer lists the jobs (the queue is shared: a generous guard)."""
    deadline = time.monotonic() + timeout_s
    while ssh(f"squeue -h -j {','.join(job_ids)} -o %i").strip():
        if time.monotonic() > deadline:
            sys.exit(f"jobs {job_ids} still queued or running after {timeout_s} s")
        time.sleep(2)


def figures(job_id: str, name: str) -> dict[str, float | None]:
    """sacct's CPU and MaxRSS, and the record's, of a finished job."""
    fields = "JobID,JobName,State,ExitCode,Elapsed,TotalCPU,MaxRSS,ReqMem"
    text = ssh(f"sacct -j {job_id} -n -P -o {fields}")
    accounting = group_accounting(parse_sacct(text, tuple(fields.split(","))))[job_id]
    timing = parse_payload_timing(ssh(f"tail -n 5 bench-container/{shlex.quote(name)}.out"))
    _, cpu = precise_usage(accounting, timing)
    return {
        "sacct_cpu_s": accounting.total_cpu_s,
        "sacct_maxrss_mb": (accounting.max_rss_bytes or 0) / 2**20,
        "record_cpu_s": cpu,
        "record_maxrss_mb": (precise_max_rss(accounting, timing) or 0) / 2**20,
    }


def main() -> None:
    """Run the rounds and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu-s", type=float, default=4.0)
    p.add_argument("--mb", type=int, default=100)
    p.add_argument("--repeat", type=int, default=1)
    args = p.parse_args()
    command = PAYLOAD.format(mb=args.mb, cpu=args.cpu_s)
    kinds = {
        "plain": ContainerSpec(),
        "podman": ContainerSpec("podman", IMAGE, options=("--pull=never",)),
    }
    print(f"payload: {args.cpu_s} CPU-s, {args.mb} MB; {args.repeat} round(s)")
    print(f"{'job':>8} {'kind':>6} {'sacct cpu':>9} {'sacct MB':>8} {'record cpu':>10} {'record MB':>9}")
    for _ in range(args.repeat):
        tag = uuid.uuid4().hex[:8]
        names = {kind: f"bench-ctr-{kind}-{tag}" for kind in kinds}
        ids = {kind: submit(names[kind], command, kinds[kind], args.mb) for kind in kinds}
        wait(list(ids.values()))
        got = {kind: figures(ids[kind], names[kind]) for kind in kinds}
        for kind, f in got.items():
            print(
                f"{ids[kind]:>8} {kind:>6} {f['sacct_cpu_s'] or 0:9.3f} {f['sacct_maxrss_mb']:8.1f} "
                f"{f['record_cpu_s'] or 0:10.3f} {f['record_maxrss_mb']:9.1f}"
            )
        plain, boxed = got["plain"], got["podman"]
        for what in ("sacct_cpu_s", "sacct_maxrss_mb", "record_cpu_s", "record_maxrss_mb"):
            ratio = (boxed[what] or 0) / (plain[what] or float("nan"))
            print(f"  podman / plain, {what}: {ratio:.3f}")


if __name__ == "__main__":
    main()
