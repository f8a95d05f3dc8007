"""The ``airflow-desc`` command: operator tools for DESC campaigns.

Commands::

    airflow-desc clusters list             the cluster profiles in use
    airflow-desc clusters check [NAME ...] log in to each cluster and check SLURM answers as profiled,
                                           and the login's key (certificate) is not about to expire
    airflow-desc pools sync                one Airflow pool per cluster, sized by its max_queued_jobs
                                           (generated batch and bundle tasks run in them)
    airflow-desc status                    the DC1-style status table (--format table|csv|json): the
                                           history merged with the live states of runs in progress
    airflow-desc report --out DIR          HTML report: status table, seaborn figures, resource advice
    airflow-desc advice [--write FILE --extends SPEC]
                                           memory and walltime per process from the history's
                                           percentiles; --write: as a render overlay
    airflow-desc history [filters]         process instances (--process, --state, --reason, --stream ...)
    airflow-desc history flush             write the records spooled while the history DB was down
    airflow-desc rerun --reason WHY [filters]  clear the task instances of the selected process
                                           instances (and what is downstream) through Airflow's
                                           REST API, as the API connection's user
    airflow-desc logs PROCESS [--stream G]  the log tails the history keeps of a process's instances
                                           (--try N, --run R); --full reads whole logs over SSH

``status``, ``report``, ``history`` and ``rerun`` select by ``--workflow`` (the spec's name),
``--version`` (its top-level version: two versions may run side by side) and ``--variant``.

Every command has ``--help``, and is also ``airflow desc <command>`` (:func:`airflow_cli_commands`,
listed under ``cli`` in the provider info).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from airflow_desc import __version__

__all__ = ["build_parser", "main"]


def _profiles(args: argparse.Namespace) -> Any:
    """Return the cluster profiles of ``--file``, else the configured ones."""
    from airflow_desc.clusters import load_cluster_profiles
    from airflow_desc.config import configured_cluster_profiles

    return load_cluster_profiles(args.file) if args.file else configured_cluster_profiles()


def _cmd_clusters_list(args: argparse.Namespace) -> int:
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


def _cmd_clusters_check(args: argparse.Namespace) -> int:
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


def _cmd_pools_sync(args: argparse.Namespace) -> int:
    from airflow_desc.plugins.pools import sync_pools

    for change in sync_pools(_profiles(args), dry_run=args.dry_run):
        print(("would set " if args.dry_run else "") + str(change))
    return 0


def _when(text: str | None) -> Any:
    from datetime import datetime

    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM") from None


def _emit(table: Any, fmt: str) -> None:
    from airflow_desc.reports.status import format_text, to_csv, to_json

    print(
        {"table": format_text, "csv": to_csv, "json": to_json}[fmt](table), end="" if fmt != "table" else "\n"
    )


def _selection(args: argparse.Namespace) -> Any:
    """Return the ``HistoryFilter`` of a command's selection arguments (:func:`_history_filters`).

    The status table's commands have no ``--process`` ...: what a command lacks does not narrow.
    """
    from airflow_desc.history import HistoryFilter

    def given(name: str) -> Any:
        return getattr(args, name, None)

    return HistoryFilter(
        workflow=args.workflow, variant=args.variant, version=args.workflow_version, run_id=args.run,
        process=given("process"),
        stream_glob=given("stream"), state=given("state"), reason=given("reason_class"),
        cluster=given("cluster"), node=given("node"), since=_when(args.since), until=_when(args.until),
    )  # fmt: skip


def _history_engine(args: argparse.Namespace) -> Any:
    """Return the history's engine for reading; a database without the history's tables is an error."""
    from airflow_desc.history import open_history
    from airflow_desc.status.current import readable_history

    return readable_history(open_history(args.db))


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send what is written to stdout meanwhile to stderr, at the file-descriptor level.

    Reading live states sets Airflow up (its ORM, its logging) and migrates nothing, but Airflow's
    logging writes what it logs meanwhile to the stdout it was configured with, which would spoil
    ``status --format json``. A CLI is one thread; the api-server's page never does this.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _table_counts(args: argparse.Namespace, selection: Any) -> Any:
    """Return the history's counts merged with the live ones (``CurrentCounts``): status, report."""
    from airflow_desc.history import open_history
    from airflow_desc.status.current import current_counts

    with _stdout_to_stderr():  # Airflow logs to stdout: not into --format json
        current = current_counts(open_history(args.db), selection, live=not args.no_live)
    if current.warning:
        print(f"airflow-desc: warning: {current.warning} (--no-live hides this warning)", file=sys.stderr)
    for note in current.notes:
        print(f"airflow-desc: note: {note}", file=sys.stderr)
    return current


