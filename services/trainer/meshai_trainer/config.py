"""Training configs: YAML with the Axolotl keys the guide's mesh-ai-1b.yaml uses, plus a few of our own.

An Axolotl user's file loads as-is; an unknown key or a conflicting pair is an error naming the keys, and
`validate_config` reports every problem at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from meshai_common.errors import InvalidInput, NotFound
from meshai_trainer.dataset import dataset_problems

CONFIGS = Path(__file__).resolve().parent / "configs"
CONFLICTS = [("warmup_steps", "warmup_ratio"), ("eval_steps", "evals_per_epoch"), ("save_steps", "saves_per_epoch")]


class DatasetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    type: str = "chat_template"
    field_messages: str = "messages"


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # model
    base_model: str = "embedded:smollm2"
    adapter: Literal["lora", "qlora"] = "lora"
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    # LoRA
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora_target_linear: bool | None = None
    # Ours: put LoRA only on the top N decoder layers; backward then stops there (about 1.7x faster on CPU).
    lora_layers: int | None = None
    # data and batching
    datasets: list[DatasetSpec] = []
    chat_template: str | None = None
    sequence_len: int = 512
    sample_packing: bool = False
    pad_to_sequence_len: bool | None = None
    micro_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    val_set_size: float = 0.0
    # schedule
    num_epochs: float = 3.0
    max_steps: int | None = None
    learning_rate: float = 1e-3
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int | None = None
    warmup_ratio: float | None = None
    optimizer: Literal["adamw_torch", "adamw_torch_fused", "adamw_bnb_8bit", "paged_adamw_8bit"] = "adamw_torch"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    eval_steps: int | None = None
    evals_per_epoch: int | None = None
    save_steps: int | None = None
    saves_per_epoch: int | None = None
    # precision and kernels (GPU only; the CPU path always computes in fp32)
    bf16: bool | Literal["auto"] = False
    fp16: bool = False
    tf32: bool = False
    flash_attention: bool = False
    gradient_checkpointing: bool = False
    # bookkeeping
    output_dir: str = "./outputs"
    seed: int = 42
    logging_steps: int = 1
    # Ours: stop cleanly after this many seconds of training (the embedded demo's time box).
    max_train_seconds: float | None = None
    threads: int = 0

    @model_validator(mode="after")
    def _ranges(self) -> TrainConfig:
        problems = []
        for name in ("lora_r", "lora_alpha", "sequence_len", "micro_batch_size", "gradient_accumulation_steps"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be > 0")
        if self.learning_rate <= 0:
            problems.append("learning_rate must be > 0")
        if not 0 <= self.lora_dropout < 1:
            problems.append("lora_dropout must be in [0, 1)")
        if self.num_epochs <= 0 and not self.max_steps:
            problems.append("num_epochs must be > 0 (or set max_steps)")
        if self.adapter == "qlora" and not self.load_in_4bit:
            problems.append("adapter: qlora needs load_in_4bit: true")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _conflicts(raw: dict[str, Any]) -> list[str]:
    return [f"{a} and {b} are both set; keep one" for a, b in CONFLICTS
            if raw.get(a) is not None and raw.get(b) is not None]


def _problems(raw: dict[str, Any], source: str) -> tuple[TrainConfig | None, list[str]]:
    problems = [f"{source}: {p}" for p in _conflicts(raw)]
    try:
        cfg = TrainConfig(**raw)
    except ValidationError as exc:
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "config"
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
            problems.append(f"{source}: {loc}: {msg}")
        return None, problems
    return (None if problems else cfg), problems


def resolve_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        if not path.is_file():
            raise NotFound(f"config file {path} does not exist")
        return path
    shipped = CONFIGS / f"{name_or_path}.yaml"
    if not shipped.is_file():
        names = ", ".join(sorted(p.stem for p in CONFIGS.glob("*.yaml")))
        raise NotFound(f"no shipped config named {name_or_path!r} (shipped: {names})")
    return shipped


def parse_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidInput(f"{source}: a config is a mapping of keys, got {type(raw).__name__}")
    return raw


def apply_overrides(raw: dict[str, Any], overrides: dict[str, str]) -> dict[str, Any]:
    out = dict(raw)
    for key, value in (overrides or {}).items():
        out[key] = yaml.safe_load(value) if isinstance(value, str) else value
    return out


def load_config(name_or_path: str = "cpu-smollm2", overrides: dict[str, str] | None = None,
                text: str | None = None) -> TrainConfig:
    """A validated config from YAML text, a file or a shipped name; raises InvalidInput listing every problem."""
    source = "config" if text is not None else str(resolve_path(name_or_path))
    raw = parse_yaml(text if text is not None else Path(source).read_text(), source)
    cfg, problems = _problems(apply_overrides(raw, overrides or {}), source)
    if problems:
        raise InvalidInput("; ".join(problems))
    assert cfg is not None
    return cfg


def validate_config(path: str | Path, check_model: bool = True) -> list[str]:
    """Every problem with a config file, without training: keys, values, datasets, model, target modules."""
    try:
        source = resolve_path(str(path))
        raw = parse_yaml(source.read_text(), str(source))
    except (InvalidInput, NotFound) as exc:
        return [str(exc)]
    cfg, problems = _problems(raw, str(source))
    if cfg is None:
        return problems
    for i, ds in enumerate(cfg.datasets):
        problems += [f"{source}: datasets.{i}.path: {p}" for p in dataset_problems(Path(ds.path))]
    if check_model:
        try:
            from meshai_trainer.model import linear_module_names

            names = linear_module_names(cfg.base_model)
            missing = [m for m in cfg.lora_target_modules if m not in names]
            if missing:
                problems.append(f"{source}: lora_target_modules: {missing} not in the model "
                                f"(it has {sorted(names)})")
        except (InvalidInput, NotFound) as exc:
            problems.append(f"{source}: base_model: {exc}")
    return problems
