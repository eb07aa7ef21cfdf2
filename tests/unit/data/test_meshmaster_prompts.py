"""The prompt shapes shared by training data, evaluator and gateway."""

from __future__ import annotations

from meshai_common.prompts import (
    DEFAULT_SYSTEM_PROMPT,
    meshmaster_prompt,
    parse_meshmaster_prompt,
    question_of,
)


def test_default_system_prompt_is_one_short_line():
    assert "\n" not in DEFAULT_SYSTEM_PROMPT
    assert len(DEFAULT_SYSTEM_PROMPT.split()) <= 16


def test_meshmaster_prompt_exact_shape():
    p = meshmaster_prompt("how do I see nodes?", ["BOB: anyone copy?", ("K7AB", "net at 7")], bot_system="Be brief.")
    assert p == "Be brief.\n\nContext:\nBOB: anyone copy?\nK7AB: net at 7\n\nQuestion: how do I see nodes?\nAnswer:"
    assert meshmaster_prompt("hi", bot_system="") == "Question: hi\nAnswer:"
    assert meshmaster_prompt("hi", bot_system="S") == "S\n\nQuestion: hi\nAnswer:"


def test_parse_round_trips_and_rejects_other_text():
    p = meshmaster_prompt("what is SNR", [("BOB", "hi")], bot_system="Sys line.")
    parsed = parse_meshmaster_prompt(p)
    assert parsed is not None
    assert (parsed.system, parsed.context, parsed.question) == ("Sys line.", ("BOB: hi",), "what is SNR")
    no_ctx = parse_meshmaster_prompt(meshmaster_prompt("q1", bot_system=""))
    assert no_ctx is not None and (no_ctx.system, no_ctx.context, no_ctx.question) == ("", (), "q1")
    assert parse_meshmaster_prompt("just a question") is None
    assert question_of(p) == "what is SNR"
    assert question_of("  plain  ") == "plain"
