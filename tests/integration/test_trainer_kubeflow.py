"""A TrainJob rank's entrypoint and the bucket (real S3 server, real SmolLM2 weights).

`python -m meshai_trainer.cli train job --request JSON` is what torchrun starts in each TrainJob pod. Here it
runs as rank 0 of one (no torchrun: its TCP store would listen on every interface): it fetches the splits from
the bucket, trains, publishes a checkpoint and stops when SIGTERM arrives (a preempted or deleted pod); a
second pod with an empty scratch folder resumes from that checkpoint and publishes the outputs, the
manifest and the result in the status object the controller reads.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from meshai.v1 import trainer_pb2
from meshai_testing import put_chat_jsonl
from meshai_trainer import checkpoint
from meshai_trainer.kubeflow.status import read_status
from meshai_trainer.kubeflow.trainjob import rank_args

RUN = "kf-1"
PREFIX = f"runs/{RUN}/train/checkpoints"
STEPS = 30
CONFIG = f"""
base_model: {{base}}
lora_r: 8
lora_alpha: 16
lora_layers: 2
sequence_len: 64
micro_batch_size: 4
max_steps: {STEPS}
learning_rate: 0.002
save_steps: 2
threads: 1
"""



def _pod(req: trainer_pb2.TrainRequest, s3_env: dict[str, str], workdir: Path, log: Path) -> subprocess.Popen:
    """One pod's rank 0: the TrainJob's arguments after `torchrun`, the env the TrainJob gives it."""
    env = os.environ | s3_env | {"MESHAI_WORKDIR": str(workdir), "PYTHONUNBUFFERED": "1", "RANK": "0",
                                 "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    return subprocess.Popen([sys.executable, *rank_args(req)], env=env, stdout=open(log, "wb"),  # noqa: SIM115
                            stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_rank_entrypoint_stops_on_sigterm_and_the_next_pod_resumes_and_publishes(store, s3_env, smollm2_dir,
                                                                                 tmp_path):
    rows = [(f"how do I reach node {i}?", f"Send /relay node{i} then your text.") for i in range(24)]
    req = trainer_pb2.TrainRequest(run_id=RUN, train=put_chat_jsonl(store, f"runs/{RUN}/data/train.jsonl", rows),
                                   val=put_chat_jsonl(store, f"runs/{RUN}/data/val.jsonl", rows[:4]),
                                   config_yaml=CONFIG.format(base=smollm2_dir))

    # 1. The first pod is stopped (SIGTERM, as on preemption) once it has published a checkpoint.
    pod = _pod(req, s3_env, tmp_path / "pod-1", tmp_path / "pod-1.log")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and pod.poll() is None and not checkpoint.remote(store, PREFIX):
        time.sleep(0.05)
    assert pod.poll() is None, (tmp_path / "pod-1.log").read_text()[-3000:]
    pod.send_signal(signal.SIGTERM)
    assert pod.wait(300) == 143, (tmp_path / "pod-1.log").read_text()[-3000:]
    stopped = checkpoint.step_of(checkpoint.remote(store, PREFIX)[-1])
    assert 2 <= stopped < STEPS, "the pod finished before SIGTERM"
    doc = read_status(store, RUN)
    assert doc["state"] == "stopped" and not doc.get("result")
    assert any(e["progress"]["step"] for e in doc["events"])  # rank 0's progress reached the bucket
    assert not store.list(f"runs/{RUN}/train/merged/")

    # 2. A new pod (empty scratch) resumes from the bucket's checkpoint and publishes everything.
    pod = _pod(req, s3_env, tmp_path / "pod-2", tmp_path / "pod-2.log")
    assert pod.wait(600) == 0, (tmp_path / "pod-2.log").read_text()[-3000:]
    doc = read_status(store, RUN)
    assert doc["state"] == "succeeded", doc
    result = doc["result"]
    assert result["merged_prefix"] == f"runs/{RUN}/train/merged"
    assert result["metrics"]["resumed_from_step"] >= stopped and result["metrics"]["steps"] == STEPS
    manifest = store.get_json(doc["manifest_key"])
    assert manifest["run_id"] == RUN and manifest["stage"] == "train"
    assert any(o["key"].endswith("merged/model.safetensors") for o in manifest["outputs"])
    log = [json.loads(x) for x in store.get_bytes(f"runs/{RUN}/train/train_log.jsonl").decode().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, STEPS + 1))  # one curve across both pods
