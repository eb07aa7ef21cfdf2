"""The recipe end to end, in-process and tiny: val loss on schedule, the best adapter merged, checkpoints, progress."""

from __future__ import annotations

import json

import pytest

from meshai_common.progress import LocalContext
from meshai_trainer import checkpoint
from meshai_trainer.config import load_config

# A learning rate far too high: the val loss swings and ends far above its best, so the last weights are not
# the best ones and the test can tell which were merged.
pytestmark = pytest.mark.slow  # trains or loads the embedded model's weights


CONFIG = """
base_model: {base}
lora_r: 8
lora_alpha: 16
lora_layers: 2
sequence_len: 64
micro_batch_size: 4
max_steps: 8
learning_rate: 0.03
lr_scheduler: constant
eval_steps: 2
save_steps: 4
save_total_limit: 1
sample_packing: {packing}
threads: 1
seed: 3
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory, smollm2_dir, chat_data):
    tmp = tmp_path_factory.mktemp("loop")
    cfg = load_config(text=CONFIG.format(base=smollm2_dir, packing="false"))
    ctx = LocalContext(tmp / "work")
    from meshai_trainer.recipe import train

    metrics = train(cfg, chat_data[0], chat_data[1], tmp / "out", ctx, checkpoint_dir=tmp / "ckpt")
    return tmp, metrics, ctx


def test_the_merged_model_is_the_best_by_val_loss(trained, chat_data):
    import torch
    from transformers import AutoModelForCausalLM

    from meshai_trainer.batches import encode
    from meshai_trainer.dataset import read_messages
    from meshai_trainer.model import load_base
    from meshai_trainer.recipe import evaluate_loss

    tmp, metrics, _ = trained
    log = [json.loads(x) for x in (tmp / "out" / "train_log.jsonl").read_text().splitlines()]
    vals = {r["step"]: r["val_loss"] for r in log if "val_loss" in r}
    assert sorted(vals) == [2, 4, 6, 8]
    best_step = min(vals, key=vals.get)
    assert metrics["best_step"] == best_step < 8, vals
    assert metrics["val_loss"] == pytest.approx(vals[best_step])
    assert metrics["last_val_loss"] == pytest.approx(vals[8])
    assert vals[8] - vals[best_step] > 0.05  # far enough apart to tell which weights were merged
    merged = AutoModelForCausalLM.from_pretrained(tmp / "out" / "merged", dtype=torch.float32)
    _, tok = load_base(str(tmp / "out" / "merged"))
    val = [encode(tok, m, 64) for m in read_messages(chat_data[1])]
    got = evaluate_loss(merged, val, 4, tok.pad_token_id)
    assert got == pytest.approx(vals[best_step], abs=0.02)


def test_checkpoints_follow_the_schedule_and_keep_the_best(trained):
    tmp, metrics, _ = trained
    kept = [p.name for p in checkpoint.list_local(tmp / "ckpt")]
    best = checkpoint.name_for(metrics["best_step"])
    # save_total_limit: 1 keeps the newest, and the best one when it was saved too (steps 4, 8 are saves).
    assert kept[-1] == "checkpoint-000008"
    assert (best in kept) == (metrics["best_step"] in (4, 8))
    state = checkpoint.read_state(tmp / "ckpt" / "checkpoint-000008")
    assert state["step"] == 8 and state["best"]["step"] == metrics["best_step"]
    assert len(state["order"]) == 4 and sorted(i for b in state["order"] for i in b) == list(range(16))
    assert (tmp / "ckpt" / "checkpoint-000008" / checkpoint.BEST).is_file()


def test_progress_carries_step_epoch_loss_lr_speed_eta_and_memory(trained):
    _, metrics, ctx = trained
    steps = [e for e in ctx.events if e.loss is not None]
    assert [e.step for e in steps] == list(range(1, 9))
    last = steps[-1]
    assert last.total == 8 and last.eta_s == 0 and last.tokens_per_s > 0
    assert {"lr", "epoch", "tokens", "rss_mb", "peak_rss_mb"} <= set(last.metrics)
    assert last.metrics["epoch"] == pytest.approx(2.0) and last.metrics["rss_mb"] > 100
    assert any("val_loss" in e.metrics for e in ctx.events)
    assert metrics["peak_rss_mb"] >= last.metrics["rss_mb"]


def test_packed_training_reports_its_efficiency(tmp_path, smollm2_dir, chat_data):
    from meshai_trainer.recipe import train

    cfg = load_config(text=CONFIG.format(base=smollm2_dir, packing="true"),
                      overrides={"max_steps": "2", "eval_steps": "null", "save_steps": "null", "sequence_len": "128"})
    ctx = LocalContext(tmp_path / "work")
    metrics = train(cfg, chat_data[0], None, tmp_path / "out", ctx)
    packing = [e for e in ctx.events if "packing_efficiency" in e.metrics]
    assert packing and packing[0].message.startswith("packed 16 examples into ")
    assert packing[0].metrics["packing_efficiency"] > 0.8
    assert metrics["padding_efficiency"] > 0.8 and metrics["steps"] == 2


def test_the_curves_land_in_tensorboard_in_the_output_folder(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tmp, _, _ = trained
    log = [json.loads(x) for x in (tmp / "out" / "train_log.jsonl").read_text().splitlines()]
    acc = EventAccumulator(str(tmp / "out" / "tensorboard"))
    acc.Reload()
    losses = [(e.step, e.value) for e in acc.Scalars("train/loss")]
    assert losses == [(r["step"], pytest.approx(r["loss"])) for r in log if "loss" in r]
    vals = [(e.step, e.value) for e in acc.Scalars("train/val_loss")]
    assert vals == [(r["step"], pytest.approx(r["val_loss"])) for r in log if "val_loss" in r]
    assert {"train/lr", "speed/tokens_per_s", "memory/rss_mb"} <= set(acc.Tags()["scalars"])
