"""Data-parallel training under torchrun: one process per GPU (NCCL), or per CPU slot (gloo).

Ranks join through torchrun's standard env:// rendezvous (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT). Every rank builds the same batch order from the same seed and takes its share of each optimizer
step's micro-batches; torch `DistributedDataParallel` averages the LoRA gradients across ranks during backward,
so every rank applies the same update and keeps identical weights. A plain `python`/`meshai` run is world
size 1 and never touches torch.distributed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshai_common.errors import ConfigError, MeshAIError

TORCHRUN_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: Any = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def setup() -> World:
    """The world this process belongs to; joins the process group (env://) when torchrun started it."""
    import torch

    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if size > 1:
        import torch.distributed as dist

        missing = [k for k in TORCHRUN_ENV if not os.environ.get(k)]
        if missing:
            raise ConfigError(f"WORLD_SIZE={size} but {', '.join(missing)} unset: start the ranks with torchrun")
        if not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo", init_method="env://",
                                    device_id=device if cuda else None)
    return World(rank, size, local, device)


def wrap(world: World, module: Any) -> Any:
    """`module` under DistributedDataParallel when there are several ranks (itself otherwise).

    Only the trainable (LoRA) parameters take part: DDP's broadcast at construction starts every rank from rank 0's
    adapter weights, and its all-reduce averages their gradients. The frozen base and the buffers (identical on
    every rank, loaded from the same files) are left out, so neither a full-size broadcast nor a per-forward
    buffer sync happens.
    """
    if not world.active:
        return module
    from torch.nn.parallel import DistributedDataParallel

    frozen = [n for n, p in module.named_parameters() if not p.requires_grad]
    buffers = [n for n, _ in module.named_buffers()]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, frozen + buffers)
    cuda = world.device.type == "cuda"
    return DistributedDataParallel(module, device_ids=[world.local_rank] if cuda else None)


def sum_values(world: World, values: list[float]) -> list[float]:
    """`values` summed over ranks (float64; a few numbers, not gradients)."""
    if not world.active:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=world.device)
    dist.all_reduce(t)
    return t.tolist()


def gather(world: World, obj: Any) -> list[Any]:
    """Every rank's `obj` (e.g. its RNG state), in rank order."""
    if not world.active:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def share_checkpoint(world: World, chosen: Path | None, receive_root: Path) -> Path | None:
    """Rank 0's resume checkpoint, on every rank; None when rank 0 starts over (then every rank does).

    A rank whose own copy is missing or differs (another machine, no shared disk) receives rank 0's files over the
    process group into `receive_root/<name>`, so all ranks continue from the same weights and state.
    """
    if not world.active:
        return chosen
    import torch.distributed as dist

    offer = [(chosen.name, _digests(chosen)) if world.main and chosen is not None else None]
    dist.broadcast_object_list(offer, src=0)
    if offer[0] is None:
        return None
    name, digests = offer[0]
    local = chosen if chosen is not None and chosen.name == name else Path(receive_root) / name
    have = world.main or (local.is_dir() and _digests(local) == digests)
    if all(gather(world, have)):
        return local
    files = [{rel: (local / rel).read_bytes() for rel in digests} if world.main else None]
    dist.broadcast_object_list(files, src=0)
    if have:
        return local
    local = Path(receive_root) / name
    tmp = local.with_name(f".{name}.receiving")
    shutil.rmtree(tmp, ignore_errors=True)
    for rel, data in files[0].items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(data)
    if _digests(tmp) != digests:
        raise MeshAIError(f"resume checkpoint {name}: the copy received from rank 0 does not match its sha256")
    shutil.rmtree(local, ignore_errors=True)
    os.replace(tmp, local)
    return local


def barrier(world: World) -> None:
    if world.active:
        import torch.distributed as dist

        dist.barrier()


def cleanup(world: World) -> None:
    if world.active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
