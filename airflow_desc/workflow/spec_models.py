"""The pydantic models of workflow specs: one class per kind of block, field types and checks.

A model checks what one field can say on its own (types, names, bounds, walltimes); the
rules that span fields live in :mod:`~airflow_desc.workflow.spec_rules`, and a
:class:`WorkflowSpec` made in Python runs them too. Files are read by
:func:`airflow_desc.workflow.spec.load_spec`, which adds lines to every problem.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationInfo,
    model_validator,
)

from airflow_desc._validation import choose
from airflow_desc._yaml_lines import describe_value, format_path
from airflow_desc.exceptions import WorkflowSpecError
from airflow_desc.slurm.units import WALLTIME_FORMS, walltime_seconds
from airflow_desc.workflow.spec_process_rules import CHECK_KINDS, IMPORT_PATH_RE
from airflow_desc.workflow.spec_rules import check_rules
from airflow_desc.workflow.spec_template_rules import type_mismatch
from airflow_desc.workflow.spec_templates import (
    IDENT_RE,
    Scalar,
    TemplateError,
    expand_variables,
    format_value,
)
from airflow_desc.workflow.thresholds import MinSuccess

__all__ = [
    "FAILURE_MODES",
    "PAYLOADS",
    "PAYLOAD_CONF_KEY",
    "PROCESS_TYPES",
    "BundlingSettings",
    "Defaults",
    "Emulate",
    "EmulateDefaults",
    "Escalation",
    "NotifierSpec",
    "Notify",
    "OutputCheck",
    "Payload",
    "ProcessSpec",
    "Resources",
    "SubTaskSpec",
    "TaskSpec",
    "WorkflowSpec",
]

ProcessType = Literal["batch", "script"]
PROCESS_TYPES: tuple[str, ...] = get_args(ProcessType)
FailureMode = Literal["none", "exit", "traceback", "missing", "oom", "timeout", "segfault", "disk-full"]
#: The payload's ``--fail`` choices (``airflow_desc.emulate.payload.FAILURES``).
FAILURE_MODES: tuple[str, ...] = get_args(FailureMode)
BundleMode = Literal["auto", "always", "never"]
#: What a batch process runs: its emulated (or plain) ``command``, or its real DM command line
#: (``dm_command``). A spec's ``payload`` chooses; a run's conf (``desc_payload``) overrides it.
Payload = Literal["emulate", "dm"]
PAYLOADS: tuple[str, ...] = get_args(Payload)
#: The run-conf key (and DAG param) that chooses the payload of one run.
PAYLOAD_CONF_KEY = "desc_payload"

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_VARIANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]*$")


def _name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError(
            f"name {value!r} is not allowed; use letters, digits, '_' and '-', starting with a letter"
        )
    return value


def _identifier(value: str) -> str:
    if not IDENT_RE.match(value):
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


def _import_path(value: str) -> str:
    if not IMPORT_PATH_RE.match(value):
        raise ValueError(
            f"{value!r} is not an import path; write module.path:Class, e.g. "
            "airflow.providers.smtp.notifications.smtp:SmtpNotifier"
        )
    return value


def _scalar(value: Any) -> Any:
    if isinstance(value, str | int | float | bool):
        return value
    raise ValueError(
        f"expected text, a number or true/false, got {describe_value(value)}; a variable holds one value"
    )


def _image(value: Any) -> Any:
    if isinstance(value, str) and (value.startswith("-") or any(c.isspace() or c == "\0" for c in value)):
        raise ValueError(
            f"{describe_value(value)} is not an image name (it starts with '-' or holds spaces); "
            "name an image, e.g. docker:lsstdesc/stack:w.2026.48"
        )
    return value


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
    """``depends_on: x`` is ``depends_on: [x]``; ``depends_on: {x: {min_success: 0.9}}`` names ``x``."""
    if isinstance(value, Mapping):
        return tuple(value)
    return (value,) if isinstance(value, str) else value


def _thresholds_from_depends_on(data: Any) -> Any:
    """Move the ``min_success`` of a mapping ``depends_on`` into the model's ``min_success``.

    Bad values are left out here: the spec rules report them at their own line.
    """
    if not isinstance(data, Mapping) or not isinstance(data.get("depends_on"), Mapping):
        return data
    found = {
        name: options["min_success"]
        for name, options in data["depends_on"].items()
        if isinstance(options, Mapping) and set(options) == {"min_success"}
        and _is_threshold(options["min_success"])
    }  # fmt: skip
    return {**data, "min_success": {**found, **_mapping_or_empty(data.get("min_success"))}}


def _is_threshold(value: Any) -> bool:
    try:
        MinSuccess.parse(value)
    except ValueError:
        return False
    return True


def _mapping_or_empty(value: Any) -> Mapping[Any, Any]:
    return value if isinstance(value, Mapping) else {}


def _threshold(value: Any) -> Any:
    MinSuccess.parse(value)
    return value


Name = Annotated[StrictStr, AfterValidator(_name)]
Ident = Annotated[StrictStr, AfterValidator(_identifier)]
VariantName = Annotated[StrictStr, AfterValidator(_variant_name)]
Version = Annotated[StrictStr, AfterValidator(_version)]
ImportPath = Annotated[StrictStr, AfterValidator(_import_path)]
VariableValue = Annotated[Any, AfterValidator(_scalar)]
Walltime = Annotated[str, BeforeValidator(_walltime)]
NumberText = Annotated[str, BeforeValidator(_number_text)]
Names = Annotated[tuple[Name, ...], BeforeValidator(_names_list)]
Threshold = Annotated[int | float, AfterValidator(_threshold)]
PositiveInt = Annotated[StrictInt, Field(ge=1)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(_Model):
    """What a batch process asks SLURM for; unset fields come from ``defaults``.

    :param cpus: CPUs of the job.
    :param memory_mb: memory in MB.
    :param walltime: ``D-HH:MM:SS``, ``HH:MM:SS``, ``MM:SS`` or whole minutes.
    :param cluster: a cluster profile name (:mod:`airflow_desc.clusters`).
    :param fallback_clusters: cluster profile names, in order, to run on when ``cluster`` is in
        maintenance or its retries are spent (the last tries go to them; see
        :mod:`airflow_desc.operators.fallback`).
    :param partition: overrides the cluster profile's partition (on ``cluster`` only).
    :param container: the image to run the command in, with the cluster's container runtime.
    """

    cpus: PositiveInt | None = None
    memory_mb: PositiveInt | None = None
    walltime: Walltime | None = None
    cluster: StrictStr | None = None
    fallback_clusters: tuple[StrictStr, ...] | None = None
    partition: StrictStr | None = None
    container: Annotated[StrictStr, AfterValidator(_image)] | None = None


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
    :param depends_on: processes or sub-tasks of the same task that must succeed first: a list of
        names, or a mapping whose sub-tasks may say how much must succeed
        (``{processVisit: {min_success: 0.95}}``, see :class:`~airflow_desc.workflow.outcomes.MinSuccess`).
    :param min_success: the thresholds of ``depends_on``, by sub-task (filled from its mapping).
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
    :param deferrable: batch: wait for the job in the triggerer (``true``, the default: no worker
        slot held) or in the worker slot that submitted it (``false``: for short jobs, such as a
        BPS init job; no second start of the task when the job ends). A process that runs in
        bundles waits as its bundle does.
    """

    type: ProcessType
    description: StrictStr = ""
    depends_on: Names = ()
    min_success: dict[Name, Threshold] = {}
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
    deferrable: StrictBool = True

    _thresholds = model_validator(mode="before")(_thresholds_from_depends_on)


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
        DAG run stays within this many task instances (a ceiling: sizes are raised to keep it).
    :param target_instances: the batch process instances a bundle that sets no ``bundle_size``
        aims at (a whole-node allocation: e.g. a node's cores, or a few waves of them); its size
        is this over the batch instances one of its streams holds. Unset: the size comes from
        ``max_task_instances`` alone.
    :param max_walltime: with ``target_instances``: a bundle's expected work, packed on one node
        of its cluster, must fit this walltime (and the cluster's ``max_walltime``); sizes are
        lowered to fit. Needs the cluster profiles; unset: the cluster's ``max_walltime``.
    :param run_times_from: a size the walltime requests lowered is fitted again at run time from
        the median run times the history holds of the stream's processes: this ``workflow``'s
        records (the default), or ``any`` workflow's of a process of the same name (a BPS label:
        every submission is a workflow of its own).
    :param take_over: a bundle's pilot out of work (walltime requests are often many times what the
        processes take) takes over a sibling bundle of the same sub-task whose job is still pending,
        rather than leave its cores idle while that bundle waits for a node
        (:mod:`airflow_desc.pilot.launcher`); the sibling's task collects from its allocation.
    """

    threshold: PositiveInt = 100
    max_task_instances: PositiveInt = 1000
    target_instances: PositiveInt | None = None
    max_walltime: Walltime | None = None
    run_times_from: Literal["workflow", "any"] = "workflow"
    take_over: bool = False


class NotifierSpec(_Model):
    """An Airflow notifier the run's verdict calls (see :class:`Notify`).

    :param notifier: its class, ``module.path:Class``, a subclass of Airflow's ``BaseNotifier``
        (e.g. ``airflow.providers.smtp.notifications.smtp:SmtpNotifier``).
    :param kwargs: its keyword arguments; text in its template fields is an Airflow (Jinja)
        template, rendered with the verdict's context plus ``desc_summary``, ``desc_verdict`` and
        ``desc_counts`` (not a spec placeholder).
    """

    notifier: ImportPath
    kwargs: dict[StrictStr, Any] = {}


class Notify(_Model):
    """Whom a run's verdict tells: notifiers called when the run fails, and when it ends either way.

    :param on_failure: called when the verdict fails the run.
    :param on_end: called when the verdict has judged the run, green or not.
    """

    on_failure: tuple[NotifierSpec, ...] = ()
    on_end: tuple[NotifierSpec, ...] = ()


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
    :param depends_on: processes or sub-tasks of the parent that must succeed first (a list, or a
        mapping with thresholds, as a process's).
    :param min_success: the thresholds of ``depends_on``, by sub-task (filled from its mapping).
    :param after: processes or sub-tasks of the parent waited for whatever their state.
    """

    version: Version | None = None
    streams_from: Name
    stream_var: Ident | None = None
    expected_streams: NumberText = "1"
    bundle: BundleMode = "auto"
    bundle_size: PositiveInt | None = None
    depends_on: Names = ()
    min_success: dict[Name, Threshold] = {}
    after: Names = ()

    _thresholds = model_validator(mode="before")(_thresholds_from_depends_on)


