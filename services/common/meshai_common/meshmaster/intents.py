"""What people ask the bot (intents.yaml) and how they phrase it (phrasing.yaml): the synthetic data's tables.

Both files are data, checked on load: a bad entry raises ConfigError naming the file and the entry
("intents.yaml: intents[3] (id nodes): ..."). Every answer, fake-command alternative and general answer must
stay within the 320-byte radio budget with its slots filled, and name only commands of the catalog.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from meshai_common.errors import ConfigError
from meshai_common.meshmaster.catalog import (
    HERE,
    MAX_REPLY_COMMANDS,
    load_catalog,
    named_command_names,
    slash_words,
    unknown_slash_words,
)
from meshai_common.radio import budget_bytes, utf8_len

INTENTS_FILE = HERE / "intents.yaml"
PHRASING_FILE = HERE / "phrasing.yaml"
# Slots a phrasing may use; "caller" is only for history lines (who spoke), never in an answer.
KNOWN_SLOTS = frozenset({"name", "msg", "box", "topic", "time", "dur", "ref"})
_HISTORY_SLOTS = KNOWN_SLOTS | {"caller"}
_SLOT = re.compile(r"\{(\w+)\}")
_LONGEST_SLOT_VALUE = "x" * 24  # mailbox and short names are at most 24 characters
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def slots_of(template: str) -> set[str]:
    return set(_SLOT.findall(template))


def signature(*templates: str, ignore: frozenset[str] = frozenset({"caller"})) -> str:
    """The slot signature of one or more templates: their slots, sorted, joined by "+" ("" for none)."""
    found: set[str] = set()
    for t in templates:
        found |= slots_of(t)
    return "+".join(sorted(found - ignore))


@dataclass(frozen=True)
class Intent:
    id: str
    command: str | None  # canonical catalog command ("/nodes"), None for relay, plain words, small talk
    answers: Mapping[str, str]  # slot signature -> answer template
    actions: tuple[str, ...] = ()  # verb phrases, used inside frames
    asks: tuple[str, ...] = ()  # whole questions
    weight: float = 1.0

    def answer_for(self, *templates: str) -> str:
        sig = signature(*templates)
        if sig not in self.answers:
            raise KeyError(f"intent {self.id}: no answer for slots {sig or '(none)'} in {templates!r}")
        return self.answers[sig]


@dataclass(frozen=True)
class IntentSet:
    version: int
    intents: tuple[Intent, ...]

    def __iter__(self) -> Iterator[Intent]:
        return iter(self.intents)

    def __len__(self) -> int:
        return len(self.intents)

    def get(self, intent_id: str) -> Intent | None:
        return next((i for i in self.intents if i.id == intent_id), None)


@dataclass(frozen=True)
class FakeCommand:
    fake: str  # the word, without the slash
    alternative: str  # the real way to do it ("" when there is none)
    from_word_list: bool = False  # one of `fake_words`: many words with few asks each


@dataclass(frozen=True)
class GeneralQA:
    asks: tuple[str, ...]
    answer: str


@dataclass(frozen=True)
class Referring:
    """Questions that point back at the history ("how do i send him one" after "K7AB: anyone seen ray?")."""

    intent: str
    history: tuple[str, ...]  # each a "{caller}: ..." line template
    asks: tuple[str, ...]


@dataclass(frozen=True)
class Contrast:
    """Near questions of near intents, asked side by side so the words that tell them apart get learned."""

    name: str
    asks: Mapping[str, tuple[str, ...]]  # intent id -> asks


@dataclass(frozen=True)
class Phrasing:
    version: int
    frames: tuple[str, ...]
    slots: Mapping[str, tuple[str, ...]]
    fake_commands: tuple[FakeCommand, ...]
    fake_asks: tuple[str, ...]
    explain_asks: tuple[str, ...]
    general: tuple[GeneralQA, ...]
    bot_systems: tuple[str, ...]
    history: tuple[str, ...]
    referring: tuple[Referring, ...]
    contrasts: tuple[Contrast, ...]


# -- checks -----------------------------------------------------------------------------------------------


class _Reader:
    """Typed access to one parsed YAML file; every failure names the file and the entry."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        try:
            self.doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)  # noqa: S506 - a safe loader
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read the {what}: {exc}") from exc
        if not isinstance(self.doc, dict) or not isinstance(self.doc.get("version"), int):
            raise ConfigError(f"{path}: expected a mapping with an integer 'version'")

    def fail(self, where: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.path}: {where}: {msg}")

    def text(self, value: Any, where: str, *, empty_ok: bool = False) -> str:
        if not isinstance(value, str) or (not empty_ok and not value.strip()):
            raise self.fail(where, "must be a non-empty string" if not empty_ok else "must be a string")
        return value

    def texts(self, value: Any, where: str, *, empty_ok: bool = False) -> tuple[str, ...]:
        if value is None and empty_ok:
            return ()
        if not isinstance(value, list) or (not value and not empty_ok):
            raise self.fail(where, "must be a non-empty list of strings")
        return tuple(self.text(v, f"{where}[{i}]", empty_ok=empty_ok) for i, v in enumerate(value))

    def section(self, key: str, kind: type) -> Any:
        value = self.doc.get(key)
        if not isinstance(value, kind) or not value:
            raise ConfigError(f"{self.path}: '{key}' must be a non-empty {kind.__name__}")
        return value

    def answer(self, answer: str, where: str, allowed_slots: frozenset[str] = frozenset()) -> str:
        """An answer that fits the budget with its slots filled and names only real commands."""
        bad_slots = slots_of(answer) - allowed_slots
        if bad_slots:
            raise self.fail(where, f"answer uses slot(s) {', '.join(sorted(bad_slots))} its signature lacks")
        filled = _SLOT.sub(_LONGEST_SLOT_VALUE, answer)
        size, budget = utf8_len(filled), budget_bytes()
        if size > budget:
            raise self.fail(where, f"answer over {budget} bytes with its slots filled ({size}): {answer!r}")
        unknown = unknown_slash_words(answer)
        if unknown:
            raise self.fail(where, f"answer uses unknown command(s) {', '.join(unknown)}: {answer!r}")
        named = named_command_names(answer)
        if len(named) > MAX_REPLY_COMMANDS:
            raise self.fail(where, f"answer names {len(named)} commands ({', '.join(named)}), at most "
                                   f"{MAX_REPLY_COMMANDS}: {answer!r}")
        return answer

    def phrasings(self, value: Any, where: str, intent: Intent | None, *, slots_allowed=KNOWN_SLOTS,
                  extra: tuple[str, ...] = ()) -> tuple[str, ...]:
        items = self.texts(value, where, empty_ok=True)
        for i, item in enumerate(items):
            unknown = slots_of(item) - slots_allowed
            if unknown:
                raise self.fail(f"{where}[{i}]", f"unknown slot(s) {', '.join(sorted(unknown))} in {item!r}")
            if intent is not None and signature(item, *extra) not in intent.answers:
                sig = signature(item, *extra) or "(none)"
                raise self.fail(f"{where}[{i}]", f"intent {intent.id} has no answer for slots {sig} ({item!r})")
        return items


