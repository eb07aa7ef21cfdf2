"""Decontamination: evaluation questions and their near-duplicates never reach training data."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from datatest_helpers import qa, write_json

from meshai_common.decontam import SuiteMatcher, ngrams, suite_questions
from meshai_common.errors import ConfigError
from meshai_common.prompts import question_of
from meshai_data.prepare import default_suites_dir, prepare

SPLITS = ("train", "val", "test")
SUITE = {
    "name": "mini",
    "commands": [{"id": "relay", "question": "How do I relay a message to bob?"},
                 {"id": "mail", "question": "How do I check my mail?"}],
    "technical": [{"id": "snr", "question": "What is SNR?"}],
    "extra": {"questions": ["How do I search my logs?"], "prompt": "How do I create a private note?"},
}


@pytest.fixture
def suites_dir(tmp_path) -> Path:
    d = tmp_path / "suites"
    d.mkdir()
    (d / "mini.yaml").write_text(yaml.safe_dump(SUITE, sort_keys=False), encoding="utf-8")
    (d / "other.yml").write_text(yaml.safe_dump({"items": [{"question": "What node roles are there?"}]}))
    return d


def test_suite_questions_read_every_file_without_the_evaluator(suites_dir):
    found = suite_questions(suites_dir)
    assert found == {"mini": ["How do I relay a message to bob?", "How do I check my mail?", "What is SNR?",
                              "How do I search my logs?", "How do I create a private note?"],
                     "other": ["What node roles are there?"]}
    with pytest.raises(ConfigError, match="evaluation suites folder not found"):
        suite_questions(suites_dir / "nope")
    (suites_dir / "bad.yaml").write_text("a: [\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: cannot read the evaluation suite"):
        suite_questions(suites_dir)


def test_the_evaluator_suites_are_found_without_importing_it():
    folder = default_suites_dir()
    assert folder is not None and (folder / "public.yaml").is_file()
    code = ("import sys; from meshai_data.prepare import default_suites_dir; default_suites_dir(); "
            "print('meshai_evaluator' in sys.modules)")
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert fresh.stdout.strip() == "False"


@pytest.mark.parametrize("variant", [
    "How do I relay a message to bob?",  # verbatim
    "how do i relay a mesage to ray",  # misspelled, another name
    "How do I relay a message to K7AB?",  # name-filled
    "hw do i chek my mail pls",  # shorthand and slips
    "hey quick q, how do I search my logs? thx",  # the question with words around it
    "how 2 create a private note",
])
def test_variants_of_suite_questions_match(suites_dir, variant):
    matcher = SuiteMatcher(suite_questions(suites_dir))
    assert matcher.match(variant) is not None, variant


@pytest.mark.parametrize("unrelated", [
    "how do I use /nuke?", "what is a good snr", "how do i read my private notes", "weather tmrw?",
    "how do i check the wx", "list nodes", "what does 73 mean",
])
def test_unrelated_questions_are_kept(suites_dir, unrelated):
    assert SuiteMatcher(suite_questions(suites_dir)).match(unrelated) is None


def test_matcher_agrees_with_brute_force_and_is_fast(suites_dir):
    from meshai_data.synth import generate

    suites = suite_questions(default_suites_dir())
    matcher = SuiteMatcher(suites)
    questions = [ex.question for ex in generate(42, typos=1)]
    t0 = time.perf_counter()
    fast = [matcher.match(q) is not None for q in questions]
    seconds = time.perf_counter() - t0
    items = [ngrams(q) for qs in suites.values() for q in qs]

    def brute(q: str) -> bool:
        g = ngrams(q)
        return any(len(g & s) / len(g | s) >= matcher.jaccard or (len(g & s) / len(s) >= matcher.containment
                   and len(g) <= matcher.max_ratio * len(s)) for s in items)

    sample = questions[::7]
    assert fast[::7] == [brute(q) for q in sample]
    assert seconds / len(questions) < 0.0005  # well under a millisecond a question


def test_prepare_removes_near_duplicates_from_every_pool_and_counts_them(tmp_path, suites_dir, fixtures_dir):
    out = tmp_path / "out"
    meta = prepare([fixtures_dir / "messages_archive.json"], fixtures_dir / "mesh_mailboxes.json", out,
                   min_pairs=400, suites_dir=suites_dir, exclude_prompts=["what is the hop limit"])
    assert meta["suites"] == {"mini": 5, "other": 1}
    by_suite = meta["decontaminated_by_suite"]
    assert by_suite["mini"] >= 10 and by_suite["other"] >= 1 and by_suite["exclude_prompts"] >= 1
    assert meta["decontaminated"] == sum(by_suite.values())
    matcher = SuiteMatcher({**suite_questions(suites_dir), "x": ["what is the hop limit"]})
    for s in SPLITS:
        for line in (out / f"{s}.jsonl").read_text().splitlines():
            row = json.loads(line)
            assert matcher.match(question_of(row["messages"][1]["content"])) is None, row
    clean = prepare([fixtures_dir / "messages_archive.json"], None, tmp_path / "clean", min_pairs=400,
                    suites_dir=tmp_path / "out")  # a folder with no suites: nothing removed
    assert clean["decontaminated"] == 0 and clean["suites"] == {}


def test_archive_and_mailbox_pools_are_checked_too(tmp_path, suites_dir):
    records = [*qa(1, "how do i chek my mail??", "Send /c to read it."),
               *qa(2, "what is the hop limit here", "Default 3, max 7.")]
    arch = write_json(tmp_path / "in" / "messages_archive.json", records)
    box = {"ops": [{"body": "x", "sender_id": "!00000001", "sender_short": "ZED",
                    "timestamp": "2025-09-29T00:00:00+00:00", "mailbox": "ops", "id": "1"}]}
    mb = write_json(tmp_path / "in" / "mesh_mailboxes.json", box)
    meta = prepare([arch], mb, tmp_path / "out", min_pairs=200, suites_dir=suites_dir)
    assert meta["archive"]["pairs_usable"] == 2 and meta["sources"]["archive"] == 1
    text = "".join((tmp_path / "out" / f"{s}.jsonl").read_text() for s in SPLITS)
    assert "chek my mail" not in text and "hop limit here" in text
    matcher = SuiteMatcher(suite_questions(suites_dir))
    rows = [json.loads(line) for s in SPLITS for line in (tmp_path / "out" / f"{s}.jsonl").read_text().splitlines()]
    assert any(r["source"] == "mailboxes" for r in rows)
    assert not [r for r in rows if matcher.match(question_of(r["messages"][1]["content"]))]
