"""The model registry: a model is promoted by writing a small pointer object the gateway follows.

    models/<name>/current.json          the promoted GGUF (key + sha256), its Modelfile, the eval behind it
    models/<name>/history/<ts>.json     every promotion and every rollback, for audit and rollback

A rollback copies an earlier promotion back into current.json (with a `rollback` record saying when, why and
from which run) and adds a history entry; promotions themselves are never rewritten or removed.
"""

from __future__ import annotations

import getpass
import re
import socket
import time
import uuid
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


def history_prefix(name: str) -> str:
    return f"models/{check_model_name(name)}/history/"


def _stamp(unix: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(unix))


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
    store.put_json(pointer, f"{history_prefix(name)}{_stamp(pointer['promoted_unix'])}-{run_id}.json")
    return store.put_json(pointer, pointer_key(name))


def current(store: ArtifactStore, name: str) -> dict[str, Any]:
    """The pointer of the promoted model, or NotFound naming the model."""
    try:
        return store.get_json(pointer_key(name))
    except NotFound:
        raise NotFound(f"model '{name}' not found: nothing promoted under that name yet") from None


def list_models(store: ArtifactStore) -> list[str]:
    return sorted({k.split("/")[1] for k in store.list("models/") if k.endswith("/current.json")})


def _entry_time(entry: dict[str, Any]) -> float:
    return float(entry.get("rolled_back_unix") or entry.get("promoted_unix") or 0.0)


def history(store: ArtifactStore, name: str) -> list[dict[str, Any]]:
    """Every promotion and rollback of `name`, oldest first; each entry carries its object key as `history_key`.
    Promotions have schema meshai.pointer/v1, rollbacks meshai.rollback/v1."""
    entries = []
    for key in store.list(history_prefix(name)):
        if key.endswith(".json"):
            entries.append(store.get_json(key) | {"history_key": key})
    return sorted(entries, key=lambda e: (_entry_time(e), e["history_key"]))


def promotions(store: ArtifactStore, name: str) -> list[dict[str, Any]]:
    """The promotions of `name` (rollbacks left out), oldest first."""
    return [e for e in history(store, name) if e.get("schema") == "meshai.pointer/v1"]


def _same_version(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.get("run_id") == b.get("run_id") and (a.get("gguf") or {}).get("sha256") == (b.get("gguf") or {}).get(
        "sha256")


def rollback_target(store: ArtifactStore, name: str, to_run_id: str | None = None) -> dict[str, Any]:
    """The promotion a rollback of `name` would restore.

    Without `to_run_id`: the newest promotion older than the one now current, of another version (so rolling
    back twice goes two promotions back, not forth). With it: the newest promotion of that run.
    """
    now = current(store, name)
    proms = promotions(store, name)
    if to_run_id:
        matches = [p for p in proms if p.get("run_id") == to_run_id]
        if not matches:
            known = ", ".join(dict.fromkeys(p.get("run_id", "?") for p in proms)) or "none"
            raise NotFound(f"model '{name}': run {to_run_id!r} was never promoted (promoted runs: {known})")
        target = matches[-1]
        if _same_version(target, now):
            raise InvalidInput(f"model '{name}' already serves run {to_run_id!r}; nothing to roll back")
        return target
    since = float(now.get("promoted_unix") or 0.0)
    older = [p for p in proms if float(p.get("promoted_unix") or 0.0) < since and not _same_version(p, now)]
    if not older:
        raise NotFound(f"model '{name}': no promotion before run {now.get('run_id')!r} to roll back to")
    return older[-1]


def rollback(store: ArtifactStore, name: str, *, to_run_id: str | None = None, reason: str = "",
             by: str | None = None) -> dict[str, Any]:
    """Point `name` back at an earlier promotion (see `rollback_target`); returns the new pointer.

    The GGUF is checked to still exist with its recorded sha256 before anything is written. The history entry is
    written first and the pointer last, as `promote` does, so a reader never sees a pointer without its record.
    """
    name = check_model_name(name)
    before = current(store, name)
    target = rollback_target(store, name, to_run_id)
    gguf = target["gguf"]
    stored = store.stat(gguf["key"])  # NotFound names the key when the object is gone
    if gguf.get("sha256") and stored.sha256 and stored.sha256 != gguf["sha256"]:
        raise InvalidInput(f"refusing to roll back to {gguf['key']}: stored sha256 differs from the promotion's")
    at = time.time()
    record = {
        "from_run_id": before.get("run_id"),
        "from_gguf_sha256": (before.get("gguf") or {}).get("sha256"),
        "to_run_id": target.get("run_id"),
        "reason": reason,
        "rolled_back_unix": at,
        "by": by if by is not None else _who(),
        "promotion": target["history_key"],
    }
    pointer = {k: v for k, v in target.items() if k not in {"history_key", "rollback"}} | {"rollback": record}
    entry = {"schema": "meshai.rollback/v1", "name": name, **record, "pointer": pointer}
    store.put_json(entry, f"{history_prefix(name)}{_stamp(at)}-rollback-{uuid.uuid4().hex[:8]}.json")
    store.put_json(pointer, pointer_key(name))
    return pointer


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers) and no LOGNAME/USER
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
