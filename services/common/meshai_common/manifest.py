"""Per-stage manifest.json: what went in (with sha256), what came out, the config, timings, code version.

The chain dataset -> adapter -> merged -> gguf -> eval is rebuilt from manifests alone (`lineage`).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from meshai_common.store import ArtifactStore, StoredObject

STAGES = ("data", "train", "quantize", "eval")


def stage_prefix(run_id: str, stage: str) -> str:
    return f"runs/{run_id}/{stage}"


def manifest_key(run_id: str, stage: str) -> str:
    return f"{stage_prefix(run_id, stage)}/manifest.json"


@lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus the git commit when known (images set MESHAI_CODE_VERSION at build time)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("meshai")
    except PackageNotFoundError:
        ver = "0+unknown"
    commit = os.environ.get("MESHAI_CODE_VERSION", "")
    if not commit:
        try:
            commit = subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=Path(__file__).resolve().parent,
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            commit = ""
    return f"{ver}+{commit}" if commit else ver


def _refs(items: Iterable[StoredObject | dict[str, Any]]) -> list[dict[str, Any]]:
    return [i.as_dict() if isinstance(i, StoredObject) else dict(i) for i in items]


def write_manifest(
    store: ArtifactStore,
    run_id: str,
    stage: str,
    *,
    inputs: Iterable[StoredObject | dict[str, Any]],
    outputs: Iterable[StoredObject | dict[str, Any]],
    config: dict[str, Any],
    timings: dict[str, float],
    metrics: dict[str, Any] | None = None,
    parents: dict[str, str] | None = None,
) -> StoredObject:
    """Write the stage manifest last: its presence means every output it lists is published."""
    manifest = {
        "schema": "meshai.manifest/v1",
        "run_id": run_id,
        "stage": stage,
        "created_unix": time.time(),
        "code_version": code_version(),
        "inputs": _refs(inputs),
        "outputs": _refs(outputs),
        "config": config,
        "timings_s": timings,
        "metrics": metrics or {},
        # Upstream manifests this stage consumed, by stage name: the lineage links.
        "parents": parents or {},
    }
    return store.put_json(manifest, manifest_key(run_id, stage))


def lineage(store: ArtifactStore, run_id: str) -> list[dict[str, Any]]:
    """Every stage manifest of a run that exists, in pipeline order."""
    out = []
    for stage in STAGES:
        key = manifest_key(run_id, stage)
        if store.exists(key):
            out.append(store.get_json(key))
    return out
