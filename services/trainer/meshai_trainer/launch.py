"""Run one training as N data-parallel ranks on this machine: what the trainer service does with N GPUs.

The ranks are started by torchrun (`python -m torch.distributed.run --standalone`, the service's own
interpreter, so the venv's torch), each running `python -m meshai_trainer.cli train run ...` with torchrun's
standard environment. Rank 0 writes its progress and metrics as JSON lines to an events file that the launcher
relays to the job; it publishes each checkpoint to the bucket itself, so a checkpoint is uploaded before a later
one can prune it. A cancelled job sends torchrun SIGINT, which passes it on to every rank: they agree to stop
after the same step, rank 0 saves and publishes a checkpoint, and all exit. Each rank's output goes to its own
log file (torchrun's `--log-dir`), whose tail a failure reports.

Binding: torchrun's stores (the rendezvous's and the one the ranks meet in, MASTER_PORT) listen on every
interface whatever the endpoint says (measured with torch 2.13: `--standalone` and `--rdzv-endpoint
127.0.0.1:PORT` alike); the ranks reach them on localhost, and gloo's own sockets stay on loopback
(GLOO_SOCKET_IFNAME=lo).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
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
# After SIGINT a rank finishes its step and writes a checkpoint; past this torchrun kills it.
STOP_GRACE_S = 300.0
# torchrun's summary of a failed run names the first rank that failed and its exit code.
ROOT_CAUSE = re.compile(r"Root Cause.*?local_rank:\s*(\d+)\).*?exitcode\s*:\s*(-?\d+)", re.S)


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


def torchrun_argv(n: int, args: list[str], events: Path, logs: Path, stop_grace_s: float) -> list[str]:
    """torchrun starting `n` ranks of `train run ARGS` on this machine, rank 0 appending to `events`."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n),
            "--max-restarts", "0",  # a failed rank fails the job; the resubmitted job resumes
            "--shutdown-timeout", str(math.ceil(stop_grace_s)),  # torchrun's own grace after passing on a signal
            "--log-dir", str(logs), "--redirects", "3",
            "-m", "meshai_trainer.cli", "train", "run", *args, "--no-progress", "--events", str(events)]


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


def rank_log(logs: Path, local_rank: int) -> str:
    """What a rank wrote (stdout, then stderr, where errors go), from torchrun's `--log-dir` folder."""
    return "".join(path.read_text(errors="replace") for name in ("stdout.log", "stderr.log")
                   for path in sorted(Path(logs).glob(f"*/attempt_*/{local_rank}/{name}")))


def _failure(n: int, code: int | None, torchrun: LoggedProcess, logs: Path) -> MeshAIError:
    found = ROOT_CAUSE.search(torchrun.log())
    if found is None:  # torchrun failed before or around its ranks: its own output says why
        tail = torchrun.log()[-4000:].strip()
        log.error("torchrun failed", extra={"exit": code, "log_tail": tail})
        return MeshAIError(f"torchrun exited {code}: {tail.splitlines()[-1] if tail else 'no output'}")
    rank, exit_code = int(found.group(1)), int(found.group(2))
    tail = rank_log(logs, rank)[-4000:].strip()
    log.error("training rank failed", extra={"rank": rank, "exit": exit_code, "log_tail": tail})
    last = tail.splitlines()[-1] if tail else "no output"
    return MeshAIError(f"training rank {rank} of {n} exited {exit_code}: {last}")


def run_ranks(n: int, args: list[str], workdir: Path, ctx: JobContext, *,
              stop_grace_s: float = STOP_GRACE_S) -> dict[str, Any]:
    """Train with `n` ranks (`args` follow `train run`); returns rank 0's metrics. Raises Cancelled or MeshAIError."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    events, logs = workdir / "events.jsonl", workdir / "logs"
    events.unlink(missing_ok=True)
    shutil.rmtree(logs, ignore_errors=True)
    env = os.environ | {"PYTHONUNBUFFERED": "1",
                        # Every rank is on this machine: gloo (CPU ranks) needs no other interface.
                        "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
    torchrun = LoggedProcess(torchrun_argv(n, args, events, logs, stop_grace_s), workdir / "torchrun.log", env=env)
    result: dict[str, Any] = {}
    offset = 0
    lines = ProgressLines.for_stderr()  # the service's log shows the ranks' progress
    try:
        while torchrun.alive():
            offset = _relay(events, offset, ctx, result, lines)
            try:
                ctx.check_cancelled()
            except Cancelled:
                # torchrun passes SIGINT on to every rank and kills those still running after stop_grace_s.
                stop_all([torchrun], signal.SIGINT, stop_grace_s + 30)
                raise
            time.sleep(POLL_S)
    finally:
        # A no-op once torchrun has exited; otherwise (the launcher itself failing) its ranks stop with it.
        code = stop_all([torchrun], signal.SIGTERM, stop_grace_s)[0]
    _relay(events, offset, ctx, result, lines)
    if code == 0 and result:
        return result
    raise _failure(n, code, torchrun, logs)
