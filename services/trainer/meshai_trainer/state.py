"""The training loop's state, which is also a checkpoint's `trainer_state.json`, and the pure decisions on it.

Everything here runs without torch or a model: where a resumed run continues (step, epoch, the epoch's batch
order and the next batch), whether a checkpoint may be resumed with the current config and data, the
learning-rate schedule, and the time box's plan.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshai_common.errors import InvalidInput

# Keys that may change between a checkpoint and the run resuming from it: none of them changes the loss curve.
RESUMABLE_CHANGES = {"max_train_seconds", "threads", "output_dir", "logging_steps", "save_steps", "saves_per_epoch",
                     "save_total_limit", "eval_steps", "evals_per_epoch", "datasets", "dataset_processes",
                     "max_eval_samples"}


def _no_best() -> dict[str, Any]:
    return {"step": None, "val_loss": None}


@dataclass
class TrainState:
    """Where the loop is. The field names are the keys of a checkpoint's trainer_state.json."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # epochs started, 0-based
    batch_index: int = 0  # the next micro-batch of `order`
    order: list[Any] = field(default_factory=list)  # this epoch's batches (example indices, or packed rows)
    plan_total: int = 0  # steps the schedule runs to (the time box may lower it)
    full_total: int = 0  # steps the config asks for
    real: int = 0  # non-padding tokens trained on
    padded: int = 0  # tokens in the batch tensors, padding included
    losses: list[float] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)  # train_log.jsonl's records so far
    best: dict[str, Any] = field(default_factory=_no_best)  # {"step", "val_loss"} of the best val loss
    train_seconds: float = 0.0
    stopped_by: str = "schedule"  # or "time budget"
    python_rng: list[Any] = field(default_factory=list)  # random.Random.getstate() as JSON
    examples: int = 0  # training examples (a resumed run must have as many)
    world_size: int = 1
    config: dict[str, Any] = field(default_factory=dict)  # TrainConfig.model_dump(mode="json")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], where: Path | str = "checkpoint") -> TrainState:
        """Read a trainer_state.json mapping; a missing or unknown key is an error naming the checkpoint."""
        if not isinstance(data, dict):
            raise InvalidInput(f"{where}: trainer state is not a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(names - set(data))
        if missing:
            raise InvalidInput(f"{where}: trainer state lacks {', '.join(missing)}; it was written by an "
                               f"incompatible version; start a new run")
        return cls(**{k: data[k] for k in names})

    # -- the data position --------------------------------------------------------------------------------

    def next_group(self, per_step: int, new_order: Callable[[], list[Any]]) -> list[Any]:
        """The micro-batches of the next optimizer step; starts a new epoch (a fresh order) when this one is done."""
        if self.batch_index >= len(self.order):
            self.epoch, self.batch_index, self.order = self.epoch + 1, 0, new_order()
        return self.order[self.batch_index:self.batch_index + per_step]

    def finish_step(self, group_len: int, loss: float, real: int, size: int) -> None:
        self.step += 1
        self.batch_index += group_len
        self.losses.append(loss)
        self.real += real
        self.padded += size

    @property
    def epoch_progress(self) -> float:
        """Epochs done as a fraction (1.5 = halfway through the second)."""
        return self.epoch + self.batch_index / max(len(self.order), 1)

    # -- python RNG (the batch orders) --------------------------------------------------------------------

    def keep_rng(self, rng: random.Random) -> None:
        version, internal, gauss = rng.getstate()
        self.python_rng = [version, list(internal), gauss]  # as JSON holds it

    def restore_rng(self, rng: random.Random) -> None:
        version, internal, gauss = self.python_rng
        rng.setstate((version, tuple(internal), gauss))


def check_resumable(state: TrainState, config: dict[str, Any], n_examples: int, where: Path | str) -> None:
    """A checkpoint continues only the run that wrote it: same settings (but RESUMABLE_CHANGES), same data size."""
    saved = state.config
    changed = sorted(k for k in set(saved) | set(config)
                     if k not in RESUMABLE_CHANGES and saved.get(k) != config.get(k))
    if changed:
        raise InvalidInput(f"checkpoint {where} was written with a different config ({', '.join(changed)} "
                           f"changed); resume with the same settings, or start over (a new run id; "
                           f"`train run --resume never`)")
    if state.examples != n_examples:
        raise InvalidInput(f"checkpoint {where} was trained on {state.examples} examples, this run has "
                           f"{n_examples}; resume with the same data or start a new run")


# -- schedule ---------------------------------------------------------------------------------------------


def warmup_for(warmup_steps: int | None, warmup_ratio: float | None, total: int) -> int:
    if warmup_steps is not None:
        return warmup_steps
    return math.ceil((warmup_ratio or 0.0) * total)


def lr_factor(step: int, total: int, warmup: int, scheduler: str) -> float:
    """The learning rate's multiplier after `step` scheduler steps: linear warmup, then cosine/linear/constant."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if scheduler == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    return 1 - progress if scheduler == "linear" else 1.0


def every(steps: int | None, per_epoch: int | None, steps_per_epoch: int) -> int:
    """A cadence in optimizer steps from `*_steps` or `*s_per_epoch`; 0 is never."""
    if steps:
        return steps
    return max(1, round(steps_per_epoch / per_epoch)) if per_epoch else 0


def fit_plan(step: int, elapsed_s: float, budget_s: float, full_total: int) -> tuple[int, str]:
    """Time-boxed: the step count that fits the budget at the speed so far, so warmup and decay complete in it."""
    fit = step + int((budget_s - elapsed_s) / (elapsed_s / step))
    total = max(step, min(full_total, fit))
    return total, ("time budget" if total < full_total else "schedule")


def refit_due(step: int) -> bool:
    """Re-fit the plan as the step time settles (the first steps are slow)."""
    return step >= 3 and step % 5 in (0, 3)
