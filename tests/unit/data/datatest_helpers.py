"""Builders for small hand-written Mesh-Master archives (imported by the data tests)."""

from __future__ import annotations

import json
from pathlib import Path


def rec(ts: str, node: str, message: str, *, is_ai: bool = False, reply_to: str | None = None,
        emergency: bool = False, direct: bool = True, node_id: str | None = None) -> dict:
    """One archive record as Mesh-Master writes it."""
    nid = node_id or (node.split("(")[-1].rstrip(")") if "(" in node else node)
    return {"timestamp": ts, "node": node, "node_id": nid, "message": message, "emergency": emergency,
            "reply_to": reply_to, "direct": direct, "channel_idx": None if direct else 0, "is_ai": is_ai}


def qa(n: int, question: str, answer: str, *, node: str = "ALFA (!0a0b0c0d)", **kw) -> list[dict]:
    """A question and the bot's AI reply to it (with the bot's " (Ns)" suffix)."""
    ts = f"2025-09-20 10:{n // 60:02d}:{n % 60:02d} UTC"
    ts_reply = f"2025-09-20 11:{n // 60:02d}:{n % 60:02d} UTC"
    return [rec(ts, node, question, **kw),
            rec(ts_reply, "Mesh Master", f"{answer} ({n % 30 + 1}s)", is_ai=True, reply_to=ts)]


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def assert_intent_weights(weights: dict[str, float]) -> None:
    """intents.yaml's weights: relay 3 (its reason is written there), the rarer catalog commands' intents half,
    every other intent alike."""
    from meshai_common.meshmaster import load_intents

    commands = {i.id: i.command for i in load_intents()}
    assert weights["relay"] == 3.0
    assert set(weights.values()) <= {0.5, 1.0, 3.0}
    assert all(commands[i] for i, w in weights.items() if w == 0.5), "a half-weight intent names no command"
    assert sum(w == 1.0 for w in weights.values()) >= 50
