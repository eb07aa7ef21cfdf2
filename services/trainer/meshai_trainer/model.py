"""Base models: the embedded SmolLM2 GGUF, a local HF folder, or an HF hub id (where the hub is reachable).

LoRA trains on the full-precision base; QLoRA loads it as bitsandbytes NF4 with double quantization. Merging
always reloads (or keeps) a full-precision copy: an adapter is never folded into 4-bit weights.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from meshai_common.embedded import EMBEDDED, embedded_gguf
from meshai_common.errors import InvalidInput, NotFound


class NotChecked(NotFound):
    """A base that cannot be checked from here: an HF id without network or token, an s3:// base."""


@dataclass
class BaseInfo:
    linear: set[str]
    layers: int
    max_positions: int | None


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
    if spec.startswith(("/", "./", "../", "~")):
        raise NotFound(f"base_model {spec}: no such folder")
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


def load_tokenizer(spec: str) -> Any:
    """The base's tokenizer alone (no weights): what `train validate` renders the data with."""
    from transformers import AutoTokenizer

    if spec.startswith("s3://"):
        raise NotChecked(f"base_model {spec}: fetched by the trainer service")
    where, kwargs = _source(spec)
    local = kwargs or Path(where).exists()
    try:
        return AutoTokenizer.from_pretrained(where, **kwargs, **({} if local else {"local_files_only": True}))
    except OSError as exc:
        if local:
            raise NotFound(f"base_model {spec!r}: no tokenizer: {str(exc).splitlines()[0]}") from None
        raise NotChecked(f"base_model {spec!r}: tokenizer not in the local HF cache") from None


