"""``clusters list``, ``clusters check`` and ``pools sync``: the cluster profiles and their Airflow pools."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["cmd_clusters_check", "cmd_clusters_list", "cmd_pools_sync"]


def _profiles(args: argparse.Namespace) -> Any:
    """Return the cluster profiles of ``--file``, else the configured ones."""
    from airflow_desc.clusters import load_cluster_profiles
    from airflow_desc.config import configured_cluster_profiles

    return load_cluster_profiles(args.file) if args.file else configured_cluster_profiles()


def cmd_clusters_list(args: argparse.Namespace) -> int:
    """Print the cluster profiles."""
    profiles = _profiles(args)
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


def _checked_key(hook: Any) -> Any:
    """Return the login's key validity (``SshKeyExpired`` if it expired); write it for the status page."""
    from airflow_desc.exceptions import SshKeyExpired
    from airflow_desc.triggers.key_renewal import record_key_check

    try:
        validity = hook.check_key()
    except SshKeyExpired:
        record_key_check(hook, hook.key_validity(), "clusters check")
        raise
    record_key_check(hook, validity, "clusters check")
    return validity


def cmd_clusters_check(args: argparse.Namespace) -> int:
    """Log in to each cluster and check that SLURM answers as its profile says, and the key's validity."""
    from airflow_desc.exceptions import DescError
    from airflow_desc.hooks.slurm import SlurmHook
    from airflow_desc.slurm.units import parse_duration
    from airflow_desc.ssh_keys import expiring_message

    profiles = _profiles(args)
    names = args.names or list(profiles.names)
    failures = 0
    for name in names:
        try:
            profile = profiles.get(name)
            hook = SlurmHook(
                profile.ssh_conn_id, jump_conn_id=profile.jump_conn_id or "", cluster=profile.name
            )
            key = _checked_key(hook)
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
        if key is not None and key.expires_soon():
            problems.append(expiring_message(profile.ssh_conn_id, key))
        until = f", key valid until {key.expires_at:%Y-%m-%d %H:%M} UTC" if key and key.expires_at else ""
        verdict = "WARN" if problems else "OK  "
        failures += bool(problems)
        print(
            f"{verdict} {name}: partition {partition} {avail}, max time {limit}, "
            f"{cores} cores, {mem} MB per node{until}" + "".join(f"; {p}" for p in problems)
        )
    return 1 if failures else 0


def cmd_pools_sync(args: argparse.Namespace) -> int:
    """Create or resize one Airflow pool per cluster profile."""
    from airflow_desc.plugins.pools import sync_pools

    for change in sync_pools(_profiles(args), dry_run=args.dry_run):
        print(("would set " if args.dry_run else "") + str(change))
    return 0
