"""The shared job runtime with a real bucket: submit/watch/get/cancel, persistence, failure cleanup."""

from __future__ import annotations

import threading
import time

import pytest

from meshai.v1 import jobs_pb2
from meshai_common.errors import InvalidInput, NotFound
from meshai_common.jobs import JobRuntime, job_key
from meshai_common.progress import Progress

State = jobs_pb2.JobState


def _ok_work(ctx):
    for i in range(3):
        ctx.check_cancelled()
        ctx.report(Progress(step=i + 1, total=3, message=f"step {i + 1}", loss=1.0 / (i + 1)))
    obj = ctx.store.put_json({"ok": True}, f"{ctx.prefix}/out.json")
    return jobs_pb2.DataResult(metadata=jobs_pb2.ObjectRef(key=obj.key, sha256=obj.sha256, size=obj.size)), "m"


def _wait(rt, job_id, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = rt.get(job_id)
        if job.state in (State.JOB_STATE_SUCCEEDED, State.JOB_STATE_FAILED, State.JOB_STATE_CANCELLED):
            return job
        time.sleep(0.05)
    raise AssertionError("job did not finish")


def test_submit_watch_get(store, tmp_path):
    rt = JobRuntime("data", store, tmp_path)
    ref = rt.submit("run-1", _ok_work)
    assert ref.job_id == "run-1/data"
    events = list(rt.watch(ref.job_id))
    assert events[-1].state == State.JOB_STATE_SUCCEEDED
    assert any(e.HasField("loss") for e in events)
    job = rt.get(ref.job_id)
    assert job.data.metadata.key == "runs/run-1/data/out.json"
    # Submitting a succeeded job again returns it rather than running it twice.
    assert rt.submit("run-1", _ok_work).job_id == ref.job_id
    # State survives the process: a new runtime reads it from the bucket.
    fresh = JobRuntime("data", store, tmp_path)
    assert fresh.get(ref.job_id).state == State.JOB_STATE_SUCCEEDED
    assert [e.state for e in fresh.watch(ref.job_id)] == [State.JOB_STATE_SUCCEEDED]
    rt.shutdown()


def test_failure_removes_partial_outputs_but_keeps_checkpoints(store, tmp_path):
    def failing(ctx):
        ctx.store.put_json({"half": True}, f"{ctx.prefix}/train.jsonl")
        ctx.store.put_json({"step": 3}, f"{ctx.prefix}/checkpoints/step-3.json")
        raise InvalidInput("archive.json record 7: field 'message' is not a string")

    rt = JobRuntime("train", store, tmp_path)
    job = _wait(rt, rt.submit("run-2", failing).job_id)
    assert job.state == State.JOB_STATE_FAILED
    assert job.error == "archive.json record 7: field 'message' is not a string"
    assert not store.exists("runs/run-2/train/train.jsonl")
    assert store.exists("runs/run-2/train/checkpoints/step-3.json")
    assert store.exists(job_key("run-2", "train"))
    rt.shutdown()


def test_crash_is_reported_in_one_line(store, tmp_path):
    rt = JobRuntime("eval", store, tmp_path)
    job = _wait(rt, rt.submit("run-3", lambda ctx: 1 / 0).job_id)
    assert job.state == State.JOB_STATE_FAILED
    assert job.error == "internal error in eval: ZeroDivisionError: division by zero"
    rt.shutdown()


def test_cancel_running_job(store, tmp_path):
    started = threading.Event()

    def slow(ctx):
        started.set()
        while True:
            ctx.check_cancelled()
            time.sleep(0.02)

    rt = JobRuntime("train", store, tmp_path)
    ref = rt.submit("run-4", slow)
    assert started.wait(10)
    rt.cancel(ref.job_id)
    assert _wait(rt, ref.job_id).state == State.JOB_STATE_CANCELLED
    # A cancelled job can be submitted again.
    started.clear()
    rt.submit("run-4", slow)
    assert started.wait(10)
    rt.shutdown(timeout=5)


def test_unknown_and_malformed_job_ids(store, tmp_path):
    rt = JobRuntime("data", store, tmp_path)
    with pytest.raises(NotFound, match="run 'no-such-run' has no data job"):
        rt.get("no-such-run/data")
    with pytest.raises(NotFound, match="runs 'data' jobs, not 'train'"):
        rt.get("x/train")
    with pytest.raises(InvalidInput, match="invalid job id"):
        rt.get("nonsense")
    with pytest.raises(InvalidInput, match="invalid run id"):
        rt.submit("../etc", _ok_work)
    rt.shutdown()


def test_interrupted_job_reads_as_failed_after_restart(store, tmp_path):
    store.put_json({"job_id": "run-5/train", "run_id": "run-5", "stage": "train", "state": "JOB_STATE_RUNNING"},
                   job_key("run-5", "train"))
    job = JobRuntime("train", store, tmp_path).get("run-5/train")
    assert job.state == State.JOB_STATE_FAILED
    assert "restarted" in job.error
