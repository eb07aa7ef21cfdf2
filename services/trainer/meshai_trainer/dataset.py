"""Chat-format JSONL datasets: one reader for training (first problem is fatal) and validation (all problems)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from meshai_common.errors import InvalidInput


def iter_messages(path: Path) -> Iterator[tuple[int, list[dict[str, str]] | None, str | None]]:
    """(line number, messages, problem) for every non-empty line; exactly one of messages/problem is set."""
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield n, None, f"{path}:{n}: not JSON ({exc.msg})"
                continue
            msgs = row.get("messages") if isinstance(row, dict) else None
            if not isinstance(msgs, list) or len(msgs) < 2 or not isinstance(msgs[-1], dict) \
                    or msgs[-1].get("role") != "assistant":
                yield n, None, f"{path}:{n}: expected 'messages' ending with an assistant turn"
                continue
            yield n, msgs, None


def read_messages(path: Path) -> list[list[dict[str, str]]]:
    rows = []
    for _, msgs, problem in iter_messages(path):
        if problem:
            raise InvalidInput(problem)
        rows.append(msgs)
    if not rows:
        raise InvalidInput(f"{path}: no examples")
    return rows


def dataset_problems(path: Path, limit: int = 20) -> list[str]:
    if not Path(path).is_file():
        return [f"{path} does not exist"]
    out = []
    for _, _, problem in iter_messages(path):
        if problem:
            out.append(problem)
            if len(out) >= limit:
                out.append(f"{path}: more problems not shown")
                break
    return out