# -- intents ----------------------------------------------------------------------------------------------


def _command(r: _Reader, value: Any, where: str) -> str | None:
    if value is None:
        return None
    name = r.text(value, f"{where}.command")
    cmd = load_catalog().get(name)
    if cmd is None:
        raise r.fail(where, f"command {name!r} is not in the command catalog")
    if cmd.name != name:
        raise r.fail(where, f"command {name!r} is an alias: use the catalog name {cmd.name}")
    return name


def _intent(r: _Reader, raw: Any, i: int, seen: set[str]) -> Intent:
    where = f"intents[{i}]"
    if not isinstance(raw, dict):
        raise r.fail(where, "expected a mapping")
    intent_id = r.text(raw.get("id"), f"{where}.id")
    where = f"intents[{i}] (id {intent_id})"
    if intent_id in seen:
        raise r.fail(where, "duplicate id")
    seen.add(intent_id)
    unknown_keys = set(raw) - {"id", "command", "answers", "actions", "asks", "weight"}
    if unknown_keys:
        raise r.fail(where, f"unknown key(s) {', '.join(sorted(unknown_keys))}")
    command = _command(r, raw.get("command"), where)
    answers_raw = raw.get("answers")
    if not isinstance(answers_raw, dict) or not answers_raw:
        raise r.fail(where, "'answers' must be a non-empty mapping of slot signature -> answer")
    catalog = load_catalog()
    answers: dict[str, str] = {}
    for sig, answer in answers_raw.items():
        sig = "" if sig is None else str(sig)
        parts = [p for p in sig.split("+") if p]
        if "+".join(sorted(set(parts))) != sig or not set(parts) <= KNOWN_SLOTS:
            raise r.fail(where, f"answers key {sig!r} is not a slot signature (known slots, sorted, '+'-joined)")
        text = r.answer(r.text(answer, f"{where}.answers[{sig!r}]"), f"{where}.answers[{sig!r}]",
                        frozenset(parts))
        named = {c.name for w in slash_words(text) if (c := catalog.get(w)) is not None}
        if command is not None and command not in named:
            raise r.fail(where, f"answer for {sig!r} does not name the intent's command {command}: {text!r}")
        answers[sig] = text
    weight = raw.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
        raise r.fail(where, f"weight must be a positive number, got {weight!r}")
    intent = Intent(intent_id, command, MappingProxyType(answers), weight=float(weight))
    actions = r.phrasings(raw.get("actions"), f"{where}.actions", intent)
    asks = r.phrasings(raw.get("asks"), f"{where}.asks", intent)
    if not actions and not asks:
        raise r.fail(where, "needs at least one of 'actions' or 'asks'")
    return Intent(intent_id, command, intent.answers, actions, asks, float(weight))


