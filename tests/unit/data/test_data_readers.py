"""Reading Mesh-Master archives and mailboxes: pairs rebuilt by reply_to, unusable records dropped and counted."""

from __future__ import annotations

import json

import pytest
from datatest_helpers import qa, rec, write_json

from meshai_common.errors import InvalidInput
from meshai_data.readers import (
    archive_files,
    extract_pairs,
    node_parts,
    read_archives,
    read_mailboxes,
    strip_bot_suffix,
    unusable_reason,
)


def _pairs(tmp_path, records):
    path = write_json(tmp_path / "messages_archive.json", records)
    recs, report = read_archives([path])
    return extract_pairs(recs, report), report


def test_shared_fixture_rebuilds_every_pair_and_strips_the_suffix(fixtures_dir):
    recs, report = read_archives([fixtures_dir / "messages_archive.json"])
    pairs = extract_pairs(recs, report)
    assert len(pairs) == 12  # 12 AI replies, each answering a known question
    assert report.skipped["suffix_stripped"] == 12
    for p in pairs:
        assert not p.answer.endswith("s)")
    assert {p.question for p in pairs} >= {"whats the hop limit", "what does SNR mean"}
    assert "anyone copy?" not in {p.question for p in pairs}  # never answered
    assert {"NWBC", "CTPB"} <= report.names


@pytest.mark.parametrize("text,expected", [
    ("Send /nodes. (15s)", "Send /nodes."), ("ok (2s)", "ok"), ("ok (2.5s)", "ok"), ("keep (this)", "keep (this)"),
    ("3 hops (max 7)", "3 hops (max 7)"),
])
def test_bot_suffix(text, expected):
    assert strip_bot_suffix(text) == expected


@pytest.mark.parametrize("text,reason", [
    ("", "empty"), ("   ", "empty"), ("📨 dm received", "placeholder"), ("✉️ mail sent", "placeholder"),
    ("📬 new mail waiting", "placeholder"), ("⚠️ OLLAMA error: connection refused", "error_reply"),
    ("❌ AI request failed", "error_reply"), ("Error: timed out after 120s", "error_reply"),
    ("Ollama request timed out", "error_reply"), ("🤖 [No AI response]", "fallback_reply"),
    ("[No response from Home Assistant]", "fallback_reply"),
    ("Send /nodes to list nodes.", None), ("Hop limit is 3.", None), ("LoRa error correction is built in.", None),
])
def test_unusable_reasons(text, reason):
    assert unusable_reason(text) == reason


def test_drops_placeholders_errors_fallbacks_and_unknown_reply_to(tmp_path):
    records = [
        *qa(1, "how do I list nodes", "Send /nodes."),
        *qa(2, "📨 dm received", "Send /help."),  # placeholder question
        *qa(3, "what is snr", "⚠️ OLLAMA error: model not found"),
        *qa(4, "what is rssi", "🤖 [No AI response]"),
        *qa(5, "what is lora", "✉️ mail sent"),
        *qa(6, "", "Send /help."),  # v1.99+: message text blanked
        rec("2025-09-20 12:00:00 UTC", "Mesh Master", "Orphan answer. (3s)", is_ai=True,
            reply_to="2025-09-19 00:00:00 UTC"),
        rec("2025-09-20 12:00:01 UTC", "Mesh Master", "Good morning mesh! (1s)", is_ai=True),
    ]
    pairs, report = _pairs(tmp_path, records)
    assert [(p.question, p.answer) for p in pairs] == [("how do I list nodes", "Send /nodes.")]
    s = report.skipped
    assert (s["placeholder"], s["error_reply"], s["fallback_reply"], s["empty"]) == (2, 1, 1, 1)
    assert s["unknown_reply_to"] == 1 and s["ai_without_reply_to"] == 1


def test_emergency_traffic_is_kept_out(tmp_path):
    records = [
        *qa(1, "we need help, injured hiker", "Stay put.", emergency=True),  # flagged question
        *qa(2, "SOS at the ridge", "Calling for help."),  # emergency words
        *qa(3, "what is the hop limit", "Default 3."),
    ]
    flagged_answer = qa(4, "status?", "Emergency relayed.")
    flagged_answer[1]["emergency"] = True
    pairs, report = _pairs(tmp_path, records + flagged_answer)
    assert [p.question for p in pairs] == ["what is the hop limit"]
    assert report.skipped["emergency"] == 3


