"""Benchmark: would retrieval find the right command more often with a sentence-embedding model fine-tuned on
the index's own documents? The stock all-MiniLM-L6-v2 against a copy tuned here, each ranking with the same
words-and-meaning fusion grounding uses (index.Index.search), on questions whose phrasings the tuned copy
never saw.

    python services/evaluator/benchmarks/bench_embedder_tuning.py [--epochs 3] [--lr 3e-5]
        [--weights 1.5,3] [--skip-folds] [--suites field,fresh]

The tuning is catalog-v9's own (meshai_quantizer.embedder.tune: same-key document pairs, in-batch negatives,
semantic.TUNING), run here on the documents of each held-out index. Small talk (documents of no key) is left
out of the pairs and kept in the index.

Rows:
- the question bank in bench_retrieval's folds: per fold, a copy tuned on the documents of that fold's
  index only, then the fold's phrasings asked (the stock model's row is bench_retrieval's own);
- each suite's command and relay questions (bench_retrieval.suite_items), one copy tuned on an index from
  which the near-copies of every suite named were removed, so no suite question was seen in tuning.
First / second / fourth hit right, at each SEMANTIC_WEIGHT given (the stock model's weight is 1.5, the tuned
copy's index.TUNED_SEMANTIC_WEIGHT 3). Tuning runs on the CPU with torch (~2 min a copy on the 2-core
machine); the vectors come from torch, not llama.cpp (the stock model's bank-fold row is 86.4 % here, 2026-12-01,
as through its f16 GGUF).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_retrieval import KS, Item, Result, bank_folds, merged, near_copy_groups, score, suite_items  # noqa: E402

from meshai_common.grounding import build_index, retrieve_from  # noqa: E402
from meshai_common.grounding import index as index_module  # noqa: E402
from meshai_common.grounding.index import Doc, embed_text, tuning_key  # noqa: E402
from meshai_common.grounding.semantic import TUNING  # noqa: E402
from meshai_quantizer.embedder import TorchEmbedder, package_weights, tune  # noqa: E402


def pairs_of(docs: Sequence[Doc]) -> list[tuple[str, str]]:
    """(tuning key, text as embedded) of the documents that point at a key: what `tune` learns from (as
    grounding.tuning_documents picks them from the full index)."""
    return list(dict.fromkeys((tuning_key(d), embed_text(d.text)) for d in docs if tuning_key(d)))


def model_for(which: str, docs: Sequence[Doc], epochs: int, lr: float) -> TorchEmbedder:
    if which == "stock":
        return TorchEmbedder(package_weights())
    return tune(pairs_of(docs), {"epochs": epochs, "lr": lr})


def ask_all(embedder: TorchEmbedder, keep: Any, sets: dict[str, Sequence[Item]],
            weights: Sequence[float]) -> dict[tuple[str, float], Result]:
    index = build_index(keep, embedder=embedder)
    out = {}
    for w in weights:
        index_module.SEMANTIC_WEIGHT = w
        for name, items in sets.items():
            out[name, w] = score(name, items, lambda q, h: retrieve_from(index, q, 4, h))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=TUNING["epochs"])
    ap.add_argument("--lr", type=float, default=TUNING["lr"])
    ap.add_argument("--weights", default="1.5,3", help="comma-separated SEMANTIC_WEIGHT values")
    ap.add_argument("--suites", default="field,fresh", help="comma-separated suites (empty: none)")
    ap.add_argument("--skip-folds", action="store_true", help="only the suites (one tuning instead of six)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="  %(message)s")
    weights = [float(w) for w in args.weights.split(",")]
    kept = index_module.SEMANTIC_WEIGHT
    rows: dict[tuple[str, str, float], Result] = {}
    try:
        suites = {s: [i for i in suite_items(s) if i.kind in ("command", "relay")]
                  for s in filter(None, args.suites.split(","))}
        if suites:
            near = set().union(*(near_copy_groups(items) for items in suites.values()))
            print(f"suites {', '.join(suites)}: {len(near)} near-copy documents out of the index and the tuning")
            for model in ("stock", "tuned"):
                keep = lambda d: d.group not in near  # noqa: E731
                docs = build_index(keep).docs
                embedder = model_for(model, docs, args.epochs, args.lr)
                for (name, w), r in ask_all(embedder, keep, suites, weights).items():
                    rows[model, f"{name} c+r, near-copies out", w] = r
        if not args.skip_folds:
            for model in ("stock", "tuned"):
                parts: dict[float, list[Result]] = defaultdict(list)
                for items, keep in bank_folds():
                    docs = build_index(keep).docs
                    embedder = model_for(model, docs, args.epochs, args.lr)
                    for (_, w), r in ask_all(embedder, keep, {"fold": items}, weights).items():
                        parts[w].append(r)
                for w, rs in parts.items():
                    rows[model, "question bank (folds held out)", w] = merged("", rs)
    finally:
        index_module.SEMANTIC_WEIGHT = kept
    print(f"tuning: {args.epochs} epochs, lr {args.lr:g}, batch {TUNING['batch']}")
    for (model, name, w), r in sorted(rows.items(), key=lambda x: (x[0][1], x[0][2], x[0][0])):
        hits = "  ".join(f"@{k} {r.recall[k] * 100:5.1f}%" for k in KS)
        print(f"{name:<38} weight {w:<4g} {model:<6} n={r.n:<4} {hits}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
