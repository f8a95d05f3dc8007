"""DC1's bundling, planned: process instances, task instances and SLURM jobs, before and after.

Pure planning: it reads ``dags/workflows/dc1.yaml`` and cluster profiles, builds the DAG's graph
at each ``scale`` and counts, from the spec's ``expected_streams``, what 15 DC1 runs would make
(level 1 in 6 of them, level 2 in 10, as the spec's fan-outs of 0.4 and 0.667 say): nothing runs,
on the site or anywhere. Seconds; not part of ``make test``::

    .venv/bin/python benchmarks/dc1_plan.py [--scale 0.01 0.1] [--runs 15] \\
        [--clusters tests/data/clusters/site.yaml]

*before* is the spec with the bundling settings it had before bundles were sized by
``target_instances`` (``threshold: 100, max_task_instances: 1000``); *after* is the spec as it
is. The cluster profiles (default: the local site's, as ``benchmarks/dc1_scale.py`` runs DC1)
give the nodes that cap a bundle's walltime. Per scale it prints each bundled or mapped sub-task
(how it runs, streams per bundle, SLURM jobs), then process instances (batch and script, as
DC1's status table counts them), task instances, SLURM jobs (a non-bundled batch instance is one
job; a bundle is one allocation) and SLURM jobs per 1,000 process instances. Counts are
expectations: a real run draws its own stream counts (``benchmarks/dc1_scale.py`` measures them).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from dataclasses import dataclass

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from airflow_desc.clusters import ClusterProfiles, load_cluster_profiles  # noqa: E402
from airflow_desc.workflow.build import build_graph, in_busy_run  # noqa: E402
from airflow_desc.workflow.graph import TaskNode, WorkflowGraph  # noqa: E402
from airflow_desc.workflow.spec import load_spec  # noqa: E402
from airflow_desc.workflow.spec_models import BundlingSettings, WorkflowSpec  # noqa: E402

DC1_SPEC = REPO / "dags" / "workflows" / "dc1.yaml"
SITE_CLUSTERS = REPO / "tests" / "data" / "clusters" / "site.yaml"
BEFORE = BundlingSettings(threshold=100, max_task_instances=1000)


@dataclass(frozen=True)
class Plan:
    """What a campaign of runs makes, expected."""

    process_instances: float
    task_instances: float
    slurm_jobs: float
    lines: tuple[str, ...]

    @property
    def jobs_per_1000(self) -> float:
        """SLURM jobs per 1,000 process instances."""
        return 1000 * self.slurm_jobs / self.process_instances if self.process_instances else 0.0


def plan_campaign(graph: WorkflowGraph, runs: int) -> Plan:
    """Count a campaign's process instances, task instances and SLURM jobs from the graph.

    A run makes ``streams_per_run`` streams of each task (on average; in a run that launches it,
    the busy count). A task that is not bundled: a task instance (and, if batch, a SLURM job) per
    process per stream. A bundled task: per run that launches it, ``ceil(streams / size)``
    bundles, each one task instance and one SLURM job (its streams are split per run); the
    processes below it are process instances only.
    """
    instances = tis = jobs = 0.0
    lines: list[str] = []
    stack: list[tuple[TaskNode, float, float]] = [(graph.root, 1.0, 1.0)]
    while stack:
        task, parent_avg, parent_busy = stack.pop()
        if task.parent_path is None:
            average = busy = 1.0
        else:
            average = parent_avg * task.expected_streams
            busy = parent_busy * in_busy_run(task.expected_streams)
        stack.extend((child, average, busy) for child in reversed(task.children))
        batch = sum(1 for p in task.processes if p.type == "batch")
        instances += runs * average * len(task.processes)
        state, size = task.bundling.state, task.bundling.bundle_size
        if state == "none":
            tis += runs * average * len(task.processes)
            jobs += runs * average * batch
        elif state == "bundle" and size:
            launched = runs * average / busy if busy else 0.0  # runs that make its streams
            bundles = launched * -(-round(busy, 6) // size)
            tis += bundles
            jobs += bundles
            lines.append(
                f"  {task.name:<30} bundles of {size:>3} streams: {busy:>7.1f} streams a launched run, "
                f"{bundles:>6.0f} SLURM jobs in {runs} runs"
            )
        if state == "none" and task.parent_path is not None and task.processes:
            lines.append(
                f"  {task.name:<30} not bundled ({task.bundling.reason}): "
                f"{runs * average * batch:>6.0f} SLURM jobs in {runs} runs"
            )
    return Plan(instances, tis, jobs, tuple(lines))


def graphs(
    spec: WorkflowSpec, scale: float, clusters: ClusterProfiles
) -> tuple[WorkflowGraph, WorkflowGraph]:
    """Return DC1's graph at a scale with the old bundling settings, and with the spec's."""
    overrides = {"scale": scale, "filters": "u^g^r^i^z^y"}
    old = spec.model_copy(update={"bundling": BEFORE})
    before = build_graph(old, "imsim-dithered", overrides=overrides, clusters=clusters)
    after = build_graph(spec, "imsim-dithered", overrides=overrides, clusters=clusters)
    return before, after


def main(argv: list[str] | None = None) -> int:
    """Print the before / after plan per scale."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, nargs="+", default=[0.01, 0.1], help="DC1's scales")
    parser.add_argument("--runs", type=int, default=15, help="DAG runs in the campaign (DC1: 15)")
    parser.add_argument("--clusters", default=str(SITE_CLUSTERS), help="cluster profiles (the local site's)")
    parser.add_argument("--spec", default=str(DC1_SPEC), help="the DC1 spec")
    args = parser.parse_args(argv)
    clusters = load_cluster_profiles(args.clusters)
    spec = load_spec(args.spec, clusters=clusters)
    print(f"{args.spec}: bundling {spec.bundling.model_dump(exclude_none=True)}; clusters {args.clusters}")
    print(f"before: bundling {BEFORE.model_dump(exclude_none=True)}")
    for scale in args.scale:
        plans = {
            name: plan_campaign(g, args.runs)
            for name, g in zip(("before", "after"), graphs(spec, scale, clusters), strict=True)
        }
        for name, plan in plans.items():
            print(f"\nscale {scale}, {name}: {args.runs} runs")
            print("\n".join(plan.lines))
        print(f"\nscale {scale}, {args.runs} runs      {'before':>10} {'after':>10}")
        rows = (
            ("process instances", "process_instances", ",.0f"),
            ("task instances", "task_instances", ",.0f"),
            ("SLURM jobs", "slurm_jobs", ",.0f"),
            ("SLURM jobs / 1000 inst.", "jobs_per_1000", ".1f"),
        )
        for label, attr, fmt in rows:
            b, a = getattr(plans["before"], attr), getattr(plans["after"], attr)
            print(f"  {label:<24} {format(b, fmt):>10} {format(a, fmt):>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
