"""Benchmark: `prepare --min-pairs 50000` + `validate` of its outputs, timed and with peak memory.

    python services/data/benchmarks/bench_prepare.py [--min-pairs 50000] [--repeat 3] [--no-grounded]

Each stage runs in a fresh process so its peak RSS is its own. Goal: under 20 s together, under 1 GB.
Grounding retrieves catalog lines for every pair (about a millisecond each), so a grounded run of 50k pairs
takes about a minute on a 2-core machine; --no-grounded measures the rest.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[1] / "meshai_data" / "samples"

STAGE = r"""
import json, resource, sys, time
from pathlib import Path
out, stage, n, grounded = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[6] == "1"
t0 = time.perf_counter()
if stage == "prepare":
    from meshai_data.prepare import prepare
    meta = prepare([Path(sys.argv[4])], Path(sys.argv[5]), out, seed=42, min_pairs=n, cap=True, grounded=grounded)
    extra = {"pairs": meta["train_size"] + meta["val_size"] + meta["test_size"]}
else:
    from meshai_data.validate import validate
    problems = validate([out / f"{s}.jsonl" for s in ("train", "val", "test")])
    extra = {"problems": len(problems)}
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extra}))
"""


def run(stage: str, out: Path, n: int, grounded: bool) -> dict:
    argv = [sys.executable, "-c", STAGE, str(out), stage, str(n),
            str(SAMPLES / "messages_archive.json"), str(SAMPLES / "mesh_mailboxes.json"), "1" if grounded else "0"]
    proc = subprocess.run(argv, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--min-pairs", type=int, default=50000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--grounded", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}")
    rows = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            p = run("prepare", Path(tmp), args.min_pairs, args.grounded)
            v = run("validate", Path(tmp), args.min_pairs, args.grounded)
        rows.append((p, v))
        print(f"run {i + 1}: prepare {p['seconds']:.2f}s ({p['pairs']} pairs, peak {p['peak_mb']:.0f} MB), "
              f"validate {v['seconds']:.2f}s ({v['problems']} problems, peak {v['peak_mb']:.0f} MB)")
    best = min(rows, key=lambda r: r[0]["seconds"] + r[1]["seconds"])
    total = best[0]["seconds"] + best[1]["seconds"]
    peak = max(max(p["peak_mb"], v["peak_mb"]) for p, v in rows)
    print(f"best total {total:.2f}s (goal < 20 s): {'OK' if total < 20 else 'MISSED'}; "
          f"peak {peak:.0f} MB (goal < 1024 MB): {'OK' if peak < 1024 else 'MISSED'}")
    return 0 if total < 20 and peak < 1024 else 1


if __name__ == "__main__":
    sys.exit(main())
