"""The model registry: a model is promoted by writing a small pointer object the gateway follows.

    models/<name>/current.json          the promoted GGUF (key + sha256), its Modelfile, the eval behind it
    models/<name>/history/<ts>.json     every promotion, for audit and rollback
"""

from __future__ import annotations

import re
import time
from typing import Any

from meshai_common.errors import InvalidInput, NotFound
from meshai_common.store import ArtifactStore, StoredObject

MODEL_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def check_model_name(name: str) -> str:
    """Model names become object keys: letters, digits, '.', '_' and '-' only (no path tricks)."""
    base = name.split(":", 1)[0]  # Ollama clients may send "name:tag"; the tag is informational
    if not MODEL_NAME_RE.match(base):
        raise InvalidInput(f"invalid model name {name!r}: use lower-case letters, digits, '.', '_' or '-'")
    return base


def pointer_key(name: str) -> str:
    return f"models/{check_model_name(name)}/current.json"


def _ref(obj: Any) -> dict[str, Any]:
    return {"key": obj.key, "sha256": obj.sha256, "size": int(obj.size)}


def promote(store: ArtifactStore, name: str, *, run_id: str, gguf: Any, modelfile: Any = None,
            eval_results: Any = None, overall: float | None = None) -> StoredObject:
    """Point `name` at a GGUF after checking the object exists with the recorded checksum."""
    stored = store.stat(gguf.key)
    if gguf.sha256 and stored.sha256 and stored.sha256 != gguf.sha256:
        raise InvalidInput(f"refusing to promote {gguf.key}: stored sha256 differs from the one given")
    pointer = {
        "schema": "meshai.pointer/v1",
        "name": check_model_name(name),
        "run_id": run_id,
        "gguf": _ref(gguf),
        "modelfile": _ref(modelfile) if modelfile is not None and modelfile.key else None,
        "eval_results": _ref(eval_results) if eval_results is not None and eval_results.key else None,
        "overall": overall,
        "promoted_unix": time.time(),
    }
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    store.put_json(pointer, f"models/{pointer['name']}/history/{stamp}-{run_id}.json")
    return store.put_json(pointer, pointer_key(name))


def current(store: ArtifactStore, name: str) -> dict[str, Any]:
    """The pointer of the promoted model, or NotFound naming the model."""
    try:
        return store.get_json(pointer_key(name))
    except NotFound:
        raise NotFound(f"model '{name}' not found: nothing promoted under that name yet") from None


def list_models(store: ArtifactStore) -> list[str]:
    return sorted({k.split("/")[1] for k in store.list("models/") if k.endswith("/current.json")})
