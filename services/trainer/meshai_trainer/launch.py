"""Run one training as N data-parallel ranks on this machine: what the trainer service does with N GPUs.

Each rank is `python -m meshai_trainer.cli train run ...` with the environment torchrun would give it (RANK,
LOCAL_RANK, WORLD_SIZE), meeting the others through a rendezvous file rather than torchrun's TCP store, which
listens on every interface. Rank 0 writes its progress and metrics as JSON lines to an events file that the
launcher relays to the job; it publishes each checkpoint to the bucket itself, so a checkpoint is uploaded
before a later one can prune it. A cancelled job sends every rank SIGINT: they agree to stop after the same
step, rank 0 saves and publishes a checkpoint, and all exit.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from meshai_common.errors import Cancelled, ConfigError, MeshAIError
from meshai_common.process import LoggedProcess, stop_all
from meshai_common.progress import JobContext, Progress
from meshai_trainer.curves import ProgressLines

log = logging.getLogger(__name__)

POLL_S = 0.5
# After SIGINT a rank finishes its step and writes a checkpoint; past this it is killed.
STOP_GRACE_S = 300.0


def ranks_for_job() -> int:
    """MESHAI_TRAIN_PROCS: a number, or `auto` (the default): one rank per visible GPU, one on a CPU-only host."""
    raw = os.environ.get("MESHAI_TRAIN_PROCS", "auto").strip().lower() or "auto"
    if raw == "auto":
        try:
            import torch

            return max(1, torch.cuda.device_count())
        except ImportError:
            return 1
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"environment variable MESHAI_TRAIN_PROCS={raw!r} must be a positive number or auto")
    return int(raw)


def _relay(events: Path, offset: int, ctx: JobContext, result: dict[str, Any], lines: ProgressLines) -> int:
    """Report the events rank 0 appended since `offset` (and print progress lines); returns the new offset."""
    if not events.exists():
        return offset
    with open(events, "rb") as fh:
        fh.seek(offset)
        data = fh.read()
    end = data.rfind(b"\n") + 1  # a line still being written waits for the next poll
    for line in data[:end].splitlines():
        event = json.loads(line)
        if "progress" in event:
            progress = Progress(**event["progress"])
            ctx.report(progress)
            lines.report(progress)
        if "metrics" in event:
            result.update(event["metrics"])
    return offset + end


def run_ranks(n: int, args: list[str], workdir: Path, ctx: JobContext, *,
              stop_grace_s: float = STOP_GRACE_S) -> dict[str, Any]:
    """Train with `n` ranks (`args` follow `train run`); returns rank 0's metrics. Raises Cancelled or MeshAIError."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    events = workdir / "events.jsonl"
    rendezvous = workdir / "rendezvous"
    for stale in (events, rendezvous):
        stale.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "meshai_trainer.cli", "train", "run", *args, "--no-progress"]
    procs = []
    for rank in range(n):
        env = os.environ | {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(n),
                            "MESHAI_DIST_INIT": f"file://{rendezvous}", "PYTHONUNBUFFERED": "1",
                            # Every rank is on this machine: gloo (CPU ranks) needs no other interface.
                            "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
        procs.append(LoggedProcess([*argv, *(["--events", str(events)] if rank == 0 else [])],
                                   workdir / f"rank{rank}.log", env=env))
    result: dict[str, Any] = {}
    offset = 0
    lines = ProgressLines.for_stderr()  # the service's log shows the ranks' progress
    try:
        while any(p.alive() for p in procs):
            offset = _relay(events, offset, ctx, result, lines)
            if any(p.returncode not in (None, 0, 130) for p in procs):  # the others would wait in the next
                break                                                    # all-reduce forever
            try:
                ctx.check_cancelled()
            except Cancelled:
                stop_all(procs, signal.SIGINT, stop_grace_s)
                raise
            time.sleep(POLL_S)
    finally:
        codes = stop_all(procs, signal.SIGKILL, 10)  # no-op for ranks that exited; closes their logs
    _relay(events, offset, ctx, result, lines)
    if all(c == 0 for c in codes) and result:
        return result
    rank = next((r for r, c in enumerate(codes) if c not in (0, 130)), 0)
    tail = procs[rank].log()[-4000:].strip()
    log.error("training rank failed", extra={"rank": rank, "exit": codes[rank], "log_tail": tail})
    last = tail.splitlines()[-1] if tail else "no output"
    raise MeshAIError(f"training rank {rank} of {n} exited {codes[rank]}: {last}")
