"""The one exception tree of airflow-desc.

Every error raised on purpose derives from :class:`DescError`. The tree imports no Airflow
(``slurm/``, the workflow spec and graph and the history use it outside Airflow); Airflow fails a task
on any exception with its message, and what Airflow must recognise (a skip, a failure that must not
be retried) is raised as Airflow's own exception by the operators::

    DescError
    ├── ClusterError
    │   ├── ClusterUnreachable      SSH could not connect / authenticate / verify the host key
    │   │   └── SshKeyExpired       the login's key (certificate) has expired: renew it; tasks wait
    │   ├── ClusterCommandError     a remote command exited non-zero (carries stdout, stderr, rc)
    │   │   └── SlurmSubmitError    sbatch refused the job
    │   └── ClusterProfileError     a cluster profile file is invalid (file:line, field)
    ├── SlurmJobFailed              the job ended badly (state, exit code, reason, log tail)
    ├── SlurmOutputError            SLURM printed something we cannot read (also a ValueError)
    ├── ResourceLimitError          a request exceeds a cluster limit, refused before submission
    ├── HistoryUnavailable          the history database cannot be reached or named
    ├── UntrustedState              a saved value (task state store, XCom, trigger event) is not one we wrote
    ├── WorkflowSpecError           a workflow spec is invalid (file:line, field)
    ├── BpsWorkflowError            a ctrl_bps GenericWorkflow uses what airflow-desc does not run
    └── BpsApiError                 Airflow's REST API refused a ctrl_bps call or did not answer (``status``)

Messages say what happened and what to do.
"""

from __future__ import annotations

from datetime import datetime


class DescError(Exception):
    """Root of every error airflow-desc raises on purpose."""


class ClusterError(DescError):
    """Something went wrong talking to a cluster."""


class ClusterUnreachable(ClusterError):
    """SSH to a cluster login failed: network, authentication or host key."""


class SshKeyExpired(ClusterUnreachable):
    """The key of a cluster login does not log in now (its certificate expired); nothing was tried.

    Operators wait deferred for a renewed key instead of spending a retry.

    :param message: what happened and what to do.
    :param ssh_conn_id: the connection whose key it is.
    :param jump_conn_id: the bastion the connection goes through (``""``: none).
    :param cluster: the cluster, for messages.
    :param expired_at: when it expired (aware UTC; ``None``: it is valid only from later).
    :param cert_path: the certificate file to watch for a renewal (``None``: a profile's stated expiry).
    """

    def __init__(
        self,
        message: str,
        *,
        ssh_conn_id: str,
        jump_conn_id: str,
        cluster: str,
        expired_at: datetime | None,
        cert_path: str | None,
    ) -> None:
        super().__init__(message)
        self.ssh_conn_id = ssh_conn_id
        self.jump_conn_id = jump_conn_id
        self.cluster = cluster
        self.expired_at = expired_at
        self.cert_path = cert_path


class ClusterCommandError(ClusterError):
    """A remote command exited non-zero.

    :param message: what happened and what to do.
    :param command: the command that was run.
    :param returncode: its exit status.
    :param stdout: what it printed.
    :param stderr: what it printed on stderr.
    """

    def __init__(self, message: str, *, command: str, returncode: int, stdout: str, stderr: str) -> None:
        super().__init__(message)
        self.command = command
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


class SlurmSubmitError(ClusterCommandError):
    """sbatch did not accept the job."""


class ClusterProfileError(ClusterError):
    """A cluster profile file is invalid; the message names file, line and field."""


class ResourceLimitError(DescError):
    """A job asks for more than its cluster allows; refused before submission."""


class SlurmJobFailed(DescError):
    """A SLURM job ended without success.

    :param message: one line: what happened and what to do.
    :param job_id: the SLURM job id.
    :param state: the final SLURM state (e.g. ``OUT_OF_MEMORY``).
    :param exit_code: the job's exit code.
    :param reason: the classified reason (``out-of-memory``, ``time-limit``, ...).
    :param log_tail: the last lines of the job's output.
    """

    def __init__(
        self,
        message: str,
        *,
        job_id: str,
        state: str,
        exit_code: int | None,
        reason: str,
        log_tail: str = "",
    ) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.state = state
        self.exit_code = exit_code
        self.reason = reason
        self.log_tail = log_tail


class SlurmOutputError(DescError, ValueError):
    """SLURM printed something we cannot read.

    :param message: what is wrong.
    :param text: the offending text (the whole output, or the one line).
    :param line_number: 1-based line of the output, when one line is at fault.
    """

    def __init__(self, message: str, *, text: str, line_number: int | None = None) -> None:
        super().__init__(message)
        self.text = text
        self.line_number = line_number


class HistoryUnavailable(DescError):
    """The history database cannot be reached or named (connection id missing, server down)."""


class UntrustedState(DescError):
    """A value read back from the task state store, XCom or a trigger event is not one airflow-desc wrote.

    Those stores can be written through Airflow's REST API; the value would pick the job to cancel or
    the file to read, so it is refused before any command runs. The message names the field and the
    value.
    """


class WorkflowSpecError(DescError):
    """A workflow spec is invalid; the message names file:line and the field."""


class BpsWorkflowError(DescError, ValueError):
    """A GenericWorkflow that cannot become a workflow spec; the message names the job and the feature."""


class BpsApiError(DescError):
    """Airflow's REST API refused the ctrl_bps plugin's call (``bps submit``, ``report``...) or was silent.

    :param message: what was asked, Airflow's answer, and what to do.
    :param status: the HTTP status (0: no answer, or not an HTTP error).
    """

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status
