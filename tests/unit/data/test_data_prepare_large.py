"""A large archive in the bot's format, every case mixed in at random, with the expected counts kept by the
generator itself: `prepare` must report exactly those counts, and its outputs must validate."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

from datatest_helpers import rec, write_json

from meshai_data.prepare import prepare
from meshai_data.validate import validate

SENDERS = ["ALFA (!0a0b0c0d)", "BRAVO (!1b2c3d4e)", "!2c3d4e5f", "CHARLIE (!3d4e5f60)", "!4e5f6071"]
BOT = "Mesh Master"
GOOD_ANSWER = "Keep the antenna vertical and high; check SNR with /nodes."
# Indexes read "k911", never "911": a bare 911 marks emergency traffic.
PII = {  # kind -> question text with exactly one item of that kind
    "phone": "case k{i}: call me on 555-201-{i:04d} when the relay is up",
    "email": "case k{i}: send the map to scout{i}@example.org",
    "coords": "case k{i}: is there coverage at 45.{i:05d}, -122.{i:05d}",
    "node_id": "case k{i}: can you hear !9f{i:06x} from here",
    "pin": "case k{i}: my pin is {pin}, how do I read mail",
    "name": "case k{i}: can BRAVO reach the ridge repeater",
}


class ArchiveBuilder:
    """Writes records with increasing timestamps and counts what `prepare` should find."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.t = datetime(2025, 9, 1, 8, 0, 0)
        self.records: list[dict] = []
        self.skipped: Counter = Counter()
        self.scrub: Counter = Counter()
        self.pairs_found = 0
        self.usable = 0
        self.unique_usable = 0
        self.bad = 0

    def ts(self) -> str:
        self.t += timedelta(seconds=7)
        return self.t.strftime("%Y-%m-%d %H:%M:%S UTC")

    def ask(self, text: str, **kw) -> str:
        ts = self.ts()
        self.records.append(rec(ts, kw.pop("node", self.rng.choice(SENDERS)), text, **kw))
        return ts

    def reply(self, to: str | None, text: str, suffix: bool = True, **kw) -> None:
        msg = f"{text} ({self.rng.randint(1, 40)}s)" if suffix else text
        self.records.append(rec(self.ts(), BOT, msg, is_ai=True, reply_to=to, **kw))
        if to is not None and suffix:
            self.skipped["suffix_stripped"] += 1

    def pair(self, question: str, answer: str = GOOD_ANSWER, *, unique: bool = True) -> None:
        self.reply(self.ask(question), answer)
        self.pairs_found += 1
        self.usable += 1
        self.unique_usable += unique


