"""Training processes, as an operator runs them (`python -m meshai_trainer.cli train run`, one per rank):

- one killed with SIGKILL mid-run and started again continues the loss curve of an uninterrupted run;
- two gloo ranks under torchrun (DistributedDataParallel), the command line a Kubernetes TrainJob runs, train
  like one process accumulating their micro-batches.

Tiny on purpose: 16 short examples, 8 optimizer steps, LoRA on the top 2 layers, one thread per process.
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

from meshai_trainer import checkpoint

pytestmark = pytest.mark.slow

CONFIG = """
base_model: {base}
lora_r: 8
lora_alpha: 16
lora_dropout: {dropout}
lora_layers: 2
sequence_len: 64
micro_batch_size: 2
gradient_accumulation_steps: {accum}
max_steps: 8
learning_rate: 0.002
lr_scheduler: cosine
warmup_steps: 2
threads: 1
seed: 7
"""


def _config(tmp: Path, base: Path, name: str, dropout: float, accum: int) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(CONFIG.format(base=base, dropout=dropout, accum=accum))
    return path


def _start(config: Path, data: tuple[Path, Path], out: Path, *sets: str, ranks: int = 1) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    args = ["-m", "meshai_trainer.cli", "train", "run", str(config), "--train", str(data[0]), "--val",
            str(data[1]), "--output-dir", str(out), "--no-progress"] + [x for s in sets for x in ("--set", s)]
    # One thread per process keeps runs comparable (and two of them fit 2 cores).
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if ranks > 1:  # torchrun's standard environment for each rank; gloo's own sockets stay on loopback
        args = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks), *args]
        env |= {"GLOO_SOCKET_IFNAME": "lo"}
    n = len(list(out.parent.glob(f"{out.name}.*.out.log")))
    with open(out.parent / f"{out.name}.{n}.out.log", "w") as so, open(out.parent / f"{out.name}.{n}.err.log", "w") as se:
        return subprocess.Popen([sys.executable, *args], env=env, stdout=so, stderr=se)


def _finish(proc: subprocess.Popen, out: Path, timeout: float = 300) -> dict:
    rc = proc.wait(timeout)
    logs = sorted(out.parent.glob(f"{out.name}.*.log"))
    text = {p.name: p.read_text() for p in logs}
    assert rc == 0, f"exit {rc}: " + "\n".join(f"--- {k}\n{v[-3000:]}" for k, v in text.items())
    stdout = [v for k, v in text.items() if k.endswith(".out.log") and "{" in v][-1]  # rank 0's metrics
    return json.loads(stdout[stdout.index("{"):])


def _steps(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines() if '"loss"' in line]


def _adapter(out: Path):
    from safetensors.torch import load_file

    return load_file(out / "adapter" / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, smollm2_dir, chat_data):
    """The uninterrupted reference run, started at once so it overlaps the runs under test (one thread each).

    lora_dropout is on: the restarted run must restore the RNG, and dropout must not depend on the rank layout.
    """
    tmp = tmp_path_factory.mktemp("runs")
    config = _config(tmp, smollm2_dir, "reference", 0.1, accum=2)
    ref = _start(config, chat_data, tmp / "reference")
    yield {"tmp": tmp, "base": smollm2_dir, "config": config, "ref": ref}
    if ref.poll() is None:
        ref.kill()
        ref.wait()


def test_killed_run_resumes_on_the_same_loss_curve(runs, chat_data):
    tmp = runs["tmp"]
    victim_out = tmp / "killed"
    victim = _start(runs["config"], chat_data, victim_out, "save_steps=2")
    killed_at = None
    deadline = time.monotonic() + 240
    while victim.poll() is None and time.monotonic() < deadline:
        latest = checkpoint.latest_local(victim_out / "checkpoints")
        if latest is not None:
            victim.send_signal(signal.SIGKILL)
            killed_at = checkpoint.step_of(latest.name)
            break
        time.sleep(0.02)
    assert victim.wait(30) == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (victim_out / "merged").exists()

    resumed = _finish(_start(runs["config"], chat_data, victim_out, "save_steps=2"), victim_out)
    assert resumed["resumed_from_step"] >= killed_at >= 2
    assert resumed["resumed_from_step"] < 8
    reference = _finish(runs["ref"], tmp / "reference")
    got, want = _steps(victim_out), _steps(tmp / "reference")
    assert [r["step"] for r in got] == list(range(1, 9))
    assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in want], rel=1e-4, abs=1e-6)
    assert [r["lr"] for r in got] == pytest.approx([r["lr"] for r in want], rel=1e-6)
    assert resumed["val_loss"] == pytest.approx(reference["val_loss"], rel=1e-4)
    a, b = _adapter(victim_out), _adapter(tmp / "reference")
    assert a.keys() == b.keys() and all((a[k] - b[k]).abs().max() < 1e-5 for k in a)
    # Checkpoints are what a later stage reads as-is: PEFT adapter files, plus the trainer's own state.
    last = checkpoint.latest_local(victim_out / "checkpoints")
    assert last.name == "checkpoint-000008"
    assert {p.name for p in last.iterdir()} >= {"adapter_model.safetensors", "adapter_config.json",
                                                "training_state.pt", "trainer_state.json"}


def test_two_gloo_ranks_under_torchrun_train_like_one_process_accumulating(runs, chat_data):
    tmp = runs["tmp"]
    ddp_out = tmp / "ddp"
    ddp_cfg = _config(tmp, runs["base"], "ddp", 0.1, accum=1)  # 2 ranks x 1 micro-batch = 1 rank x 2
    ddp = _finish(_start(ddp_cfg, chat_data, ddp_out, ranks=2), ddp_out)
    single = _finish(runs["ref"], tmp / "reference")
    assert ddp["world_size"] == 2 and single["world_size"] == 1
    assert ddp["tokens"] == single["tokens"]
    got, want = _steps(ddp_out), _steps(tmp / "reference")
    assert [r["step"] for r in got] == list(range(1, 9))
    assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in want], rel=1e-4, abs=1e-6)
    assert ddp["val_loss"] == pytest.approx(single["val_loss"], rel=1e-4)
    a, b = _adapter(ddp_out), _adapter(tmp / "reference")
    assert a.keys() == b.keys() and all((a[k] - b[k]).abs().max() < 1e-5 for k in a)
