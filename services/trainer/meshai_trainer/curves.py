"""Training curves where people look: TensorBoard scalars in the run's output folder (always), MLflow when
MESHAI_MLFLOW_TRACKING_URI is set, and plain progress lines for logs that are not a terminal."""

from __future__ import annotations

import logging
import math
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from meshai_common.errors import ConfigError
from meshai_common.progress import Progress
from meshai_common.tracking import TrackingRun

log = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"
# Our metric names -> TensorBoard tags, grouped so the board shows loss, speed and memory side by side.
TAGS = {
    "loss": "train/loss", "val_loss": "train/val_loss", "lr": "train/lr", "epoch": "train/epoch",
    "tokens_per_s": "speed/tokens_per_s", "rss_mb": "memory/rss_mb", "peak_rss_mb": "memory/peak_rss_mb",
    "cuda_max_mb": "memory/cuda_max_mb",
}


def _summary_writer(log_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ConfigError(f"TensorBoard curves need the tensorboard package ({exc}): "
                          f"pip install -e '.[trainer]'") from None
    return SummaryWriter(log_dir=str(log_dir), flush_secs=10)


class TrainingCurves:
    """Per-step scalars to `out_dir/tensorboard` and, when tracking is on, to the run's MLflow run.

    A resumed run rewrites the TensorBoard folder from the checkpoint's log, so the folder always holds one
    curve with no step twice. A failing tracking server is logged once and then left alone: it never stops
    a training run.
    """

    def __init__(self, out_dir: Path, run_id: str, params: dict[str, Any], mlflow_every: int = 1) -> None:
        self.log_dir = Path(out_dir) / TENSORBOARD_DIR
        shutil.rmtree(self.log_dir, ignore_errors=True)
        self.writer = _summary_writer(self.log_dir)
        self.mlflow_every = max(1, mlflow_every)
        self.tracking = TrackingRun.open(run_id)
        if self.tracking is not None:
            self.tracking.log_params(params)

    def replay(self, records: list[dict[str, Any]]) -> None:
        """Write the curve so far (train_log.jsonl's records) again: the resumed run's first steps follow it."""
        for rec in records:
            self.log(rec["step"], {k: v for k, v in rec.items() if k in TAGS}, mlflow=False)

    def log(self, step: int, scalars: dict[str, float], mlflow: bool = True) -> None:
        for key, value in scalars.items():
            if key in TAGS and value is not None and math.isfinite(value):
                self.writer.add_scalar(TAGS[key], value, step)
        if self.tracking is not None and mlflow and ("val_loss" in scalars or step % self.mlflow_every == 0):
            self._track(lambda: self.tracking.log_metrics(
                {k: v for k, v in scalars.items() if v is not None and math.isfinite(v)}, step))

    def close(self, status: str = "FINISHED", summary: dict[str, Any] | None = None, step: int = 0) -> None:
        self.writer.close()
        if self.tracking is None:
            return
        if summary:
            numbers = {f"final/{k}": float(v) for k, v in summary.items()
                       if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}
            self._track(lambda: self.tracking.log_metrics(numbers, step))
        self._track(lambda: self.tracking.finish(status))

    def _track(self, call: Callable[[], None]) -> None:
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - a tracking server's trouble must not end the training
            log.warning("MLflow tracking failed, curves continue in TensorBoard only: %s", exc)
            self.tracking = None


def format_duration(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class ProgressLines:
    """Plain progress lines for logs (compose, Kubernetes Jobs): one every `every_steps` steps or `every_s`
    seconds, whichever comes first, plus the first and the last step.

        train: step 40/120 (33%) epoch 1.33 loss 1.2345 val 1.3010 tok/s 210 eta 6m12s
    """

    def __init__(self, stream: TextIO | None, every_steps: int = 50, every_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.every_steps = every_steps
        self.every_s = every_s
        self.clock = clock
        self.last_step: int | None = None
        self.last_time = clock()
        self.val_loss: float | None = None

    @classmethod
    def for_stderr(cls) -> ProgressLines:
        """Lines on stderr unless it is a terminal (there the progress bar already shows the same)."""
        stream = sys.stderr
        return cls(None if stream.isatty() else stream)

    def report(self, progress: Progress) -> str | None:
        """Take one progress event; returns the line written, if this one is due."""
        if "val_loss" in progress.metrics:
            self.val_loss = progress.metrics["val_loss"]
        if self.stream is None or progress.loss is None:
            return None
        now, step = self.clock(), progress.step
        due = (self.last_step is None or step >= progress.total > 0 or step - self.last_step >= self.every_steps
               or now - self.last_time >= self.every_s)
        if not due:
            return None
        self.last_step, self.last_time = step, now
        line = self.format(progress)
        self.stream.write(line + "\n")
        self.stream.flush()
        return line

    def format(self, p: Progress) -> str:
        parts = [f"step {p.step}/{p.total}" + (f" ({p.step / p.total:.0%})" if p.total else "")]
        if "epoch" in p.metrics:
            parts.append(f"epoch {p.metrics['epoch']:.2f}")
        parts.append(f"loss {p.loss:.4f}")
        if self.val_loss is not None:
            parts.append(f"val {self.val_loss:.4f}")
        if p.tokens_per_s is not None:
            parts.append(f"tok/s {p.tokens_per_s:.0f}")
        if p.eta_s is not None:
            parts.append(f"eta {format_duration(p.eta_s)}")
        return "train: " + " ".join(parts)
