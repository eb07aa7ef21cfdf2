"""Scoring replies against a suite. Pure functions: no model here. A reply earns credit only by being right.

Every item gets a verdict (passed, reason). Nothing passes when the reply is empty or evasive: it opens with
"I don't know", "not sure", "I can't help", "no idea"... (its first sentence holds such a phrase).

- commands: the FIRST real slash command of the reply is an accepted one (an alias of an accepted command
  counts), the reply names at most two distinct commands and invents none. Plain-word answers (`ping`) pass when
  an accepted word stands bare in the reply. Relay items (`relay: <shortname>`) pass when the reply gives the
  form "<shortname> <message>" for that shortname before any command ("*": the "<shortname> <message>"
  placeholder or a quoted example). `no_command` items (test-split rows whose gold answer names no command) pass
  when the reply invents none and names at most two.
- hallucination: the reply mentions the fake word and denies it (a negation within 6 words of it in the same
  sentence, or "no such command", "unknown command", "doesn't exist"...); pointing to /help is not a denial
  ("sos: /help lists the commands" repeats the word and says nothing about it); names at most two commands;
  never presents the fake as real (its slash form, or "send/use/type/try <fake>", in a sentence without a
  negation); and does not name three or more of the batch's other fake words (a reply listing every fake word
  is no answer).
- technical: every `required` term is present and at least `min_concepts` concept groups are hit (default:
  half, rounded up), all as whole words or whole numbers ("db" is not in "feedback", "160" not in "1600", "20"
  not in "-20"); no invented command, at most two commands, and fewer than three numbers the item does not
  expect (a list of every number the suite asks about is a guess, not an answer).
- brevity: a reply earns it when it passed its item AND fits the radio budget (2 chunks of 160 UTF-8 bytes as
  the bot cuts them): a short wrong answer saves airtime for nothing.

Areas are percents of items (of all replies for brevity); overall is their mean. An area with no items in the
batch is left out. hallucinated_command_rate: % of replies naming a slash command that does not exist (an item's
`allow` words, and a fake item's own word inside a negated sentence, do not count).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from meshai_common.meshmaster import MAX_REPLY_COMMANDS, load_catalog, slash_word_matches, slash_words
from meshai_common.radio import chunk_count, fits_budget

AREAS = ("commands", "technical", "hallucination", "brevity")
NEAR_WORDS = 6  # a negation this close to the fake word denies it
MAX_COMMANDS = MAX_REPLY_COMMANDS
STRAY_NUMBERS = 3  # this many unexpected numbers in a technical reply: guessing
FOREIGN_FAKES = 3  # this many other fake words in a fake item's reply: a list, not an answer

_TYPOGRAPHY = str.maketrans({"\u2212": "-", "\u2013": "-", "\u2014": "-", "\u2019": "'", "\u2018": "'",
                             "\u201c": '"', "\u201d": '"'})
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")
_NUMBERS_IN_TEXT = re.compile(r"(?<![\w.])(?:(?<!\d)-)?\d+(?:\.\d+)?")
_TOKEN = re.compile(r"/?[A-Za-z0-9_']+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+|;\s*")
_INTERJECTION = re.compile(r"^\s*(?:no|nope|yes|yeah|yep|sure)\s*[,!-]\s*", re.I)
_NEGATION = re.compile(
    r"\b(?:no|not|never|nothing|none|nope|cannot|unknown|invalid|unsupported|nonexistent|non-existent|fake|"
    r"unavailable|made[- ]up|isnt|arent|doesnt|dont|didnt|wont|cant|aint)\b|n't\b", re.I)
_DENIAL = re.compile(
    r"\bno such (?:command|cmd)|\bnot an? (?:real |valid |known |actual |mesh-master )?(?:command|cmd)\b|"
    r"\bunknown (?:command|cmd)|\b(?:does|do|did) ?(?:n'?t|not) exist|\bnot exist|\bnon-?existent|"
    r"\bisn'?t (?:an? )?(?:real |valid |actual )?(?:command|cmd|thing)\b|\bno (?:command|cmd) (?:called|named|for|like)\b|"
    r"\bnot (?:one of )?(?:my|the|our|mesh-master's) commands|\bnot supported|\bisn'?t supported|\bnot available",
    re.I)
_EVASIVE = re.compile(
    r"\b(?:i (?:do ?n[o']?t|dont) know(?! (?:of|about|any)\b)|(?:i'?m |i am )?not (?:sure|certain)|no idea|unsure|"
    r"dunno|idk|i (?:can'?t|cannot|can not|am unable to) (?:help|answer|assist|say|tell)|"
    r"i'?m (?:not able|unable)|as an ai|i (?:do ?n[o']?t|dont) have (?:that |any |enough )?(?:info|information|"
    r"access|details|data))", re.I)
_PLACEHOLDER = re.compile(
    r"[<\[]\s*(?:short\s*[_-]?\s*name|name|node|callsign)\s*[>\]]\s+[<\[]\s*(?:msg|message|text|your message)\s*[>\]]",
    re.I)
_RELAY_STOP = ("a|an|the|is|are|was|were|be|will|would|can|could|should|must|may|might|and|or|but|to|through|via|"
               "with|by|from|for|if|when|has|have|had|gets|got|directly|using|who|that|this|which|it|its|isnt|"
               "doesnt|wont|cant|isn't|doesn't|won't|can't|needs|wants|knows|hears|sees|replies")
_QUOTED_EXAMPLE = re.compile(
    rf"""(?<!\w)['"`]\s*([A-Za-z][A-Za-z0-9]{{1,9}})\s+(?!(?:{_RELAY_STOP})\b)[^'"`\n/]{{2,}}['"`]""", re.I)


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str = ""


def _clean(text: str | None) -> str:
    return (text or "").translate(_TYPOGRAPHY)


# -- whole-word terms ----------------------------------------------------------------------------------------

@lru_cache(maxsize=8192)
def term_pattern(term: str) -> re.Pattern[str]:
    """The regex a suite term stands for: whole words or whole numbers, case-insensitive.

    "160" is not inside "1600" or "2160" but is in "160-byte"; "20" is not in "-20" and "-20" needs its minus
    (or "minus 20"); "retr*" matches a stem; spaces, "-" and "_" inside a term match any of them; "/nodes" is
    that slash command.
    """
    t = _clean(term).strip().lower()
    if _NUMBER.fullmatch(t):
        digits = re.escape(t.lstrip("+-"))
        tail = r"(?!\d|[.,]\d)"
        if t.startswith("-"):
            return re.compile(rf"(?:(?<![\w.])-\s?|\bminus\s+){digits}{tail}", re.I)
        return re.compile(rf"(?<![\d.,])(?<!(?<!\d)-){digits}{tail}", re.I)
    stem = t.endswith("*")
    body = t.rstrip("*")
    parts = [re.escape(p).replace("'", "'?") for p in re.split(r"(?<=\S)[\s_-]+(?=\S)", body) if p]
    core = r"[\s_-]+".join(parts) + (r"[\w']*" if stem else "")
    head = r"(?<![\w/])" if body.startswith("/") else r"(?<![\w])"
    return re.compile(rf"{head}{core}(?![\w])" if not stem else rf"{head}{core}", re.I)


def alternatives(term: Any) -> list[str]:
    """A suite term as its list of alternatives: "x" -> ["x"], [x, y] -> ["x", "y"], 3 -> ["3"]."""
    return [str(a) for a in term] if isinstance(term, (list, tuple)) else [str(term)]


def has_term(text: str, term: Any) -> bool:
    """True when text holds the term (or any of a list of alternatives) as a whole word or number."""
    text = _clean(text)
    return any(term_pattern(a).search(text) for a in alternatives(term))


def _numbers(text: str) -> set[str]:
    return {n.lstrip("+") for n in _NUMBERS_IN_TEXT.findall(_clean(text))}


# -- commands in a reply -------------------------------------------------------------------------------------

def first_command(text: str) -> str | None:
    """Canonical catalog name of the first real slash command in text ("/checkmail" -> "/c"), else None."""
    catalog = load_catalog()
    for word in slash_words(_clean(text)):
        cmd = catalog.get(word)
        if cmd is not None:
            return cmd.name
    return None


def named_commands(text: str, allow: tuple[str, ...] | list[str] = ()) -> tuple[list[str], list[str]]:
    """(distinct real commands as canonical names, distinct invented slash words), in order of appearance."""
    catalog = load_catalog()
    allowed = {("/" + a.lstrip("/")).lower() for a in allow}
    real: list[str] = []
    invented: list[str] = []
    for word in slash_words(_clean(text)):
        cmd = catalog.get(word)
        if cmd is not None:
            if cmd.name not in real:
                real.append(cmd.name)
        elif word.lower() not in allowed and word.lower() not in {w.lower() for w in invented}:
            invented.append(word)
    return real, invented


def _first_slash_position(text: str, allow: set[str]) -> int | None:
    for m in slash_word_matches(text):
        if "/" + m.group(1).lower() not in allow:
            return m.start()
    return None


def _sentences(text: str) -> list[str]:
    return [s for s in (p.strip() for p in _SENTENCE_END.split(text)) if s]


def is_evasive(text: str) -> bool:
    """The reply dodges: its first sentence says "I don't know", "not sure", "I can't help"..."""
    sentences = _sentences(_clean(text))
    return bool(sentences) and bool(_EVASIVE.search(sentences[0]))


def _gate(reply: str) -> Verdict | None:
    if not reply.strip():
        return Verdict(False, "empty")
    if is_evasive(reply):
        return Verdict(False, "evasive")
    return None


# -- judges --------------------------------------------------------------------------------------------------

def _relay_patterns(name: str) -> list[re.Pattern[str]]:
    if name == "*":
        return [_PLACEHOLDER, _QUOTED_EXAMPLE]
    return [re.compile(rf"(?<![\w/@!<]){re.escape(name)}\s+(?!(?:{_RELAY_STOP})\b)[^\s.,;:!?)]", re.I)]


def judge_command(reply: str, item: dict[str, Any]) -> Verdict:
    reply = _clean(reply)
    gate = _gate(reply)
    if gate:
        return gate
    allow = tuple(item.get("allow", ()))
    real, invented = named_commands(reply, allow)
    if invented:
        return Verdict(False, f"invented {invented[0]}")
    if len(real) > MAX_COMMANDS:
        return Verdict(False, f"names {len(real)} commands")
    if item.get("no_command"):
        return Verdict(True)
    catalog = load_catalog()
    first = real[0] if real else None
    forms = [re.compile(rx) for rx in item.get("accept_regex", ())]
    if item.get("relay"):
        forms += _relay_patterns(str(item["relay"]))
    if forms:
        hits = [m.start() for rx in forms for m in [rx.search(reply)] if m]
        first_slash = _first_slash_position(reply, {("/" + a.lstrip("/")).lower() for a in allow})
        if hits and (first_slash is None or min(hits) < first_slash):
            return Verdict(True)
    accepted = [c.name for c in map(catalog.get, item.get("accept", ())) if c is not None]
    if first is not None and first in accepted:
        return Verdict(True)
    plain = [w for w in item.get("accept", ()) if catalog.get(w) is None]
    if first is None and any(has_term(reply, w) for w in plain):
        return Verdict(True)  # a plain word (ping) standing bare: "/ping" is an invented command
    expected = "/".join(accepted) if accepted else ""
    if item.get("relay"):
        expected = f"the relay form '{item['relay']} <message>'" + (f" or {expected}" if expected else "")
    elif not expected:
        expected = " or ".join(str(a) for a in item.get("accept", ())) or "the accepted form"
    if first is None:
        return Verdict(False, f"names no command, expected {expected}")
    return Verdict(False, f"first command {first}, expected {expected}")


def _negated(sentence: str) -> bool:
    return bool(_NEGATION.search(_INTERJECTION.sub("", sentence)))


# "Send sos for ..." offers the word as a command as surely as "/sos" does.
_OFFER_VERBS = frozenset({"send", "use", "type", "try", "run", "enter"})


def _is_fake_token(token: str, fake: str) -> bool:
    t = token.lower().lstrip("/").rstrip("'")
    return t in (fake, fake + "s", fake + "es")


def fake_handling(reply: str, fake: str, other_fakes: frozenset[str] = frozenset()) -> tuple[Verdict, bool]:
    """(verdict, presented): presented is True when the reply offers /fake as a real command."""
    fake = fake.lstrip("/").lower()
    mentioned = denied = presented = False
    foreign: set[str] = set()
    for sentence in _sentences(reply):
        body = _INTERJECTION.sub("", sentence)
        tokens = _TOKEN.findall(body)
        negations = [i for i, t in enumerate(tokens) if _NEGATION.fullmatch(t) or t.lower().endswith("n't")]
        for i, tok in enumerate(tokens):
            if _is_fake_token(tok, fake):
                mentioned = True
                if any(abs(i - j) <= NEAR_WORDS for j in negations):
                    denied = True
                offered = tok.startswith("/") or (i and tokens[i - 1].lower() in _OFFER_VERBS)
                if offered and not _negated(body):
                    presented = True
            elif tok.lower().lstrip("/") in other_fakes:
                foreign.add(tok.lower().lstrip("/"))
    if presented:
        return Verdict(False, f"presents /{fake} as real"), True
    if not mentioned:
        return Verdict(False, f"does not mention {fake}"), False
    if len(foreign) >= FOREIGN_FAKES:
        return Verdict(False, f"off-topic: names {', '.join(sorted(foreign))}"), False
    if denied or _DENIAL.search(reply):
        return Verdict(True), False
    return Verdict(False, f"does not say {fake} is not a command"), False


def judge_fake(reply: str, item: dict[str, Any], other_fakes: frozenset[str] = frozenset()) -> Verdict:
    reply = _clean(reply)
    gate = _gate(reply)
    if gate:
        return gate
    fake = str(item["fake"]).lstrip("/").lower()
    verdict, presented = fake_handling(reply, fake, other_fakes - {fake})
    if presented:
        return verdict
    real, invented = named_commands(reply, ("/" + fake, *item.get("allow", ())))
    if invented:
        return Verdict(False, f"invented {invented[0]}")
    if len(real) > MAX_COMMANDS:
        return Verdict(False, f"names {len(real)} commands")
    return verdict


def judge_technical(reply: str, item: dict[str, Any]) -> Verdict:
    reply = _clean(reply)
    gate = _gate(reply)
    if gate:
        return gate
    real, invented = named_commands(reply, tuple(item.get("allow", ())))
    if invented:
        return Verdict(False, f"invented {invented[0]}")
    if len(real) > MAX_COMMANDS:
        return Verdict(False, f"names {len(real)} commands")
    for term in item.get("required", ()):
        if not has_term(reply, term):
            return Verdict(False, f"missing required {alternatives(term)[0]}")
    groups = item.get("concepts", ())
    hit = sum(has_term(reply, g) for g in groups)
    need = item.get("min_concepts") or math.ceil(len(groups) / 2)
    if hit < need:
        return Verdict(False, f"{hit} of {len(groups)} concepts, needs {need}")
    expected = _expected_numbers(item)
    stray = sorted(_numbers(reply) - expected)
    if len(stray) >= STRAY_NUMBERS:
        return Verdict(False, f"quotes unrelated numbers {', '.join(stray[:4])}")
    return Verdict(True)


def _expected_numbers(item: dict[str, Any]) -> set[str]:
    terms: list[str] = []
    for t in [*item.get("required", ()), *item.get("concepts", ()), *item.get("numbers", ())]:
        terms.extend(alternatives(t))
    text = " ".join(str(t) for t in terms) + " " + item.get("question", "") + " " + " ".join(item.get("context", ()))
    return _numbers(text)


def judge(area: str, item: dict[str, Any], reply: str, other_fakes: frozenset[str] = frozenset()) -> Verdict:
    """The verdict on one reply to one item of `area` (commands, hallucination or technical)."""
    if area == "commands":
        return judge_command(reply, item)
    if area == "hallucination":
        return judge_fake(reply, item, other_fakes)
    if area == "technical":
        return judge_technical(reply, item)
    raise ValueError(f"unknown area {area!r} for item {item.get('id')!r}")


# -- the batch -----------------------------------------------------------------------------------------------

def _unknown(reply: str, area: str, item: dict[str, Any]) -> list[str]:
    """Invented slash words, not counting allowed ones nor a fake item's own word inside a negated sentence."""
    allow = list(item.get("allow", ()))
    if area == "hallucination":
        fake = str(item["fake"]).lstrip("/").lower()
        if not fake_handling(_clean(reply), fake)[1]:
            allow.append("/" + fake)
    return named_commands(reply, tuple(allow))[1]


def score(replies: list[dict[str, Any]]) -> dict[str, Any]:
    """replies: [{item, reply, area?, latency_s?, ...}], one per question asked (several per item when asked
    over seeds). `area` defaults to item["area"]. Returns areas, overall, hallucinated_command_rate, n and one
    record per reply in `items`."""
    fakes = frozenset(str(r["item"]["fake"]).lstrip("/").lower() for r in replies
                      if (r.get("area") or r["item"].get("area")) == "hallucination")
    records = []
    for r in replies:
        item, reply = r["item"], _clean(r.get("reply"))
        area = r.get("area") or item.get("area")
        if area not in ("commands", "hallucination", "technical"):
            raise ValueError(f"reply for item {item.get('id')!r} has no valid area (got {area!r})")
        verdict = judge(area, item, reply, fakes)
        fits = fits_budget(reply)
        extra = {k: v for k, v in r.items() if k not in ("item", "reply", "area")}
        records.append({
            "area": area, "id": item.get("id"), "question": item.get("question"),
            "context": list(item.get("context", ())), "reply": reply, "passed": verdict.passed,
            "reason": verdict.reason, "first_command": first_command(reply),
            "unknown_commands": _unknown(reply, area, item), "bytes": len(reply.encode()),
            "chunks": chunk_count(reply), "fits_budget": fits, "brief_and_right": fits and verdict.passed, **extra,
        })

    def pct(xs: list[bool]) -> float:
        return 100.0 * sum(xs) / len(xs)

    areas: dict[str, float] = {}
    for area in ("commands", "technical", "hallucination"):
        passed = [d["passed"] for d in records if d["area"] == area]
        if passed:
            areas[area] = pct(passed)
    if records:
        areas["brevity"] = pct([d["brief_and_right"] for d in records])
    return {
        "areas": areas,
        "overall": sum(areas.values()) / len(areas) if areas else 0.0,
        "hallucinated_command_rate": pct([bool(d["unknown_commands"]) for d in records]) if records else 0.0,
        "n": len(records),
        "items": records,
    }

