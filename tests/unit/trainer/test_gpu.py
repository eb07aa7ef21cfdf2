"""The GPU paths (CUDA only; skipped elsewhere): QLoRA with bf16 compute, packing, fused AdamW, bf16 merge."""

from __future__ import annotations

import pytest

from meshai_common.progress import LocalContext
from meshai_trainer.config import load_config

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.slow, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_gpu_recipe_trains_qlora_in_bf16_and_merges_in_bf16(tmp_path, smollm2_dir, chat_data, monkeypatch):
    import bitsandbytes as bnb
    from safetensors import safe_open

    import meshai_trainer.recipe as recipe

    seen = {}
    real_apply = recipe.apply_lora

    def spy(model, cfg):
        q_proj = model.model.layers[0].self_attn.q_proj
        seen["layer"], seen["compute"] = type(q_proj), q_proj.compute_dtype
        seen["device"] = q_proj.weight.device.type
        return real_apply(model, cfg)

    monkeypatch.setattr(recipe, "apply_lora", spy)
    cfg = load_config("gpu-smollm2", {"base_model": str(smollm2_dir), "max_steps": "4", "evals_per_epoch": "null",
                                      "eval_steps": "2", "saves_per_epoch": "null", "save_steps": "2"})
    ctx = LocalContext(tmp_path / "work")
    metrics = recipe.train(cfg, chat_data[0], chat_data[1], tmp_path / "out", ctx, checkpoint_dir=tmp_path / "ckpt")
    assert seen == {"layer": bnb.nn.Linear4bit, "compute": torch.bfloat16, "device": "cuda"}
    assert metrics["steps"] == 4 and metrics["cuda_max_mb"] > 0 and metrics["train_loss"] == metrics["train_loss"]
    assert any("cuda_max_mb" in e.metrics for e in ctx.events)
    with safe_open(tmp_path / "out" / "merged" / "model.safetensors", "pt") as fh:
        assert {str(fh.get_slice(k).get_dtype()) for k in fh.keys()} == {"BF16"}  # noqa: SIM118


def test_gpu_run_resumed_from_a_checkpoint_continues_its_curve(tmp_path, smollm2_dir, chat_data):
    import json

    from meshai_trainer import checkpoint
    from meshai_trainer.recipe import train

    cfg = load_config("gpu-smollm2", {"base_model": str(smollm2_dir), "max_steps": "6", "lora_dropout": "0.1",
                                      "evals_per_epoch": "null", "saves_per_epoch": "null", "save_steps": "3"})
    train(cfg, chat_data[0], None, tmp_path / "a", LocalContext(tmp_path / "wa"), checkpoint_dir=tmp_path / "ck")
    resumed = train(cfg, chat_data[0], None, tmp_path / "b", LocalContext(tmp_path / "wb"),
                    checkpoint_dir=tmp_path / "ck2", resume_from=tmp_path / "ck" / checkpoint.name_for(3))
    assert resumed["resumed_from_step"] == 3

    def losses(out):
        rows = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if "loss" in r]

    assert losses(tmp_path / "b") == pytest.approx(losses(tmp_path / "a"), rel=1e-2)
