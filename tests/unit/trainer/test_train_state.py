"""The loop's state and the resume decisions, without a model: TrainState through a checkpoint and back, where a
resumed run continues its data, which checkpoint `--resume` picks, and what a changed config does."""

from __future__ import annotations

import json
import math
import random

import pytest

from meshai_common.errors import InvalidInput
from meshai_trainer import checkpoint
from meshai_trainer.batches import Example, make_batches, packed_batches
from meshai_trainer.state import TrainState, check_resumable, fit_plan, lr_factor, warmup_for

CONFIG = {"learning_rate": 0.002, "lora_r": 16, "threads": 0, "max_train_seconds": 360, "output_dir": "./outputs"}


def _examples(n: int = 21) -> list[Example]:
    rng = random.Random(5)
    return [Example([1] * k, [1] * k) for k in (rng.randint(5, 40) for _ in range(n))]


def test_train_state_round_trips_through_a_checkpoint_folder(tmp_path):
    rng = random.Random(11)
    rng.random()
    state = TrainState(step=7, epoch=1, batch_index=3, order=[[4, 2], [0, 1], [3]], plan_total=40, full_total=60,
                       real=900, padded=1000, losses=[2.5, 2.25], log=[{"step": 1, "loss": 2.5}],
                       best={"step": 6, "val_loss": 1.75}, train_seconds=12.5, stopped_by="time budget",
                       examples=21, world_size=2, config=dict(CONFIG))
    state.keep_rng(rng)
    checkpoint.write(tmp_path, state.step, lambda path: checkpoint.write_state(path, state))
    folder = tmp_path / checkpoint.name_for(7)
    assert checkpoint.latest_local(tmp_path) == folder
    loaded = checkpoint.load_state(folder)
    assert loaded == state
    # The file is plain JSON with the field names as keys: what older checkpoints hold too.
    raw = json.loads((folder / checkpoint.STATE).read_text())
    assert raw["batch_index"] == 3 and raw["best"] == {"step": 6, "val_loss": 1.75} and raw["order"][2] == [3]
    restored = random.Random(0)
    loaded.restore_rng(restored)
    assert [restored.random() for _ in range(3)] == [rng.random() for _ in range(3)]


def test_a_state_missing_a_key_names_the_checkpoint_and_the_key(tmp_path):
    folder = tmp_path / checkpoint.name_for(3)
    folder.mkdir()
    data = TrainState(step=3).to_json()
    del data["order"]
    (folder / checkpoint.STATE).write_text(json.dumps(data))
    with pytest.raises(InvalidInput, match=rf"{folder}: trainer state lacks order"):
        checkpoint.load_state(folder)


def _walk(state: TrainState, rng: random.Random, examples: list[Example], steps: int, per_step: int,
          packed: bool) -> list[tuple[int, int, str]]:
    """The loop's data position: what each optimizer step trains on (epoch, first batch index, its batches)."""
    def new_order() -> list:
        return packed_batches(examples, 64, 2, rng) if packed else make_batches(examples, 2, rng)

    seen = []
    for _ in range(steps):
        group = state.next_group(per_step, new_order)
        seen.append((state.epoch, state.batch_index, json.dumps(group)))
        state.finish_step(len(group), loss=1.0, real=10, size=12)
    return seen


