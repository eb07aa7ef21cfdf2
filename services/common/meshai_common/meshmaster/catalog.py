"""Mesh-Master's command catalog and facts, and the slash-word check built on them.

`unknown_slash_words` is the hallucination detector: training data validation and the evaluator both use it,
so what counts as a command is defined once, here. A command is "/" followed by a letter, at the start of a
word: "2/3", "km/h", "and/or", "w/o", "http://x.org/docs", "~/notes", "</b>" and "/dev/tty" hold no command.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from meshai_common.errors import ConfigError

HERE = Path(__file__).resolve().parent
COMMANDS_FILE = HERE / "commands.yaml"
FACTS_FILE = HERE / "facts.yaml"

# "/" + letter, not glued to a preceding word, path, URL, number or tag, and not followed by another "/"
# (a path). The tail takes letters, digits and "_" so "/m2" is one (unknown) word, not "/m".
# A reply names at most this many commands: one to send, perhaps one to follow up. A list of commands is a menu,
# which /help and /menu already are; the evaluator fails a reply that names more.
MAX_REPLY_COMMANDS = 2
_SLASH_WORD = re.compile(r"(?<![\w/\\.:~<@#-])/([A-Za-z][A-Za-z0-9_]*)(?![\w/])")
_NAME = re.compile(r"^/[a-z][a-z0-9_]*$")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Command:
    name: str  # "/nodes"
    area: str
    usage: str
    description: str
    aliases: tuple[str, ...] = ()
    dm_only: bool = False
    admin: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


@dataclass(frozen=True)
class Catalog:
    version: int
    commands: tuple[Command, ...]
    plain_words: Mapping[str, str]  # word -> what the bot does
    relay_usage: str
    relay_description: str
    _index: Mapping[str, Command] = field(repr=False, default_factory=dict)

    def get(self, word: str) -> Command | None:
        """The command a name or alias belongs to ("/checkmail" -> /c); case-insensitive, slash optional."""
        return self._index.get(_canon(word))

    def is_known(self, word: str) -> bool:
        return _canon(word) in self._index

    @property
    def names(self) -> frozenset[str]:
        """Every name and alias, with its slash."""
        return frozenset(self._index)


def _canon(word: str) -> str:
    w = word.strip().lower()
    return w if w.startswith("/") else "/" + w


def _fail(path: Path, where: str, msg: str) -> ConfigError:
    return ConfigError(f"{path}: {where}: {msg}")


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader (C version when built)


def _parse_catalog(path: Path) -> Catalog:
    try:
        doc = _yaml(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the command catalog: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("version"), int):
        raise ConfigError(f"{path}: expected a mapping with an integer 'version'")
    entries = doc.get("commands")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: 'commands' must be a non-empty list")
    commands: list[Command] = []
    index: dict[str, Command] = {}
    for i, raw in enumerate(entries):
        where = f"commands[{i}]"
        if not isinstance(raw, dict):
            raise _fail(path, where, "expected a mapping")
        for key in ("name", "area", "usage", "description"):
            if not isinstance(raw.get(key), str) or not raw[key].strip():
                raise _fail(path, where, f"'{key}' must be a non-empty string")
        aliases = raw.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise _fail(path, where, "'aliases' must be a list of strings")
        cmd = Command(
            name=raw["name"], area=raw["area"], usage=raw["usage"], description=raw["description"],
            aliases=tuple(aliases), dm_only=bool(raw.get("dm_only", False)), admin=bool(raw.get("admin", False)),
        )
        for name in cmd.names:
            if not _NAME.match(name):
                raise _fail(path, where, f"{name!r} is not a command name ('/' + lower-case letters)")
            if name in index:
                raise _fail(path, where, f"{name} is already defined by {index[name].name}")
            index[name] = cmd
        if not cmd.usage.startswith(cmd.name):
            raise _fail(path, where, f"usage {cmd.usage!r} must start with {cmd.name}")
        commands.append(cmd)
    words = doc.get("plain_words", [])
    if not isinstance(words, list):
        raise ConfigError(f"{path}: 'plain_words' must be a list")
    plain = {}
    for i, w in enumerate(words):
        if not isinstance(w, dict) or not isinstance(w.get("word"), str):
            raise _fail(path, f"plain_words[{i}]", "expected {word: str, description: str}")
        plain[w["word"]] = str(w.get("description", ""))
    relay = doc.get("relay") or {}
    return Catalog(
        version=doc["version"], commands=tuple(commands), plain_words=MappingProxyType(plain),
        relay_usage=str(relay.get("usage", "<shortname> <message>")),
        relay_description=str(relay.get("description", "")), _index=MappingProxyType(index),
    )


@lru_cache(maxsize=4)
def load_catalog(path: str | Path | None = None) -> Catalog:
    """The command catalog (cached). `path` defaults to the commands.yaml shipped with this package."""
    return _parse_catalog(Path(path) if path else COMMANDS_FILE)


def is_known_command(word: str) -> bool:
    """True for a real command or alias: "/nodes", "nodes", "/CheckMail". Plain words (ping) are not commands."""
    return load_catalog().is_known(word)


def slash_word_matches(text: str) -> Iterator[re.Match[str]]:
    """Where each command-like word stands in text (group 1: the word without its slash)."""
    return _SLASH_WORD.finditer(text or "")


def slash_words(text: str) -> list[str]:
    """Every command-like word in text, as written and in order ("/nodes", "/Relay"), repeats included."""
    return ["/" + m.group(1) for m in slash_word_matches(text)]


def named_command_names(text: str) -> list[str]:
    """The distinct real commands text names, as canonical names, in order of appearance."""
    catalog = load_catalog()
    return list(dict.fromkeys(c.name for w in slash_words(text) if (c := catalog.get(w)) is not None))


def unknown_slash_words(text: str, extra_known: Iterable[str] = ()) -> list[str]:
    """Slash words in text that are not real commands (first occurrence of each, in order).

    An empty list means the text invents no command. `extra_known` admits more names (e.g. a deployment's
    custom commands), with or without the slash.
    """
    catalog = load_catalog()
    extra = {_canon(w) for w in extra_known}
    out: list[str] = []
    seen: set[str] = set()
    for word in slash_words(text):
        key = word.lower()
        if key in seen or catalog.is_known(key) or key in extra:
            continue
        seen.add(key)
        out.append(word)
    return out


# -- facts ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FactItem:
    asks: tuple[str, ...]
    answer: str


@dataclass(frozen=True)
class Topic:
    id: str
    title: str
    concepts: tuple[tuple[str, ...], ...]  # each concept: alternatives, any one counts
    items: tuple[FactItem, ...]


@dataclass(frozen=True)
class Facts:
    version: int
    topics: Mapping[str, Topic]


def _strs(value: Any, path: Path, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise _fail(path, where, "expected a non-empty list")
    return tuple(str(v) for v in value)


@lru_cache(maxsize=4)
def load_facts(path: str | Path | None = None) -> Facts:
    """The Meshtastic facts (cached). Every slash word in an answer must be a real command."""
    p = Path(path) if path else FACTS_FILE
    try:
        doc = _yaml(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{p}: cannot read the facts file: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("version"), int) or not isinstance(doc.get("topics"), dict):
        raise ConfigError(f"{p}: expected a mapping with an integer 'version' and a 'topics' mapping")
    topics = {}
    for tid, raw in doc["topics"].items():
        where = f"topics.{tid}"
        if not isinstance(raw, dict):
            raise _fail(p, where, "expected a mapping")
        items = []
        for j, it in enumerate(raw.get("items") or []):
            if not isinstance(it, dict) or not isinstance(it.get("answer"), str):
                raise _fail(p, f"{where}.items[{j}]", "expected {asks: [...], answer: str}")
            bad = unknown_slash_words(it["answer"])
            if bad:
                raise _fail(p, f"{where}.items[{j}]", f"answer uses unknown command(s) {', '.join(bad)}")
            items.append(FactItem(asks=_strs(it.get("asks"), p, f"{where}.items[{j}].asks"), answer=it["answer"]))
        if not items:
            raise _fail(p, where, "needs at least one item")
        concepts = tuple(tuple(str(a).lower() for a in c) for c in raw.get("concepts") or [])
        topics[str(tid)] = Topic(id=str(tid), title=str(raw.get("title", tid)), concepts=concepts, items=tuple(items))
    return Facts(version=doc["version"], topics=MappingProxyType(topics))
