"""The data service's held-back test split as scorable items: questions the model never trained on.

Each JSONL row is a chat (`messages`: system/user/assistant) or ShareGPT (`conversations`: system/human/gpt)
record, as meshai_data.prepare.to_record writes it. One row becomes one item:

- `prompt` is the user turn exactly as trained (it may be a whole Mesh-Master prompt: ask it as it is);
  `question` and `context` are its parts (meshai_common.prompts.parse_meshmaster_prompt), `system` the row's
  system turn, `gold` the reference answer.
- A question naming a slash command that does not exist becomes a hallucination item (`fake`: that word).
- Otherwise a commands item: `accept` is the gold answer's first command (its aliases count too). When the gold
  answer names no command (relay form, facts, greetings), the item is `no_command`: it passes when the reply
  invents no command and names at most two. That checks restraint, not knowledge; the suites check the rest.

Every item carries its `area`, so `scoring.score` reads it without being told.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from meshai_common.errors import InvalidInput
from meshai_common.meshmaster import unknown_slash_words
from meshai_common.prompts import parse_meshmaster_prompt
from meshai_evaluator.scoring import first_command

_ROLES = {"system": "system", "user": "user", "assistant": "assistant", "human": "user", "gpt": "assistant"}


def _turns(row: dict[str, Any], where: str) -> dict[str, str]:
    if isinstance(row.get("messages"), list):
        raw, role_key, text_key = row["messages"], "role", "content"
    elif isinstance(row.get("conversations"), list):
        raw, role_key, text_key = row["conversations"], "from", "value"
    else:
        raise InvalidInput(f"{where}: expected 'messages' (chat) or 'conversations' (sharegpt)")
    turns: dict[str, str] = {}
    for j, turn in enumerate(raw):
        if not isinstance(turn, dict) or not isinstance(turn.get(text_key), str):
            raise InvalidInput(f"{where}: turn {j} needs a string {text_key!r}")
        role = _ROLES.get(str(turn.get(role_key)))
        if role is None:
            raise InvalidInput(f"{where}: turn {j} has an unknown {role_key} {turn.get(role_key)!r}")
        turns.setdefault(role, turn[text_key])  # the first of each: the rows hold one exchange
    for role in ("user", "assistant"):
        if not turns.get(role, "").strip():
            raise InvalidInput(f"{where}: no {role} turn")
    return turns


def row_item(row: dict[str, Any], item_id: str, where: str = "") -> dict[str, Any]:
    """One test-split row as a scorable item (see the module doc)."""
    turns = _turns(row, where or item_id)
    prompt, gold = turns["user"], turns["assistant"]
    parsed = parse_meshmaster_prompt(prompt)
    question = parsed.question if parsed else prompt.strip()
    item: dict[str, Any] = {
        "id": item_id, "question": question, "context": list(parsed.context) if parsed else [],
        "prompt": prompt, "system": turns.get("system", ""), "gold": gold,
        **{k: row[k] for k in ("intent", "source", "group") if k in row},
    }
    invented = unknown_slash_words(question)
    if invented:
        return {**item, "area": "hallucination", "fake": invented[0].lstrip("/").lower()}
    gold_command = first_command(gold)
    if gold_command is None:
        return {**item, "area": "commands", "no_command": True}
    return {**item, "area": "commands", "accept": [gold_command]}


def test_split_items(path: Path) -> list[dict[str, Any]]:
    """Every row of a test-split JSONL file as an item; a bad row fails naming the file and line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read the test split: {exc}") from exc
    items = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{where}: not JSON: {exc.msg}") from exc
        if not isinstance(row, dict):
            raise InvalidInput(f"{where}: expected a JSON object")
        items.append(row_item(row, f"{path.stem}:{n}", where))
    return items


def test_split_questions(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(area, item) for every row, the shape suite.questions gives for a suite."""
    return [(item["area"], item) for item in test_split_items(path)]


# Loaders, not pytest tests (their names start with "test_").
test_split_items.__test__ = False  # type: ignore[attr-defined]
test_split_questions.__test__ = False  # type: ignore[attr-defined]
