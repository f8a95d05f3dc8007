"""Workflow specs: one YAML file per workflow, checked when it is loaded (no DAG code here).

A spec is what a Pipeline II task XML was: a named, versioned task made of processes
(``batch``: a SLURM job on a cluster; ``script``: a Python function run on the Airflow
worker) and of sub-tasks, each run once per *stream* that a script of its parent makes at
run time (a visit, a raft of that visit, a sensor of that raft...). Sub-tasks nest to any
depth. One spec gives one DAG per variant (see :mod:`airflow_desc.workflow.graph`)::

    name: DC1-DM12                      # the top-level task (DAG id, history, status table)
    version: "1.16"                     # quote versions: YAML reads 1.10 as the number 1.1
    description: DC1 DM processing
    variables:                          # defaults; a variant, then a run's conf, override them
      scale: 1.0                        # fan-out size (1.0 = DC1's counts)
      sim: imsim
      repo: "dc1/{{ sim }}/repo"        # {{ name }} placeholders; quote a value starting with {{
    variants:                           # named override sets: one DAG each
      imsim: {sim: imsim}
      phosim: {sim: phosim}
    defaults:                           # for every process below (a task may add its own)
      resources: {cluster: perlmutter, cpus: 1, memory_mb: 2000, walltime: "1:00:00"}
      retries: 2
      escalation: {memory_factor: 2, walltime_factor: 2}   # next try after OOM / TIMEOUT
      emulate: {seed: "1"}
    bundling: {threshold: 100, max_task_instances: 1000}
    processes:
      ingest:
        type: batch
        dm_command: ingestDriver.py {{ repo }} --cores 16 --mode link raw/*.fits.gz
        emulate: {cpu_seconds: 2, memory_mb: 100, outputs: ["{{ repo }}/registry.sqlite3"]}
        resources: {cpus: 16, memory_mb: 16000, walltime: "4:00:00"}
        checks:
          - non_empty: "{{ repo }}/registry.sqlite3"
      setupVisits:
        type: script
        callable: mypackage.setup:list_visits      # returns the streams of processVisit
        depends_on: [ingest]
      report:
        type: script
        callable: mypackage.report:write_report
        after: [processVisit]           # runs whatever became of processVisit
    tasks:
      processVisit:
        version: "1.0"
        streams_from: setupVisits       # a script process of the parent
        stream_var: visit               # each stream's value, as {{ visit }} in commands
        expected_streams: 5115 * scale  # streams per parent stream (for bundling, estimates)
        bundle: auto                    # auto | always | never; bundle_size: N to fix the size
        processes:
          processEimage:
            type: batch
            command: processEimage.py {{ repo }} --id visit={{ visit }}
            skip_if: "sim == 'phosim' and visit == '0'"
            checks:
              - exists: "{{ repo }}/calexp/{{ visit }}.fits"
              - log_lacks: "PSF determination failed"

Keys of the top level: ``name``, ``version``, ``description``, ``variables``, ``variants``,
``defaults``, ``bundling``, ``processes``, ``tasks``. Keys of a sub-task: ``version`` (default:
the parent's), ``description``, ``streams_from``, ``stream_var``, ``expected_streams``,
``bundle``, ``bundle_size``, ``depends_on``, ``after``, ``defaults``, ``processes``, ``tasks``.
Names of tasks are unique in a workflow; names of processes and sub-tasks, within their task.

Keys of a process: ``type`` (``batch`` | ``script``), ``description``, ``depends_on`` (names
of processes or sub-tasks of the same task; a failure there skips this process), ``after``
(same names; waited for whatever their end state, Pipeline II's ``status="DONE"``),
``skip_if``, ``retries``. A batch process also has ``command`` (shell text) or ``emulate``
(the DM-like payload of :mod:`airflow_desc.emulate`: ``cpu_seconds``, ``memory_mb``,
``sleep_seconds``, ``outputs``, ``output_mb``, ``inputs``, ``fail``, ``fail_rate``,
``exit_code``, ``seed``, ``name``), optionally ``dm_command`` (the real DM command line, kept
beside the emulated one), ``resources`` (``cpus``, ``memory_mb``, ``walltime``, ``cluster``,
``partition``, ``container``), ``escalation`` and ``checks``. A script process has
``callable`` (``module.path:function``; imported at run time, not here) and ``kwargs``.

Output checks run after SLURM says COMPLETED; one kind per list item: ``exists``,
``non_empty``, ``glob`` (with ``min_count``, default 1), ``command`` (a validation command
that must exit 0) or ``log_lacks`` (a regular expression that must not appear in the log),
each with an optional ``message``. A failing check makes the process instance Failed with
reason ``output-check``.

``skip_if`` is a condition over variables, stream variables and the end states of upstream
processes (``'success'``, ``'failed'``, ``'terminated'``, ``'skipped'``...): names, constants,
comparisons (``== != < <= > >= in``, ``not in``), ``and``, ``or``, ``not``. It is parsed, never
``eval``-ed: a function call, an attribute or an index is refused. ``expected_streams`` is an
arithmetic expression (numbers, numeric variables, ``+ - * / //``).

Placeholders are ``{{ name }}``, a variable or a stream variable in scope (the sub-task's and
its ancestors'); filters and Jinja statements are refused. Variables may refer to other
variables. A kwargs value that is only a placeholder keeps the variable's type.

Script contract (kept by the runtime, recorded here): the function is called with its
``kwargs``; a script named by a sub-task's ``streams_from`` returns the streams of that
sub-task (a list of values of its ``stream_var``), or, when it feeds several sub-tasks, a
mapping of sub-task name to such a list. A function that takes an ``expected_streams``
argument also gets, per sub-task it feeds, that sub-task's ``expected_streams`` for this run
(how the emulated DC1 setup scripts size their fan-outs with ``scale``).

Every problem of a file is reported at once, one per line, as
``<file>:<line>: <dotted.path>: <what is wrong>; <what to do>``, in a
:class:`~airflow_desc.exceptions.WorkflowSpecError`; a spec that loads is valid.
"""

