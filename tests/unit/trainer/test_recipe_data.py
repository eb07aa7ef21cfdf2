"""Loss masking and batching with the embedded model's real tokenizer and chat template."""

from __future__ import annotations

import random

import pytest

from meshai_trainer.recipe import IGNORE, Example, collate, encode, make_batches

MESSAGES = [
    {"role": "system", "content": "You are Mesh-AI on a LoRa mesh. Reply briefly; use only real commands."},
    {"role": "user", "content": "how do I list nodes?"},
    {"role": "assistant", "content": "Send /nodes to list nodes heard in the last 24h."},
]


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from meshai_trainer.model import embedded_gguf

    gguf = embedded_gguf("embedded:smollm2")
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def test_prompt_tokens_are_masked_and_only_the_answer_is_learned(tok):
    ex = encode(tok, MESSAGES, max_len=512)
    assert len(ex.ids) == len(ex.labels)
    learned = [t for t, lab in zip(ex.ids, ex.labels, strict=True) if lab != IGNORE]
    text = tok.decode(learned)
    assert text.startswith("Send /nodes to list nodes") and "<|im_end|>" in text
    assert "how do I list nodes" not in text and "Mesh-AI on a LoRa mesh" not in text
    # Everything before the answer is masked: the whole rendered prompt.
    prompt = tok.apply_chat_template(MESSAGES[:-1], tokenize=False, add_generation_prompt=True)
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert all(lab == IGNORE for lab in ex.labels[:n_prompt]) and ex.labels[n_prompt] != IGNORE


def test_truncation_keeps_ids_and_labels_aligned(tok):
    ex = encode(tok, MESSAGES, max_len=10)
    assert len(ex.ids) == len(ex.labels) == 10


def test_length_bucketed_batches_pad_little():
    rng = random.Random(0)
    examples = [Example([1] * n, [1] * n) for n in (rng.randint(40, 120) for _ in range(512))]
    batches = make_batches(examples, 16, random.Random(1))
    assert sorted(i for b in batches for i in b) == list(range(512))
    real = padded = 0
    for b in batches:
        ids, labels, mask = collate([examples[i] for i in b], pad_id=0)
        real += int(mask.sum())
        padded += mask.numel()
        assert (labels[mask == 0] == IGNORE).all()
    assert real / padded > 0.9