def build(rng: random.Random, n: int) -> ArchiveBuilder:
    b = ArchiveBuilder(rng)
    for i in range(n):
        case = rng.choice(["good", "good", "good", "ai_prefix", "pii", "placeholder", "error", "fallback",
                           "empty", "unknown_reply_to", "emergency_flag", "emergency_text", "command",
                           "over_budget", "unknown_command", "duplicate", "no_reply_to", "ambiguous", "bad"])
        q = f"case k{i}: how far does a handheld reach from the north ridge"
        if case == "good":
            b.pair(q)
        elif case == "ai_prefix":
            b.pair(f"/ai {q}")
        elif case == "pii":
            kind = rng.choice(sorted(PII))
            b.pair(PII[kind].format(i=i, pin=4000 + i))
            b.scrub[kind] += 1
        elif case == "placeholder":
            b.reply(b.ask(rng.choice(["📨 dm received", "✉️ mail sent"])), GOOD_ANSWER)
            b.skipped["placeholder"] += 1
        elif case == "error":
            b.reply(b.ask(q), "⚠️ OLLAMA error: read timed out")
            b.skipped["error_reply"] += 1
        elif case == "fallback":
            b.reply(b.ask(q), "🤖 [No AI response]")
            b.skipped["fallback_reply"] += 1
        elif case == "empty":
            b.reply(b.ask(q), "", suffix=False)
            b.skipped["empty"] += 1
        elif case == "unknown_reply_to":
            b.reply("2024-01-01 00:00:00 UTC", GOOD_ANSWER)
            b.skipped["unknown_reply_to"] += 1
        elif case == "emergency_flag":
            b.reply(b.ask(q, emergency=True), GOOD_ANSWER)
            b.skipped["emergency"] += 1
        elif case == "emergency_text":
            b.reply(b.ask(f"case k{i}: SOS my truck is stuck past the north ridge"), GOOD_ANSWER)
            b.skipped["emergency"] += 1
        elif case == "command":
            b.reply(b.ask("/weather"), "Sunny, 21C.")
            b.skipped["command_question"] += 1
        elif case == "over_budget":
            b.reply(b.ask(q), "word " * 80)
            b.pairs_found += 1
            b.skipped["over_budget"] += 1
        elif case == "unknown_command":
            b.reply(b.ask(q), "Use /relay bob hello to reach the ridge.")
            b.pairs_found += 1
            b.skipped["unknown_command"] += 1
        elif case == "duplicate":  # the same question asked again later: one pair survives
            b.pair(q)
            b.pair(q.upper() + "?", unique=False)
        elif case == "no_reply_to":
            b.reply(None, GOOD_ANSWER)
            b.skipped["ai_without_reply_to"] += 1
        elif case == "ambiguous":  # two different questions stamped in the same second
            ts = b.ask(q)
            b.records.append(rec(ts, SENDERS[0], f"case k{i}: something else entirely about batteries"))
            b.reply(ts, GOOD_ANSWER)
            b.skipped["ambiguous_reply_to"] += 1
        else:  # a record of the wrong type: skipped and counted
            b.records.append({"timestamp": b.ts(), "node": 42, "message": "x", "is_ai": False})
            b.bad += 1
    return b


def test_large_rotated_archive_counts_are_exact(tmp_path: Path) -> None:
    b = build(random.Random(20251010), 1500)
    folder = tmp_path / "archives"
    third = len(b.records) // 3
    overlap = 25  # rotated files overlap the next one: repeats are dropped and counted
    parts = [b.records[:third + overlap], b.records[third:2 * third + overlap], b.records[2 * third:]]
    for name, part in zip(["messages_archive_20250901_000000.json", "messages_archive_20250915_000000.json",
                           "messages_archive.json"], parts, strict=True):
        write_json(folder / name, part)
    repeated = b.records[third:third + overlap] + b.records[2 * third:2 * third + overlap]
    repeated_bad = sum(isinstance(r["node"], int) for r in repeated)
    skipped = b.skipped + Counter(duplicate_record=len(repeated) - repeated_bad)

    out = tmp_path / "out"
    # Every pair the inputs allow (~73k); grounding them all would take a minute and is tested elsewhere.
    meta = prepare([folder], None, out, seed=3, min_pairs=10**6, cap=True, grounded=False)

    arch = meta["archive"]
    assert arch["records"] == len(b.records) + 2 * overlap
    assert meta["bad_records"]["archive"] == b.bad + repeated_bad
    assert arch["pairs_found"] == b.pairs_found
    assert arch["pairs_usable"] == b.usable
    assert arch["skipped"] == dict(sorted(skipped.items()))
    assert meta["sources"]["archive"] == b.unique_usable
    assert meta["scrub"] == {k: b.scrub[k] for k in ("email", "coords", "phone", "node_id", "pin", "name")}
    assert meta["capped"] and meta["total_pairs"] == meta["unique_available"]
    assert meta["train_size"] + meta["val_size"] + meta["test_size"] == meta["total_pairs"]

    files = [out / f"{s}.jsonl" for s in ("train", "val", "test")]
    assert validate(files) == []
    text = "\n".join(f.read_text() for f in files)
    for leaked in ("555-201-", "@example.org", "45.0", "!9f", "BRAVO", "SOS", "read timed out"):
        assert leaked not in text
    archive_rows = [json.loads(line) for f in files for line in f.read_text().splitlines()
                    if json.loads(line)["source"] == "archive"]
    assert len(archive_rows) == b.unique_usable
    assert all(not r["messages"][1]["content"].startswith("/ai") for r in archive_rows)
