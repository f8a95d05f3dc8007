"""What a cluster profile file may say: its pydantic models, field checks and cross-field rules.

:mod:`airflow_desc.clusters` reads the file and builds :class:`~airflow_desc.clusters.ClusterProfile`
objects; this module says what is valid, in the same words as the workflow spec's errors (the
shared translator in :mod:`airflow_desc._validation`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator

from airflow_desc._validation import ErrorWords
from airflow_desc._yaml_lines import KeyPath, describe_value, did_you_mean
from airflow_desc.slurm.quoting import check_text
from airflow_desc.slurm.script import ContainerRuntime, check_extra_sbatch
from airflow_desc.slurm.units import WALLTIME_FORMS, walltime_seconds

__all__ = [
    "CONTAINER_RUNTIMES",
    "NAME_PROBLEM",
    "NAME_RE",
    "PILOT_BINDINGS",
    "PROFILE_WORDS",
    "clock",
    "ContainerRuntime",
    "PilotBinding",
    "MaintenanceSettings",
    "ProfileFile",
    "ProfileSettings",
    "container_rules",
    "file_rules",
    "parse_walltime",
]

#: How a job runs its payload: directly, or in a container through one of these.
CONTAINER_RUNTIMES: tuple[str, ...] = get_args(ContainerRuntime)

#: Whether a bundle's direct launcher pins its instances to CPUs (a profile's ``pilot_binding``).
PilotBinding = Literal["cores", "none"]
PILOT_BINDINGS: tuple[str, ...] = get_args(PilotBinding)

# Names end up in Airflow pool names, job names and file names.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_walltime(value: str | int) -> int:
    """Read a walltime as SLURM's ``--time`` does, into whole seconds.

    :func:`airflow_desc.slurm.units.walltime_seconds`, with YAML's words for a value that is
    not text or whole minutes.

    :param value: ``"D-HH:MM:SS"``, ``"D-HH"``, ``"HH:MM:SS"``, ``"MM:SS"``, or minutes
        (an int, or a string of digits).
    :return: seconds, always positive.
    :raises ValueError: for anything else, ``UNLIMITED``, fractions of a second and zero.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a walltime, got {describe_value(value)}")
    return walltime_seconds(value)


