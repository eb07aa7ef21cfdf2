"""Sample packing: rows are full, and an example's loss inside a packed row is its loss alone (no cross-attention)."""

from __future__ import annotations

import random

import pytest

from meshai_trainer.batches import IGNORE, Example, build_batch, collate, collate_packed, encode, pack_rows


def test_rows_hold_every_example_once_and_are_nearly_full():
    rng = random.Random(0)
    examples = [Example([1] * n, [1] * n) for n in (rng.randint(20, 120) for _ in range(500))]
    rows = pack_rows(examples, 256, random.Random(1))
    assert sorted(i for r in rows for i in r) == list(range(500))
    lengths = [sum(len(examples[i].ids) for i in r) for r in rows]
    assert max(lengths) <= 256
    assert sum(lengths) / (len(rows) * 256) > 0.95
    # Another epoch's rng packs differently (rows are not frozen across epochs).
    assert pack_rows(examples, 256, random.Random(2)) != rows


def test_positions_restart_and_no_target_crosses_a_boundary():
    a, b = Example([5, 6, 7], [IGNORE, 6, 7]), Example([8, 9], [8, 9])
    ids, labels, positions = collate_packed([[a, b], [b]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7, 8, 9], [8, 9, 0, 0, 0]]
    assert positions.tolist() == [[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]]
    # The first token of each example is never a target: nothing is predicted across a boundary.
    assert labels.tolist() == [[IGNORE, 6, 7, IGNORE, 9], [IGNORE, 9, IGNORE, IGNORE, IGNORE]]
    batch = build_batch([a, b], [[0, 1], [1]], pad_id=0, packed=True)
    assert (batch.real, batch.size, batch.mask) == (7, 10, None)


@pytest.fixture(scope="module")
def model_and_examples(smollm2_dir, chat_data):

    from meshai_trainer.dataset import read_messages
    from meshai_trainer.model import load_base

    model, tok = load_base(str(smollm2_dir))
    model.eval()
    examples = [encode(tok, m, 256) for m in read_messages(chat_data[0])[:3]]
    return model, examples, tok.pad_token_id


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.slow  # the embedded model's weights
def test_packed_example_loss_equals_its_loss_alone(model_and_examples, attn):
    import torch

    from meshai_trainer.recipe import causal_lm_loss

    model, examples, pad_id = model_and_examples
    model.set_attn_implementation(attn)
    with torch.no_grad():
        alone = []
        for e in examples:
            ids, labels, mask = collate([e], pad_id)
            alone.append(float(causal_lm_loss(model, ids, labels, mask)))
        ids, labels, positions = collate_packed([examples], pad_id)
        starts = [0]
        for e in examples:
            starts.append(starts[-1] + len(e.ids))
        packed, naive = [], []
        for k in range(len(examples)):
            only_k = torch.full_like(labels, IGNORE)
            only_k[:, starts[k]:starts[k + 1]] = labels[:, starts[k]:starts[k + 1]]
            packed.append(float(causal_lm_loss(model, ids, only_k, None, positions)))
            # Control: the same row as one plain causal sequence lets later examples see earlier ones.
            naive.append(float(causal_lm_loss(model, ids, only_k, torch.ones_like(ids))))
    assert packed == pytest.approx(alone, abs=2e-4)
    assert naive[0] == pytest.approx(alone[0], abs=2e-4)
    assert all(abs(n - a) > 1e-2 for n, a in zip(naive[1:], alone[1:], strict=True))