def _cmd_status(args: argparse.Namespace) -> int:
    from airflow_desc.reports.status import attempts_table, status_table

    current = _table_counts(args, _selection(args))
    if current.empty:  # said to a person; csv and json still print their (all-zero) tables
        print("no process instance recorded or in progress for this selection", file=sys.stderr)
        if args.format == "table":
            return 0
    table = status_table(current.counts, current.live, order=current.order)
    attempts = attempts_table(current.counts, order=current.order) if args.attempts else None
    if args.format == "json" and attempts is not None:  # one JSON document, not two
        import json

        from airflow_desc.reports.status import to_json

        print(json.dumps({"status": json.loads(to_json(table)), "attempts": json.loads(to_json(attempts))}))
        return 0
    _emit(table, args.format)
    if attempts is not None:
        _emit(attempts, args.format)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    import pandas as pd

    from airflow_desc.history.queries import process_instances
    from airflow_desc.reports.html import write_report
    from airflow_desc.reports.status import status_table

    selection = _selection(args)
    current = _table_counts(args, selection)
    if current.empty:
        print("no process instance recorded or in progress for this selection: no report written")
        return 1
    try:
        instances = process_instances(_history_engine(args), selection)
    except ValueError:  # in progress, nothing recorded yet: the table alone
        from airflow_desc.history.queries import PROCESS_INSTANCE_COLUMNS

        instances = pd.DataFrame(columns=list(PROCESS_INSTANCE_COLUMNS))
    table = status_table(current.counts, current.live, order=current.order)
    index = write_report(args.out, table, instances, title=args.title)
    print(f"wrote {index}")
    return 0


def _cmd_advice(args: argparse.Namespace) -> int:
    import datetime as dt

    from airflow_desc.history.queries import process_instances
    from airflow_desc.reports.advice import resource_advice

    if bool(args.write) != bool(args.extends):
        raise ValueError(
            "--write and --extends go together: --extends names the spec or render overlay the written "
            "overlay applies to, e.g. --extends dags/workflows/dc1-local.yaml"
        )
    instances = process_instances(_history_engine(args), _selection(args))
    if args.write:
        instances = instances[instances["process_type"] == "batch"]  # a script asks SLURM for nothing
    table = resource_advice(instances, quantile=args.quantile, headroom=args.headroom)
    if args.write:
        return _write_advice(args, table, len(instances), dt.datetime.now(dt.timezone.utc))
    if args.format == "json":
        print(table.to_json(orient="records"))
    elif args.format == "csv":
        print(table.to_csv(index=False), end="")
    else:
        print(table.to_string(index=False) if len(table) else "no process instance matches")
    return 0


def _write_advice(args: argparse.Namespace, table: Any, attempts: int, now: Any) -> int:
    """Write the advice overlay, then read it back as a renderer would (an error names the file)."""
    from pathlib import Path

    from airflow_desc.reports.advice import advice_overlay
    from airflow_desc.workflow.overlays import load_overlay

    out, extends = Path(args.write), Path(args.extends)
    if not extends.is_file():
        raise ValueError(f"--extends {extends}: no such file; name the spec or render overlay to extend")
    chosen = (
        ("workflow", args.workflow),
        ("variant", args.variant),
        ("run", args.run),
        ("process", args.process),
    )
    selected = ", ".join(f"{name} {value}" for name, value in chosen if value)
    header = [
        f"Written by `airflow-desc advice` at {now:%Y-%m-%dT%H:%M:%SZ} from {attempts} attempts of batch "
        f"processes ({selected or 'every workflow'}).",
        f"Each suggestion fits {args.quantile:.0%} of the instances with {args.headroom:g}x headroom; "
        "evidence says what it was learnt from.",
        "Render this file instead of the one it extends (its DAG ids are that file's): "
        "load_workflow_dags(__file__, '<this file>').",
    ]
    relative = os.path.relpath(extends.resolve(), out.resolve().parent)
    out.write_text(advice_overlay(table, relative, header=header), encoding="utf-8")
    _spec, options = load_overlay(out)
    print(f"wrote {out}: memory and walltime of {len(options.resources)} process(es), extending {relative}")
    return 0


