"""Grounded synthetic question -> answer pairs, driven by the data files beside the command catalog.

intents.yaml holds what people ask and the one terse answer each (command first); phrasing.yaml holds how
they ask it: frames, slot values, fake commands, history lines. Variety comes from frames, slot values,
radio shorthand, misspellings, lower case, history that a question refers back to, and contrast pairs of
near intents; never from repeating a pair. Each phrasing is a template group: the split keeps a group in one
split, so val/test ask in ways train never saw.

Every answer is checked: at most 320 UTF-8 bytes and no slash word outside the catalog. A failure is a bug in
the data files, not bad input, and raises `SynthError`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache

from meshai_common.meshmaster import (
    Intent,
    load_catalog,
    load_facts,
    load_intents,
    load_phrasing,
    unknown_slash_words,
)
from meshai_common.meshmaster.intents import signature
from meshai_common.prompts import meshmaster_prompt
from meshai_common.radio import budget_bytes, utf8_len
from meshai_data.normalize import stable_hash

ANSWER_BUDGET = budget_bytes()  # 320 bytes: two 160-byte radio chunks
TYPO_VARIANTS = 1  # extra misspelled copies of each phrasing (more only when a large dataset needs them)
FILLS_PER_PHRASE = 2  # slot fillings per (phrasing, frame)
WRAP_FRACTION = 0.75  # user turns shaped like Mesh-Master's own prompt
LOWER_SHARE = 0.45  # questions typed all lower case
BARE_SHARE = 0.3  # questions sent without their final "?"
# Intents that gather many things under one label get more room than a single command: fake_command teaches
# refusal for every unknown word (and naming a word the model never saw, copied from the question, takes more
# examples than picking a catalog line), explain covers every catalog name, archive is the operator's traffic.
AGGREGATE_WEIGHTS = {"fake_command": 12.0, "explain": 3.0, "general": 1.0, "archive": 3.0}
FACT_WEIGHT = 2.0  # a fact topic: its numbers must be copied right, and people ask them many ways


class SynthError(RuntimeError):
    """The generator produced an answer that breaks the rules (a bug in the data files)."""


@dataclass(frozen=True)
class Example:
    question: str  # what the person typed
    answer: str
    intent: str
    group: str  # template group: the unit the split keeps together
    source: str = "synthetic"  # synthetic | mailboxes | archive
    user: str = ""  # the user turn as trained: the question, or a Mesh-Master prompt around it
    typo: bool = False  # a misspelled variant of a phrasing
    command: str | None = None  # the catalog command the answer is about (grounding's gold hit)
    history: tuple[str, ...] = ()  # Context lines the question refers to ("K7AB: anyone seen ray?")
    grounded: bool = False  # the user turn carries retrieved catalog lines

    @property
    def user_turn(self) -> str:
        return self.user or self.question


_h = stable_hash


@lru_cache(maxsize=65536)
def _answer_problem(answer: str) -> str | None:
    if not answer.strip():
        return "empty answer"
    size = utf8_len(answer)
    if size > ANSWER_BUDGET:
        return f"answer over {ANSWER_BUDGET} bytes ({size})"
    bad = unknown_slash_words(answer)
    if bad:
        return f"answer uses unknown command(s) {', '.join(bad)}"
    return None


def check_answer(answer: str, where: str = "") -> str:
    """The answer itself when it is within budget and names only real commands; else SynthError."""
    problem = _answer_problem(answer)
    if problem:
        raise SynthError(f"{problem} {where}: {answer!r}")
    return answer


def intents() -> tuple[Intent, ...]:
    return load_intents().intents


# -- slots ------------------------------------------------------------------------------------------------

_SLOT = re.compile(r"\{(\w+)\}")


def _slot_pools(boxes: Iterable[str]) -> dict[str, tuple[str, ...]]:
    pools = dict(load_phrasing().slots)
    pools["box"] = tuple(dict.fromkeys(boxes))
    pools["caller"] = pools["name"]
    return pools


def _fills(templates: tuple[str, ...], pools: Mapping[str, tuple[str, ...]], seed: int, key: str,
           count: int) -> list[dict]:
    slots = sorted({s for t in templates for s in _SLOT.findall(t)})
    if not slots:
        return [{}]
    rng = random.Random(_h(seed, "fill", key))
    out, seen = [], set()
    for _ in range(count * 3):
        fill = {s: rng.choice(pools[s]) for s in slots}
        if "caller" in fill and fill["caller"] == fill.get("name"):
            continue  # the speaker in the history is never the person asked about
        sig = tuple(sorted(fill.items()))
        if sig not in seen:
            seen.add(sig)
            out.append(fill)
        if len(out) >= count:
            break
    return out


# -- surface: shorthand, slips, case ---------------------------------------------------------------------

# Radio shorthand people really type, preferred over letter slips.
_ABBREV = {"you": "u", "your": "ur", "are": "r", "message": "msg", "messages": "msgs", "what's": "whats",
           "people": "ppl", "for": "4", "to": "2", "see": "c", "before": "b4", "command": "cmd", "commands": "cmds",
           "because": "cuz", "with": "w", "tonight": "2nite", "doesn't": "doesnt", "don't": "dont",
           "i'm": "im", "can't": "cant", "please": "pls", "thanks": "thx", "tomorrow": "tmrw", "check": "chk",
           "about": "abt", "through": "thru", "really": "rly", "weather": "wx", "okay": "ok", "know": "kno",
           "what": "wat", "why": "y", "mailbox": "mbox", "right": "rite", "now": "rn", "signal": "sig"}
_WORD = re.compile(r"[A-Za-z']+")


def _typo(text: str, rng: random.Random, protect: frozenset[str]) -> str:
    """One realistic slip: radio shorthand, or a swapped, dropped or doubled letter."""
    words = list(_WORD.finditer(text))
    options = [m for m in words if m.group(0).lower() not in protect and not m.group(0).isupper()
               and text[max(0, m.start() - 1)] not in "/{"]
    if not options:
        return text
    shorthand = [m for m in options if m.group(0).lower() in _ABBREV]
    if shorthand and rng.random() < 0.6:
        m = rng.choice(shorthand)
        return text[: m.start()] + _ABBREV[m.group(0).lower()] + text[m.end():]
    long_words = [m for m in options if len(m.group(0)) >= 4]
    if not long_words:
        return text
    m = rng.choice(long_words)
    w = m.group(0)
    j = rng.randrange(1, len(w) - 2)
    op = rng.choice(("swap", "drop", "double"))
    new = w[:j] + w[j + 1] + w[j] + w[j + 2:] if op == "swap" else w[:j] + w[j + 1:] if op == "drop" \
        else w[:j] + w[j] + w[j:]
    return text[: m.start()] + new + text[m.end():]


@lru_cache(maxsize=65536)
def _variants(text: str, seed: int, n: int, protect: frozenset[str]) -> tuple[str, ...]:
    out = [text]
    for k in range(n):
        rng = random.Random(_h(seed, "typo", text, k))
        v = _typo(text, rng, protect)
        if k and rng.random() < 0.5:
            v = _typo(v, rng, protect)  # deeper copies slip twice
        if v not in out:
            out.append(v)
    return tuple(out)


def _surface(template: str, fill: Mapping[str, str], seed: int) -> str:
    """How it is typed: often all lower case (slot values stay as they are: names are copied exactly), often
    without the final '?'. Near-duplicate keys ignore both."""
    h = _h(seed, "surface", template, *sorted(fill.items()))
    if (h % 1000) < LOWER_SHARE * 1000:
        template = template.lower()
    if ((h >> 12) % 1000) < BARE_SHARE * 1000:
        template = template.rstrip("?").rstrip() or template
    return template.format(**fill)


# -- generation -------------------------------------------------------------------------------------------

@dataclass
class _Sink:
    seed: int
    typos: int
    mail_boxes: frozenset[str]
    fills: int = FILLS_PER_PHRASE
    examples: list[Example] = field(default_factory=list)

    def add(self, intent: str, group: str, template: str, answer_tpl: str, pools, protect=frozenset(),
            fills: int | None = None, command: str | None = None, history: tuple[str, ...] = ()) -> None:
        key = f"{group}|{template}|{'|'.join(history)}"
        for n, fill in enumerate(_fills((template, *history), pools, self.seed, key, fills or self.fills)):
            answer = check_answer(answer_tpl.format(**fill), f"(intent {intent})")
            lines = ()
            if history:
                lines = (history[_h(self.seed, "hist", key, n) % len(history)].format(**fill),)
            # Typos go into the template's own words only (never "{slot}" or "/command"), so slot values
            # the answer repeats stay exact.
            for k, q in enumerate(_variants(template, self.seed, self.typos, frozenset(protect))):
                question = _surface(q, fill, self.seed)
                source = "mailboxes" if fill.get("box") in self.mail_boxes else "synthetic"
                self.examples.append(Example(question, answer, intent, group, source, typo=k > 0,
                                             command=command, history=lines))


def generate(seed: int = 42, *, mailbox_names: Iterable[str] = (), locked_boxes: Iterable[str] = (),
             typos: int = TYPO_VARIANTS, fills: int = FILLS_PER_PHRASE) -> list[Example]:
    """Every synthetic example, deterministic for a seed. Near-duplicates are removed later, by the caller.

    mailbox_names: box names from the operator's mesh_mailboxes.json; mail examples use them (source
    "mailboxes") next to generic names. locked_boxes: those holding PIN-locked mail (their check examples
    say to add the PIN). Message bodies are never used.
    """
    phrasing = load_phrasing()
    mail_boxes = frozenset(b for b in mailbox_names if b)
    sink = _Sink(seed, typos, mail_boxes, fills)
    pools = _slot_pools([*sorted(mail_boxes), *phrasing.slots["box"]])
    frames = phrasing.frames
    for intent in intents():
        for idx, action in enumerate(intent.actions):
            answer_tpl = _answer_for(intent, action)
            for f_idx, frame in enumerate(frames):
                # Each phrasing gets its own third of the frames, so no frame/phrasing pairing dominates.
                if (idx + f_idx) % 3 and len(intent.actions) > 3:
                    continue
                sink.add(intent.id, f"{intent.id}:a{idx}", frame.replace("{a}", action), answer_tpl, pools,
                         command=intent.command)
        for idx, ask in enumerate(intent.asks):
            sink.add(intent.id, f"{intent.id}:q{idx}", ask, _answer_for(intent, ask), pools, fills=2 * fills,
                     command=intent.command)
    _contrast_examples(sink, pools)
    _referring_examples(sink, pools)
    _locked_examples(sink, sorted(set(locked_boxes) & mail_boxes))
    _explain_examples(sink)
    _fake_examples(sink, pools)
    _fact_examples(sink)
    for idx, qa in enumerate(phrasing.general):
        for j, ask in enumerate(qa.asks):
            sink.add("general", f"general:{idx}:{j}", ask, qa.answer, pools)
    return sink.examples


def _answer_for(intent: Intent, *templates: str) -> str:
    try:
        return intent.answer_for(*templates)
    except KeyError as exc:
        raise SynthError(str(exc.args[0])) from None


def _by_id() -> dict[str, Intent]:
    return {i.id: i for i in intents()}


def _contrast_examples(sink: _Sink, pools) -> None:
    by_id = _by_id()
    for k, contrast in enumerate(load_phrasing().contrasts):
        for intent_id, asks in contrast.asks.items():
            intent = by_id[intent_id]
            for j, ask in enumerate(asks):
                sink.add(intent.id, f"{intent.id}:c{k}:{j}", ask, _answer_for(intent, ask), pools,
                         command=intent.command)


def _referring_examples(sink: _Sink, pools) -> None:
    by_id = _by_id()
    for k, ref in enumerate(load_phrasing().referring):
        intent = by_id[ref.intent]
        for j, ask in enumerate(ref.asks):
            sig = {signature(ask, line) for line in ref.history}
            if len(sig) != 1:
                raise SynthError(f"referring[{k}]: history lines of intent {intent.id} differ in slots")
            sink.add(intent.id, f"{intent.id}:r{k}:{j}", ask, _answer_for(intent, ask, ref.history[0]), pools,
                     fills=1, command=intent.command, history=ref.history)


def _locked_examples(sink: _Sink, boxes: list[str]) -> None:
    if not boxes:
        return
    pools = {"box": tuple(boxes)}
    answer = "Send /c {box} <PIN>. That box is PIN-locked; add a word after the PIN to search."
    for idx, ask in enumerate(("how do I read the {box} mailbox?", "the {box} box asks for a pin",
                               "check the {box} mailbox", "open the {box} box")):
        sink.add("mail_check", f"mail_check:locked{idx}", ask, answer, pools, fills=len(boxes), command="/c")


def _explain_examples(sink: _Sink) -> None:
    catalog = load_catalog()
    asks = load_phrasing().explain_asks
    for cmd in catalog.commands:
        note = " (admin, DM only)" if cmd.admin else " (DM only)" if cmd.dm_only else ""
        usage = "" if cmd.usage == cmd.name else f" Usage: {cmd.usage}"
        for name in cmd.names:
            same = "" if name == cmd.name else f"Same as {cmd.name}: "
            answer = f"{name}: {same}{cmd.description}{note}.{usage}"
            if utf8_len(answer) > 160:
                answer = f"{name}: {same}{cmd.description}{note}."
            for idx, ask in enumerate(asks):
                # About a third of the frames per name keep the catalog covered without flooding the pool.
                if _h(sink.seed, "explain", name, idx) % 3:
                    continue
                sink.add("explain", f"explain:{idx}", ask.replace("{cmd}", name), answer, {}, protect={name[1:]},
                         command=cmd.name)


def fake_answer(fake: str, alternative: str) -> str:
    """The word first, as the Context line names it ("not a command: setname"): a reply that opens by copying
    it keeps it under sampling, where "There is no ..." lost its first sentence to "Send /help ..."."""
    if fake == "hint":
        return "hint is not a command. For help on one topic send /help <topic>."
    return f"{fake} is not a command. {alternative}Send /help for the real commands."


def _fake_examples(sink: _Sink, pools: Mapping[str, tuple[str, ...]]) -> None:
    phrasing = load_phrasing()
    for fc in phrasing.fake_commands:
        answer = fake_answer(fc.fake, fc.alternative)
        # Half the frames for each fake with its own alternative; a listed word gets a fifth, so the many words
        # (not the frames) carry the lesson "name the word they typed". Seeded choice, the same count for each.
        asks = list(enumerate(phrasing.fake_asks))
        share = 5 if fc.from_word_list else 2
        chosen = sorted(asks, key=lambda a: _h(sink.seed, "fake", fc.fake, a[0]))[: max(1, len(asks) // share)]
        for idx, ask in sorted(chosen):
            # An ask with arguments ("/{fake} {name}") takes one fill: the lesson is the word, not the values.
            sink.add("fake_command", f"fake_command:{idx}", ask.replace("{fake}", fc.fake), answer, pools,
                     protect={fc.fake}, fills=1)


def _fact_examples(sink: _Sink) -> None:
    for topic in load_facts().topics.values():
        for i, item in enumerate(topic.items):
            for j, ask in enumerate(item.asks):
                sink.add(f"fact:{topic.id}", f"fact:{topic.id}:{i}:{j}", ask, item.answer, {},
                         protect={"snr", "rssi", "ack", "lora", "dbm"})


# -- weights and wrapping ---------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def intent_weights() -> dict[str, float]:
    """How much of a dataset each intent gets when there is more material than needed: the same for every
    intent and fact topic (intents.yaml may say otherwise), more for the aggregates above."""
    w = {i.id: i.weight for i in intents()}
    w.update({f"fact:{t}": FACT_WEIGHT for t in load_facts().topics})
    w.update(AGGREGATE_WEIGHTS)
    return w


def wrap_meshmaster(examples: list[Example], seed: int, fraction: float = WRAP_FRACTION) -> list[Example]:
    """Give a stable `fraction` of the user turns the shape of Mesh-Master's own prompt: an operator's system
    text (sometimes none), recent history lines, the question. A question that refers to its history is
    always wrapped, its history last."""
    phrasing = load_phrasing()
    out = []
    for ex in examples:
        h = _h(seed, "wrap", ex.question)
        if not ex.history and (h % 10_000) / 10_000 >= fraction:
            out.append(ex)
            continue
        rng = random.Random(h)
        context = rng.sample(phrasing.history, rng.choice((0, 1, 1, 2, 3)))
        if ex.history:
            context = [*context[:1], *ex.history]
        prompt = meshmaster_prompt(ex.question, context, bot_system=rng.choice(phrasing.bot_systems))
        out.append(replace(ex, user=prompt))
    return out
