"""The LoRA/QLoRA fine-tuning recipe: `FinetuneRecipe` with setup, train, save_checkpoint, save and cleanup.

    recipe = FinetuneRecipe(cfg, ctx, out_dir, train_path=..., val_path=..., checkpoint_dir=...)
    metrics = recipe.run(resume_from=None)      # setup(), train(), save(), cleanup()

or `train(cfg, train_path, val_path, out_dir, ctx, ...)`, the same in one call. The loop's state is one
`TrainState` (state.py), also what a checkpoint stores: a run restarted from one continues the same loss
curve. Speed on small CPU machines comes from three choices, measured on SmolLM2-135M with 2 cores:
- LoRA on the top `lora_layers` decoder layers only: backward stops there (~1.7x).
- Logits only where the loss is taken (assistant tokens): the 49k-vocab head is ~20% of the FLOPs.
- Length-bucketed batches, or packed rows (`sample_packing`): little padding (the efficiency is reported).

Under torchrun the same loop runs data-parallel (distributed.py). QLoRA trains on an NF4 base; the merge always
goes into a full-precision copy. Curves go to TensorBoard (and MLflow when configured), see curves.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshai_common.errors import Cancelled, InvalidInput
from meshai_common.progress import JobContext, Progress
from meshai_common.sampling import even_spread
from meshai_common.tracking import check_tracking
from meshai_trainer import checkpoint as ckpt
from meshai_trainer import modeling
from meshai_trainer import state as loop
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
from meshai_trainer.curves import ProgressLines, TrainingCurves
from meshai_trainer.dataset import read_messages, split_val, tokenize, trainable
from meshai_trainer.modeling import apply_lora, causal_lm_loss, compute_dtype, evaluate_loss, save_outputs
from meshai_trainer.state import TrainState

__all__ = ["IGNORE", "Example", "FinetuneRecipe", "TrainState", "apply_lora", "causal_lm_loss", "collate",
           "compute_dtype", "encode", "evaluate_loss", "make_batches", "save_outputs", "split_val", "train"]

log = logging.getLogger(__name__)

OnCheckpoint = Callable[[Path], None]


class FinetuneRecipe:
    """One fine-tuning run. `setup` loads the model and data (and a checkpoint to resume from), `train` runs
    the loop, `save_checkpoint` writes the state on the save schedule, `save` writes adapter/ and merged/,
    `cleanup` closes what the run opened. Writes `out_dir/train_log.jsonl` and `out_dir/tensorboard/`.

    `base_out`, when given, receives the untouched base as an HF folder (the quantizer's baseline).
    `checkpoint_dir` turns checkpoints on: on the save schedule, at the end, and when the run is cancelled or
    interrupted; `on_checkpoint(path)` runs after each is written.
    """

    def __init__(self, cfg: TrainConfig, ctx: JobContext, out_dir: Path, *, train_path: Path,
                 val_path: Path | None = None, base_out: Path | None = None, checkpoint_dir: Path | None = None,
                 on_checkpoint: OnCheckpoint | None = None, progress_lines: ProgressLines | None = None) -> None:
        self.cfg, self.ctx = cfg, ctx
        self.out_dir = Path(out_dir)
        self.train_path, self.val_path = Path(train_path), (Path(val_path) if val_path else None)
        self.base_out, self.checkpoint_dir, self.on_checkpoint = base_out, checkpoint_dir, on_checkpoint
        self.lines = progress_lines
        self.state = TrainState()
        self.log_fh: Any = None
        self.curves: TrainingCurves | None = None
        self.world: Any = None
        self.best_weights: dict[str, Any] | None = None
        self.resumed_from, self.last_saved = 0, -1
        self.prior_s = self.load_s = self.train_s = 0.0  # train time before a resume; loading; training
        self.last_val = float("nan")

    # -- setup ------------------------------------------------------------------------------------------------

    def setup(self, resume_from: Path | None = None) -> None:
        import torch

        from meshai_trainer import distributed

        cfg = self.cfg
        self.world = distributed.setup()
        self.cuda = self.world.device.type == "cuda"
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if self.cuda and cfg.tf32:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.compute = compute_dtype(cfg, self.cuda)
        torch.manual_seed(cfg.seed)
        self.rng = random.Random(cfg.seed)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.lines is None:
            self.lines = ProgressLines.for_stderr() if self.world.main else ProgressLines(None)
        if self.world.main:
            check_tracking()  # before minutes of loading, not after
        self._load_model()
        self._load_data()
        self._setup_optimizer()
        self._plan()
        self._setup_schedule()
        # Every rank continues from rank 0's checkpoint; one on another machine receives its files from rank 0.
        resume_from = distributed.share_checkpoint(self.world, Path(resume_from) if resume_from else None,
                                                   Path(self.ctx.workdir) / f"resume-rank{self.world.rank}")
        if resume_from is not None:
            self._resume(resume_from)
        self._open_outputs()

    def _load_model(self) -> None:
        self.ctx.report(Progress(message=f"loading {self.cfg.base_model}"))
        t_load = time.monotonic()
        # merge_source: QLoRA's full-precision base, which the adapter is merged into
        self.model, self.tok, self.merge_source = modeling.load_for_training(
            self.cfg, self.world, self.compute, self._staging_dir(), self.base_out if self.world.main else None)
        self.load_s = time.monotonic() - t_load
        set_chat_template(self.tok, self.cfg.chat_template, self.cfg.chat_template_jinja)

    def _staging_dir(self) -> Path:
        return Path(self.ctx.workdir) / f"base-fp32-{self.world.rank}"

    def _load_data(self) -> None:
        cfg = self.cfg
        train_rows = read_messages(self.train_path)
        val_rows = read_messages(self.val_path) if self.val_path else []
        if not val_rows and cfg.val_set_size:
            train_rows, val_rows = split_val(train_rows, cfg.val_set_size, cfg.seed)
        cache = Path(self.ctx.workdir) / "datasets"
        self.train_ex = trainable(tokenize(train_rows, self.tok, cfg.sequence_len, cache, cfg.dataset_processes))
        self.val_ex = trainable(tokenize(val_rows, self.tok, cfg.sequence_len, cache, cfg.dataset_processes))
        self.val_ex = even_spread(self.val_ex, cfg.max_eval_samples or 0)
        if not self.train_ex:
            raise InvalidInput(f"no training example keeps an answer token within sequence_len={cfg.sequence_len}")

    def _setup_optimizer(self) -> None:
        from meshai_trainer import distributed

        cfg = self.cfg
        self.model = apply_lora(self.model, cfg)
        self.model.train()
        self.inner = self.model.base_model.model  # the causal LM with LoRA layers injected
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optim = modeling.make_optimizer(cfg, self.params, self.cuda)
        # The training forward: under DistributedDataParallel with several ranks (which starts them all from rank
        # 0's adapter weights). Evaluation, checkpoints and the merge use the unwrapped `self.model`.
        self.loss_fn = distributed.wrap(self.world, modeling.loss_module(self.inner))

    def _setup_schedule(self) -> None:
        import torch

        cfg, state = self.cfg, self.state
        # A plain function (not a bound method): LambdaLR then leaves it out of its state_dict.
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.optim, lambda step: loop.lr_factor(
            step, state.plan_total, loop.warmup_for(cfg.warmup_steps, cfg.warmup_ratio, state.plan_total),
            cfg.lr_scheduler))
        self.scaler = torch.amp.GradScaler("cuda") if self.compute == torch.float16 else None
        compute = self.compute
        self.amp = ((lambda: torch.autocast("cuda", dtype=compute)) if compute != torch.float32
                    else contextlib.nullcontext)

    def _new_order(self) -> list[Any]:
        if self.cfg.sample_packing:
            return packed_batches(self.train_ex, self.cfg.sequence_len, self.cfg.micro_batch_size, self.rng)
        return make_batches(self.train_ex, self.cfg.micro_batch_size, self.rng)

    def _plan(self) -> None:
        """The first epoch's order, steps per epoch, the schedule's length and the eval/save cadences."""
        cfg, st = self.cfg, self.state
        self.per_step = cfg.gradient_accumulation_steps * self.world.size  # micro-batches per step, all ranks
        st.order = self._new_order()
        if cfg.sample_packing:
            self.steps_per_epoch = math.ceil(len(st.order) / self.per_step)
            rows = sum(len(b) for b in st.order)
            fill = sum(len(e.ids) for e in self.train_ex) / (rows * cfg.sequence_len)
            msg = (f"packed {len(self.train_ex)} examples into {rows} rows of {cfg.sequence_len} tokens: "
                   f"{fill:.1%} real tokens")
            log.info(msg)
            self.ctx.report(Progress(message=msg, metrics={"packing_efficiency": fill}))
        else:
            self.steps_per_epoch = math.ceil(math.ceil(len(self.train_ex) / cfg.micro_batch_size) / self.per_step)
        st.full_total = cfg.max_steps or max(1, math.ceil(self.steps_per_epoch * cfg.num_epochs))
        st.plan_total = st.full_total
        st.examples, st.world_size, st.config = len(self.train_ex), self.world.size, cfg.model_dump(mode="json")
        self.eval_every = loop.every(cfg.eval_steps, cfg.evals_per_epoch, self.steps_per_epoch)
        self.save_every = (loop.every(cfg.save_steps, cfg.saves_per_epoch, self.steps_per_epoch)
                           if self.checkpoint_dir else 0)

    def _resume(self, where: Path) -> None:
        saved = ckpt.load_state(where)
        loop.check_resumable(saved, self.cfg.model_dump(mode="json"), len(self.train_ex), where)
        self.best_weights = ckpt.restore_training(where, self.model, self.optim, self.sched, self.scaler,
                                                  self.world.rank, self.cuda)
        saved.restore_rng(self.rng)
        # The run's identity is this run's (the same, checked above, but for the resumable keys).
        saved.examples, saved.world_size, saved.config = self.state.examples, self.world.size, self.state.config
        self.state.__dict__.update(saved.__dict__)  # in place: the scheduler's lambda holds this object
        self.prior_s = saved.train_seconds
        self.resumed_from = self.last_saved = saved.step
        self.ctx.report(Progress(step=saved.step, total=saved.plan_total, message=f"resumed from {where.name}"))

    def _open_outputs(self) -> None:
        if not self.world.main:
            return
        # Line-buffered: a killed process leaves every finished step in the log.
        self.log_fh = open(self.out_dir / "train_log.jsonl", "w", buffering=1)  # noqa: SIM115 - closed in cleanup
        for rec in self.state.log:
            self.log_fh.write(json.dumps(rec) + "\n")
        run_id = getattr(self.ctx, "run_id", None) or self.out_dir.resolve().name
        params = {**self.state.config, "examples": len(self.train_ex), "val_examples": len(self.val_ex),
                  "world_size": self.world.size}
        self.curves = TrainingCurves(self.out_dir, run_id, params, mlflow_every=self.cfg.logging_steps)
        self.curves.replay(self.state.log)

    # -- train ------------------------------------------------------------------------------------------------

    def train(self) -> None:
        """Optimizer steps until the plan is done. Cancelled (between steps) saves a checkpoint and re-raises."""
        self.started = time.monotonic() - self.prior_s
        try:
            while self.state.step < self.state.plan_total:
                stop = self._step()
                if self.eval_every and self.val_ex and self.state.step % self.eval_every == 0:
                    self.validate()
                if self.save_every and self.state.step % self.save_every == 0:
                    self.save_checkpoint()
                if stop:
                    raise Cancelled("job cancelled")
        except Cancelled:  # raised between steps (the CLI turns Ctrl-C into a cancel), so the state is whole
            self.save_checkpoint()  # a resubmitted job continues from here
            raise
        self.train_s = time.monotonic() - self.started

    def _step(self) -> float:
        """One optimizer step over `per_step` micro-batches (this rank's share); returns the agreed stop flag."""
        import torch

        from meshai_trainer import distributed

        cfg, st, world = self.cfg, self.state, self.world
        group = st.next_group(self.per_step, self._new_order)
        stop = 0.0
        try:
            self.ctx.check_cancelled()
        except Cancelled:
            if not world.active:
                raise
            # Ranks must stop at the same step or one waits forever in the next collective: each says whether it
            # was asked to stop, the flags are summed with the step's loss, and all stop after this step.
            stop = 1.0
        mine = group[world.rank::world.size]
        todo = mine or group[:1]  # no micro-batch (an epoch's short last step): a pass weighted 0 joins the all-reduce
        loss_sum, step_real, step_size = 0.0, 0, 0
        for k, b in enumerate(todo):
            if cfg.lora_dropout:
                # Dropout masks follow the micro-batch (its place in the epoch), not the process: the same run
                # gives the same curve on 1 or N ranks, and after a restart.
                torch.manual_seed(cfg.seed * 1_000_003 + st.epoch * 100_003 + st.batch_index + world.rank
                                  + k * world.size)
            batch = build_batch(self.train_ex, b, self.tok.pad_token_id, cfg.sample_packing)
            dev = world.device
            mask = batch.mask.to(dev) if batch.mask is not None else None
            positions = batch.positions.to(dev) if batch.positions is not None else None
            # Gradients are reduced across ranks once per optimizer step: on the last micro-batch only.
            last = k == len(todo) - 1
            with contextlib.nullcontext() if last or not world.active else self.loss_fn.no_sync():
                with self.amp():
                    loss = self.loss_fn(batch.ids.to(dev), batch.labels.to(dev), mask, positions) / len(group)
                loss_sum += loss.detach().item() if mine else 0.0
                if world.active:  # DDP averages over ranks: times N, the update is one rank's over the whole group
                    loss = loss * (world.size if mine else 0.0)
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            if mine:
                step_real += batch.real
                step_size += batch.size
        box_elapsed = time.monotonic() - self.started
        if world.active:  # the logged loss and token counts are the step's; the time box agrees on one clock
            loss_sum, step_real, step_size, box_elapsed, stop = distributed.sum_values(
                world, [loss_sum, step_real, step_size, box_elapsed, stop])
            box_elapsed /= world.size
        self._apply_gradients()
        st.finish_step(len(group), loss_sum, int(step_real), int(step_size))
        elapsed = time.monotonic() - self.started
        if not world.active:
            box_elapsed = elapsed
        if cfg.max_train_seconds and loop.refit_due(st.step):
            st.plan_total, st.stopped_by = loop.fit_plan(st.step, box_elapsed, cfg.max_train_seconds,
                                                         st.full_total)
        self._report_step(loss_sum, elapsed)
        return stop

    def _apply_gradients(self) -> None:
        import torch

        if self.scaler is not None:
            self.scaler.unscale_(self.optim)
        torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optim)
            self.scaler.update()
        else:
            self.optim.step()
        self.sched.step()
        self.optim.zero_grad(set_to_none=True)

    def _report_step(self, loss: float, elapsed: float) -> None:
        st = self.state
        tps = st.real / elapsed if elapsed > 0 else 0.0
        lr = self.sched.get_last_lr()[0]
        ep = st.epoch_progress
        self._record({"step": st.step, "epoch": round(ep, 4), "loss": loss, "lr": lr, "tokens": st.real,
                      "tokens_per_s": tps, "elapsed_s": elapsed})
        memory = modeling.memory_metrics(self.cuda)
        progress = Progress(
            step=st.step, total=st.plan_total, loss=loss, tokens_per_s=tps,
            eta_s=(st.plan_total - st.step) * (elapsed - self.prior_s) / max(st.step - self.resumed_from, 1),
            message=f"epoch {st.epoch + 1}", metrics={"lr": lr, "epoch": ep, "tokens": st.real, **memory})
        self.ctx.report(progress)
        self.lines.report(progress)
        if self.curves is not None:
            self.curves.log(st.step, {"loss": loss, "lr": lr, "epoch": ep, "tokens_per_s": tps, **memory})

    def _record(self, rec: dict[str, Any]) -> None:
        self.state.log.append(rec)
        if self.log_fh is not None:
            self.log_fh.write(json.dumps(rec) + "\n")

    def validate(self) -> float:
        """Val loss now (all ranks); keeps the adapter weights when it is the best so far."""
        from peft import get_peft_model_state_dict

        st = self.state
        self.model.eval()
        val = evaluate_loss(self.inner, self.val_ex, self.cfg.micro_batch_size, self.tok.pad_token_id, self.world,
                            self.amp)
        self.model.train()
        if st.best["val_loss"] is None or val < st.best["val_loss"]:
            st.best.update(step=st.step, val_loss=val)
            self.best_weights = {k: v.detach().to("cpu", copy=True)
                                 for k, v in get_peft_model_state_dict(self.model).items()}
        self._record({"step": st.step, "val_loss": val})
        progress = Progress(step=st.step, total=st.plan_total, message="validated",
                            metrics={"val_loss": val, "best_val_loss": st.best["val_loss"]})
        self.ctx.report(progress)
        self.lines.report(progress)
        if self.curves is not None:
            self.curves.log(st.step, {"val_loss": val})
        return val

    # -- save -------------------------------------------------------------------------------------------------

    def save_checkpoint(self) -> Path | None:
        """checkpoint-<step> with the state, adapter, optimizer and RNGs (a collective: every rank calls it)."""
        import torch

        from meshai_trainer import distributed

        st = self.state
        if self.checkpoint_dir is None or st.step == self.last_saved or st.step == 0:
            return None
        rng_states = distributed.gather(self.world, torch.get_rng_state())
        self.last_saved = st.step
        if not self.world.main:
            return None
        st.train_seconds = time.monotonic() - self.started
        st.keep_rng(self.rng)

        def fill(path: Path) -> None:
            ckpt.save_training(path, st, self.model, self.optim, self.sched, self.scaler, rng_states, self.cuda,
                               self.best_weights)

        saved = ckpt.write(self.checkpoint_dir, st.step, fill)
        ckpt.prune(self.checkpoint_dir, self.cfg.save_total_limit,
                   {ckpt.name_for(st.best["step"])} if st.best["step"] else set())
        if self.on_checkpoint is not None:
            self.on_checkpoint(saved)
        self.ctx.report(Progress(step=st.step, total=st.plan_total, message=f"saved {saved.name}"))
        return saved

    def save(self) -> None:
        """The end: last val loss, the final checkpoint, then the best adapter merged into `out_dir/merged`."""
        import torch
        from peft import set_peft_model_state_dict

        st = self.state
        self.model.eval()
        if self.val_ex:
            done = [r["val_loss"] for r in st.log if r.get("step") == st.step and "val_loss" in r]
            self.last_val = done[-1] if done else self.validate()
            self.model.eval()
        self.save_checkpoint()  # the end state: a job killed while merging or uploading resumes straight to the merge
        if self.best_weights is not None and st.best["step"] != st.step:
            set_peft_model_state_dict(self.model, self.best_weights)  # the merged model is the best by val loss
        self.end_memory = modeling.memory_metrics(self.cuda)
        if self.world.main:
            self.ctx.report(Progress(step=st.step, total=st.plan_total, message="merging adapter"))
            save_outputs(self.model, self.tok, self.out_dir, self.merge_source,
                         torch.bfloat16 if self.compute == torch.bfloat16 else None)

    def metrics(self) -> dict[str, Any]:
        st = self.state
        tail = st.losses[-max(1, len(st.losses) // 10):]
        return {
            "steps": st.step,
            "epochs": round(st.step / max(self.steps_per_epoch, 1), 3),
            "train_loss": sum(tail) / len(tail) if tail else float("nan"),
            "first_loss": st.losses[0] if st.losses else float("nan"),
            "val_loss": st.best["val_loss"] if st.best["val_loss"] is not None else self.last_val,
            "last_val_loss": self.last_val,
            "best_step": st.best["step"] if st.best["step"] is not None else st.step,
            "tokens": st.real,
            "tokens_per_s": st.real / self.train_s if self.train_s else 0.0,
            "train_seconds": self.train_s,
            "load_seconds": self.load_s,
            "padding_efficiency": st.real / st.padded if st.padded else 1.0,
            "examples": len(self.train_ex),
            "stopped_by": st.stopped_by,
            "resumed_from_step": self.resumed_from,
            "world_size": self.world.size,
            **getattr(self, "end_memory", {}),
        }

    def cleanup(self, status: str = "FINISHED", summary: dict[str, Any] | None = None) -> None:
        """Close the log and curves (MLflow status FINISHED, FAILED or KILLED), drop QLoRA's staged base, and
        leave the process group."""
        from meshai_trainer import distributed

        if self.log_fh is not None:
            self.log_fh.close()
            self.log_fh = None
        if self.curves is not None:
            self.curves.close(status, summary, self.state.step)
            self.curves = None
        if self.world is not None:
            shutil.rmtree(self._staging_dir(), ignore_errors=True)
            distributed.cleanup(self.world)

    def run(self, resume_from: Path | None = None) -> dict[str, Any]:
        """setup, train, save, cleanup; returns the run's metrics."""
        status, summary = "FAILED", None
        try:
            self.setup(resume_from)
            self.train()
            self.save()
            summary, status = self.metrics(), "FINISHED"
            return summary
        except Cancelled:
            status = "KILLED"
            raise
        finally:
            self.cleanup(status, summary)


def train(cfg: TrainConfig, train_path: Path, val_path: Path | None, out_dir: Path, ctx: JobContext,
          base_out: Path | None = None, *, checkpoint_dir: Path | None = None, resume_from: Path | None = None,
          on_checkpoint: OnCheckpoint | None = None) -> dict[str, Any]:
    """Fine-tune, then write `out_dir/adapter` (PEFT), `out_dir/merged` (HF safetensors), a step log and
    TensorBoard curves: `FinetuneRecipe(...).run(resume_from)`. `resume_from` is a checkpoint folder."""
    recipe = FinetuneRecipe(cfg, ctx, out_dir, train_path=train_path, val_path=val_path, base_out=base_out,
                            checkpoint_dir=checkpoint_dir, on_checkpoint=on_checkpoint)
    return recipe.run(resume_from)
