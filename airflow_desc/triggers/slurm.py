"""SlurmJobTrigger and the per-cluster poller it shares with every sibling trigger.

A triggerer may watch thousands of SLURM jobs. Instead of one SSH call per job per
interval (what ``SSHRemoteJobOperator`` does), every trigger of one cluster registers
its job id with one :class:`ClusterPoller` living in the triggerer's event loop. Each
interval the poller asks ``sacct`` once for the union of the watched ids (chunked for
very long lists), asks ``squeue`` about ids sacct does not know yet (slurmdbd records a
new job within about a second), and wakes each trigger whose job has ended.

Before a job that neither sacct nor squeue knows is given up, the controller is asked
(``scontrol -o show job``, one SSH call for all such ids per poll): slurmdbd may have lost or
purged a job's accounting rows while the controller still holds the job (for ``MinJobAge``
seconds after its end). While the controller has it pending or running, it is watched on; once
it ended, the watch settles ``done`` with the controller's state, exit code, nodes and times
(the event's ``source`` is ``"controller"``, its ``message`` says the accounting was missing).
Only a job that neither sacct, squeue nor the controller knows for longer than ``vanish_grace``
seconds is reported as vanished: an error, never a success.

Each poll also writes the state sacct printed for every polled job (the controller's for a job sacct
lacks) to the history's
``slurm_job_states`` (:func:`~airflow_desc.history.live.write_job_states`: one transaction per
poll per cluster, off the event loop, bounded by the history's timeouts, pruning rows no poll
refreshed for a day). That is where the status page reads whether a deferred task's job is
pending or running, instead of asking the cluster itself. A failing write logs a warning and
never stops the polling. A write that succeeded shows the history answers: when records wait in
the spool (the history was away when a task recorded), the poller then writes them out too
(:meth:`~airflow_desc.history.SpoolingRecorder.flush_pending`: in a thread it does not wait for,
at most once per :data:`SPOOL_FLUSH_EVERY_S` per triggerer, never while another process flushes),
so that they reach the history soon after it is back without a command or a next task.
Before each poll the poller reads its login's key validity
(:func:`~airflow_desc.triggers.key_renewal.check_key_in_poll`: a file read, no login): a key
expiring within two hours is warned about in the triggerer's log, and what it found is written to
the history's ``ssh_key_checks`` for the status page.
Each poll logs one INFO line to the triggerer's log, ``poll N of <conn>: M job(s) in K sacct
call(s)`` (N counts the polls of that poller), so that it shows how often each cluster is asked,
and for how many jobs at once.

Each poll also reads the cluster's reservations and partition states, in the same SSH call as the
first sacct (:func:`~airflow_desc.slurm.maintenance.availability_command`): the poller keeps the
latest answer (:attr:`ClusterPoller.availability`) and wakes each waiting
:class:`~airflow_desc.triggers.hold.SubmissionHoldTrigger` whose job may now be submitted (the
maintenance window ended, the partition came up). A poll with no job to watch, only such waits,
asks for the availability alone. An answer that cannot be read never fails the job poll: the
waits go on until the next one.

Airflow 3.3's shared streams (``BaseEventTrigger.shared_stream_key``) were considered:
their ``open_shared_stream`` sees the kwargs of one trigger of the group only, so one
poll cannot cover the union of every sibling's job id; hence this poller.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar, TypeVar

import structlog
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_desc.exceptions import DescError
from airflow_desc.history.spool import SpoolingRecorder
from airflow_desc.history.writer import HistoryStore
from airflow_desc.hooks.slurm import SlurmHook
from airflow_desc.slurm import (
    CONTROLLER_NOTE,
    ControllerJob,
    JobAccounting,
    accounting_to_payload,
    chunked_sacct_commands,
    controller_jobs_command,
    group_accounting,
    parse_sacct,
    parse_scontrol_jobs,
    parse_squeue,
    squeue_command,
    validate_job_id,
)
from airflow_desc.slurm.log_tails import new_marker
from airflow_desc.slurm.maintenance import (
    ClusterAvailability,
    SubmissionHold,
    availability_command,
    parse_availability,
)
from airflow_desc.triggers.key_renewal import check_key_in_poll

__all__ = ["SPOOL_FLUSH_EVERY_S", "ClusterPoller", "SlurmJobTrigger"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Seconds between two attempts of a triggerer's pollers to write out the history spool.
SPOOL_FLUSH_EVERY_S = 30.0


@dataclass
class _Watch:
    job_id: str
    future: asyncio.Future[dict[str, Any]]
    vanish_grace: float
    interval: float
    first_missing: float | None = None
    placeholder_since: float | None = None


#: Whether a job may go now, judged on a poll's answer and the time: ``None`` when it may.
HoldCheck = Callable[[ClusterAvailability, datetime], SubmissionHold | None]


@dataclass
class _HoldWatch:
    check: HoldCheck
    future: asyncio.Future[None]
    interval: float


@dataclass
class ClusterPoller:
    """One poll loop per cluster connection per event loop, shared by all triggers of that cluster.

    :param ssh_conn_id: the cluster's SSH connection.
    :param jump_conn_id: its bastion connection, if any.
    :param interval: seconds between polls for a watch that names none (:meth:`wait`); the loop polls
        at the smallest interval of the jobs it watches now.
    :param history: where each poll's job states are written (``None``: the configured history,
        :func:`~airflow_desc.history.default_history_store`).
    :param spool: the spool written out once a poll's write succeeded (``None``: the configured
        one, :func:`~airflow_desc.history.default_spooling_recorder`).
    """

    ssh_conn_id: str
    jump_conn_id: str | None
    interval: float
    watches: dict[str, list[_Watch]] = field(default_factory=dict)
    holds: list[_HoldWatch] = field(default_factory=list)
    #: The reservations and partitions the latest poll read (``None``: none read yet).
    availability: ClusterAvailability | None = None
    polls: int = 0
    history: HistoryStore | None = None
    spool: SpoolingRecorder | None = None
    spool_flush_every_s: float = SPOOL_FLUSH_EVERY_S
    _spool_flush: asyncio.Future[bool | None] | None = None
    _key_check: asyncio.Future[None] | None = None
    _task: asyncio.Task[None] | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    _registry: ClassVar[dict[tuple[int, str, str | None], ClusterPoller]] = {}

    @classmethod
    def for_cluster(cls, ssh_conn_id: str, jump_conn_id: str | None, interval: float) -> ClusterPoller:
        """Return the poller of this cluster in the running event loop, creating it if needed.

        ``interval`` is a new poller's default; each trigger passes its own to :meth:`wait`.
        """
        loop = asyncio.get_running_loop()
        key = (id(loop), ssh_conn_id, jump_conn_id)
        poller = cls._registry.get(key)
        # id() of a closed loop can be reused by a new one: never hand out a poller of another loop.
        if poller is None or poller._loop is not loop:
            poller = cls._registry[key] = cls(ssh_conn_id, jump_conn_id, interval, _loop=loop)
        return poller

    @property
    def current_interval(self) -> float:
        """Seconds until the next poll: the smallest interval of the jobs watched now.

        Of those watched *now*: a trigger of 1 s that fired earlier must not keep a later one of 5 s
        polling every second (the poller outlives its triggers in a triggerer).
        """
        intervals = [w.interval for ws in self.watches.values() for w in ws]
        return min([*intervals, *(h.interval for h in self.holds)], default=self.interval)

    async def wait(
        self, job_id: str, *, vanish_grace: float, interval: float | None = None
    ) -> dict[str, Any]:
        """Wait until ``job_id`` ends; return ``{"status": "done", ...}`` or ``{"status": "error", ...}``.

        :param interval: seconds between polls this watch asks for (default: the poller's ``interval``).
        """
        loop = asyncio.get_running_loop()
        interval = self.interval if interval is None else interval
        watch = _Watch(job_id, loop.create_future(), vanish_grace, interval)
        self.watches.setdefault(job_id, []).append(watch)
        try:
            return await self._started(watch.future)
        finally:
            self._forget(watch)

    async def wait_until_clear(self, check: HoldCheck, *, interval: float | None = None) -> None:
        """Wait until a poll's reservations and partitions let a job go (``check`` returns ``None``).

        :param check: judges each poll's answer, e.g. :func:`~airflow_desc.slurm.maintenance.submission_hold`
            with the job's partition, walltime and nodes.
        :param interval: seconds between polls this wait asks for (default: the poller's ``interval``).
        """
        loop = asyncio.get_running_loop()
        hold = _HoldWatch(check, loop.create_future(), self.interval if interval is None else interval)
        self.holds.append(hold)
        try:
            await self._started(hold.future)
        finally:
            if hold in self.holds:
                self.holds.remove(hold)

    async def _started(self, future: asyncio.Future[_T]) -> _T:
        """Start the poll loop if it is not running (else poll soon), and wait for ``future``."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            # The poll loop serves every trigger of the cluster: it runs without the log context of
            # the trigger that happened to start it, so that its records go to the triggerer's log,
            # not into that one task instance's log (the triggerer routes records by that context).
            context = contextvars.copy_context()
            context.run(structlog.contextvars.clear_contextvars)
            self._task = context.run(loop.create_task, self._run(), name=f"slurm-poller-{self.ssh_conn_id}")
        else:
            self._wake.set()  # a new job: poll it soon rather than after a full interval
        return await future

    def _forget(self, watch: _Watch) -> None:
        siblings = self.watches.get(watch.job_id, [])
        if watch in siblings:
            siblings.remove(watch)
        if not siblings:
            self.watches.pop(watch.job_id, None)

    async def _run(self) -> None:
        hook = SlurmHook(self.ssh_conn_id, jump_conn_id=self.jump_conn_id)
        loop = asyncio.get_running_loop()
        while self.watches or self.holds:
            self._wake.clear()
            started = loop.time()
            try:
                self._check_key(hook)
                await self.poll_once(hook)
            except DescError as exc:
                # The cluster is unreachable or sacct failed: keep watching, the jobs are still there.
                hook.log.warning("poll of %s failed, will retry: %s", self.ssh_conn_id, exc)
            except Exception:
                # Never let one poll's surprise stop every sibling trigger of this cluster for good.
                hook.log.exception("poll of %s failed unexpectedly, will retry", self.ssh_conn_id)
            if not (self.watches or self.holds):
                break
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.until_next_poll(started, loop.time()))
                await asyncio.sleep(0.2)  # let a burst of new triggers register before the next poll
            except asyncio.TimeoutError:
                pass

    def until_next_poll(self, started: float, now: float) -> float:
        """Seconds from ``now`` to the next poll of a poll that started at ``started``.

        Polls start one interval apart, whatever a poll took (SSH, sacct, the history's write): a
        job's end waits half an interval for its poll on average, not half of interval + poll time.
        Yet a quarter of the interval at least separates two polls, so that a slow sacct (a busy
        slurmdbd, thousands of jobs) never turns into back-to-back polls.
        """
        interval = self.current_interval
        return max(interval / 4, started + interval - now)

    async def poll_once(self, hook: SlurmHook) -> None:
        """One poll: sacct per chunk of watched ids, squeue for those it lacks, scontrol for the rest.

        One SSH call each; the controller is asked only about ids neither sacct nor squeue knows. The
        first call also reads the reservations and partitions (:meth:`_read_availability`).
        """
        ids = list(self.watches)
        if not ids and not self.holds:
            return
        self.polls += 1
        marker = new_marker()
        # `true`: a failed scontrol or sinfo must not fail the sacct it follows.
        availability = f"{{ {availability_command(marker)}; true; }}"
        if not ids:
            log.info("poll %d of %s: no job, %d hold(s)", self.polls, self.ssh_conn_id, len(self.holds))
            self._read_availability((await hook.arun(availability)).stdout, marker)
            return
        rows = []
        commands = chunked_sacct_commands(ids)
        commands[0] = f"{commands[0]} && {availability}"
        log.info(
            "poll %d of %s: %d job(s) in %d sacct call(s)",
            self.polls,
            self.ssh_conn_id,
            len(ids),
            len(commands),
        )
        for number, command in enumerate(commands):
            stdout = (await hook.arun(command)).stdout
            if number == 0:
                stdout = self._read_availability(stdout, marker)
            rows.extend(parse_sacct(stdout))
        accounting = group_accounting(rows)
        unknown = [i for i in ids if i not in accounting or accounting[i].job is None]
        queued: set[str] = set()
        if unknown:
            result = await hook.arun(squeue_command(unknown), check=False)
            if result.returncode == 0:
                queued = {row.job_id for row in parse_squeue(result.stdout)}
        controller: dict[str, ControllerJob] = {}
        lost = [i for i in unknown if i not in queued]
        if lost:
            # Accounting purged or never written: the controller may still hold the job.
            controller = parse_scontrol_jobs((await hook.arun(controller_jobs_command(lost))).stdout)
        now = time.monotonic()
        for job_id in ids:
            for watch in list(self.watches.get(job_id, [])):
                if not watch.future.done():
                    self._judge(watch, accounting.get(job_id), job_id in queued, now, controller.get(job_id))
        states = {i: accounting[i].state.raw for i in ids if i in accounting}
        states.update({i: controller[i].state.raw for i in lost if i in controller})  # sacct lacks them
        await self.write_states(states)

    def _read_availability(self, stdout: str, marker: str) -> str:
        """Keep the reservations and partitions of a poll's answer, wake the waits they clear.

        :return: the answer before them (the sacct output).
        """
        try:
            before, availability = parse_availability(stdout, marker)
        except DescError as exc:
            log.warning("poll of %s: reservations and partitions not read: %s", self.ssh_conn_id, exc)
            return stdout.partition(f"{marker}:")[0]
        if availability is None:
            if self.holds:
                log.warning(
                    "poll of %s: scontrol show reservation or sinfo failed; %d hold(s) wait on",
                    self.ssh_conn_id, len(self.holds),
                )  # fmt: skip
            return before
        self.availability = availability
        now = datetime.now(timezone.utc)
        for hold in list(self.holds):
            if hold.future.done():
                continue
            try:
                clear = hold.check(availability, now) is None
            except Exception as exc:  # noqa: BLE001 - fails its own trigger, never the poll of its siblings
                hold.future.set_exception(exc)
                continue
            if clear:
                hold.future.set_result(None)
        return before

    async def write_states(self, states: dict[str, str]) -> bool:
        """Write one poll's job states to the history in a thread; return whether they were written.

        Bounded by the history's connect and statement timeouts; a failure logs a warning and
        returns ``False``: polling goes on.
        """
        from airflow_desc.history.live import write_job_states

        interval = self.current_interval

        def write() -> None:
            write_job_states(
                self._history(), self.ssh_conn_id, self.jump_conn_id, states, poll_interval_s=interval
            )

        try:
            # Submitted now and shielded: a poller cancelled meanwhile (its last trigger fired, the
            # triggerer stops) still writes this poll's states rather than dropping them unstarted.
            await asyncio.shield(asyncio.get_running_loop().run_in_executor(None, write))
        except Exception as exc:  # noqa: BLE001 - the jobs are watched on; the page says its states are old
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            log.warning(
                "poll of %s: the states of %d job(s) not written to the history: %s",
                self.ssh_conn_id, len(states), first,
            )  # fmt: skip
            return False
        self._flush_spool()
        return True

    def _check_key(self, hook: SlurmHook) -> None:
        """Look at the login's key in a thread nobody waits for (a slow history never delays a poll)."""
        if self._key_check is None or self._key_check.done():
            loop = asyncio.get_running_loop()
            self._key_check = loop.run_in_executor(None, check_key_in_poll, hook, self._history)

    def _history(self) -> HistoryStore:
        """Return the history this poller writes to (the configured one unless given); blocking."""
        if self.history is None:
            from airflow_desc.history import default_history_store

            self.history = default_history_store()
        return self.history

    def _flush_spool(self) -> None:
        """Write out the spool in a thread nobody waits for, now that the history answered."""
        if self._spool_flush is not None and not self._spool_flush.done():
            return

        def flush() -> bool | None:
            try:
                if self.spool is None:
                    from airflow_desc.history import default_spooling_recorder

                    self.spool = default_spooling_recorder()
                return self.spool.flush_pending(min_interval_s=self.spool_flush_every_s)
            except Exception as exc:  # noqa: BLE001 - the polling goes on; a task's write flushes later
                log.warning("poll of %s: the history spool not written out: %s", self.ssh_conn_id, exc)
                return False

        self._spool_flush = asyncio.get_running_loop().run_in_executor(None, flush)

    def _judge(
        self,
        watch: _Watch,
        acct: JobAccounting | None,
        queued: bool,
        now: float,
        controller: ControllerJob | None = None,
    ) -> None:
        """Settle one watch from this poll's answers (sacct, squeue, scontrol), or leave it waiting."""
        if acct is not None and acct.job is not None:
            watch.first_missing = None
            if acct.is_placeholder:
                # slurmdbd's stand-in line: the real one follows within seconds; believe the
                # stand-in only if it stays past the grace period.
                watch.placeholder_since = watch.placeholder_since or now
                if now - watch.placeholder_since < watch.vanish_grace:
                    return
            if acct.is_terminal:
                watch.future.set_result({"status": "done", **accounting_to_payload(acct)})
            return
        if queued:
            watch.first_missing = None
            return
        if controller is not None:
            watch.first_missing = None
            if controller.is_terminal:
                log.warning(
                    "job %s on %s: no accounting in sacct, the controller says %s: %s",
                    watch.job_id, self.ssh_conn_id, controller.state.raw, CONTROLLER_NOTE,
                )  # fmt: skip
                payload = accounting_to_payload(controller.to_accounting())
                watch.future.set_result(
                    {"status": "done", **payload, "source": "controller", "message": CONTROLLER_NOTE}
                )
            return
        watch.first_missing = watch.first_missing or now
        if now - watch.first_missing >= watch.vanish_grace:
            watch.future.set_result(
                {
                    "status": "error",
                    "job_id": watch.job_id,
                    "message": (
                        f"job {watch.job_id} vanished: neither sacct, squeue nor scontrol on "
                        f"{self.ssh_conn_id} has known it for {watch.vanish_grace:.0f} s. It was never "
                        "recorded by slurmdbd or the cluster lost its state; rerun the task."
                    ),
                }
            )


class SlurmJobTrigger(BaseTrigger):
    """Wait for a SLURM job to end, polling through the cluster's shared :class:`ClusterPoller`.

    Fires one event: ``{"status": "done", "job_id", "rows"}`` with the job's sacct rows (so the
    operator needs no further call for accounting), or ``{"status": "error", "job_id", "message"}``.
    A job whose accounting is missing but the controller knows ends with ``{"status": "done",
    "job_id", "rows", "source": "controller", "message"}``, its one row built from the controller's
    answer (:meth:`~airflow_desc.slurm.ControllerJob.to_accounting`).

    :param job_id: the SLURM job id.
    :param ssh_conn_id: the cluster's SSH connection.
    :param jump_conn_id: its bastion connection, if any.
    :param poll_interval: seconds between polls of the cluster.
    :param vanish_grace: seconds the job may be unknown to sacct, squeue and the controller before it
        is an error.
    :param cancel_on_kill: ``scancel`` the job when a user marks the deferred task failed or clears it.
    """

    def __init__(
        self,
        *,
        job_id: str,
        ssh_conn_id: str,
        jump_conn_id: str | None = None,
        poll_interval: float = 30.0,
        vanish_grace: float = 300.0,
        cancel_on_kill: bool = True,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        # A bad id must fail this trigger alone, here, not the poll shared by its siblings.
        self.job_id = validate_job_id(str(job_id))
        self.ssh_conn_id = ssh_conn_id
        self.jump_conn_id = jump_conn_id
        self.poll_interval = float(poll_interval)
        self.vanish_grace = float(vanish_grace)
        self.cancel_on_kill = cancel_on_kill

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Return the class path and the kwargs that rebuild this trigger."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_id": self.job_id,
                "ssh_conn_id": self.ssh_conn_id,
                "jump_conn_id": self.jump_conn_id,
                "poll_interval": self.poll_interval,
                "vanish_grace": self.vanish_grace,
                "cancel_on_kill": self.cancel_on_kill,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Register with the cluster's poller and yield the one event when the job ends."""
        poller = ClusterPoller.for_cluster(self.ssh_conn_id, self.jump_conn_id, self.poll_interval)
        payload = await poller.wait(self.job_id, vanish_grace=self.vanish_grace, interval=self.poll_interval)
        yield TriggerEvent(payload)  # type: ignore[no-untyped-call]

    async def on_kill(self) -> None:
        """Cancel the job when a user marks the deferred task failed, succeeded, or clears it."""
        if self.cancel_on_kill:
            hook = SlurmHook(self.ssh_conn_id, jump_conn_id=self.jump_conn_id)
            await asyncio.to_thread(hook.scancel, [self.job_id])
