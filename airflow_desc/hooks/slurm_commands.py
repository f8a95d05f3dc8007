"""The SLURM commands of :class:`~airflow_desc.hooks.slurm.SlurmHook`: :class:`SlurmCommands`.

sbatch (with the search for a job a dropped connection may have submitted), sacct, squeue,
scontrol, sinfo, scancel and log tails, each one remote command line built by
:mod:`airflow_desc.slurm` (shell-quoted there) and run through the hook's :meth:`run`, its output
parsed there too. :class:`CommandResult` is what a remote command did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_desc.exceptions import ClusterCommandError, ClusterUnreachable, SlurmSubmitError
from airflow_desc.slurm import (
    ControllerJob,
    JobAccounting,
    SqueueRow,
    SubmittedJob,
    chunked_sacct_commands,
    controller_jobs_command,
    group_accounting,
    parse_sacct,
    parse_sbatch_output,
    parse_scontrol_jobs,
    parse_squeue,
    sacct_command,
    scancel_command,
    squeue_command,
    submit_script_command,
    write_file_command,
)
from airflow_desc.slurm.commands import owner_sacct_command, sinfo_nodes_command
from airflow_desc.slurm.log_tails import (
    LOG_TAIL_BYTES,
    LOG_TAIL_LINES,
    new_marker,
    parse_tails,
    tails_command,
)
from airflow_desc.slurm.maintenance import ClusterAvailability, availability_command, parse_availability
from airflow_desc.slurm.nodes import NodeState, parse_sinfo_nodes
from airflow_desc.slurm.ownership import JobOwner, parse_owners

__all__ = ["CommandResult", "SlurmCommands"]


@dataclass(frozen=True)
class CommandResult:
    """What a remote command did.

    :param command: the command line.
    :param returncode: its exit status.
    :param stdout: what it printed.
    :param stderr: what it printed on stderr.
    """

    command: str
    returncode: int
    stdout: str
    stderr: str


class SlurmCommands:
    """The SLURM commands of :class:`~airflow_desc.hooks.slurm.SlurmHook` (which it is mixed into)."""

    if TYPE_CHECKING:  # what the hook provides
        log: Any

        def run(
            self,
            command: str,
            *,
            stdin: str | None = None,
            timeout: float | None = None,
            check: bool = True,
            idempotent: bool = True,
        ) -> CommandResult:
            """Run one command line on the login node (the hook's)."""

        def _where(self, ssh_hook: Any = None) -> str:
            """Name the cluster and its login, for messages (the hook's)."""

        def _command_error(self, result: CommandResult) -> ClusterCommandError:
            """Return the error of a command that failed (the hook's)."""

    def submit(
        self, script: str, *, remote_dir: str, script_name: str, job_name: str | None = None
    ) -> SubmittedJob:
        """Write ``script`` to ``remote_dir/script_name`` on the cluster and sbatch it.

        sbatch is not idempotent: when the connection drops during the call and ``job_name`` is
        given, the cluster is asked whether a job of that name exists before anyone resubmits.

        :param script: the job script (see :func:`airflow_desc.slurm.render_job_script`).
        :param remote_dir: its directory on the cluster.
        :param script_name: its file name.
        :param job_name: the job's (unique) name, to find it after a dropped connection.
        :raises SlurmSubmitError: sbatch refused the job (carries stdout, stderr, exit status).
        """
        command = submit_script_command(remote_dir, script_name)
        try:
            result = self.run(command, stdin=script, check=False, idempotent=False)
        except ClusterUnreachable:
            found = self.find_jobs_by_name(job_name) if job_name else []
            if found:
                self.log.warning("connection dropped during sbatch, but job %s was submitted", found[-1])
                return SubmittedJob(job_id=found[-1], cluster=None)
            raise
        if result.returncode != 0:
            reason = (result.stderr.strip() or result.stdout.strip() or "(no output)").splitlines()[-1]
            raise _submit_error(f"{self._where()}: sbatch rejected the job: {reason}", command, result)
        try:
            return parse_sbatch_output(result.stdout)
        except ValueError as exc:
            message = f"{self._where()}: sbatch printed no job id ({exc})"
            raise _submit_error(message, command, result) from exc

    def sacct(self, job_ids: Sequence[str]) -> dict[str, JobAccounting]:
        """Accounting of ``job_ids`` and their steps, in as few sacct calls as the id list allows."""
        rows = []
        for command in chunked_sacct_commands(list(job_ids)):
            rows.extend(parse_sacct(self.run(command).stdout))
        return group_accounting(rows)

    def squeue(self, job_ids: Sequence[str] | None = None, *, name: str | None = None) -> list[SqueueRow]:
        """Jobs the controller still knows. An id it has forgotten is simply absent (not an error)."""
        result = self.run(squeue_command(list(job_ids) if job_ids else None, name=name), check=False)
        if result.returncode != 0:
            if "Invalid job id" in result.stderr:
                return []
            raise self._command_error(result)
        return parse_squeue(result.stdout)

    def own_queue(self) -> list[SqueueRow]:
        """Return the login user's jobs the controller knows (queued, running, just ended): squeue --me."""
        return parse_squeue(self.run(squeue_command(mine=True)).stdout)

    def controller_jobs(self, job_ids: Sequence[str]) -> dict[str, ControllerJob]:
        """Return what the controller (``scontrol -o show job``) knows of ``job_ids``, in one call.

        An id it has forgotten is simply absent. It answers for a job whose accounting slurmdbd lost.
        """
        return parse_scontrol_jobs(self.run(controller_jobs_command(list(job_ids))).stdout)

    def find_jobs_by_name(self, name: str, *, since: str = "now-30days") -> list[str]:
        """Ids of the jobs named ``name`` (queued, running or finished since ``since``), oldest first."""
        ids = {row.job_id for row in self.squeue(name=name)}
        found = parse_sacct(self.run(sacct_command(name=name, start=since)).stdout)
        ids.update(row.job_id for row in found if row.step is None)
        return sorted(ids, key=lambda i: [int(p) for p in i.replace("_", ".").split(".") if p.isdigit()])

    def owners(self, job_ids: Sequence[str]) -> dict[str, JobOwner]:
        """Return whose each job is: its name, uid and submit time (UTC), by id; unknown ids are absent."""
        return parse_owners(self.run(owner_sacct_command(list(job_ids))).stdout)

    def nodes(self, *, partition: str | None = None, nodes: Sequence[str] = ()) -> list[NodeState]:
        """Return the state and reason of each node (of ``partition``, or ``nodes``) as ``sinfo -N`` says."""
        return parse_sinfo_nodes(self.run(sinfo_nodes_command(partition, nodes)).stdout)

    def availability(self) -> ClusterAvailability | None:
        """Return the cluster's reservations and partition states, in one call; ``None`` if either failed."""
        marker = new_marker()
        return parse_availability(self.run(availability_command(marker), check=False).stdout, marker)[1]

    def scancel(self, job_ids: Sequence[str], *, signal: str | None = None) -> None:
        """Cancel (or signal) jobs."""
        self.run(scancel_command(list(job_ids), signal=signal))

    def write_file(self, path: str, text: str) -> None:
        """Write ``text`` to ``path`` on the cluster, whole (a reader never sees half of it)."""
        self.run(write_file_command(path), stdin=text)

    def read_tail(self, path: str, *, lines: int = 60, max_bytes: int = LOG_TAIL_BYTES) -> str:
        """Return the last ``lines`` lines (at most ``max_bytes``) of a file on the cluster; "" if missing."""
        return self.read_tails([path], lines=lines, max_bytes=max_bytes)[0]

    def read_tails(
        self, paths: Sequence[str], *, lines: int = LOG_TAIL_LINES, max_bytes: int = LOG_TAIL_BYTES
    ) -> list[str]:
        """Return the bounded tail of each file, in one SSH call; ``""`` for a file that does not exist.

        Not redacted: :func:`~airflow_desc.slurm.log_tails.redact_secrets` before logging or keeping one.

        :param paths: the files, trusted by the caller (each one of this task's own logs).
        :param lines: the most lines of each.
        :param max_bytes: the most bytes of each.
        """
        if not paths:
            return []
        marker = new_marker()
        command = tails_command(paths, marker=marker, lines=lines, max_bytes=max_bytes)
        result = self.run(command, check=False)
        return parse_tails(result.stdout, marker, len(paths), max_bytes=max_bytes)


def _submit_error(message: str, command: str, result: CommandResult) -> SlurmSubmitError:
    """Return the error for an sbatch that did not give a job id, with all it printed."""
    return SlurmSubmitError(
        message, command=command, returncode=result.returncode, stdout=result.stdout, stderr=result.stderr
    )
