"""``advice``: memory and walltime per process from the history, printed or written as a render overlay."""

from __future__ import annotations

import argparse
import os
from typing import Any

from airflow_desc.cli.selection import history_engine, selection_of

__all__ = ["cmd_advice"]


def cmd_advice(args: argparse.Namespace) -> int:
    """Print each process's suggested memory and walltime, or (``--write``) write them as an overlay."""
    import datetime as dt

    from airflow_desc.history.queries import process_instances
    from airflow_desc.reports.advice import resource_advice

    if bool(args.write) != bool(args.extends):
        raise ValueError(
            "--write and --extends go together: --extends names the spec or render overlay the written "
            "overlay applies to, e.g. --extends dags/workflows/dc1-local.yaml"
        )
    instances = process_instances(history_engine(args), selection_of(args))
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
