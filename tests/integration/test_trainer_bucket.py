"""The trainer and the bucket (real S3 server, real gRPC, real SmolLM2 files).

The service keeps its checkpoints there: a cancelled job leaves one, a service killed with SIGKILL mid-job
leaves those it published, and the job submitted again resumes from the newest and finishes the same run.
A base model can live there too (s3://).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import pytest

from meshai.v1 import jobs_pb2, trainer_pb2, trainer_pb2_grpc
from meshai_testing import put_chat_jsonl
from meshai_trainer import checkpoint

State = jobs_pb2.JobState
RUN = "ckpt-1"
PREFIX = f"runs/{RUN}/train/checkpoints"
CONFIG = """
base_model: {base}
lora_r: 8
lora_alpha: 16
lora_layers: 2
sequence_len: 64
micro_batch_size: 4
max_steps: 12
learning_rate: 0.002
save_steps: 3
threads: 1
"""



def _wait(stub, until, timeout: float = 240.0, run: str = RUN) -> jobs_pb2.Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = stub.Get(jobs_pb2.GetJobRequest(job_id=f"{run}/train"), timeout=10)
        if until(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"timed out; last state {State.Name(job.state)}: {job.last_event.message} {job.error}")


@pytest.mark.slow
def test_cancel_kill_and_resubmit_resume_from_bucket_checkpoints(store, s3_env, start_service, smollm2_dir):
    rows = [(f"how do I reach node {i}?", f"Send /relay node{i} then your text.") for i in range(24)]
    request = trainer_pb2.TrainRequest(run_id=RUN, train=put_chat_jsonl(store, f"runs/{RUN}/data/train.jsonl", rows),
                                       val=put_chat_jsonl(store, f"runs/{RUN}/data/val.jsonl", rows[:4]),
                                       config_yaml=CONFIG.format(base=smollm2_dir))
    svc = start_service("trainer", s3_env)
    svc.wait_health(timeout=90)
    stub = trainer_pb2_grpc.TrainerServiceStub(grpc.insecure_channel(svc.addr))

    # 1. Cancelled after a few steps: the job saves where it stopped, and that checkpoint stays in the bucket.
    stub.Submit(request, timeout=60)
    _wait(stub, lambda j: j.last_event.step >= 2)
    stub.Cancel(jobs_pb2.CancelJobRequest(job_id=f"{RUN}/train"), timeout=30)
    job = _wait(stub, lambda j: j.state in (State.JOB_STATE_CANCELLED, State.JOB_STATE_SUCCEEDED))
    assert job.state == State.JOB_STATE_CANCELLED
    saved = checkpoint.remote(store, PREFIX)
    assert saved and checkpoint.step_of(saved[-1]) >= 2
    assert not store.list(f"runs/{RUN}/train/merged/")
    cancelled_at = checkpoint.step_of(saved[-1])

    # 2. Submitted again, it resumes; the service is killed (SIGKILL) once it has published a newer checkpoint.
    stub.Submit(request, timeout=60)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        names = checkpoint.remote(store, PREFIX)
        if checkpoint.step_of(names[-1]) > cancelled_at:
            svc.proc.kill()
            break
        time.sleep(0.02)
    svc.proc.wait(30)
    published = checkpoint.step_of(checkpoint.remote(store, PREFIX)[-1])
    assert cancelled_at < published < 12, "the job finished before the service could be killed"

    # 3. A new service process reports the job as interrupted; submitted again, it finishes from the newest one.
    svc2 = start_service("trainer", s3_env)
    svc2.wait_health(timeout=90)
    stub = trainer_pb2_grpc.TrainerServiceStub(grpc.insecure_channel(svc2.addr))
    assert stub.Get(jobs_pb2.GetJobRequest(job_id=f"{RUN}/train"), timeout=10).state == State.JOB_STATE_FAILED
    stub.Submit(request, timeout=60)
    job = _wait(stub, lambda j: j.state in (State.JOB_STATE_SUCCEEDED, State.JOB_STATE_FAILED))
    assert job.state == State.JOB_STATE_SUCCEEDED, job.error
    metrics = job.train.metrics
    assert metrics["resumed_from_step"] == published and metrics["steps"] == 12
    log = [json.loads(x) for x in store.get_bytes(f"runs/{RUN}/train/train_log.jsonl").decode().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, 13))  # one curve, no step twice or missing
    assert checkpoint.remote(store, PREFIX)[-1] == "checkpoint-000012"
    manifest = store.get_json(f"runs/{RUN}/train/manifest.json")
    assert any(o["key"].endswith("merged/model.safetensors") for o in manifest["outputs"])
    curves = store.list(f"runs/{RUN}/train/tensorboard/")  # the curves travel with the run's outputs
    assert curves and any(o["key"] in curves for o in manifest["outputs"])
    assert manifest["metrics"]["resumed_from_step"] == published


@pytest.mark.slow
def test_a_job_on_two_ranks_stops_together_and_resumes(store, s3_env, start_service, smollm2_dir):
    """MESHAI_TRAIN_PROCS=2: what a trainer with two GPUs does, here as two CPU processes (gloo on loopback)."""
    run, prefix = "ddp-1", "runs/ddp-1/train/checkpoints"
    rows = [(f"what is on channel {i}?", f"Send /channel {i} to see it.") for i in range(24)]
    request = trainer_pb2.TrainRequest(run_id=run, train=put_chat_jsonl(store, f"runs/{run}/data/train.jsonl", rows),
                                       val=put_chat_jsonl(store, f"runs/{run}/data/val.jsonl", rows[:4]),
                                       config_yaml=CONFIG.format(base=smollm2_dir))
    svc = start_service("trainer", s3_env | {"MESHAI_TRAIN_PROCS": "2"})
    svc.wait_health(timeout=90)
    stub = trainer_pb2_grpc.TrainerServiceStub(grpc.insecure_channel(svc.addr))
    stub.Submit(request, timeout=60)
    job = _wait(stub, lambda j: j.last_event.step >= 2 or j.state == State.JOB_STATE_FAILED, run=run)
    assert job.state != State.JOB_STATE_FAILED, job.error  # rank 0's progress reaches the job
    stub.Cancel(jobs_pb2.CancelJobRequest(job_id=f"{run}/train"), timeout=30)
    job = _wait(stub, lambda j: j.state in (State.JOB_STATE_CANCELLED, State.JOB_STATE_SUCCEEDED,
                                            State.JOB_STATE_FAILED), run=run)
    assert job.state == State.JOB_STATE_CANCELLED, job.error
    stopped = checkpoint.step_of(checkpoint.remote(store, prefix)[-1])  # both ranks stopped after one step
    assert 2 <= stopped < 12

    stub.Submit(request, timeout=60)
    job = _wait(stub, lambda j: j.state in (State.JOB_STATE_SUCCEEDED, State.JOB_STATE_FAILED), run=run)
    assert job.state == State.JOB_STATE_SUCCEEDED, job.error
    metrics = job.train.metrics
    assert metrics["world_size"] == 2 and metrics["resumed_from_step"] == stopped and metrics["steps"] == 12
    log = [json.loads(x) for x in store.get_bytes(f"runs/{run}/train/train_log.jsonl").decode().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, 13))
    assert store.exists(f"runs/{run}/train/merged/model.safetensors")
    assert checkpoint.remote(store, prefix)[-1] == "checkpoint-000012"


def test_an_s3_base_is_fetched_checked_and_resolvable(store, smollm2_dir, tmp_path):
    from meshai_common.errors import NotFound
    from meshai_trainer.config import check_config
    from meshai_trainer.model import fetch_s3_base, inspect_base

    # The model folder's small files (config, tokenizer, template) are what the checks read; the weights file
    # travels the same way.
    files = [p for p in sorted(smollm2_dir.iterdir()) if p.is_file() and p.suffix != ".safetensors"]
    for p in files:
        store.put_file(p, f"models/smollm2/{p.name}")
    spec = f"s3://{store.bucket}/models/smollm2"
    local = fetch_s3_base(spec, store, tmp_path / "base")
    assert sorted(p.name for p in local.iterdir()) == [p.name for p in files]
    assert all((local / p.name).read_bytes() == p.read_bytes() for p in files)
    info = inspect_base(str(local))
    assert info.layers == 30 and "q_proj" in info.linear
    with pytest.raises(NotFound, match="nothing stored under it"):
        fetch_s3_base(f"s3://{store.bucket}/models/none", store, tmp_path / "none")
    # Validating a config never needs the bucket: an s3:// base is a note, checked when the trainer fetches it.
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"base_model: {spec}\n")
    report = check_config(cfg)
    assert report.problems == [] and any("not checked here" in n for n in report.notes)


def test_resume_auto_takes_the_buckets_checkpoint_when_it_is_newer(store, s3_env, tmp_path, monkeypatch):
    """A fresh pod (nothing local) or one with an older local copy resumes from the bucket; rank 0 fetches."""
    from meshai_trainer.cli import _resume_point

    for k, v in s3_env.items():
        monkeypatch.setenv(k, v)

    def make(root: Path, step: int) -> Path:
        return checkpoint.write(root, step, lambda d: (d / checkpoint.STATE).write_text(json.dumps({"step": step})))

    prefix = "runs/r1/train/checkpoints"
    checkpoint.upload(store, make(tmp_path / "elsewhere", 4), prefix)
    fresh = tmp_path / "fresh" / "checkpoints"
    got = _resume_point("auto", fresh, True, prefix)
    assert got == fresh / checkpoint.name_for(4) and json.loads((got / checkpoint.STATE).read_text()) == {"step": 4}
    assert _resume_point("auto", tmp_path / "other" / "checkpoints", False, prefix) is None  # rank 0 shares it
    older = tmp_path / "older" / "checkpoints"
    make(older, 2)
    assert _resume_point("auto", older, True, prefix) == older / checkpoint.name_for(4)
    newer = tmp_path / "newer" / "checkpoints"
    make(newer, 6)
    assert _resume_point("auto", newer, True, prefix) == newer / checkpoint.name_for(6)
    assert _resume_point("auto", fresh, True, None) == fresh / checkpoint.name_for(4)  # no prefix: what is on disk
