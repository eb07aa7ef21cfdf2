"""Benchmark: this trainer vs a plain Hugging Face `Trainer`, same model, data and settings, in one run.

    python services/trainer/benchmarks/bench_train.py [--config cpu-smollm2] [--steps 20] [--group-by-length]

Both sides train the same examples (the data service's default set from its samples: chat template applied,
loss on assistant tokens only), with the same LoRA (rank, target modules, layers), micro-batch size, gradient
accumulation, optimizer (AdamW), learning-rate schedule, seed and precision, for the same number of optimizer
steps. Each runs in a fresh process. tokens/s counts real (non-padding) tokens over steps 3..N, so loading and
the first warm-up steps are left out; peak memory is the highest resident set size sampled every 10 ms over
the same steps (on a CUDA machine: torch.cuda.max_memory_allocated over them). The baseline gets what a
plain `Trainer` does: full logits over every position, batches in random order (`--group-by-length` gives it
Hugging Face's length grouping instead).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "meshai_data" / "samples"
WARMUP_STEPS = 2


class MemorySampler:
    """Highest RSS (or CUDA allocation) seen between start() and stop(), sampled every 10 ms."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss_mb(self) -> float:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._rss_mb())
            time.sleep(0.01)

    def start(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
        else:
            self._thread.start()

    def stop(self) -> float:
        if self.cuda:
            import torch

            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._stop.set()
            self._thread.join()
        return self.peak_mb


class StepClock:
    """Step-end times and cumulative real tokens; the window is steps WARMUP_STEPS+1 .. N."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.marks: list[tuple[int, float, int]] = []
        self.memory = MemorySampler(cuda)

    def step_end(self, step: int, tokens: int) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        self.marks.append((step, time.perf_counter(), tokens))
        if step == WARMUP_STEPS:
            self.memory.start()

    def result(self) -> dict[str, Any]:
        peak = self.memory.stop()
        (s0, t0, k0), (s1, t1, k1) = self.marks[WARMUP_STEPS - 1], self.marks[-1]
        return {"steps": s1 - s0, "seconds": t1 - t0, "tokens": k1 - k0, "tokens_per_s": (k1 - k0) / (t1 - t0),
                "peak_mb": peak}


def run_ours(cfg: Any, train_path: Path, out: Path) -> dict[str, Any]:
    import torch

    from meshai_common.progress import LocalContext, Progress
    from meshai_trainer.recipe import train

    clock = StepClock(torch.cuda.is_available())

    class Ctx(LocalContext):
        def report(self, progress: Progress) -> None:
            if progress.loss is not None:  # one event per optimizer step
                clock.step_end(progress.step, int(progress.metrics["tokens"]))

    train(cfg, train_path, None, out, Ctx(out / ".work"))
    return clock.result()


def run_hf(cfg: Any, train_path: Path, out: Path, group_by_length: bool) -> dict[str, Any]:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from meshai_trainer.batches import IGNORE, encode, set_chat_template
    from meshai_trainer.dataset import read_messages
    from meshai_trainer.model import load_base
    from meshai_trainer.recipe import apply_lora, compute_dtype

    cuda = torch.cuda.is_available()
    compute = compute_dtype(cfg, cuda)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model, tok = load_base(cfg.base_model, compute if cuda else None, device="cuda" if cuda else None)
    set_chat_template(tok, cfg.chat_template, cfg.chat_template_jinja)
    rows = [encode(tok, m, cfg.sequence_len) for m in read_messages(train_path)]
    data = [{"input_ids": e.ids, "labels": e.labels} for e in rows]
    model = apply_lora(model, cfg)
    clock = StepClock(cuda)
    seen = {"tokens": 0}

    def count(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        seen["tokens"] += int(kwargs["attention_mask"].sum())

    model.register_forward_pre_hook(count, with_kwargs=True)

    def collate(batch: list[dict[str, list[int]]]) -> dict[str, Any]:
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(b["input_ids"]), torch.tensor(b["labels"]), 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    class Clock(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock.step_end(state.global_step, seen["tokens"])

    # transformers 5: warmup_steps takes a step count, or a float in [0, 1) as a ratio.
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else (cfg.warmup_ratio or 0.0)
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=cfg.micro_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler, max_steps=cfg.max_steps, weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm, optim="adamw_torch", seed=cfg.seed, logging_steps=1,
        save_strategy="no", report_to=[], dataloader_num_workers=0, remove_unused_columns=False,
        use_cpu=not cuda, bf16=compute == torch.bfloat16, fp16=compute == torch.float16,
        train_sampling_strategy="group_by_length" if group_by_length else "random", disable_tqdm=True,
        warmup_steps=warmup)
    Trainer(model=model, args=args, train_dataset=data, data_collator=collate, callbacks=[Clock()]).train()
    return clock.result()


def worker(args: argparse.Namespace) -> int:
    from meshai_trainer.config import load_config

    cfg = load_config(args.config, {"max_steps": str(args.steps), "max_train_seconds": "null",
                                    **({"threads": str(args.threads)} if args.threads else {})})
    out = Path(args.out)
    res = run_ours(cfg, Path(args.data), out) if args.worker == "ours" else \
        run_hf(cfg, Path(args.data), out, args.group_by_length)
    print("RESULT " + json.dumps(res))
    return 0


def spawn(side: str, args: argparse.Namespace, data: Path, out: Path) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--worker", side, "--config", args.config, "--steps", str(args.steps),
            "--data", str(data), "--out", str(out), "--threads", str(args.threads)] + \
        (["--group-by-length"] if args.group_by_length else [])
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{side} failed:\n{proc.stderr[-3000:]}")
    line = next(x for x in reversed(proc.stdout.splitlines()) if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="cpu-smollm2")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--min-pairs", type=int, default=1000, help="size of the data service's set (its default)")
    ap.add_argument("--group-by-length", action="store_true", help="give the baseline HF length grouping")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for both (default: the config's)")
    ap.add_argument("--worker", choices=["ours", "hf"], help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    if args.steps <= WARMUP_STEPS + 1:
        ap.error(f"--steps must be more than {WARMUP_STEPS + 1}")
    import torch

    from meshai_data.prepare import prepare

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
    print(f"machine: {platform.machine()}, {device}, python {platform.python_version()}, torch {torch.__version__}")
    print(f"config {args.config}, {args.steps} optimizer steps each, timed over steps {WARMUP_STEPS + 1}-{args.steps}, "
          f"threads {args.threads or torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        prepare([SAMPLES / "messages_archive.json"], SAMPLES / "mesh_mailboxes.json", tmp_path / "data",
                seed=42, min_pairs=args.min_pairs, cap=True)
        data = tmp_path / "data" / "train.jsonl"
        ours = spawn("ours", args, data, tmp_path / "ours")
        hf = spawn("hf", args, data, tmp_path / "hf")
    baseline = "HF Trainer" + (" (group_by_length)" if args.group_by_length else "")
    for name, r in (("meshai trainer", ours), (baseline, hf)):
        print(f"{name:<30} {r['tokens_per_s']:8.1f} tokens/s  peak {r['peak_mb']:7.0f} MB  "
              f"({r['tokens']} tokens in {r['seconds']:.1f} s)")
    print(f"ratio (meshai / {baseline}): tokens/s {ours['tokens_per_s'] / hf['tokens_per_s']:.2f}x, "
          f"peak memory {ours['peak_mb'] / hf['peak_mb']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