def _cmd_history(args: argparse.Namespace) -> int:
    from airflow_desc.history import default_spooling_recorder
    from airflow_desc.history.queries import process_instances

    if args.action == "flush":
        report = default_spooling_recorder().flush()
        print(f"flushed {report.flushed} spooled record(s) to the history")
        if report.rejected:
            print(
                f"{report.rejected} corrupt spool line(s) kept aside in {report.rejected_path}: "
                "fix or delete them"
            )
            return 1
        return 0
    frame = process_instances(
        _history_engine(args), _selection(args), latest_only=args.latest, limit=args.limit
    )
    columns = [c for c in args.columns.split(",") if c in frame.columns] if args.format == "table" else None
    shown = frame[columns] if columns else frame.drop(columns=[c for c in ("extra",) if c in frame.columns])
    if args.format == "json":
        print(shown.to_json(orient="records", date_format="iso"))
    elif args.format == "csv":
        print(shown.to_csv(index=False), end="")
    else:
        print(shown.to_string(index=False) if len(shown) else "no process instance matches")
    return 0


def _cmd_rerun(args: argparse.Namespace) -> int:
    from airflow_desc.history import open_history
    from airflow_desc.history.queries import process_instances
    from airflow_desc.reruns import AirflowApi, check_reason, clear_through_api, plan_reruns, rerun_targets

    reason = check_reason(args.reason)
    if args.state is None and args.reason_class is None and args.stream is None and args.process is None:
        raise ValueError(
            "select what to rerun with at least one of --process, --stream, --state, --reason-class "
            "(rerunning every instance of a run is Airflow's 'clear' of the whole run)"
        )
    store = open_history(args.db)
    selected = process_instances(_history_engine(args), _selection(args), latest_only=True)
    targets = rerun_targets(selected)
    if targets.empty:
        print("no process instance matches: nothing to rerun")
        return 0
    plans = plan_reruns(targets)
    api = AirflowApi.from_connection(args.api_conn)
    downstream = not args.no_downstream
    would = clear_through_api(api, plans, store=store, reason=reason, downstream=downstream, dry_run=True)
    for plan in plans:
        tis = would[(plan.dag_id, plan.run_id)]
        print(
            f"{plan.dag_id} {plan.run_id}: {plan.instances} process instance(s) in {len(plan.targets)} task "
            f"instance(s); {len(tis)} task instance(s) to clear with what is downstream"
        )
        for task_id, map_index in plan.targets:
            print(f"    {task_id}" + (f"[{map_index}]" if map_index >= 0 else ""))
    if args.dry_run:
        print("dry run: nothing cleared")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise ValueError("not a terminal: add --yes to clear without asking")
        if input("clear them? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing cleared")
            return 1
    done = clear_through_api(api, plans, store=store, reason=reason, downstream=downstream)
    print(f"cleared {sum(len(t) for t in done.values())} task instance(s); the scheduler runs them again")
    return 0


def _run_selection(parser: argparse.ArgumentParser) -> None:
    """Add the history and the runs every history command selects by (``--db``, ``--workflow`` ...)."""
    parser.add_argument(
        "--db", help="history: SQLAlchemy URL or Airflow connection id (default: the configured one)"
    )
    parser.add_argument("--workflow", help="only this workflow (its spec's name, e.g. DC1-DM12)")
    parser.add_argument(
        "--version", dest="workflow_version", metavar="VERSION",
        help="only this version of the workflow (its spec's version, e.g. 1.16; see side_by_side)",
    )  # fmt: skip
    parser.add_argument("--variant", help="only this workflow variant ('' for the workflow without one)")
    parser.add_argument("--run", help="only this DAG run id")
    parser.add_argument("--since", help="only instances started on or after this date (YYYY-MM-DD[THH:MM])")
    parser.add_argument("--until", help="only instances started before this date")


