"""What a long-running stage reports while it works, and how it learns it was cancelled.

Stage code (data prep, training, quantization, evaluation) takes a `JobContext`; the gRPC job runtime
provides one that streams events to watchers and persists state, the CLI and tests provide `LocalContext`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from meshai_common.errors import Cancelled


@dataclass
class Progress:
    step: int = 0
    total: int = 0
    message: str = ""
    loss: float | None = None
    tokens_per_s: float | None = None
    eta_s: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def progress_postfix(message: str, loss: float | None, tokens_per_s: float | None,
                     metrics: dict[str, float]) -> dict[str, str]:
    """What a progress bar shows beside step/total: the same fields for the CLI and the pipeline's watch."""
    post: dict[str, str] = {}
    if loss is not None:
        post["loss"] = f"{loss:.3f}"
    if "val_loss" in metrics:
        post["val"] = f"{metrics['val_loss']:.3f}"
    if "lr" in metrics:
        post["lr"] = f"{metrics['lr']:.2e}"
    if "epoch" in metrics:
        post["ep"] = f"{metrics['epoch']:.2f}"
    if tokens_per_s:
        post["tok/s"] = f"{tokens_per_s:.0f}"
    if "rss_mb" in metrics:
        post["mem"] = f"{metrics['rss_mb']:.0f}MB"
    if "cuda_max_mb" in metrics:
        post["gpu"] = f"{metrics['cuda_max_mb']:.0f}MB"
    if message and not message.startswith("epoch"):  # "epoch N" is already in ep
        post["msg"] = message[:40]
    return post


class JobContext(Protocol):
    workdir: Path

    def report(self, progress: Progress) -> None: ...

    def check_cancelled(self) -> None:
        """Raise `Cancelled` if the job was asked to stop; call it between units of work."""
        ...


class LocalContext:
    """A context for running a stage in-process (CLI, tests): logs progress, cancels on `cancel()`."""

    def __init__(self, workdir: Path, log: logging.Logger | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.events: list[Progress] = []
        self._cancel = threading.Event()
        self._log = log or logging.getLogger("meshai.job")
        self._last_log = 0.0

    def report(self, progress: Progress) -> None:
        self.events.append(progress)
        now = time.monotonic()
        if now - self._last_log > 2 or (progress.total and progress.step >= progress.total):
            self._last_log = now
            self._log.info("progress %d/%d %s", progress.step, progress.total, progress.message)

    def cancel(self) -> None:
        self._cancel.set()

    def check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise Cancelled("job cancelled")