from __future__ import annotations

import ast
import operator
import os
import re
import types
from collections.abc import Callable, Collection, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import ErrorDetails

from airflow_desc._yaml_lines import (
    KeyPath,
    LocatedYaml,
    YamlLoadError,
    YamlProblem,
    describe_value,
    did_you_mean,
    format_path,
)
from airflow_desc.clusters import ClusterProfiles
from airflow_desc.exceptions import WorkflowSpecError
from airflow_desc.slurm.units import WALLTIME_FORMS, walltime_seconds

__all__ = [
    "CHECK_KINDS",
    "FAILURE_MODES",
    "PROCESS_TYPES",
    "BundlingSettings",
    "Defaults",
    "Emulate",
    "EmulateDefaults",
    "Escalation",
    "Expression",
    "ExpressionError",
    "OutputCheck",
    "ProcessSpec",
    "Resources",
    "Scalar",
    "SubTaskSpec",
    "TaskSpec",
    "Template",
    "TemplateError",
    "WorkflowSpec",
    "expand_variables",
    "format_value",
    "load_spec",
    "parse_spec",
]

#: A variable's value.
Scalar = str | int | float | bool
ProcessType = Literal["batch", "script"]
PROCESS_TYPES: tuple[str, ...] = get_args(ProcessType)
FailureMode = Literal["none", "exit", "traceback", "missing", "oom", "timeout", "segfault", "disk-full"]
#: The payload's ``--fail`` choices (``airflow_desc.emulate.payload.FAILURES``).
FAILURE_MODES: tuple[str, ...] = get_args(FailureMode)
BundleMode = Literal["auto", "always", "never"]
#: The kinds of output check, one per item of ``checks``.
CHECK_KINDS = ("exists", "non_empty", "glob", "command", "log_lacks")

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VARIANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]*$")
_CALLABLE_RE = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")
# Keys that only one process type has.
_BATCH_ONLY = ("command", "dm_command", "emulate", "resources", "escalation", "checks")
_SCRIPT_ONLY = ("callable", "kwargs")


# --- words for messages --------------------------------------------------------------------------


def _choose(
    word: Any, choices: Collection[str], *, known: str = "use one of", empty: str = "there is none to name"
) -> str:
    """``did you mean 'x'?`` when a choice is close, else the list of choices (or ``empty``)."""
    guess = did_you_mean(word, choices) if isinstance(word, str) else None
    if guess:
        return f"did you mean '{guess}'?"
    return f"{known} {', '.join(choices)}" if choices else empty


