"""Grounded training turns: the lines the server retrieves, the question kept, distractor robustness."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from meshai_common.errors import ConfigError
from meshai_common.grounding import context_lines, ground_prompt
from meshai_common.prompts import parse_meshmaster_prompt
from meshai_data.grounded import gold_key, ground, grounding_version, retrieved
from meshai_data.prepare import prepare
from meshai_data.synth import Example, generate, wrap_meshmaster
from meshai_data.validate import validate

VERSION = "catalog-v5"  # lexical; catalog-v6 ranks with a real embedding model (tests/unit/common, slow tier)


@pytest.fixture(scope="module")
def grounded():
    pool = wrap_meshmaster(generate(42, typos=0)[::4], seed=42)
    out, stats = ground(pool, VERSION)
    return pool, out, stats


def test_turns_carry_the_retrieved_lines_and_keep_the_question(grounded):
    pool, out, stats = grounded
    assert len(out) == len(pool) and stats["grounded"] / len(out) > 0.97
    plain = 0
    assert any(ex.user == '' for ex in pool)  # bare questions become prompts too
    for before, after in zip(pool, out, strict=True):
        parsed = parse_meshmaster_prompt(after.user_turn)
        if parsed is None:  # a bare question nothing fits ("thanks") stays as it was, as the gateway sends it
            assert not after.grounded and after.user_turn == before.user_turn == ground_prompt(before.user_turn,
                                                                                               VERSION)
            plain += 1
            continue
        assert parsed.question == before.question.strip()
        old = parse_meshmaster_prompt(before.user) if before.user else None
        kept = old.context if old else ()
        if old:  # a Mesh-Master prompt keeps its bot text and history, lines added after the history
            assert parsed.system == old.system and parsed.context[: len(kept)] == kept
        added = parsed.context[len(kept):]
        lines = context_lines(retrieved(before.user_turn), VERSION)
        assert bool(added) == after.grounded and set(added) <= set(lines)
        if after.answer == before.answer and after.user_turn == ground_prompt(before.user_turn, VERSION):
            plain += 1
    assert plain == len(out)  # every turn is byte for byte what the gateway builds
    assert all(after.answer == before.answer for before, after in zip(pool, out, strict=True))


def test_archive_pairs_are_grounded_too():
    ex = Example("how do i see who is around", "Try /nodes for the node list.", "archive", "archive:x", "archive")
    assert gold_key(ex) == "/nodes"
    out, stats = ground([ex], VERSION)
    assert out[0].grounded and "cmd /nodes" in out[0].user_turn and stats["grounded"] == 1


def test_prepare_records_grounding_and_can_turn_it_off(tmp_path, fixtures_dir):
    arch = [fixtures_dir / "messages_archive.json"]
    on = prepare(arch, fixtures_dir / "mesh_mailboxes.json", tmp_path / "on", min_pairs=300, suites_dir=tmp_path)
    off = prepare(arch, None, tmp_path / "off", min_pairs=300, grounded=False, suites_dir=tmp_path)
    assert on["grounding"] == grounding_version() == "catalog-v5" and off["grounding"] is None  # the fast tier's
    assert json.loads((tmp_path / "on" / "metadata.json").read_text())["grounding"] == "catalog-v5"
    assert on["grounded_prompts"] / on["total_pairs"] > 0.95 and off["grounded_prompts"] == 0
    assert "grounding_gold_missing" in on
    assert on["avg_user_chars"] > off["avg_user_chars"]
    rows = [json.loads(line) for line in (tmp_path / "on" / "train.jsonl").read_text().splitlines()]
    sources = Counter(r["source"] for r in rows if "cmd /" in r["messages"][1]["content"])
    assert sources["synthetic"] > 0
    assert validate([tmp_path / "on" / f"{s}.jsonl" for s in ("train", "val", "test")]) == []


def test_the_grounding_version_comes_from_the_environment(monkeypatch):
    from meshai_common.grounding import GROUNDING_VERSION

    monkeypatch.delenv("MESHAI_TRAIN_GROUNDING")
    assert grounding_version() == GROUNDING_VERSION
    monkeypatch.setenv("MESHAI_TRAIN_GROUNDING", "catalog-v99")
    with pytest.raises(ConfigError, match=r"MESHAI_TRAIN_GROUNDING='catalog-v99': not a grounding version; known: .*catalog-v5"):
        grounding_version()
