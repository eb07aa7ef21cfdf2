"""intents.yaml and phrasing.yaml: the loader's checks, and data that aims at no evaluation suite."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from datatest_helpers import assert_intent_weights

from meshai_common.decontam import suite_questions
from meshai_common.errors import ConfigError
from meshai_common.meshmaster import load_catalog, load_intents, load_phrasing, unknown_slash_words
from meshai_common.meshmaster.intents import INTENTS_FILE, PHRASING_FILE

SUITES = Path(__file__).resolve().parents[3] / "services" / "evaluator" / "meshai_evaluator" / "suites"


def _write(tmp_path: Path, name: str, doc) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def _intents_doc(**entry) -> dict:
    base = {"id": "nodes", "command": "/nodes", "answers": {"": "Send /nodes to list nodes."}, "asks": ["nodes?"]}
    return {"version": 1, "intents": [base | entry]}


def test_shipped_files_load_cached_and_exported():
    intents = load_intents()
    assert len(intents) >= 50 and load_intents() is intents
    assert load_phrasing() is load_phrasing()
    ids = [i.id for i in intents]
    assert len(ids) == len(set(ids))
    catalog = load_catalog()
    for intent in intents:
        assert intent.command is None or catalog.get(intent.command).name == intent.command
        for answer in intent.answers.values():
            assert len(answer.encode()) <= 320 and unknown_slash_words(answer) == []
    assert intents.get("nodes").command == "/nodes" and intents.get("relay").command is None


@pytest.mark.parametrize(("entry", "message"), [
    ({"command": "/nuke"}, r"intents\[0\] \(id nodes\): command '/nuke' is not in the command catalog"),
    ({"command": "/checkmail"}, r"intents\[0\] \(id nodes\): command '/checkmail' is an alias: use .* /c"),
    ({"answers": {"": "Use /relay to send."}}, r"intents\[0\] \(id nodes\)\.answers\[''\]: .*unknown command.*"
                                                r"/relay"),
    ({"answers": {"": "Send /nodes. " + "x" * 320}}, r"intents\[0\] \(id nodes\)\.answers\[''\]: answer over 320"),
    ({"answers": {"": "Send /help."}}, r"does not name the intent's command /nodes"),
    ({"answers": {"": "Send /nodes, /node or /about."}}, r"answers\[''\]: answer names 3 commands \(/nodes, /node, "
                                                         r"/about\), at most 2"),
    ({"asks": ["tell {name} hi"]}, r"intents\[0\] \(id nodes\)\.asks\[0\]: intent nodes has no answer for slots "
                                   r"name"),
    ({"asks": ["hi {who}"]}, r"asks\[0\]: unknown slot\(s\) who"),
    ({"answers": {"name+box": "Send /nodes {name}."}}, r"answers key 'name\+box' is not a slot signature"),
    ({"weight": 0}, r"intents\[0\] \(id nodes\): weight must be a positive number"),
    ({"colour": "red"}, r"intents\[0\] \(id nodes\): unknown key\(s\) colour"),
])
def test_intent_errors_name_file_and_entry(tmp_path, entry, message):
    path = _write(tmp_path, "intents.yaml", _intents_doc(**entry))
    with pytest.raises(ConfigError, match=message) as err:
        load_intents(path)
    assert str(err.value).startswith(str(path))


def test_duplicate_ids_and_broken_yaml(tmp_path):
    doc = _intents_doc()
    doc["intents"].append(dict(doc["intents"][0]))
    with pytest.raises(ConfigError, match=r"intents\[1\] \(id nodes\): duplicate id"):
        load_intents(_write(tmp_path, "dup.yaml", doc))
    bad = tmp_path / "broken.yaml"
    bad.write_text("version: 1\nintents: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(bad))}: cannot read the intents file"):
        load_intents(bad)


def _phrasing_doc() -> dict:
    return yaml.safe_load(PHRASING_FILE.read_text(encoding="utf-8"))


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["fake_commands"].append({"fake": "nodes", "alternative": ""}),
     r"fake_commands\[\d+\] \(fake nodes\): /nodes is a real command"),
    (lambda d: d["fake_commands"].append({"fake": "zap", "alternative": "Try /zapper. "}),
     r"fake_commands\[\d+\] \(fake zap\)\.alternative: answer uses unknown command\(s\) /zapper"),
    (lambda d: d["fake_words"].append("nodes"), r"fake_words\[\d+\] \(nodes\): /nodes is a real command"),
    (lambda d: d["fake_words"].append("two words"), r"fake_words\[\d+\]: expected one word"),
    (lambda d: d["fake_words"].append("relay"), r"fake_words\[\d+\] \(relay\): duplicate fake command"),
    (lambda d: d["frames"].append("how do I do it?"), r"frames\[\d+\]: must hold \{a\} exactly once"),
    (lambda d: d["slots"].pop("msg"), r"slots: missing pool\(s\) msg"),
    (lambda d: d["referring"].append({"intent": "nope", "history": ["{caller}: hi"], "asks": ["ok"]}),
     r"referring\[\d+\]: unknown intent 'nope'"),
    (lambda d: d["referring"].append({"intent": "relay", "history": ["{name} is late"], "asks": ["ok"]}),
     r"referring\[\d+\] \(intent relay\)\.history\[0\]: must start with"),
    (lambda d: d["contrasts"].append({"name": "x", "asks": {"nodes": ["all"], "log": ["note {ref}"]}}),
     r"contrasts\[\d+\] \(x\)\.asks\.log\[0\]: intent log has no answer for slots ref"),
    (lambda d: d["history"].append("no speaker here"), r"history\[\d+\]: expected '<shortname>: <text>'"),
    (lambda d: d["fake_asks"].append("/{fake} {nope}"), r"fake_asks\[\d+\]: unknown slot\(s\) nope"),
])
def test_phrasing_errors_name_file_and_entry(tmp_path, change, message):
    doc = _phrasing_doc()
    change(doc)
    path = _write(tmp_path, "phrasing.yaml", doc)
    with pytest.raises(ConfigError, match=message) as err:
        load_phrasing(path, INTENTS_FILE)
    assert str(err.value).startswith(str(path))


def test_weights_are_balanced_and_nothing_is_taken_from_a_suite():
    assert_intent_weights({i.id: i.weight for i in load_intents()})
    phrasing = load_phrasing()
    suites = suite_questions(SUITES)
    assert suites, "no evaluation suite found to compare against"
    suite_text = " ".join(q for qs in suites.values() for q in qs)
    suite_fakes = {w.lower().lstrip("/") for w in unknown_slash_words(suite_text)}
    fakes = {f.fake for f in phrasing.fake_commands}
    assert not fakes & suite_fakes, "fake commands copied from an evaluation suite"
    # Suites also ask about fake words without a slash ("telemetry cmd?"): their `fake` fields count too.
    suite_fields = {str(item["fake"]).lower().lstrip("/") for path in SUITES.glob("*.yaml")
                    for item in (yaml.safe_load(path.read_text()) or {}).get("hallucination", []) or []
                    if isinstance(item, dict) and "fake" in item}
    assert suite_fields, "no suite item with a fake word found"
    assert not fakes & suite_fields, "fake words copied from an evaluation suite"
    assert sum(f.from_word_list for f in phrasing.fake_commands) >= 150
    public_words = {w.lower() for q in suites.get("public", []) for w in re.findall(r"[A-Za-z]+", q)}
    chosen = {v.lower() for pool in ("name", "box") for v in phrasing.slots[pool]}
    assert not chosen & {"bob", "admin"} and "bob" in public_words
    assert len(phrasing.slots["name"]) >= 30
    assert sum(v.isupper() for v in phrasing.slots["name"]) >= 10  # call signs and short names, not just nicknames
    assert sum(s == "" for s in phrasing.bot_systems) >= 1 and len(set(phrasing.bot_systems)) >= 6


def test_every_catalog_command_is_asked_for_in_the_bank():
    """Retrieval and training both learn a command from its bank phrasings: a command without any is met only
    by its catalog line (often one word: "wordle") and by a glossary phrase."""
    asked = {i.command for i in load_intents() if i.command}
    assert [c.name for c in load_catalog().commands if c.name not in asked] == []
    by_command: dict[str, int] = {}
    for i in load_intents():
        if i.command:
            by_command[i.command] = by_command.get(i.command, 0) + len(i.actions) + len(i.asks)
    assert min(by_command.values()) >= 4