def load_base(spec: str, dtype: Any = None, *, device: Any = None,
              attn_implementation: str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) for a base spec; the model is dequantized to `dtype` (fp32 by default). The embedded
    GGUF is read from its dequantized copy in the cache (`embedded_folder`) where one can be kept."""
    return _load(spec, *_weights_source(spec), dtype, device, attn_implementation)


def _weights_source(spec: str) -> tuple[str, dict[str, Any]]:
    """_source, with the embedded GGUF replaced by its dequantized copy in the cache where one can be kept."""
    where, kwargs = _source(spec)
    if kwargs:
        try:
            return str(embedded_folder(spec)), {}
        except OSError:
            pass  # a read-only cache: dequantize the GGUF itself, as the copy would have been made
    return where, kwargs


def _load(spec: str, where: str, kwargs: dict[str, Any], dtype: Any = None, device: Any = None,
          attn_implementation: str | None = None) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        tok = AutoTokenizer.from_pretrained(where, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype or torch.float32, **kwargs, **extra)
    except OSError as exc:
        raise NotFound(f"base_model {spec!r} cannot be loaded: {str(exc).splitlines()[0]}") from None
    if "gguf_file" in kwargs:
        # A GGUF-loaded model carries its quantizer; the weights are dequantized, so drop it before saving.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if device is not None and str(device) != "cpu":
        model.to(device)
    return model, tok


def fetch_s3_base(spec: str, store: Any, dest: Path) -> Path:
    """Download an `s3://bucket/prefix` HF folder with the store's credentials, every file sha256-checked.

    Upload a base with the store (`ArtifactStore.put_dir`), which records each file's sha256.
    """
    from dataclasses import replace

    from meshai_common.refs import fetch_prefix
    from meshai_common.store import ArtifactStore

    url = urlparse(spec)
    prefix = url.path.strip("/")
    if url.scheme != "s3" or not url.netloc or not prefix:
        raise InvalidInput(f"base_model {spec}: expected s3://<bucket>/<prefix of an HF model folder>")
    if url.netloc != store.bucket:
        store = ArtifactStore(replace(store.settings, bucket=url.netloc))
    if not store.list(prefix + "/"):
        raise NotFound(f"base_model {spec}: nothing stored under it")
    fetch_prefix(store, prefix, Path(dest))
    if not (Path(dest) / "config.json").is_file():
        raise InvalidInput(f"base_model {spec}: no config.json under it (not an HF model folder)")
    return Path(dest)


def hf_folder(spec: str, cache_root: Path, dtype: Any = None) -> Path:
    """The base as an HF folder (fp16 unless `dtype`) under `cache_root/<content key>`, written once (atomically).

    Loading that folder takes ~2 s where dequantizing the embedded GGUF takes ~26 s: tests and benchmarks that
    start several training processes share one.
    """
    import shutil

    import torch

    dtype = dtype or torch.float16
    suffix = "" if dtype == torch.float16 else "-" + str(dtype).removeprefix("torch.")
    dest = Path(cache_root) / (base_key(spec) + suffix)
    if (dest / "config.json").is_file():
        return dest
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_hf(*_load(spec, *_source(spec)), tmp, dtype=dtype)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if (dest / "config.json").is_file():  # another process got there first
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    return dest


def embedded_folder(spec: str) -> Path:
    """An embedded base dequantized once to an fp32 HF folder under <cache_dir()>/bases: the very weights loading
    the GGUF gives (fp16 would round them), loaded in seconds by every training after the first (dequantizing the
    GGUF took 45 s of each demo training job). OSError when the cache cannot be written."""
    import torch

    from meshai_common.config import cache_dir

    return hf_folder(spec, cache_dir() / "bases", torch.float32)


def nf4_config(compute_dtype: Any) -> Any:
    """QLoRA's quantization: NF4 weights, double-quantized scales, matmuls in `compute_dtype`."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def load_base_4bit(spec: str, compute_dtype: Any, device: Any, staging: Path,
                   attn_implementation: str | None = None, baseline_out: Path | None = None) -> tuple[Any, Any, str]:
    """(NF4 model, tokenizer, full-precision source for the merge) for QLoRA.

    bitsandbytes quantizes while loading safetensors, so a GGUF base is first written to `staging` as an
    fp32 HF folder; that folder is also what the adapter is merged into afterwards. `baseline_out` receives
    the untouched base (fp16), as `load_base` + `save_hf` would write it.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise InvalidInput(f"adapter: qlora needs bitsandbytes ({exc}); pip install -e '.[trainer]'") from None
    where, kwargs = _weights_source(spec)
    if "gguf_file" in kwargs:
        model, tok = load_base(spec)
        save_hf(model, tok, staging, dtype=torch.float32)
        if baseline_out is not None:
            save_hf(model, tok, baseline_out)
        del model
        where, kwargs = str(staging), {}
    elif baseline_out is not None:
        save_hf(*load_base(spec), baseline_out)
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        tok = AutoTokenizer.from_pretrained(where, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            where, quantization_config=nf4_config(compute_dtype), dtype=compute_dtype,
            device_map={"": str(device or "cpu")}, **kwargs, **extra)
    except OSError as exc:
        raise NotFound(f"base_model {spec!r} cannot be loaded: {str(exc).splitlines()[0]}") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok, where if where == str(staging) else spec


def merge_into_base(source: str, adapter_dir: Path) -> Any:
    """Fold a saved adapter into a freshly loaded full-precision (fp32, CPU) copy of the base."""
    from peft import PeftModel

    base, _ = load_base(source)
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()


def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_config(spec: str) -> Any:
    """An HF id's config from the local cache, else the hub; NotChecked when neither can answer."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(spec, local_files_only=True)
    except OSError:
        pass
    if not hub_reachable():
        raise NotChecked(f"base_model {spec!r}: not checked: hub unreachable (and not in the local HF cache)")
    try:
        return AutoConfig.from_pretrained(spec)
    except OSError as exc:
        text = str(exc)
        if any(w in text.lower() for w in ("gated", "401", "restricted", "authenticat")):
            raise NotChecked(f"base_model {spec!r}: not checked: gated on the hub (set HF_TOKEN)") from None
        raise NotFound(f"base_model {spec!r} cannot be resolved: {text.splitlines()[0]}") from None


@lru_cache(maxsize=16)
def inspect_base(spec: str) -> BaseInfo:
    """Layer names, depth and context length without loading weights: checks a config against its model."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if spec.startswith("s3://"):
        raise NotChecked(f"base_model {spec}: not checked here: the trainer checks an s3:// base when it "
                             "downloads it")
    where, kwargs = _source(spec)
    if kwargs or Path(where).exists():
        try:
            config = AutoConfig.from_pretrained(where, **kwargs)
        except OSError as exc:
            raise NotFound(f"base_model {spec!r} cannot be resolved: {str(exc).splitlines()[0]}") from None
    else:
        config = _hub_config(where)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    linear = {name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)}
    return BaseInfo(linear, int(getattr(config, "num_hidden_layers", 0) or 0),
                    getattr(config, "max_position_embeddings", None))


def linear_module_names(spec: str) -> set[str]:
    """Short names of the linear layers (q_proj, ...) without loading weights: checks lora_target_modules."""
    return inspect_base(spec).linear


def save_hf(model: Any, tok: Any, out_dir: Path, dtype: Any = None) -> Path:
    """Save an HF folder (safetensors + tokenizer + chat template) the quantizer converts as-is."""
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dtype = dtype or torch.float16
    # Cast a copy of the weights, not the model: the caller may keep training it in fp32.
    state = {k: v.detach().to("cpu", dtype) for k, v in model.state_dict().items()}
    model.config.dtype = str(dtype).removeprefix("torch.")
    model.save_pretrained(out_dir, state_dict=state, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return out_dir
