"""Data-parallel training under torchrun (or `accelerate launch`): one process per GPU, or per CPU slot with gloo.

Every rank builds the same batch order from the same seed and takes its share of each optimizer step's
micro-batches. The LoRA gradients (a few MB) are summed across ranks in one flat all-reduce per step, together
with the step's loss and token counts, so every rank applies the same update and keeps identical weights.
A plain `python`/`meshai` run is world size 1 and never touches torch.distributed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


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
    """The world this process belongs to; joins the process group when launched by torchrun."""
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

        if not dist.is_initialized():
            # torchrun's env:// rendezvous by default; MESHAI_DIST_INIT=file:///shared/path meets through a file
            # instead (no TCP store listening on every interface), with RANK/WORLD_SIZE set by the launcher.
            init = os.environ.get("MESHAI_DIST_INIT")
            extra = {"init_method": init, "rank": rank, "world_size": size} if init else {}
            dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None, **extra)
    return World(rank, size, local, device)


def sum_grads_and(world: World, params: list[Any], values: list[float]) -> list[float]:
    """Sum every trainable parameter's gradient and `values` across ranks (one collective); returns the sums."""
    if not world.active:
        return values
    import torch
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads]
                     + [torch.tensor(values, dtype=torch.float32, device=grads[0].device)])
    dist.all_reduce(flat)
    at = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[at:at + n].view_as(g).to(g.dtype)
        at += n
    return flat[at:].tolist()


def sum_values(world: World, values: list[float]) -> list[float]:
    if not world.active:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=world.device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_params(world: World, params: list[Any]) -> None:
    """Start every rank from rank 0's adapter weights (LoRA's random init is per process)."""
    if not world.active:
        return
    import torch.distributed as dist

    for p in params:
        dist.broadcast(p.data, src=0)


def gather(world: World, obj: Any) -> list[Any]:
    """Every rank's `obj` (e.g. its RNG state), in rank order."""
    if not world.active:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def barrier(world: World) -> None:
    if world.active:
        import torch.distributed as dist

        dist.barrier()


def cleanup(world: World) -> None:
    if world.active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
