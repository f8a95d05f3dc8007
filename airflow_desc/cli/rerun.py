"""``rerun``: clear the task instances of the process instances a query selects (Airflow's REST API)."""

from __future__ import annotations

import argparse
import sys

from airflow_desc.cli.selection import history_engine, selection_of

__all__ = ["cmd_rerun"]


def cmd_rerun(args: argparse.Namespace) -> int:
    """Clear the task instances of the selected process instances, after showing them."""
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
    selected = process_instances(history_engine(args), selection_of(args), latest_only=True)
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
