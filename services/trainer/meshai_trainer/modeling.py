"""The model-side pieces of the recipe: LoRA, the loss (logits only where it is taken), val loss, precision,
the optimizer, memory figures and the final adapter + merged model."""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshai_common.errors import InvalidInput
from meshai_trainer.batches import IGNORE, Example, collate
from meshai_trainer.config import TrainConfig


def causal_lm_loss(model: Any, ids: Any, labels: Any, mask: Any, positions: Any = None) -> Any:
    """Mean next-token loss over labelled positions, computing logits only there."""
    import torch.nn.functional as F

    # No KV cache: training never reuses one, and with a cache transformers ignores packed position ids.
    hidden = model.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).last_hidden_state
    target = labels[:, 1:]
    keep = target != IGNORE
    logits = model.lm_head(hidden[:, :-1][keep]).float()
    return F.cross_entropy(logits, target[keep])


def loss_module(model: Any) -> Any:
    """A module whose forward is `causal_lm_loss(model, ...)`: what DistributedDataParallel wraps, since its
    gradient hooks are armed in forward."""
    import torch

    class CausalLMLoss(torch.nn.Module):
        def __init__(self, lm: Any) -> None:
            super().__init__()
            self.lm = lm

        def forward(self, ids: Any, labels: Any, mask: Any, positions: Any = None) -> Any:
            return causal_lm_loss(self.lm, ids, labels, mask, positions)

    return CausalLMLoss(model)


def load_for_training(cfg: TrainConfig, world: Any, compute: Any, staging: Path,
                      base_out: Path | None) -> tuple[Any, Any, str | None]:
    """(model, tokenizer, merge source): the base on this rank's device, NF4 for QLoRA (then the merge source is
    a full-precision copy staged in `staging`); `base_out` receives the untouched base as an HF folder."""
    from meshai_trainer.model import load_base, load_base_4bit, save_hf

    cuda = world.device.type == "cuda"
    attn = "flash_attention_2" if cfg.flash_attention and cuda else None
    if cfg.adapter == "qlora":
        return load_base_4bit(cfg.base_model, compute, world.device, staging, attn, baseline_out=base_out)
    model, tok = load_base(cfg.base_model, compute if cuda else None, device=world.device, attn_implementation=attn)
    if base_out is not None:
        save_hf(model, tok, base_out)
    return model, tok, None


def apply_lora(model: Any, cfg: TrainConfig) -> Any:
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    n_layers = model.config.num_hidden_layers
    layers = None
    if cfg.lora_layers:
        if not 0 < cfg.lora_layers <= n_layers:
            raise InvalidInput(f"lora_layers={cfg.lora_layers}: the model has {n_layers} layers")
        layers = list(range(n_layers - cfg.lora_layers, n_layers))
    targets = cfg.lora_target_modules
    if cfg.lora_target_linear:  # Axolotl's "every linear layer"; named here because PEFT's "all-linear" ignores layers
        targets = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                          if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head")})
    if cfg.adapter == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, layers_to_transform=layers, task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def evaluate_loss(model: Any, examples: list[Example], batch_size: int, pad_id: int, world: Any = None,
                  amp: Callable[[], Any] = contextlib.nullcontext) -> float:
    """Token-weighted val loss; under torchrun each rank takes a shard and the sums are combined."""
    import torch

    from meshai_trainer import distributed

    shard = examples if world is None else examples[world.rank::world.size]
    device = None if world is None else world.device
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(shard), batch_size):
            ids, labels, mask = (t.to(device) for t in collate(shard[start:start + batch_size], pad_id))
            n = int((labels[:, 1:] != IGNORE).sum())
            with amp():
                total += float(causal_lm_loss(model, ids, labels, mask)) * n
            count += n
    if world is not None:
        total, count = distributed.sum_values(world, [total, count])
    return total / max(count, 1)


def memory_metrics(cuda: bool) -> dict[str, float]:
    """Resident memory now and at its peak (and the GPU's peak allocation): reported with every step."""
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    try:
        with open("/proc/self/statm") as fh:
            out["rss_mb"] = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        pass
    if cuda:
        import torch

        out["cuda_max_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def compute_dtype(cfg: TrainConfig, cuda: bool) -> Any:
    """fp32 on the CPU always (bf16 autocast there is ~25x slower); bf16/fp16 on a GPU as configured."""
    import torch

    if not cuda:
        return torch.float32
    if cfg.bf16 is True or (cfg.bf16 == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16 if cfg.fp16 else torch.float32


def make_optimizer(cfg: TrainConfig, params: list[Any], cuda: bool) -> Any:
    import torch

    if cfg.optimizer in ("adamw_bnb_8bit", "paged_adamw_8bit"):
        if not cuda:
            raise InvalidInput(f"optimizer: {cfg.optimizer} needs a CUDA GPU; use adamw_torch on the CPU")
        import bitsandbytes as bnb

        cls = bnb.optim.PagedAdamW8bit if cfg.optimizer == "paged_adamw_8bit" else bnb.optim.AdamW8bit
        return cls(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    fused = {"fused": True} if cfg.optimizer == "adamw_torch_fused" and cuda else {}
    return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, **fused)


def save_outputs(model: Any, tok: Any, out_dir: Path, merge_source: str | None = None, dtype: Any = None) -> Path:
    """Write `out_dir/adapter` (PEFT) and `out_dir/merged` (HF safetensors, fp16 unless `dtype`, with tokenizer
    and chat template). LoRA folds into the full-precision base in memory; QLoRA (`merge_source`) into a freshly
    loaded full-precision copy, never into the 4-bit weights."""
    from meshai_trainer.model import merge_into_base, save_hf

    out_dir = Path(out_dir)
    model.save_pretrained(out_dir / "adapter")
    if merge_source is not None:
        merged = merge_into_base(merge_source, out_dir / "adapter")
    else:
        merged = model.merge_and_unload()
    return save_hf(merged, tok, out_dir / "merged", dtype=dtype)