@lru_cache(maxsize=4)
def load_intents(path: str | Path | None = None) -> IntentSet:
    """The intents (cached). `path` defaults to the intents.yaml shipped with this package."""
    r = _Reader(Path(path) if path else INTENTS_FILE, "intents file")
    seen: set[str] = set()
    intents = tuple(_intent(r, raw, i, seen) for i, raw in enumerate(r.section("intents", list)))
    return IntentSet(version=r.doc["version"], intents=intents)


# -- phrasing ---------------------------------------------------------------------------------------------


def _slot_pools(r: _Reader) -> Mapping[str, tuple[str, ...]]:
    raw = r.section("slots", dict)
    missing = KNOWN_SLOTS - set(raw)
    if missing:
        raise r.fail("slots", f"missing pool(s) {', '.join(sorted(missing))}")
    pools = {}
    for name, values in raw.items():
        if name not in KNOWN_SLOTS:
            raise r.fail(f"slots.{name}", f"unknown slot (known: {', '.join(sorted(KNOWN_SLOTS))})")
        if isinstance(values, list):  # YAML reads "2" or "1.5" as numbers; a slot value is text
            values = [str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in values]
        items = r.texts(values, f"slots.{name}")
        long = [v for v in items if len(v) > len(_LONGEST_SLOT_VALUE)]
        if long:
            raise r.fail(f"slots.{name}", f"values over {len(_LONGEST_SLOT_VALUE)} characters: {long}")
        if len(set(items)) != len(items):
            raise r.fail(f"slots.{name}", "values repeat")
        pools[name] = items
    return MappingProxyType(pools)


def _templates(r: _Reader, key: str, placeholder: str) -> tuple[str, ...]:
    items = r.texts(r.section(key, list), key)
    for i, item in enumerate(items):
        if item.count(placeholder) != 1:
            raise r.fail(f"{key}[{i}]", f"must hold {placeholder} exactly once: {item!r}")
        # Other slots ("/{fake} {name}") are filled from the pools, as in the intents' phrasings.
        unknown = slots_of(item) - {placeholder.strip("{}")} - KNOWN_SLOTS
        if unknown:
            raise r.fail(f"{key}[{i}]", f"unknown slot(s) {', '.join(sorted(unknown))} in {item!r}")
    return items


def _fakes(r: _Reader) -> tuple[FakeCommand, ...]:
    out, seen = [], set()
    catalog = load_catalog()
    for i, raw in enumerate(r.section("fake_commands", list)):
        where = f"fake_commands[{i}]"
        if not isinstance(raw, dict):
            raise r.fail(where, "expected {fake: word, alternative: text}")
        fake = r.text(raw.get("fake"), f"{where}.fake").strip().lstrip("/").lower()
        where = f"fake_commands[{i}] (fake {fake})"
        if catalog.is_known(fake):
            raise r.fail(where, f"/{fake} is a real command")
        if fake in seen:
            raise r.fail(where, "duplicate fake command")
        seen.add(fake)
        alt = r.text(raw.get("alternative", ""), f"{where}.alternative", empty_ok=True)
        if alt.strip():
            r.answer(alt, f"{where}.alternative")
        out.append(FakeCommand(fake, alt))
    words = r.doc.get("fake_words") or []
    if not isinstance(words, list):
        raise r.fail("fake_words", "expected a list of words")
    for i, raw in enumerate(words):
        where = f"fake_words[{i}]"
        fake = r.text(raw, where).strip().lstrip("/").lower()
        if not re.fullmatch(r"[a-z][a-z0-9_]*", fake):
            raise r.fail(where, f"expected one word of letters and digits: {fake!r}")
        if catalog.is_known(fake) or fake in catalog.plain_words:
            raise r.fail(f"{where} ({fake})", f"/{fake} is a real command")
        if fake in seen:
            raise r.fail(f"{where} ({fake})", "duplicate fake command")
        seen.add(fake)
        out.append(FakeCommand(fake, "", from_word_list=True))
    return tuple(out)


