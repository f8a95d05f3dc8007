"""Spec templates: text with ``{{ name }}`` placeholders, and variables that refer to each other.

The template language of workflow specs (see :mod:`airflow_desc.workflow.spec`): a
placeholder is a variable or stream-variable name between ``{{`` and ``}}``; Jinja filters
and statements are refused when the template is read, not when it is rendered.

**Values are data.** In shell text (a batch process's ``command`` and ``dm_command``, an
output check's ``command``) every value is shell-quoted where it is filled in
(:meth:`Template.render_shell`): ``processEimage.py {{ repo }} --id visit={{ visit }}`` with
``visit = "1; touch x"`` runs ``processEimage.py repo --id visit='1; touch x'``, one word. A
variable built from others (``repo: "{{ root }}/repo"``) is filled in as text first and quoted
once, at the end. Shell syntax the spec's author writes (``$SCRATCH``, pipes, redirections)
stays shell syntax; a placeholder must therefore not stand inside quotes the author wrote
(``"{{ name }}"`` would keep the quotes as characters): :func:`shell_problems` says so when the
spec is read. A spec that really wants a value as shell text writes ``{{ name | raw }}``,
allowed only for a name whose values the spec constrains with a pattern (``patterns:``),
checked on every value before it is filled in.
"""

from __future__ import annotations

import re
import shlex
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
    "shell_problems",
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
_RAW_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*\|\s*raw$")


@dataclass(frozen=True)
class Template:
    """Text with ``{{ name }}`` placeholders, read once.

    :param text: the text as written.
    :param parts: literal text at even indices, placeholder names at odd indices.
    :param raw: the indices in ``parts`` of the placeholders written ``{{ name | raw }}``.
    """

    text: str
    parts: tuple[str, ...]
    raw: frozenset[int] = frozenset()

    @classmethod
    def parse(cls, text: str) -> Template:
        """Read a template.

        :param text: e.g. ``"processEimage.py {{ repo }} --id visit={{ visit }}"``.
        :raises TemplateError: for an unclosed ``{{``, anything but a name inside it, or ``{%``.
        """
        parts: list[str] = []
        raw: set[int] = set()
        pos = 0
        while True:
            match = _OPEN_RE.search(text, pos)
            if match is None:
                parts.append(text[pos:])
                return cls(text, tuple(parts), frozenset(raw))
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
            raw_match = _RAW_RE.match(inner)
            if raw_match:
                inner = raw_match.group(1)
                raw.add(len(parts) + 1)
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

    @property
    def raw_names(self) -> tuple[str, ...]:
        """The names of the placeholders written ``{{ name | raw }}``."""
        return tuple(dict.fromkeys(self.parts[i] for i in sorted(self.raw)))

    def render_shell(self, values: Mapping[str, Any], patterns: Mapping[str, str] | None = None) -> str:
        """Fill in the placeholders of shell text, each value shell-quoted (one word, never code).

        A ``{{ name | raw }}`` placeholder is filled in as is, once its value matches the
        name's pattern (the whole value).

        :param values: a value per name.
        :param patterns: regular expressions by name; a raw placeholder needs one.
        :raises TemplateError: for a placeholder with no value, a value no shell can pass (a NUL
            byte), or a raw value without a pattern or not matching it.
        """
        out: list[str] = []
        for index, part in enumerate(self.parts):
            if index % 2 == 0:
                out.append(part)
                continue
            if part not in values:
                raise TemplateError(f"no value for {{{{ {part} }}}} in {self.text!r}; give it a value")
            text = format_value(values[part])
            if "\0" in text:
                raise TemplateError(
                    f"the value of {{{{ {part} }}}} contains a NUL byte, which no shell can pass: "
                    f"{text[:80]!r}"
                )
            if index in self.raw:
                pattern = (patterns or {}).get(part)
                if pattern is None:
                    raise TemplateError(
                        f"{{{{ {part} | raw }}}} needs a pattern for {part} (patterns: in the spec)"
                    )
                if re.fullmatch(pattern, text) is None:
                    raise TemplateError(
                        f"{part} = {text[:80]!r} does not match its pattern {pattern!r}, so it cannot "
                        "stand unquoted in shell text; give a value of that shape"
                    )
                out.append(text)
            else:
                out.append(shlex.quote(text))
        return "".join(out)

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


def shell_problems(template: Template) -> list[str]:
    """Return what is wrong with a template used as shell text (empty when nothing is).

    A placeholder inside quotes the author wrote (``'...'`` or ``"..."``) would be quoted twice:
    its value would keep the quote characters, or (inside double quotes) still expand ``$``.
    Raw placeholders are the author's to quote.

    :param template: the template of a ``command``, ``dm_command`` or check ``command``.
    """
    problems: list[str] = []
    quote: str | None = None
    for index, part in enumerate(template.parts):
        if index % 2 == 1:
            if quote is not None and index not in template.raw:
                kind = "single" if quote == "'" else "double"
                problems.append(
                    f"{{{{ {part} }}}} stands inside {kind} quotes; values are shell-quoted for you: remove "
                    "the quotes around it"
                )
            continue
        escaped = False
        for char in part:
            if escaped:
                escaped = False
            elif char == "\\" and quote != "'":
                escaped = True
            elif quote is None and char in "'\"":
                quote = char
            elif char == quote:
                quote = None
    return problems
