"""prepare(): the whole data stage on the shared fixtures and small hand-written archives."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pytest
from datatest_helpers import qa, rec, write_json

import meshai_data.prepare as prep
from meshai_common.errors import Cancelled, InvalidInput
from meshai_common.meshmaster import load_facts, load_intents
from meshai_common.progress import LocalContext
from meshai_common.prompts import DEFAULT_SYSTEM_PROMPT
from meshai_data.normalize import near_dup_key
from meshai_data.prepare import DEFAULT_MIN_PAIRS, prepare
from meshai_data.validate import validate

SPLITS = ("train", "val", "test")


def _lines(out, name):
    return [json.loads(line) for line in (out / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]


def _all_text(out):
    return "".join((out / f"{n}.jsonl").read_text(encoding="utf-8") for n in SPLITS)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, fixtures_dir):
    out = tmp_path_factory.mktemp("default")
    meta = prepare([fixtures_dir / "messages_archive.json"], fixtures_dir / "mesh_mailboxes.json", out, seed=42)
    return out, meta


def test_default_dataset_is_small_dense_and_valid(default_run):
    out, meta = default_run
    assert 600 <= DEFAULT_MIN_PAIRS <= 1500
    assert meta["total_pairs"] == DEFAULT_MIN_PAIRS == sum(meta[f"{s}_size"] for s in SPLITS)
    assert meta["sources"]["archive"] == 5  # 12 archive pairs, 5 distinct questions
    assert meta["sources"]["mailboxes"] > 0 and meta["sources"]["synthetic"] > 0
    assert meta["archive"]["skipped"]["suffix_stripped"] == 12
    assert set(meta["scrub"]) == {"email", "coords", "phone", "node_id", "pin", "name"}
    assert meta["bad_records"] == {"archive": 0, "mailboxes": 0}
    assert meta["meshmaster_prompts"] / meta["total_pairs"] >= 0.7
    assert meta["with_bot_system"] / meta["total_pairs"] > 0.4  # operators' texts, and some prompts without
    weights = {i.id: i.weight for i in load_intents()} | {f"fact:{t}": 1.0 for t in load_facts().topics}
    for intent, weight in weights.items():  # every intent in train, and none favoured within its kind
        assert meta["intents_by_split"]["train"].get(intent, 0) >= 4 * min(weight, 1.0), intent
    sizes = [meta["intents"][i.id] for i in load_intents() if i.weight == 1]
    assert max(sizes) - min(sizes) <= 2
    for i in load_intents():  # an intents.yaml weight scales its share
        if i.weight != 1:
            assert abs(meta["intents"][i.id] - i.weight * min(sizes)) <= 2 * i.weight, i.id
    # fact topics share one weight; a topic with fewer phrasings than its share gives all it has
    facts = [meta["intents"][f"fact:{t}"] for t in load_facts().topics]
    assert min(facts) >= 8 and Counter(facts).most_common(1)[0][0] == max(facts)
    assert validate([out / f"{s}.jsonl" for s in SPLITS]) == []


def test_files_are_chat_messages_with_hashes_in_metadata(default_run):
    out, meta = default_run
    on_disk = json.loads((out / "metadata.json").read_text())
    assert on_disk["files"] == meta["files"]
    for s in SPLITS:
        data = (out / f"{s}.jsonl").read_bytes()
        assert meta["files"][f"{s}.jsonl"] == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                                              "lines": meta[f"{s}_size"]}
        for row in _lines(out, s):
            assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
            assert row["messages"][0]["content"] == DEFAULT_SYSTEM_PROMPT
            assert row["intent"] and row["source"] in {"archive", "mailboxes", "synthetic"}
    assert not list(out.glob(".*tmp*"))


def test_same_seed_same_bytes_other_seed_other_split(tmp_path, fixtures_dir):
    a = prepare([fixtures_dir / "messages_archive.json"], None, tmp_path / "a", seed=9, min_pairs=200)
    b = prepare([fixtures_dir / "messages_archive.json"], None, tmp_path / "b", seed=9, min_pairs=200)
    c = prepare([fixtures_dir / "messages_archive.json"], None, tmp_path / "c", seed=10, min_pairs=200)
    assert a["files"] == b["files"] and a["files"] != c["files"]


def test_no_padding_fail_or_cap(tmp_path, fixtures_dir, monkeypatch):
    monkeypatch.setattr(prep, "LEVELS", ((0, 1, 10_000),))  # a small pool keeps the test fast
    arch = [fixtures_dir / "messages_archive.json"]
    with pytest.raises(InvalidInput, match=r"only \d+ unique question/answer pairs.*min_pairs=100000.*--cap"):
        prepare(arch, None, tmp_path / "x", min_pairs=100_000)
    assert not (tmp_path / "x" / "train.jsonl").exists()
    meta = prepare(arch, None, tmp_path / "y", min_pairs=100_000, cap=True)
    assert meta["capped"] and meta["total_pairs"] == meta["unique_available"] < 100_000
    assert validate([tmp_path / "y" / f"{s}.jsonl" for s in SPLITS]) == []  # no duplicates anywhere
    with pytest.raises(InvalidInput, match="min_pairs must be >= 1"):
        prepare(arch, None, tmp_path / "z", min_pairs=0)


def test_evaluation_questions_are_decontaminated(tmp_path, fixtures_dir):
    suite = ["How do I see all nodes?", "What is SNR?", "how do I check my mail"]
    meta = prepare([fixtures_dir / "messages_archive.json"], None, tmp_path, min_pairs=300, cap=True,
                   exclude_prompts=suite)
    assert meta["excluded_prompts"] == 3 and meta["decontaminated_by_suite"]["exclude_prompts"] >= 3
    keys = {near_dup_key(q) for q in suite}
    for s in SPLITS:
        for row in _lines(tmp_path, s):
            assert near_dup_key(row["messages"][1]["content"]) not in keys


def test_archive_pii_is_scrubbed_and_emergencies_dropped(tmp_path):
    records = [
        *qa(1, "my number is 555-123-4567, can NWBC relay?", "DM me 'NWBC <message>' to relay it."),
        *qa(2, "where is camp", "Camp is at 40.71280, -74.00600; mail bob@example.com or !89449aaa."),
        *qa(3, "what pin do I use", "Use /c ops 4821 to read ops."),
        *qa(4, "mayday mayday", "Help is on the way."),
        *qa(5, "my ring is broken", "Ask on the channel.", emergency=True),
    ]
    records.append(rec("2025-09-20 12:00:00 UTC", "NWBC (!11e20b8f)", "hello"))
    arch = write_json(tmp_path / "in" / "messages_archive.json", records)
    out = tmp_path / "out"
    meta = prepare([arch], None, out, min_pairs=150)
    text = _all_text(out)
    for leaked in ("555-123-4567", "40.71280", "bob@example.com", "!89449aaa", "4821", "NWBC", "mayday",
                   "ring is broken"):
        assert leaked not in text
    assert "<phone>" in text and "<coords>" in text and "<email>" in text and "<pin>" in text
    sc = meta["scrub"]
    assert sc["phone"] == 1 and sc["coords"] == 1 and sc["email"] == 1 and sc["node_id"] == 1 and sc["pin"] == 1
    assert sc["name"] >= 2
    assert meta["archive"]["skipped"]["emergency"] == 2
    assert meta["sources"]["archive"] == 3


def test_archive_answers_with_invented_commands_or_over_budget_are_not_taught(tmp_path):
    records = [*qa(1, "how do I relay", "Use /relay bob hello."), *qa(2, "tell me everything", "word " * 80),
               *qa(3, "what is the hop limit", "Default 3, max 7.")]
    arch = write_json(tmp_path / "messages_archive.json", records)
    meta = prepare([arch], None, tmp_path / "out", min_pairs=150)
    assert meta["archive"]["skipped"]["unknown_command"] == 1 and meta["archive"]["skipped"]["over_budget"] == 1
    assert meta["sources"]["archive"] == 1


def test_mailbox_bodies_never_leave_and_locked_boxes_are_counted(tmp_path, fixtures_dir):
    box = {"gear": [{"body": "secret cache under the oak tree", "sender_id": "!00000001", "sender_short": "ZED",
                     "timestamp": "2025-09-29T00:00:00+00:00", "mailbox": "gear", "id": "1"}],
           "vault": [{"body": "gAAAAABmFernetTokenHere==", "sender_id": "!00000002", "sender_short": "YAN",
                      "timestamp": "2025-09-29T00:00:00+00:00", "mailbox": "vault", "id": "2"}]}
    mb = write_json(tmp_path / "mesh_mailboxes.json", box)
    meta = prepare([fixtures_dir / "messages_archive.json"], mb, tmp_path / "out", min_pairs=DEFAULT_MIN_PAIRS)
    text = _all_text(tmp_path / "out")
    assert "oak tree" not in text and "gAAAAA" not in text
    assert meta["mailboxes"] == {"boxes": 2, "items": 2, "locked_items": 1, "unusable_box_names": 0}
    assert "/m gear <message>" in text and "/c vault <PIN>" in text


def test_bad_records_counted_by_default_and_fatal_when_strict(tmp_path):
    records = [*qa(1, "what is the hop limit", "Default 3, max 7."), {"timestamp": 5}]
    arch = write_json(tmp_path / "messages_archive.json", records)
    meta = prepare([arch], None, tmp_path / "out", min_pairs=100)
    assert meta["bad_records"]["archive"] == 1
    assert meta["problems"] == [f"{arch}: record 2: missing field 'node'"] or \
        "record 2" in meta["problems"][0]
    with pytest.raises(InvalidInput, match=r"messages_archive\.json: record 2"):
        prepare([arch], None, tmp_path / "strict", min_pairs=100, strict=True)
    assert not (tmp_path / "strict" / "train.jsonl").exists()


def test_outputs_are_atomic_a_failed_run_leaves_the_previous_files(tmp_path, fixtures_dir, monkeypatch):
    arch = [fixtures_dir / "messages_archive.json"]
    out = tmp_path / "out"
    first = prepare(arch, None, out, min_pairs=150)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = {"n": 0}
    real = prep.to_record

    def flaky(ex, sharegpt=False):
        calls["n"] += 1
        if calls["n"] == 140:  # in the val file, after train was written to its temp file
            raise OSError("disk full")
        return real(ex, sharegpt)

    monkeypatch.setattr(prep, "to_record", flaky)
    with pytest.raises(OSError, match="disk full"):
        prepare(arch, None, out, min_pairs=200, seed=1)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert json.loads((out / "metadata.json").read_text())["files"] == first["files"]


def test_sharegpt_format(tmp_path, fixtures_dir):
    prepare([fixtures_dir / "messages_archive.json"], None, tmp_path, min_pairs=100, sharegpt=True)
    row = _lines(tmp_path, "train")[0]
    assert [t["from"] for t in row["conversations"]] == ["system", "human", "gpt"]
    assert validate([tmp_path / f"{s}.jsonl" for s in SPLITS]) == []


def test_progress_and_cancel(tmp_path, fixtures_dir):
    ctx = LocalContext(tmp_path / "work")
    prepare([fixtures_dir / "messages_archive.json"], None, tmp_path / "out", min_pairs=100, ctx=ctx)
    assert ctx.events[-1].step == ctx.events[-1].total and "wrote 100" in ctx.events[-1].message
    ctx2 = LocalContext(tmp_path / "work2")
    ctx2.cancel()
    with pytest.raises(Cancelled):
        prepare([fixtures_dir / "messages_archive.json"], None, tmp_path / "out2", ctx=ctx2)
    assert not (tmp_path / "out2").exists()