def clock(seconds: int) -> str:
    """Write seconds as ``H:MM:SS``."""
    """``3:00:00``, ``0:30:00``, ``2-00:00:00``: a duration for messages."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{hours}:{minutes:02d}:{secs:02d}"


# --- checking one field --------------------------------------------------------------------------
# Each check is a pydantic "before" validator: its ValueError says what is wrong and what to
# do, and airflow_desc._validation shows it as written.


def _text(value: Any) -> str:
    if not isinstance(value, str):
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise ValueError(f"expected text, got {describe_value(value)}; quote it: '{value}'")
        raise ValueError(f"expected text, got {describe_value(value)}; write a single value")
    if not value.strip():
        raise ValueError("is empty; write a value or remove the key")
    return value


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _slurm_cluster(value: Any) -> str | None:
    return None if value in (None, "") else _text(value)


def _whole(example: int, *, minimum: int = 1) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {describe_value(value)}; write e.g. {example}")
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}; write e.g. {example}")
        return value

    return check


def _optional_whole(example: int) -> Callable[[Any], int | None]:
    whole = _whole(example)

    def check(value: Any) -> int | None:
        return None if value is None else whole(value)

    return check


def _seconds(example: int, *, allow_zero: bool) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(
                f"expected a number of seconds, got {describe_value(value)}; write e.g. {example}"
            )
        if value < 0 or (value == 0 and not allow_zero):
            bound = "0 or more" if allow_zero else "more than 0"
            raise ValueError(f"must be {bound} seconds, got {value}; write e.g. {example}")
        return float(value)

    return check


def _walltime_text(value: Any) -> str:
    try:
        seconds = parse_walltime(value)
    except ValueError as exc:
        raise ValueError(f"{exc}; write {WALLTIME_FORMS}") from None
    # Minutes are written out so that the field always reads as a clock.
    return clock(seconds) if isinstance(value, int) or value.strip().isdigit() else value.strip()


def _key_expires(value: Any) -> datetime | None:
    if value is None:
        return None
    example = "write e.g. '2026-12-07T14:00:00Z' (the time sshproxy printed, with its zone)"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{describe_value(value)} is not an ISO 8601 time; {example}") from None
    if not isinstance(value, datetime):
        raise ValueError(f"expected a time, got {describe_value(value)}; {example}")
    if value.tzinfo is None:
        raise ValueError(f"the time {value.isoformat()} has no time zone; add one ('Z' for UTC): {example}")
    return value


def _pilot_binding(value: Any) -> str:
    if value not in PILOT_BINDINGS:
        choices = " or ".join(PILOT_BINDINGS)
        raise ValueError(f"expected {choices}, got {describe_value(value)}; cores pins a bundle's instances "
                         "to CPUs of their own, none lets the kernel place them")  # fmt: skip
    return str(value)


def _container_runtime(value: Any) -> str:
    if value is None:
        return "none"
    if not isinstance(value, str) or value not in CONTAINER_RUNTIMES:
        choices = ", ".join(CONTAINER_RUNTIMES)
        guess = did_you_mean(value, CONTAINER_RUNTIMES) if isinstance(value, str) else None
        hint = f"did you mean '{guess}'? (one of {choices})" if guess else f"use one of {choices}"
        raise ValueError(f"unknown container runtime {describe_value(value)}; {hint}")
    return value


def _container_words(value: Any) -> Any:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise ValueError(
            f"expected a list, got {describe_value(value)}; write each word as a '- ' item, "
            "e.g. container_options: [--pull=never, --network=none]"
        )
    return value


def _container_word(value: Any) -> str:
    word = _text(value)
    try:
        check_text("the entry", word)
    except ValueError as exc:
        raise ValueError(f"{exc}; write one word per entry") from None
    return word


def _setup_lines(value: Any) -> Any:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise ValueError(
            f"expected a list of shell lines, got {describe_value(value)}; write each line as a '- ' item"
        )
    return value


def _shell_line(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {describe_value(value)}; quote the shell line")
    return value


def _env(value: Any) -> Any:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(
            f"expected a mapping of NAME: value, got {describe_value(value)}; write e.g. OMP_NUM_THREADS: 1"
        )
    return dict(value)


def _env_name(value: Any) -> str:
    if not isinstance(value, str) or not _ENV_NAME_RE.match(value):
        raise ValueError("not an environment variable name; use letters, digits and '_', not a leading digit")
    return value


def _env_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"expected text or a number, got {describe_value(value)}; quote it")


def _sbatch_options(value: Any) -> Any:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(
            f"expected a mapping of sbatch option to value, got {describe_value(value)}; "
            "write e.g. licenses: sps (a flag: the option with no value, licenses: null)"
        )
    options = {str(k): None if v is None else _env_value(v) for k, v in value.items()}
    check_extra_sbatch(
        options,
        "sbatch_options",
        "remove it (partition, qos, account and constraint are profile fields; the rest comes "
        "from each job's request)",
    )
    return options


def _cluster_name(value: Any) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise ValueError(NAME_PROBLEM.format(value=describe_value(value)))
    return value


def _clusters_mapping(value: Any) -> Any:
    if not isinstance(value, dict) or not value:
        what = "no clusters" if value is None or value == {} else describe_value(value)
        raise ValueError(
            f"expected a mapping of cluster names to profiles, got {what}; add at least one cluster"
        )
    return value


def _moment(value: Any) -> datetime:
    example = "write e.g. '2026-12-10T07:00:00-08:00' or '2026-12-10T15:00:00Z'"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"cannot read {describe_value(value)} as a date and time; {example}") from None
    if not isinstance(value, datetime):
        raise ValueError(f"expected a date and time, got {describe_value(value)}; {example}")
    if value.tzinfo is None:
        raise ValueError(f"{value.isoformat()} has no time zone; {example}")
    return value


def _windows(value: Any) -> Any:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise ValueError(
            f"expected a list of windows, got {describe_value(value)}; write each as "
            "'- {start: 2026-12-10T07:00:00-08:00, end: 2026-12-10T19:00:00-08:00}'"
        )
    return value


NAME_PROBLEM = (
    "cluster name {value} is not allowed; "
    "use letters, digits, '_', '.' and '-', starting with a letter or digit"
)
Text = Annotated[str, BeforeValidator(_text)]
OptionalText = Annotated[str | None, BeforeValidator(_optional_text)]


class MaintenanceSettings(BaseModel):
    """One maintenance window a profile lists by hand: no job of the cluster may run from start to end."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: Annotated[datetime, BeforeValidator(_moment)]
    end: Annotated[datetime, BeforeValidator(_moment)]

    @model_validator(mode="before")
    @classmethod
    def _is_mapping(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a mapping with start and end, got {describe_value(data)}")
        return data

    @model_validator(mode="after")
    def _ends_after_start(self) -> MaintenanceSettings:
        if self.end <= self.start:
            raise ValueError(
                f"end {self.end.isoformat()} is not after start {self.start.isoformat()}; swap or fix them"
            )
        return self


class ProfileSettings(BaseModel):
    """One cluster's settings as written (see :class:`ClusterProfile`): field by field.

    The field order is the order messages list the keys in.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    ssh_conn_id: Text
    cores_per_node: Annotated[int, BeforeValidator(_whole(128))]
    memory_per_node_mb: Annotated[int, BeforeValidator(_whole(512000))]
    max_walltime: Annotated[str, BeforeValidator(_walltime_text)]
    jump_conn_id: OptionalText = None
    slurm_cluster: Annotated[str | None, BeforeValidator(_slurm_cluster)] = None
    partition: OptionalText = None
    qos: OptionalText = None
    account: OptionalText = None
    constraint: OptionalText = None
    max_queued_jobs: Annotated[int, BeforeValidator(_whole(100))] = 100
    max_queued_per_task: Annotated[int | None, BeforeValidator(_optional_whole(20))] = None
    pool: OptionalText = None
    work_dir: Text = "airflow-desc"
    container_runtime: Annotated[ContainerRuntime, BeforeValidator(_container_runtime)] = "none"
    container_image: OptionalText = None
    container_options: Annotated[
        tuple[Annotated[str, BeforeValidator(_container_word)], ...], BeforeValidator(_container_words)
    ] = ()
    container_binds: Annotated[
        tuple[Annotated[str, BeforeValidator(_container_word)], ...], BeforeValidator(_container_words)
    ] = ()
    setup_lines: Annotated[
        tuple[Annotated[str, BeforeValidator(_shell_line)], ...], BeforeValidator(_setup_lines)
    ] = ()
    poll_interval: Annotated[float, BeforeValidator(_seconds(30, allow_zero=False))] = 30.0
    pilot_binding: Annotated[PilotBinding, BeforeValidator(_pilot_binding)] = "cores"
    vanish_grace: Annotated[float, BeforeValidator(_seconds(300, allow_zero=True))] = 300.0
    high_memory_partition: OptionalText = None
    mem_per_cpu_mb: Annotated[int | None, BeforeValidator(_optional_whole(2000))] = None
    maintenance: Annotated[tuple[MaintenanceSettings, ...], BeforeValidator(_windows)] = ()
    key_expires: Annotated[datetime | None, BeforeValidator(_key_expires)] = None
    env: Annotated[
        dict[Annotated[str, BeforeValidator(_env_name)], Annotated[str, BeforeValidator(_env_value)]],
        BeforeValidator(_env),
    ] = {}
    sbatch_options: Annotated[dict[str, str | None], BeforeValidator(_sbatch_options)] = {}

    @model_validator(mode="before")
    @classmethod
    def _is_mapping(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise ValueError(
                f"expected a mapping of settings, got {describe_value(data)}; "
                "add ssh_conn_id, cores_per_node, memory_per_node_mb and max_walltime"
            )
        return data


class ProfileFile(BaseModel):
    """A cluster profile file; ``default`` is checked against the clusters by :func:`file_rules`."""

    model_config = ConfigDict(extra="forbid")

    clusters: Annotated[
        dict[Annotated[str, BeforeValidator(_cluster_name)], ProfileSettings],
        BeforeValidator(_clusters_mapping),
    ]
    default: Any = None


PROFILE_WORDS = ErrorWords(
    missing={
        "clusters": "add a 'clusters:' mapping of named cluster profiles",
        "ssh_conn_id": "add the Airflow connection id of the cluster's login node",
        "cores_per_node": "add the number of cores of one compute node",
        "memory_per_node_mb": "add the memory of one compute node in MB (SLURM's RealMemory)",
        "max_walltime": "add the longest walltime the partition allows, e.g. '2-00:00:00'",
    },
    see="the example in the airflow_desc.clusters documentation",
)


# --- rules across fields, on the plain data (tolerant of what the models reject) ------------------


def container_rules(settings: Mapping[str, Any]) -> list[tuple[KeyPath, str]]:
    """Return the problems of one profile's container settings taken together (image vs runtime)."""
    runtime = settings.get("container_runtime")
    if runtime not in (None, "none"):
        return []
    runtimes = ", ".join(r for r in CONTAINER_RUNTIMES if r != "none")
    return [
        (
            (key,),
            f"{what} set but container_runtime is 'none'; set container_runtime ({runtimes}) or remove {key}",
        )
        for key, what in (
            ("container_image", "an image is"),
            ("container_options", "runtime options are"),
            ("container_binds", "bind mounts are"),
        )
        if settings.get(key) and (not isinstance(settings.get(key), str) or settings[key].strip())
    ]


def file_rules(data: Mapping[str, Any]) -> list[tuple[KeyPath, str]]:
    """Return the problems across a profile file's entries (the default names a cluster, bastions exist)."""
    problems: list[tuple[KeyPath, str]] = []
    clusters = data.get("clusters")
    if isinstance(clusters, dict):
        for name, settings in clusters.items():
            if isinstance(settings, Mapping):
                problems += [(("clusters", name, *path), m) for path, m in container_rules(settings)]
    default = data.get("default")
    if default is None:
        return problems
    if not isinstance(default, str):
        names = f"one of {', '.join(map(str, clusters))}" if isinstance(clusters, dict) else "a cluster"
        problems.append(
            (("default",), f"expected a cluster name, got {describe_value(default)}; name {names}")
        )
    elif isinstance(clusters, dict) and default not in clusters:
        guess = did_you_mean(default, [str(n) for n in clusters])
        hint = f"did you mean '{guess}'?" if guess else f"name one of {', '.join(map(str, clusters))}"
        problems.append((("default",), f"no cluster named {default!r}; {hint}"))
    return problems
