"""The LoRA/QLoRA fine-tuning recipe: setup, train, save_checkpoint, save (adapter + merged model). One loop.

Speed on small CPU machines comes from three choices, all measured on SmolLM2-135M with 2 cores:
- LoRA on the top `lora_layers` decoder layers only: backward stops there (~1.7x).
- Logits only where the loss is taken (assistant tokens): the 49k-vocab head is ~20% of the FLOPs.
- Length-bucketed batches, or packed rows (`sample_packing`): little padding (the efficiency is reported).

A checkpoint holds the adapter, optimizer, scheduler, RNG states and the data position (epoch, batch order,
next batch), so a run restarted from one continues the same loss curve. Under torchrun the same loop runs
data-parallel (distributed.py). QLoRA trains on an NF4 base; the merge always goes into a full-precision copy.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import resource
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshai_common.errors import Cancelled, InvalidInput
from meshai_common.progress import JobContext, Progress
from meshai_trainer import checkpoint as ckpt
from meshai_trainer.batches import (
    IGNORE,
    Example,
    build_batch,
    collate,
    encode,
    make_batches,
    packed_batches,
    set_chat_template,
)
from meshai_trainer.config import TrainConfig
from meshai_trainer.dataset import read_messages

__all__ = ["IGNORE", "Example", "apply_lora", "causal_lm_loss", "collate", "encode", "evaluate_loss",
           "make_batches", "save_outputs", "train"]

log = logging.getLogger(__name__)

# Keys that may change between a checkpoint and the run resuming from it: none of them changes the loss curve.
RESUMABLE_CHANGES = {"max_train_seconds", "threads", "output_dir", "logging_steps", "save_steps", "saves_per_epoch",
                     "save_total_limit", "eval_steps", "evals_per_epoch", "datasets"}
OnCheckpoint = Callable[[Path], None]


def causal_lm_loss(model: Any, ids: Any, labels: Any, mask: Any, positions: Any = None) -> Any:
    """Mean next-token loss over labelled positions, computing logits only there."""
    import torch.nn.functional as F

    # No KV cache: training never reuses one, and with a cache transformers ignores packed position ids.
    hidden = model.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).last_hidden_state
    target = labels[:, 1:]
    keep = target != IGNORE
    logits = model.lm_head(hidden[:, :-1][keep]).float()
    return F.cross_entropy(logits, target[keep])


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


def split_val(rows: list[Any], size: float, seed: int) -> tuple[list[Any], list[Any]]:
    """Hold out `val_set_size` (a fraction, or a count when >= 1) of the training rows, reproducibly."""
    n = int(size) if size >= 1 else max(1, round(len(rows) * size))
    if n >= len(rows):
        raise InvalidInput(f"val_set_size={size} leaves no training examples (the dataset has {len(rows)})")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[:n])
    return [r for i, r in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)]


def _trainable(examples: list[Example]) -> list[Example]:
    # An example whose answer was cut off by sequence_len has no target left: it would only add a NaN.
    return [e for e in examples if any(t != IGNORE for t in e.labels[1:])]


def _every(steps: int | None, per_epoch: int | None, steps_per_epoch: int) -> int:
    if steps:
        return steps
    return max(1, round(steps_per_epoch / per_epoch)) if per_epoch else 0


def _check_resumable(state: dict[str, Any], cfg: TrainConfig, n_examples: int, where: Path) -> None:
    saved, now = state.get("config", {}), cfg.model_dump(mode="json")
    changed = sorted(k for k in set(saved) | set(now) if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k))
    if changed:
        raise InvalidInput(f"checkpoint {where} was written with a different config ({', '.join(changed)} "
                           f"changed); resume with the same settings, or start over (a new run id; "
                           f"`train run --resume never`)")
    if state.get("examples") != n_examples:
        raise InvalidInput(f"checkpoint {where} was trained on {state.get('examples')} examples, this run has "
                           f"{n_examples}; resume with the same data or start a new run")


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


def train(cfg: TrainConfig, train_path: Path, val_path: Path | None, out_dir: Path, ctx: JobContext,
          base_out: Path | None = None, *, checkpoint_dir: Path | None = None, resume_from: Path | None = None,
          on_checkpoint: OnCheckpoint | None = None) -> dict[str, Any]:
    """Fine-tune, then write `out_dir/adapter` (PEFT), `out_dir/merged` (HF safetensors) and a step log.

    `base_out`, when given, receives the untouched base as an HF folder (the quantizer's baseline).
    `checkpoint_dir` turns checkpoints on: on the save schedule, at the end, and when the run is cancelled or
    interrupted. `resume_from` continues from one; `on_checkpoint(path)` runs after each is written.
    """
    import torch
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    from meshai_trainer import distributed
    from meshai_trainer.model import load_base, load_base_4bit, save_hf

    # -- setup --
    world = distributed.setup()
    cuda = world.device.type == "cuda"
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cuda and cfg.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    compute = compute_dtype(cfg, cuda)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx.report(Progress(message=f"loading {cfg.base_model}"))
    t_load = time.monotonic()
    attn = "flash_attention_2" if cfg.flash_attention and cuda else None
    merge_source = None  # QLoRA: the full-precision base the adapter is merged into
    if cfg.adapter == "qlora":
        model, tok, merge_source = load_base_4bit(cfg.base_model, compute, world.device,
                                                  Path(ctx.workdir) / f"base-fp32-{world.rank}", attn,
                                                  baseline_out=base_out if world.main else None)
    else:
        model, tok = load_base(cfg.base_model, compute if cuda else None, device=world.device,
                               attn_implementation=attn)
        if base_out is not None and world.main:
            save_hf(model, tok, base_out)
    load_s = time.monotonic() - t_load
    set_chat_template(tok, cfg.chat_template, cfg.chat_template_jinja)
    train_rows = read_messages(train_path)
    val_rows = read_messages(val_path) if val_path else []
    if not val_rows and cfg.val_set_size:
        train_rows, val_rows = split_val(train_rows, cfg.val_set_size, cfg.seed)
    train_ex = _trainable([encode(tok, m, cfg.sequence_len) for m in train_rows])
    val_ex = _trainable([encode(tok, m, cfg.sequence_len) for m in val_rows])
    if not train_ex:
        raise InvalidInput(f"no training example keeps an answer token within sequence_len={cfg.sequence_len}")
    model = apply_lora(model, cfg)
    model.train()
    inner = model.base_model.model  # the causal LM with LoRA layers injected
    params = [p for p in model.parameters() if p.requires_grad]
    distributed.broadcast_params(world, params)
    optim = make_optimizer(cfg, params, cuda)
    packed = cfg.sample_packing
    per_step = cfg.gradient_accumulation_steps * world.size  # micro-batches per optimizer step, all ranks

    def new_order() -> list[Any]:
        if packed:
            return packed_batches(train_ex, cfg.sequence_len, cfg.micro_batch_size, rng)
        return make_batches(train_ex, cfg.micro_batch_size, rng)

    order = new_order()
    if packed:
        steps_per_epoch = math.ceil(len(order) / per_step)
        rows = sum(len(b) for b in order)
        fill = sum(len(e.ids) for e in train_ex) / (rows * cfg.sequence_len)
        msg = (f"packed {len(train_ex)} examples into {rows} rows of {cfg.sequence_len} tokens: "
               f"{fill:.1%} real tokens")
        log.info(msg)
        ctx.report(Progress(message=msg, metrics={"packing_efficiency": fill}))
    else:
        steps_per_epoch = math.ceil(math.ceil(len(train_ex) / cfg.micro_batch_size) / per_step)
    full_total = cfg.max_steps or max(1, math.ceil(steps_per_epoch * cfg.num_epochs))
    plan = {"total": full_total}

    def warmup() -> int:
        if cfg.warmup_steps is not None:
            return cfg.warmup_steps
        return math.ceil((cfg.warmup_ratio or 0.0) * plan["total"])

    def lr_factor(step: int) -> float:
        w, total = warmup(), plan["total"]
        if step < w:
            return (step + 1) / (w + 1)
        progress = min(1.0, (step - w) / max(1, total - w))
        if cfg.lr_scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 1 - progress if cfg.lr_scheduler == "linear" else 1.0

    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_factor)
    scaler = torch.amp.GradScaler("cuda") if compute == torch.float16 else None
    amp = (lambda: torch.autocast("cuda", dtype=compute)) if compute != torch.float32 else contextlib.nullcontext
    pad_id = tok.pad_token_id
    eval_every = _every(cfg.eval_steps, cfg.evals_per_epoch, steps_per_epoch)
    save_every = _every(cfg.save_steps, cfg.saves_per_epoch, steps_per_epoch) if checkpoint_dir else 0

    # -- loop state (all of it goes into a checkpoint) --
    step, epoch, bi, real, padded = 0, 0, 0, 0, 0
    losses: list[float] = []
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"step": None, "val_loss": None}
    best_weights: dict[str, Any] | None = None
    prior_s, resumed_from, stopped_by = 0.0, 0, "schedule"
    if resume_from is not None:
        resume_from = Path(resume_from)
        st = ckpt.read_state(resume_from)
        _check_resumable(st, cfg, len(train_ex), resume_from)
        tensors = ckpt.read_tensors(resume_from)
        set_peft_model_state_dict(model, load_file(resume_from / ckpt.ADAPTER))
        optim.load_state_dict(tensors["optimizer"])
        sched.load_state_dict(tensors["scheduler"])
        if scaler is not None and tensors.get("scaler"):
            scaler.load_state_dict(tensors["scaler"])
        states = tensors["torch_rng"]
        torch.set_rng_state(states[min(world.rank, len(states) - 1)])
        if cuda and tensors.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(tensors["cuda_rng"])
        version, internal, gauss = st["python_rng"]
        rng.setstate((version, tuple(internal), gauss))
        step, epoch, bi, order = st["step"], st["epoch"], st["batch_index"], st["order"]
        plan["total"], full_total = st["plan_total"], st["full_total"]
        real, padded, losses, history = st["real"], st["padded"], st["losses"], st["log"]
        best, prior_s, stopped_by = st["best"], st["train_seconds"], st["stopped_by"]
        if (resume_from / ckpt.BEST).is_file():
            best_weights = load_file(resume_from / ckpt.BEST)
        resumed_from = step
        ctx.report(Progress(step=step, total=plan["total"], message=f"resumed from {resume_from.name}"))
    log_fh = None
    if world.main:
        # Line-buffered: a killed process leaves every finished step in the log.
        log_fh = open(out_dir / "train_log.jsonl", "w", buffering=1)  # noqa: SIM115 - closed at the end
        for rec in history:
            log_fh.write(json.dumps(rec) + "\n")
    last_saved = step if resume_from is not None else -1
    started = time.monotonic() - prior_s

    def record(rec: dict[str, Any]) -> None:
        history.append(rec)
        if log_fh is not None:
            log_fh.write(json.dumps(rec) + "\n")

    def validate() -> float:
        nonlocal best_weights
        model.eval()
        val = evaluate_loss(inner, val_ex, cfg.micro_batch_size, pad_id, world, amp)
        model.train()
        if best["val_loss"] is None or val < best["val_loss"]:
            best.update(step=step, val_loss=val)
            best_weights = {k: v.detach().to("cpu", copy=True) for k, v in get_peft_model_state_dict(model).items()}
        record({"step": step, "val_loss": val})
        ctx.report(Progress(step=step, total=plan["total"], message="validated",
                            metrics={"val_loss": val, "best_val_loss": best["val_loss"]}))
        return val

    def save_checkpoint() -> None:
        nonlocal last_saved
        if checkpoint_dir is None or step == last_saved or step == 0:
            return
        rng_states = distributed.gather(world, torch.get_rng_state())  # collective: every rank calls it
        last_saved = step
        if not world.main:
            return
        state = {
            "step": step, "epoch": epoch, "batch_index": bi, "order": order, "plan_total": plan["total"],
            "full_total": full_total, "real": real, "padded": padded, "losses": losses, "log": history,
            "best": best, "train_seconds": time.monotonic() - started, "stopped_by": stopped_by,
            "python_rng": list(rng.getstate()), "examples": len(train_ex), "world_size": world.size,
            "config": cfg.model_dump(mode="json"),
        }

        def fill(path: Path) -> None:
            model.save_pretrained(path)
            torch.save({"optimizer": optim.state_dict(), "scheduler": sched.state_dict(),
                        "scaler": scaler.state_dict() if scaler is not None else None, "torch_rng": rng_states,
                        "cuda_rng": torch.cuda.get_rng_state() if cuda else None}, path / ckpt.TENSORS)
            if best_weights is not None:
                save_file(best_weights, path / ckpt.BEST)
            (path / ckpt.STATE).write_text(json.dumps(state))

        saved = ckpt.write(checkpoint_dir, step, fill)
        ckpt.prune(checkpoint_dir, cfg.save_total_limit,
                   {ckpt.name_for(best["step"])} if best["step"] else set())
        if on_checkpoint is not None:
            on_checkpoint(saved)
        ctx.report(Progress(step=step, total=plan["total"], message=f"saved {saved.name}"))

    # -- train --
    try:
        while step < plan["total"]:
            if bi >= len(order):
                epoch, bi, order = epoch + 1, 0, new_order()
            stop = 0.0
            try:
                ctx.check_cancelled()
            except Cancelled:
                if not world.active:
                    raise
                # Ranks must stop at the same step or one waits forever in the all-reduce: each says whether
                # it was asked to stop, the flags travel with the gradients, and all stop after this step.
                stop = 1.0
            group = order[bi:bi + per_step]
            loss_sum, step_real, step_size = 0.0, 0, 0
            for k, b in enumerate(group[world.rank::world.size]):
                if cfg.lora_dropout:
                    # Dropout masks follow the micro-batch (its place in the epoch), not the process: the same
                    # run gives the same curve on 1 or N ranks, and after a restart.
                    torch.manual_seed(cfg.seed * 1_000_003 + epoch * 100_003 + bi + world.rank + k * world.size)
                batch = build_batch(train_ex, b, pad_id, packed)
                dev = world.device
                mask = batch.mask.to(dev) if batch.mask is not None else None
                positions = batch.positions.to(dev) if batch.positions is not None else None
                with amp():
                    loss = causal_lm_loss(inner, batch.ids.to(dev), batch.labels.to(dev), mask, positions) / len(group)
                (scaler.scale(loss) if scaler is not None else loss).backward()
                loss_sum += loss.detach().item()
                step_real += batch.real
                step_size += batch.size
            box_elapsed = time.monotonic() - started
            if world.active:  # gradients, loss and token counts summed over ranks; the time box agrees on one clock
                loss_sum, step_real, step_size, box_elapsed, stop = distributed.sum_grads_and(
                    world, params, [loss_sum, step_real, step_size, box_elapsed, stop])
                box_elapsed /= world.size
            if scaler is not None:
                scaler.unscale_(optim)
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            if scaler is not None:
                scaler.step(optim)
                scaler.update()
            else:
                optim.step()
            sched.step()
            optim.zero_grad(set_to_none=True)
            step += 1
            bi += len(group)
            losses.append(loss_sum)
            real += int(step_real)
            padded += int(step_size)
            elapsed = time.monotonic() - started
            if not world.active:
                box_elapsed = elapsed
            if cfg.max_train_seconds and step >= 3 and step % 5 in (0, 3):
                # Time-boxed: fit the plan to the budget so the schedule (warmup, decay) completes in it;
                # re-fitted as the step time settles (the first steps are slow).
                fit = step + int((cfg.max_train_seconds - box_elapsed) / (box_elapsed / step))
                plan["total"] = max(step, min(full_total, fit))
                stopped_by = "time budget" if plan["total"] < full_total else "schedule"
            tps = real / elapsed if elapsed > 0 else 0.0
            lr = sched.get_last_lr()[0]
            ep = epoch + bi / max(len(order), 1)
            record({"step": step, "epoch": round(ep, 4), "loss": loss_sum, "lr": lr, "tokens": real,
                    "tokens_per_s": tps, "elapsed_s": elapsed})
            ctx.report(Progress(
                step=step, total=plan["total"], loss=loss_sum, tokens_per_s=tps,
                eta_s=(plan["total"] - step) * (elapsed - prior_s) / max(step - resumed_from, 1),
                message=f"epoch {epoch + 1}",
                metrics={"lr": lr, "epoch": ep, "tokens": real, **memory_metrics(cuda)},
            ))
            if eval_every and val_ex and step % eval_every == 0:
                validate()
            if save_every and step % save_every == 0:
                save_checkpoint()
            if stop:
                raise Cancelled("job cancelled")
    except Cancelled:  # raised between steps (the CLI turns Ctrl-C into a cancel), so the state is whole
        save_checkpoint()  # a resubmitted job continues from here
        raise
    train_s = time.monotonic() - started

    # -- save --
    model.eval()
    last_val = float("nan")
    if val_ex:
        done = [r["val_loss"] for r in history if r.get("step") == step and "val_loss" in r]
        last_val = done[-1] if done else validate()
        model.eval()
    save_checkpoint()  # the end state: a job killed while merging or uploading resumes straight to the merge
    if best_weights is not None and best["step"] != step:
        set_peft_model_state_dict(model, best_weights)  # the merged model is the best one by val loss
    mem = memory_metrics(cuda)
    if world.main:
        ctx.report(Progress(step=step, total=plan["total"], message="merging adapter"))
        save_outputs(model, tok, out_dir, merge_source, torch.bfloat16 if compute == torch.bfloat16 else None)
        log_fh.close()
    shutil.rmtree(Path(ctx.workdir) / f"base-fp32-{world.rank}", ignore_errors=True)  # QLoRA: a staged GGUF base
    distributed.cleanup(world)
    tail = losses[-max(1, len(losses) // 10):]
    return {
        "steps": step,
        "epochs": round(step / max(steps_per_epoch, 1), 3),
        "train_loss": sum(tail) / len(tail) if tail else float("nan"),
        "first_loss": losses[0] if losses else float("nan"),
        "val_loss": best["val_loss"] if best["val_loss"] is not None else last_val,
        "last_val_loss": last_val,
        "best_step": best["step"] if best["step"] is not None else step,
        "tokens": real,
        "tokens_per_s": real / train_s if train_s else 0.0,
        "train_seconds": train_s,
        "load_seconds": load_s,
        "padding_efficiency": real / padded if padded else 1.0,
        "examples": len(train_ex),
        "stopped_by": stopped_by,
        "resumed_from_step": resumed_from,
        "world_size": world.size,
        **mem,
    }
