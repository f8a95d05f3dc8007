"""The argument parser of ``airflow-desc``: every command, its arguments and its ``--help``."""

from __future__ import annotations

import argparse

from airflow_desc import __version__
from airflow_desc.cli.advice import cmd_advice
from airflow_desc.cli.clusters import cmd_clusters_check, cmd_clusters_list, cmd_pools_sync
from airflow_desc.cli.history_commands import cmd_history, cmd_logs, cmd_report, cmd_status
from airflow_desc.cli.rerun import cmd_rerun

__all__ = ["build_parser"]


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
    listing.set_defaults(func=cmd_clusters_list)
    check = clusters_sub.add_parser(
        "check",
        help="log in to each cluster over SSH and check sinfo/sacct answer as the profile says; warn when "
        "the login's key (certificate) expires within 2 h, fail when it has expired",
    )
    check.add_argument("names", nargs="*", help="clusters to check (default: all)")
    check.add_argument("--file", help=file_help)
    check.set_defaults(func=cmd_clusters_check)

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
    sync.set_defaults(func=cmd_pools_sync)

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
    status.set_defaults(func=cmd_status)

    report = sub.add_parser("report", help="write the HTML report (status table, figures, resource advice)")
    _history_filters(report, instances=False)
    report.add_argument("--out", required=True, help="directory to write index.html and the PNGs into")
    report.add_argument("--title", default="airflow-desc report", help="report title")
    report.set_defaults(func=cmd_report)

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
    advice.set_defaults(func=cmd_advice)

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
    history.set_defaults(func=cmd_history)

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
    rerun.set_defaults(func=cmd_rerun)

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
    logs.set_defaults(func=cmd_logs)
    return parser
