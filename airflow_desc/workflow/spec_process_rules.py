"""The rules of one process of a spec: its type's keys, its dependencies, skip_if, emulate, checks.

:class:`ProcessRules` runs them on a process's plain data, within what its task can see
(:class:`Scope`), adding the problems to the spec's :class:`~.spec_template_rules.TemplateRules`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_desc._validation import choose
from airflow_desc._yaml_lines import KeyPath
from airflow_desc.workflow.spec_expressions import Expression, ExpressionError
from airflow_desc.workflow.spec_template_rules import TemplateRules, as_mapping

__all__ = [
    "CHECK_KINDS",
    "IMPORT_PATH_RE",
    "ProcessRules",
    "Scope",
    "listed",
    "listed_names",
    "unknown_dependency",
]

#: The kinds of output check, one per item of ``checks``.
CHECK_KINDS = ("exists", "non_empty", "glob", "command", "log_lacks")

#: ``module.path:name``: a script's callable, a notifier's class.
IMPORT_PATH_RE = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")
# Keys that only one process type has.
_BATCH_ONLY = ("command", "dm_command", "emulate", "resources", "escalation", "checks", "deferrable")
_SCRIPT_ONLY = ("callable", "kwargs")


def listed(value: Any) -> list[tuple[KeyPath, str]]:
    """Return the names of a depends_on / after value, each with its path below the key."""
    if isinstance(value, str):
        return [((), value)]
    if isinstance(value, Mapping):
        return [((name,), name) for name in value if isinstance(name, str)]
    if isinstance(value, list | tuple):
        return [((index,), item) for index, item in enumerate(value) if isinstance(item, str)]
    return []


def listed_names(value: Any) -> set[str]:
    """Return the names of a depends_on / after value."""
    return {name for _, name in listed(value)}


@dataclass(frozen=True)
class Scope:
    """What a task's processes can see.

    :param stream_vars: the stream variables of the task and the tasks above it.
    :param defaults: the ``defaults`` of the tasks above it and its own, outermost first.
    """

    stream_vars: tuple[str, ...] = ()
    defaults: tuple[Mapping[str, Any], ...] = ()


def unknown_dependency(name: str, siblings: Collection[str]) -> str:
    """Say that ``name`` is no sibling, and which siblings there are."""
    choices = sorted(siblings)
    hint = choose(name, choices, known="name a process or sub-task of the same task:")
    return f"no process or sub-task named '{name}' in this task; {hint}"


class ProcessRules:
    """The cross-field rules of one process.

    :param rules: the spec's rules: the names known, the template rules, where problems go.
    :param path: the process's path in the spec.
    :param name: the process's name.
    :param process: its plain data.
    :param siblings: the names of the processes and sub-tasks of its task.
    :param scope: what its task can see.
    """

    def __init__(
        self,
        rules: TemplateRules,
        path: KeyPath,
        name: str,
        process: Mapping[str, Any],
        siblings: set[str],
        scope: Scope,
    ) -> None:
        self.rules = rules
        self.path = path
        self.name = name
        self.process = process
        self.siblings = siblings
        self.scope = scope
        self.names = set(rules.variables) | set(scope.stream_vars)

    def add(self, sub_path: KeyPath, message: str) -> None:
        """Note a problem at ``sub_path`` below the process."""
        self.rules.add((*self.path, *sub_path), message)

    def run(self) -> None:
        """Check every rule of the process."""
        kind = self.process.get("type")
        if kind == "batch":
            self.batch()
        elif kind == "script":
            self.script()
        upstream = self.dependencies()
        self.skip_if(upstream)
        for key in ("command", "dm_command"):
            self.rules.template((*self.path, key), self.process.get(key), self.names, shell=True)
        self.rules.template_tree((*self.path, "kwargs"), self.process.get("kwargs"), self.names)
        self.emulate()
        self.checks()
        self.rules.check_cluster((*self.path, "resources"), self.process.get("resources"))

    def batch(self) -> None:
        """Check a batch process: no script keys; command or emulate, not both; dm_command for payload dm."""
        for key in _SCRIPT_ONLY:
            if key in self.process:
                self.add(
                    (key,),
                    "a batch process runs a shell command on a cluster and has no "
                    f"{key}; use command or emulate, or make it type: script",
                )
        has_command, has_emulate = self.process.get("command") is not None, "emulate" in self.process
        if not has_command and not has_emulate:
            self.add(
                ("command",),
                "missing; a batch process needs command (a shell command) or emulate (the DM-like payload)",
            )
        elif has_command and has_emulate:
            self.add(
                ("emulate",),
                "command and emulate are both set; keep one (the real DM command line goes in dm_command)",
            )
        if self.rules.data.get("payload") == "dm" and self.process.get("dm_command") is None:
            self.add(
                ("dm_command",),
                f"missing; the spec says payload: dm, which runs each batch process's dm_command, and "
                f"{self.name} has none; add its real command line as dm_command, or set payload: emulate",
            )

    def script(self) -> None:
        """Check a script process: no batch keys; a callable ``module.path:function``."""
        for key in _BATCH_ONLY:
            if key in self.process:
                self.add(
                    (key,),
                    f"a script process runs on the Airflow worker and has no {key}; "
                    "remove it, or make the process type: batch",
                )
        target = self.process.get("callable")
        if "callable" not in self.process:
            self.add(("callable",), "missing; a script process needs callable: 'module.path:function'")
        elif isinstance(target, str) and not IMPORT_PATH_RE.match(target):
            self.add(
                ("callable",),
                f"expected 'module.path:function', got {target!r}; "
                "write the module, a colon, then the function",
            )

    def dependencies(self) -> set[str]:
        """Check that depends_on and after name siblings; return the names upstream."""
        upstream: set[str] = set()
        for key in ("depends_on", "after"):
            for sub_path, dep in listed(self.process.get(key)):
                if dep in self.siblings:
                    upstream.add(dep)
                else:
                    self.add((key, *sub_path), unknown_dependency(dep, self.siblings - {self.name}))
        return upstream

    def skip_if(self, upstream: set[str]) -> None:
        """Check that skip_if parses and names only upstream processes and known variables."""
        text = self.process.get("skip_if")
        if not isinstance(text, str):
            return
        try:
            condition = Expression.parse(text, "condition")
        except ExpressionError as exc:
            self.add(("skip_if",), str(exc))
            return
        known = upstream | self.names
        for name in sorted(condition.names - known):
            if name in self.siblings:
                message = (
                    f"'{name}' is not upstream of {self.name}; add it to depends_on or after to use its state"
                )
            else:
                hint = choose(name, sorted(known), known="known here:")
                message = f"unknown name '{name}'; {hint}"
            self.add(("skip_if",), message)

    def emulate(self) -> None:
        """Check the emulated payload's texts, and that it holds no more memory than it asks for."""
        emulate = self.process.get("emulate")
        if not isinstance(emulate, Mapping):
            return
        for key in ("name", "seed"):
            self.rules.template((*self.path, "emulate", key), emulate.get(key), self.names)
        for key in ("outputs", "inputs"):
            value = emulate.get(key)
            if isinstance(value, list | tuple):
                for index, item in enumerate(value):
                    self.rules.template((*self.path, "emulate", key, index), item, self.names)
        held = emulate.get("memory_mb")
        asked = self.memory_mb()
        if (
            isinstance(held, int | float)
            and not isinstance(held, bool)
            and asked is not None
            and held > asked
        ):
            self.add(
                ("emulate", "memory_mb"),
                f"the payload holds {held:g} MB but the process asks for {asked} MB, so it would always "
                "run out of memory; lower emulate.memory_mb or raise resources.memory_mb",
            )

    def memory_mb(self) -> int | None:
        """Return the memory the process asks for, its own or its tasks' defaults'."""
        for source in (self.process, *reversed(self.scope.defaults)):
            value = as_mapping(source.get("resources")).get("memory_mb")
            if value is not None:
                return value if isinstance(value, int) and not isinstance(value, bool) else None
        return None

    def checks(self) -> None:
        """Check each output check."""
        checks = self.process.get("checks")
        if not isinstance(checks, list | tuple):
            return
        for index, check in enumerate(checks):
            if isinstance(check, Mapping):
                self.check(("checks", index), check)

    def check(self, sub_path: KeyPath, check: Mapping[str, Any]) -> None:
        """Check one output check: one kind, min_count only with glob, its texts, its regex."""
        kinds = [kind for kind in CHECK_KINDS if check.get(kind) is not None]
        if not kinds:
            self.add(sub_path, f"no check given; write one of {', '.join(CHECK_KINDS)}")
        elif len(kinds) > 1:
            self.add(
                (*sub_path, kinds[1]),
                f"one check per item: {kinds[0]} and {kinds[1]} are both set; split them into two '- ' items",
            )
        if check.get("min_count") is not None and "glob" not in kinds:
            self.add((*sub_path, "min_count"), "only a glob check counts files; remove min_count or use glob")
        for key in ("exists", "non_empty", "glob", "command", "message"):
            shell = key == "command"
            self.rules.template((*self.path, *sub_path, key), check.get(key), self.names, shell=shell)
        pattern = check.get("log_lacks")
        if isinstance(pattern, str):
            try:
                re.compile(pattern)
            except re.error as exc:
                self.add(
                    (*sub_path, "log_lacks"),
                    f"not a regular expression: {exc}; fix it, or put a backslash before special characters",
                )
