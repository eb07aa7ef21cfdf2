"""Training data as operators bring it: JSONL, Parquet or a save_to_disk folder, with `messages` or sharegpt
`conversations`; bad rows named by file, line (or row) and field; tokenized with `Dataset.map`, cached."""

from __future__ import annotations

import json

import pytest

from meshai_common.errors import InvalidInput
from meshai_trainer.batches import encode
from meshai_trainer.config import validate_config
from meshai_trainer.dataset import dataset_problems, read_messages, tokenize

PAIRS = [("how do I list nodes?", "Send /nodes."), ("check my mail", "Send /checkmail."),
         ("weather here?", "Send /weather.")]
EXPECTED = [[{"role": "system", "content": "Reply briefly."}, {"role": "user", "content": q},
             {"role": "assistant", "content": a}] for q, a in PAIRS]


def _messages_rows() -> list[dict]:
    return [{"messages": m, "source": "field"} for m in EXPECTED]


def _sharegpt_rows() -> list[dict]:
    return [{"conversations": [{"from": "system", "value": "Reply briefly."}, {"from": "human", "value": q},
                               {"from": "gpt", "value": a}]} for q, a in PAIRS]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("rows", [_messages_rows, _sharegpt_rows], ids=["messages", "sharegpt"])
def test_jsonl_parquet_and_saved_folders_read_the_same_conversations(tmp_path, rows):
    import datasets

    data = rows()
    ds = datasets.Dataset.from_list(data)
    ds.to_parquet(str(tmp_path / "train.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "saved_dict"))
    for path in (_jsonl(tmp_path / "train.jsonl", data), tmp_path / "train.parquet", tmp_path / "saved",
                 tmp_path / "saved_dict"):
        assert read_messages(path) == EXPECTED, path
        assert dataset_problems(path) == []


def test_bad_jsonl_rows_name_file_line_and_field(tmp_path):
    good = json.dumps(_messages_rows()[0])
    lines = [good, "", "{broken",
             json.dumps({"conversations": [{"from": "human", "value": "hi"}, {"from": "bot", "value": "yo"}]}),
             json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": 5}]}),
             json.dumps({"messages": [{"role": "assistant", "content": "yo"}, {"role": "user", "content": "hi"}]}),
             json.dumps({"text": "hi"})]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert dataset_problems(path) == [
        f"{path}:3: not JSON (Expecting property name enclosed in double quotes)",
        f"{path}:4: conversations[1].from: 'bot' is not one of human, gpt, system",
        f"{path}:5: messages[1].content: expected a string",
        f"{path}:6: expected 'messages' ending with an assistant turn",
        f"{path}:7: expected 'messages' (role/content turns) or sharegpt 'conversations' (from/value turns)",
    ]
    with pytest.raises(InvalidInput, match=rf"^{path}:3: not JSON"):
        read_messages(path)


def test_bad_parquet_rows_name_the_row_and_validate_names_the_config_line(tmp_path):
    import datasets

    rows = _sharegpt_rows()
    rows[1]["conversations"][2]["from"] = "assistant"  # OpenAI's role name in a sharegpt row
    path = tmp_path / "train.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(path))
    assert dataset_problems(path) == [f"{path}: row 1: conversations[2].from: 'assistant' is not one of "
                                      f"human, gpt, system"]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"base_model: embedded:smollm2\ndatasets:\n  - path: {path}\n")
    assert validate_config(cfg, check_model=False) == [
        f"{cfg}:2: datasets.0.path: {path}: row 1: conversations[2].from: 'assistant' is not one of human, gpt, system"]
    (tmp_path / "not-a-dataset").mkdir()
    assert "not a dataset folder written by save_to_disk" in dataset_problems(tmp_path / "not-a-dataset")[0]
    assert dataset_problems(tmp_path / "missing.jsonl") == [f"{tmp_path / 'missing.jsonl'} does not exist"]


@pytest.fixture(scope="module")
def tok():
    from meshai_trainer.batches import set_chat_template
    from meshai_trainer.model import load_tokenizer

    t = load_tokenizer("embedded:smollm2")
    set_chat_template(t, None)
    return t


def test_tokenizing_with_map_equals_encoding_each_row_and_is_cached(tmp_path, tok):
    rows = EXPECTED * 4
    want = [encode(tok, m, 24) for m in rows]
    assert any(len(e.ids) == 24 for e in want)  # some are cut: the cap is applied inside map too
    cache = tmp_path / "work" / "datasets"
    got = tokenize(rows, tok, 24, cache)
    assert got == want
    files = sorted(cache.glob("tokenized-*.arrow"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    assert tokenize(rows, tok, 24, cache) == want and files[0].stat().st_mtime_ns == stamp  # read back, not redone
    assert tokenize(rows, tok, 32, cache) == [encode(tok, m, 32) for m in rows]  # another cap: another file
    assert len(list(cache.glob("tokenized-*.arrow"))) == 2
    assert tokenize(rows, tok, 24, None, num_proc=2) == want  # two processes, same order
