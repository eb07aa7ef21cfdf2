"""`prepare`: Mesh-Master archives + mailboxes + grounded synthetic pairs -> train/val/test JSONL + metadata.

Order of work: read (bad records skipped and counted, or strict) -> rebuild archive pairs -> scrub personal
data -> generate synthetic pairs -> remove near-duplicates (archive first, then mailbox-grounded, then
synthetic) -> drop evaluation questions and their near-duplicates from every pool (decontamination against
every suite in the evaluator's suites folder, or `suites_dir`) -> pick `min_pairs`, balanced by intent
weight -> shape ~75 % of user turns like Mesh-Master's prompt -> add the retrieved catalog lines the server
adds (grounded, the default) -> split by template group -> write atomically.

Nothing is repeated to reach `min_pairs`: with fewer unique pairs the call fails and says how many exist,
or with cap=True writes what exists.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from meshai_common.decontam import SuiteMatcher, suite_questions
from meshai_common.errors import InvalidInput
from meshai_common.meshmaster import load_catalog, load_facts, unknown_slash_words
from meshai_common.progress import JobContext, Progress
from meshai_common.prompts import DEFAULT_SYSTEM_PROMPT, parse_meshmaster_prompt
from meshai_common.radio import utf8_len
from meshai_data.grounded import ground, grounding_version
from meshai_data.normalize import near_dup_key
from meshai_data.normalize import stable_hash as _h
from meshai_data.readers import Mailboxes, extract_pairs, read_archives, read_mailboxes
from meshai_data.scrub import Scrubber
from meshai_data.split import SPLITS, dedupe, split
from meshai_data.synth import ANSWER_BUDGET, Example, check_answer, generate, intent_weights, wrap_meshmaster

# Sized for the embedded default: SmolLM2-135M trained for minutes on 2 CPU cores sees some 600 examples
# (~74 steps of 8), so the default set is small, dense and interleaved by intent, and about one epoch: in the
# same 74 steps, 800 pairs (new examples) scored better on the field suite than 640 seen more than once. 1000
# since the bank covers every catalog command: the rarer commands' intents (half weight) take about 140 pairs,
# and the everyday intents keep their 8 to 9 examples each.
DEFAULT_MIN_PAIRS = 1000
# (typo variants, slot fillings) per phrasing, and about how many unique pairs that level yields. A larger
# level is generated only when min_pairs needs it (the guide's 50k needs the last).
LEVELS = ((1, 2, 11_000), (3, 5, 26_000), (8, 12, 72_000))
SOURCE_ORDER = {"archive": 0, "mailboxes": 1, "synthetic": 2}
MAX_PROBLEMS_IN_METADATA = 20
_STEPS = 6
EXCLUDE_SUITE = "exclude_prompts"  # the suite name caller-given evaluation questions are counted under


def default_suites_dir() -> Path | None:
    """The evaluator's suites folder, found without importing the evaluator; None where it is not installed."""
    spec = importlib.util.find_spec("meshai_evaluator")
    if spec is None or not spec.origin:
        return None
    folder = Path(spec.origin).parent / "suites"
    return folder if folder.is_dir() else None