def _cmd_logs(args: argparse.Namespace) -> int:
    from airflow_desc.history import HistoryFilter
    from airflow_desc.logs import print_logs

    if args.try_number is not None and args.try_number < 1:
        raise ValueError(f"--try {args.try_number}: a try number is 1 or more")
    selection = HistoryFilter(
        workflow=args.workflow, run_id=args.run, process=args.process, stream_glob=args.stream
    )
    shown = print_logs(
        _history_engine(args), selection, try_number=args.try_number, full=args.full, out=sys.stdout
    )
    if not shown:
        which = f"try {args.try_number} of " if args.try_number is not None else ""
        print(f"no {which}{args.process} instance matches", file=sys.stderr)
        return 1
    return 0


def _history_filters(parser: argparse.ArgumentParser, *, instances: bool, rerun: bool = False) -> None:
    """Add the selection arguments: of the status table, or (``instances``) of process instances.

    ``rerun``: ``--reason`` is the rerun's why, so the reason class is ``--reason-class``, and a
    rerun always takes the latest attempts, all of them.
    """
    _run_selection(parser)
    if not instances:
        parser.add_argument(
            "--no-live", action="store_true",
            help="count recorded attempts only; by default the task-instance states of DAG runs in "
            "progress (waiting, ready, queued ...) are read from Airflow's metadata DB and merged",
        )  # fmt: skip
        return
    parser.add_argument("--process", help="only this process, e.g. processEimage")
    parser.add_argument("--stream", help="stream path glob, e.g. 'visit=2201/*'")
    parser.add_argument("--state", help="success, failed, terminated, cancelled, skipped ...")
    parser.add_argument(
        "--reason-class" if rerun else "--reason", dest="reason_class", metavar="CLASS",
        help="reason class, e.g. out-of-memory, time-limit, python-exception",
    )  # fmt: skip
    parser.add_argument("--cluster", help="only this cluster")
    parser.add_argument("--node", help="only this node")
    if not rerun:
        parser.add_argument("--latest", action="store_true", help="only the latest attempt of each instance")
        parser.add_argument("--limit", type=int, help="at most this many rows")


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
        "check",
        help="log in to each cluster over SSH and check sinfo/sacct answer as the profile says; warn when "
        "the login's key (certificate) expires within 2 h, fail when it has expired",
    )
    check.add_argument("names", nargs="*", help="clusters to check (default: all)")
    check.add_argument("--file", help=file_help)
    check.set_defaults(func=_cmd_clusters_check)

    pools = sub.add_parser(
        "pools",
        help="Airflow pools that bound each cluster's queued jobs",
        description="Generated batch and bundle tasks run in their cluster's pool (slurm_<name>, or the "
        "profile's pool), max_queued_jobs slots with deferred tasks counted: at most that many jobs of a "
        "cluster wait in its queue or run. Run 'pools sync' after 'airflow db migrate' and after changing "
        "a profile; a run that starts while a cluster's pool is missing has it created by the plugin, "
        "with a warning in the scheduler's log. A profile's max_queued_per_task also bounds each "
        "generated task's allocations across a DAG's runs (its max_active_tis_per_dag).",
    )
    pools_sub = pools.add_subparsers(dest="action", metavar="ACTION")
    pools_sub.required = True
    sync = pools_sub.add_parser(
        "sync", help="create or resize one pool per cluster profile (slurm_<name>, max_queued_jobs slots)"
    )
    sync.add_argument("--file", help=file_help)
    sync.add_argument(
        "--dry-run", action="store_true", help="say what would be created or resized, change nothing"
    )
    sync.set_defaults(func=_cmd_pools_sync)

    formats = ("table", "csv", "json")
    status = sub.add_parser(
        "status", help="the DC1-style status table: the history plus the live states of runs in progress"
    )
    _history_filters(status, instances=False)
    status.add_argument("--format", choices=formats, default="table", help="output format (default: table)")
    status.add_argument(
        "--attempts",
        action="store_true",
        help="also show attempts per process (with --format json, one object: "
        '{"status": [...], "attempts": [...]})',
    )
    status.set_defaults(func=_cmd_status)

    report = sub.add_parser("report", help="write the HTML report (status table, figures, resource advice)")
    _history_filters(report, instances=False)
    report.add_argument("--out", required=True, help="directory to write index.html and the PNGs into")
    report.add_argument("--title", default="airflow-desc report", help="report title")
    report.set_defaults(func=_cmd_report)

    advice = sub.add_parser(
        "advice",
        help="suggested memory and walltime per process, from the history; --write: as a render overlay",
        description="Suggest each process's memory and walltime from every recorded attempt: the quantile "
        "of what succeeded instances used, with headroom; an instance killed for memory or time counts as "
        "needing more than it had. With --write, the suggestions of batch processes go into a render "
        "overlay over --extends (each with its evidence: instances, out-of-memory and time-limit kills), "
        "which load_workflow_dags renders: the DAG's jobs then ask SLURM for them.",
    )  # fmt: skip
    _run_selection(advice)
    advice.add_argument("--process", help="only this process")
    advice.add_argument("--quantile", type=float, default=0.95,
                        help="the fraction of instances a suggestion must fit (default: 0.95)")  # fmt: skip
    advice.add_argument("--headroom", type=float, default=1.2,
                        help="the factor on top of that quantile (default: 1.2, 20%% more)")  # fmt: skip
    advice.add_argument("--format", choices=formats, default="table", help="output format (default: table)")
    advice.add_argument("--write", metavar="FILE", help="write the suggestions as a render overlay to FILE")
    advice.add_argument("--extends", metavar="SPEC",
                        help="with --write: the spec or render overlay the written one extends")  # fmt: skip
    advice.set_defaults(func=_cmd_advice)

    history = sub.add_parser(
        "history", help="process instances from the history; 'history flush' writes the spool"
    )
    history.add_argument("action", nargs="?", choices=["list", "flush"], default="list",
                         help="list (default) or flush the spooled records into the history")  # fmt: skip
    _history_filters(history, instances=True)
    history.add_argument("--format", choices=formats, default="table", help="output format (default: table)")
    history.add_argument(
        "--columns",
        default="task,process,stream,try_number,state,reason,cluster,job_id,node,elapsed_s,total_cpu_s,max_rss_bytes",
        help="columns of the table format",
    )
    history.set_defaults(func=_cmd_history)

    rerun = sub.add_parser(
        "rerun",
        help="clear the task instances of the process instances a query selects, recording who and why",
        description="Select process instances as 'history' does (their latest attempt, whatever its "
        "state: --state success reruns what only appeared to succeed), and clear their task instances "
        "and what is downstream of them through Airflow's REST API as the user of the API connection "
        "(--api-conn, default [desc] api_conn_id or desc_api: the api-server's URL with a login and "
        "password, or a token in its extra), so that the auth manager decides. A cleared bundle reruns "
        "exactly the selected instances and what depends on them inside it. The history of the "
        "attempts that follow keeps the authenticated user and the reason (the clear's note).",
    )  # fmt: skip
    rerun.add_argument(
        "--reason", required=True, help="why they run again (the clear's note, kept in the history)"
    )
    rerun.add_argument(
        "--api-conn",
        help="Airflow connection of the API's URL and credentials (default: [desc] api_conn_id or desc_api)",
    )  # fmt: skip
    _history_filters(rerun, instances=True, rerun=True)
    rerun.add_argument("--no-downstream", action="store_true", help="do not clear what is downstream")
    rerun.add_argument("--dry-run", action="store_true", help="show what would be cleared, clear nothing")
    rerun.add_argument("--yes", action="store_true", help="clear without asking")
    rerun.set_defaults(func=_cmd_rerun)

    logs = sub.add_parser(
        "logs",
        help="print the log tails the history keeps of a process's instances; --full reads whole logs",
        description="When a job or a bundled instance ends, its worker keeps the end of its log in the "
        "history (the last 200 lines, at most 64 KiB, secrets redacted): this prints them, the latest "
        "attempt of each selected instance (or those of --try N), without reaching a cluster. --full "
        "reads each whole log on its cluster over SSH instead (from the task instance's own directory "
        "only; secrets redacted as in the tails).",
    )  # fmt: skip
    logs.add_argument("process", help="the process, e.g. processEimage")
    logs.add_argument("--stream", help="stream path glob, e.g. 'visit=2201/*' (default: every stream)")
    logs.add_argument(
        "--try", dest="try_number", type=int, metavar="N", help="the attempts of try N (default: the latest)"
    )
    logs.add_argument("--run", help="only this DAG run id")
    logs.add_argument("--workflow", help="only this workflow")
    logs.add_argument("--full", action="store_true", help="read each whole log on its cluster over SSH")
    logs.add_argument(
        "--db", help="history: SQLAlchemy URL or Airflow connection id (default: the configured one)"
    )
    logs.set_defaults(func=_cmd_logs)
    return parser


