"""The operators of generated workflow DAGs: batch processes, script processes, and streams.

The renderer (:mod:`airflow_desc.workflow.render`) turns a spec's processes into these tasks;
they carry names, not objects (the loaded workflow's key, the variant, the process / task path)
and find their workflow in the run-time registry (:func:`~airflow_desc.workflow.registry.workflow_for`).

- :class:`WorkflowBatchOperator`: a batch process, one SLURM job per stream (a ``SlurmOperator``);
- :class:`WorkflowScriptOperator`: a script process at a level that is not bundled, on the worker;
- :class:`WorkflowStreamsOperator`: the streams (or bundles) of a sub-task in one DAG run.

Each decides *per stream* whether it runs (``depends_on`` and ``skip_if`` against its own
stream's upstream instances, read by :class:`~airflow_desc.operators.run_states.RunStates`) and
is Skipped, recorded so, when not: the renderer gives them trigger rule ``all_done``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowSkipException

from airflow_desc.exceptions import SlurmJobFailed
from airflow_desc.history import ProcessRecord, Recorder, default_recorder, typical_elapsed_of
from airflow_desc.operators.identity import ATTR, DescProcess, note_skip
from airflow_desc.operators.output_checks import CheckRequest, run_output_checks
from airflow_desc.operators.resume import try_of_job
from airflow_desc.operators.run_states import BLOCKED_STREAMS, ProcessInRun, RunStates, map_index_of
from airflow_desc.operators.slurm import FinishedJob, SlurmOperator, untrusted_fails_the_task
from airflow_desc.operators.trusted import trusted_feeds, trusted_map_index, trusted_stream
from airflow_desc.slurm.diagnose import Diagnosis, ReasonClass
from airflow_desc.timetables import run_survey_year
from airflow_desc.workflow.naming import stream_path, task_id_for
from airflow_desc.workflow.outcomes import Skip
from airflow_desc.workflow.registry import run_payload_choice, workflow_for
from airflow_desc.workflow.scripts import import_callable, script_feeds, script_kwargs
from airflow_desc.workflow.spec_models import PAYLOADS

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_desc.workflow.graph import TaskNode, WorkflowGraph


__all__ = [
    "VariantRecorder",
    "WorkflowBatchOperator",
    "WorkflowScriptOperator",
    "WorkflowStreamsOperator",
]


@dataclass(frozen=True)
class VariantRecorder:
    """A recorder that stamps records with the workflow variant and version before passing them on.

    Records made inside a running task of a year-by-year DAG also get the run's survey year
    (``extra["survey_year"]``: the history's ``runs.survey_year``), from its data interval, and
    those of a generated DAG's run what its batch processes ran (``extra["payload"]``: ``emulate``
    or ``dm``, its conf's or params' ``desc_payload``).

    :param variant: the workflow variant.
    :param workflow_version: the top-level workflow's version (kept in ``extra``).
    :param spec_digest: what rendered the DAG (``LoadedWorkflow.spec_digest``; kept in ``extra``,
        the history keeps it on the run).
    :param inner: where records go; default :func:`~airflow_desc.history.default_recorder` (read
        when recording, so that the environment of the running task decides).
    """

    variant: str = ""
    workflow_version: str = ""
    spec_digest: str = ""
    inner: Recorder | None = None

    def record(self, records: Sequence[ProcessRecord]) -> None:
        """Stamp and pass on ``records``."""
        year, payload = _running_year_and_payload()
        stamp: dict[str, Any] = {"workflow_version": self.workflow_version}
        if self.spec_digest:
            stamp["spec_digest"] = self.spec_digest
        if year is not None:
            stamp["survey_year"] = year
        if payload in PAYLOADS:
            stamp["payload"] = payload
        stamped = [
            dataclasses.replace(r, variant=r.variant or self.variant, extra={**r.extra, **stamp})
            for r in records
        ]
        (self.inner or default_recorder()).record(stamped)


def _running_year_and_payload() -> tuple[int | None, Any]:
    from airflow.sdk import get_current_context

    try:
        context = get_current_context()
    except RuntimeError:  # not inside a running task
        return None, None
    return run_survey_year(context), run_payload_choice(context)


class WorkflowBatchOperator(SlurmOperator):
    """A batch process of a workflow spec: one SLURM job per stream (a ``SlurmOperator``).

    Before submitting, it decides whether its stream runs (``depends_on`` and ``skip_if`` against
    its own stream's upstream instances) and records a Skipped instance if not. The command is
    the spec's (``dm_command`` when the run's payload is ``dm``: ``LoadedWorkflow.run_payload``),
    rendered with the run's variables and the stream's values; it runs in the
    cluster's ``work_dir``. After SLURM says COMPLETED, the spec's output checks run on the
    cluster; one failing makes the instance Failed (``output-check``).

    :param workflow_key: the loaded workflow (:func:`~airflow_desc.workflow.registry.workflow_for`).
    :param variant: the variant.
    :param process_path: the process's path in the graph.
    :param stream: the stream's values (mapped tasks get one per map index).
    :param top_version: the top-level workflow's version: with its name and the variant, the
        history's workflow (``workflow_version`` is the version of the process's own task).
    :param spec_digest: what rendered the DAG, kept on the run in the history.
    """

    # Commands come from the spec with {{ name }} placeholders that are not Jinja.
    template_fields: Sequence[str] = ()
    ui_color = "#c7e9f1"
    in_work_dir = True

    def __init__(
        self,
        *,
        workflow_key: str,
        variant: str | None,
        process_path: str,
        stream: Mapping[str, Any] | None = None,
        workflow_version: str = "",
        top_version: str = "",
        spec_digest: str = "",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("command", "")
        recorder = VariantRecorder(
            variant=variant or "", workflow_version=top_version or workflow_version, spec_digest=spec_digest
        )
        kwargs.setdefault("recorder", recorder)
        # Mapped from a streams task's XCom, which the REST API can write: its values reach the command.
        with untrusted_fails_the_task():
            values = trusted_stream("stream", stream or {})
        super().__init__(stream=stream_path(values), workflow_version=workflow_version, **kwargs)
        self.workflow_key = workflow_key
        self.variant = variant
        self.process_path = process_path
        self.stream_values = values

    def execute(self, context: Context) -> Any:
        """Skip (recorded) or submit this stream's job; see the class docstring."""
        here = ProcessInRun.find(self.workflow_key, self.variant, self.process_path, context)
        process = here.process
        dm = here.workflow.run_payload(self.variant, context) == "dm"  # a bad choice fails before all else
        context["desc_stream"] = self.stream or process.name  # type: ignore[typeddict-unknown-key]
        # Its records name the process as the graph does, whatever the operator was built with.
        self.workflow, self.workflow_task, self.process = here.graph.name, process.task, process.name
        self.workflow_version = process.task_version
        skip = here.skip(context, self.stream_values)
        if skip is not None:
            self._record_skip(context, skip)
            raise AirflowSkipException(skip.message)
        self.command = process.render_command(self.stream_values, here.variables, dm=dm)
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after the job ended (see :class:`SlurmOperator`), keeping the stream as map index."""
        context["desc_stream"] = self.stream or self.process_path.rpartition("/")[2]  # type: ignore[typeddict-unknown-key]
        return super().execute_complete(context, event)

    def _record_skip(self, context: Context, skip: Skip) -> None:
        # The renderer names the workflow, task, version and process of this operator.
        record = self._identity(context).skipped(skip.kind, skip.message, cluster=self._profile().name)
        (self.recorder or default_recorder()).record([record])

    def _finish(self, context: Context, job: FinishedJob) -> dict[str, Any]:
        job = self._read_log(context, job)  # once: the output check's record has the same timing
        summary = super()._finish(context, job)
        workflow = workflow_for(self.workflow_key)
        process = workflow.process(self.variant, self.process_path)
        if not process.checks:
            return summary
        variables = workflow.run_variables(self.variant, context)
        values = {**variables, **self.stream_values}
        requests = [
            CheckRequest(
                "0", check.kind, check.target(values), check.min_count, check.failure_message(values)
            )
            for check in process.checks
        ]
        log_path = summary.get("log_path")
        failures = run_output_checks(job.hook, job.profile.work_dir, requests, log_path=log_path)
        failed = failures.get("0")
        if not failed:
            return summary
        ti: Any = context["ti"]
        job_try = try_of_job(self._state(context), job.accounting.job_id, int(context["ti"].try_number))
        diagnosis = Diagnosis(ReasonClass.OUTPUT_CHECK, failed)
        self._record(context, job, diagnosis, summary.get("log_path"), job_try)
        summary.update(state="failed", reason=str(ReasonClass.OUTPUT_CHECK.value), message=failed)
        ti.xcom_push(key="slurm_summary", value=summary)
        raise SlurmJobFailed(
            failed,
            job_id=job.accounting.job_id,
            state=job.accounting.state.raw,
            exit_code=job.accounting.exit_code,
            reason=ReasonClass.OUTPUT_CHECK.value,
        )


class WorkflowScriptOperator(PythonOperator):
    """A script process of a workflow spec at a level that is not bundled: its callable, on the worker.

    Called with the spec's kwargs (variables and stream values filled in, ``expected_streams``
    added if the function takes it). A script that makes streams returns
    ``{"stream": ..., "map_index": ..., "feeds": {sub-task: [values]}}`` for the sub-tasks' ``streams``
    tasks. Skipped like a batch process; marked with ``mark_script_process`` (per stream) so that
    the plugin's listener records each outcome.

    :param workflow_key: the loaded workflow.
    :param variant: the variant.
    :param process_path: the process's path.
    :param stream: the stream's values.
    """

    template_fields: Sequence[str] = ()
    ui_color = "#fff2cc"

    def __init__(
        self,
        *,
        workflow_key: str,
        variant: str | None,
        process_path: str,
        stream: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("python_callable", _unset_callable)
        super().__init__(**kwargs)
        self.workflow_key = workflow_key
        self.variant = variant
        self.process_path = process_path
        # Mapped from XCom, as a batch process's stream is; its values reach the script's kwargs.
        with untrusted_fails_the_task():
            self.stream_values = trusted_stream("stream", stream or {})

    def execute(self, context: Context) -> Any:
        """Skip or call the script; return what its dependents read."""
        here = ProcessInRun.find(self.workflow_key, self.variant, self.process_path, context)
        graph, process = here.graph, here.process
        path = stream_path(self.stream_values)
        context["desc_stream"] = path or process.name  # type: ignore[typeddict-unknown-key]
        # Per stream: the listener reads this when the instance ends.
        setattr(
            self,
            ATTR,
            DescProcess(
                process=process.name,
                workflow=graph.name,
                task=process.task,
                version=process.task_version,
                stream=path,
                variant=self.variant or "",
                workflow_version=graph.version,
                spec_digest=here.workflow.spec_digest,
            ),
        )
        skip = here.skip(context, self.stream_values)
        if skip is not None:
            note_skip(self, skip.kind, skip.message)
            raise AirflowSkipException(skip.message)
        kwargs = script_kwargs(here.workflow, process, self.stream_values, here.variables)
        self.log.info("calling %s(%s)", process.callable, ", ".join(f"{k}={v!r}" for k, v in kwargs.items()))
        result = import_callable(process.callable or "")(**kwargs)
        if process.feeds:
            feeds = script_feeds(process, result)
            self.log.info("streams made: %s", ", ".join(f"{k}: {len(v)}" for k, v in feeds.items()))
            return {"stream": self.stream_values, "map_index": map_index_of(context), "feeds": feeds}
        return _jsonable(result)


def _unset_callable(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("WorkflowScriptOperator calls its spec's callable itself")


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return None
    return value


class WorkflowStreamsOperator(BaseOperator):
    """The streams of a sub-task in one DAG run, made from what its feeding script returned.

    Each stream is its parent's stream values plus its own (``{"filter": "r", "patch": "1,2"}``).
    A parent stream whose feeding script did not succeed, or for which something the sub-task
    ``depends_on`` did not succeed, makes none; the latter are *blocked* and listed in the XCom
    ``blocked_streams`` (:data:`~airflow_desc.operators.run_states.BLOCKED_STREAMS`), so that the
    sub-task counts as Skipped there for what depends on it, not as an empty sub-task's success.
    For a bundled sub-task, returns the bundles (lists of streams) that its bundle task maps over.

    :param workflow_key: the loaded workflow.
    :param variant: the variant.
    :param task_path: the sub-task's path.
    """

    template_fields: Sequence[str] = ()
    ui_color = "#e8e8e8"

    def __init__(self, *, workflow_key: str, variant: str | None, task_path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.workflow_key = workflow_key
        self.variant = variant
        self.task_path = task_path

    def execute(self, context: Context) -> Any:
        """Collect the streams (or bundles) of this run."""
        workflow = workflow_for(self.workflow_key)
        graph = workflow.graph(self.variant)
        task = workflow.task(self.variant, self.task_path)
        parent = workflow.task(self.variant, task.parent_path or "")
        feeder = parent.process(task.streams_from or "")
        runs = RunStates(context, graph)
        outputs = context["ti"].xcom_pull(task_ids=[task_id_for(feeder.path)]) or []
        streams: list[dict[str, Any]] = []
        blocked_at: list[dict[str, Any]] = []
        for output in outputs:
            if not isinstance(output, Mapping) or "feeds" not in output:
                continue
            # A feeding script's XCom (writable through the REST API) makes the streams: checked.
            field = f"XCom of {task_id_for(feeder.path)}"
            with untrusted_fails_the_task():
                parent_stream = trusted_stream(f"{field}: stream", output.get("stream") or {})
                index = trusted_map_index(f"{field}: map_index", output.get("map_index", -1))
                feeds = trusted_feeds(f"{field}: feeds", output.get("feeds") or {})
            if task.depends_on:
                states = runs.upstream(parent, task.depends_on, parent_stream, index, task.min_success)
                for name, note in runs.notes.items():
                    self.log.info("%s %s: upstream %s %s", task.path, stream_path(parent_stream), name, note)
                blocked = {name: runs.notes.get(name, s) for name, s in states.items() if s != "success"}
                if blocked:
                    self.log.info(
                        "no streams for %s: %s", stream_path(parent_stream) or "the run",
                        ", ".join(f"{n} {s}" for n, s in blocked.items()),
                    )  # fmt: skip
                    blocked_at.append(parent_stream)
                    continue
            for value in feeds.get(task.name, []):
                stream = dict(parent_stream)
                if task.stream_var:
                    stream[task.stream_var] = value
                streams.append(stream)
        self.log.info("%s: %d streams", task.path, len(streams))
        # Always pushed (an empty list too): a cleared and rerun streams task replaces what it said.
        context["ti"].xcom_push(key=BLOCKED_STREAMS, value=blocked_at)
        if task.bundling.state == "bundle":
            size = self._fitted_size(task, graph)
            bundles = task.split_streams(streams, size)
            self.log.info("%d bundles of up to %s streams", len(bundles), size)
            return bundles
        return streams

    def _fitted_size(self, task: TaskNode, graph: WorkflowGraph) -> int | None:
        """Return the streams per bundle: the build's, or fitted again from the history's run times.

        Only for a size the walltime requests lowered (:class:`~airflow_desc.workflow.graph.BundleFit`);
        a history that cannot be read leaves the build's size.
        """
        lowered, fit = task.bundling.bundle_size, task.bundling.fit
        if fit is None or lowered is None:
            return lowered
        names = {name for name, _, _ in fit.work}
        workflow = None if graph.settings.run_times_from == "any" else graph.name
        try:
            run_times = typical_elapsed_of(names, workflow=workflow)
        except Exception as exc:  # the history is down or unreadable: the bundles run all the same
            self.log.warning("no run times from the history (%s): bundles of %d streams", exc, lowered)
            return lowered
        size, why = fit.fitted_size(lowered, run_times)
        self.log.info("%s: %d streams per bundle: %s", task.path, size, why)
        return size
