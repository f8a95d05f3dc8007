"""The pilot: the in-allocation launcher of a bundle, and how a job script carries it.

A bundle (one mapped ``SlurmBundleOperator`` task instance) is one SLURM allocation running many
process instances. Its job script writes the manifest and :mod:`~airflow_desc.pilot.launcher` (a
standard-library-only program, nothing to install on the cluster) into a directory beside the
records, and runs it: see :func:`bundle_job_command`. The launcher appends one JSON record per
process instance to the records file, which :func:`parse_records` reads back.

Manifest (JSON)::

    {"bundle": "<id>",
     "instances": [{"id": "visit=1/raft=R22/sensor=S11:processEimage",
                    "stream": "visit=1/raft=R22/sensor=S11", "process": "processEimage",
                    "command": "<shell text>", "cpus": 1, "memory_mb": 1500,
                    "walltime_s": 600, "depends_on": ["visit=1/raft=R22:setupEimageSensors"],
                    "after": []}]}

``depends_on``: instances that must succeed first (else this one is skipped, ``upstream-failed``);
``after``: instances waited for whatever their end state; ``skip_when`` (optional): a ``skip_if``
on those upstreams' end states, as the combinations of states that skip it (skipped,
``skip-condition``; see :mod:`~airflow_desc.pilot.launcher`). ``container`` (optional): the image the
instance's command runs its payload in (the command holds the runtime's command line, written by
:func:`airflow_desc.slurm.script.container_command`); the launcher names it in the instance's log.
``container_runtime`` (optional): its runtime; for ``podman`` / ``podman-hpc`` the launcher names
the container and removes it when the instance is killed.

Record (one JSON line per instance, keys :data:`RECORD_FIELDS`): ``state`` in :data:`STATES`,
``reason`` in :data:`REASONS`, times in ISO 8601 UTC, ``total_cpu_s`` / ``max_rss_bytes`` from
``wait4`` (both launchers), ``step_name`` / ``step_id`` for ``srun`` steps, ``log_tail`` (last
20 lines) when the instance did not succeed.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from dataclasses import dataclass
from importlib import resources
from typing import Any

from airflow_desc.pilot.launcher import (
    CLAIM_PREFIX,
    INSTANCE_ENV,
    LAUNCHERS,
    PREFIX,
    REASONS,
    RECORD_FIELDS,
    STATES,
    ManifestError,
    load_manifest,
    step_name,
)
from airflow_desc.pilot.launcher import parse_records as _parse_records
from airflow_desc.slurm.quoting import check_text, quote_path

__all__ = [
    "CLAIM_PREFIX",
    "INSTANCE_ENV",
    "LAUNCHERS",
    "REASONS",
    "RECORD_FIELDS",
    "STATES",
    "ManifestError",
    "TakeOver",
    "bundle_job_command",
    "launcher_source",
    "offer_json",
    "parse_records",
    "parse_summary",
    "step_name",
    "validate_manifest",
]

_MANIFEST_EOF = "DESC_PILOT_MANIFEST_EOF"
_LAUNCHER_EOF = "DESC_PILOT_LAUNCHER_EOF"
_SUMMARY_RE = re.compile(rf"^{re.escape(PREFIX)} summary (\{{.*\}})\s*$", re.MULTILINE)


def launcher_source() -> str:
    """Return the source text of the launcher (``airflow_desc/pilot/launcher.py``)."""
    return resources.files(__package__).joinpath("launcher.py").read_text(encoding="utf-8")


def validate_manifest(manifest: dict[str, Any] | str) -> dict[str, Any]:
    """Check a manifest as the launcher will, before it travels to the cluster.

    :param manifest: the manifest, as a dict or JSON text.
    :return: the manifest as a dict.
    :raises ManifestError: naming the instance and field at fault (a missing command, a duplicate
        id, a dependency on an instance not in the bundle, a cycle ...).
    """
    data = json.loads(manifest) if isinstance(manifest, str) else manifest
    load_manifest(data)
    return data


def bundle_job_command(
    manifest_json: str,
    *,
    launcher: str,
    records_path: str,
    logs_dir: str,
    python: str = "python3",
    pilot_dir: str | None = None,
    skip_done: str | None = None,
    cores: int | None = None,
    memory_mb: int | None = None,
    kill_grace_s: float | None = None,
    bind: bool = True,
    bundle_dir: str | None = None,
    take_over: TakeOver | None = None,
) -> str:
    """Shell text for a bundle's job script: write the manifest and the launcher, then run it.

    Both files travel in quoted here-documents (nothing in them is expanded) into
    ``<pilot_dir>/pilot-<job id>/``, and the launcher is ``exec``-ed, so that a SIGTERM to the
    payload (SLURM's time limit; ``--signal=B:TERM@60`` with :func:`~airflow_desc.slurm.render_job_script`)
    reaches it directly. Use it as a :class:`~airflow_desc.slurm.JobSpec` ``command``.

    The script grows with the manifest: sbatch refuses scripts over ``max_script_size``
    (4 MB by default), so keep commands short (the DM command line, not a program's source).

    :param manifest_json: the manifest as JSON text (checked with :func:`validate_manifest`).
    :param launcher: ``"srun"`` (one step per instance) or ``"direct"`` (children of the pilot).
    :param records_path: the records file on the cluster (``~/`` allowed).
    :param logs_dir: the directory of the per-instance logs on the cluster (``~/`` allowed).
    :param python: the cluster's Python 3.8+ interpreter.
    :param pilot_dir: where the manifest and launcher go; defaults to the records file's directory.
    :param skip_done: an earlier records file: instances that succeeded there are not rerun.
    :param cores: cores per node, when not the allocation's.
    :param memory_mb: memory per node in MB, when not the allocation's.
    :param kill_grace_s: seconds from SIGTERM to SIGKILL when an instance must stop.
    :param bind: the direct launcher pins each instance to CPUs of its own (``False``:
        ``--no-bind``, the kernel places them; see the cluster profile's ``pilot_binding``).
    :param bundle_dir: the bundle's directory: the pilot claims the bundle there before running it
        and runs nothing if another pilot took it over (``--bundle-dir``).
    :param take_over: the pilot may take over sibling bundles still pending (``--take-over``;
        needs ``bundle_dir``).
    :return: shell text ending with a newline.
    :raises ValueError: for an unknown launcher, a path with a line break, or a bad manifest.
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    paths = {"records_path": records_path, "logs_dir": logs_dir, "python": python}
    if bundle_dir is not None:
        paths["bundle_dir"] = bundle_dir
    if pilot_dir is not None:
        paths["pilot_dir"] = pilot_dir
    if skip_done is not None:
        paths["skip_done"] = skip_done
    for what, value in paths.items():
        check_text(what, value)
        if not value:
            raise ValueError(f"{what} is empty")
    # One compact line: JSON escapes line breaks inside strings, so no line can end the here-doc.
    manifest = json.dumps(validate_manifest(manifest_json), separators=(",", ":"))
    source = launcher_source()
    if _LAUNCHER_EOF in source:
        raise ValueError(f"the launcher source contains {_LAUNCHER_EOF}")
    if pilot_dir is None:
        pilot_dir = posixpath.dirname(records_path) or "."
    args = _launcher_args(launcher, records_path, logs_dir, skip_done, cores, memory_mb, kill_grace_s)
    if not bind:
        args.append("--no-bind")
    args.extend(_claim_args(bundle_dir, take_over))
    lines = [
        "# airflow-desc pilot: write the bundle's manifest and the launcher, then run the launcher.",
        f'desc_pilot_dir={quote_path(pilot_dir)}/pilot-"${{SLURM_JOB_ID:-$$}}"',
        # Our own files are the job owner's alone; the payloads keep the job's umask (their outputs
        # are the collaboration's data).
        f'(umask 077 && mkdir -p -- "$desc_pilot_dir" {quote_path(logs_dir)}) || exit 2',
        f"(umask 077 && cat > \"$desc_pilot_dir/manifest.json\") <<'{_MANIFEST_EOF}' || exit 2",
        manifest,
        _MANIFEST_EOF,
        f"(umask 077 && cat > \"$desc_pilot_dir/launcher.py\") <<'{_LAUNCHER_EOF}' || exit 2",
        source.rstrip("\n"),
        _LAUNCHER_EOF,
        f'exec {shlex.quote(python)} "$desc_pilot_dir/launcher.py" ' + " ".join(args),
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class TakeOver:
    """What a pilot needs to take over sibling bundles still pending (the launcher's ``--take-over``).

    :param cluster: the cluster's name (an offer of another cluster is never taken).
    :param time_limit_s: the allocation's time limit, from which the pilot knows the time it has left.
    """

    cluster: str
    time_limit_s: int

    def __post_init__(self) -> None:
        check_text("cluster", self.cluster)
        if not self.cluster:
            raise ValueError("take_over: the cluster name is empty")
        if (
            isinstance(self.time_limit_s, bool)
            or not isinstance(self.time_limit_s, int)
            or self.time_limit_s < 1
        ):
            raise ValueError(f"take_over: time_limit_s must be a positive integer, got {self.time_limit_s!r}")


def offer_json(
    manifest: dict[str, Any],
    *,
    job_id: str,
    cluster: str,
    records_path: str,
    logs_dir: str,
    skip_done: str | None,
) -> str:
    """Return a bundle's ``offer.json``: what a pilot needs to take the bundle over while its job is pending.

    Its operator writes it beside the records once the job is submitted (the launcher's
    :func:`~airflow_desc.pilot.launcher.read_offer` reads it).

    :raises ValueError: for a job id that is not a number.
    """
    if not job_id.isdigit():
        raise ValueError(f"an offer is for a plain job id, got {job_id!r}")
    data = {
        "job_id": job_id,
        "cluster": cluster,
        "records": records_path,
        "logs_dir": logs_dir,
        "skip_done": skip_done,
        "manifest": validate_manifest(manifest),
    }
    return json.dumps(data, separators=(",", ":"))


def _claim_args(bundle_dir: str | None, take_over: TakeOver | None) -> list[str]:
    """The launcher's ``--bundle-dir`` and ``--take-over`` arguments, if any."""
    if take_over is not None and bundle_dir is None:
        raise ValueError("take_over needs bundle_dir")
    args = [] if bundle_dir is None else [f"--bundle-dir {quote_path(bundle_dir)}"]
    if take_over is not None:
        args.append(
            f"--take-over --cluster {shlex.quote(take_over.cluster)} --time-limit {take_over.time_limit_s}"
        )
    return args


def _launcher_args(
    launcher: str,
    records_path: str,
    logs_dir: str,
    skip_done: str | None,
    cores: int | None,
    memory_mb: int | None,
    kill_grace_s: float | None,
) -> list[str]:
    args = [
        '--manifest "$desc_pilot_dir/manifest.json"',
        f"--records {quote_path(records_path)}",
        f"--logs-dir {quote_path(logs_dir)}",
        f"--launcher {launcher}",
    ]
    if skip_done is not None:
        args.append(f"--skip-done {quote_path(skip_done)}")
    for option, number in (("--cores", cores), ("--memory-mb", memory_mb)):
        if number is not None:
            if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                raise ValueError(f"{option} must be a positive integer, got {number!r}")
            args.append(f"{option} {number}")
    if kill_grace_s is not None:
        if not kill_grace_s >= 0:
            raise ValueError(f"kill_grace_s must be >= 0, got {kill_grace_s!r}")
        args.append(f"--kill-grace {float(kill_grace_s):g}")
    return args


def parse_records(text: str) -> list[dict[str, Any]]:
    """Read the records the launcher wrote, in order.

    A line cut short (the allocation died while it was written) is left out: that instance
    counts as not done. When an instance has several records (a records file appended to by a
    rerun), the last one is its latest attempt.

    :param text: the records file's content.
    :return: one dict per complete record.
    """
    return _parse_records(text)


def parse_summary(log_text: str) -> dict[str, Any] | None:
    """Return the launcher's final ``summary`` (cores, wall, core-seconds, states) from the job's log.

    :param log_text: the bundle job's stdout.
    :return: the last summary found, or ``None`` if the launcher did not get that far.
    """
    found = _SUMMARY_RE.findall(log_text)
    if not found:
        return None
    try:
        value = json.loads(found[-1])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
