"""HF folder -> GGUF f16 (llama.cpp's converter) -> Q4_K_M / Q5_K_M / Q8_0 (llama.cpp's quantizer)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from meshai_common.cpu import available_cpus
from meshai_common.errors import InvalidInput, MeshAIError
from meshai_quantizer.converter import default_cache_dir, ensure_converter

QTYPES = ("Q4_K_M", "Q5_K_M", "Q8_0", "F16")
REQUIRED = ("config.json", "tokenizer.json")


def check_hf_dir(path: Path) -> None:
    if not Path(path).is_dir():
        raise InvalidInput(f"model folder {path} does not exist")
    missing = [f for f in REQUIRED if not (Path(path) / f).is_file()]
    if not any(Path(path).glob("*.safetensors")):
        missing.append("*.safetensors")
    if missing:
        raise InvalidInput(f"model folder {path} is missing {', '.join(missing)}")


def check_qtype(qtype: str) -> str:
    q = (qtype or "Q4_K_M").upper()
    if q not in QTYPES:
        raise InvalidInput(f"unknown quantization {qtype!r}: use one of {', '.join(QTYPES)}")
    return q


def convert_to_gguf(hf_dir: Path, out_path: Path, outtype: str = "f16", cache_dir: Path | None = None) -> Path:
    """Run llama.cpp's convert_hf_to_gguf.py (the runtime's own version) into out_path, atomically."""
    check_hf_dir(hf_dir)
    conv = ensure_converter(cache_dir or default_cache_dir())
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".part")
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(conv / "gguf-py"), str(conv)])}
    cmd = [sys.executable, str(conv / "convert_hf_to_gguf.py"), str(hf_dir), "--outtype", outtype,
           "--outfile", str(tmp)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise MeshAIError(f"GGUF conversion of {hf_dir} failed: {' | '.join(tail)}")
    os.replace(tmp, out_path)
    return out_path


def quantize(f16_path: Path, out_path: Path, qtype: str = "Q4_K_M", threads: int = 0) -> Path:
    """llama_cpp.llama_model_quantize into out_path (atomically), then check the result opens."""
    import llama_cpp

    q = check_qtype(qtype)
    out_path = Path(out_path)
    if q == "F16":
        os.link(f16_path, out_path) if not out_path.exists() else None
        return out_path
    tmp = out_path.with_name(out_path.name + ".part")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{q}")
    params.nthread = threads or available_cpus()
    rc = llama_cpp.llama_model_quantize(str(f16_path).encode(), str(tmp).encode(), params)
    if rc != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise MeshAIError(f"llama.cpp quantization of {f16_path} to {q} failed (code {rc})")
    check_loads(tmp)
    os.replace(tmp, out_path)
    return out_path


def check_loads(path: Path) -> None:
    """Open the GGUF's vocabulary with llama.cpp: catches a broken file before anyone serves it."""
    import llama_cpp

    try:
        llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False).close()
    except Exception as exc:
        raise MeshAIError(f"{path} does not load in llama.cpp: {exc}") from exc


def hf_to_quantized(hf_dir: Path, work: Path, name: str, qtype: str = "Q4_K_M") -> tuple[Path, dict[str, float]]:
    """The whole path for one model; returns the quantized file and timings."""
    out, _, timings = hf_to_gguf_pair(hf_dir, work, name, qtype)
    return out, timings


def hf_to_gguf_pair(hf_dir: Path, work: Path, name: str, qtype: str = "Q4_K_M"
                    ) -> tuple[Path, Path, dict[str, float]]:
    """The quantized file and the F16 file it was made from (kept to measure the quantization loss)."""
    t0 = time.monotonic()
    f16 = convert_to_gguf(hf_dir, Path(work) / f"{name}-F16.gguf")
    t1 = time.monotonic()
    out = quantize(f16, Path(work) / f"{name}-{check_qtype(qtype)}.gguf", qtype)
    return out, f16, {"convert_s": t1 - t0, "quantize_s": time.monotonic() - t1}