@pytest.mark.parametrize("packed", [False, True])
def test_a_resumed_run_trains_on_the_batches_the_uninterrupted_run_would_have(tmp_path, packed):
    examples, per_step, seed = _examples(), 3, 42
    # 21 examples in batches of 2 = 11 batches, 3 per step: an epoch ends mid-step, so later steps span epochs.

    def fresh() -> tuple[TrainState, random.Random]:
        rng = random.Random(seed)
        order = packed_batches(examples, 64, 2, rng) if packed else make_batches(examples, 2, rng)
        return TrainState(order=order, plan_total=12, full_total=12, examples=len(examples), config=CONFIG), rng

    state, rng = fresh()
    whole = _walk(state, rng, examples, 12, per_step, packed)
    assert len({epoch for epoch, _, _ in whole}) >= 2

    state, rng = fresh()
    first = _walk(state, rng, examples, 5, per_step, packed)
    state.keep_rng(rng)
    checkpoint.write(tmp_path, state.step, lambda path: checkpoint.write_state(path, state))

    again, rng2 = fresh()  # a new process: setup draws the first epoch's order before the checkpoint is read
    saved = checkpoint.load_state(checkpoint.latest_local(tmp_path))
    check_resumable(saved, dict(CONFIG), len(examples), "ckpt")
    saved.restore_rng(rng2)
    assert (saved.step, saved.epoch, saved.batch_index) == (5, state.epoch, state.batch_index)
    rest = _walk(saved, rng2, examples, 7, per_step, packed)
    assert first + rest == whole
    assert saved.step == 12 and saved.losses == [1.0] * 12


def test_resume_refuses_a_changed_config_or_other_data_but_allows_run_only_keys():
    state = TrainState(examples=21, config=dict(CONFIG))
    check_resumable(state, dict(CONFIG, threads=2, max_train_seconds=None, output_dir="/elsewhere"), 21, "ck")
    with pytest.raises(InvalidInput, match=r"checkpoint ck was written with a different config "
                                           r"\(learning_rate, lora_r changed\)"):
        check_resumable(state, dict(CONFIG, learning_rate=0.001, lora_r=8), 21, "ck")
    with pytest.raises(InvalidInput, match=r"\(seed changed\)"):
        check_resumable(state, dict(CONFIG, seed=1), 21, "ck")  # a key the checkpoint's config lacks
    with pytest.raises(InvalidInput, match="trained on 21 examples, this run has 20"):
        check_resumable(state, dict(CONFIG), 20, "ck")


def test_resume_point_auto_picks_the_newest_whole_checkpoint_and_never_starts_over(tmp_path, capsys):
    from meshai_trainer.cli import _resume_point

    root = tmp_path / "checkpoints"
    for step in (2, 10):
        checkpoint.write(root, step, lambda path, s=step: checkpoint.write_state(path, TrainState(step=s)))
    (root / checkpoint.name_for(12)).mkdir()  # no state file: a folder something else left, not a checkpoint
    (root / ".checkpoint-000014.tmp").mkdir()  # a write that was killed
    assert _resume_point("auto", root, main=True) == root / checkpoint.name_for(10)
    assert _resume_point(str(root / checkpoint.name_for(2)), root, main=True) == root / checkpoint.name_for(2)
    with pytest.raises(InvalidInput, match="not a checkpoint folder"):
        _resume_point(str(root / checkpoint.name_for(12)), root, main=True)
    assert _resume_point("never", root, main=True) is None
    assert not root.exists() and "removing 2 old checkpoint(s)" in capsys.readouterr().err
    assert _resume_point("auto", root, main=True) is None


def test_schedule_warms_up_then_decays_to_zero_at_the_plans_end():
    assert warmup_for(None, 0.05, 100) == 5 and warmup_for(3, None, 100) == 3
    assert [lr_factor(s, 10, 2, "cosine") for s in (0, 1)] == [pytest.approx(1 / 3), pytest.approx(2 / 3)]
    assert lr_factor(2, 10, 2, "cosine") == 1.0
    assert lr_factor(6, 10, 2, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))
    assert lr_factor(10, 10, 2, "cosine") == pytest.approx(0.0)
    assert lr_factor(6, 10, 2, "linear") == pytest.approx(0.5)
    assert lr_factor(9, 10, 0, "constant") == 1.0


def test_the_time_box_fits_the_plan_to_the_speed_so_far():
    # 10 steps in 20 s, 100 s allowed: 40 more steps fit.
    assert fit_plan(10, 20.0, 100.0, full_total=200) == (50, "time budget")
    assert fit_plan(10, 20.0, 100.0, full_total=30) == (30, "schedule")
    assert fit_plan(10, 120.0, 100.0, full_total=200) == (10, "time budget")  # over budget: stop now