def format_value(value: Any) -> str:
    """Write a variable's value into a command: text as is, ``true``/``false`` for booleans.

    :param value: the value.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- templates -----------------------------------------------------------------------------------


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
            if not _IDENT_RE.match(inner):
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


# --- restricted expressions ----------------------------------------------------------------------


class ExpressionError(ValueError):
    """An expression cannot be read, uses what is not allowed, or cannot be evaluated."""


_COMPARISONS: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_ARITHMETIC: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
}
_NOT_ALLOWED = {
    ast.Call: "a function call",
    ast.Attribute: "an attribute",
    ast.Subscript: "an index",
    ast.Lambda: "a lambda",
    ast.NamedExpr: "an assignment",
    ast.IfExp: "an if-expression",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a comprehension",
    ast.JoinedStr: "an f-string",
    ast.Starred: "a starred expression",
    ast.BinOp: "arithmetic",
}
_HINTS = {
    "condition": "use names of variables or upstream processes, constants, comparisons and and/or/not, "
    "e.g. \"dither == 'undithered'\"",
    "number": 'use numbers, names of numeric variables and + - * / //, e.g. "5115 * scale"',
}
ExpressionKind = Literal["condition", "number"]


@dataclass(frozen=True)
class Expression:
    """A restricted Python expression: a ``skip_if`` condition or an arithmetic ``number``.

    Read with :mod:`ast` and walked here; nothing is ever passed to ``eval``.

    :param text: the expression as written.
    :param kind: ``"condition"`` or ``"number"``.
    :param names: the names it reads.
    """

    text: str
    kind: ExpressionKind
    names: frozenset[str]
    tree: ast.expr = field(repr=False, compare=False)

    @classmethod
    def parse(cls, text: str, kind: ExpressionKind) -> Expression:
        """Read an expression and refuse anything but what ``kind`` allows.

        :param text: e.g. ``"level1MakeTempExpCoadd in ('failed', 'terminated')"``.
        :param kind: ``"condition"`` or ``"number"``.
        :raises ExpressionError: naming the part that is not allowed and what to write instead.
        """
        source = text.strip()
        try:
            tree = ast.parse(source, mode="eval")
        except SyntaxError as exc:
            raise ExpressionError(f"cannot read {source!r}: {exc.msg}; {_HINTS[kind]}") from None
        names: set[str] = set()
        _Walker(source, kind, names).check(tree.body)
        return cls(text, kind, frozenset(names), tree.body)

    def evaluate(self, values: Mapping[str, Any]) -> Any:
        """Evaluate with the given names; a condition gives a bool.

        :param values: a value for every name in :attr:`names`.
        :raises ExpressionError: for a missing name or values that cannot be compared.
        """
        result = _evaluate(self.tree, values, self.text)
        return bool(result) if self.kind == "condition" else result


class _Walker:
    def __init__(self, source: str, kind: ExpressionKind, names: set[str]) -> None:
        self.source = source
        self.kind = kind
        self.names = names

    def refuse(self, node: ast.AST, what: str) -> ExpressionError:
        segment = ast.get_source_segment(self.source, node) or self.source
        return ExpressionError(f"{what} is not allowed (`{segment}`); {_HINTS[self.kind]}")

    def check(self, node: ast.AST) -> None:
        if isinstance(node, ast.Name):
            self.names.add(node.id)
        elif isinstance(node, ast.Constant):
            self.constant(node)
        elif isinstance(node, ast.UnaryOp):
            allowed: tuple[type[ast.unaryop], ...] = (ast.USub, ast.UAdd)
            if self.kind == "condition":
                allowed = (ast.Not, ast.USub)
            if not isinstance(node.op, allowed):
                raise self.refuse(node, "this operator")
            self.check(node.operand)
        elif isinstance(node, ast.BinOp) and self.kind == "number":
            if type(node.op) not in _ARITHMETIC:
                raise self.refuse(node, "this operator")
            self.check(node.left)
            self.check(node.right)
        elif isinstance(node, ast.BoolOp | ast.Compare | ast.Tuple | ast.List) and self.kind == "condition":
            self.condition_part(node)
        else:
            what = _NOT_ALLOWED.get(type(node), "this")
            raise self.refuse(node, what)

    def constant(self, node: ast.Constant) -> None:
        value = node.value
        if self.kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.refuse(node, "a constant that is not a number")
        elif value is not None and not isinstance(value, str | int | float | bool):
            raise self.refuse(node, "this constant")

    def condition_part(self, node: ast.BoolOp | ast.Compare | ast.Tuple | ast.List) -> None:
        if isinstance(node, ast.Compare):
            for op in node.ops:
                if type(op) not in _COMPARISONS:
                    raise self.refuse(node, "'is' / 'is not'")
            children: list[ast.expr] = [node.left, *node.comparators]
        elif isinstance(node, ast.BoolOp):
            children = list(node.values)
        else:
            children = list(node.elts)
        for child in children:
            self.check(child)


def _evaluate(node: ast.expr, values: Mapping[str, Any], text: str) -> Any:
    try:
        return _eval_node(node, values)
    except KeyError as exc:
        raise ExpressionError(f"{text!r}: no value for {exc.args[0]!r}") from None
    except (TypeError, ZeroDivisionError) as exc:
        raise ExpressionError(f"{text!r}: {exc}") from None


def _eval_node(node: ast.expr, values: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Name):
        return values[node.id]
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp):
        operand = _eval_node(node.operand, values)
        return (
            not operand
            if isinstance(node.op, ast.Not)
            else (-operand if isinstance(node.op, ast.USub) else +operand)
        )
    if isinstance(node, ast.BinOp):
        return _ARITHMETIC[type(node.op)](_eval_node(node.left, values), _eval_node(node.right, values))
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            return all(_eval_node(v, values) for v in node.values)
        return any(_eval_node(v, values) for v in node.values)
    if isinstance(node, ast.Compare):
        left = _eval_node(node.left, values)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _eval_node(right_node, values)
            if not _COMPARISONS[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.Tuple | ast.List):
        return tuple(_eval_node(e, values) for e in node.elts)
    raise TypeError(f"cannot evaluate {type(node).__name__}")  # refused by Expression.parse


# --- field checks (pydantic) ---------------------------------------------------------------------


def _name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError(
            f"name {value!r} is not allowed; use letters, digits, '_' and '-', starting with a letter"
        )
    return value


def _identifier(value: str) -> str:
    if not _IDENT_RE.match(value):
        raise ValueError(
            f"name {value!r} is not allowed; use letters, digits and '_', not starting with a digit"
        )
    return value


def _variant_name(value: str) -> str:
    if not _VARIANT_RE.match(value):
        raise ValueError(
            f"variant name {value!r} is not allowed; "
            "use letters, digits, '_', '.' and '-' (it goes in a DAG id)"
        )
    return value


def _version(value: str) -> str:
    if not _VERSION_RE.match(value):
        raise ValueError(f'version {value!r} is not allowed; write e.g. "1.0" (no spaces)')
    return value


def _scalar(value: Any) -> Any:
    if isinstance(value, str | int | float | bool):
        return value
    raise ValueError(
        f"expected text, a number or true/false, got {describe_value(value)}; a variable holds one value"
    )


def _walltime(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a walltime, got {describe_value(value)}; write {WALLTIME_FORMS}")
    try:
        walltime_seconds(value)
    except ValueError as exc:
        raise ValueError(f"{exc}; write {WALLTIME_FORMS}") from None
    return str(value).strip() if isinstance(value, str) else f"{value // 60}:{value % 60:02d}:00"


def _number_text(value: Any) -> Any:
    """Keep a number or an expression as text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    if isinstance(value, str):
        return value
    raise ValueError(
        f"expected a number or an arithmetic expression, got {describe_value(value)}; write e.g. 5115 * scale"
    )