def prepare(
    archives: Sequence[str | Path],
    mailboxes: str | Path | None,
    out_dir: str | Path,
    *,
    seed: int = 42,
    min_pairs: int = DEFAULT_MIN_PAIRS,
    cap: bool = False,
    strict: bool = False,
    sharegpt: bool = False,
    exclude_prompts: Iterable[str] = (),
    grounded: bool = True,
    suites_dir: str | Path | None = None,
    ctx: JobContext | None = None,
) -> dict:
    """Build the dataset; returns the metadata also written to out_dir/metadata.json.

    grounded: user turns carry the catalog lines the server retrieves (see meshai_data.grounded).
    suites_dir: folder of evaluation suites (*.yaml) whose questions, and their near-duplicates, are kept
    out of every pool; None means the evaluator's own suites folder when it is installed.
    """
    t0 = time.monotonic()
    if min_pairs < 1:
        raise InvalidInput(f"min_pairs must be >= 1, got {min_pairs}")
    if not archives:
        raise InvalidInput("no archive given: pass at least one messages_archive.json file or folder")
    out_dir = Path(out_dir)

    def step(n: int, message: str) -> None:
        if ctx is not None:
            ctx.check_cancelled()
            ctx.report(Progress(step=n, total=_STEPS, message=message))

    step(0, "reading archives")
    records, report = read_archives(archives, strict=strict)
    pairs = extract_pairs(records, report)
    mail: Mailboxes | None = None
    if mailboxes is not None:
        step(1, "reading mailboxes")
        mail = read_mailboxes(mailboxes, strict=strict)

    step(2, f"scrubbing {len(pairs)} archive pairs")
    scrubber = Scrubber(report.names | (mail.senders if mail else set()))
    archive_examples = _archive_examples(pairs, scrubber, report.skipped)

    step(3, "generating grounded synthetic pairs")
    exclude_prompts = list(exclude_prompts)
    excluded = {k for k in (near_dup_key(p) for p in exclude_prompts) if k}
    suites_path = Path(suites_dir) if suites_dir is not None else default_suites_dir()
    suites = suite_questions(suites_path) if suites_path is not None else {}
    matcher = SuiteMatcher({**suites, **({EXCLUDE_SUITE: exclude_prompts} if exclude_prompts else {})})
    box_names = mail.names if mail else []
    locked = [b for b in box_names if mail and mail.locked(b)]
    start = next((i for i, lv in enumerate(LEVELS) if lv[2] >= min_pairs * 1.1), len(LEVELS) - 1)
    for typos, fills, _ in LEVELS[start:]:
        pool = generate(seed, mailbox_names=box_names, locked_boxes=locked, typos=typos, fills=fills)
        pool.sort(key=lambda e: SOURCE_ORDER.get(e.source, 9))  # stable: grounded copies win the dedupe
        kept, dup_removed, exact_hits = dedupe([*archive_examples, *pool], exclude=excluded)
        kept, near_hits = _decontaminate(kept, matcher)
        if exact_hits:
            near_hits[EXCLUDE_SUITE] += exact_hits
        if len(kept) >= min_pairs:
            break

    step(4, f"selecting {min_pairs} of {len(kept)} unique pairs")
    capped = len(kept) < min_pairs
    if capped and not cap:
        raise InvalidInput(
            f"only {len(kept)} unique question/answer pairs can be built from these inputs "
            f"({sum(e.source == 'archive' for e in kept)} from archives, the rest synthetic), "
            f"fewer than min_pairs={min_pairs}; "
            "pairs are never repeated to pad a dataset. Lower --min-pairs, add archives, or pass --cap."
        )
    chosen = kept if capped else select(kept, min_pairs, seed)
    chosen = wrap_meshmaster(chosen, seed)
    grounding_stats: Counter = Counter()
    version = grounding_version() if grounded else None
    if version:
        step(4, f"grounding {len(chosen)} user turns ({version})")
        chosen, grounding_stats = ground(chosen, version)
    for ex in chosen:  # last line of defence: nothing over budget or invented leaves this function
        check_answer(ex.answer, f"(intent {ex.intent}, source {ex.source})")

    step(5, "splitting and writing")
    splits = split(chosen, seed)

    def metadata(files: dict[str, dict]) -> dict:
        return _metadata(
            seed=seed, min_pairs=min_pairs, capped=capped, unique_available=len(kept), splits=splits,
            scrubber=scrubber, report=report, pairs=len(pairs), archive_kept=len(archive_examples), mail=mail,
            dup_removed=dup_removed, decontaminated=near_hits, excluded=len(excluded), files=files,
            sharegpt=sharegpt, seconds=time.monotonic() - t0, suites={k: len(v) for k, v in suites.items()},
            suites_dir=suites_path, grounding=version,
            grounding_stats=grounding_stats,
        )

    meta = _write_outputs(out_dir, splits, sharegpt, metadata)
    if ctx is not None:
        ctx.report(Progress(step=_STEPS, total=_STEPS, message=f"wrote {meta['total_pairs']} pairs",
                            metrics={k: float(meta[f"{k}_size"]) for k in SPLITS}))
    return meta


