"""Data-parallel training on DistributedDataParallel, two gloo ranks under torchrun on the CPU:

- they follow one rank's loss curve with the same global batch (an epoch's short last step included, where one
  rank has no micro-batch) and end with identical LoRA weights on both ranks;
- the service's launcher relays rank 0's progress and metrics, stops both ranks after the same step on cancel
  (rank 0 checkpoints), and the same call resumes from there.

Run as a script (`python test_ddp.py CONFIG TRAIN VAL OUT`, alone or under torchrun) this file is a rank that
trains with the recipe and writes its own final LoRA weights, which the CLI (rank 0's adapter only) cannot show.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CONFIG = """
base_model: {base}
lora_r: 8
lora_alpha: 16
lora_dropout: 0.1
lora_layers: 2
sequence_len: 64
micro_batch_size: 2
gradient_accumulation_steps: {accum}
max_steps: {steps}
learning_rate: 0.002
lr_scheduler: cosine
warmup_steps: 2
threads: 1
seed: 7
"""


def _config(path: Path, base: Path, accum: int, steps: int) -> Path:
    path.write_text(CONFIG.format(base=base, accum=accum, steps=steps))
    return path


def _rank_main(config: str, train: str, val: str, out: str) -> None:
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    from meshai_common.progress import LocalContext
    from meshai_trainer.config import load_config
    from meshai_trainer.recipe import FinetuneRecipe

    rank, out_dir = int(os.environ.get("RANK", "0")), Path(out)
    recipe = FinetuneRecipe(load_config(config), LocalContext(out_dir / ".work"), out_dir, train_path=Path(train),
                            val_path=Path(val))
    try:
        recipe.setup()
        recipe.train()
        weights = get_peft_model_state_dict(recipe.model)
        save_file({k: v.detach().contiguous() for k, v in weights.items()}, out_dir / f"lora-rank{rank}.safetensors")
        if rank == 0:
            (out_dir / "steps.json").write_text(json.dumps({"losses": recipe.state.losses, "tokens": recipe.state.real,
                                                            "world_size": recipe.world.size}))
    finally:
        recipe.cleanup()


def _start(args: list[str], log: Path, ranks: int = 1) -> subprocess.Popen:
    prefix = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)] if ranks > 1 else []
    env = os.environ | {"OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as fh:
        return subprocess.Popen([sys.executable, *prefix, *args], env=env, stdout=fh, stderr=subprocess.STDOUT)


def _wait(proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    assert proc.wait(timeout) == 0, log.read_text()[-4000:]


def test_two_gloo_ranks_match_one_rank_with_the_same_global_batch(tmp_path, smollm2_dir, chat_data):
    from safetensors.torch import load_file

    # 14 examples = 7 micro-batches of 2: every 4th step of 2 micro-batches has one, and rank 1 none.
    train = tmp_path / "train14.jsonl"
    train.write_text("".join(chat_data[0].read_text().splitlines(keepends=True)[:14]))
    one, two = tmp_path / "one", tmp_path / "two"
    runs = []
    for out, accum, ranks in ((one, 2, 1), (two, 1, 2)):  # 1 rank x 2 micro-batches = 2 ranks x 1
        out.mkdir()
        config = _config(tmp_path / f"{out.name}.yaml", smollm2_dir, accum, steps=5)
        args = [__file__, str(config), str(train), str(chat_data[1]), str(out)]
        runs.append((_start(args, tmp_path / f"{out.name}.log", ranks), tmp_path / f"{out.name}.log"))
    for proc, log in runs:
        _wait(proc, log)

    single, ddp = (json.loads((d / "steps.json").read_text()) for d in (one, two))
    assert single["world_size"] == 1 and ddp["world_size"] == 2
    assert len(ddp["losses"]) == 5 and ddp["tokens"] == single["tokens"]
    assert ddp["losses"] == pytest.approx(single["losses"], rel=1e-4)
    rank0, rank1, ref = (load_file(p) for p in (two / "lora-rank0.safetensors", two / "lora-rank1.safetensors",
                                                one / "lora-rank0.safetensors"))
    assert rank0.keys() == rank1.keys() == ref.keys() and len(ref) == 2 * 2 * 7  # A and B, 7 modules, 2 layers
    assert all(rank0[k].equal(rank1[k]) for k in rank0)  # DDP keeps the ranks' weights identical
    assert all((rank0[k] - ref[k]).abs().max() < 1e-5 for k in ref)
    assert all((ref[k] != 0).any() for k in ref if "lora_B" in k)  # B starts at zero: the runs trained


class CancelAfter:
    """A job context that asks to stop once rank 0 has reported `step`."""

    def __init__(self, workdir: Path, step: int | None) -> None:
        from meshai_common.progress import LocalContext

        self.inner, self.step = LocalContext(workdir), step
        self.workdir = self.inner.workdir

    def report(self, progress) -> None:
        self.inner.report(progress)
        if self.step is not None and progress.step >= self.step and progress.loss is not None:
            self.inner.cancel()

    def check_cancelled(self) -> None:
        self.inner.check_cancelled()

    @property
    def steps(self) -> list[int]:
        return [e.step for e in self.inner.events if e.loss is not None]


def test_the_launcher_relays_progress_stops_ranks_together_and_resumes(tmp_path, smollm2_dir, chat_data):
    from meshai_common.errors import Cancelled
    from meshai_trainer import checkpoint
    from meshai_trainer.launch import rank_log, run_ranks

    config = _config(tmp_path / "c.yaml", smollm2_dir, accum=1, steps=8)
    out, work = tmp_path / "out", tmp_path / "ranks"
    args = [str(config), "--train", str(chat_data[0]), "--val", str(chat_data[1]), "--output-dir", str(out),
            "--resume", "auto"]
    first = CancelAfter(tmp_path / "job1", step=2)
    with pytest.raises(Cancelled):
        run_ranks(2, args, work, first, stop_grace_s=120)
    stopped = checkpoint.step_of(checkpoint.latest_local(out / "checkpoints").name)
    assert first.steps[:2] == [1, 2] and 2 <= stopped < 8  # progress reached the job; saved on the way out
    for rank in (0, 1):  # both ranks took the stop, after the same step
        assert "stopped; the same command resumes" in rank_log(work / "logs", rank)

    second = CancelAfter(tmp_path / "job2", step=None)
    metrics = run_ranks(2, args, work, second)
    assert metrics["world_size"] == 2 and metrics["resumed_from_step"] == stopped and metrics["steps"] == 8
    assert second.steps == list(range(stopped + 1, 9))
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, 9))  # one curve, no step twice or missing
    assert (out / "merged" / "model.safetensors").is_file()


if __name__ == "__main__":
    _rank_main(*sys.argv[1:5])
