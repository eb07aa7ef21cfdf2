"""Examples and batches: the chat template, assistant-only labels, length-bucketed or packed rows.

A batch is a list of rows and a row is a list of example indices: one example per row (length-bucketed
batches), or several (sample packing). Batch orders are plain lists, so a checkpoint stores them as JSON.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from typing import Any

from meshai_common.errors import InvalidInput

IGNORE = -100

# Axolotl's `chat_template` names we ship; "tokenizer_default" (or no key) keeps the model's own template.
CHAT_TEMPLATES = {
    "chatml": (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
        "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
    "llama3": (
        "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
        "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
    ),
}


@dataclass
class Example:
    ids: list[int]
    labels: list[int]


@dataclass
class Batch:
    ids: Any
    labels: Any
    mask: Any  # 2D padding mask; None for packed rows (position ids carry the example boundaries)
    positions: Any  # None unless packed
    real: int  # tokens that are not padding
    size: int  # tokens in the tensor, padding included


def set_chat_template(tok: Any, name: str | None, jinja: str | None = None) -> None:
    """Apply the config's `chat_template` to the tokenizer; it is saved with the merged model."""
    if name in (None, "tokenizer_default"):
        if not getattr(tok, "chat_template", None):
            raise InvalidInput("chat_template: the tokenizer has no chat template; set chat_template: chatml")
        return
    if name == "jinja":
        if not jinja:
            raise InvalidInput("chat_template: jinja needs chat_template_jinja")
        tok.chat_template = jinja
        return
    if name not in CHAT_TEMPLATES:
        raise InvalidInput(f"chat_template: unknown {name!r} (known: tokenizer_default, jinja, "
                           f"{', '.join(sorted(CHAT_TEMPLATES))})")
    tok.chat_template = CHAT_TEMPLATES[name]


def encode(tok: Any, messages: list[dict[str, str]], max_len: int) -> Example:
    """Chat template applied; loss only on the final assistant turn (its end-of-turn token included)."""
    prompt = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise InvalidInput("the chat template does not render the prompt as a prefix of the conversation")
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    a_ids = tok(full[len(prompt):], add_special_tokens=False)["input_ids"]
    ids = (p_ids + a_ids)[:max_len]
    labels = ([IGNORE] * len(p_ids) + a_ids)[:max_len]
    return Example(ids, labels)


def make_batches(examples: list[Example], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffle, sort by length inside windows of 8 batches, cut into batches, shuffle the batches."""
    order = list(range(len(examples)))
    rng.shuffle(order)
    window = batch_size * 8
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: len(examples[i].ids))
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def pack_rows(examples: list[Example], seq_len: int, rng: random.Random) -> list[list[int]]:
    """Best-fit decreasing: each example goes to the fullest row it still fits in, longest first.

    Equal lengths keep a shuffled order (the sort is stable), so rows differ from epoch to epoch.
    """
    order = list(range(len(examples)))
    rng.shuffle(order)
    order.sort(key=lambda i: -len(examples[i].ids))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (tokens still free, row), sorted
    for i in order:
        n = len(examples[i].ids)
        at = bisect.bisect_left(free, (n, -1))
        if at < len(free):
            left, row = free.pop(at)
            rows[row].append(i)
        else:
            left, row = seq_len, len(rows)
            rows.append([i])
        if left - n > 0:
            bisect.insort(free, (left - n, row))
    rng.shuffle(rows)
    return rows


def packed_batches(examples: list[Example], seq_len: int, rows_per_batch: int,
                   rng: random.Random) -> list[list[list[int]]]:
    rows = pack_rows(examples, seq_len, rng)
    return [rows[i:i + rows_per_batch] for i in range(0, len(rows), rows_per_batch)]


def collate(examples: list[Example], pad_id: int) -> tuple[Any, Any, Any]:
    import torch

    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        ids[row, :len(e.ids)] = torch.tensor(e.ids)
        labels[row, :len(e.labels)] = torch.tensor(e.labels)
        mask[row, :len(e.ids)] = 1
    return ids, labels, mask


def collate_packed(rows: list[list[Example]], pad_id: int) -> tuple[Any, Any, Any]:
    """(ids, labels, position ids) for packed rows: positions restart at 0 for every example.

    transformers turns restarting position ids into a block-diagonal causal mask (sdpa, eager) or variable-length
    sequences (flash attention), so no example attends to another. The padding at a row's end is a block of its
    own, and the first token of every example is never a target, so no loss crosses a boundary either.
    """
    import torch

    width = max(sum(len(e.ids) for e in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for e in row:
            n = len(e.ids)
            ids[r, at:at + n] = torch.tensor(e.ids)
            labels[r, at:at + n] = torch.tensor(e.labels)
            labels[r, at] = IGNORE
            positions[r, at:at + n] = torch.arange(n)
            at += n
        positions[r, at:] = torch.arange(width - at)
    return ids, labels, positions


def build_batch(examples: list[Example], batch: list, pad_id: int, packed: bool) -> Batch:
    """Tensors for one batch of the order (example indices, or rows of indices when packed)."""
    if packed:
        rows = [[examples[i] for i in row] for row in batch]
        ids, labels, positions = collate_packed(rows, pad_id)
        real = sum(len(e.ids) for row in rows for e in row)
        return Batch(ids, labels, None, positions, real, ids.numel())
    ids, labels, mask = collate([examples[i] for i in batch], pad_id)
    return Batch(ids, labels, mask, None, int(mask.sum()), mask.numel())
