from __future__ import annotations

from pathlib import Path

import pytest

from meshai_common.errors import InvalidInput, NotFound
from meshai_trainer.config import CONFIGS, check_config, load_config, validate_config

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

# The keys of the guide's mesh-ai-1b.yaml (Axolotl): an Axolotl user's file must load with every one of them.
AXOLOTL_KEYS = """
base_model: embedded:smollm2
adapter: lora
load_in_4bit: false
lora_r: 8
lora_alpha: 16
lora_dropout: 0.05
lora_target_modules: [q_proj, v_proj]
lora_target_linear: false
sequence_len: 256
sample_packing: true
pad_to_sequence_len: true
micro_batch_size: 2
gradient_accumulation_steps: 4
num_epochs: 1
learning_rate: 0.0002
lr_scheduler: cosine
warmup_steps: 10
optimizer: adamw_torch
val_set_size: 0.05
eval_steps: 50
save_steps: 50
save_total_limit: 2
bf16: auto
tf32: false
flash_attention: false
gradient_checkpointing: false
chat_template: chatml
datasets:
  - path: data/train.jsonl
    type: chat_template
output_dir: ./outputs/x
"""


def test_every_problem_is_reported_at_once_with_its_line(tmp_path):
    cfg = tmp_path / "guide.yaml"
    cfg.write_text(GUIDE)
    problems = validate_config(cfg, check_model=False)
    assert f"{cfg}:6: warmup_steps and warmup_ratio are both set; keep one" in problems
    assert f"{cfg}:8: eval_steps and evals_per_epoch are both set; keep one" in problems
    assert f"{cfg}:10: lora_rank: unknown key" in problems
    # An unknown key does not hide the value problems of the known ones.
    assert f"{cfg}:11: micro_batch_size must be > 0" in problems
    assert len(problems) == 4


def test_the_guides_axolotl_keys_all_load():
    cfg = load_config(text=AXOLOTL_KEYS)
    assert cfg.sample_packing and cfg.chat_template == "chatml" and cfg.datasets[0].path == "data/train.jsonl"


@pytest.mark.parametrize(("change", "fragment"), [
    ({"load_in_4bit": "true"}, "load_in_4bit: true needs adapter: qlora"),
    ({"adapter": "qlora"}, "adapter: qlora needs load_in_4bit: true"),
    ({"load_in_8bit": "true"}, "load_in_8bit is not supported"),
    ({"chat_template": "vicuna"}, "chat_template: Input should be"),
    ({"chat_template": "jinja"}, "chat_template: jinja needs chat_template_jinja"),
    ({"save_steps": "0"}, "save_steps must be > 0"),
    ({"max_eval_samples": "0"}, "max_eval_samples must be > 0"),
    ({"bf16": "true", "fp16": "true"}, "bf16 and fp16 are both set"),
])
def test_bad_values_name_their_key(change, fragment):
    with pytest.raises(InvalidInput, match=fragment):
        load_config(text=AXOLOTL_KEYS, overrides=change)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_configs_are_valid(path: Path):
    """Every shipped recipe, model included; an HF id this machine cannot reach is a note, never a pass by omission."""
    report = check_config(path)
    assert report.problems == []
    base = load_config(str(path)).base_model
    if base.startswith("embedded:"):
        assert any(f.startswith("model: ") for f in report.facts)
        assert not any("base_model" in n for n in report.notes)
    else:
        assert any(f.startswith("model: ") for f in report.facts) or \
            any("base_model" in n and "not checked" in n for n in report.notes)


def test_shipped_names_include_cpu_gpu_and_the_guides_recipe():
    assert {p.stem for p in CONFIGS.glob("*.yaml")} >= {"cpu-smollm2", "gpu-smollm2", "mesh-ai-1b"}
    gpu = load_config("gpu-smollm2")
    assert gpu.adapter == "qlora" and gpu.load_in_4bit and gpu.bf16 is True and gpu.sample_packing
    cpu = load_config("cpu-smollm2")
    assert cpu.adapter == "lora" and not cpu.sample_packing and 0 < cpu.max_train_seconds <= 420  # demo time box


