"""Workflows as YAML specs, and the Airflow-free graph of each DAG they make.

``spec`` reads and checks a spec file (errors name file:line and the field), with what it
is made of: ``spec_templates``, ``spec_expressions``, ``spec_models`` and ``spec_rules`` (with
``spec_process_rules`` and ``spec_template_rules``);
``graph`` is the tree of tasks and processes of one DAG, which ``build`` makes from a spec and
a variant (deciding which sub-tasks run in bundles); ``estimates`` counts task instances. Neither imports
Airflow's DAG machinery; the render step that makes DAGs does::

    from airflow_desc.workflow import build_graph, estimate_task_instances, load_spec

    spec = load_spec("dags/workflows/dc1.yaml")
    for variant in spec.variant_names:
        graph = build_graph(spec, variant)          # graph.dag_id: DC1-DM12_imsim-dithered
        print(estimate_task_instances(graph, runs=15).format())
"""

from __future__ import annotations

from airflow_desc.workflow.build import build_graph
from airflow_desc.workflow.estimates import TaskEstimate, TaskInstanceEstimate, estimate_task_instances
from airflow_desc.workflow.graph import (
    MAX_MAP_LENGTH,
    Bundling,
    CheckNode,
    ProcessNode,
    ResolvedResources,
    TaskNode,
    WorkflowGraph,
    dag_id_for,
)
from airflow_desc.workflow.spec import load_spec, parse_spec
from airflow_desc.workflow.spec_expressions import Expression, ExpressionError
from airflow_desc.workflow.spec_models import ProcessSpec, SubTaskSpec, WorkflowSpec
from airflow_desc.workflow.spec_templates import Template, TemplateError

__all__ = [
    "MAX_MAP_LENGTH",
    "Bundling",
    "CheckNode",
    "Expression",
    "ExpressionError",
    "ProcessNode",
    "ProcessSpec",
    "ResolvedResources",
    "SubTaskSpec",
    "TaskEstimate",
    "TaskInstanceEstimate",
    "TaskNode",
    "Template",
    "TemplateError",
    "WorkflowGraph",
    "WorkflowSpec",
    "build_graph",
    "dag_id_for",
    "estimate_task_instances",
    "load_spec",
    "parse_spec",
]
