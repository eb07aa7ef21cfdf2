"""Training user turns with the context the server adds: the catalog lines retrieved for the question.

The gateway grounds every prompt with `meshai_common.grounding.ground_prompt`; a model trained on the same
lines learns to pick the right one and copy it. Each user turn here becomes exactly `ground_prompt(user_turn)`
(the question and the prompt's history lines go to `retrieve`), byte for byte what the gateway builds.

No hit lists are shuffled and no right line is removed on purpose. Retrieval, which sees the whole question
bank, judges what fits better than a 135M model does; a model taught to doubt the first line second-guesses it
when the question shares few words with it. Measured on the field suite (cpu-smollm2, 74 steps, greedy + 2
sampled passes): 8 % shuffled and 3 % removed gave 63.2 % right commands, 46.5 technical, 34.4 fake commands
called out; plain retrieval order 65.5, 52.6 and 37.6, and "/help" where the right command was first fell
from 33 replies to 8.

Nor is a turn's own phrasing held out of the index that grounds it (tried: ten folds of template groups, so
training lines come ranked as for a question the bank lacks; the right line was then second in 7.6 % of the
turns and missing in 6.1 %, against 1.5 % missing). Same recipe and yardstick, two lines: right commands 67.2 %
against 72.5; replies right where the right line was second rose from 3 to 14 of 27, but where it was first
fell from 247 to 218 of 264. A 135M model does not tell two close lines apart well enough to be given the choice.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace

from meshai_common.errors import ConfigError
from meshai_common.grounding import (
    GROUNDING_VERSION,
    VERSIONS,
    Hit,
    context_lines,
    version_hits,
    with_context,
)
from meshai_common.meshmaster import load_catalog, slash_words, unknown_slash_words
from meshai_data.synth import Example


def grounding_version() -> str:
    """The version new training data is grounded with: $MESHAI_TRAIN_GROUNDING, else GROUNDING_VERSION (an
    environment without the sentence-embedding model grounds with catalog-v5, the lexical one)."""
    name = os.environ.get("MESHAI_TRAIN_GROUNDING", "").strip() or GROUNDING_VERSION
    if name not in VERSIONS:
        raise ConfigError(f"MESHAI_TRAIN_GROUNDING={name!r}: not a grounding version; known: {', '.join(sorted(VERSIONS))}")
    return name


def gold_key(ex: Example) -> str | None:
    """The retrieval key the right answer rests on, or None (small talk, general knowledge)."""
    if ex.command:
        return ex.command
    if ex.intent == "relay":
        return "relay"
    if ex.intent.startswith("fact:"):
        return ex.intent.split(":", 1)[1]
    if ex.intent == "fake_command":
        unknown = unknown_slash_words(ex.question)
        return unknown[0].lower() if unknown else None
    if ex.source == "archive":  # the first real command the operator's reply names
        catalog = load_catalog()
        return next((c.name for w in slash_words(ex.answer) if (c := catalog.get(w)) is not None), None)
    return None


def retrieved(user_text: str, version: str | None = None) -> list[Hit]:
    """The hits `ground_prompt` retrieves for a user turn as `version` (default: grounding_version()) does:
    its question, and its history when it has one."""
    return version_hits(user_text, version or grounding_version())


def ground(examples: Iterable[Example], version: str | None = None) -> tuple[list[Example], Counter]:
    """Every example with its retrieved lines in the user turn; counts of grounded examples and of gold_missing
    ones (the gold entry was not retrieved: the answer stays, so the model also learns what the lines lack)."""
    version = version or grounding_version()
    stats: Counter = Counter()
    out = []
    for ex in examples:
        hits = retrieved(ex.user_turn, version)
        gold = gold_key(ex)
        if gold is not None and gold not in {hit.key for hit in hits}:
            stats["gold_missing"] += 1
        user = with_context(ex.user_turn, context_lines(hits, version))
        grounded = user != ex.user_turn
        stats["grounded"] += grounded
        out.append(replace(ex, user=user if grounded else ex.user, grounded=grounded))
    return out, stats
