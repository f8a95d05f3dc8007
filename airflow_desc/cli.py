"""The ``airflow-desc`` command: operator tools for DESC campaigns.

Commands::

    airflow-desc clusters list             the cluster profiles in use
    airflow-desc clusters check [NAME ...] log in to each cluster and check SLURM answers as profiled
    airflow-desc pools sync                one Airflow pool per cluster, sized by its max_queued_jobs

Every command has ``--help``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from airflow_desc import __version__

__all__ = ["build_parser", "main"]


def _cmd_clusters_list(args: argparse.Namespace) -> int:
    from airflow_desc.clusters import load_cluster_profiles

    profiles = load_cluster_profiles(args.file)
    print(f"cluster profiles from {profiles.source} (default: {profiles.default_name or '-'})")
    print(
        f"{'name':<20}{'ssh connection':<20}{'partition':<12}{'cores':>6}{'MB/node':>9}{'max walltime':>14}"
    )
    for p in profiles:
        print(
            f"{p.name:<20}{p.ssh_conn_id:<20}{p.partition or '-':<12}{p.cores_per_node:>6}"
            f"{p.memory_per_node_mb:>9}{p.max_walltime:>14}"
        )
    return 0


def _cmd_clusters_check(args: argparse.Namespace) -> int:
    from airflow_desc.clusters import load_cluster_profiles
    from airflow_desc.exceptions import DescError
    from airflow_desc.hooks.slurm import SlurmHook
    from airflow_desc.slurm.units import parse_duration

    profiles = load_cluster_profiles(args.file)
    names = args.names or list(profiles.names)
    failures = 0
    for name in names:
        try:
            profile = profiles.get(name)
            hook = SlurmHook(
                profile.ssh_conn_id, jump_conn_id=profile.jump_conn_id or "", cluster=profile.name
            )
            part = profile.partition or ""
            out = hook.run("sinfo -h -o '%P|%l|%c|%m|%a'" + (f" -p {part}" if part else "")).stdout
            hook.run("sacct -n -X -S now-1minutes -o JobID")
        except (DescError, ValueError) as exc:
            failures += 1
            print(f"FAIL {name}: {exc}")
            continue
        rows = [line.split("|") for line in out.splitlines() if line.strip()]
        if not rows:
            failures += 1
            print(
                f"FAIL {name}: partition {part or '(default)'} not found by sinfo; "
                "fix the profile's partition"
            )
            continue
        partition, limit, cores, mem, avail = rows[0]
        problems = []
        limit_s = parse_duration(limit)
        if limit_s is not None and limit_s < profile.max_walltime_s:
            problems.append(
                f"partition max time {limit} is below the profile's max_walltime {profile.max_walltime}"
            )
        if avail != "up":
            problems.append(f"partition {partition} is {avail}")
        verdict = "WARN" if problems else "OK  "
        failures += bool(problems)
        print(
            f"{verdict} {name}: partition {partition} {avail}, max time {limit}, "
            f"{cores} cores, {mem} MB per node" + "".join(f"; {p}" for p in problems)
        )
    return 1 if failures else 0


def _cmd_pools_sync(args: argparse.Namespace) -> int:
    import shutil
    import subprocess

    from airflow_desc.clusters import load_cluster_profiles

    airflow = shutil.which("airflow") or str(__import__("pathlib").Path(sys.executable).with_name("airflow"))
    profiles = load_cluster_profiles(args.file)
    for p in profiles:
        # Deferred tasks keep their slot: a job waiting in SLURM's queue counts against max_queued_jobs.
        cmd = [airflow, "pools", "set", "--include-deferred", p.pool_name, str(p.max_queued_jobs),
               f"airflow-desc: jobs queued or running on cluster {p.name}"]  # fmt: skip
        if args.dry_run:
            print(" ".join(cmd))
            continue
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(
                f"airflow-desc: error: could not set pool {p.pool_name}: {proc.stderr.strip()}",
                file=sys.stderr,
            )
            return 1
        print(f"pool {p.pool_name}: {p.max_queued_jobs} slots (deferred tasks included)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of ``airflow-desc``."""
    parser = argparse.ArgumentParser(
        prog="airflow-desc",
        description="Operator tools for LSST DESC campaigns run by Airflow on SLURM clusters.",
    )
    parser.add_argument("--version", action="version", version=f"airflow-desc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    clusters = sub.add_parser("clusters", help="cluster profiles: list them, check the clusters answer")
    clusters_sub = clusters.add_subparsers(dest="action", metavar="ACTION")
    clusters_sub.required = True
    file_help = "cluster profile file (default: $DESC_CLUSTERS_FILE or [desc] clusters_file)"
    listing = clusters_sub.add_parser("list", help="list the cluster profiles")
    listing.add_argument("--file", help=file_help)
    listing.set_defaults(func=_cmd_clusters_list)
    check = clusters_sub.add_parser(
        "check", help="log in to each cluster over SSH and check sinfo/sacct answer as the profile says"
    )
    check.add_argument("names", nargs="*", help="clusters to check (default: all)")
    check.add_argument("--file", help=file_help)
    check.set_defaults(func=_cmd_clusters_check)

    pools = sub.add_parser("pools", help="Airflow pools that bound each cluster's queued jobs")
    pools_sub = pools.add_subparsers(dest="action", metavar="ACTION")
    pools_sub.required = True
    sync = pools_sub.add_parser(
        "sync", help="create or resize one pool per cluster profile (slurm_<name>, max_queued_jobs slots)"
    )
    sync.add_argument("--file", help=file_help)
    sync.add_argument(
        "--dry-run", action="store_true", help="print the airflow commands instead of running them"
    )
    sync.set_defaults(func=_cmd_pools_sync)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``airflow-desc``; return its exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except Exception as exc:  # noqa: BLE001 - a CLI reports, it does not dump tracebacks on operators
        from airflow_desc.exceptions import DescError

        if not isinstance(exc, (DescError, ValueError, OSError)):
            raise
        print(f"airflow-desc: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
