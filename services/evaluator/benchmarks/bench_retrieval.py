"""Benchmark: how often grounding retrieval puts the right command in the Context block, and how fast.

    python services/evaluator/benchmarks/bench_retrieval.py [--suite field] [--data-dir D] [--min-pairs N]
                                                            [--show-misses] [--json out.json]
                                                            [--semantic] [--semantic-weights 0.5,1,2]

Two question sets:
- an evaluation suite (default "field"): command items are labelled with their `accept` commands (canonical
  names) and plain words, relay items (`relay`, or `accept_regex` alone) with "relay"; a fake item counts as
  found when the first hit is the "unknown" hit for its word. Items with a `context` (history lines) are
  asked in Mesh-Master's prompt shape; retrieval sees the question and the history, as ground_prompt does.
  Asked twice: of the full index, and of one without the bank, glossary and fact phrasings that the data
  service's decontamination calls near-copies of a suite question ("hangman pls" in both): the second is
  the figure for questions nobody wrote into the bank.
- the test split the data service writes (`meshai data prepare`, run on the shipped samples unless
  --data-dir names a folder with test.jsonl): the label is the command of the example's bank intent
  ("relay" for relay), else the gold answer's first real slash command (a fact example: its topic, or that
  command). Test phrasings come from the question bank the index holds, so the split is scored twice:
  against the full index, and with the test examples' own template groups held out of the index (the
  figure that says how the index generalizes to phrasings it has never seen).

- the facts' own asks, in BANK_FOLDS folds: each held out of the index and asked; counted right when the
  first hit is its topic, and again when its line is the answer of the very item asked about (what the model
  copies). With --semantic the item is chosen twice: by words (catalog-v6) and by words and meaning (catalog-v7).

- the question bank itself, in BANK_FOLDS folds by template group: each fold's phrasings (slots filled with
  the bank's own values, seeded) asked of an index built without that fold's groups. Hundreds of phrasings the
  index has never seen, against the test split's few dozen: the figure to tune retrieval on, with the suite
  as the check.

A question counts as found at k when one of its labels is among the first k hits' keys, or is a command the
answer line of a fact hit names (what the model sees in its Context). Prints recall@1/@2/@4 and mean / p99
latency per query, and the Context block's size: lines kept under the token budget, and its tokens by the
embedded model's tokenizer when llama-cpp-python is installed. Exit code 1 when the suite's top-4 command
recall is under the goal (97 %).

--semantic asks indexes with the stock model's sentence vectors (grounding catalog-v6 to v8); --semantic-weights also
prints the held-out rows (suite without near-copies, bank folds) at each SEMANTIC_WEIGHT given, the way the weight
was chosen. catalog-v9 ranks with a copy tuned on every indexed phrasing, which would have seen the held-out ones:
its figures come from bench_embedder_tuning.py, which tunes a copy per held-out index.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from meshai_common.errors import NotFound
from meshai_common.grounding import (
    CONTEXT_BUDGET_TOKENS,
    DEFAULT_LINES,
    GROUNDING_VERSION,
    Hit,
    build_index,
    context_lines,
    estimate_tokens,
    retrieve,
    retrieve_from,
)
from meshai_common.grounding.index import Doc, Index
from meshai_common.meshmaster import load_catalog, slash_words
from meshai_common.prompts import meshmaster_prompt, parse_meshmaster_prompt

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = ROOT / "services" / "data" / "meshai_data" / "samples"
GOAL_TOP4 = 0.97
KS = (1, 2, 4)


@dataclass(frozen=True)
class Item:
    question: str  # the user turn (a bare question or a Mesh-Master prompt)
    labels: frozenset[str]  # keys any of which counts as found ("/c", "relay", "/nuke" for a fake)
    kind: str  # "command" | "relay" | "fake"
    group: str = ""


@dataclass
class Result:
    name: str
    n: int
    recall: dict[int, float]
    mean_ms: float
    p99_ms: float
    misses: list[tuple[str, list[str], list[str]]]

    def row(self) -> str:
        r = "  ".join(f"@{k} {self.recall[k] * 100:5.1f}%" for k in KS)
        return f"{self.name:<34} n={self.n:<4} {r}   mean {self.mean_ms:.2f} ms  p99 {self.p99_ms:.2f} ms"


def _canon(word: str) -> str | None:
    cmd = load_catalog().get(word)
    return cmd.name if cmd else None


def suite_items(name: str) -> list[Item]:
    from meshai_evaluator.suite import load_suite

    suite = load_suite(name)
    plain = load_catalog().plain_words
    items = []
    for it in suite.get("commands", []):
        question = it["question"]
        if it.get("context"):
            question = meshmaster_prompt(question, it["context"])
        accept = {_canon(a) or a for a in it.get("accept", []) if _canon(a) or a in plain}
        if it.get("relay") or (it.get("accept_regex") and not accept):
            items.append(Item(question, frozenset({"relay"} | accept), "relay"))
        elif accept:
            items.append(Item(question, frozenset(accept), "command"))
    for it in suite.get("hallucination", []):
        question = meshmaster_prompt(it["question"], it["context"]) if it.get("context") else it["question"]
        items.append(Item(question, frozenset({"/" + str(it["fake"]).lower()}), "fake"))
    return items


def split_items(data_dir: Path) -> list[Item]:
    commands = _intent_commands()
    path = data_dir / "test.jsonl"
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            ex = json.loads(line)
            turns = {t.get("role", t.get("from")): t.get("content", t.get("value"))
                     for t in ex.get("messages") or ex.get("conversations")}
            user, gold = turns.get("user", turns.get("human")), turns.get("assistant", turns.get("gpt"))
        except (ValueError, TypeError, AttributeError) as exc:
            raise SystemExit(f"{path}:{n}: not a messages/conversations record: {exc}") from None
        if not isinstance(user, str) or not isinstance(gold, str):
            raise SystemExit(f"{path}:{n}: needs a user and an assistant turn")
        intent, group = ex.get("intent", ""), ex.get("group", "")
        if intent == "fake_command":
            continue  # its answer names /help, not what was asked; fakes are scored on the suite
        # The intent's command, not the gold answer's: an example trained to say "not sure, see /help" (its
        # command left out of the Context on purpose) still asks about that command.
        label = commands.get(intent) or next((c for c in (_canon(w) for w in slash_words(gold)) if c), None)
        if label == "relay":
            items.append(Item(user, frozenset({"relay"}), "relay", group))
        elif label:
            topic = {intent.split(":", 1)[1]} if intent.startswith("fact:") else set()
            items.append(Item(user, frozenset({label} | topic), "command", group))
    return items


def _intent_commands() -> dict[str, str]:
    """Bank intent id -> its command ("relay" for the relay intent); empty without the bank."""
    try:
        from meshai_common.meshmaster.intents import load_intents
    except ImportError:
        return {}
    return {i.id: i.command or "relay" for i in load_intents() if i.command or i.id == "relay"}


BANK_FOLDS = 5


def _fold(group: str) -> int:
    return int(hashlib.sha256(group.encode()).hexdigest(), 16) % BANK_FOLDS


def bank_folds(seed: int = 7) -> Iterator[tuple[list[Item], Callable[[Doc], bool]]]:
    """The question bank in BANK_FOLDS folds by template group: per fold, its phrasings as questions (slots
    filled with the bank's own values, seeded) and which documents an index without that fold keeps (catalog
    entries, glossary phrases and facts stay: they are not the bank's phrasings)."""
    from meshai_common.grounding.index import _bank_phrasings
    from meshai_common.meshmaster.intents import load_phrasing

    pools = load_phrasing().slots
    rng = random.Random(seed)
    bank = [(target, phrase, group) for target, phrase, group in _bank_phrasings(load_catalog().plain_words)
            if target]
    for fold in range(BANK_FOLDS):
        items = [Item(re.sub(r"\{(\w+)\}", lambda m: rng.choice(pools.get(m.group(1)) or pools["name"]), phrase),
                      frozenset({target}), "command", group)
                 for target, phrase, group in bank if _fold(group) == fold]
        yield items, (lambda d, f=fold: not d.group or d.group.startswith(("glossary:", "fact:"))
                      or _fold(d.group) != f)


def bank_fold_results(seed: int = 7, semantic: bool = False) -> Result:
    """recall over the bank's phrasings, each asked of an index without its own fold (see the module doc)."""
    parts = []
    for items, keep in bank_folds(seed):
        index = build_index(keep, semantic)
        parts.append(score("", items, lambda q, h, index=index: retrieve_from(index, q, 4, h)))
    return merged(f"question bank ({BANK_FOLDS} folds held out)", parts)


def merged(name: str, parts: Sequence[Result]) -> Result:
    """One result over several parts (the folds), weighted by their sizes."""
    n = sum(r.n for r in parts)
    return Result(name, n, {k: sum(r.recall[k] * r.n for r in parts) / max(n, 1) for k in KS},
                  sum(r.mean_ms * r.n for r in parts) / max(n, 1), max((r.p99_ms for r in parts), default=0.0),
                  [m for r in parts for m in r.misses])


@lru_cache(maxsize=2)
def _fact_fold_indexes(semantic: bool) -> tuple[Index, ...]:
    """Per fold, an index without that fold's fact asks (both ways of picking the item ask the same ones)."""
    return tuple(build_index(lambda d, f=fold: not d.group.startswith("fact:") or _fold(d.group) != f, semantic)
                 for fold in range(BANK_FOLDS))


def fact_item_results(semantic: bool = False, fused_docs: bool = False) -> tuple[int, float, float]:
    """(asks, topic right %, item right %): every fact ask asked of an index without its fold of fact asks."""
    from meshai_common.meshmaster import load_facts

    n = topic_right = item_right = 0
    for fold, index in enumerate(_fact_fold_indexes(semantic)):
        for topic in load_facts().topics.values():
            for i, item in enumerate(topic.items):
                for j, ask in enumerate(item.asks):
                    if _fold(f"fact:{topic.id}:{i}:{j}") != fold:
                        continue
                    hits = retrieve_from(index, ask, 1, fused_docs=fused_docs)
                    n += 1
                    if hits and hits[0].key == topic.id:
                        topic_right += 1
                        item_right += item.answer in hits[0].line
    return n, topic_right / max(n, 1) * 100, item_right / max(n, 1) * 100


def near_copy_groups(items: Sequence[Item]) -> set[str]:
    """Groups of the indexed phrasings (bank, glossary, fact asks) that the data service's decontamination
    would call a near-copy of one of these questions: left out of the index, the suite's figure is the one of
    questions the index has never seen, as the model's training data has not."""
    from meshai_common.decontam import SuiteMatcher

    matcher = SuiteMatcher({"suite": [(parse_meshmaster_prompt(i.question) or i).question for i in items]})
    return {d.group for d in build_index().docs
            if d.group and d.text and matcher.match(re.sub(r"\{\w+\}", "x", d.text))}


def prepare_split(out: Path, min_pairs: int) -> Path:
    """Run `meshai data prepare` on the shipped samples into out (its own CLI, so no service is imported)."""
    meshai = Path(sys.executable).parent / "meshai"
    cmd = [str(meshai), "data", "prepare", "--archive", str(SAMPLES / "messages_archive.json"),
           "--mailboxes", str(SAMPLES / "mesh_mailboxes.json"), "--output-dir", str(out),
           "--min-pairs", str(min_pairs), "--cap"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out


def _found_keys(hit: Hit) -> set[str]:
    """What a hit puts in front of the model: its key, and for a fact the commands its answer names."""
    if hit.kind != "fact":
        return {hit.key}
    return {hit.key} | {c for c in (_canon(w) for w in slash_words(hit.line)) if c}


def score(name: str, items: Sequence[Item], ask: Callable[[str, Sequence[str]], list[Hit]]) -> Result:
    found = dict.fromkeys(KS, 0)
    times: list[float] = []
    misses = []
    for item in items:
        parsed = parse_meshmaster_prompt(item.question)
        question, history = (parsed.question, parsed.context) if parsed else (item.question.strip(), ())
        t0 = time.perf_counter()
        hits = ask(question, history)
        times.append((time.perf_counter() - t0) * 1000)
        keys = [_found_keys(h) for h in hits]
        for k in KS:
            top = keys[:1] if item.kind == "fake" else keys[:k]
            found[k] += bool(item.labels & set().union(*top))
        if not item.labels & set().union(*keys[:1]):
            misses.append((question, sorted(item.labels), [h.key for h in hits]))
    times.sort()
    n = max(len(items), 1)
    p99 = times[min(len(times) - 1, int(0.99 * len(times)))] if times else 0.0
    return Result(name, len(items), {k: found[k] / n for k in KS}, statistics.fmean(times or [0.0]), p99, misses)


def budget_report(items: Sequence[Item]) -> None:
    """Lines kept per question under the token budget, and the block's size by the embedded tokenizer."""
    count = _embedded_token_counter()
    kept, real, est = [], [], []
    for item in items:
        parsed = parse_meshmaster_prompt(item.question)
        question, history = (parsed.question, parsed.context) if parsed else (item.question.strip(), ())
        lines = context_lines(retrieve(question, DEFAULT_LINES, history))
        block = "".join(line + "\n" for line in lines)
        kept.append(len(lines))
        est.append(sum(estimate_tokens(line + "\n") for line in lines))
        if count:
            real.append(count(block))
    n = max(len(items), 1)
    msg = (f"context block (k={DEFAULT_LINES}, budget {CONTEXT_BUDGET_TOKENS}): {statistics.fmean(kept or [0]):.2f} "
           f"lines, all {DEFAULT_LINES} kept for {sum(k == DEFAULT_LINES for k in kept) / n * 100:.0f} %, "
           f"estimate max {max(est, default=0)}")
    if real:
        msg += f"; embedded tokenizer: mean {statistics.fmean(real):.1f}, max {max(real)} tokens"
    print(msg)


def _embedded_token_counter() -> Callable[[str], int] | None:
    """Token counter of the embedded SmolLM2 GGUF (vocabulary only), or None without llama-cpp-python."""
    try:
        from llama_cpp import Llama

        from meshai_common.embedded import embedded_gguf

        llm = Llama(model_path=str(embedded_gguf()), vocab_only=True, verbose=False)
    except Exception:  # noqa: BLE001 - optional: the figure is left out
        return None
    return lambda text: len(llm.tokenize(text.encode(), add_bos=False, special=False))


def sweep(suite: str, commands: Sequence[Item], near: set[str], weights: Sequence[float]) -> None:
    """First-hit recall of the held-out rows at each semantic weight (index.SEMANTIC_WEIGHT, read per search)."""
    from meshai_common.grounding import index as index_module

    kept = index_module.SEMANTIC_WEIGHT
    clean = build_index(lambda d: d.group not in near, True) if commands else None
    try:
        for w in weights:
            index_module.SEMANTIC_WEIGHT = w
            bank = bank_fold_results(semantic=True)
            row = f"semantic weight {w:<5g} bank folds @1 {bank.recall[1] * 100:5.1f}%  @4 {bank.recall[4] * 100:5.1f}%"
            if clean is not None:
                r = score("", commands, lambda q, h: retrieve_from(clean, q, 4, h))
                row += f"   {suite} near-copies out @1 {r.recall[1] * 100:5.1f}%  @4 {r.recall[4] * 100:5.1f}%"
            print(row, flush=True)
    finally:
        index_module.SEMANTIC_WEIGHT = kept


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", default="field", help="evaluation suite name or path (default field)")
    ap.add_argument("--data-dir", type=Path, help="a folder with test.jsonl (default: prepare one from the samples)")
    ap.add_argument("--min-pairs", type=int, default=4000, help="pairs to prepare when no --data-dir (default 4000)")
    ap.add_argument("--show-misses", action="store_true", help="print each question whose top hit is wrong")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--semantic", action="store_true", help="indexes with sentence vectors (catalog-v6, v7)")
    ap.add_argument("--semantic-weights", help="comma-separated SEMANTIC_WEIGHT values to sweep (held-out rows)")
    args = ap.parse_args(argv)
    sem = args.semantic or bool(args.semantic_weights)

    def ask(q: str, h: Sequence[str]) -> list[Hit]:
        return retrieve(q, 4, h, semantic=sem)

    t0 = time.perf_counter()
    ask("warm up", ())
    # The held-out rows need an embedding model that never saw the held-out phrasings: the stock one here;
    # catalog-v9's copy is tuned on every document, so its held-out figures come from bench_embedder_tuning.py.
    ranking = "words and the stock embedding model (catalog-v8)" if sem else "words (catalog-v5)"
    print(f"ranking by {ranking}, the default grounding being {GROUNDING_VERSION}: index built in "
          f"{(time.perf_counter() - t0) * 1000:.0f} ms")
    results: list[Result] = []
    goal_ok = True
    try:
        items = suite_items(args.suite)
    except NotFound as exc:
        print(f"suite: skipped ({exc})")
        items = []
    for kind in ("command", "relay", "fake"):
        chosen = [i for i in items if i.kind == kind]
        if chosen:
            results.append(score(f"{args.suite} {kind}", chosen, ask))
    commands = [i for i in items if i.kind in ("command", "relay")]
    near = near_copy_groups(items) if commands else set()
    if args.semantic_weights:
        sweep(args.suite, commands, near, [float(w) for w in args.semantic_weights.split(",")])
    if commands:
        overall = score(f"{args.suite} command+relay", commands, ask)
        results.append(overall)
        goal_ok = overall.recall[4] >= GOAL_TOP4
        clean = build_index(lambda d: d.group not in near, sem)
        results.append(score(f"{args.suite} c+r, {len(near)} near-copies out", commands,
                             lambda q, h: retrieve_from(clean, q, 4, h)))

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or prepare_split(Path(tmp) / "data", args.min_pairs)
        split = split_items(data_dir)
    results.append(score("test split (index has its phrasing)", split, ask))
    held = {i.group for i in split if i.group}
    heldout_index = build_index(lambda d: d.group not in held, sem)
    results.append(score("test split (phrasing held out)", split, lambda q, h: retrieve_from(heldout_index, q, 4, h)))
    results.append(bank_fold_results(semantic=sem))
    facts = [("words" if not sem else "catalog-v6, item by words", fact_item_results(sem))]
    if sem:
        facts.append(("catalog-v7, item by words and meaning", fact_item_results(sem, fused_docs=True)))

    budget_report([*items, *split])
    for r in results:
        print(r.row())
        if args.show_misses:
            for q, labels, keys in r.misses:
                print(f"    miss: {q!r} want {'/'.join(labels)} got {keys}")
    for name, (n, topic, item) in facts:
        print(f"fact asks ({BANK_FOLDS} folds held out, {name}): n={n} topic first {topic:5.1f}%  item first {item:5.1f}%")
    if args.json:
        args.json.write_text(json.dumps([{"name": r.name, "n": r.n, "recall": r.recall, "mean_ms": r.mean_ms,
                                          "p99_ms": r.p99_ms} for r in results], indent=2))
    return 0 if goal_ok else 1


if __name__ == "__main__":
    sys.exit(main())
