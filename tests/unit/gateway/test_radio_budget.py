"""The radio budget: chunking exactly like Mesh-Master, byte and chunk budgets, trimming, streaming."""

from __future__ import annotations

import random

import pytest

from meshai_common.radio import (
    BREAK_WINDOW,
    ELLIPSIS,
    BudgetStream,
    analyze,
    fits_budget,
    split_chunks,
    trim_to_budget,
    trim_to_chunks,
    utf8_len,
)

SENTENCE = "Use /nodes to see nodes heard in the last 24 hours. "  # 52 bytes


# -- utf8_len / split_chunks ----------------------------------------------------------------------------

def test_utf8_len_counts_bytes_not_characters() -> None:
    assert utf8_len("abc") == 3
    assert utf8_len("é") == 2
    assert utf8_len("€") == 3
    assert utf8_len("🙂") == 4
    assert utf8_len("\ud800") == 3  # a lone surrogate from JSON does not crash the counter


def test_short_text_is_one_chunk_and_blank_is_none() -> None:
    assert split_chunks("Pong!") == ["Pong!"]
    assert split_chunks("x" * 160) == ["x" * 160]
    assert split_chunks("") == []
    assert split_chunks("  \n ") == []


def test_chunks_never_exceed_the_byte_limit() -> None:
    rng = random.Random(7)
    alphabet = ["a", "b", " ", "-", "\n", "\t", "é", "€", "🙂", "ü", "."]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 700)))
        size = rng.choice([4, 10, 50, 160, 200])
        for chunk in split_chunks(text, size):
            assert 0 < utf8_len(chunk) <= size
            assert chunk == chunk.strip()


def test_break_at_the_last_space_within_the_last_30_characters() -> None:
    text = "a" * 150 + " " + "b" * 100
    assert split_chunks(text) == ["a" * 150, "b" * 100]


def test_no_break_character_in_window_cuts_hard_at_the_limit() -> None:
    # The only space is 40 characters before the limit: outside the 30-character window.
    text = "a" * (160 - BREAK_WINDOW - 10) + " " + "b" * 200
    chunks = split_chunks(text)
    assert utf8_len(chunks[0]) == 160
    assert chunks[0].endswith("b")


def test_hyphen_stays_with_its_chunk_newline_and_tab_are_dropped() -> None:
    assert split_chunks("a" * 150 + "-" + "b" * 20) == ["a" * 150 + "-", "b" * 20]
    assert split_chunks("a" * 150 + "\n" + "b" * 20) == ["a" * 150, "b" * 20]
    assert split_chunks("a" * 150 + "\t" + "b" * 20) == ["a" * 150, "b" * 20]


def test_multibyte_characters_are_never_split() -> None:
    assert split_chunks("é" * 200) == ["é" * 80, "é" * 80, "é" * 40]
    assert split_chunks("🙂" * 100) == ["🙂" * 40, "🙂" * 40, "🙂" * 20]
    # 159 ASCII bytes then a 2-byte character: it would straddle the limit, so it opens the next chunk.
    chunks = split_chunks("a" * 159 + "é" + "z")
    assert chunks == ["a" * 159, "éz"]
    for chunk in split_chunks("€🙂é a" * 90):
        chunk.encode("utf-8")  # every chunk is valid UTF-8 on its own


def test_rejoined_chunks_keep_every_non_space_character() -> None:
    text = (SENTENCE * 7) + "long-range chirp spread spectrum " * 5
    assert "".join(split_chunks(text)).replace(" ", "") == text.replace(" ", "").strip()


def test_split_rejects_a_limit_smaller_than_a_character() -> None:
    with pytest.raises(ValueError):
        split_chunks("abc", 3)


# -- budget ---------------------------------------------------------------------------------------------

def test_fits_budget_counts_real_chunks() -> None:
    assert fits_budget("x" * 320)
    assert not fits_budget("x" * 321)
    # 300 bytes that break early at a space need a third chunk even though 300 < 320.
    text = "a" * 131 + " " + "b" * 168
    assert utf8_len(text) == 300
    assert not fits_budget(text)
    assert fits_budget(text, max_chunks=3)


def test_analyze_reports_like_the_guide() -> None:
    report = analyze("x" * 400)
    assert report.bytes == 400
    assert report.chunk_count == 3
    assert not report.fits_budget and report.trim_needed
    assert report.token_estimate == 100
    assert report.budget_utilization == 125.0


# -- trimming -------------------------------------------------------------------------------------------

def test_text_within_budget_is_unchanged() -> None:
    assert trim_to_budget("Hello there.") == ("Hello there.", False)
    assert trim_to_chunks("Hello there.") == ("Hello there.", False)


