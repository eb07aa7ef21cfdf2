"""Training user turns with the context the server adds: the catalog lines retrieved for the question.

The gateway grounds every prompt with `meshai_common.grounding.ground_prompt`; a model trained on the same
lines learns to pick the right one and copy it. Each user turn here becomes exactly
`ground_prompt(user_turn)` (the question and the prompt's history lines go to `retrieve`), with two
departures that teach robustness:

- in about SHUFFLE_SHARE of the examples whose gold entry (the command, "relay", the facts topic, the
  unknown word) is among the hits, the hits are shuffled: the right line is not always the first;
- in about DROP_GOLD_SHARE of the command examples whose gold command is among the hits, that hit is removed
  (the others stay) and the answer points to /help: with the right line missing, the model must not guess.

Both shares are small on purpose. Retrieval ranks the right line first for most questions and among the
first four for ~97 %, and the bot samples at temperature 0.7: a model taught to answer "/help" often says it
when the right line is in front of it (measured: 10 % dropped lines made sampled replies fall back to /help
for a fifth of the command questions).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace

from meshai_common.grounding import GROUNDING_VERSION, Hit, context_lines, retrieve_for, with_context
from meshai_common.meshmaster import load_catalog, slash_words, unknown_slash_words
from meshai_data.normalize import stable_hash as _h
from meshai_data.synth import Example, check_answer

RETRIEVE_K = 4  # what the gateway retrieves
SHUFFLE_SHARE = 0.08
DROP_GOLD_SHARE = 0.03
# Short, varied ways to send the user to the list when the context holds no fitting command: decisive, not
# evasive ("not sure" is no answer on a radio).
HELP_ANSWERS = (
    "Send /help for the list of commands.",
    "Send /help: it lists every command.",
    "/help lists every command; pick the one that fits.",
    "Send /help to see the commands.",
)
# Intents whose question names its own command ("what does /nodes do?"): dropping the gold line there
# would teach the model to ignore the question itself.
_NAMED_INTENTS = frozenset({"explain"})


def grounding_version() -> str:
    return GROUNDING_VERSION


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


def retrieved(user_text: str, k: int = RETRIEVE_K) -> list[Hit]:
    """The hits `ground_prompt` retrieves for a user turn: its question, and its history when it has one."""
    return retrieve_for(user_text, k)


def _droppable(ex: Example, gold: str | None) -> bool:
    return gold is not None and gold.startswith("/") and gold != "/help" and ex.intent not in _NAMED_INTENTS \
        and ex.intent != "fake_command" and load_catalog().is_known(gold)


def _shuffled(hits: list[Hit], rng: random.Random) -> list[Hit]:
    out = hits[:]
    rng.shuffle(out)
    if out == hits and len(out) > 1:
        out = out[1:] + out[:1]  # a shuffle that changed nothing teaches nothing
    return out


def ground(examples: Iterable[Example], seed: int, k: int = RETRIEVE_K) -> tuple[list[Example], Counter]:
    """Every example with its retrieved lines in the user turn; counts of grounded / shuffled / gold_dropped /
    gold_missing (the gold entry was not retrieved) examples."""
    stats: Counter = Counter()
    out = []
    for ex in examples:
        hits = retrieved(ex.user_turn, k)
        gold = gold_key(ex)
        answer = ex.answer
        h = _h(seed, "ground", ex.group, ex.question)
        if gold is not None and gold not in {hit.key for hit in hits}:
            stats["gold_missing"] += 1
        elif gold is not None:
            drop_roll, shuffle_roll = (h % 10_000) / 10_000, ((h >> 16) % 10_000) / 10_000
            if _droppable(ex, gold) and drop_roll < DROP_GOLD_SHARE:
                hits = [hit for hit in hits if hit.key != gold]
                answer = check_answer(HELP_ANSWERS[(h >> 32) % len(HELP_ANSWERS)])
                stats["gold_dropped"] += 1
            elif shuffle_roll < SHUFFLE_SHARE and len(hits) > 1:
                hits = _shuffled(hits, random.Random(h))
                stats["shuffled"] += 1
        user = with_context(ex.user_turn, context_lines(hits))
        grounded = user != ex.user_turn
        stats["grounded"] += grounded
        out.append(replace(ex, user=user if grounded else ex.user, answer=answer, grounded=grounded))
    return out, stats
