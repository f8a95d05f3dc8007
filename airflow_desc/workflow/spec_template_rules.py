"""The rules of a spec's texts: placeholders name what is known there, shell text quotes them.

:class:`TemplateRules` holds what every rule of :mod:`~airflow_desc.workflow.spec_rules` checks
against (the spec's variables, patterns, stream variables and clusters) and the problems found;
its :meth:`~TemplateRules.template` checks one text: it parses (:mod:`.spec_templates`), each
placeholder names a variable or stream variable known where it stands, ``| raw`` only in shell text
and only for a variable whose values a pattern constrains, and no placeholder of shell text stands
inside quotes the author wrote (:func:`~airflow_desc.workflow.spec_templates.shell_problems`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from airflow_desc._validation import choose
from airflow_desc._yaml_lines import KeyPath, describe_value, did_you_mean
from airflow_desc.workflow.spec_templates import Template, TemplateError, format_value, shell_problems

if TYPE_CHECKING:
    from airflow_desc.clusters import ClusterProfiles

__all__ = ["TemplateRules", "as_mapping", "type_mismatch", "value_kind"]


def value_kind(value: Any) -> str:
    """How messages name the type of a variable's value: ``text``, ``a number``..."""
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    return "text"


def type_mismatch(default: Any, value: Any) -> str | None:
    """Why ``value`` cannot stand for a variable whose default is ``default``, or None."""
    want, got = value_kind(default), value_kind(value)
    if not isinstance(value, str | int | float | bool):
        got = "other"
    if want == got or (want == "a number" and got == "a whole number"):
        return None
    return (
        f"expected {want} like its default {format_value(default)}, got {describe_value(value)}; write {want}"
    )


def as_mapping(value: Any) -> Mapping[Any, Any]:
    """Return ``value`` if it is a mapping, else an empty one: the rules read data the models may reject."""
    return value if isinstance(value, Mapping) else {}


class TemplateRules:
    """The problems found so far, the spec-wide names the rules check against, and the template rules.

    :param data: a spec's plain data, as loaded (it may be invalid for the models too).
    :param clusters: if given, every ``resources.cluster`` must name one of them.
    """

    def __init__(self, data: Mapping[str, Any], clusters: ClusterProfiles | None) -> None:
        self.data = data
        self.clusters = clusters
        self.problems: list[tuple[KeyPath, str]] = []
        self.variables = {
            k: v
            for k, v in as_mapping(data.get("variables")).items()
            if isinstance(v, str | int | float | bool)
        }
        self.stream_owners: dict[str, str] = {}
        patterns = as_mapping(data.get("patterns")).items()
        self.patterns = {k: v for k, v in patterns if isinstance(k, str) and isinstance(v, str)}

    def add(self, path: KeyPath, message: str) -> None:
        """Note a problem at ``path``: ``"<what is wrong>; <what to do>"``."""
        self.problems.append((path, message))

    def template(
        self, path: KeyPath, value: Any, names: Collection[str], *, shell: bool = False
    ) -> Template | None:
        """Check the text at ``path`` (``names``: the variables known there); return it parsed, or None."""
        if not isinstance(value, str):
            return None
        try:
            template = Template.parse(value)
        except TemplateError as exc:
            self.add(path, str(exc))
            return None
        for name in template.names:
            if name not in names:
                self.add(path, self.unknown_placeholder(name, names))
        if not shell:
            for name in template.raw_names:
                self.add(
                    path,
                    f"{{{{ {name} | raw }}}}: '| raw' is only for shell text (a command, dm_command, or a "
                    "check's command); write {{ " + name + " }}",
                )
            return template
        for problem in shell_problems(template):
            self.add(path, problem)
        for name in template.raw_names:
            if name not in self.patterns:
                self.add(
                    path,
                    f"{{{{ {name} | raw }}}} puts {name}'s value into the shell unquoted; declare the shape "
                    f"of its values under patterns (e.g. patterns: {{{name}: '[A-Za-z0-9_.,=/-]+'}}), or "
                    f"write {{{{ {name} }}}}",
                )
        return template

    def unknown_placeholder(self, name: str, names: Collection[str]) -> str:
        """Say why ``name`` is not known where it stands, and what to write instead."""
        owner = self.stream_owners.get(name)
        if owner is not None:
            return (
                f"{{{{ {name} }}}} is the stream variable of {owner}, not known here; "
                f"use it only in {owner} and the tasks below it"
            )
        guess = did_you_mean(name, names)
        if guess:
            return f"unknown variable {{{{ {name} }}}}; did you mean {{{{ {guess} }}}}?"
        known = ", ".join(sorted(names))
        return f"unknown variable {{{{ {name} }}}}; declare it under variables (known here: {known})"

    def template_tree(self, path: KeyPath, value: Any, names: Collection[str]) -> None:
        """Check every text inside a kwargs value (lists and mappings included)."""
        if isinstance(value, Mapping):
            for key, item in value.items():
                self.template_tree((*path, key), item, names)
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                self.template_tree((*path, index), item, names)
        else:
            self.template(path, value, names)

    def check_cluster(self, path: KeyPath, resources: Any) -> None:
        """Check that ``resources.cluster`` and each of ``resources.fallback_clusters`` name clusters."""
        res = as_mapping(resources)
        cluster, fallbacks = res.get("cluster"), res.get("fallback_clusters")
        named: list[tuple[KeyPath, Any]] = [(("cluster",), cluster)]
        if isinstance(fallbacks, list | tuple):
            named += [(("fallback_clusters", i), name) for i, name in enumerate(fallbacks)]
            if isinstance(cluster, str) and cluster in fallbacks:
                self.add(
                    (*path, "fallback_clusters"),
                    f"names {cluster!r}, the process's own cluster; list only other clusters",
                )
        for where, name in named:
            if self.clusters is not None and isinstance(name, str) and name not in self.clusters:
                hint = choose(name, self.clusters.names, known="known clusters:")
                self.add((*path, *where), f"no cluster named {name!r} in {self.clusters.source}; {hint}")