def test_trim_prefers_the_last_sentence_end() -> None:
    text = SENTENCE * 10
    out, trimmed = trim_to_budget(text, 320)
    assert trimmed
    assert out == (SENTENCE * 6).rstrip()
    assert utf8_len(out) <= 320


def test_trim_falls_back_to_a_word_end_when_the_sentence_end_is_too_early() -> None:
    text = "Short one. " + "word " * 100
    out, trimmed = trim_to_budget(text, 100)
    assert trimmed
    assert out.endswith("word") and not out.endswith(" ")
    assert utf8_len(out) <= 100
    assert utf8_len(out) > 90


def test_trim_adds_ellipsis_when_there_is_no_word_end() -> None:
    out, trimmed = trim_to_budget("x" * 500, 20)
    assert trimmed
    assert out == "x" * 17 + ELLIPSIS


def test_trim_never_splits_a_character() -> None:
    out, trimmed = trim_to_budget("🙂" * 100, 21)
    assert trimmed
    assert out == "🙂" * 4 + ELLIPSIS
    out.encode("utf-8")
    out, _ = trim_to_budget("é" * 300, 320)
    assert utf8_len(out) <= 320 and out.endswith(ELLIPSIS)


def test_decimal_points_are_not_sentence_ends() -> None:
    # "915." is followed by a digit, so it is no sentence end: the cut falls back to the word end.
    assert trim_to_budget("Center 915.5 MHz then more words follow here", 11) == ("Center", True)
    assert trim_to_budget("It works. Center 915.5 MHz then more", 20, min_keep=0.4) == ("It works.", True)


def test_trim_to_chunks_counts_the_suffix_the_bot_appends() -> None:
    text = SENTENCE * 10
    out, trimmed = trim_to_chunks(text, 160, 2, suffix=" (120s)")
    assert trimmed
    assert fits_budget(out + " (120s)")
    assert out.endswith(".")


def test_trim_to_chunks_always_fits() -> None:
    rng = random.Random(3)
    words = ["mesh", "SNR", "é", "🙂", "long-range", "2.5", "Hi.", "ok?", "\n", "x" * 45, "-", "(yes.)"]
    for _ in range(300):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(0, 200)))
        size, count = rng.choice([(160, 2), (160, 1), (40, 3), (200, 5)])
        out, trimmed = trim_to_chunks(text, size, count, suffix=" (12s)")
        assert fits_budget(out + " (12s)", size, count)
        assert trimmed == (out != text)


# -- streaming ------------------------------------------------------------------------------------------

def _stream(pieces: list[str], stream: BudgetStream) -> tuple[str, BudgetStream]:
    sent = ""
    for piece in pieces:
        out, over = stream.feed(piece)
        sent += out
        if over:
            break
    return sent, stream


def test_stream_without_budget_releases_everything_but_trailing_space() -> None:
    sent, stream = _stream(["Hel", "lo ", "world", " \n"], BudgetStream.unlimited())
    result = stream.finish()
    assert result.text == "Hello world"
    assert sent + result.tail == "Hello world"
    assert not result.trimmed


def test_stream_stops_at_the_budget_and_what_was_sent_is_the_trimmed_reply() -> None:
    tokens = [w + " " for w in (SENTENCE * 10).split()]
    sent, stream = _stream(tokens, BudgetStream.for_chunks(160, 2, suffix=" (120s)"))
    assert stream.over_budget
    result = stream.finish()
    assert result.trimmed
    assert sent + result.tail == result.text
    assert result.text == trim_to_chunks(stream.over, 160, 2, suffix=" (120s)")[0]
    assert fits_budget(result.text + " (120s)")
    assert result.removed


def test_stream_release_is_always_a_prefix_of_the_final_reply() -> None:
    words = ["the", "mesh", "/nodes", "SNR", "é", "🙂", "long-range", "2.5", "Hi.", "end!", "ok?", "\n",
             "  ", "x" * 40, "-", "a.b", "(yes.)", '"no."']
    for trial in range(500):
        rng = random.Random(trial)
        text = "".join(rng.choice(["", " ", "  ", "\n"]) + rng.choice(words) for _ in range(rng.randint(0, 150)))
        tokens = []
        while text:
            k = rng.randint(1, 4)
            tokens.append(text[:k])
            text = text[k:]
        size, count = rng.choice([(20, 1), (40, 2), (160, 2), (160, 3)])
        suffix = rng.choice(["", " (120s)"])
        sent, stream = _stream(tokens, BudgetStream.for_chunks(size, count, suffix=suffix))
        result = stream.finish()
        assert sent + result.tail == result.text
        assert fits_budget(result.text + suffix, size, count)
        if stream.over_budget:
            assert result.text == trim_to_chunks(stream.over, size, count, suffix=suffix)[0]
        else:
            assert result.text == "".join(tokens).rstrip()
