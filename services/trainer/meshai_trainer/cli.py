"""`meshai train validate CONFIG` and `meshai train run CONFIG ...`: the trainer's tools on local files.

Data-parallel on one machine (N GPUs, or N CPU processes with gloo):

    torchrun --nproc-per-node N -m meshai_trainer.cli train run CONFIG --train train.jsonl --output-dir out/
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from meshai_common.errors import Cancelled, InvalidInput, MeshAIError
from meshai_common.progress import LocalContext, Progress, progress_postfix


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="training recipes").add_subparsers(dest="train_cmd", required=True)
    v = train.add_parser("validate", help="check a config (every problem at once) without training")
    v.add_argument("config", help="YAML file or shipped config name (e.g. cpu-smollm2)")
    v.add_argument("--no-model", action="store_true", help="skip the checks that need the base model")
    v.set_defaults(func=cmd_validate)
    r = train.add_parser("run", help="train locally and write adapter/, merged/ and checkpoints/")
    r.add_argument("config")
    r.add_argument("--train", type=Path, help="training JSONL (default: the config's datasets[0].path)")
    r.add_argument("--val", type=Path, help="validation JSONL (default: val_set_size held out of --train)")
    r.add_argument("--output-dir", type=Path, help="default: the config's output_dir")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    r.add_argument("--resume", default="auto",
                   help="auto: continue from the newest checkpoint in OUTPUT_DIR/checkpoints, or under "
                        "--checkpoint-prefix in the bucket when that one is newer; "
                        "never: start over (old checkpoints are removed); or a checkpoint folder")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--checkpoint-prefix", metavar="PREFIX",
                   help="also publish each checkpoint to the bucket (MESHAI_S3_*) under PREFIX")
    r.add_argument("--base-out", type=Path, metavar="DIR",
                   help="also write the untouched base as an HF folder (the quantizer's baseline)")
    r.add_argument("--events", type=Path, metavar="FILE",
                   help="append progress and the final metrics to FILE as JSON lines (rank 0)")
    r.add_argument("--run-id", help="the run's name in MLflow (MESHAI_MLFLOW_TRACKING_URI); default: the "
                                    "output folder's name")
    r.set_defaults(func=cmd_run)
    j = train.add_parser("job", help="one rank of a Kubeflow TrainJob: inputs from the bucket, outputs to it "
                                     "(run by torchrun in the TrainJob's pods)")
    j.add_argument("--request", required=True, metavar="JSON",
                   help="the TrainRequest as JSON (the controller writes it into the TrainJob)")
    j.add_argument("--workdir", type=Path, help="scratch folder (default: MESHAI_WORKDIR)")
    j.set_defaults(func=cmd_job)


def cmd_validate(args: argparse.Namespace) -> int:
    from meshai_trainer.config import check_config

    report = check_config(args.config, check_model=not args.no_model)
    for p in report.problems:
        print(p)
    if not report.problems:
        for f in report.facts:
            print(f"  {f}")
    for n in report.notes:
        print(f"note: {n}")
    if not report.problems:
        print(f"{args.config}: valid")
    return 1 if report.problems else 0


class BarContext(LocalContext):
    """LocalContext plus a progress bar (step/total, loss, lr, tokens/s, memory, ETA) and an optional events file."""

    def __init__(self, workdir: Path, enabled: bool, events: Path | None = None, run_id: str | None = None) -> None:
        from tqdm import tqdm

        super().__init__(workdir)
        self.run_id = run_id
        # Only on a terminal: elsewhere (compose logs, Kubernetes Jobs) the recipe prints plain progress lines.
        self.bar = tqdm(total=0, desc="train", unit="step", disable=not enabled or not sys.stderr.isatty(),
                        dynamic_ncols=True, file=sys.stderr)
        self.events_file = open(events, "a", encoding="utf-8") if events else None  # noqa: SIM115 - closed in close()

    def emit(self, event: dict[str, Any]) -> None:
        if self.events_file is not None:
            self.events_file.write(json.dumps(event) + "\n")
            self.events_file.flush()

    def report(self, progress: Progress) -> None:
        super().report(progress)
        self.emit({"progress": dataclasses.asdict(progress)})
        if progress.total and self.bar.total != progress.total:
            self.bar.total = progress.total
        if progress.step:
            self.bar.n = progress.step
        post = progress_postfix(progress.message, progress.loss, progress.tokens_per_s, progress.metrics)
        if post:
            self.bar.set_postfix(post, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()
        if self.events_file is not None:
            self.events_file.close()


def _resume_point(choice: str, ckpt_dir: Path, main: bool, prefix: str | None = None) -> Path | None:
    from meshai_trainer import checkpoint

    if choice == "auto":
        local = checkpoint.latest_local(ckpt_dir)
        if prefix and main:  # a fresh pod has only the bucket's copy; rank 0 shares it with the others
            from meshai_common.store import ArtifactStore

            store = ArtifactStore.from_env()
            names = checkpoint.remote(store, prefix)
            if names and (local is None or checkpoint.step_of(names[-1]) > checkpoint.step_of(local.name)):
                return checkpoint.fetch_latest(store, prefix, ckpt_dir)
        return local
    if choice == "never":
        old = checkpoint.list_local(ckpt_dir)
        if old and main:
            print(f"--resume never: removing {len(old)} old checkpoint(s) in {ckpt_dir}", file=sys.stderr)
            shutil.rmtree(ckpt_dir)
        return None
    path = Path(choice)
    if not (path / checkpoint.STATE).is_file():
        raise InvalidInput(f"--resume {choice}: not a checkpoint folder (no {checkpoint.STATE})")
    return path


def cmd_run(args: argparse.Namespace) -> int:
    from meshai_trainer.config import load_config
    from meshai_trainer.recipe import train

    bad = [item for item in args.set if "=" not in item]
    if bad:
        raise InvalidInput(f"--set {bad[0]!r}: expected KEY=VALUE")
    overrides = dict(item.split("=", 1) for item in args.set)
    cfg = load_config(args.config, overrides)
    train_path = args.train or (Path(cfg.datasets[0].path) if cfg.datasets else None)
    if train_path is None:
        raise InvalidInput("no training data: pass --train FILE or set datasets in the config")
    out = args.output_dir or Path(cfg.output_dir)
    ckpt_dir = out / "checkpoints"
    rank = int(os.environ.get("RANK", "0"))
    main = rank == 0
    if cfg.base_model.startswith("s3://"):  # the bucket from MESHAI_S3_*; one copy per rank, no race
        from meshai_common.store import ArtifactStore
        from meshai_trainer.model import fetch_s3_base

        local = out / f".base-{rank}"
        if not (local / "config.json").is_file():
            fetch_s3_base(cfg.base_model, ArtifactStore.from_env(), local)
        cfg = cfg.model_copy(update={"base_model": str(local)})
    resume = _resume_point(args.resume, ckpt_dir, main, args.checkpoint_prefix)
    if resume is not None and main:
        print(f"resuming from {resume}", file=sys.stderr)
    ctx = BarContext(out / ".work", enabled=main and not args.no_progress, events=args.events if main else None,
                     run_id=args.run_id)
    on_checkpoint = None
    if args.checkpoint_prefix and main:
        from meshai_common.store import ArtifactStore
        from meshai_trainer import checkpoint

        store = ArtifactStore.from_env()

        def on_checkpoint(path: Path) -> None:
            checkpoint.sync(store, path, args.checkpoint_prefix, cfg.save_total_limit)

    # The first Ctrl-C (or SIGTERM: a preempted pod, torchrun passing a stop on) stops after the current step and
    # writes a checkpoint; a second Ctrl-C aborts at once.
    def interrupt(_sig: int, _frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("\nstopping after this step (Ctrl-C again to abort)", file=sys.stderr)
        ctx.cancel()

    previous = signal.signal(signal.SIGINT, interrupt)
    previous_term = signal.signal(signal.SIGTERM, interrupt)
    try:
        metrics = train(cfg, train_path, args.val, out, ctx, base_out=args.base_out, checkpoint_dir=ckpt_dir,
                        resume_from=resume, on_checkpoint=on_checkpoint)
        ctx.emit({"metrics": metrics})
    except Cancelled:
        print(f"stopped; the same command resumes from {ckpt_dir}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)
        ctx.close()
    if main:
        print(json.dumps(metrics, indent=2))
    return 0


def cmd_job(args: argparse.Namespace) -> int:
    from meshai_trainer.kubeflow.podjob import run_pod_job

    return run_pod_job(args.request, args.workdir)


def main(argv: list[str] | None = None) -> int:
    """`python -m meshai_trainer.cli train run ...`: the same tools without the orchestrator (torchrun's entry)."""
    logging.basicConfig(level=os.environ.get("MESHAI_LOG_LEVEL", "WARNING").upper(),
                        format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m meshai_trainer.cli")
    register(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MeshAIError as exc:
        print(f"meshai: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