def _decontaminate(examples: list[Example], matcher: SuiteMatcher) -> tuple[list[Example], Counter]:
    """The examples whose question is no near-duplicate of an evaluation question; removals per suite."""
    removed: Counter = Counter()
    if not len(matcher):
        return examples, removed
    kept = []
    for ex in examples:
        hit = matcher.match(ex.question)
        if hit is None:
            kept.append(ex)
        else:
            removed[hit.suite] += 1
    return kept, removed


def _archive_examples(pairs, scrubber: Scrubber, skipped: Counter) -> list[Example]:
    out = []
    for p in pairs:
        q, a = scrubber(p.question).strip(), scrubber(p.answer).strip()
        if utf8_len(a) > ANSWER_BUDGET:
            skipped["over_budget"] += 1
            continue
        if unknown_slash_words(a):
            skipped["unknown_command"] += 1  # the old model invented a command: never teach it
            continue
        if not q or not a:
            skipped["empty"] += 1
            continue
        out.append(Example(q, a, "archive", "archive:" + near_dup_key(q), "archive"))
    return out


def select(examples: list[Example], n: int, seed: int) -> list[Example]:
    """n examples, shared among intents by weight (water-filling), spread evenly over each intent's groups."""
    weights = intent_weights()
    per_intent: dict[str, dict[str, list[Example]]] = {}
    for ex in examples:
        per_intent.setdefault(ex.intent, {}).setdefault(ex.group, []).append(ex)
    sequences: dict[str, list[Example]] = {}
    for intent, groups in per_intent.items():
        lists = []
        # Groups holding the operator's own material (archive, mailbox names) come first, then seeded order.
        first = {g: min(SOURCE_ORDER.get(e.source, 9) for e in items) for g, items in groups.items()}
        for g in sorted(groups, key=lambda g: (first[g], _h(seed, "grp", g), g)):
            items = groups[g]
            items.sort(key=lambda e: (SOURCE_ORDER.get(e.source, 9), _pick_rank(e, seed), _h(seed, "pick", e.question)))
            lists.append(items)
        seq: list[Example] = []
        depth = 0
        while len(seq) < sum(map(len, lists)):  # round-robin: one per group per pass
            seq.extend(items[depth] for items in lists if depth < len(items))
            depth += 1
        sequences[intent] = seq
    quotas = _water_fill(n, {k: len(v) for k, v in sequences.items()},
                         {k: weights.get(k, 1.0) for k in sequences})
    return [ex for intent in sorted(sequences) for ex in sequences[intent][: quotas[intent]]]


TYPO_SHARE = 0.25  # of a dataset smaller than the pool: misspelled questions, the rest clean


def _pick_rank(ex: Example, seed: int) -> int:
    """Clean phrasings first, with about TYPO_SHARE of the typo variants promoted among them."""
    if not ex.typo:
        return 0
    return 0 if (_h(seed, "typo-pick", ex.question) % 1000) < TYPO_SHARE * 1000 / (1 - TYPO_SHARE) / 2 else 1


def _water_fill(n: int, sizes: dict[str, int], weights: dict[str, float]) -> dict[str, int]:
    quota = {k: 0 for k in sizes}
    active = {k for k, s in sizes.items() if s > 0}
    left = min(n, sum(sizes.values()))
    while active and left > 0:
        total_w = sum(weights[k] for k in active)
        share = {k: left * weights[k] / total_w for k in active}
        full = {k for k in active if sizes[k] - quota[k] <= share[k]}
        if full:
            for k in full:
                left -= sizes[k] - quota[k]
                quota[k] = sizes[k]
            active -= full
            continue
        floors = {k: int(share[k]) for k in active}
        for k in active:
            quota[k] += floors[k]
        rest = left - sum(floors.values())
        for k in sorted(active, key=lambda k: (-(share[k] - floors[k]), k))[:rest]:
            quota[k] += 1
        break
    return quota


# -- output -----------------------------------------------------------------------------------------------


