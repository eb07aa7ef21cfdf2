"""Chat datasets in the formats fine-tuners use, read through Hugging Face `datasets`.

A dataset is a JSONL file, a Parquet file, or a folder written by `Dataset.save_to_disk` (a `DatasetDict`
folder gives its `train` split). Each row holds either `messages` (OpenAI style: `role`/`content` turns) or
sharegpt `conversations` (`from`: human/gpt/system, `value`), and ends with the assistant's turn, the one
the loss is taken on. Every row is checked before training, JSONL line by line, so a bad row is an error
naming the file, the line (or row) and the field. Tokenizing runs as `Dataset.map`, cached in the run's work
directory, in several processes when the data is large.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterator
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from meshai_common.errors import InvalidInput
from meshai_trainer.batches import IGNORE, Example, encode

Messages = list[dict[str, str]]
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system"}
# Below this many rows one process tokenizes faster than starting several.
PARALLEL_FROM_ROWS = 10_000


def conversation_of(row: Any) -> tuple[Messages | None, str | None]:
    """(role/content turns, None) for a valid row, else (None, the problem naming the field)."""
    if not isinstance(row, dict):
        return None, "expected an object with 'messages' or 'conversations'"
    if row.get("messages") is not None:
        name, role_key, content_key, roles = "messages", "role", "content", None
    elif row.get("conversations") is not None:
        name, role_key, content_key, roles = "conversations", "from", "value", SHAREGPT_ROLES
    else:
        return None, "expected 'messages' (role/content turns) or sharegpt 'conversations' (from/value turns)"
    turns = row[name]
    if not isinstance(turns, list):
        return None, f"{name}: expected a list of turns"
    out: Messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            return None, f"{name}[{i}]: expected an object with {role_key!r} and {content_key!r}"
        role, content = turn.get(role_key), turn.get(content_key)
        if roles is not None:
            if role not in roles:
                return None, f"{name}[{i}].{role_key}: {role!r} is not one of {', '.join(roles)}"
            role = roles[role]
        elif not isinstance(role, str) or not role:
            return None, f"{name}[{i}].{role_key}: expected a role name"
        if not isinstance(content, str):
            return None, f"{name}[{i}].{content_key}: expected a string"
        out.append({"role": role, "content": content})
    if len(out) < 2 or out[-1]["role"] != "assistant":
        return None, f"expected '{name}' ending with an assistant turn"
    return out, None


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Any, str | None]]:
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield f"{path}:{n}", json.loads(line), None
            except json.JSONDecodeError as exc:
                yield f"{path}:{n}", None, f"not JSON ({exc.msg})"


def open_dataset(path: Path) -> Any:
    """A Parquet file or a save_to_disk folder (memory-mapped) as a `datasets.Dataset`."""
    import datasets

    path = Path(path)
    try:
        if path.is_dir():
            found = datasets.load_from_disk(str(path))
        else:
            import pyarrow.parquet as pq
            from datasets.table import InMemoryTable

            # Read directly, not through from_parquet: that also writes a copy into the user's HF cache.
            found = datasets.Dataset(InMemoryTable(pq.read_table(str(path))))
    except (FileNotFoundError, ValueError, OSError) as exc:
        kind = "a dataset folder written by save_to_disk" if path.is_dir() else "a readable Parquet file"
        raise InvalidInput(f"{path}: not {kind} ({exc})") from None
    if isinstance(found, datasets.DatasetDict):
        if "train" in found:
            return found["train"]
        if len(found) != 1:
            raise InvalidInput(f"{path}: a DatasetDict with splits {sorted(found)}; keep one or name one 'train'")
        return next(iter(found.values()))
    return found


def _rows(path: Path) -> Iterator[tuple[str, Any, str | None]]:
    path = Path(path)
    if path.is_dir() or path.suffix == ".parquet":
        for i, row in enumerate(open_dataset(path)):
            yield f"{path}: row {i}", row, None
    else:
        yield from _jsonl_rows(path)


def iter_messages(path: Path) -> Iterator[tuple[str, Messages | None, str | None]]:
    """(where, messages, problem) for every row; `where` is `file:line` (JSONL) or `file: row N`; exactly one
    of messages/problem is set, and the problem starts with `where`."""
    if not Path(path).exists():
        raise InvalidInput(f"{path} does not exist")
    for where, row, problem in _rows(path):
        if problem is None:
            msgs, problem = conversation_of(row)
            if msgs is not None:
                yield where, msgs, None
                continue
        yield where, None, f"{where}: {problem}"


def read_messages(path: Path) -> list[Messages]:
    """Every conversation in `path` as role/content turns; the first bad row is an error."""
    rows = []
    for _, msgs, problem in iter_messages(path):
        if problem:
            raise InvalidInput(problem)
        rows.append(msgs)
    if not rows:
        raise InvalidInput(f"{path}: no examples")
    return rows


def dataset_problems(path: Path, limit: int = 20) -> list[str]:
    """Every problem with a dataset (up to `limit`), for `meshai train validate`."""
    if not Path(path).exists():
        return [f"{path} does not exist"]
    out = []
    try:
        for _, _, problem in iter_messages(path):
            if problem:
                out.append(problem)
                if len(out) >= limit:
                    out.append(f"{path}: more problems not shown")
                    break
    except InvalidInput as exc:
        out.append(str(exc))
    return out


def _encode_row(row: dict[str, Any], tok: Any, max_len: int) -> dict[str, list[int]]:
    return asdict(encode(tok, row["messages"], max_len))


def _cache_key(rows: list[Messages], tok: Any, max_len: int) -> str:
    """What the tokenized rows depend on: the conversations, the tokenizer and template, the length cap."""
    h = hashlib.sha256()
    h.update(json.dumps([getattr(tok, "name_or_path", ""), len(tok), getattr(tok, "chat_template", None),
                         max_len]).encode())
    for msgs in rows:
        h.update(json.dumps(msgs, sort_keys=True).encode())
    return h.hexdigest()[:24]


def tokenize(rows: list[Messages], tok: Any, max_len: int, cache_dir: Path | None = None,
             num_proc: int | None = None) -> list[Example]:
    """`encode` over every conversation with `Dataset.map`: cached as Arrow files in `cache_dir` (a run that
    resumes reuses them), in `num_proc` processes (None: 1 below PARALLEL_FROM_ROWS rows, else one per core)."""
    import datasets

    if not rows:
        return []
    if num_proc is None:
        num_proc = 1 if len(rows) < PARALLEL_FROM_ROWS else min(os.cpu_count() or 1, 8)
    key = _cache_key(rows, tok, max_len)
    cache_file = None
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        cache_file = str(Path(cache_dir) / f"tokenized-{key}.arrow")
    datasets.disable_progress_bars()  # the trainer reports its own progress
    conversations = datasets.Dataset.from_list([{"messages": m} for m in rows])
    encoded = conversations.map(partial(_encode_row, tok=tok, max_len=max_len), remove_columns=["messages"],
                                num_proc=num_proc if num_proc > 1 else None, cache_file_name=cache_file,
                                new_fingerprint=key, load_from_cache_file=cache_file is not None)
    cols = encoded.to_dict()
    return [Example(ids, labels) for ids, labels in zip(cols["ids"], cols["labels"], strict=True)]


def split_val(rows: list[Any], size: float, seed: int) -> tuple[list[Any], list[Any]]:
    """Hold out `val_set_size` (a fraction, or a count when >= 1) of the training rows, reproducibly."""
    n = int(size) if size >= 1 else max(1, round(len(rows) * size))
    if n >= len(rows):
        raise InvalidInput(f"val_set_size={size} leaves no training examples (the dataset has {len(rows)})")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[:n])
    return [r for i, r in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)]


def trainable(examples: list[Example]) -> list[Example]:
    # An example whose answer was cut off by sequence_len has no target left: it would only add a NaN.
    return [e for e in examples if any(t != IGNORE for t in e.labels[1:])]
