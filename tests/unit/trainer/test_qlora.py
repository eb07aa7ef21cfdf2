"""QLoRA on the CPU (bitsandbytes NF4 + double quantization, fp32 compute), and its merge into full precision."""

from __future__ import annotations

import pytest

from meshai_common.progress import LocalContext
from meshai_trainer.config import load_config

pytestmark = pytest.mark.slow

CONFIG = """
base_model: {base}
adapter: qlora
load_in_4bit: true
lora_r: 8
lora_alpha: 16
lora_layers: 4
sequence_len: 64
micro_batch_size: 4
max_steps: 3
learning_rate: 0.01
lr_scheduler: constant
threads: 1
"""


def test_qlora_trains_on_nf4_and_merges_into_full_precision(tmp_path, smollm2_dir, chat_data, monkeypatch):
    import bitsandbytes as bnb
    import torch
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    import meshai_trainer.recipe as recipe
    from meshai_trainer.model import load_base

    seen = {}
    real_apply = recipe.apply_lora

    def spy(model, cfg):  # what the loop trains on: 4-bit linear layers, double-quantized NF4, fp32 compute
        q_proj = model.model.layers[0].self_attn.q_proj
        seen["layer"] = type(q_proj)
        seen["quant"] = (q_proj.weight.quant_state.quant_type, q_proj.weight.quant_state.nested,
                         q_proj.compute_dtype)
        return real_apply(model, cfg)

    monkeypatch.setattr(recipe, "apply_lora", spy)
    cfg = load_config(text=CONFIG.format(base=smollm2_dir))
    metrics = recipe.train(cfg, chat_data[0], chat_data[1], tmp_path / "out", LocalContext(tmp_path / "work"))
    assert seen["layer"] is bnb.nn.Linear4bit
    assert seen["quant"] == ("nf4", True, torch.float32)
    assert metrics["steps"] == 3 and metrics["train_loss"] == metrics["train_loss"]  # finite, not NaN

    # The merged model is the full-precision base plus the adapter: it matches PEFT's unmerged adapter on the
    # fp32 base, which a merge into NF4 weights could not (NF4 moves these logits by several units).
    merged_dir = tmp_path / "out" / "merged"
    with safe_open(merged_dir / "model.safetensors", "pt") as fh:
        keys = list(fh.keys())
        assert {str(fh.get_slice(k).get_dtype()) for k in keys} == {"F16"}
    assert not any("absmax" in k or "quant" in k or "lora" in k for k in keys)
    base, tok = load_base(str(smollm2_dir))
    ids = tok(["how do I list nodes?", "what does SNR mean?"], return_tensors="pt", padding=True)
    mask = ids["attention_mask"].bool()
    with torch.no_grad():
        before = base(**ids).logits[mask]
        want = PeftModel.from_pretrained(base, str(tmp_path / "out" / "adapter")).eval()(**ids).logits[mask]
        got = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()(**ids).logits[mask]
    effect, diff = (want - before).abs().max().item(), (got - want).abs().max().item()
    assert effect > 0.5 and diff < 0.1, (effect, diff)
