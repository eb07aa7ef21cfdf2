"""Training checkpoints: what a restarted run needs to continue the same loss curve, and their bucket copies.

    checkpoint-000040/
        adapter_model.safetensors, adapter_config.json   the adapter as PEFT writes it (usable as-is)
        training_state.pt       optimizer, scheduler, grad scaler, torch RNG states (one per rank)
        trainer_state.json      state.TrainState: step, epoch, data position (the epoch's batch order and
                                the next index), python RNG, loss log, best val loss so far, the config
        best_adapter.safetensors   the weights with the best val loss so far (only when val is evaluated)

Each checkpoint is written to a hidden temporary folder and renamed into place, so a folder with the final name
is whole even if the process is killed mid-write. In the bucket, `_complete.json` (every file with its sha256)
is written after the files, and only checkpoints that have it are resumed from.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshai_common.errors import InvalidInput
from meshai_common.store import ArtifactStore, StoredObject
from meshai_trainer.state import TrainState

log = logging.getLogger(__name__)

PREFIX = "checkpoint-"
NAME_RE = re.compile(r"^checkpoint-(\d+)$")
STATE = "trainer_state.json"
TENSORS = "training_state.pt"
ADAPTER = "adapter_model.safetensors"
BEST = "best_adapter.safetensors"
COMPLETE = "_complete.json"


def name_for(step: int) -> str:
    return f"{PREFIX}{step:06d}"


def step_of(name: str) -> int:
    m = NAME_RE.match(Path(name).name)
    if not m:
        raise InvalidInput(f"{name} is not a checkpoint folder name (checkpoint-<step>)")
    return int(m.group(1))


def list_local(root: Path) -> list[Path]:
    """Whole checkpoints under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and NAME_RE.match(p.name) and (p / STATE).is_file()]
    return sorted(found, key=lambda p: step_of(p.name))


def latest_local(root: Path) -> Path | None:
    found = list_local(root)
    return found[-1] if found else None


def write(root: Path, step: int, fill: Callable[[Path], None]) -> Path:
    """Create checkpoint-<step> atomically: `fill` writes into a temporary folder that is then renamed."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / name_for(step)
    tmp = root / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    fill(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def prune(root: Path, keep_last: int | None, protect: set[str]) -> list[str]:
    """Remove all but the newest `keep_last` checkpoints (never a protected one, e.g. the best); names kept."""
    found = list_local(root)
    for stale in Path(root).glob(".checkpoint-*.tmp"):  # left by a killed process
        shutil.rmtree(stale, ignore_errors=True)
    if keep_last:
        for p in found[:-keep_last]:
            if p.name not in protect:
                shutil.rmtree(p, ignore_errors=True)
    return [p.name for p in list_local(root)]


def read_state(path: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(path) / STATE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"checkpoint {path}: cannot read {STATE}: {exc}") from None


def write_state(path: Path, state: TrainState) -> None:
    (Path(path) / STATE).write_text(json.dumps(state.to_json()))


def load_state(path: Path) -> TrainState:
    """The loop's state saved in checkpoint `path` (see state.TrainState)."""
    return TrainState.from_json(read_state(path), path)


def read_tensors(path: Path) -> dict[str, Any]:
    import torch

    return torch.load(Path(path) / TENSORS, map_location="cpu", weights_only=True)


def save_training(path: Path, state: TrainState, model: Any, optim: Any, sched: Any, scaler: Any,
                  rng_states: list[Any], cuda: bool, best_weights: dict[str, Any] | None) -> None:
    """Fill checkpoint folder `path`: the adapter, optimizer/scheduler/scaler and RNG states, the loop state."""
    import torch
    from safetensors.torch import save_file

    model.save_pretrained(path)
    torch.save({"optimizer": optim.state_dict(), "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None, "torch_rng": rng_states,
                "cuda_rng": torch.cuda.get_rng_state() if cuda else None}, Path(path) / TENSORS)
    if best_weights is not None:
        save_file(best_weights, Path(path) / BEST)
    write_state(path, state)


def restore_training(path: Path, model: Any, optim: Any, sched: Any, scaler: Any, rank: int,
                     cuda: bool) -> dict[str, Any] | None:
    """Load what save_training wrote into the live objects (torch RNG: this rank's); returns the best weights."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(path)
    tensors = read_tensors(path)
    set_peft_model_state_dict(model, load_file(path / ADAPTER))
    optim.load_state_dict(tensors["optimizer"])
    sched.load_state_dict(tensors["scheduler"])
    if scaler is not None and tensors.get("scaler"):
        scaler.load_state_dict(tensors["scaler"])
    states = tensors["torch_rng"]
    torch.set_rng_state(states[min(rank, len(states) - 1)])
    if cuda and tensors.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(tensors["cuda_rng"])
    return load_file(path / BEST) if (path / BEST).is_file() else None


# -- the bucket copy: runs/<run_id>/train/checkpoints/checkpoint-<step>/ -----------------------------------


def upload(store: ArtifactStore, local: Path, prefix: str) -> list[StoredObject]:
    """Upload one checkpoint folder (each file to a temp key, checked, then published), then its marker."""
    key = f"{prefix.rstrip('/')}/{local.name}"
    objs = store.put_dir(local, key)
    store.put_json({"step": step_of(local.name), "files": [o.as_dict() for o in objs]}, f"{key}/{COMPLETE}")
    return objs


def sync(store: ArtifactStore, local: Path, prefix: str, keep_last: int | None = None) -> None:
    """Upload a new checkpoint; with `keep_last`, drop all but the newest that many from the bucket (marker first)."""
    upload(store, local, prefix)
    names = remote(store, prefix)
    if keep_last:
        for name in names[:-keep_last]:
            store._remove_quietly(f"{prefix}/{name}/{COMPLETE}")
            store.delete_prefix(f"{prefix}/{name}/")


def remote(store: ArtifactStore, prefix: str) -> list[str]:
    """Names of the whole checkpoints under `prefix`, oldest first."""
    names = set()
    for key in store.list(prefix.rstrip("/") + "/"):
        parts = key[len(prefix.rstrip("/")) + 1:].split("/")
        if len(parts) == 2 and parts[1] == COMPLETE and NAME_RE.match(parts[0]):
            names.add(parts[0])
    return sorted(names, key=step_of)


def fetch_latest(store: ArtifactStore, prefix: str, dest_root: Path) -> Path | None:
    """Download the newest whole checkpoint (each file checked against its sha256); None when there is none."""
    names = remote(store, prefix)
    if not names:
        return None
    key = f"{prefix.rstrip('/')}/{names[-1]}"
    marker = store.get_json(f"{key}/{COMPLETE}")
    dest = Path(dest_root) / names[-1]
    shutil.rmtree(dest, ignore_errors=True)
    store.get_refs(marker["files"], dest, key)
    return dest
