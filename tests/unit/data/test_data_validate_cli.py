"""validate / inspect and the `meshai data` commands."""

from __future__ import annotations

import argparse
import json

import pytest

from meshai_common.prompts import DEFAULT_SYSTEM_PROMPT
from meshai_data.cli import register
from meshai_data.validate import inspect, validate


def _row(q, a, **extra):
    return json.dumps({"messages": [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                                    {"role": "user", "content": q}, {"role": "assistant", "content": a}], **extra})


def _run(argv):
    parser = argparse.ArgumentParser(prog="meshai")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_each_problem_has_file_and_line(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join([
        _row("how do I see nodes", "Send /nodes."),  # 1 ok
        "{not json",  # 2
        json.dumps({"text": "hi"}),  # 3
        _row("empty answer?", " "),  # 4
        _row("long?", "x" * 400),  # 5
        _row("relay?", "Use /relay bob hi."),  # 6
        _row("How do I see the nodes?", "Send /nodes."),  # 7 duplicate of 1
        json.dumps({"messages": [{"role": "user", "content": "q"}]}),  # 8 no assistant
        _row("grouped", "Send /help.", group="g1"),  # 9
    ]) + "\n", encoding="utf-8")
    test = tmp_path / "test.jsonl"
    test.write_text(_row("how do i see nodes!", "Send /nodes.") + "\n" + _row("other", "Send /help.", group="g1") + "\n")
    problems = {(p.file.rsplit("/", 1)[-1], p.line): p.message for p in validate([train, test])}
    assert problems[("train.jsonl", 2)].startswith("not JSON")
    assert "missing 'messages'" in problems[("train.jsonl", 3)]
    assert "turn 2 (assistant) is empty" in problems[("train.jsonl", 4)]
    assert "400 bytes, over the 320-byte" in problems[("train.jsonl", 5)]
    assert "unknown command(s): /relay" in problems[("train.jsonl", 6)]
    assert problems[("train.jsonl", 7)] == "duplicate question (same as line 1)"
    assert "end with the assistant" in problems[("train.jsonl", 8)]
    assert "train.jsonl:1 (split leakage)" in problems[("test.jsonl", 1)]
    assert "template group 'g1'" in problems[("test.jsonl", 2)]
    assert len(problems) == 9
    assert str(validate([train])[0]) == f"{train}:2: " + problems[("train.jsonl", 2)]


def test_missing_and_empty_files(tmp_path):
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    msgs = [str(p) for p in validate([tmp_path / "nope.jsonl", empty])]
    assert msgs[0].startswith(f"{tmp_path}/nope.jsonl:0: cannot read")
    assert msgs[1] == f"{empty}:0: file holds no examples"


def test_cli_prepare_validate_inspect(tmp_path, fixtures_dir, capsys):
    out = tmp_path / "ds"
    rc = _run(["data", "prepare", "--archive", str(fixtures_dir / "messages_archive.json"), "--mailboxes",
               str(fixtures_dir / "mesh_mailboxes.json"), "--min-pairs", "120", "--output-dir", str(out),
               "--seed", "3"])
    assert rc == 0 and "wrote 120 pairs" in capsys.readouterr().out
    files = [str(out / f"{s}.jsonl") for s in ("train", "val", "test")]
    assert _run(["data", "validate", *files]) == 0
    assert "ok: 3 file(s)" in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_text(_row("q", "Try /superrelay.") + "\n")
    assert _run(["data", "validate", str(bad)]) == 1
    assert f"{bad}:1: answer names unknown command(s): /superrelay" in capsys.readouterr().out
    assert _run(["data", "inspect", files[0], "--count", "3"]) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()  # a history line such as "LENA: ..." holds "A: " too
    assert sum(x.startswith("Q: ") for x in lines) == 3 and sum(x.startswith("A: ") for x in lines) == 3
    assert len(inspect(files[0], 4, seed=1)) == 4 and inspect(files[0], 4, seed=1) == inspect(files[0], 4, seed=1)


def test_cli_prepare_exclude_file_and_errors(tmp_path, fixtures_dir, capsys):
    ex = tmp_path / "suite.json"
    ex.write_text(json.dumps(["How do I see all nodes on the mesh?"]))
    rc = _run(["data", "prepare", "--archive", str(fixtures_dir), "--min-pairs", "100", "--output-dir",
               str(tmp_path / "o"), "--exclude-prompts", str(ex)])
    assert rc == 0
    from meshai_common.errors import InvalidInput

    with pytest.raises(InvalidInput, match="archive not found"):
        _run(["data", "prepare", "--archive", str(tmp_path / "missing.json"), "--output-dir", str(tmp_path / "p")])
