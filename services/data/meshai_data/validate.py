"""Check chat JSONL datasets (ours or anyone's) line by line, and sample them for a human to read.

Problems found, each with file and line: not JSON / wrong shape (chat `messages` or ShareGPT
`conversations`), empty turns, a conversation that does not end with the assistant, answers over the
320-byte radio budget, answers naming commands Mesh-Master does not have, duplicate questions within a file,
and leakage: a question (or template group) of one given file appearing in another.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from meshai_common.meshmaster import unknown_slash_words
from meshai_common.radio import budget_bytes, utf8_len
from meshai_data.normalize import near_dup_key

ANSWER_BUDGET = budget_bytes()  # 2 chunks x 160 bytes
_ROLE_MAP = {"human": "user", "gpt": "assistant", "system": "system", "user": "user", "assistant": "assistant"}


@dataclass(frozen=True)
class Problem:
    file: str
    line: int  # 1-based; 0 for the file as a whole
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass(frozen=True)
class Turn:
    role: str
    content: str


def parse_line(text: str) -> tuple[dict | None, list[Turn] | None, str | None]:
    """(record, turns, None) for a well-formed line, else (record-or-None, None, why)."""
    try:
        rec = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, None, f"not JSON: {exc.msg} at column {exc.colno}"
    if not isinstance(rec, dict):
        return None, None, "expected a JSON object per line"
    if "messages" in rec:
        raw, role_key, text_key = rec["messages"], "role", "content"
    elif "conversations" in rec:
        raw, role_key, text_key = rec["conversations"], "from", "value"
    else:
        return rec, None, "missing 'messages' (or ShareGPT 'conversations')"
    if not isinstance(raw, list) or not raw:
        return rec, None, "'messages' must be a non-empty list"
    turns = []
    for i, t in enumerate(raw):
        if not isinstance(t, dict):
            return rec, None, f"turn {i}: expected an object"
        role, content = t.get(role_key), t.get(text_key)
        if role not in _ROLE_MAP:
            return rec, None, f"turn {i}: unknown role {role!r}"
        if not isinstance(content, str):
            return rec, None, f"turn {i}: '{text_key}' must be a string"
        turns.append(Turn(_ROLE_MAP[role], content))
    return rec, turns, None


def _check_turns(turns: list[Turn]) -> list[str]:
    out = []
    body = turns[1:] if turns[0].role == "system" else turns
    if not body:
        return ["no user/assistant turns"]
    for i, t in enumerate(turns):
        if not t.content.strip():
            out.append(f"turn {i} ({t.role}) is empty")
    expected = ["user", "assistant"] * len(body)
    if [t.role for t in body] != expected[: len(body)] or body[-1].role != "assistant":
        out.append("turns must alternate user/assistant after an optional system turn and end with the assistant")
    for t in body:
        if t.role != "assistant":
            continue
        size = utf8_len(t.content)
        if size > ANSWER_BUDGET:
            out.append(f"answer is {size} bytes, over the {ANSWER_BUDGET}-byte radio budget")
        bad = unknown_slash_words(t.content)
        if bad:
            out.append(f"answer names unknown command(s): {', '.join(bad)}")
    return out


def _question(turns: list[Turn]) -> str:
    users = [t.content for t in turns if t.role == "user"]
    return users[-1] if users else ""


def validate(paths: Sequence[str | Path]) -> list[Problem]:
    """Every problem in the given files, in file/line order. Leakage is checked across all of them."""
    problems: list[Problem] = []
    first_seen: dict[str, tuple[str, int]] = {}  # question key -> (file, line)
    group_seen: dict[str, str] = {}  # group -> file
    for p in paths:
        path = Path(p)
        name = str(path)
        local: dict[str, int] = {}
        count = 0
        try:
            with open(path, encoding="utf-8") as handle:
                lines = list(handle)
        except UnicodeDecodeError as exc:
            problems.append(Problem(name, 0, f"not UTF-8 text (byte {exc.start})"))
            continue
        except OSError as exc:
            problems.append(Problem(name, 0, f"cannot read: {exc.strerror or exc}"))
            continue
        for n, text in enumerate(lines, 1):
            if not text.strip():
                problems.append(Problem(name, n, "blank line"))
                continue
            count += 1
            rec, turns, why = parse_line(text)
            if why or turns is None:
                problems.append(Problem(name, n, why or "unreadable"))
                continue
            problems.extend(Problem(name, n, msg) for msg in _check_turns(turns))
            key = near_dup_key(_question(turns))
            if not key:
                continue
            if key in local:
                problems.append(Problem(name, n, f"duplicate question (same as line {local[key]})"))
            else:
                local[key] = n
                other = first_seen.get(key)
                if other and other[0] != name:
                    problems.append(Problem(name, n, f"question also in {other[0]}:{other[1]} (split leakage)"))
                else:
                    first_seen.setdefault(key, (name, n))
            group = rec.get("group") if isinstance(rec, dict) else None
            if isinstance(group, str) and group:
                owner = group_seen.setdefault(group, name)
                if owner != name:
                    problems.append(Problem(name, n, f"template group {group!r} also in {owner} (split leakage)"))
        if count == 0:
            problems.append(Problem(name, 0, "file holds no examples"))
    return problems


def inspect(path: str | Path, count: int = 5, seed: int = 0) -> list[dict]:
    """`count` random examples (stable for a seed) as {line, intent, source, user, assistant}."""
    path = Path(path)
    with open(path, encoding="utf-8") as fh:
        lines = [(n, t) for n, t in enumerate(fh, 1) if t.strip()]
    picked = sorted(random.Random(seed).sample(lines, min(count, len(lines))))
    out = []
    for n, text in picked:
        rec, turns, why = parse_line(text)
        if turns is None:
            out.append({"line": n, "error": why})
            continue
        out.append({
            "line": n,
            "intent": rec.get("intent") if rec else None,
            "source": rec.get("source") if rec else None,
            "user": _question(turns),
            "assistant": next((t.content for t in reversed(turns) if t.role == "assistant"), ""),
        })
    return out


def summarize(problems: Iterable[Problem]) -> dict[str, int]:
    """Problems per file (for a one-line summary)."""
    out: dict[str, int] = {}
    for p in problems:
        out[p.file] = out.get(p.file, 0) + 1
    return out
