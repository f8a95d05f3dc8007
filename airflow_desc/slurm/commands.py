"""Build the sbatch / sacct / squeue / scancel command lines run on a cluster login.

Each builder returns one string for a remote shell (SSH runs commands through the
user's login shell). Every value is checked first and then ``shlex``-quoted, so a
job name or path reaches SLURM exactly as given and never as shell syntax.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Iterable, Sequence

from airflow_desc.slurm.quoting import check_text, quote_path

__all__ = [
    "JOB_ID_RE",
    "OWNER_FIELDS",
    "SACCT_FIELDS",
    "SINFO_NODE_FORMAT",
    "SQUEUE_FIELDS",
    "SQUEUE_FORMAT",
    "chunked_sacct_commands",
    "controller_jobs_command",
    "owner_sacct_command",
    "sacct_command",
    "sbatch_command",
    "scancel_command",
    "sinfo_nodes_command",
    "squeue_command",
    "submit_script_command",
    "validate_job_id",
    "write_file_command",
]

#: A job id as we accept it: ``123``, an array task ``123_4``, a step ``123.batch`` / ``123_4.0``.
#: ASCII and ``\Z``: ``$`` would let a trailing newline through, ``\d`` non-ASCII digits.
JOB_ID_RE = re.compile(r"^\d+(_\d+)?(\.\w+)?\Z", re.ASCII)

#: The sacct fields we read, all valid in slurm 22.05 (``sacct --helpformat``).
#: The job line has an empty MaxRSS; the steps (``.batch``, ``.extern``, ``.0``) carry it.
SACCT_FIELDS: tuple[str, ...] = (
    "JobID",
    "JobName",
    "State",
    "ExitCode",
    "DerivedExitCode",
    "Elapsed",
    "TotalCPU",
    "CPUTime",
    "MaxRSS",
    "ReqMem",
    "ReqCPUS",
    "AllocCPUS",
    "NNodes",
    "NodeList",
    "Submit",
    "Start",
    "End",
    "Timelimit",
    "Partition",
    "Cluster",
    "Reason",
)

#: The sacct fields that say whose a job is: its name, its owner's uid, when it was submitted.
OWNER_FIELDS: tuple[str, ...] = ("JobID", "JobName", "UID", "Submit")

#: ``sinfo -N --format``: one line per node and partition: node, partition, long state, reason.
SINFO_NODE_FORMAT = "%N|%P|%T|%E"

#: The squeue columns we read, in the order of :data:`SQUEUE_FORMAT`.
SQUEUE_FIELDS: tuple[str, ...] = ("JobID", "Name", "State", "Reason", "TimeUsed", "TimeLimit", "NodeList")
#: ``squeue --format``: job id, name, long state, reason, time used, time limit, nodes.
SQUEUE_FORMAT = "%i|%j|%T|%r|%M|%l|%N"

# A sacct -j argument of 1000 ids of 8 digits is about 9 kB, far below any ARG_MAX.
_DEFAULT_MAX_IDS = 1000
_FIELD_RE = re.compile(r"^[A-Za-z]+$")
_NAME_RE = re.compile(r"^[\w.@+-]+$")
#: A node name or a hostlist expression as sacct's NodeList prints it: ``pm-n1``, ``nid[001-004,007]``.
_HOSTLIST_RE = re.compile(r"^[\w.-]+(\[[\d,-]+\])?[\w.-]*$", re.ASCII)


def validate_job_id(job_id: str) -> str:
    """Check a job id before it goes on a command line.

    :param job_id: e.g. ``"123"``, ``"123_4"``, ``"123.batch"``.
    :return: the id, unchanged.
    :raises ValueError: if it is not a job id.
    """
    if not isinstance(job_id, str) or not JOB_ID_RE.match(job_id):
        raise ValueError(f"not a SLURM job id: {job_id!r}")
    return job_id


def _job_ids(job_ids: Iterable[str]) -> list[str]:
    if isinstance(job_ids, str):
        raise TypeError("job_ids must be a sequence of ids, not one string")
    ids = [validate_job_id(job_id) for job_id in job_ids]
    if not ids:
        raise ValueError("no job ids given")
    return ids


def _job_name(name: str) -> str:
    check_text("job name", name)
    if not name or "," in name:
        raise ValueError(f"job name {name!r} cannot be queried: empty, or contains ',' (a name separator)")
    return name


def _names(what: str, values: str | Sequence[str]) -> str:
    """Join cluster or user names into one comma-separated list, checking each."""
    items = [values] if isinstance(values, str) else list(values)
    if not items:
        raise ValueError(f"empty {what} list")
    for item in items:
        if not isinstance(item, str) or not _NAME_RE.match(item):
            raise ValueError(f"invalid {what} name: {item!r}")
    return ",".join(items)


def _join(words: Iterable[str]) -> str:
    return " ".join(shlex.quote(word) for word in words)


def sbatch_command(script_path: str, *, cluster: str | None = None, extra: Sequence[str] = ()) -> str:
    """``sbatch --parsable [--clusters=C] [extra...] <script_path>``.

    :param script_path: the script on the cluster; ``~/`` means the home directory.
    :param cluster: submit to this cluster of a multi-cluster setup (``--clusters``).
    :param extra: further sbatch arguments, one word each (they override ``#SBATCH`` lines).
    :return: the command line.
    """
    check_text("script_path", script_path)
    if not script_path:
        raise ValueError("script_path is empty")
    words = ["sbatch", "--parsable"]
    if cluster is not None:
        words.append(f"--clusters={_names('cluster', cluster)}")
    for word in extra:
        words.append(check_text("sbatch argument", word))
    return f"{_join(words)} {quote_path(script_path)}"


def submit_script_command(
    remote_dir: str, script_name: str, *, cluster: str | None = None, extra: Sequence[str] = ()
) -> str:
    """Create ``remote_dir``, write the script read from stdin into it, and submit it.

    ``(umask 077 && mkdir -p <dir> && cat > <dir>/<name>) && sbatch --parsable ... <dir>/<name>``:
    one round trip; send the script text on the command's stdin. The directory and the script are
    created readable by their owner only.

    :param remote_dir: directory on the cluster; ``~/`` means the home directory.
    :param script_name: file name of the script, without ``/``.
    :param cluster: as for :func:`sbatch_command`.
    :param extra: as for :func:`sbatch_command`.
    :return: the command line.
    """
    check_text("remote_dir", remote_dir)
    check_text("script_name", script_name)
    if not remote_dir:
        raise ValueError("remote_dir is empty")
    if not script_name or "/" in script_name or script_name in (".", ".."):
        raise ValueError(f"script_name must be a plain file name, got {script_name!r}")
    path = posixpath.join(remote_dir, script_name)
    # The script is the job owner's alone; sbatch itself runs outside the subshell, with the
    # login's umask, which SLURM hands on to the job (its outputs keep the usual permissions).
    return (
        f"(umask 077 && mkdir -p -- {quote_path(remote_dir)} && cat > {quote_path(path)}) && "
        f"{sbatch_command(path, cluster=cluster, extra=extra)}"
    )


def write_file_command(path: str) -> str:
    """Write stdin to ``path`` whole: into ``<path>.tmp`` (the owner's alone), then renamed over it.

    A reader never sees half a file. The directory must exist.

    :param path: the file on the cluster; ``~/`` means the home directory.
    :return: the command line.
    """
    check_text("path", path)
    if not path or path.endswith("/"):
        raise ValueError(f"path must name a file, got {path!r}")
    tmp = f"{path}.tmp"
    return f"(umask 077 && cat > {quote_path(tmp)}) && mv -f -- {quote_path(tmp)} {quote_path(path)}"


def sacct_command(
    job_ids: Sequence[str] | None = None,
    *,
    name: str | None = None,
    start: str | None = None,
    end: str | None = None,
    clusters: str | Sequence[str] | None = None,
    fields: Sequence[str] = SACCT_FIELDS,
) -> str:
    """``sacct -P -n --noconvert -o <fields> [-j ids] [--name n] [-S start] ...``.

    ``-P`` separates fields with ``|`` (no trailing one), ``-n`` drops the header and
    ``--noconvert`` prints MaxRSS in bytes. With ``-j`` sacct searches from the epoch;
    without it, from midnight today, so a query by name alone needs ``start``.

    :param job_ids: the jobs to report (each with all its steps).
    :param name: only jobs with this name (``--name``), e.g. a run-scoped name.
    :param start: ``--starttime`` in a SLURM time format, e.g. ``2024-05-01T00:00:00`` or ``now-7days``.
    :param end: ``--endtime``.
    :param clusters: ``--clusters``: one name, several, or ``all``.
    :param fields: the ``--format`` fields; parse the output with the same tuple.
    :return: the command line.
    :raises ValueError: with neither ids nor name, or with a name but no ids and no start.
    """
    if job_ids is None and name is None:
        raise ValueError("sacct_command needs job_ids or name; without them sacct lists every job of today")
    if job_ids is None and start is None:
        raise ValueError(
            "sacct --name without -j only searches from midnight today; pass start, e.g. the run's start time"
        )
    field_list = list(fields)
    if not field_list:
        raise ValueError("no sacct fields given")
    for field_name in field_list:
        if not isinstance(field_name, str) or not _FIELD_RE.match(field_name):
            raise ValueError(f"invalid sacct field: {field_name!r}")
    words = ["sacct", "-P", "-n", "--noconvert", "-o", ",".join(field_list)]
    if job_ids is not None:
        words += ["-j", ",".join(_job_ids(job_ids))]
    if name is not None:
        words.append(f"--name={_job_name(name)}")
    for option, value in (("-S", start), ("-E", end)):
        if value is not None:
            check_text(f"sacct {option}", value)
            if not value or any(c.isspace() for c in value):
                raise ValueError(f"invalid sacct time {value!r}")
            words += [option, value]
    if clusters is not None:
        words.append(f"--clusters={_names('cluster', clusters)}")
    return _join(words)


def chunked_sacct_commands(
    job_ids: Sequence[str],
    *,
    max_ids: int = _DEFAULT_MAX_IDS,
    clusters: str | Sequence[str] | None = None,
    fields: Sequence[str] = SACCT_FIELDS,
) -> list[str]:
    """Split a long list of job ids into several sacct commands of at most ``max_ids`` ids.

    :param job_ids: the jobs; duplicates are dropped, order is kept.
    :param max_ids: the most ids per command, to stay well within command-line limits.
    :param clusters: as for :func:`sacct_command`.
    :param fields: as for :func:`sacct_command`.
    :return: the command lines; empty for no ids.
    """
    if max_ids < 1:
        raise ValueError(f"max_ids must be at least 1, got {max_ids}")
    if isinstance(job_ids, str):
        raise TypeError("job_ids must be a sequence of ids, not one string")
    unique = list(dict.fromkeys(job_ids))
    return [
        sacct_command(unique[i : i + max_ids], clusters=clusters, fields=fields)
        for i in range(0, len(unique), max_ids)
    ]


def squeue_command(
    job_ids: Sequence[str] | None = None,
    name: str | None = None,
    user: str | None = None,
    *,
    clusters: str | Sequence[str] | None = None,
    mine: bool = False,
) -> str:
    """``squeue -h --format='%i|%j|%T|%r|%M|%l|%N' [-j ids] [--name n] [-u user] [--me]``.

    squeue only knows jobs that are queued, running or just finished: use sacct for
    anything that may have ended. ``squeue -j`` fails for an id it no longer knows.

    :param job_ids: only these jobs.
    :param name: only jobs with this name.
    :param user: only this user's jobs.
    :param clusters: ``--clusters``; squeue then prints a ``CLUSTER: name`` line per cluster,
        which :func:`~airflow_desc.slurm.parse.parse_squeue` understands.
    :param mine: only the jobs of the user running squeue (``--me``, SLURM 20.11 and later).
    :return: the command line.
    """
    words = ["squeue", "-h", f"--format={SQUEUE_FORMAT}"]
    if mine:
        words.append("--me")
    if job_ids is not None:
        words += ["-j", ",".join(_job_ids(job_ids))]
    if name is not None:
        words.append(f"--name={_job_name(name)}")
    if user is not None:
        words.append(f"--user={_names('user', user)}")
    if clusters is not None:
        words.append(f"--clusters={_names('cluster', clusters)}")
    return _join(words)


def scancel_command(job_ids: Sequence[str], signal: str | None = None, *, cluster: str | None = None) -> str:
    """``scancel [--signal=S] [--clusters=C] id...``.

    :param job_ids: the jobs (or steps) to cancel.
    :param signal: send this signal (``TERM``, ``USR1``, ``9``) instead of cancelling.
    :param cluster: the cluster of a multi-cluster setup.
    :return: the command line.
    """
    words = ["scancel"]
    if signal is not None:
        if not re.match(r"^(SIG)?[A-Z0-9]+$", signal):
            raise ValueError(f"invalid signal for scancel: {signal!r}")
        words.append(f"--signal={signal}")
    if cluster is not None:
        words.append(f"--clusters={_names('cluster', cluster)}")
    words += _job_ids(job_ids)
    return _join(words)


def owner_sacct_command(job_ids: Sequence[str]) -> str:
    """``TZ=UTC sacct -X -P -n -o JobID,JobName,UID,Submit -j ids``: whose each job is, and since when.

    sacct prints times in the local time of the shell it runs in; ``TZ=UTC`` makes Submit
    comparable with the worker's record of submitting, wherever the cluster is. ``-X``: the
    allocation lines only (the steps carry no owner of their own).

    :param job_ids: the jobs.
    :return: the command line; parse its output with :func:`~airflow_desc.slurm.ownership.parse_owners`.
    """
    words = ["sacct", "-X", "-P", "-n", "-o", ",".join(OWNER_FIELDS), "-j", ",".join(_job_ids(job_ids))]
    return f"TZ=UTC {_join(words)}"


def controller_jobs_command(job_ids: Sequence[str]) -> str:
    """``scontrol -o show job <id>`` for each id, in one shell command line.

    slurm 22.05's ``scontrol show job`` takes one id (``a,b`` and ``a b`` are refused), so one SSH
    call runs one scontrol per id. The controller keeps an ended job for ``MinJobAge`` seconds
    (300 by default): it still answers when slurmdbd's accounting lost the job. An id it does not
    know prints an error on stderr and no line, so the command ends with ``true``.

    :param job_ids: the jobs (each checked by :func:`validate_job_id`).
    :return: the command line; parse its output with
        :func:`~airflow_desc.slurm.parse_controller.parse_scontrol_jobs`.
    """
    calls = [_join(["scontrol", "-o", "show", "job", job_id]) for job_id in _job_ids(job_ids)]
    return "; ".join([*calls, "true"])


def sinfo_nodes_command(partition: str | None = None, nodes: Sequence[str] = ()) -> str:
    """``sinfo -h -N --format='%N|%P|%T|%E' [-p partition] [-n nodes]``: each node's state and reason.

    :param partition: only this partition's nodes.
    :param nodes: only these nodes.
    :return: the command line; parse its output with :func:`~airflow_desc.slurm.nodes.parse_sinfo_nodes`.
    """
    words = ["sinfo", "-h", "-N", f"--format={SINFO_NODE_FORMAT}"]
    if partition is not None:
        words += ["-p", _names("partition", partition)]
    if nodes:
        for node in nodes:
            if not isinstance(node, str) or not _HOSTLIST_RE.match(node):
                raise ValueError(f"invalid node name: {node!r}")
        words += ["-n", ",".join(nodes)]
    return _join(words)