class WorkflowSpec(TaskSpec):
    """A workflow: the top-level task with its variables, variants and sub-tasks.

    Make one with :func:`load_spec` or :func:`parse_spec`; :attr:`source` is the file.

    :param name: the top-level task name (DAG ids, history, status table).
    :param version: its version.
    :param variables: default values.
    :param variants: named sets of variable overrides; one DAG each.
    :param patterns: regular expressions the values of a variable or stream variable must match
        (the whole value): a run's conf is checked against them, and a name used unquoted in shell
        text (``{{ name | raw }}``) needs one.
    :param bundling: bundling settings.
    :param side_by_side: the DAG ids carry the version (``DC1-DM12_v1.16_imsim``), so that two
        versions of the workflow can be deployed and run beside each other.
    :param notify: notifiers for the run's failure and end (see :class:`Notify`).
    :param payload: ``emulate`` (default: each batch process's ``command`` or emulated payload) or
        ``dm`` (its ``dm_command``, which every batch process must then have); a run's conf
        ``desc_payload`` chooses for one run.
    """

    name: Name
    version: Version
    side_by_side: StrictBool = False
    notify: Notify = Notify()
    payload: Payload = "emulate"
    variables: dict[Ident, VariableValue] = {}
    variants: dict[VariantName, dict[Ident, VariableValue]] = {}
    patterns: dict[Ident, StrictStr] = {}
    bundling: BundlingSettings = BundlingSettings()

    _source: str = PrivateAttr("<memory>")
    _digest: str = PrivateAttr("")

    @model_validator(mode="after")
    def _check_rules(self, info: ValidationInfo) -> WorkflowSpec:
        # parse_spec checked the rules already, with lines; a spec built in Python is checked here.
        if info.context and info.context.get("rules_checked"):
            return self
        problems = check_rules(self.model_dump(exclude_unset=True), None)
        if problems:
            raise ValueError("\n".join(f"{format_path(path)}: {message}" for path, message in problems))
        return self

    @property
    def source(self) -> str:
        """The file the spec was read from (``<memory>`` if built in Python)."""
        return self._source

    @property
    def digest(self) -> str:
        """The SHA-256 of the spec file's text (``sha256sum`` of the file), hex; "" if built in Python."""
        return self._digest

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

    def pattern_mismatch(self, name: str, value: Any) -> str | None:
        """Why ``value`` does not fit the pattern declared for ``name``, or None (also when it has none)."""
        pattern = self.patterns.get(name)
        if pattern is None or re.fullmatch(pattern, format_value(value)) is not None:
            return None
        shown = format_value(value)[:80]
        return f"{shown!r} does not match its pattern {pattern!r}; give a value of that shape"

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
                hint = choose(variant, self.variants, known="variants are")
                raise WorkflowSpecError(f"{self.source}: variants: no variant named {variant!r}; {hint}")
            values.update(self.variants[variant])
        problems: list[str] = []
        for key, value in (overrides or {}).items():
            if key not in self.variables:
                problems.append(f"{key}: not a variable of {self.name}; {choose(key, self.variables)}")
                continue
            mismatch = type_mismatch(self.variables[key], value) or self.pattern_mismatch(key, value)
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