def test_both_node_formats_and_ai_prefix(tmp_path):
    records = [*qa(1, "/ai what is SNR", "Signal-to-noise ratio.", node="!376be684"),
               *qa(2, "how far can lora go", "Miles with line of sight.", node="BOB (!89449aaa)"),
               *qa(3, "/nodes", "Should not happen.")]
    pairs, report = _pairs(tmp_path, records)
    assert [p.question for p in pairs] == ["what is SNR", "how far can lora go"]
    assert report.skipped["command_question"] == 1
    assert node_parts("BOB (!89449AAA)") == ("BOB", "!89449aaa")
    assert node_parts("!376be684") == (None, "!376be684")
    assert node_parts("Mesh Master") == ("Mesh Master", None)
    assert "BOB" in report.names


def test_rotated_folder_in_order_with_overlap_and_cross_file_replies(tmp_path):
    folder = tmp_path / "data"
    q1, a1 = qa(1, "what is the hop limit", "Default 3, max 7.")
    q2, a2 = qa(2, "how do I check mail", "Send /c <mailbox>.")
    write_json(folder / "message_archives" / "messages_archive_20250920_000000.json", [q1, q2])
    write_json(folder / "message_archives" / "messages_archive_20250921_000000.json", [q2, a1])  # overlap
    write_json(folder / "messages_archive.json", [a2])
    files = archive_files([folder])
    assert [f.name for f in files] == ["messages_archive_20250920_000000.json",
                                      "messages_archive_20250921_000000.json", "messages_archive.json"]
    recs, report = read_archives([folder])
    pairs = extract_pairs(recs, report)
    assert sorted(p.question for p in pairs) == ["how do I check mail", "what is the hop limit"]
    assert report.skipped["duplicate_record"] == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidInput, match="holds no messages_archive"):
        archive_files([empty])


def test_malformed_json_and_wrong_shape_name_the_file(tmp_path):
    bad = tmp_path / "messages_archive.json"
    bad.write_text('[{"timestamp": "2025-09-20 08:37:04 UTC", "message": ')
    with pytest.raises(InvalidInput, match=r"messages_archive\.json: malformed JSON at line 1"):
        read_archives([bad])
    write_json(bad, {"messages": []})
    with pytest.raises(InvalidInput, match=r"messages_archive\.json: expected a JSON array.*got dict"):
        read_archives([bad])
    with pytest.raises(InvalidInput, match="archive not found"):
        read_archives([tmp_path / "nope.json"])


def test_bad_records_are_skipped_and_counted_with_file_and_index(tmp_path):
    records = [*qa(1, "what is snr", "SNR is signal-to-noise."),
               "not an object",
               {**rec("2025-09-20 13:00:00 UTC", "!0a0b0c0d", "hi"), "message": 42},
               {k: v for k, v in rec("2025-09-20 13:00:01 UTC", "!0a0b0c0d", "hi").items() if k != "is_ai"},
               {**rec("2025-09-20 13:00:02 UTC", "!0a0b0c0d", "hi"), "channel_idx": True}]
    path = write_json(tmp_path / "messages_archive.json", records)
    recs, report = read_archives([path])
    assert len(recs) == 2 and report.bad_records == 4
    assert report.problems[0].endswith("messages_archive.json: record 2: expected an object, got str")
    assert "record 3: field 'message' must be str, got int" in report.problems[1]
    assert "record 4: missing field 'is_ai'" in report.problems[2]
    assert "record 5: field 'channel_idx' must be int or null, got bool" in report.problems[3]
    with pytest.raises(InvalidInput, match=r"messages_archive\.json: record 2: expected an object"):
        read_archives([path], strict=True)


def test_mailboxes_fixture_and_locked_bodies(tmp_path, fixtures_dir):
    mb = read_mailboxes(fixtures_dir / "mesh_mailboxes.json")
    assert mb.names == ["camp", "ops"] and mb.items == 9 and mb.locked_items == 0
    data = json.loads((fixtures_dir / "mesh_mailboxes.json").read_text())
    data["vault"] = [{**data["camp"][0], "body": "gAAAAABnSecretTokenxyz==", "mailbox": "vault"}]
    data["camp"].append({"sender_id": "!00000001", "body": 7})
    data["Bad Name!"] = [{**data["camp"][0]}]
    data["ops"] = "not a list"
    path = write_json(tmp_path / "mesh_mailboxes.json", data)
    mb = read_mailboxes(path)
    assert mb.locked("vault") and not mb.locked("camp")
    assert mb.locked_items == 1 and all(i.body is None for i in mb.boxes["vault"])
    assert mb.bad_records == 2 and mb.skipped_boxes == 1
    assert any("mailbox 'camp' record 3: field 'body' must be str, got int" in p for p in mb.problems)
    assert any("mailbox 'ops': expected a list" in p for p in mb.problems)
    with pytest.raises(InvalidInput, match="mailbox 'camp' record 3"):
        read_mailboxes(path, strict=True)
    write_json(path, [1, 2])
    with pytest.raises(InvalidInput, match="expected a JSON object"):
        read_mailboxes(path)
