from __future__ import annotations

from pathlib import Path

import pytest

from meshai_common.errors import InvalidInput, NotFound
from meshai_trainer.config import CONFIGS, load_config, validate_config

GUIDE = """
base_model: meta-llama/Llama-3.2-1B-Instruct
adapter: qlora
load_in_4bit: true
lora_r: 16
warmup_steps: 100
warmup_ratio: 0.03
eval_steps: 200
evals_per_epoch: 4
lora_rank: 8
micro_batch_size: 0
"""


def test_every_problem_is_reported_at_once(tmp_path):
    cfg = tmp_path / "guide.yaml"
    cfg.write_text(GUIDE)
    problems = validate_config(cfg, check_model=False)
    text = "\n".join(problems)
    assert "warmup_steps and warmup_ratio are both set" in text
    assert "eval_steps and evals_per_epoch are both set" in text
    assert "lora_rank: unknown key" in text
    assert all(p.startswith(str(cfg)) for p in problems)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_configs_are_valid(path: Path):
    assert validate_config(path, check_model=False) == []


def test_embedded_config_targets_modules_the_model_has():
    assert validate_config("cpu-smollm2") == []


def test_overrides_are_typed_and_checked():
    cfg = load_config("cpu-smollm2", {"max_train_seconds": "60", "lora_r": "8"})
    assert cfg.max_train_seconds == 60 and cfg.lora_r == 8
    with pytest.raises(InvalidInput, match="lora_rank: unknown key"):
        load_config("cpu-smollm2", {"lora_rank": "8"})
    with pytest.raises(InvalidInput, match="qlora needs load_in_4bit"):
        load_config("cpu-smollm2", {"adapter": "qlora"})


def test_unknown_config_name_lists_the_shipped_ones():
    with pytest.raises(NotFound, match="shipped: .*cpu-smollm2"):
        load_config("no-such-recipe")


def test_dataset_problems_name_file_and_line(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
                    "{broken\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"datasets:\n  - path: {data}\n")
    problems = validate_config(cfg, check_model=False)
    assert problems == [f"{cfg}: datasets.0.path: {data}:2: not JSON (Expecting property name enclosed in double quotes)"]
