"""Scoring replies against a suite. Pure functions: no model here.

Areas (each 0-100; overall is their mean, as in the training guide):
- commands: % of command questions whose reply names an accepted command (or matches the accepted form)
  and invents none.
- brevity: % of all replies that fit the radio budget as sent (2 chunks of 160 UTF-8 bytes, split like the bot).
- hallucination: mean of (a) % of fake-command questions answered without presenting the command as real
  (no unknown slash word) while saying it does not exist or pointing to /help, and (b) % of all replies
  with no unknown slash word at all.
- technical: % of technical questions whose reply covers at least half of the expected concept groups.
"""

from __future__ import annotations

import re
from typing import Any

from meshai_common.meshmaster.catalog import slash_words, unknown_slash_words
from meshai_common.radio import fits_budget

NEGATION = re.compile(r"\b(no|not|isn't|isnt|doesn't|doesnt|unknown|invalid|never|n't exist)\b", re.I)


def command_correct(reply: str, item: dict[str, Any]) -> bool:
    # An answer that also invents a command sends people in circles. `allow` admits a question's own
    # legitimate forms (the relay question's "/bob <msg>").
    if unknown_slash_words(reply, item.get("allow", ())):
        return False
    words = {w.lower() for w in slash_words(reply)}
    if any(a.lower() in words for a in item.get("accept", [])):
        return True
    return any(re.search(rx, reply) for rx in item.get("accept_regex", []))


def hallucination_pass(reply: str, item: dict[str, Any]) -> bool:
    if unknown_slash_words(reply):
        return False
    return bool(NEGATION.search(reply)) or "/help" in slash_words(reply)


def concepts_hit(reply: str, item: dict[str, Any]) -> float:
    text = reply.lower()
    groups = item["concepts"]
    return sum(any(word.lower() in text for word in group) for group in groups) / len(groups)


def score(replies: list[dict[str, Any]]) -> dict[str, Any]:
    """replies: [{area, id, item, reply}] for every suite question; returns per-area scores and details."""
    details = []
    for r in replies:
        reply, item, area = r["reply"], r["item"], r["area"]
        d = {"area": area, "id": item["id"], "question": item["question"], "reply": reply,
             "bytes": len(reply.encode()), "fits_budget": fits_budget(reply),
             "unknown_commands": unknown_slash_words(reply, item.get("allow", ())), "latency_s": r.get("latency_s")}
        if area == "commands":
            d["correct"] = command_correct(reply, item)
        elif area == "hallucination":
            d["correct"] = hallucination_pass(reply, item)
        else:
            d["concepts"] = concepts_hit(reply, item)
            d["correct"] = d["concepts"] >= 0.5
        details.append(d)

    def pct(xs: list[bool]) -> float:
        return 100.0 * sum(xs) / len(xs) if xs else 0.0

    fake = pct([d["correct"] for d in details if d["area"] == "hallucination"])
    clean = pct([not d["unknown_commands"] for d in details])
    areas = {
        "commands": pct([d["correct"] for d in details if d["area"] == "commands"]),
        "brevity": pct([d["fits_budget"] for d in details]),
        "hallucination": (fake + clean) / 2,
        "technical": pct([d["correct"] for d in details if d["area"] == "technical"]),
    }
    return {
        "areas": areas,
        "overall": sum(areas.values()) / len(areas),
        "hallucinated_replies": sum(bool(d["unknown_commands"]) for d in details),
        "details": details,
    }


def compare(candidate: dict[str, Any], baseline: dict[str, Any], threshold: float = 0.0) -> dict[str, Any]:
    """Promote only a candidate that beats the baseline overall (and reaches `threshold`, when set)."""
    c, b = candidate["overall"], baseline["overall"]
    deltas = {a: candidate["areas"][a] - baseline["areas"][a] for a in candidate["areas"]}
    if c <= b:
        promote, reason = False, f"candidate {c:.1f} does not beat baseline {b:.1f}"
    elif threshold and c < threshold:
        promote, reason = False, f"candidate {c:.1f} beats baseline {b:.1f} but is under the threshold {threshold:.1f}"
    else:
        promote, reason = True, f"candidate {c:.1f} beats baseline {b:.1f}"
    return {"promote": promote, "reason": reason, "overall_delta": c - b, "area_deltas": deltas}
