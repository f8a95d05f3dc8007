"""The cross-field rules of specs: what no single field's type can say.

The rules run on the plain data of a spec file, tolerant of what the pydantic models of
:mod:`~airflow_desc.workflow.spec_models` reject, so that one run reports both kinds of
problem: unknown names in dependencies and placeholders, cycles, a stream source that is not
a script process, keys that only the other process type has, and the like.

Here the rules of the spec and its tasks (variables, variants, patterns, sub-tasks, thresholds,
cycles); the rules of one process are :mod:`~airflow_desc.workflow.spec_process_rules`', those of
every templated text :mod:`~airflow_desc.workflow.spec_template_rules`'.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_desc._validation import choose
from airflow_desc._yaml_lines import KeyPath, describe_value, format_path
from airflow_desc.workflow.spec_expressions import Expression, ExpressionError
from airflow_desc.workflow.spec_process_rules import (
    ProcessRules,
    Scope,
    listed,
    listed_names,
    unknown_dependency,
)
from airflow_desc.workflow.spec_template_rules import TemplateRules, as_mapping, type_mismatch, value_kind
from airflow_desc.workflow.spec_templates import IDENT_RE, Template, format_value, variable_cycle
from airflow_desc.workflow.thresholds import MinSuccess

if TYPE_CHECKING:
    from airflow_desc.clusters import ClusterProfiles

__all__ = ["check_rules"]

# What may follow "<name>_v" in a DAG id (Airflow's KEY_REGEX: letters, digits, "_", ".", "-").
_DAG_ID_PART_RE = re.compile(r"^[\w.-]+$", re.ASCII)


def check_rules(data: Mapping[str, Any], clusters: ClusterProfiles | None) -> list[tuple[KeyPath, str]]:
    """Check the rules that span fields.

    :param data: a spec's plain data, as loaded (it may be invalid for the models too).
    :param clusters: if given, every ``resources.cluster`` must name one of them.
    :return: ``(path, "<what is wrong>; <what to do>")`` per problem, in the order found.
    """
    return _Rules(data, clusters).run()


class _Rules(TemplateRules):
    """Checks across fields, on the plain data; tolerant of what the models reject."""

    def __init__(self, data: Mapping[str, Any], clusters: ClusterProfiles | None) -> None:
        super().__init__(data, clusters)
        self.task_paths: dict[str, KeyPath] = {}

    def run(self) -> list[tuple[KeyPath, str]]:
        self.check_variables()
        self.check_variants()
        self.collect_stream_vars(self.data)
        self.check_patterns()
        self.check_side_by_side()
        if isinstance(self.data.get("name"), str):
            self.task_paths[self.data["name"]] = ()
        self.check_task((), self.data, Scope())
        return self.problems

    # variables ------------------------------------------------------------------------------
    def check_variables(self) -> None:
        templates: dict[str, Template] = {}
        for name, value in self.variables.items():
            template = self.template(("variables", name), value, set(self.variables) - {name})
            if template is not None:
                templates[name] = template
        cycle = variable_cycle(templates)
        if cycle:
            self.add(
                ("variables", cycle[0]),
                f"variables refer to each other in a cycle: {' -> '.join(cycle)}; break it",
            )

    def check_variants(self) -> None:
        for variant, overrides in as_mapping(self.data.get("variants")).items():
            for key, value in as_mapping(overrides).items():
                path: KeyPath = ("variants", variant, key)
                if not isinstance(value, str | int | float | bool):
                    continue  # the model says what a variable may hold
                if key not in self.variables:
                    if isinstance(key, str) and IDENT_RE.match(key):
                        hint = choose(key, self.variables, known="declare it under variables; variables are")
                        self.add(path, f"not a variable of this workflow; {hint}")
                    continue
                mismatch = type_mismatch(self.variables[key], value)
                if mismatch:
                    self.add(path, mismatch)
                else:
                    self.template(path, value, set(self.variables) - {key})

    def check_side_by_side(self) -> None:
        """Check that a version going in DAG ids (``side_by_side``) holds only what a DAG id may."""
        version = self.data.get("version")
        if self.data.get("side_by_side") is True and isinstance(version, str):
            if not _DAG_ID_PART_RE.match(version):
                self.add(
                    ("version",),
                    f"side_by_side puts the version in the DAG ids, and {version!r} holds a character "
                    "a DAG id may not; use letters, digits, '.', '_' and '-'",
                )

    def check_patterns(self) -> None:
        """Each pattern compiles, names a variable or stream variable, and fits the values the spec gives."""
        compiled: dict[str, re.Pattern[str]] = {}
        for name, pattern in self.patterns.items():
            path: KeyPath = ("patterns", name)
            if name not in self.variables and name not in self.stream_owners:
                known = sorted({*self.variables, *self.stream_owners})
                self.add(path, f"not a variable or stream variable of this workflow; {choose(name, known)}")
                continue
            try:
                compiled[name] = re.compile(pattern)
            except re.error as exc:
                self.add(path, f"not a regular expression: {exc}; fix it")
        given: list[tuple[KeyPath, str, Any]] = [(("variables", k), k, v) for k, v in self.variables.items()]
        for variant, overrides in as_mapping(self.data.get("variants")).items():
            given += [(("variants", variant, k), k, v) for k, v in as_mapping(overrides).items()]
        for path, name, value in given:
            regex = compiled.get(name)
            if regex is None or "{{" in str(value):
                continue  # a value built from other variables is checked when a run fills it in
            if regex.fullmatch(format_value(value)) is None:
                text = format_value(value)
                self.add(path, f"{text!r} does not match the pattern of {name}, {regex.pattern!r}")

    def collect_stream_vars(self, task: Mapping[str, Any]) -> None:
        for name, sub in as_mapping(task.get("tasks")).items():
            if isinstance(sub, Mapping):
                var = sub.get("stream_var")
                if isinstance(var, str):
                    self.stream_owners.setdefault(var, str(name))
                self.collect_stream_vars(sub)

    # tasks ----------------------------------------------------------------------------------
    def check_task(self, path: KeyPath, task: Mapping[str, Any], scope: Scope) -> None:
        processes, subtasks = as_mapping(task.get("processes")), as_mapping(task.get("tasks"))
        shapes_ok = all(isinstance(task.get(key, {}), Mapping) for key in ("processes", "tasks"))
        if not processes and not subtasks and shapes_ok:
            what = "no processes" if "processes" in task else "missing"
            self.add((*path, "processes"), f"{what}; a task needs at least one process (or a sub-task)")
        defaults = task.get("defaults")
        if isinstance(defaults, Mapping):
            self.check_defaults((*path, "defaults"), defaults, scope)
            scope = Scope(scope.stream_vars, (*scope.defaults, defaults))
        siblings = {str(n) for n in processes} | {str(n) for n in subtasks}
        for name, process in processes.items():
            if isinstance(process, Mapping):
                ProcessRules(self, (*path, "processes", name), str(name), process, siblings, scope).run()
                self.check_thresholds((*path, "processes", name), process, subtasks, siblings)
        for name, sub in subtasks.items():
            if isinstance(sub, Mapping):
                self.check_subtask((*path, "tasks", name), str(name), sub, processes, siblings, scope)
                self.check_thresholds((*path, "tasks", name), sub, subtasks, siblings)
        self.check_cycles(path, processes, subtasks)

    def check_thresholds(
        self, path: KeyPath, body: Mapping[str, Any], subtasks: Mapping[Any, Any], siblings: set[str]
    ) -> None:
        """``depends_on: {name: {min_success: ...}}``: only sub-tasks have streams to count."""
        after = body.get("after")
        if isinstance(after, Mapping):
            self.add((*path, "after"), "expected a list of names; thresholds belong under depends_on")
        depends_on = body.get("depends_on")
        given = (
            [(("depends_on", n), o) for n, o in depends_on.items()] if isinstance(depends_on, Mapping) else []
        )
        # A spec built in Python (or dumped) carries them as min_success: {name: value}.
        given += [
            (("min_success", n), {"min_success": v}) for n, v in as_mapping(body.get("min_success")).items()
        ]
        for where, options in given:
            name = where[1]
            if options is None or name not in siblings:  # an unknown name is reported as such
                continue
            if not isinstance(options, Mapping) or set(options) != {"min_success"}:
                self.add(
                    (*path, *where),
                    "expected nothing or {min_success: <fraction or count>}, "
                    f"got {describe_value(options)}; write e.g. {name}: {{min_success: 0.95}}",
                )
                continue
            at: KeyPath = (*where, "min_success") if where[0] == "depends_on" else where
            if name not in subtasks:
                self.add(
                    (*path, *at),
                    f"'{name}' is not a sub-task of this task: min_success counts a sub-task's streams; "
                    "remove it (a process must succeed)",
                )
                continue
            if where[0] == "min_success" and name not in listed_names(body.get("depends_on")):
                self.add((*path, *at), f"'{name}' is not in depends_on; add it there with its min_success")
                continue
            try:
                MinSuccess.parse(options["min_success"])
            except ValueError as exc:
                self.add((*path, *at), str(exc))

    def check_defaults(self, path: KeyPath, defaults: Mapping[str, Any], scope: Scope) -> None:
        self.check_cluster((*path, "resources"), defaults.get("resources"))
        names = set(self.variables) | set(scope.stream_vars)
        self.template((*path, "emulate", "seed"), as_mapping(defaults.get("emulate")).get("seed"), names)

    def check_subtask(
        self,
        path: KeyPath,
        name: str,
        sub: Mapping[str, Any],
        parent_processes: Mapping[Any, Any],
        siblings: set[str],
        scope: Scope,
    ) -> None:
        if name in parent_processes:
            self.add(path, f"'{name}' is also the name of a process of this task; rename one")
        elif name in self.task_paths:
            where = format_path(self.task_paths[name]) or "the top-level task"
            self.add(
                path, f"task name '{name}' is also used by {where}; task names must be unique: rename one"
            )
        else:
            self.task_paths[name] = path
        source = sub.get("streams_from")
        if isinstance(source, str):
            self.check_stream_source((*path, "streams_from"), source, parent_processes)
        for key in ("depends_on", "after"):
            for sub_path, dep in listed(sub.get(key)):
                if dep not in siblings:
                    self.add((*path, key, *sub_path), unknown_dependency(dep, siblings - {name}))
        var = sub.get("stream_var")
        if isinstance(var, str):
            if var in self.variables:
                self.add((*path, "stream_var"), f"'{var}' is also a variable; rename the stream variable")
            elif var in scope.stream_vars:
                self.add(
                    (*path, "stream_var"),
                    f"'{var}' is already the stream variable of a task above; rename it",
                )
        self.check_expected((*path, "expected_streams"), sub.get("expected_streams"))
        if sub.get("bundle") == "never" and sub.get("bundle_size") is not None:
            self.add((*path, "bundle_size"), "a size is set but bundle is 'never'; remove one of them")
        stream_vars = (*scope.stream_vars, var) if isinstance(var, str) else scope.stream_vars
        self.check_task(path, sub, Scope(stream_vars, scope.defaults))

    def check_stream_source(self, path: KeyPath, source: str, parent_processes: Mapping[Any, Any]) -> None:
        scripts = [str(n) for n, p in parent_processes.items() if as_mapping(p).get("type") == "script"]
        if source not in parent_processes:
            hint = choose(
                source,
                scripts,
                known="name a script process of the parent:",
                empty="add a script process to the parent that returns the streams",
            )
            self.add(path, f"no process named '{source}' in the parent task; {hint}")
        elif source not in scripts:
            listed = f": {', '.join(scripts)}" if scripts else ""
            self.add(
                path,
                f"'{source}' is a {as_mapping(parent_processes[source]).get('type')} process; streams come "
                f"from a script process (its callable returns them): name one{listed}",
            )

    def check_expected(self, path: KeyPath, value: Any) -> None:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = repr(value)
        if not isinstance(value, str):
            return
        try:
            expression = Expression.parse(value, "number")
        except ExpressionError as exc:
            self.add(path, str(exc))
            return
        for name in sorted(expression.names):
            if name not in self.variables:
                hint = choose(name, self.variables, known="variables are", empty="declare it under variables")
                self.add(path, f"unknown variable '{name}'; {hint}")
            elif value_kind(self.variables[name]) not in ("a number", "a whole number"):
                kind = value_kind(self.variables[name])
                self.add(path, f"variable '{name}' is {kind}; use a numeric variable")

    def check_cycles(self, path: KeyPath, processes: Mapping[Any, Any], subtasks: Mapping[Any, Any]) -> None:
        edges: dict[str, list[tuple[str, KeyPath]]] = {}
        for group, members in (("processes", processes), ("tasks", subtasks)):
            for name, body in members.items():
                body = as_mapping(body)
                out = [
                    (dep, (*path, group, name, key, *sub_path))
                    for key in ("depends_on", "after")
                    for sub_path, dep in listed(body.get(key))
                ]
                if group == "tasks" and name in processes:
                    continue  # reported as a name clash; its edges would mix with the process's
                if group == "tasks" and isinstance(body.get("streams_from"), str):
                    out.append((body["streams_from"], (*path, group, name, "streams_from")))
                edges[str(name)] = out
        _CycleFinder(self, edges).run()


class _CycleFinder:
    def __init__(self, rules: _Rules, edges: dict[str, list[tuple[str, KeyPath]]]) -> None:
        self.rules = rules
        self.edges = edges
        self.state: dict[str, int] = {}
        self.stack: list[str] = []
        self.seen: set[frozenset[str]] = set()

    def run(self) -> None:
        for node in self.edges:
            if node not in self.state:
                self.visit(node)

    def visit(self, node: str) -> None:
        self.state[node] = 1
        self.stack.append(node)
        for dep, where in self.edges[node]:
            if dep not in self.edges:
                continue
            if self.state.get(dep) == 1:
                self.report(self.stack[self.stack.index(dep) :] + [dep], where)
            elif dep not in self.state:
                self.visit(dep)
        self.stack.pop()
        self.state[node] = 2

    def report(self, cycle: list[str], where: KeyPath) -> None:
        key = frozenset(cycle)
        if key in self.seen:
            return
        self.seen.add(key)
        if len(cycle) == 2:
            field = next(part for part in reversed(where) if part in ("depends_on", "after", "streams_from"))
            self.rules.add(where, f"'{cycle[0]}' waits for itself; remove it from {field}")
            return
        self.rules.add(
            where,
            f"dependency cycle: {' -> '.join(cycle)} (each waits for the next); "
            "remove one of these dependencies",
        )
