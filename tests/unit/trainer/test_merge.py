"""Merging: the merged model's logits match base + adapter (PEFT, unmerged); tokenizer and template travel with it."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow  # trains or loads the embedded model's weights


QUESTIONS = ["how do I list nodes?", "what does SNR mean?", "relay hello to bob"]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _inputs(tok):
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
               for q in QUESTIONS]
    tok.padding_side = "right"
    return tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)


def _logits(model, batch):
    import torch

    with torch.no_grad():
        out = model(**batch).logits
    return out[batch["attention_mask"].bool()]  # real positions only


def test_merged_logits_match_base_plus_adapter(smollm2_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from meshai_trainer.model import load_base
    from meshai_trainer.recipe import save_outputs

    torch.manual_seed(0)
    model, tok = load_base(str(smollm2_dir))
    model.eval()
    batch = _inputs(tok)
    base = _logits(model, batch)
    # A non-zero adapter (PEFT's default init is a no-op) on the top layers, as the recipe trains it.
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, layers_to_transform=list(range(20, 30)),
                      init_lora_weights=False)
    peft = get_peft_model(model, lora)
    peft.eval()
    adapted = _logits(peft, batch)
    effect = (adapted - base).abs().max().item()
    assert effect > 1.0  # the adapter changes the output: a merge that dropped it would fail below

    out = save_outputs(peft, tok, tmp_path)
    in_memory = _logits(model, batch)  # `model` now holds the merged fp32 weights
    assert (in_memory - adapted).abs().max().item() < 1e-3
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    merged.eval()
    from_disk = _logits(merged, batch)
    # Saved as fp16: the difference is fp16 rounding of the weights, far below the adapter's effect.
    diff = (from_disk - adapted).abs().max().item()
    assert diff < 0.05 * effect, (diff, effect)
    assert (from_disk.argmax(-1) == adapted.argmax(-1)).float().mean().item() > 0.97
    # The quantizer needs nothing else: tokenizer and chat template sit next to fp16 weights, no LoRA keys.
    tok2 = AutoTokenizer.from_pretrained(out)
    assert tok2.chat_template == tok.chat_template
    with safe_open(out / "model.safetensors", "pt") as fh:
        keys = list(fh.keys())
        assert {str(fh.get_slice(k).get_dtype()) for k in keys} == {"F16"}
    assert not any("lora" in k for k in keys)
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