def _run(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    try:
        return int(func(args))
    except Exception as exc:  # noqa: BLE001 - a CLI reports, it does not dump tracebacks on operators
        from airflow_desc.exceptions import DescError

        if not isinstance(exc, (DescError, ValueError, OSError)):
            raise
        print(f"airflow-desc: error: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``airflow-desc``; return its exit status."""
    args = build_parser().parse_args(argv)
    return _run(args.func, args)


def _airflow_arg(action: argparse.Action) -> Any:
    """Return the Airflow CLI ``Arg`` that declares the same argument as an argparse action."""
    from airflow.cli.cli_config import Arg

    kwargs: dict[str, Any] = {"help": action.help}
    if isinstance(action, argparse._StoreTrueAction):
        kwargs["action"] = "store_true"
    else:
        for name in ("default", "nargs", "type", "choices", "metavar"):
            if getattr(action, name) is not None:
                kwargs[name] = getattr(action, name)
        if action.option_strings and action.required:
            kwargs["required"] = True
    if action.option_strings:
        kwargs["dest"] = action.dest
    return Arg(tuple(action.option_strings) or (action.dest,), **kwargs)  # type: ignore[no-untyped-call]


def _exits(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], None]:
    """Wrap a command for the Airflow CLI, which ignores return values: a failure exits non-zero."""

    def command(args: argparse.Namespace) -> None:
        status = _run(func, args)
        if status:
            sys.exit(status)

    command.__name__ = getattr(func, "__name__", "command")
    return command


def _airflow_command(name: str, parser: argparse.ArgumentParser, help_text: str) -> Any:
    from airflow.cli.cli_config import ActionCommand, GroupCommand

    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if subparsers:
        helps = {choice.dest: choice.help or "" for choice in subparsers[0]._choices_actions}
        return GroupCommand(
            name=name, help=help_text, description=parser.description,
            subcommands=[_airflow_command(n, p, helps.get(n, "")) for n, p in subparsers[0].choices.items()],
        )  # fmt: skip
    args = [
        _airflow_arg(a)
        for a in parser._actions
        if not isinstance(a, (argparse._HelpAction, argparse._VersionAction))
    ]
    return ActionCommand(
        name=name, help=help_text, description=parser.description, func=_exits(parser.get_default("func")),
        args=args,
    )  # fmt: skip


def airflow_cli_commands() -> list[Any]:
    """Return ``airflow desc ...``: every ``airflow-desc`` command as an Airflow CLI command.

    Listed under ``cli`` in :func:`airflow_desc.get_provider_info`, so that ``airflow desc status``
    runs ``airflow-desc status`` with the same arguments and ``--help``.
    """
    parser = build_parser()
    command = _airflow_command(
        "desc", parser, "LSST DESC campaigns: status table, reports, history, clusters"
    )
    return [command]


if __name__ == "__main__":
    sys.exit(main())