def _general(r: _Reader) -> tuple[GeneralQA, ...]:
    out = []
    for i, raw in enumerate(r.doc.get("general") or []):
        where = f"general[{i}]"
        if not isinstance(raw, dict):
            raise r.fail(where, "expected {asks: [...], answer: text}")
        answer = r.answer(r.text(raw.get("answer"), f"{where}.answer"), f"{where}.answer")
        out.append(GeneralQA(r.phrasings(raw.get("asks"), f"{where}.asks", None, slots_allowed=frozenset()), answer))
    return tuple(out)


def _referring(r: _Reader, intents: IntentSet) -> tuple[Referring, ...]:
    out = []
    for i, raw in enumerate(r.doc.get("referring") or []):
        where = f"referring[{i}]"
        if not isinstance(raw, dict):
            raise r.fail(where, "expected {intent: id, history: [...], asks: [...]}")
        intent = intents.get(r.text(raw.get("intent"), f"{where}.intent"))
        if intent is None:
            raise r.fail(where, f"unknown intent {raw.get('intent')!r}")
        where = f"referring[{i}] (intent {intent.id})"
        history = r.phrasings(raw.get("history"), f"{where}.history", None, slots_allowed=_HISTORY_SLOTS)
        if not history:
            raise r.fail(where, "needs history lines")
        for j, line in enumerate(history):
            if not line.startswith("{caller}: "):
                raise r.fail(f"{where}.history[{j}]", f"must start with '{{caller}}: ': {line!r}")
        asks = tuple(a for a in r.phrasings(raw.get("asks"), f"{where}.asks", None) if a)
        for j, ask in enumerate(asks):
            for line in history:
                if signature(ask, line) not in intent.answers:
                    raise r.fail(f"{where}.asks[{j}]", f"intent {intent.id} has no answer for slots "
                                 f"{signature(ask, line) or '(none)'} ({ask!r} after {line!r})")
        if not asks:
            raise r.fail(where, "needs asks")
        out.append(Referring(intent.id, history, asks))
    return tuple(out)


def _contrasts(r: _Reader, intents: IntentSet) -> tuple[Contrast, ...]:
    out = []
    for i, raw in enumerate(r.doc.get("contrasts") or []):
        where = f"contrasts[{i}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("asks"), dict) or len(raw["asks"]) < 2:
            raise r.fail(where, "expected {name: text, asks: {intent id: [...], ...}} with two or more intents")
        name = r.text(raw.get("name"), f"{where}.name")
        where = f"contrasts[{i}] ({name})"
        asks = {}
        for intent_id, items in raw["asks"].items():
            intent = intents.get(str(intent_id))
            if intent is None:
                raise r.fail(where, f"unknown intent {intent_id!r}")
            asks[intent.id] = r.phrasings(items, f"{where}.asks.{intent.id}", intent)
        out.append(Contrast(name, MappingProxyType(asks)))
    return tuple(out)


@lru_cache(maxsize=4)
def load_phrasing(path: str | Path | None = None, intents_path: str | Path | None = None) -> Phrasing:
    """Frames, slot pools, fake commands and the rest (cached); intent ids are checked against load_intents."""
    r = _Reader(Path(path) if path else PHRASING_FILE, "phrasing file")
    intents = load_intents(intents_path)
    history = r.texts(r.section("history", list), "history")
    for i, line in enumerate(history):
        if ": " not in line or slots_of(line):
            raise r.fail(f"history[{i}]", f"expected '<shortname>: <text>' without slots: {line!r}")
    return Phrasing(
        version=r.doc["version"],
        frames=_templates(r, "frames", "{a}"),
        slots=_slot_pools(r),
        fake_commands=_fakes(r),
        fake_asks=_templates(r, "fake_asks", "{fake}"),
        explain_asks=_templates(r, "explain_asks", "{cmd}"),
        general=_general(r),
        bot_systems=r.texts(r.section("bot_systems", list), "bot_systems", empty_ok=True),
        history=history,
        referring=_referring(r, intents),
        contrasts=_contrasts(r, intents),
    )
