"""llama.cpp's HF -> GGUF converter, from the very llama.cpp version llama-cpp-python vendors.

The llama-cpp-python sdist carries `vendor/llama.cpp/convert_hf_to_gguf.py` with its `conversion/` package and
`gguf-py/`; converting with the runtime's own copy means converter and runtime always agree on the format.
`python -m meshai_quantizer.converter --cache-dir DIR` prepares it at install time, so no run downloads it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from meshai_common.config import cache_dir
from meshai_common.errors import InvalidInput, Unavailable

WANTED = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")


def llama_cpp_version() -> str:
    from importlib.metadata import version

    return version("llama-cpp-python")


def converter_dir(cache_dir: Path, version: str | None = None) -> Path:
    return Path(cache_dir) / f"llama.cpp-{version or llama_cpp_version()}"


def _find_sdist(version: str, download_dir: Path) -> Path:
    given = os.environ.get("MESHAI_LLAMA_CPP_SDIST")
    if given:
        if not Path(given).is_file():
            raise InvalidInput(f"MESHAI_LLAMA_CPP_SDIST={given} does not exist")
        return Path(given)
    existing = sorted(download_dir.glob(f"llama_cpp_python-{version}.tar.gz"))
    if existing:
        return existing[0]
    download_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(download_dir),
           f"llama-cpp-python=={version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(download_dir.glob(f"llama_cpp_python-{version}.tar.gz"))
    if proc.returncode != 0 or not found:
        raise Unavailable(f"cannot fetch the llama-cpp-python {version} sdist for its converter: "
                          f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    return found[0]


def ensure_converter(cache_dir: Path) -> Path:
    """The folder holding convert_hf_to_gguf.py for the installed llama-cpp-python; extracted once, atomically."""
    version = llama_cpp_version()
    target = converter_dir(cache_dir, version)
    if (target / "convert_hf_to_gguf.py").is_file():
        return target
    sdist = _find_sdist(version, Path(cache_dir) / "sdist")
    root = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".extract-"))
    try:
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers()
                       if m.name.startswith(root) and any(m.name[len(root):].startswith(w) for w in WANTED)]
            if not any(m.name.endswith("convert_hf_to_gguf.py") for m in members):
                raise InvalidInput(f"{sdist} carries no vendor/llama.cpp/convert_hf_to_gguf.py")
            for m in members:
                m.name = m.name[len(root):]
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, members=members, filter="data")
            else:  # Python before 3.11.4 (Debian bookworm's 3.11.2) has no extraction filters: refuse the same
                for m in members:
                    if not (m.isfile() or m.isdir()) or m.name.startswith("/") or ".." in Path(m.name).parts:
                        raise InvalidInput(f"{sdist}: unsafe archive member {m.name!r}")
                tar.extractall(tmp, members=members)
        (tmp / "VERSION").write_text(version + "\n")
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race; theirs is identical
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def default_cache_dir() -> Path:
    """The converter's folder: $MESHAI_CONVERTER_DIR, else the project's model cache (config.cache_dir)."""
    return Path(os.environ.get("MESHAI_CONVERTER_DIR") or cache_dir())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="prepare llama.cpp's converter for the installed llama-cpp-python")
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    args = parser.parse_args(argv)
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    print(ensure_converter(args.cache_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
