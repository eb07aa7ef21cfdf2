"""The job runtime every worker service shares: submit returns at once, watch streams progress, get, cancel.

A job is one stage of one run, id "<run_id>/<stage>". Its state is written to the bucket
(`runs/<run_id>/<stage>/job.json`), so a restarted service or orchestrator finds where things stand.
Work runs in a worker thread and receives a `RunContext` (see progress.JobContext).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from meshai.v1 import jobs_pb2
from meshai_common.errors import Cancelled, InvalidInput, MeshAIError, NotFound
from meshai_common.progress import Progress
from meshai_common.store import ArtifactStore

log = logging.getLogger(__name__)

State = jobs_pb2.JobState
TERMINAL = {State.JOB_STATE_SUCCEEDED, State.JOB_STATE_FAILED, State.JOB_STATE_CANCELLED}
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Kept when a stage fails, so a resubmitted job can resume instead of starting over.
KEEP_ON_FAILURE = ("job.json", "checkpoints/")
PERSIST_EVERY_S = 10.0


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def check_run_id(run_id: str) -> str:
    if not RUN_ID_RE.match(run_id):
        raise InvalidInput(f"invalid run id {run_id!r}: use 1-64 letters, digits, '.', '_' or '-'")
    return run_id


def job_key(run_id: str, stage: str) -> str:
    return f"runs/{run_id}/{stage}/job.json"


def split_job_id(job_id: str) -> tuple[str, str]:
    run_id, sep, stage = job_id.partition("/")
    if not sep or not stage or "/" in stage:
        raise InvalidInput(f"invalid job id {job_id!r}: expected '<run_id>/<stage>'")
    return check_run_id(run_id), stage


WorkFn = Callable[["RunContext"], "tuple[Message, str]"]


@dataclass
class _Entry:
    job: jobs_pb2.Job
    work: WorkFn
    cancel: threading.Event = field(default_factory=threading.Event)
    events: deque = field(default_factory=lambda: deque(maxlen=256))
    seq: int = 0
    last_persist: float = 0.0


class RunContext:
    """What stage code sees while it runs: scratch space, the store, progress reporting, cancellation."""

    def __init__(self, runtime: JobRuntime, entry: _Entry, workdir: Path) -> None:
        self._runtime = runtime
        self._entry = entry
        self.workdir = workdir
        self.store = runtime.store
        self.run_id = entry.job.run_id
        self.job_id = entry.job.job_id
        self.stage = entry.job.stage

    def report(self, progress: Progress) -> None:
        self._runtime._progress(self._entry, progress)

    def check_cancelled(self) -> None:
        if self._entry.cancel.is_set():
            raise Cancelled(f"job {self.job_id} cancelled")

    @property
    def prefix(self) -> str:
        return f"runs/{self.run_id}/{self.stage}"


class JobRuntime:
    def __init__(self, stage: str, store: ArtifactStore, workdir_root: Path, workers: int = 1) -> None:
        self.stage = stage
        self.store = store
        self.workdir_root = Path(workdir_root)
        self._jobs: dict[str, _Entry] = {}
        self._lock = threading.Condition()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"{stage}-job")
        self._closing = False

    # -- verbs ----------------------------------------------------------------------------------------

    def submit(self, run_id: str, work: WorkFn) -> jobs_pb2.JobRef:
        """Queue `work` for this stage of `run_id`; idempotent while the job runs or after it succeeded."""
        run_id = check_run_id(run_id or new_run_id())
        job_id = f"{run_id}/{self.stage}"
        with self._lock:
            if self._closing:
                raise MeshAIError("service is shutting down")
            existing = self._jobs.get(job_id)
            if existing and existing.job.state not in {State.JOB_STATE_FAILED, State.JOB_STATE_CANCELLED}:
                return jobs_pb2.JobRef(job_id=job_id, run_id=run_id)
            if not existing:
                stored = self._load(run_id)
                if stored is not None and stored.state == State.JOB_STATE_SUCCEEDED:
                    return jobs_pb2.JobRef(job_id=job_id, run_id=run_id)
            job = jobs_pb2.Job(
                job_id=job_id, run_id=run_id, stage=self.stage, state=State.JOB_STATE_QUEUED,
                created_unix=time.time(),
            )
            job.last_event.CopyFrom(jobs_pb2.JobEvent(job_id=job_id, state=job.state, time_unix=time.time(),
                                                     message="queued"))
            entry = _Entry(job=job, work=work)
            self._jobs[job_id] = entry
        self._persist(entry)
        self._pool.submit(self._run, entry)
        log.info("job submitted", extra={"job_id": job_id})
        return jobs_pb2.JobRef(job_id=job_id, run_id=run_id)

    def get(self, job_id: str) -> jobs_pb2.Job:
        run_id, stage = split_job_id(job_id)
        self._check_stage(stage, job_id)
        with self._lock:
            entry = self._jobs.get(job_id)
            if entry:
                return _copy(entry.job)
        stored = self._load(run_id)
        if stored is None:
            raise NotFound(f"unknown job {job_id!r}: run {run_id!r} has no {stage} job")
        if stored.state not in TERMINAL:
            # Written by an earlier process of this service that died mid-job.
            stored.state = State.JOB_STATE_FAILED
            stored.error = f"interrupted: the {stage} service restarted while the job ran; submit again to resume"
            stored.last_event.state = stored.state
        return stored

    def cancel(self, job_id: str) -> jobs_pb2.Job:
        self.get(job_id)  # NotFound / InvalidInput for unknown ids
        with self._lock:
            entry = self._jobs.get(job_id)
            if entry and entry.job.state not in TERMINAL:
                entry.cancel.set()
                if entry.job.state == State.JOB_STATE_QUEUED:
                    self._finish(entry, State.JOB_STATE_CANCELLED, "cancelled before it started")
        return self.get(job_id)

    def watch(self, job_id: str, is_active: Callable[[], bool] = lambda: True) -> Iterator[jobs_pb2.JobEvent]:
        """Yield the latest event, then every new one, until the job ends or the watcher goes away."""
        job = self.get(job_id)
        with self._lock:
            entry = self._jobs.get(job_id)
        if entry is None:
            yield _final_event(job)
            return
        seen = -1
        while is_active():
            with self._lock:
                if entry.seq == seen and entry.job.state not in TERMINAL:
                    self._lock.wait(timeout=1.0)
                pending = [e for s, e in entry.events if s > seen] if entry.seq != seen else []
                if seen < 0 and not pending:
                    pending = [_copy_event(entry.job.last_event)]
                seen = entry.seq
                done = entry.job.state in TERMINAL
                final = _final_event(entry.job) if done else None
            yield from pending
            if done:
                if not pending or pending[-1].state not in TERMINAL:
                    yield final
                return

    def shutdown(self, timeout: float = 30.0) -> None:
        """Cancel running and queued jobs, then wait up to `timeout` for workers to stop."""
        with self._lock:
            self._closing = True
            for entry in self._jobs.values():
                if entry.job.state not in TERMINAL:
                    entry.cancel.set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if all(e.job.state in TERMINAL for e in self._jobs.values()):
                    break
            time.sleep(0.1)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- internals ------------------------------------------------------------------------------------

    def _check_stage(self, stage: str, job_id: str) -> None:
        if stage != self.stage:
            raise NotFound(f"unknown job {job_id!r}: this service runs {self.stage!r} jobs, not {stage!r}")

    def _run(self, entry: _Entry) -> None:
        job = entry.job
        if entry.cancel.is_set():
            return
        workdir = self.workdir_root / job.run_id / job.stage
        workdir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            job.state = State.JOB_STATE_RUNNING
        self._progress(entry, Progress(message="started"), force=True)
        started = time.monotonic()
        try:
            ctx = RunContext(self, entry, workdir)
            result, manifest = entry.work(ctx)
            ctx.check_cancelled()
            with self._lock:
                getattr(job, self.stage).CopyFrom(result)
                job.manifest_key = manifest
            self._finish(entry, State.JOB_STATE_SUCCEEDED, f"done in {time.monotonic() - started:.1f}s")
        except Cancelled:
            self._cleanup_outputs(job)
            self._finish(entry, State.JOB_STATE_CANCELLED, "cancelled")
        except MeshAIError as exc:
            log.warning("job failed", extra={"job_id": job.job_id, "error": str(exc)})
            self._cleanup_outputs(job)
            self._finish(entry, State.JOB_STATE_FAILED, str(exc), error=str(exc))
        except Exception as exc:
            log.error("job crashed", extra={"job_id": job.job_id, "trace": traceback.format_exc()})
            self._cleanup_outputs(job)
            msg = f"internal error in {self.stage}: {type(exc).__name__}: {exc}".splitlines()[0][:500]
            self._finish(entry, State.JOB_STATE_FAILED, msg, error=msg)
        finally:
            if not os.environ.get("MESHAI_KEEP_WORKDIR"):
                shutil.rmtree(workdir, ignore_errors=True)

    def _progress(self, entry: _Entry, p: Progress, force: bool = False) -> None:
        event = jobs_pb2.JobEvent(
            job_id=entry.job.job_id, state=entry.job.state, step=p.step, total=p.total, message=p.message,
            time_unix=time.time(),
        )
        for name in ("loss", "tokens_per_s", "eta_s"):
            value = getattr(p, name)
            if value is not None:
                setattr(event, name, float(value))
        for k, v in p.metrics.items():
            event.metrics[k] = float(v)
        with self._lock:
            entry.job.last_event.CopyFrom(event)
            due = force or time.monotonic() - entry.last_persist > PERSIST_EVERY_S
        # State changes reach the bucket before watchers hear of them: whoever reacts to "succeeded"
        # (the orchestrator, a restarted service) must find it stored.
        if force:
            self._persist(entry)
        with self._lock:
            entry.seq += 1
            entry.events.append((entry.seq, event))
            self._lock.notify_all()
        if due and not force:
            self._persist(entry)

    def _finish(self, entry: _Entry, state: int, message: str, error: str = "") -> None:
        with self._lock:
            entry.job.state = state
            entry.job.error = error
            entry.job.finished_unix = time.time()
        self._progress(entry, Progress(message=message), force=True)
        log.info("job finished", extra={"job_id": entry.job.job_id, "state": State.Name(state)})

    def _persist(self, entry: _Entry) -> None:
        with self._lock:
            snapshot = json_format.MessageToDict(entry.job, preserving_proto_field_name=True)
            entry.last_persist = time.monotonic()
        try:
            self.store.put_json(snapshot, job_key(entry.job.run_id, entry.job.stage))
        except MeshAIError as exc:  # progress must not kill the job; the next write retries
            log.warning("could not persist job state", extra={"job_id": entry.job.job_id, "error": str(exc)})

    def _load(self, run_id: str) -> jobs_pb2.Job | None:
        key = job_key(run_id, self.stage)
        try:
            data: dict[str, Any] = self.store.get_json(key)
        except NotFound:
            return None
        return json_format.ParseDict(data, jobs_pb2.Job(), ignore_unknown_fields=True)

    def _cleanup_outputs(self, job: jobs_pb2.Job) -> None:
        """Remove what a failed stage published, so no consumer can mistake it for a result."""
        prefix = f"runs/{job.run_id}/{job.stage}/"
        try:
            for key in self.store.list(prefix):
                rel = key[len(prefix) :]
                if not any(rel == k or rel.startswith(k) for k in KEEP_ON_FAILURE):
                    self.store._remove_quietly(key)
        except MeshAIError as exc:
            log.warning("cleanup after failure incomplete", extra={"job_id": job.job_id, "error": str(exc)})


def _copy(job: jobs_pb2.Job) -> jobs_pb2.Job:
    out = jobs_pb2.Job()
    out.CopyFrom(job)
    return out


def _copy_event(event: jobs_pb2.JobEvent) -> jobs_pb2.JobEvent:
    out = jobs_pb2.JobEvent()
    out.CopyFrom(event)
    return out


def _final_event(job: jobs_pb2.Job) -> jobs_pb2.JobEvent:
    event = _copy_event(job.last_event)
    event.state = job.state
    if job.error:
        event.message = job.error
    return event


class JobServicerMixin:
    """Watch/Get/Cancel for any worker servicer; the service adds its own Submit."""

    def __init__(self, runtime: JobRuntime) -> None:
        self.runtime = runtime

    def Watch(self, request: jobs_pb2.WatchRequest, context: Any) -> Iterator[jobs_pb2.JobEvent]:  # noqa: N802
        yield from self.runtime.watch(request.job_id, context.is_active)

    def Get(self, request: jobs_pb2.GetJobRequest, context: Any) -> jobs_pb2.Job:  # noqa: N802
        return self.runtime.get(request.job_id)

    def Cancel(self, request: jobs_pb2.CancelJobRequest, context: Any) -> jobs_pb2.Job:  # noqa: N802
        return self.runtime.cancel(request.job_id)


def job_service(stage: str, servicer: Callable[[JobRuntime], Any], add_to_server: Callable[[Any, Any], None],
                service_descriptor: Any, workers: int = 1) -> Callable[[ArtifactStore, str], Any]:
    """The `build(store, workdir)` that grpc_server.run_service expects, for a worker service of one stage."""

    def build(store: ArtifactStore, workdir: str):
        runtime = JobRuntime(stage, store, Path(workdir), workers=workers)

        def register(server: Any) -> list[str]:
            add_to_server(servicer(runtime), server)
            return [service_descriptor.full_name]

        return register, runtime.shutdown

    return build
