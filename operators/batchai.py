"""Operators: thin shells over the provider's Service (clusters, jobs, output files, uploads).

Results go to XCom as Batch AI's camelCase JSON with secrets already removed by the Service.
A submitted job's identity (name and output segment, its uuid) is kept in Airflow's task state
store, so a retry, or the next try after a worker was killed, re-attaches to exactly that job;
a task that was cleared starts a new one. Where there is no state store, the job is named after
the task (or ``job_name``), and a retry finds it by that name.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from airflow.sdk import BaseOperator, BaseOperatorLink, Context
from airflow.sdk.exceptions import AirflowException
from airflow.sdk.execution_time.context import NEVER_EXPIRE
from airflow.sdk.log import mask_secret

from airflow_batchai.data import OutputFile
from airflow_batchai.data.upload import upload_batch
from airflow_batchai.errors import TRANSIENT_CODES, BatchAIError
from airflow_batchai.hooks.batchai import BatchAIHook, settles
from airflow_batchai.lineage import lineage_of
from airflow_batchai.logtail import JobLogFollower, log_job_lines
from airflow_batchai.reading.readmodels import JobView
from airflow_batchai.records import AllocationState, JobOrigin
from airflow_batchai.secretfields import CLUSTER_SECRET_FIELDS, JOB_SECRET_FIELDS, RenderedSpec, secret_values
from airflow_batchai.service import DEFAULT_EXPERIMENT, DEFAULT_WORKSPACE, Service
from airflow_batchai.settings import WAIT_POLL_S
from airflow_batchai.spec import ClusterSpec, JobSpec, load_cluster_spec, load_job_spec
from airflow_batchai.taskjobs import JobWait, WaitFailed, failed_earlier, generation_name, job_name_for, reattach, state_said
from airflow_batchai.ui_links import job_page_path

P = ParamSpec("P")
T = TypeVar("T")

POLL_INTERVAL_S = WAIT_POLL_S  # one record read each: a job's end is seen within a second
STORAGE_RETRY_S = 1.0  # between reads while storage is down
JOB_STATE_KEY = "batchai_job"  # the task state store's entry: the job this task run submitted
JOB_XCOM_KEY = "batchai_job"  # the job's address (names only) for the extra link


def _spec_source(spec: Any) -> Any:
    """A str is a path when it names a file, else JSON text (a rendered ``.json`` template)."""
    if isinstance(spec, str) and not spec.lstrip().startswith("{") and Path(spec).is_file():
        return Path(spec)
    return spec


class BatchAIJobOutputLink(BaseOperatorLink):
    """The job's page in the Batch AI view of the Airflow UI: its state, times and stdout/stderr files.

    Built from the job's names that the task pushed at submit (no file path, no token); Airflow 3
    has the worker evaluate it when the task ends and shows it on the task's Details tab.
    """

    name = "Batch AI job"

    def get_link(self, operator: BaseOperator, *, ti_key: Any) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        job = XCom.get_value(key=JOB_XCOM_KEY, ti_key=ti_key)
        if not isinstance(job, dict) or not job.get("name"):
            return ""
        return _base_url() + job_page_path(job.get("workspace", DEFAULT_WORKSPACE), job.get("experiment", DEFAULT_EXPERIMENT), job["name"])


def _base_url() -> str:
    """``[api] base_url`` without its trailing slash; empty (a path on the same server) when unset."""
    from airflow.configuration import conf

    return (conf.get("api", "base_url", fallback="") or "").rstrip("/")


class BatchAIBaseOperator(BaseOperator):
    def __init__(self, *, batchai_conn_id: str = BatchAIHook.default_conn_name, workspace: str = DEFAULT_WORKSPACE, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batchai_conn_id = batchai_conn_id
        self.workspace = workspace

    @cached_property
    def hook(self) -> BatchAIHook:
        return BatchAIHook(self.batchai_conn_id)

    @property
    def service(self) -> Service:
        return self.hook.service

    def call(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a Service call; a BatchAIError fails the task with its code and message, no traceback noise."""
        try:
            return function(*args, **kwargs)
        except BatchAIError as error:
            raise AirflowException(f"{error.code}: {error.message}") from error

    def poll(self, deadline: float | None, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``call`` for a wait's reads: storage that is down (each call ends within its own deadline) is
        waited through until the wait's ``deadline``; the job runs on without it."""
        while True:
            try:
                return function(*args, **kwargs)
            except BatchAIError as error:
                if error.code not in TRANSIENT_CODES or (deadline is not None and time.monotonic() > deadline):
                    raise AirflowException(f"{error.code}: {error.message}") from error
                self.log.warning("%s (retrying)", error.message)
                time.sleep(STORAGE_RETRY_S)


class BatchAICreateClusterOperator(BatchAIBaseOperator):
    """Create a cluster; an existing one with the same spec is reused, a different spec fails unless ``update``."""

    template_fields: Sequence[str] = ("cluster_name", "spec", "workspace", "storage_account_name")
    template_ext: Sequence[str] = (".json",)
    template_fields_renderers = {"spec": "json"}

    def __init__(
        self,
        *,
        cluster_name: str,
        spec: dict[str, Any] | ClusterSpec | str | None = None,
        update: bool = False,
        storage_account_name: str | None = None,
        storage_account_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.cluster_name = cluster_name
        self.spec: Mapping[str, Any] | ClusterSpec | str | None = spec
        self.update = update
        self.storage_account_name = storage_account_name
        self.storage_account_key = storage_account_key

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        """A cluster's secrets (setup task secrets, mount keys, the admin password) are masked as soon as they are rendered."""
        super().render_template_fields(context, jinja_env)
        mask_spec_secrets(self.spec, CLUSTER_SECRET_FIELDS, self.storage_account_key)
        if isinstance(self.spec, dict):
            self.spec = RenderedSpec(self.spec, CLUSTER_SECRET_FIELDS)

    @settles
    def execute(self, context: Context) -> dict[str, Any]:
        """Storage placeholders (``<AZURE_BATCHAI_STORAGE_ACCOUNT>``, ``<AZURE_BATCHAI_STORAGE_KEY>``) are
        filled from the operator's arguments, else the connection's storage account, as submit does."""
        if isinstance(self.spec, ClusterSpec):
            spec = self.spec
        else:
            account = self.storage_account_name or self.service.settings.default_storage_account
            spec = self.call(
                load_cluster_spec, _spec_source(self.spec or {}), storage_account_name=account, storage_account_key=self.storage_account_key
            )
        view = self.call(self.service.create_cluster, self.cluster_name, spec, self.workspace, update_existing=self.update)
        self.log.info("cluster %s: %s, %d node(s)", self.cluster_name, view.allocation_state.value, view.current_node_count)
        return view.to_json()


def mask_spec_secrets(spec: Any, fields: Any, *extra: str | None) -> None:
    """Mask a rendered spec's secret values (secretfields.py says where they are) before Airflow stores
    the rendered fields or logs a line of them."""
    for value in [*secret_values(spec, fields), *filter(None, extra)]:
        mask_secret(value)


class BatchAIScaleClusterOperator(BatchAIBaseOperator):
    """Resize to ``target_node_count`` (0 = scale to zero) and wait until the cluster is steady."""

    template_fields: Sequence[str] = ("cluster_name", "target_node_count", "workspace")

    def __init__(
        self,
        *,
        cluster_name: str,
        target_node_count: int,
        wait: bool = True,
        poll_interval: float = POLL_INTERVAL_S,
        timeout: float = 3600,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.cluster_name = cluster_name
        self.target_node_count = target_node_count
        self.wait = wait
        self.poll_interval = poll_interval
        self.timeout = timeout

    @settles
    def execute(self, context: Context) -> dict[str, Any]:
        view = self.call(self.service.resize_cluster, self.cluster_name, int(self.target_node_count), self.workspace)
        deadline = time.monotonic() + self.timeout
        while self.wait and view.allocation_state != AllocationState.STEADY:
            if time.monotonic() > deadline:
                raise AirflowException(f"cluster {self.cluster_name} still {view.allocation_state.value} after {self.timeout} s")
            time.sleep(self.poll_interval)
            view = self.poll(deadline, self.service.show_cluster, self.cluster_name, self.workspace)
        self.log.info(
            "cluster %s: %s with %d node(s) %s",
            self.cluster_name,
            view.allocation_state.value,
            view.current_node_count,
            view.node_state_counts.to_json(),
        )
        return view.to_json()


class BatchAIDeleteClusterOperator(BatchAIBaseOperator):
    template_fields: Sequence[str] = ("cluster_name", "workspace")

    def __init__(self, *, cluster_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cluster_name = cluster_name

    @settles
    def execute(self, context: Context) -> None:
        self.call(self.service.delete_cluster, self.cluster_name, self.workspace)
        self.log.info("cluster %s deleted", self.cluster_name)


class BatchAISubmitJobOperator(BatchAIBaseOperator):
    """Submit a Batch AI job spec and (by default) wait for it, copying its stdout/stderr into the task log
    (``follow_logs``, also while deferred).

    ``spec`` is a dict (the job.json content, with or without the ``properties`` wrapper), a
    JobSpec, or a path to a job.json (templated: paths ending in .json are read and rendered).
    A failed job fails the task with the job's error code, exit code and the last stderr lines.
    """

    template_fields: Sequence[str] = ("cluster_name", "job_name", "experiment", "workspace", "spec", "storage_account_name")
    template_ext: Sequence[str] = (".json",)
    template_fields_renderers = {"spec": "json"}
    operator_extra_links = (BatchAIJobOutputLink(),)

    def __init__(
        self,
        *,
        cluster_name: str,
        spec: dict[str, Any] | JobSpec | str,
        job_name: str | None = None,
        experiment: str = DEFAULT_EXPERIMENT,
        wait_for_completion: bool = True,
        deferrable: bool = False,
        poll_interval: float = POLL_INTERVAL_S,
        timeout: float | None = None,
        storage_account_name: str | None = None,
        storage_account_key: str | None = None,
        follow_logs: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.follow_logs = follow_logs  # off: no listing of the job's files per poll (1,000 deferred tasks cost nothing but their waits)
        self.cluster_name = cluster_name
        self.spec: Mapping[str, Any] | JobSpec | str = spec
        self.job_name = job_name
        self.experiment = experiment
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.storage_account_name = storage_account_name
        self.storage_account_key = storage_account_key
        self.submitted: str | None = None

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        """Mask secret values as soon as they are rendered, before Airflow stores the rendered fields."""
        super().render_template_fields(context, jinja_env)
        mask_spec_secrets(self.spec, JOB_SECRET_FIELDS, self.storage_account_key)
        if isinstance(self.spec, dict):
            self.spec = RenderedSpec(self.spec, JOB_SECRET_FIELDS)

    def resolved_job_name(self, context: Context, generation: int = 0) -> str:
        """The job's name for this task run; ``generation`` counts the times the task was cleared since
        its first job, so a cleared task's new job does not take the name of the one it replaces."""
        if self.job_name:
            base = self.job_name
        else:
            map_index = getattr(context["ti"], "map_index", -1)
            base = job_name_for(context["dag"].dag_id, self.task_id, context["run_id"], map_index)
        return generation_name(base, generation)

    def load_spec(self) -> JobSpec:
        if isinstance(self.spec, JobSpec):
            return self.spec
        account = self.storage_account_name or self.service.settings.default_storage_account
        return self.call(
            load_job_spec,
            _spec_source(self.spec),
            cluster=self.cluster_name,
            storage_account_name=account,
            storage_account_key=self.storage_account_key,
        )

    @settles
    def execute(self, context: Context) -> dict[str, Any]:
        store = context.get("task_state_store")
        saved, generation = self.saved_job(context, store)
        name = saved["name"] if saved else self.resolved_job_name(context, generation)
        spec = self.load_spec()
        ti = context["ti"]
        index = getattr(ti, "map_index", None)
        origin = JobOrigin(
            dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, map_index=-1 if index is None else index, try_number=ti.try_number
        )
        view = self.submit_or_attach(name, spec, ti.try_number, saved, origin)
        self.submitted = name
        segment = view.job_output_directory_path_segment
        if store is not None and (saved is None or saved.get("segment") != segment):
            store.set(
                JOB_STATE_KEY,
                {
                    "name": name,
                    "experiment": self.experiment,
                    "workspace": self.workspace,
                    "segment": segment,
                    "uuid": segment.rsplit("/", 1)[-1],  # the segment ends with it
                    "maxTries": context["ti"].max_tries,
                    "generation": generation,
                },
                retention=NEVER_EXPIRE,  # kept as long as Airflow keeps the run: a retry days later still finds its job
            )
        context["ti"].xcom_push(key=JOB_XCOM_KEY, value={"name": name, "experiment": self.experiment, "workspace": self.workspace})
        if not self.wait_for_completion:
            return view.to_json()
        if self.deferrable and not view.finished:
            from airflow_batchai.triggers.batchai import BatchAIJobTrigger

            self.defer(
                trigger=BatchAIJobTrigger(
                    job_name=name,
                    experiment=self.experiment,
                    workspace=self.workspace,
                    batchai_conn_id=self.batchai_conn_id,
                    poll_interval=self.poll_interval,
                    end_time=None if self.timeout is None else time.time() + self.timeout,
                    terminate_on_kill=True,
                    follow_logs=self.follow_logs,
                ),
                method_name="execute_complete",
            )
        return self.follow(name)

    def saved_job(self, context: Context, store: Any) -> tuple[dict[str, Any] | None, int]:
        """(the job this task run submitted, to re-attach to; the generation of a new job's name): taskjobs.reattach."""
        saved = store.get(JOB_STATE_KEY) if store is not None else None
        if saved is None:
            return None, 0
        decision = self.call(reattach, saved, context["ti"].max_tries, self.service.show_job, self.experiment, self.workspace)
        if decision.reason:
            self.log.warning("%s", decision.reason)
        if decision.saved is not None:
            self.experiment = decision.saved.get("experiment", self.experiment)
            self.workspace = decision.saved.get("workspace", self.workspace)
        return decision.saved, decision.generation

    def submit_or_attach(
        self, name: str, spec: JobSpec, try_number: int, saved: dict[str, Any] | None = None, origin: JobOrigin | None = None
    ) -> JobView:
        before = self.call(failed_earlier, self.service, name, self.experiment, self.workspace, try_number)
        view = self.call(self.service.create_job, self.cluster_name, name, spec, self.experiment, self.workspace, origin=origin)
        if before is not None:
            how = "its identity in the task state store" if saved else "its name"
            self.log.info("re-attached to job %s (%s), submitted by an earlier try (found by %s)", name, view.execution_state.value, how)
        else:
            self.log.info("submitted job %s to cluster %s: %s", name, self.cluster_name, view.execution_state.value)
        return view

    def follow(self, name: str, offsets: dict[str, int] | None = None) -> dict[str, Any]:
        """Poll until the job ends, copying new stdout/stderr lines into the task log (from ``offsets``:
        what a trigger already copied is not copied again): taskjobs.JobWait, as the sensor waits."""
        follower = JobLogFollower(self.service, name, self.experiment, self.workspace, offsets) if self.follow_logs else None
        wait = JobWait(self.service, name, self.experiment, self.workspace, follower=follower)
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            view, lines = self.poll(deadline, wait.look, refresh=True)
            log_job_lines(lines)
            if view.finished:
                try:
                    wait.over(view)
                except WaitFailed as failure:
                    raise AirflowException(str(failure)) from None
                self.log.info("job %s succeeded", name)
                return view.to_json()
            if deadline is not None and time.monotonic() > deadline:
                raise AirflowException(f"job {name} still {view.execution_state.value} after {self.timeout} s")
            time.sleep(self.poll_interval)

    @settles
    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger: the state is re-read from the Service; the event only says which job
        it was and how far the trigger copied its output into the log."""
        event = event or {}
        name = event.get("job_name")
        if name:  # the trigger says which job it waited for, and where: no other read is needed
            self.experiment = event.get("experiment") or self.experiment
            self.workspace = event.get("workspace") or self.workspace
        else:  # an event from an older trigger: the job this task run submitted
            saved, _ = self.saved_job(context, context.get("task_state_store"))
            name = (saved or {}).get("name") or self.resolved_job_name(context)
        if event.get("status") == "timeout":
            raise AirflowException(f"job {name} did not finish before its timeout")
        if event.get("status") == "error":
            raise AirflowException(f"waiting for job {name} failed: {event.get('code')}: {event.get('message')}")
        self.submitted = name
        offsets = event.get("log_offsets")
        return self.follow(name, offsets if isinstance(offsets, dict) else None)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the containers and shares the job mounted (inputs) and its output folders
        there (outputs). Imported here, so the provider needs no OpenLineage where it is not used."""
        from airflow.providers.common.compat.openlineage.facet import Dataset
        from airflow.providers.openlineage.extractors import OperatorLineage

        if not self.submitted:
            return OperatorLineage()
        inputs, outputs = lineage_of(self.service.store, self.workspace, self.experiment, self.submitted)
        return OperatorLineage(
            inputs=[Dataset(namespace=d.namespace, name=d.name) for d in inputs],
            outputs=[Dataset(namespace=d.namespace, name=d.name) for d in outputs],
        )

    def on_kill(self) -> None:
        if self.submitted:
            self.log.info("task killed: terminating job %s", self.submitted)
            self.service.terminate_job(self.submitted, self.experiment, self.workspace)


class BatchAITerminateJobOperator(BatchAIBaseOperator):
    template_fields: Sequence[str] = ("job_name", "experiment", "workspace")

    def __init__(self, *, job_name: str, experiment: str = DEFAULT_EXPERIMENT, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job_name = job_name
        self.experiment = experiment

    @settles
    def execute(self, context: Context) -> dict[str, Any]:
        view = self.call(self.service.terminate_job, self.job_name, self.experiment, self.workspace)
        self.log.info("%s", state_said(self.job_name, view.execution_state.value))
        return view.to_json()


class BatchAIListOutputFilesOperator(BatchAIBaseOperator):
    """``az batchai job file list``: Batch AI File objects, for XCom without their SAS.

    A SAS in XCom would sit in the metadata DB long after it should be secret; the returned
    ``downloadUrl`` is therefore the blob's address without its token. A task that downloads
    asks the hook (``BatchAIHook().service.list_output_files``) for signed URLs when it needs
    them.
    """

    template_fields: Sequence[str] = ("job_name", "experiment", "workspace", "output_directory_id", "path")

    def __init__(
        self,
        *,
        job_name: str,
        experiment: str = DEFAULT_EXPERIMENT,
        output_directory_id: str = "stdouterr",
        path: str = ".",
        link_expiry_minutes: int = 60,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job_name = job_name
        self.experiment = experiment
        self.output_directory_id = output_directory_id
        self.path = path
        self.link_expiry_minutes = link_expiry_minutes

    @settles
    def execute(self, context: Context) -> list[dict[str, Any]]:
        files = self.call(
            self.service.list_output_files,
            self.job_name,
            self.experiment,
            self.workspace,
            self.output_directory_id,
            self.path,
            self.link_expiry_minutes,
        )
        for info in files:
            self.log.info("%-9s %12s  %s", info.file_type, "" if info.content_length is None else info.content_length, info.name)
        return [unsigned(info).to_json() for info in files]


def unsigned(info: OutputFile) -> OutputFile:
    url = info.download_url
    if not url or "?" not in url:
        return info
    address, token = url.split("?", 1)
    mask_secret(token)
    return info.model_copy(update={"download_url": address})


class BatchAIUploadOperator(BatchAIBaseOperator):
    """``az storage blob upload-batch`` (or ``file upload-batch``) parity into the connection's storage.

    ``destination_type`` says whether ``destination`` names a blob container or a file share,
    as the job's ``azureBlobFileSystems`` or ``azureFileShares`` will mount it.
    """

    template_fields: Sequence[str] = ("source", "destination", "destination_path", "pattern", "storage_account_name")

    def __init__(
        self,
        *,
        source: str,
        destination: str,
        destination_path: str = "",
        pattern: str = "*",
        storage_account_name: str | None = None,
        overwrite: bool = False,
        max_workers: int = 8,
        destination_type: str = "blob",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if destination_type not in ("blob", "file"):
            raise ValueError(f"destination_type must be 'blob' or 'file', got {destination_type!r}")
        self.destination_type = destination_type
        self.source = source
        self.destination = destination
        self.destination_path = destination_path
        self.pattern = pattern
        self.storage_account_name = storage_account_name
        self.overwrite = overwrite
        self.max_workers = max_workers

    @settles
    def execute(self, context: Context) -> dict[str, Any]:
        account = self.storage_account_name or self.service.settings.default_storage_account
        report = self.call(
            upload_batch,
            self.service.data,
            source=self.source,
            account=account,
            container=self.destination,
            destination_path=self.destination_path,
            pattern=self.pattern,
            overwrite=self.overwrite,
            max_workers=self.max_workers,
            kind=self.destination_type,
            on_progress=lambda line: self.log.info("%s", line),
        )
        return report
