"""Grounding: the catalog entries and facts that fit a question, put into the prompt's Context block.

A small model copies from its context far better than it recalls 80 commands. Serving (the gateway) and
training (the data service) both build a grounded prompt with `ground_prompt`, so the model is trained on
exactly the context it is served with. `GROUNDING_VERSION` is recorded with every model trained on it.

    retrieve("how do i read my mail")  ->  [Hit(kind="command", key="/c", line="cmd /c [mailbox] ...", ...), ...]

Retrieval is lexical and pure Python (index.py, text.py): BM25 over normalized words of the catalog, the facts,
the question bank (intents.yaml) and glossary.yaml, fused with a character 3-gram cosine for misspellings
and a per-command pooled BM25; a question's slash words (real or not) and the latest history lines come in
first-hand. Building the index takes ~0.1-0.2 s once per process; a question takes about a millisecond.
From catalog-v6 a sentence-embedding cosine (semantic.py: all-MiniLM-L6-v2 through llama.cpp) joins the
lexical score, so a question that shares no word with a command's phrasings can still find it; a few
milliseconds more per question.

Context lines (short, so the model can copy a command and its arguments):
    cmd /m <mailbox> <message>: send mail; a new mailbox asks Y/N, then an optional PIN
    relay: no command; DM me '<shortname> <message>'; their next plain DM comes back to you
                                                      (from catalog-v5 "DM me 'PETE <message>'" when the question
                                                       names the node; catalog-v8 also finds "tell dave ...")
    fact: SNR is signal-to-noise ratio in dB. Higher is better; ...
    not a command: nuke; /help lists the commands     (catalog-v1..v3: "/nuke"; catalog-v7: "nuke is not a
                                                       command; /help lists the commands", as the reply opens)
The block added for one question stays within `CONTEXT_BUDGET_TOKENS` as `estimate_tokens` counts it (an
estimate that errs high for the embedded SmolLM2 tokenizer): lines past the budget are left out.

`with_context` adds lines to a Mesh-Master prompt's Context block after the bot's history lines (creating the
block when absent), leaving every other byte as it was. A text that is not a Mesh-Master prompt (a bare
question) becomes one without bot text: "Context:\\n<lines>\\n\\nQuestion: <text>\\nAnswer:".
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

from meshai_common.grounding.index import (
    TUNED_SEMANTIC_WEIGHT,
    Doc,
    Index,
    build_docs,
    embed_text,
    frame_terms,
    tuning_key,
)
from meshai_common.grounding.text import named_words, refers_to_a_node, relay_targets, shortnames, stem
from meshai_common.meshmaster import load_catalog, slash_words, unknown_slash_words
from meshai_common.meshmaster.catalog import Command, FactItem, Topic
from meshai_common.prompts import meshmaster_prompt, parse_meshmaster_prompt, question_of

GROUNDING_VERSION = "catalog-v9"  # what new training data is grounded with (MESHAI_TRAIN_GROUNDING overrides)


@dataclass(frozen=True)
class Version:
    """How one grounding version builds the Context block: a model is served exactly as it was trained."""

    lines: int  # Context lines put in front of the model
    bare_unknown: bool = False  # "not a command: setname" (as the reply must write it) instead of "/setname"
    named_relay: bool = False  # the relay line names the node the question names: "DM me 'PETE <message>'"
    semantic: bool = False  # retrieval adds sentence-embedding similarity to the lexical score (semantic.py)
    fused_docs: bool = False  # a fact's answer is its best item by words and meaning (semantic), not words alone
    word_first: bool = False  # "nuke is not a command; ..." (the reply's own opening) instead of "not a command: nuke"
    relay_verbs: bool = False  # "tell dave ...": the node after a verb of passing on puts a named relay line first
    tuned: bool = False  # semantic ranking with the embedding model tuned on the index's own documents


# v2 kept the best two lines: a model trained to trust the first line gains little from a third and fourth, and
# they cost prompt time (field suite, cpu-smollm2, 74 steps, greedy + 2 sampled passes: four lines 71.0 %
# right commands, 29.0 fake commands called out, 53.7 overall; two lines 72.5, 60.2, 64.0). v3 keeps one: the
# model copied the first line (right in 247 of 264 replies where it held the right command) and seldom
# used the second (3 of 27), and one line is half the prompt (72.8 % right commands, 57.0, 64.5 overall).
# v4 names an unknown word without its slash: the reply may not write "/setname" (the command grammar forbids
# it), and from "/setname" the model wrote "set name" or "frequency" for "/freq" instead of copying the word.
# v5 also puts the node a relay question names into the relay line, so the model copies the DM form whole.
# v6 retrieves by meaning as well as by words (the line the model copies is right more often; README).
# v7 also picks a fact topic's item by words and meaning: the answer shown is the one asked about more often
# (held-out fact asks: right item 68.8 -> 73.5 %), and writes an unknown word's line as the reply opens ("nuke is
# not a command"): from "not a command: nuke" a briefly trained model wrote "not a command." and lost the word.
# v8 finds the node a question asks to pass something on to by its verb ("tell dave back by 6", "pass a note to
# marco"), in lower case too: v5's relay line named only a node written like a short name ("KJ5") or a history
# speaker, and lexical and semantic ranking put /save or /status first for "tell dave back by 6".
# v9 ranks by meaning with a copy of the embedding model tuned on the index's own documents (pairs of phrasings
# of one command or fact item, index.tuning_key; semantic.TUNING): first hit right on phrasings the tuning never
# saw, field suite 88.7 -> 91.3 %, fresh suite 85.2 -> 90.2 % (bench_embedder_tuning.py; bank folds: README).
VERSIONS = {
    "catalog-v1": Version(4),
    "catalog-v2": Version(2),
    "catalog-v3": Version(1),
    "catalog-v4": Version(1, bare_unknown=True),
    "catalog-v5": Version(1, bare_unknown=True, named_relay=True),
    "catalog-v6": Version(1, bare_unknown=True, named_relay=True, semantic=True),
    "catalog-v7": Version(1, bare_unknown=True, named_relay=True, semantic=True, fused_docs=True, word_first=True),
    "catalog-v8": Version(1, bare_unknown=True, named_relay=True, semantic=True, fused_docs=True, word_first=True,
                          relay_verbs=True),
    "catalog-v9": Version(1, bare_unknown=True, named_relay=True, semantic=True, fused_docs=True, word_first=True,
                          relay_verbs=True, tuned=True),
}
DEFAULT_LINES = VERSIONS[GROUNDING_VERSION].lines
CONTEXT_BUDGET_TOKENS = 90
_PIECE = re.compile(r"[A-Za-z]+|\d|[^\sA-Za-z\d]")

__all__ = [
    "CONTEXT_BUDGET_TOKENS",
    "DEFAULT_LINES",
    "GROUNDING_VERSION",
    "VERSIONS",
    "Hit",
    "Version",
    "build_index",
    "context_lines",
    "estimate_tokens",
    "ground_prompt",
    "grounder_for",
    "retrieve",
    "relay_name",
    "retrieve_from",
    "tuning_digest",
    "tuning_documents",
    "reply_opening",
    "version_hits",
    "with_context",
]


@dataclass(frozen=True)
class Hit:
    kind: str  # "command" | "relay" | "fact" | "unknown" (a slash word that is no command)
    key: str  # canonical command name ("/nodes"), "relay", a facts topic id or plain word, or the unknown word
    line: str  # the Context line shown to the model (as grounding catalog-v1..v3 wrote it)
    score: float
    name: str = ""  # a relay hit: the node the question names, as written ("PETE"), when it names one


# -- lines ----------------------------------------------------------------------------------------------


def _command_line(cmd: Command) -> str:
    where = " (admin, DM)" if cmd.admin else " (DM)" if cmd.dm_only else ""
    return f"cmd {cmd.usage}: {cmd.description}{where}"


def _relay_line(name: str = "") -> str:
    usage = load_catalog().relay_usage
    if name:
        usage = usage.replace("<shortname>", name)
    return f"relay: no command; DM me '{usage}'; their next plain DM comes back to you"


def _fact_line(topic: Topic, item: FactItem) -> str:
    return f"fact: {item.answer}"


_UNKNOWN_DENIAL = " is not a command"  # how a reply about an unknown word opens, after the word
_UNKNOWN_TAIL = _UNKNOWN_DENIAL + "; /help lists the commands"


def _unknown_line(word: str, bare: bool = False, word_first: bool = False) -> str:
    if word_first:
        return f"{word.lstrip('/')}{_UNKNOWN_TAIL}"
    return f"not a command: {word.lstrip('/') if bare else word}; /help lists the commands"


_UNKNOWN_OPENING = re.compile(r"([A-Za-z][A-Za-z0-9_]*)" + re.escape(_UNKNOWN_TAIL))


def _relay_opening() -> re.Pattern[str]:
    """A relay line as `_relay_line` writes it from the catalog's usage, up to the usage's closing quote, with
    the node named or not (group 1: the name). Built per call (re caches the compiled pattern), so it follows
    the catalog loaded now."""
    mark = "\x00"
    line = _relay_line(mark)
    if mark not in line:  # a usage without a <shortname> slot names no node
        return re.compile(re.escape(_relay_line()) + "()")
    head, tail = line.split(mark, 1)
    usage_end = tail.index("'") + 1
    return re.compile(re.escape(head) + r"(?:<shortname>|([A-Za-z0-9][\w-]*))" + re.escape(tail[:usage_end]))


FACT_OPENING_WORDS = 3  # a fact line's first words a grounded reply opens with


def reply_opening(grounded: str) -> str:
    """What a reply to a grounded prompt (or the model's prompt rendered from it) must open with, as its first
    grounding line dictates, else "".

    - the unknown-word line of catalog-v7 on ("sos is not a command; /help lists the commands"): "sos is not a
      command";
    - a relay line that names the node: "DM me 'KJ5";
    - a fact line: the fact's first words (FACT_OPENING_WORDS, up to a word with a slash).
    Each is how the answers the model was trained on open (the command grammar then makes the reply open so).
    A briefly trained model given the right line often wrote its habit instead: "Send /help ..." and lost the
    unknown word, "Send /menu <message> for KJ5", "Send / read 160-byte blocks" from a fact about byte counts.
    A command line dictates nothing: greetings and thanks are answered past a command line they do not need."""
    top = next((line for line in grounded.splitlines() if _is_own_line(line)), "")  # also in a rendered prompt
    if m := _UNKNOWN_OPENING.fullmatch(top):
        return m.group(1) + _UNKNOWN_DENIAL
    if m := _relay_opening().match(top):
        # Unnamed, nothing: the question may still name a node in lower case ("tell dave ...") that the answer
        # must copy, and a forced "<shortname> <message>" would take that away.
        return f"DM me '{m.group(1)}" if m.group(1) and m.group(1)[-1].isalnum() else ""
    if top.startswith("fact: "):
        words: list[str] = []
        for word in top[len("fact: "):].split()[:FACT_OPENING_WORDS]:
            if "/" in word:
                break
            words.append(word)
        return re.sub(r"[^A-Za-z0-9]+$", "", " ".join(words))
    return ""


def estimate_tokens(text: str) -> int:
    """A token count for the budget that errs high for SmolLM2's tokenizer on Context lines.

    Pieces (a letter run, a digit, a symbol; an all-capitals run costs one per two letters), times 1.2,
    plus 1. On every line the catalog and facts give, it is at most 3 tokens below and on average 15 % above
    the embedded model's own count (bytes/4 is 10 % to 2x below it: "/", digits and capitals are tokens).
    """
    pieces = 0
    for p in _PIECE.findall(text):
        pieces += (len(p) + 1) // 2 if p.isupper() and len(p) > 1 else 1 + len(p) // 9
    return math.ceil(pieces * 1.2) + 1


# -- retrieval ------------------------------------------------------------------------------------------

_UNKNOWN_SCORE = 3.0  # an unknown slash word is named by the question itself: always first
_NAMED_SCORE = 2.0  # so is a real command the question names ("what does /c do?")
HISTORY_LINES = 2  # the latest Context lines a question may lean on


@lru_cache(maxsize=3)
def _index(semantic: bool = False, tuned: bool = False) -> Index:
    return build_index(semantic=semantic, tuned=tuned)


def retrieve(question: str, k: int = 4, history: Sequence[str] = (), semantic: bool = False,
             fused_docs: bool = False, relay_verbs: bool = False, tuned: bool = False) -> list[Hit]:
    """The k entries that best fit `question`, best first, one per key. Deterministic; index built once.

    history: the prompt's Context lines ("<shortname>: <text>", oldest first). The latest ones lend their
    words, at a lower weight, to a question that leans on them ("how do i read it" after "left u mail in
    camp"), and a slash word in them that is no command gets its "unknown" hit after the question's own.
    semantic: rank by meaning as well as words (catalog-v6 on); loads the sentence-embedding model once.
    fused_docs: with semantic, a fact's line is the answer of its best item by words and meaning (catalog-v7).
    relay_verbs: a node the question asks to pass something on to ("tell dave ...") makes the relay hit, named,
    the first after the question's own slash words (catalog-v8).
    tuned: with semantic, the embedding model tuned on the index's own documents (catalog-v9).
    """
    return retrieve_from(_index(semantic, semantic and tuned), question, k, history, fused_docs, relay_verbs)


def build_index(keep: Callable[[Doc], bool] | None = None, semantic: bool = False, embedder: Any = None,
                tuned: bool = False) -> Index:
    """A fresh index of every document (or those `keep` accepts: benchmarks hold phrasings out); semantic:
    with sentence vectors (Unavailable without the embedding model), of the tuned copy when `tuned`;
    embedder: with the vectors of another model (anything with semantic.Embedder's embed_cached and
    embed_question: benchmarks compare models)."""
    docs = build_docs(_command_line, _relay_line(), _fact_line)
    if semantic and embedder is None:
        from meshai_common.grounding.semantic import embedder as load_embedder

        embedder = load_embedder(tuning_digest() if tuned else "")
    return Index([d for d in docs if keep is None or keep(d)], frame_terms(), embedder,
                 TUNED_SEMANTIC_WEIGHT if semantic and tuned else None)


def tuning_documents() -> list[tuple[str, str]]:
    """(index.tuning_key, text as embedded) of every document of the full index that points at a key, each
    once, in index order: what the tuned embedding model (catalog-v9) learns from. Small talk (no key) is left
    out."""
    seen: set[tuple[str, str]] = set()
    out = []
    for d in build_docs(_command_line, _relay_line(), _fact_line):
        pair = (tuning_key(d), embed_text(d.text))
        if pair[0] and pair not in seen:
            seen.add(pair)
            out.append(pair)
    return out


@lru_cache(maxsize=1)
def tuning_digest() -> str:
    """The digest naming the tuned embedding model for these documents and semantic.TUNING (16 hex digits)."""
    from meshai_common.grounding.semantic import TUNED_PREFIX, TUNING

    h = hashlib.sha256(f"{TUNED_PREFIX}{sorted(TUNING.items())}".encode())
    for key, text in tuning_documents():
        h.update(f"\n{key}\t{text}".encode())
    return h.hexdigest()[:16]


def retrieve_from(index: Index, question: str, k: int = 4, history: Sequence[str] = (),
                  fused_docs: bool = False, relay_verbs: bool = False) -> list[Hit]:
    """`retrieve` against a given index."""
    if k <= 0 or not question.strip():
        return []
    catalog = load_catalog()
    own = _own_history(history)
    recent = own[len(own) - HISTORY_LINES:] if HISTORY_LINES else []
    hits: list[Hit] = []
    seen: set[str] = set()

    def add(hit: Hit) -> None:
        if hit.key not in seen and len(hits) < k:
            seen.add(hit.key)
            hits.append(hit)

    for word in unknown_slash_words(question):
        add(Hit("unknown", word.lower(), _unknown_line(word.lower()), _UNKNOWN_SCORE))
    written = named_words(question)  # "the whois cmd": a command name without its slash
    for word in [*slash_words(question), *written]:
        cmd = catalog.get(word)
        if cmd is not None:
            add(Hit("command", cmd.name, _command_line(cmd), _NAMED_SCORE))
    for word in written:
        # only a word the index does not know: "the mail cmd" or "list cmd aliases" name no unknown command
        if catalog.get(word) is None and index.unknown(word[1:]):
            add(Hit("unknown", word, _unknown_line(word), _UNKNOWN_SCORE))
    target = relay_target(index, question, history) if relay_verbs else ""
    if target:
        add(Hit("relay", "relay", _relay_line(), _NAMED_SCORE, target))
    for line in reversed(recent):
        for word in unknown_slash_words(line):
            add(Hit("unknown", word.lower(), _unknown_line(word.lower()), _UNKNOWN_SCORE))
    for entry, score in index.search(question, recent, fused_docs):
        if len(hits) >= k:
            break
        # A relay_target found above already holds the relay key, so this entry's name is only needed without one.
        name = relay_name(index, question, history) if entry.kind == "relay" else ""
        add(Hit(entry.kind, entry.key, entry.line, round(score, 6), name))
    return hits


def relay_name(index: Index, question: str, history: Sequence[str] = ()) -> str:
    """The node a relay question names, as the DM must write it, or "": a history speaker the question names
    ("tell walt ..." after "walt: 73 all"), else a word written like a short name ("let OTTR know ...") that
    is neither a word the index knows (SNR, HELP) nor a command name."""
    speakers = {short.lower(): short for line in history
                if not _is_grounding_line(line) and (short := _split_history(line)[0])}
    for word in re.findall(r"[\w-]+", question):
        if word.lower() in speakers:
            return speakers[word.lower()]
    catalog = load_catalog()
    for word in shortnames(question):
        if stem(word.lower()) not in index.vocab and catalog.get("/" + word.lower()) is None:
            return word
    return ""


def relay_target(index: Index, question: str, history: Sequence[str] = ()) -> str:
    """The node a question asks to pass something on to ("tell dave back by 6" -> "dave"), or "": the word after
    a verb of passing on (text.relay_targets) that is no command name and, unless written like a short name,
    no word the index knows ("tell jokes") nor, past five letters, a misspelling of one ("reach furter").
    A question that names nobody ("can u tell him ...") takes the node its latest history line asks about
    ("need to reach ray"), or writes like a short name ("W6QX still at camp?")."""
    found = _relay_word(index, relay_targets(question))
    if found or not refers_to_a_node(question):
        return found
    own = _own_history(history)
    if not own:
        return ""
    latest = own[-1]
    return _relay_word(index, relay_targets(latest)) or _relay_word(index, shortnames(latest))


def _relay_word(index: Index, words: Sequence[str]) -> str:
    catalog = load_catalog()
    for word in words:
        if catalog.get("/" + word.lower()) is not None:
            continue
        term = stem(word.lower())
        if shortnames(word) or (term not in index.vocab and term not in index.related
                                and (len(word) <= 5 or index.correct(term) is None)):
            return word
    return ""


_GROUNDING_PREFIXES = ("cmd /", "relay: ", "fact: ", "not a command: ")


def _is_own_line(line: str) -> bool:
    """A line grounding writes, never a history line ("KJ5: sos is not a command ..." is KJ5's)."""
    return line.startswith(_GROUNDING_PREFIXES) or "(plain word, no slash)" in line or bool(
        _UNKNOWN_OPENING.fullmatch(line))


def _is_grounding_line(line: str) -> bool:
    """A Context line this module wrote (so grounding a grounded prompt sees the same history); also a history
    line that repeats an unknown-word line ("KJ5: sos is not a command; ..."), which `_is_own_line` is not."""
    return _is_own_line(line) or line.endswith(_UNKNOWN_TAIL)


def _split_history(line: str) -> tuple[str, str]:
    """("<shortname>", "<text>") of a "<shortname>: <text>" history line; ("", line) for any other line."""
    short, sep, text = line.partition(": ")
    short = short.strip()
    return (short, text) if sep and " " not in short else ("", line)


def _history_text(line: str) -> str:
    return _split_history(line)[1]


def _own_history(history: Sequence[str]) -> list[str]:
    """The history lines' texts, oldest first, without the lines grounding wrote (a grounded prompt's own)."""
    return [_history_text(line) for line in history if not _is_grounding_line(line)]


def context_lines(hits: Sequence[Hit], version: str = GROUNDING_VERSION) -> list[str]:
    """The hits' lines as grounding `version` writes them, in order, as many as fit CONTEXT_BUDGET_TOKENS
    (one line per key)."""
    v = VERSIONS[version]
    out: list[str] = []
    used = 0
    for hit in hits:
        line = hit.line
        if hit.kind == "unknown":
            line = _unknown_line(hit.key, v.bare_unknown, v.word_first)
        elif hit.kind == "relay" and v.named_relay and hit.name:
            line = _relay_line(hit.name)
        cost = estimate_tokens(line + "\n")
        if line in out or used + cost > CONTEXT_BUDGET_TOKENS:
            continue
        out.append(line)
        used += cost
    return out


def with_context(user_text: str, lines: Sequence[str]) -> str:
    """user_text with `lines` added at the end of its Context block (see the module doc for bare text).

    Lines already in the block are not added twice, so grounding a grounded prompt changes nothing.
    """
    parsed = parse_meshmaster_prompt(user_text)
    if parsed is None:
        new = [x for x in dict.fromkeys(lines) if x]
        return meshmaster_prompt(user_text, new, bot_system="") if new else user_text
    new = [x for x in dict.fromkeys(lines) if x and x not in parsed.context]
    if not new:
        return user_text
    added = "\n".join(new)
    # Insert at the exact place parse_meshmaster_prompt splits, so the bot's bytes stay as they were.
    body_end = user_text.rstrip().rfind("\nAnswer:")
    body = user_text[:body_end]
    q_at = 0 if body.startswith("Question: ") else body.rfind("\n\nQuestion: ") + 2
    if parsed.context:
        at = q_at - 2  # the end of the last context line
        return user_text[:at] + "\n" + added + user_text[at:]
    return user_text[:q_at] + f"Context:\n{added}\n\n" + user_text[q_at:]


def retrieve_for(user_text: str, k: int = 4, semantic: bool = False, fused_docs: bool = False,
                 relay_verbs: bool = False, tuned: bool = False) -> list[Hit]:
    """The hits for a user turn: its question and, for a Mesh-Master prompt, its history lines."""
    parsed = parse_meshmaster_prompt(user_text)
    question, history = (question_of(user_text), ()) if parsed is None else (parsed.question, parsed.context)
    return retrieve(question, k, history, semantic=semantic, fused_docs=fused_docs, relay_verbs=relay_verbs,
                    tuned=tuned)


def version_hits(user_text: str, version: str = GROUNDING_VERSION) -> list[Hit]:
    """The hits grounding `version` retrieves for a user turn (as many as it shows, ranked and picked its way)."""
    v = VERSIONS[version]
    return retrieve_for(user_text, v.lines, v.semantic, v.fused_docs, v.relay_verbs, v.tuned)


def ground_prompt(user_text: str, version: str = GROUNDING_VERSION) -> str:
    """user_text with the catalog lines that fit its question (and recent history) added to its Context, as
    grounding `version` builds them."""
    return with_context(user_text, context_lines(version_hits(user_text, version), version))


def grounder_for(version: str) -> Callable[[str], str]:
    """`ground_prompt` as grounding `version` (a model's `# meshai: grounding=...`) builds it; a version this
    code does not know raises ValueError naming the ones it does. A semantic version builds its index now, so
    a missing sentence-embedding model is refused when the model loads (Unavailable), not at its first request."""
    name = version.strip()
    if name not in VERSIONS:
        raise ValueError(f"unknown grounding version {version!r}; known: {', '.join(sorted(VERSIONS))}")
    if VERSIONS[name].semantic:
        _index(True, VERSIONS[name].tuned)
    return partial(ground_prompt, version=name)
