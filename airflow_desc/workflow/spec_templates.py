"""Spec templates: text with ``{{ name }}`` placeholders, and variables that refer to each other.

The template language of workflow specs (see :mod:`airflow_desc.workflow.spec`): a
placeholder is a variable or stream-variable name between ``{{`` and ``}}``; Jinja filters
and statements are refused when the template is read, not when it is rendered.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_desc._validation import choose

__all__ = [
    "IDENT_RE",
    "Scalar",
    "Template",
    "TemplateError",
    "expand_variables",
    "format_value",
    "variable_cycle",
]

#: A variable's value.
Scalar = str | int | float | bool
#: A placeholder (and variable) name.
IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def format_value(value: Any) -> str:
    """Write a variable's value into a command: text as is, ``true``/``false`` for booleans.

    :param value: the value.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class TemplateError(ValueError):
    """A template cannot be read, or has no value for a placeholder; says what to do."""


_OPEN_RE = re.compile(r"\{\{|\{%")


@dataclass(frozen=True)
class Template:
    """Text with ``{{ name }}`` placeholders, read once.

    :param text: the text as written.
    :param parts: literal text at even indices, placeholder names at odd indices.
    """

    text: str
    parts: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Template:
        """Read a template.

        :param text: e.g. ``"processEimage.py {{ repo }} --id visit={{ visit }}"``.
        :raises TemplateError: for an unclosed ``{{``, anything but a name inside it, or ``{%``.
        """
        parts: list[str] = []
        pos = 0
        while True:
            match = _OPEN_RE.search(text, pos)
            if match is None:
                parts.append(text[pos:])
                return cls(text, tuple(parts))
            if match.group() == "{%":
                raise TemplateError(
                    "Jinja statements ({% ... %}) are not supported; use {{ name }} placeholders only"
                )
            end = text.find("}}", match.end())
            if end < 0:
                raise TemplateError(
                    f"'{{{{' at character {match.start() + 1} is not closed; write {{{{ name }}}}"
                )
            inner = text[match.end() : end].strip()
            if not IDENT_RE.match(inner):
                got = repr(inner) if inner else "nothing"
                raise TemplateError(
                    f"only a variable name may stand between {{{{ and }}}}, got {got}; "
                    "Jinja filters and expressions are not supported"
                )
            parts += [text[pos : match.start()], inner]
            pos = end + 2

    @property
    def names(self) -> tuple[str, ...]:
        """The placeholder names, in order of first use."""
        return tuple(dict.fromkeys(self.parts[1::2]))

    def render(self, values: Mapping[str, Any], *, keep_missing: bool = False) -> str:
        """Fill in the placeholders.

        :param values: a value per name (see :func:`format_value`).
        :param keep_missing: leave a placeholder with no value as ``{{ name }}``, to be filled
            in later (a stream variable, known at run time); else that is an error.
        :raises TemplateError: for a placeholder with no value, unless ``keep_missing``.
        """
        out: list[str] = []
        for index, part in enumerate(self.parts):
            if index % 2 == 0:
                out.append(part)
            elif part in values:
                out.append(format_value(values[part]))
            elif keep_missing:
                out.append(f"{{{{ {part} }}}}")
            else:
                raise TemplateError(f"no value for {{{{ {part} }}}} in {self.text!r}; give it a value")
        return "".join(out)

    def render_native(self, values: Mapping[str, Any], *, keep_missing: bool = False) -> Any:
        """Like :meth:`render`, but a template that is one placeholder keeps the value's type.

        :param values: a value per name.
        :param keep_missing: as in :meth:`render`.
        """
        if len(self.parts) == 3 and not self.parts[0] and not self.parts[2] and self.parts[1] in values:
            return values[self.parts[1]]
        return self.render(values, keep_missing=keep_missing)


def variable_cycle(templates: Mapping[str, Template]) -> list[str] | None:
    """Return a cycle of variables whose values refer to each other (``[a, b, a]``), or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for ref in templates[name].names if name in templates else ():
            if state.get(ref) == 1:
                return path[path.index(ref) :] + [ref]
            if ref not in state:
                found = visit(ref)
                if found:
                    return found
        path.pop()
        state[name] = 2
        return None

    for name in templates:
        if name not in state:
            found = visit(name)
            if found:
                return found
    return None


def expand_variables(values: Mapping[str, Any]) -> dict[str, Scalar]:
    """Fill the placeholders of variable values that refer to other variables.

    :param values: name -> value; text values may hold ``{{ other }}`` placeholders.
    :return: the values, placeholders filled in.
    :raises TemplateError: for a placeholder naming no variable, or a cycle.
    """
    templates = {k: Template.parse(v) for k, v in values.items() if isinstance(v, str) and "{" in v}
    cycle = variable_cycle(templates)
    if cycle:
        raise TemplateError(f"variables refer to each other in a cycle: {' -> '.join(cycle)}; break it")
    done: dict[str, Scalar] = {k: v for k, v in values.items() if k not in templates}

    def resolve(name: str) -> Scalar:
        if name not in done:
            if name not in templates:
                raise TemplateError(f"no variable named {name!r}; {choose(name, values)}")
            done[name] = templates[name].render({ref: resolve(ref) for ref in templates[name].names})
        return done[name]

    for name in values:
        resolve(name)
    return {name: done[name] for name in values}
