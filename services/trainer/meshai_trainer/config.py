"""Training configs: YAML with the Axolotl keys the guide's mesh-ai-1b.yaml uses, plus a few of our own.

An Axolotl user's file loads as-is; an unknown key or a conflicting pair is an error naming the keys (and the
line), and `check_config` reports every problem at once, with notes for what this machine cannot check.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from meshai_common.errors import InvalidInput, NotFound, Unavailable
from meshai_trainer.dataset import dataset_problems, iter_messages

CONFIGS = Path(__file__).resolve().parent / "configs"
CONFLICTS = [("warmup_steps", "warmup_ratio"), ("eval_steps", "evals_per_epoch"), ("save_steps", "saves_per_epoch")]
# Settings that only mean something on a CUDA GPU: noted (not refused) when validating on a machine without one.
GPU_ONLY = {"bf16": "computes in fp32", "fp16": "computes in fp32", "tf32": "has no TF32",
            "flash_attention": "uses PyTorch SDPA attention"}


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
    chat_template: Literal["tokenizer_default", "chatml", "llama3", "jinja"] | None = None
    chat_template_jinja: str | None = None
    sequence_len: int = 512
    sample_packing: bool = False
    pad_to_sequence_len: bool | None = None
    micro_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    val_set_size: float = 0.0
    # Hugging Face's example scripts' cap: validate on at most this many examples (an even spread of the val
    # set), so that a time-boxed recipe does not spend its time on the val loss (98 examples: ~53 s on 2 cores)
    max_eval_samples: int | None = None
    # Axolotl's: processes that tokenize the data (unset: 1 on small data, one per core on large)
    dataset_processes: int | None = None
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
    save_total_limit: int | None = None
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
        for name in ("max_steps", "eval_steps", "evals_per_epoch", "save_steps", "saves_per_epoch",
                     "save_total_limit", "lora_layers", "dataset_processes", "max_eval_samples"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                problems.append(f"{name} must be > 0")
        if self.learning_rate <= 0:
            problems.append("learning_rate must be > 0")
        if not 0 <= self.lora_dropout < 1:
            problems.append("lora_dropout must be in [0, 1)")
        if self.val_set_size < 0:
            problems.append("val_set_size must be >= 0 (a fraction, or a count when >= 1)")
        if self.warmup_ratio is not None and not 0 <= self.warmup_ratio < 1:
            problems.append("warmup_ratio must be in [0, 1)")
        if self.num_epochs <= 0 and not self.max_steps:
            problems.append("num_epochs must be > 0 (or set max_steps)")
        if self.adapter == "qlora" and not self.load_in_4bit:
            problems.append("adapter: qlora needs load_in_4bit: true")
        if self.load_in_4bit and self.adapter != "qlora":
            problems.append("load_in_4bit: true needs adapter: qlora (plain LoRA trains the full-precision base)")
        if self.load_in_8bit:
            problems.append("load_in_8bit is not supported; use adapter: qlora with load_in_4bit: true")
        if self.bf16 is True and self.fp16:
            problems.append("bf16 and fp16 are both set; keep one")
        if self.chat_template == "jinja" and not self.chat_template_jinja:
            problems.append("chat_template: jinja needs chat_template_jinja (the template text)")
        if self.chat_template_jinja and self.chat_template != "jinja":
            problems.append("chat_template_jinja is set but chat_template is not jinja")
        if problems:
            raise ValueError("; ".join(problems))
        return self


@dataclass
class Report:
    """What `meshai train validate` prints: problems (the config will not train) and notes (not checked here)."""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)


def _key_lines(text: str | None) -> dict[str, int]:
    """Top-level key -> line number (1-based), for messages that point into the file."""
    if not text:
        return {}
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}


def _problems(raw: dict[str, Any], source: str, text: str | None = None) -> tuple[TrainConfig | None, list[str]]:
    lines = _key_lines(text)

    def where(key: str) -> str:
        return f"{source}:{lines[key]}" if key in lines else source

    problems = [f"{where(a)}: {a} and {b} are both set; keep one" for a, b in CONFLICTS
                if raw.get(a) is not None and raw.get(b) is not None]
    # Unknown keys are reported and left out, so the values of the known ones are still checked.
    problems += [f"{where(k)}: {k}: unknown key" for k in raw if k not in TrainConfig.model_fields]
    try:
        cfg = TrainConfig(**{k: v for k, v in raw.items() if k in TrainConfig.model_fields})
    except ValidationError as exc:
        for err in exc.errors():
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
            if not err["loc"]:  # the cross-field checks: one message per problem, each starting with its key
                problems += [f"{where(p.split()[0].rstrip(':'))}: {p}" for p in msg.split("; ")]
            else:
                loc = ".".join(str(x) for x in err["loc"])
                problems.append(f"{where(str(err['loc'][0]))}: {loc}: {msg}")
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
    body = text if text is not None else Path(source).read_text()
    raw = parse_yaml(body, source)
    cfg, problems = _problems(apply_overrides(raw, overrides or {}), source, body)
    if problems:
        raise InvalidInput("; ".join(problems))
    assert cfg is not None
    return cfg


def _count_examples(path: Path) -> int:
    return sum(1 for _, msgs, _ in iter_messages(path) if msgs is not None)


def check_config(path: str | Path, check_model: bool = True) -> Report:
    """Every problem with a config file, without training: keys, values, datasets, sizes, model, target modules."""
    report = Report()
    try:
        source = resolve_path(str(path))
        text = source.read_text()
        raw = parse_yaml(text, str(source))
    except (InvalidInput, NotFound) as exc:
        report.problems.append(str(exc))
        return report
    cfg, report.problems = _problems(raw, str(source), text)
    if cfg is None:
        return report
    lines = _key_lines(text)
    at = f"{source}:{lines['datasets']}" if "datasets" in lines else str(source)
    total = 0
    for i, ds in enumerate(cfg.datasets):
        found = dataset_problems(Path(ds.path))
        report.problems += [f"{at}: datasets.{i}.path: {p}" for p in found]
        if not found:
            total += _count_examples(Path(ds.path))
    if cfg.datasets and not report.problems:
        report.facts.append(f"training examples: {total}")
        per_step = cfg.micro_batch_size * cfg.gradient_accumulation_steps
        held = int(cfg.val_set_size) if cfg.val_set_size >= 1 else round(total * cfg.val_set_size)
        if held >= total:
            report.problems.append(f"{source}: val_set_size: {cfg.val_set_size} holds out all {total} examples")
        elif total - held < per_step:
            report.problems.append(f"{source}: micro_batch_size x gradient_accumulation_steps = {per_step} is "
                                   f"more than the {total - held} training examples")
    if check_model:
        _check_model(cfg, str(source), lines, report)
    _check_hardware(cfg, report)
    return report


def _check_model(cfg: TrainConfig, source: str, lines: dict[str, int], report: Report) -> None:
    from meshai_trainer.model import NotChecked, inspect_base

    def at(key: str) -> str:
        return f"{source}:{lines[key]}" if key in lines else source

    try:
        info = inspect_base(cfg.base_model)
    except NotChecked as exc:
        report.notes.append(f"{at('base_model')}: {exc}")
        return
    except (InvalidInput, NotFound) as exc:
        msg = str(exc) if str(exc).startswith("base_model") else f"base_model: {exc}"
        report.problems.append(f"{at('base_model')}: {msg}")
        return
    report.facts.append(f"model: {cfg.base_model} ({info.layers} layers)")
    if not cfg.lora_target_linear:
        missing = [m for m in cfg.lora_target_modules if m not in info.linear]
        if missing:
            report.problems.append(f"{at('lora_target_modules')}: lora_target_modules: {missing} not in the model "
                                   f"(it has {sorted(info.linear)})")
    if cfg.lora_layers and cfg.lora_layers > info.layers:
        report.problems.append(f"{at('lora_layers')}: lora_layers: {cfg.lora_layers} but the model has "
                               f"{info.layers} layers")
    if info.max_positions and cfg.sequence_len > info.max_positions:
        report.problems.append(f"{at('sequence_len')}: sequence_len: {cfg.sequence_len} is longer than the "
                               f"model's context ({info.max_positions})")
    if not report.problems:
        _check_template(cfg, at, report)


# Enough conversations to see how the template and sequence_len treat the data, in seconds, not minutes.
TEMPLATE_SAMPLE = 5000


def _check_template(cfg: TrainConfig, at: Any, report: Report) -> None:
    """The chat template renders the data the way training will, and sequence_len fits it."""
    import itertools
    import statistics

    from meshai_trainer.batches import encode, set_chat_template
    from meshai_trainer.model import load_tokenizer

    try:
        tok = load_tokenizer(cfg.base_model)
    except NotFound as exc:
        report.notes.append(f"{at('base_model')}: chat template not checked: {exc}")
        return
    try:
        set_chat_template(tok, cfg.chat_template, cfg.chat_template_jinja)
    except InvalidInput as exc:
        report.problems.append(f"{at('chat_template')}: {exc}")
        return
    report.facts.append(f"chat template: {cfg.chat_template or 'tokenizer_default'}")
    lengths, answers = [], []
    conversations = ((where, msgs) for ds in cfg.datasets for where, msgs, _ in iter_messages(Path(ds.path))
                     if msgs is not None)
    for where, msgs in itertools.islice(conversations, TEMPLATE_SAMPLE):
        try:
            ex = encode(tok, msgs, 1 << 30)
        except Exception as exc:  # noqa: BLE001 - a template that fails on this data is what we report
            report.problems.append(f"{where}: the chat template cannot render this conversation: {exc}")
            return
        lengths.append(len(ex.ids))
        answers.append(sum(1 for label in ex.labels if label >= 0))
    if not lengths:
        return
    cut = sum(1 for n in lengths if n > cfg.sequence_len)
    report.facts.append(f"tokens per example ({len(lengths)} checked with the chat template): median "
                        f"{statistics.median(lengths):.0f}, max {max(lengths)}; answer tokens median "
                        f"{statistics.median(answers):.0f}")
    if cut:
        share = cut / len(lengths)
        line = (f"{at('sequence_len')}: sequence_len: {cut} of {len(lengths)} examples ({share:.1%}) are longer "
                f"than {cfg.sequence_len} tokens and will be cut (longest {max(lengths)})")
        # A few long outliers are normal; cutting many answers teaches the model to stop mid-sentence.
        (report.problems if share > 0.05 else report.notes).append(line)


def _check_hardware(cfg: TrainConfig, report: Report) -> None:
    import importlib.util

    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    if cuda:
        return
    for key, fallback in GPU_ONLY.items():
        if getattr(cfg, key) is True:
            report.notes.append(f"{key}: needs a CUDA GPU; without one (as here) training {fallback}")
    if cfg.optimizer in BNB_8BIT_OPTIMIZERS:
        report.notes.append(f"optimizer: {cfg.optimizer} needs a CUDA GPU; not usable on this machine")
    if cfg.adapter == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
        report.problems.append("adapter: qlora needs bitsandbytes (pip install -e '.[trainer]')")


BNB_8BIT_OPTIMIZERS = ("adamw_bnb_8bit", "paged_adamw_8bit")


def gpu_settings(cfg: TrainConfig) -> list[str]:
    """The settings of a recipe that only a CUDA GPU honours (a CPU would quietly train another recipe)."""
    found = [f"{key}: true" for key in GPU_ONLY if getattr(cfg, key) is True]
    if cfg.optimizer in BNB_8BIT_OPTIMIZERS:
        found.append(f"optimizer: {cfg.optimizer}")
    return found


def require_cuda(cfg: TrainConfig, name: str) -> None:
    """Refuse a GPU recipe on a machine without CUDA at once, saying why, instead of training on the CPU for
    hours: in a pod this means no GPU was granted or the image has a CPU-only torch."""
    wanted = gpu_settings(cfg)
    if not wanted:
        return
    import torch

    if torch.cuda.is_available():
        return
    visible = {k: os.environ[k] for k in ("NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES") if k in os.environ}
    build = (f"torch {torch.__version__} built for CUDA {torch.version.cuda}" if torch.version.cuda
             else f"torch {torch.__version__} is a CPU-only build (rebuild the image with a CUDA torch)")
    raise Unavailable(
        f"config {name} needs a CUDA GPU ({', '.join(wanted)}) but this trainer sees none: {build}; "
        f"visible devices: {visible or 'none set'} (check the pod's nvidia.com/gpu limit, the device plugin "
        "and the runtime class)")


def validate_config(path: str | Path, check_model: bool = True) -> list[str]:
    """Every problem with a config file (see check_config); empty when it will train."""
    return check_config(path, check_model).problems