def _seed_text(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _names_list(value: Any) -> Any:
    """``depends_on: x`` is ``depends_on: [x]``."""
    return (value,) if isinstance(value, str) else value


Name = Annotated[StrictStr, AfterValidator(_name)]
Ident = Annotated[StrictStr, AfterValidator(_identifier)]
VariantName = Annotated[StrictStr, AfterValidator(_variant_name)]
Version = Annotated[StrictStr, AfterValidator(_version)]
VariableValue = Annotated[Any, AfterValidator(_scalar)]
Walltime = Annotated[str, BeforeValidator(_walltime)]
NumberText = Annotated[str, BeforeValidator(_number_text)]
Names = Annotated[tuple[Name, ...], BeforeValidator(_names_list)]
PositiveInt = Annotated[StrictInt, Field(ge=1)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(_Model):
    """What a batch process asks SLURM for; unset fields come from ``defaults``.

    :param cpus: CPUs of the job.
    :param memory_mb: memory in MB.
    :param walltime: ``D-HH:MM:SS``, ``HH:MM:SS``, ``MM:SS`` or whole minutes.
    :param cluster: a cluster profile name (:mod:`airflow_desc.clusters`).
    :param partition: overrides the cluster profile's partition.
    :param container: the image to run the command in, with the cluster's container runtime.
    """

    cpus: PositiveInt | None = None
    memory_mb: PositiveInt | None = None
    walltime: Walltime | None = None
    cluster: StrictStr | None = None
    partition: StrictStr | None = None
    container: StrictStr | None = None


class Escalation(_Model):
    """How a retry raises resources after the job ran out of memory or time.

    :param memory_factor: memory multiplier after OUT_OF_MEMORY (1 = do not raise).
    :param walltime_factor: walltime multiplier after TIMEOUT (1 = do not raise).
    """

    memory_factor: Annotated[StrictFloat, Field(ge=1)] = 2.0
    walltime_factor: Annotated[StrictFloat, Field(ge=1)] = 2.0


class EmulateDefaults(_Model):
    """Settings of every emulated payload below a ``defaults`` block.

    :param seed: the failure-draw seed (templated); a new seed "fixes" a failed stream.
    :param output_mb: size of each output file.
    :param sleep_seconds: wall time to wait after burning CPU.
    """

    seed: Annotated[StrictStr, BeforeValidator(_seed_text)] | None = None
    output_mb: Annotated[StrictFloat, Field(gt=0)] | None = None
    sleep_seconds: Annotated[StrictFloat, Field(ge=0)] | None = None


class Emulate(EmulateDefaults):
    """The DM-like payload a batch process runs in place of its DM command line.

    Turned into :func:`airflow_desc.emulate.payload_command` arguments by the graph.

    :param cpu_seconds: CPU time to burn.
    :param memory_mb: memory to hold, in MB (keep it below ``resources.memory_mb``).
    :param outputs: files to write (templated).
    :param inputs: files that must exist (templated).
    :param fail: how to fail: one of :data:`FAILURE_MODES`.
    :param fail_rate: the probability of failing that way, drawn from ``seed`` and ``name``.
    :param exit_code: the exit code of ``fail: exit``.
    :param name: the payload name (templated); default: the process and its stream values.
    """

    cpu_seconds: Annotated[StrictFloat, Field(ge=0)] = 1.0
    memory_mb: Annotated[StrictFloat, Field(ge=0)] = 0.0
    outputs: tuple[StrictStr, ...] = ()
    inputs: tuple[StrictStr, ...] = ()
    fail: FailureMode = "none"
    fail_rate: Annotated[StrictFloat, Field(ge=0, le=1)] = 1.0
    exit_code: StrictInt | None = None
    name: StrictStr | None = None


class OutputCheck(_Model):
    """One output check, run after SLURM reports COMPLETED; exactly one kind is set.

    :param exists: a file that must exist (templated).
    :param non_empty: a file that must exist and not be empty (templated).
    :param glob: a pattern that must match at least ``min_count`` files (templated).
    :param min_count: for ``glob``.
    :param command: a validation command that must exit 0 (templated).
    :param log_lacks: a regular expression that must not appear in the job's log.
    :param message: what the failure says; default: from the check.
    """

    exists: StrictStr | None = None
    non_empty: StrictStr | None = None
    glob: StrictStr | None = None
    min_count: PositiveInt | None = None
    command: StrictStr | None = None
    log_lacks: StrictStr | None = None
    message: StrictStr | None = None

    @property
    def kind(self) -> str:
        """Which check this is: one of :data:`CHECK_KINDS`."""
        return next(kind for kind in CHECK_KINDS if getattr(self, kind) is not None)

    @property
    def target(self) -> str:
        """The path, pattern, command or regular expression checked."""
        value = getattr(self, self.kind)
        assert isinstance(value, str)
        return value


class ProcessSpec(_Model):
    """A Pipeline II process: a batch job on a cluster or a script on the worker.

    :param type: ``batch`` or ``script``.
    :param description: one line for operators.
    :param depends_on: processes or sub-tasks of the same task that must succeed first.
    :param after: processes or sub-tasks waited for whatever their end state.
    :param skip_if: a condition (see the module docs); when it holds the process is Skipped.
    :param retries: retries after the first try; default from ``defaults``.
    :param escalation: batch: how retries raise memory / walltime.
    :param resources: batch: what SLURM is asked for.
    :param command: batch: the shell command (templated).
    :param dm_command: batch: the real DM command line (templated), kept beside ``emulate``.
    :param emulate: batch: the DM-like payload to run instead of a command.
    :param callable: script: ``module.path:function``.
    :param kwargs: script: keyword arguments (string values templated).
    :param checks: batch: output checks.
    """

    type: ProcessType
    description: StrictStr = ""
    depends_on: Names = ()
    after: Names = ()
    skip_if: StrictStr | None = None
    retries: Annotated[StrictInt, Field(ge=0)] | None = None
    escalation: Escalation | None = None
    resources: Resources | None = None
    command: StrictStr | None = None
    dm_command: StrictStr | None = None
    emulate: Emulate | None = None
    callable: StrictStr | None = None
    kwargs: dict[StrictStr, Any] = {}
    checks: tuple[OutputCheck, ...] = ()


class Defaults(_Model):
    """Defaults for the processes of a task and of its sub-tasks (nearest wins, field by field).

    :param resources: default resources.
    :param retries: default retries.
    :param escalation: default escalation.
    :param emulate: default emulated-payload settings.
    """

    resources: Resources | None = None
    retries: Annotated[StrictInt, Field(ge=0)] | None = None
    escalation: Escalation | None = None
    emulate: EmulateDefaults | None = None


class BundlingSettings(_Model):
    """When sub-tasks run in bundles, and how big bundles are.

    :param threshold: a sub-task with ``bundle: auto`` runs in bundles when a DAG run may
        make more streams of it than this.
    :param max_task_instances: bundles that set no ``bundle_size`` are sized so that one
        DAG run stays within this many task instances.
    """

    threshold: PositiveInt = 100
    max_task_instances: PositiveInt = 1000


class TaskSpec(_Model):
    """What the top-level task and sub-tasks have in common.

    :param description: one line for operators.
    :param defaults: defaults for the processes of this task and the tasks below it.
    :param processes: the processes, by name, in run order as far as dependencies allow.
    :param tasks: the sub-tasks, by name.
    """

    description: StrictStr = ""
    defaults: Defaults | None = None
    processes: dict[Name, ProcessSpec] = {}
    tasks: dict[Name, SubTaskSpec] = {}


class SubTaskSpec(TaskSpec):
    """A sub-task: run once per stream that a script process of its parent makes.

    :param version: its version; default: the parent's.
    :param streams_from: the script process of the parent that returns the streams.
    :param stream_var: the name each stream's value has in templates (``{{ visit }}``).
    :param expected_streams: streams per parent stream, an arithmetic expression of variables.
    :param bundle: ``auto`` (bundled when many streams are expected), ``always`` or ``never``.
    :param bundle_size: streams per bundle; default: computed (see :mod:`~airflow_desc.workflow.graph`).
    :param depends_on: processes or sub-tasks of the parent that must succeed first.
    :param after: processes or sub-tasks of the parent waited for whatever their state.
    """

    version: Version | None = None
    streams_from: Name
    stream_var: Ident | None = None
    expected_streams: NumberText = "1"
    bundle: BundleMode = "auto"
    bundle_size: PositiveInt | None = None
    depends_on: Names = ()
    after: Names = ()


class WorkflowSpec(TaskSpec):
    """A workflow: the top-level task with its variables, variants and sub-tasks.

    Make one with :func:`load_spec` or :func:`parse_spec`; :attr:`source` is the file.

    :param name: the top-level task name (DAG ids, history, status table).
    :param version: its version.
    :param variables: default values.
    :param variants: named sets of variable overrides; one DAG each.
    :param bundling: bundling settings.
    """

    name: Name
    version: Version
    variables: dict[Ident, VariableValue] = {}
    variants: dict[VariantName, dict[Ident, VariableValue]] = {}
    bundling: BundlingSettings = BundlingSettings()

    _source: str = PrivateAttr("<memory>")

    @model_validator(mode="after")
    def _check_rules(self, info: ValidationInfo) -> WorkflowSpec:
        # parse_spec checked the rules already, with lines; a spec built in Python is checked here.
        if info.context and info.context.get("rules_checked"):
            return self
        problems = _Rules(self.model_dump(exclude_unset=True), None).run()
        if problems:
            raise ValueError("\n".join(f"{format_path(path)}: {message}" for path, message in problems))
        return self

    @property
    def source(self) -> str:
        """The file the spec was read from (``<memory>`` if built in Python)."""
        return self._source

    @property
    def variant_names(self) -> tuple[str, ...]:
        """The variants, in file order; empty when the spec has none."""
        return tuple(self.variants)

    def iter_tasks(self) -> Iterator[tuple[tuple[str, ...], TaskSpec]]:
        """Yield ``(names from the top, task)`` for this task and every sub-task, depth first."""
        stack: list[tuple[tuple[str, ...], TaskSpec]] = [((self.name,), self)]
        while stack:
            names, task = stack.pop()
            yield names, task
            stack.extend(((*names, name), sub) for name, sub in reversed(task.tasks.items()))

    def variables_for(
        self, variant: str | None = None, overrides: Mapping[str, Any] | None = None
    ) -> dict[str, Scalar]:
        """Return the variable values of a DAG run: defaults, then the variant's, then the run's.

        Placeholders in values are filled in (``repo: "{{ root }}/repo"``).

        :param variant: a variant name, or ``None`` for the defaults.
        :param overrides: e.g. a DAG run's conf; names must be variables, values of their type.
        :raises WorkflowSpecError: for an unknown variant or variable, a value of the wrong
            type, or placeholders that refer to each other in a cycle.
        """
        values: dict[str, Any] = dict(self.variables)
        if variant is not None:
            if variant not in self.variants:
                hint = _choose(variant, self.variants, known="variants are")
                raise WorkflowSpecError(f"{self.source}: variants: no variant named {variant!r}; {hint}")
            values.update(self.variants[variant])
        problems: list[str] = []
        for key, value in (overrides or {}).items():
            if key not in self.variables:
                problems.append(f"{key}: not a variable of {self.name}; {_choose(key, self.variables)}")
                continue
            mismatch = _type_mismatch(self.variables[key], value)
            if mismatch:
                problems.append(f"{key}: {mismatch}")
            else:
                values[key] = value
        if problems:
            raise WorkflowSpecError("\n".join(f"{self.source}: run conf: {p}" for p in problems))
        try:
            return expand_variables(values)
        except TemplateError as exc:
            raise WorkflowSpecError(f"{self.source}: variables: {exc}") from None


SubTaskSpec.model_rebuild()
TaskSpec.model_rebuild()
WorkflowSpec.model_rebuild()


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    return "text"


def _type_mismatch(default: Any, value: Any) -> str | None:
    """Why ``value`` cannot stand for a variable whose default is ``default``, or None."""
    want, got = _kind(default), _kind(value)
    if not isinstance(value, str | int | float | bool):
        got = "other"
    if want == got or (want == "a number" and got == "a whole number"):
        return None
    return (
        f"expected {want} like its default {format_value(default)}, got {describe_value(value)}; write {want}"
    )


def _variable_cycle(templates: Mapping[str, Template]) -> list[str] | None:
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
    cycle = _variable_cycle(templates)
    if cycle:
        raise TemplateError(f"variables refer to each other in a cycle: {' -> '.join(cycle)}; break it")
    done: dict[str, Scalar] = {k: v for k, v in values.items() if k not in templates}

    def resolve(name: str) -> Scalar:
        if name not in done:
            if name not in templates:
                raise TemplateError(f"no variable named {name!r}; {_choose(name, values)}")
            done[name] = templates[name].render({ref: resolve(ref) for ref in templates[name].names})
        return done[name]

    for name in values:
        resolve(name)
    return {name: done[name] for name in values}


# --- rules that need more than one field --------------------------------------------------------


def _mapping(value: Any) -> Mapping[Any, Any]:
    return value if isinstance(value, Mapping) else {}


def _listed(value: Any) -> list[tuple[KeyPath, str]]:
    """Return the names of a depends_on / after value, each with its path below the key."""
    if isinstance(value, str):
        return [((), value)]
    if isinstance(value, list | tuple):
        return [((index,), item) for index, item in enumerate(value) if isinstance(item, str)]
    return []


@dataclass(frozen=True)
class _Scope:
    """What a task's processes can see."""

    stream_vars: tuple[str, ...] = ()
    defaults: tuple[Mapping[str, Any], ...] = ()


class _Rules:
    """Checks across fields, on the plain data; tolerant of what the models reject."""

    def __init__(self, data: Mapping[str, Any], clusters: ClusterProfiles | None) -> None:
        self.data = data
        self.clusters = clusters
        self.problems: list[tuple[KeyPath, str]] = []
        self.variables = {
            k: v
            for k, v in _mapping(data.get("variables")).items()
            if isinstance(v, str | int | float | bool)
        }
        self.task_paths: dict[str, KeyPath] = {}
        self.stream_owners: dict[str, str] = {}

    def add(self, path: KeyPath, message: str) -> None:
        self.problems.append((path, message))

    def run(self) -> list[tuple[KeyPath, str]]:
        self.check_variables()
        self.check_variants()
        self.collect_stream_vars(self.data)
        if isinstance(self.data.get("name"), str):
            self.task_paths[self.data["name"]] = ()
        self.check_task((), self.data, _Scope())
        return self.problems

    # variables ------------------------------------------------------------------------------
    def check_variables(self) -> None:
        templates: dict[str, Template] = {}
        for name, value in self.variables.items():
            template = self.template(("variables", name), value, set(self.variables) - {name})
            if template is not None:
                templates[name] = template
        cycle = _variable_cycle(templates)
        if cycle:
            self.add(
                ("variables", cycle[0]),
                f"variables refer to each other in a cycle: {' -> '.join(cycle)}; break it",
            )

    def check_variants(self) -> None:
        for variant, overrides in _mapping(self.data.get("variants")).items():
            for key, value in _mapping(overrides).items():
                path: KeyPath = ("variants", variant, key)
                if not isinstance(value, str | int | float | bool):
                    continue  # the model says what a variable may hold
                if key not in self.variables:
                    if isinstance(key, str) and _IDENT_RE.match(key):
                        hint = _choose(key, self.variables, known="declare it under variables; variables are")
                        self.add(path, f"not a variable of this workflow; {hint}")
                    continue
                mismatch = _type_mismatch(self.variables[key], value)
                if mismatch:
                    self.add(path, mismatch)
                else:
                    self.template(path, value, set(self.variables) - {key})

    def collect_stream_vars(self, task: Mapping[str, Any]) -> None:
        for name, sub in _mapping(task.get("tasks")).items():
            if isinstance(sub, Mapping):
                var = sub.get("stream_var")
                if isinstance(var, str):
                    self.stream_owners.setdefault(var, str(name))
                self.collect_stream_vars(sub)

    # templates and expressions --------------------------------------------------------------
    def template(self, path: KeyPath, value: Any, names: Collection[str]) -> Template | None:
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
        return template

    def unknown_placeholder(self, name: str, names: Collection[str]) -> str:
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

    # tasks ----------------------------------------------------------------------------------
    def check_task(self, path: KeyPath, task: Mapping[str, Any], scope: _Scope) -> None:
        processes, subtasks = _mapping(task.get("processes")), _mapping(task.get("tasks"))
        shapes_ok = all(isinstance(task.get(key, {}), Mapping) for key in ("processes", "tasks"))
        if not processes and not subtasks and shapes_ok:
            what = "no processes" if "processes" in task else "missing"
            self.add((*path, "processes"), f"{what}; a task needs at least one process (or a sub-task)")
        defaults = task.get("defaults")
        if isinstance(defaults, Mapping):
            self.check_defaults((*path, "defaults"), defaults, scope)
            scope = _Scope(scope.stream_vars, (*scope.defaults, defaults))
        siblings = {str(n) for n in processes} | {str(n) for n in subtasks}
        for name, process in processes.items():
            if isinstance(process, Mapping):
                _ProcessRules(self, (*path, "processes", name), str(name), process, siblings, scope).run()
        for name, sub in subtasks.items():
            if isinstance(sub, Mapping):
                self.check_subtask((*path, "tasks", name), str(name), sub, processes, siblings, scope)
        self.check_cycles(path, processes, subtasks)

    def check_defaults(self, path: KeyPath, defaults: Mapping[str, Any], scope: _Scope) -> None:
        self.check_cluster((*path, "resources"), defaults.get("resources"))
        names = set(self.variables) | set(scope.stream_vars)
        self.template((*path, "emulate", "seed"), _mapping(defaults.get("emulate")).get("seed"), names)

    def check_cluster(self, path: KeyPath, resources: Any) -> None:
        cluster = _mapping(resources).get("cluster")
        if self.clusters is None or not isinstance(cluster, str) or cluster in self.clusters:
            return
        hint = _choose(cluster, self.clusters.names, known="known clusters:")
        self.add((*path, "cluster"), f"no cluster named {cluster!r} in {self.clusters.source}; {hint}")

    def check_subtask(
        self,
        path: KeyPath,
        name: str,
        sub: Mapping[str, Any],
        parent_processes: Mapping[Any, Any],
        siblings: set[str],
        scope: _Scope,
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
            for sub_path, dep in _listed(sub.get(key)):
                if dep not in siblings:
                    self.add((*path, key, *sub_path), _unknown_dependency(dep, siblings - {name}))
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
        self.check_task(path, sub, _Scope(stream_vars, scope.defaults))

    def check_stream_source(self, path: KeyPath, source: str, parent_processes: Mapping[Any, Any]) -> None:
        scripts = [str(n) for n, p in parent_processes.items() if _mapping(p).get("type") == "script"]
        if source not in parent_processes:
            hint = _choose(
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
                f"'{source}' is a {_mapping(parent_processes[source]).get('type')} process; streams come "
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
                hint = _choose(
                    name, self.variables, known="variables are", empty="declare it under variables"
                )
                self.add(path, f"unknown variable '{name}'; {hint}")
            elif _kind(self.variables[name]) not in ("a number", "a whole number"):
                self.add(path, f"variable '{name}' is {_kind(self.variables[name])}; use a numeric variable")

    def check_cycles(self, path: KeyPath, processes: Mapping[Any, Any], subtasks: Mapping[Any, Any]) -> None:
        edges: dict[str, list[tuple[str, KeyPath]]] = {}
        for group, members in (("processes", processes), ("tasks", subtasks)):
            for name, body in members.items():
                body = _mapping(body)
                out = [
                    (dep, (*path, group, name, key, *sub_path))
                    for key in ("depends_on", "after")
                    for sub_path, dep in _listed(body.get(key))
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


def _unknown_dependency(name: str, siblings: Collection[str]) -> str:
    choices = sorted(siblings)
    hint = _choose(name, choices, known="name a process or sub-task of the same task:")
    return f"no process or sub-task named '{name}' in this task; {hint}"


class _ProcessRules:
    """The cross-field rules of one process."""

    def __init__(
        self,
        rules: _Rules,
        path: KeyPath,
        name: str,
        process: Mapping[str, Any],
        siblings: set[str],
        scope: _Scope,
    ) -> None:
        self.rules = rules
        self.path = path
        self.name = name
        self.process = process
        self.siblings = siblings
        self.scope = scope
        self.names = set(rules.variables) | set(scope.stream_vars)

    def add(self, sub_path: KeyPath, message: str) -> None:
        self.rules.add((*self.path, *sub_path), message)

    def run(self) -> None:
        kind = self.process.get("type")
        if kind == "batch":
            self.batch()
        elif kind == "script":
            self.script()
        upstream = self.dependencies()
        self.skip_if(upstream)
        for key in ("command", "dm_command"):
            self.rules.template((*self.path, key), self.process.get(key), self.names)
        self.rules.template_tree((*self.path, "kwargs"), self.process.get("kwargs"), self.names)
        self.emulate()
        self.checks()
        self.rules.check_cluster((*self.path, "resources"), self.process.get("resources"))

    def batch(self) -> None:
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

    def script(self) -> None:
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
        elif isinstance(target, str) and not _CALLABLE_RE.match(target):
            self.add(
                ("callable",),
                f"expected 'module.path:function', got {target!r}; "
                "write the module, a colon, then the function",
            )

    def dependencies(self) -> set[str]:
        upstream: set[str] = set()
        for key in ("depends_on", "after"):
            for sub_path, dep in _listed(self.process.get(key)):
                if dep in self.siblings:
                    upstream.add(dep)
                else:
                    self.add((key, *sub_path), _unknown_dependency(dep, self.siblings - {self.name}))
        return upstream

    def skip_if(self, upstream: set[str]) -> None:
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
                hint = _choose(name, sorted(known), known="known here:")
                message = f"unknown name '{name}'; {hint}"
            self.add(("skip_if",), message)

    def emulate(self) -> None:
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
        for source in (self.process, *reversed(self.scope.defaults)):
            value = _mapping(source.get("resources")).get("memory_mb")
            if value is not None:
                return value if isinstance(value, int) and not isinstance(value, bool) else None
        return None

    def checks(self) -> None:
        checks = self.process.get("checks")
        if not isinstance(checks, list | tuple):
            return
        for index, check in enumerate(checks):
            if isinstance(check, Mapping):
                self.check(("checks", index), check)

    def check(self, sub_path: KeyPath, check: Mapping[str, Any]) -> None:
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
            self.rules.template((*self.path, *sub_path, key), check.get(key), self.names)
        pattern = check.get("log_lacks")
        if isinstance(pattern, str):
            try:
                re.compile(pattern)
            except re.error as exc:
                self.add(
                    (*sub_path, "log_lacks"),
                    f"not a regular expression: {exc}; fix it, or put a backslash before special characters",
                )


# --- pydantic's errors, in our words -------------------------------------------------------------

_MISSING_HINTS = {
    "name": "add the workflow's task name, e.g. name: DC1-DM12",
    "version": 'add the task version, e.g. version: "1.0"',
    "type": "add type: batch (a job on a cluster) or type: script (a Python function on the worker)",
    "streams_from": "name the script process of the parent task that makes this sub-task's streams",
}
_TYPE_WORDS = {
    "string_type": "text",
    "int_type": "a whole number",
    "float_type": "a number",
    "bool_type": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "tuple_type": "a list",
    "list_type": "a list",
}
_WRITE = {
    "text": "write text",
    "a whole number": "write a whole number, e.g. 4",
    "a number": "write a number, e.g. 2.5",
    "true or false": "write true or false",
    "a mapping": "write 'key: value' lines indented below it",
    "a list": "write a list: [a, b] or one '- ' item per line",
}
_LITERAL_WORDS = {"type": "process type", "fail": "failure mode", "bundle": "bundle mode"}


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated`` and ``X | None`` off an annotation."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            annotation = members[0]
        else:
            return annotation


def _annotation_at(path: Sequence[Hashable]) -> Any:
    """Return the annotation of the value at ``path`` of a :class:`WorkflowSpec`, or None."""
    annotation: Any = WorkflowSpec
    for part in path:
        annotation = _unwrap(annotation)
        origin = get_origin(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found = annotation.model_fields.get(str(part))
            if found is None:
                return None
            annotation = found.annotation
        elif origin is dict:
            annotation = get_args(annotation)[1]
        elif origin in (tuple, list):
            annotation = get_args(annotation)[0]
        else:
            return None
    return _unwrap(annotation)


def _translate(error: ErrorDetails) -> tuple[KeyPath, str]:
    """One pydantic error as ``(path, "<what>; <what to do>")``."""
    loc: KeyPath = tuple(error["loc"])
    kind, value = error["type"], error.get("input")
    if loc and loc[-1] == "[key]":
        loc = loc[:-1]
    field_name = str(loc[-1]) if loc else ""
    if kind == "missing":
        return loc, f"missing; {_MISSING_HINTS.get(field_name, 'add it')}"
    if kind == "extra_forbidden":
        model = _annotation_at(loc[:-1])
        choices = list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []
        return loc, f"unknown key; {_choose(field_name, choices)}"
    if kind in ("value_error", "assertion_error"):
        return loc, str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "literal_error":
        choices = [str(c) for c in get_args(_annotation_at(loc))]
        word = _LITERAL_WORDS.get(field_name, "value")
        listed = ", ".join(choices)
        guess = did_you_mean(value, choices) if isinstance(value, str) else None
        hint = f"did you mean '{guess}'? (one of {listed})" if guess else f"use one of {listed}"
        return loc, f"unknown {word} {describe_value(value)}; {hint}"
    ctx = error.get("ctx") or {}
    bounds = {
        "greater_than_equal": ("at least {}", "ge", "{} or more"),
        "greater_than": ("more than {}", "gt", "a number above {}"),
        "less_than_equal": ("at most {}", "le", "{} or less"),
        "less_than": ("less than {}", "lt", "a number below {}"),
    }
    if kind in bounds:
        words, key, fix = bounds[kind]
        bound = f"{ctx.get(key):g}"
        return loc, f"must be {words.format(bound)}, got {value}; write {fix.format(bound)}"
    expected = _TYPE_WORDS.get(kind)
    if expected is None:
        return loc, f"{error['msg']}; see the example in airflow_desc.workflow.spec"
    return loc, f"expected {expected}, got {describe_value(value)}; {_fix(expected, value, field_name)}"


def _fix(word: str, value: Any, field_name: str) -> str:
    if word == "text" and isinstance(value, int | float) and not isinstance(value, bool):
        if field_name == "version":
            return f'quote it: "{value}" (YAML reads an unquoted 1.10 as the number 1.1)'
        return f"quote it: '{value}'"
    return _WRITE[word]


# --- reading -------------------------------------------------------------------------------------

_UNQUOTED_BRACES_RE = re.compile(r"(?:^|[:\[,-])\s*\{\{")


def _syntax_message(problem: YamlProblem, text: str) -> YamlProblem:
    """Name the usual cause of a YAML error on a line with ``{{``: an unquoted placeholder."""
    lines = text.splitlines()
    nearby = lines[max(problem.line - 2, 0) : problem.line]
    if any(_UNQUOTED_BRACES_RE.search(line) for line in nearby):
        message = (
            "invalid YAML: a value starts with an unquoted '{{', which YAML reads as a mapping; "
            'quote the value, e.g. repo: "{{ root }}/repo"'
        )
        return YamlProblem(problem.line, problem.path, message)
    return problem


def parse_spec(
    text: str, source: str = "<string>", *, clusters: ClusterProfiles | None = None
) -> WorkflowSpec:
    """Read and check a workflow spec from YAML text.

    :param text: the YAML text.
    :param source: the file name to show in messages.
    :param clusters: if given, every ``resources.cluster`` must name one of them.
    :return: the spec; it is valid.
    :raises WorkflowSpecError: listing every problem, one per line, as
        ``<file>:<line>: <dotted.path>: <what is wrong>; <what to do>``.
    """
    try:
        located = LocatedYaml.load(text, source)
        problems: list[YamlProblem] = []
    except YamlLoadError as exc:
        if exc.partial is None:
            raise WorkflowSpecError(
                "\n".join(_syntax_message(p, text).format(source) for p in exc.problems)
            ) from None
        located, problems = exc.partial, list(exc.problems)
    data = located.data
    if not isinstance(data, dict):
        what = "the file is empty" if data is None else f"expected a mapping, got {describe_value(data)}"
        problems.append(
            located.problem((), f"{what}; write name, version and processes (see airflow_desc.workflow.spec)")
        )
        raise WorkflowSpecError("\n".join(p.format(source) for p in problems))
    spec: WorkflowSpec | None = None
    try:
        spec = WorkflowSpec.model_validate(data, context={"rules_checked": True})
    except ValidationError as exc:
        for error in exc.errors():
            path, message = _translate(error)
            problems.append(located.problem(path, message))
    problems += [located.problem(path, message) for path, message in _Rules(data, clusters).run()]
    if problems or spec is None:
        unique = sorted(dict.fromkeys(problems), key=lambda p: p.line)
        raise WorkflowSpecError("\n".join(p.format(source) for p in unique))
    spec._source = source
    return spec


def load_spec(path: str | os.PathLike[str], *, clusters: ClusterProfiles | None = None) -> WorkflowSpec:
    """Read and check a workflow spec file.

    :param path: the YAML file; messages name it as given.
    :param clusters: if given, every ``resources.cluster`` must name one of them.
    :raises WorkflowSpecError: if the file cannot be read, or for every problem in it.
    """
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowSpecError(f"{os.fspath(path)}: cannot read the workflow spec: {exc}") from None
    return parse_spec(text, os.fspath(path), clusters=clusters)