def to_record(ex: Example, sharegpt: bool = False) -> dict:
    extra = {"intent": ex.intent, "source": ex.source, "group": ex.group}
    if sharegpt:
        return {"conversations": [{"from": "system", "value": DEFAULT_SYSTEM_PROMPT},
                                  {"from": "human", "value": ex.user_turn},
                                  {"from": "gpt", "value": ex.answer}], **extra}
    return {"messages": [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                         {"role": "user", "content": ex.user_turn},
                         {"role": "assistant", "content": ex.answer}], **extra}


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _write_tmp(path: Path, data: bytes) -> Path:
    tmp = _tmp_path(path)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    if tmp.stat().st_size != len(data):
        raise OSError(f"short write to {tmp}")
    return tmp


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_outputs(out_dir: Path, splits: dict[str, list[Example]], sharegpt: bool,
                   metadata: Callable[[dict[str, dict]], dict]) -> dict:
    """Write the splits and metadata.json as one unit: every file goes to a temp file first, and only when
    all four are complete and synced are they moved in place. A failure leaves the previous outputs as
    they were. Returns the metadata."""
    out_dir.mkdir(parents=True, exist_ok=True)
    temps: dict[Path, Path] = {}
    info: dict[str, dict] = {}
    try:
        for name in SPLITS:
            lines = [json.dumps(to_record(ex, sharegpt), ensure_ascii=False) for ex in splits[name]]
            data = ("\n".join(lines) + "\n").encode() if lines else b""
            path = out_dir / f"{name}.jsonl"
            temps[path] = _write_tmp(path, data)
            info[path.name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "lines": len(lines)}
        meta = metadata(info)
        meta_path = out_dir / "metadata.json"
        temps[meta_path] = _write_tmp(meta_path, (json.dumps(meta, indent=2, ensure_ascii=False) + "\n").encode())
        for path, tmp in temps.items():  # metadata last: its presence vouches for the splits
            os.replace(tmp, path)
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
    _fsync_dir(out_dir)
    return meta


def _metadata(*, seed, min_pairs, capped, unique_available, splits, scrubber, report, pairs, archive_kept, mail,
              dup_removed, decontaminated, excluded, files, sharegpt, seconds, suites, suites_dir, grounding,
              grounding_stats) -> dict:
    everything = [ex for name in SPLITS for ex in splits[name]]
    intents = Counter(ex.intent for ex in everything)
    users = [ex.user_turn for ex in everything]
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "format": "sharegpt" if sharegpt else "messages",
        "system_prompt": DEFAULT_SYSTEM_PROMPT,
        "seed": seed,
        "min_pairs": min_pairs,
        "capped": capped,
        "unique_available": unique_available,
        "total_pairs": len(everything),
        "train_size": len(splits["train"]),
        "val_size": len(splits["val"]),
        "test_size": len(splits["test"]),
        "sources": {s: sum(1 for ex in everything if ex.source == s) for s in SOURCE_ORDER},
        "intents": dict(sorted(intents.items())),
        "intents_by_split": {name: dict(sorted(Counter(ex.intent for ex in splits[name]).items())) for name in SPLITS},
        "meshmaster_prompts": sum(1 for u in users if parse_meshmaster_prompt(u) is not None),
        "with_bot_system": sum(1 for u in users if (p := parse_meshmaster_prompt(u)) is not None and p.system),
        "grounding": grounding,
        "grounded_prompts": sum(1 for ex in everything if ex.grounded),
        "grounding_gold_missing": grounding_stats.get("gold_missing", 0),
        "avg_user_chars": round(sum(map(len, users)) / max(len(users), 1), 1),
        "scrub": scrubber.counts(),
        "bad_records": {"archive": report.bad_records, "mailboxes": mail.bad_records if mail else 0},
        "problems": [*report.problems, *(mail.problems if mail else [])][:MAX_PROBLEMS_IN_METADATA],
        "archive": {"files": [Path(f).name for f in report.files], "records": report.records,
                    "pairs_found": pairs, "pairs_usable": archive_kept,
                    "skipped": dict(sorted(report.skipped.items()))},
        "mailboxes": None if mail is None else {
            "boxes": len(mail.boxes), "items": mail.items, "locked_items": mail.locked_items,
            "unusable_box_names": mail.skipped_boxes},
        "near_duplicates_removed": dup_removed,
        "excluded_prompts": excluded,
        "decontaminated": sum(decontaminated.values()),
        "decontaminated_by_suite": dict(sorted(decontaminated.items())),
        "suites": suites,
        "suites_dir": str(suites_dir) if suites_dir is not None else None,
        "catalog_version": load_catalog().version,
        "facts_version": load_facts().version,
        "files": files,
        "seconds": round(seconds, 3),
    }
