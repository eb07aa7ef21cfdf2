"""The promotion gate: a candidate replaces the model in production only when it is better and no worse anywhere.

Rules, each reported with its numbers:
- margin: overall beats the reference (production, else the base model) by at least `margin` points;
- hallucination: the hallucinated-command rate is not higher than the reference's and not above the ceiling;
- areas: no area drops by more than `max_area_drop` points against the reference;
- floor: overall reaches `floor` (0 disables; the training guide used 85).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from meshai_common.errors import InvalidInput


@dataclass(frozen=True)
class GatePolicy:
    margin: float = 1.0
    max_hallucination_rate: float = 0.0
    max_area_drop: float = 10.0
    floor: float = 0.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not 0.0 <= value <= 100.0:
                raise InvalidInput(f"gate {name} must be within 0-100, got {value}")


def decide(candidate: dict[str, Any], reference: dict[str, Any], reference_name: str,
           policy: GatePolicy) -> dict[str, Any]:
    """Whether to promote, why, and every rule's verdict."""
    c, r = candidate["overall"], reference["overall"]
    ch, rh = candidate["hallucinated_command_rate"], reference["hallucinated_command_rate"]
    deltas = {a: candidate["areas"][a] - reference["areas"].get(a, 0.0) for a in candidate["areas"]}
    worst_area, worst = min(deltas.items(), key=lambda kv: kv[1])
    rules = [
        {"rule": "margin", "passed": c - r >= policy.margin,
         "detail": f"overall {c:.1f} vs {reference_name} {r:.1f} ({c - r:+.1f}; needs {policy.margin:+.1f})"},
        {"rule": "hallucination", "passed": ch <= rh and ch <= policy.max_hallucination_rate,
         "detail": f"hallucinated-command rate {ch:.1f}% vs {reference_name} {rh:.1f}% "
                   f"(ceiling {policy.max_hallucination_rate:.1f}%)"},
        {"rule": "areas", "passed": worst >= -policy.max_area_drop,
         "detail": f"largest area drop {worst_area} {worst:+.1f} (allowed -{policy.max_area_drop:.1f})"},
    ]
    if policy.floor > 0:
        rules.append({"rule": "floor", "passed": c >= policy.floor,
                      "detail": f"overall {c:.1f} vs floor {policy.floor:.1f}"})
    failed = [x for x in rules if not x["passed"]]
    if failed:
        reason = "not promoted: " + "; ".join(f"{x['rule']}: {x['detail']}" for x in failed)
    else:
        reason = f"promoted: beats {reference_name} {c:.1f} vs {r:.1f}, hallucinated-command rate {ch:.1f}%"
    return {"promote": not failed, "reason": reason, "reference": reference_name, "rules": rules,
            "policy": asdict(policy), "overall_delta": c - r, "area_deltas": deltas}
