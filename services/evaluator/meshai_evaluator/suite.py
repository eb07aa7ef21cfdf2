"""Evaluation suites shipped with the evaluator (YAML under suites/), loaded and checked without any model code.

`field` (the default) asks the way people on a mesh type; `public` is the training guide's 19 questions. The
schema is documented at the top of suites/field.yaml; every mistake is reported with the file, the section,
the item's index and its id.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from meshai_common.errors import InvalidInput, NotFound
from meshai_common.meshmaster import load_catalog

SUITES = Path(__file__).resolve().parent / "suites"
DEFAULT_SUITE = "field"
SECTIONS = ("commands", "hallucination", "technical")

_COMMON_KEYS = {"id", "question", "context", "note"}
_KEYS = {
    "commands": _COMMON_KEYS | {"accept", "accept_regex", "allow", "relay", "no_command"},
    "hallucination": _COMMON_KEYS | {"fake", "allow"},
    "technical": _COMMON_KEYS | {"concepts", "required", "min_concepts", "numbers", "allow"},
}
_CONTEXT_LINE = re.compile(r"^[^\s:][^:\n]{0,38}: \S.*$")
_WORD = re.compile(r"^[a-z][a-z0-9_]*$")


def suite_names() -> list[str]:
    """The suites shipped with the evaluator."""
    return sorted(p.stem for p in SUITES.glob("*.yaml"))


def suite_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    path = SUITES / f"{name_or_path}.yaml"
    if not path.is_file():
        raise NotFound(f"no evaluation suite {name_or_path!r} (shipped: {', '.join(suite_names())})")
    return path


def load_suite(name_or_path: str = DEFAULT_SUITE) -> dict[str, Any]:
    """A shipped suite by name, or a suite file by path, checked against the schema."""
    path = suite_path(name_or_path)
    try:
        suite = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"{path}: cannot read the suite: {exc}") from exc
    validate_suite(suite, path)
    return suite


def validate_suite(suite: Any, path: Path | str) -> None:
    """Raise InvalidInput naming the file, section, index and id of the first problem found."""
    if not isinstance(suite, dict):
        raise InvalidInput(f"{path}: expected a mapping with name, version and the sections {', '.join(SECTIONS)}")
    if "version" in suite and not isinstance(suite["version"], int):
        raise InvalidInput(f"{path}: 'version' must be an integer")
    seen: dict[str, str] = {}
    for section in SECTIONS:
        items = suite.get(section)
        if not isinstance(items, list) or not items:
            raise InvalidInput(f"{path}: section {section!r} must be a non-empty list")
        for i, item in enumerate(items):
            where = f"{path}: {section}[{i}]"
            if not isinstance(item, dict):
                raise InvalidInput(f"{where}: expected a mapping")
            if isinstance(item.get("id"), str) and item["id"].strip():
                where += f" (id {item['id']})"
            problem = _item_problem(section, item)
            if problem:
                raise InvalidInput(f"{where}: {problem}")
            if item["id"] in seen:
                raise InvalidInput(f"{where}: id already used by {seen[item['id']]}")
            seen[item["id"]] = f"{section}[{i}]"


def _strings(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) and v.strip() for v in value)


def _scalar_ok(term: Any) -> bool:
    if isinstance(term, str):
        return bool(term.strip())
    return isinstance(term, (int, float)) and not isinstance(term, bool)


def _has_bool(value: Any) -> bool:
    return isinstance(value, bool) or isinstance(value, list) and any(_has_bool(v) for v in value)


def _term_ok(term: Any) -> bool:
    """A term: a string or number, or a non-empty list of them (alternatives)."""
    if isinstance(term, list):
        return bool(term) and all(_scalar_ok(t) for t in term)
    return _scalar_ok(term)


def _item_problem(section: str, item: dict[str, Any]) -> str | None:
    unknown = sorted(set(item) - _KEYS[section])
    if unknown:
        return f"unknown field(s) {', '.join(unknown)} (allowed: {', '.join(sorted(_KEYS[section]))})"
    for key in ("id", "question"):
        if not isinstance(item.get(key), str) or not item[key].strip():
            return f"needs a non-empty string {key!r}"
    context = item.get("context")
    if context is not None:
        if not _strings(context):
            return "'context' must be a non-empty list of \"<shortname>: <text>\" lines"
        bad = next((line for line in context if not _CONTEXT_LINE.match(line)), None)
        if bad is not None:
            return f"context line {bad!r} is not \"<shortname>: <text>\""
    if "allow" in item and not _strings(item["allow"]):
        return "'allow' must be a list of slash words"
    return {"commands": _command_problem, "hallucination": _fake_problem, "technical": _technical_problem}[section](item)


def _command_problem(item: dict[str, Any]) -> str | None:
    catalog = load_catalog()
    if not any(item.get(k) for k in ("accept", "accept_regex", "relay", "no_command")):
        return "needs 'accept' (commands or plain words), 'relay' (a shortname or '*') or 'accept_regex'"
    if "accept" in item:
        if not _strings(item["accept"]):
            return "'accept' must be a non-empty list of command names or plain words"
        for name in item["accept"]:
            if catalog.get(name) is None and name not in catalog.plain_words:
                return f"'accept' names {name!r}, which is neither a command in the catalog nor a plain word"
    if "accept_regex" in item:
        if not _strings(item["accept_regex"]):
            return "'accept_regex' must be a non-empty list of regexes"
        for rx in item["accept_regex"]:
            try:
                re.compile(rx)
            except re.error as exc:
                return f"'accept_regex' {rx!r} does not compile: {exc}"
    relay = item.get("relay")
    if relay is not None and (not isinstance(relay, str) or not re.fullmatch(r"\*|[A-Za-z0-9][\w-]{0,9}", relay)):
        return f"'relay' must be a shortname (letters, digits, up to 10) or '*', got {relay!r}"
    if "no_command" in item and not isinstance(item["no_command"], bool):
        return "'no_command' must be true or false"
    return None


def _fake_problem(item: dict[str, Any]) -> str | None:
    fake = item.get("fake")
    if not isinstance(fake, str) or not _WORD.match(fake.lstrip("/").lower()):
        return "needs 'fake': the invented command word (letters and digits)"
    catalog = load_catalog()
    if catalog.get(fake) is not None or fake.lstrip("/").lower() in catalog.plain_words:
        return f"'fake' {fake!r} is a real command or plain word"
    return None


def _technical_problem(item: dict[str, Any]) -> str | None:
    concepts = item.get("concepts")
    if not isinstance(concepts, list) or not concepts or not all(isinstance(g, list) and _term_ok(g) for g in concepts):
        hint = " (quote yes/no/on/off: YAML reads them as true/false)" if _has_bool(concepts) else ""
        return f"'concepts' must be a non-empty list of groups, each a non-empty list of alternatives{hint}"
    required = item.get("required", [])
    if not isinstance(required, list) or not all(_term_ok(t) for t in required):
        hint = " (quote yes/no/on/off: YAML reads them as true/false)" if _has_bool(required) else ""
        return f"'required' must be a list of terms (a term: a string, or a list of alternatives){hint}"
    if "min_concepts" in item:
        n = item["min_concepts"]
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= len(concepts):
            return f"'min_concepts' must be an integer from 1 to {len(concepts)}, got {n!r}"
    if "numbers" in item and not (isinstance(item["numbers"], list) and all(_term_ok(t) for t in item["numbers"])):
        return "'numbers' must be a list of numbers"
    return None


def questions(suite: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(area, item) for every question, in a fixed order."""
    return [(area, item) for area in SECTIONS for item in suite[area]]


def suite_prompts(name: str = DEFAULT_SUITE) -> list[str]:
    """The suite's question texts: the data service drops any training example asking one of them."""
    return [item["question"] for _, item in questions(load_suite(name))]


def all_suite_questions() -> list[str]:
    """Every shipped suite's question texts, each once (for decontaminating training data)."""
    return list(dict.fromkeys(q for name in suite_names() for q in suite_prompts(name)))