@pytest.mark.slow  # the embedded model's weights
def test_model_checks_name_what_is_missing(tmp_path, smollm2_dir):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"base_model: {smollm2_dir}\nlora_target_modules: [q_proj, qkv]\nlora_layers: 31\n"
                   "sequence_len: 100000\n")
    problems = "\n".join(validate_config(cfg))
    assert f"{cfg}:2: lora_target_modules: ['qkv'] not in the model" in problems
    assert f"{cfg}:3: lora_layers: 31 but the model has 30 layers" in problems
    assert f"{cfg}:4: sequence_len: 100000 is longer than the model's context" in problems
    cfg.write_text("base_model: ./no/such/folder\n")
    assert validate_config(cfg) == [f"{cfg}:1: base_model ./no/such/folder: no such folder"]


@pytest.mark.slow  # the embedded model's weights
def test_the_chat_template_is_rendered_on_the_data(tmp_path, smollm2_dir, chat_data):
    from meshai_trainer.config import check_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"base_model: {smollm2_dir}\ndatasets:\n  - path: {chat_data[0]}\nmicro_batch_size: 2\n"
                   "sequence_len: 256\n")
    report = check_config(cfg)
    assert report.problems == []
    assert "chat template: tokenizer_default" in report.facts
    assert any(f.startswith("tokens per example (16 checked with the chat template): median") for f in report.facts)
    # Most answers cut short by sequence_len: a problem naming the key's line, the share and the longest.
    cfg.write_text(cfg.read_text().replace("sequence_len: 256", "sequence_len: 12"))
    [problem] = check_config(cfg).problems
    assert problem.startswith(f"{cfg}:5: sequence_len: 16 of 16 examples (100.0%) are longer than 12 tokens")
    cfg.write_text(cfg.read_text() + "chat_template: jinja\nchat_template_jinja: '{{ messages[0].nope() }}'\n")
    [problem] = check_config(cfg).problems
    assert f"{chat_data[0]}:1: the chat template cannot render this conversation" in problem


def test_sizes_are_checked_against_the_data(tmp_path, chat_data):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"datasets:\n  - path: {chat_data[1]}\nmicro_batch_size: 4\ngradient_accumulation_steps: 2\n")
    assert validate_config(cfg, check_model=False) == [
        f"{cfg}: micro_batch_size x gradient_accumulation_steps = 8 is more than the 6 training examples"]
    cfg.write_text(f"datasets:\n  - path: {chat_data[1]}\nval_set_size: 6\nmicro_batch_size: 1\n")
    assert validate_config(cfg, check_model=False) == [f"{cfg}: val_set_size: 6.0 holds out all 6 examples"]


def test_validate_command_prints_problems_notes_and_facts(tmp_path, chat_data, capsys):
    from meshai_trainer.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"datasets:\n  - path: {chat_data[0]}\nmicro_batch_size: 2\nbf16: true\n")
    assert main(["train", "validate", str(cfg), "--no-model"]) == 0
    out = capsys.readouterr().out
    assert "training examples: 16" in out and out.rstrip().endswith(f"{cfg}: valid")
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    assert ("note: bf16: needs a CUDA GPU" in out) is not cuda
    cfg.write_text("lora_rank: 8\nwarmup_steps: 1\nwarmup_ratio: 0.1\n")
    assert main(["train", "validate", str(cfg), "--no-model"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{cfg}:2: warmup_steps and warmup_ratio are both set; keep one", f"{cfg}:1: lora_rank: unknown key"]


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
    assert problems == [f"{cfg}:1: datasets.0.path: {data}:2: not JSON (Expecting property name enclosed in double quotes)"]


def test_a_gpu_recipe_is_refused_at_once_where_there_is_no_cuda(monkeypatch):
    import torch

    from meshai_common.errors import Unavailable
    from meshai_trainer.config import gpu_settings, require_cuda

    gpu, cpu = load_config("gpu-smollm2"), load_config("cpu-smollm2")
    assert "bf16: true" in gpu_settings(gpu) and gpu_settings(cpu) == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    require_cuda(cpu, "cpu-smollm2")  # a CPU recipe needs nothing
    with pytest.raises(Unavailable, match=r"config gpu-smollm2 needs a CUDA GPU \(bf16: true.*visible devices"):
        require_cuda(gpu, "gpu-smollm2")
