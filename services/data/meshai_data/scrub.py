"""Remove what identifies people before text leaves the operator's machine in a dataset.

Kinds replaced, in this order (earlier kinds cannot be eaten by later, broader patterns):
email -> <email>, coords -> <coords>, phone -> <phone>, node_id -> <node_id>, pin -> <pin>, name -> <name>.
`name` is only replaced for names the caller knows (node short names seen in the input files).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache

PLACEHOLDERS = {
    "email": "<email>",
    "coords": "<coords>",
    "phone": "<phone>",
    "node_id": "<node_id>",
    "pin": "<pin>",
    "name": "<name>",
}
KINDS = tuple(PLACEHOLDERS)

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")

_DEG = r"\s?°?\s?"
_LAT = r"[-+]?\d{1,2}\.\d{3,}"
_LON = r"[-+]?\d{1,3}\.\d{3,}"
# "40.71280, -74.00600", "40.7128 -74.0060", "40.7128° N, 74.0060° W", "lat 40.7128 lon -74.0060".
_COORDS = re.compile(
    rf"(?<![\w.])(?:lat(?:itude)?\s*[:=]?\s*)?(?P<lat>{_LAT}){_DEG}(?P<ns>[NSns])?\s*[,;/ ]\s*"
    rf"(?:lon(?:g(?:itude)?)?\s*[:=]?\s*)?(?P<lon>{_LON}){_DEG}(?P<ew>[EWew])?(?![\w.])",
    re.IGNORECASE,
)
_PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"\+\d{1,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]?\d{2,4}){1,3}"  # +1 555 123 4567, +44 20 7946 0958
    r"|\(\d{3}\)\s?\d{3}[\s.-]?\d{4}"  # (555) 123-4567
    r"|\d{3}[.-]\d{3}[.-]\d{4}"  # 555-123-4567
    r"|\d{10,11}"  # 5551234567
    r")(?![\w])"
)
_NODE_ID = re.compile(r"(?<![\w!])![0-9a-fA-F]{8}(?![0-9A-Za-z])")
# "PIN 1234", "pin: 1234", "pin is 1234", "code=4821"; and the PIN argument of a mail check: "/c camp 1234".
_PIN_WORD = re.compile(r"(?i)\b(?P<head>pin(?:\s*(?:code|number))?|passcode)(?P<sep>\s*(?:is|=|:|#)?\s*)(?P<pin>\d{3,8})\b")
_PIN_CHECK = re.compile(r"(?i)(?P<head>(?<!\w)/(?:c|check|checkmail)\s+[A-Za-z0-9_-]+\s+)(?P<pin>\d{3,8})\b")


@lru_cache(maxsize=8)
def _names_pattern(names: tuple[str, ...]) -> re.Pattern | None:
    wanted = sorted({n for n in names if len(n) >= 3 and not n.startswith("!")}, key=len, reverse=True)
    if not wanted:
        return None
    return re.compile(r"(?<![\w!<])(?:" + "|".join(re.escape(n) for n in wanted) + r")(?!\w)")


def _in_range(m: re.Match) -> bool:
    lat, lon = float(m.group("lat")), float(m.group("lon"))
    return abs(lat) <= 90 and abs(lon) <= 180


def scrub(text: str, names: Iterable[str] = ()) -> tuple[str, Counter[str]]:
    """Replace personal data in text with placeholders. Returns (text, counts per kind)."""
    counts: Counter[str] = Counter()

    def sub(kind: str, pattern: re.Pattern, s: str, keep=None) -> str:
        def repl(m: re.Match) -> str:
            if keep is not None and not keep(m):
                return m.group(0)
            counts[kind] += 1
            return PLACEHOLDERS[kind]
        return pattern.sub(repl, s)

    out = sub("email", _EMAIL, text)
    out = sub("coords", _COORDS, out, _in_range)
    out = sub("phone", _PHONE, out)
    out = sub("node_id", _NODE_ID, out)

    def pin_repl(m: re.Match) -> str:
        counts["pin"] += 1
        return m.group("head") + (m.groupdict().get("sep") or "") + PLACEHOLDERS["pin"]

    out = _PIN_WORD.sub(pin_repl, out)
    out = _PIN_CHECK.sub(pin_repl, out)
    pattern = _names_pattern(tuple(names))
    if pattern is not None:
        out = sub("name", pattern, out)
    return out, counts


class Scrubber:
    """Scrubs many texts with one set of known names, keeping running totals per kind."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self.names = tuple(sorted(set(names)))
        self.totals: Counter[str] = Counter()

    def __call__(self, text: str) -> str:
        out, counts = scrub(text, self.names)
        self.totals.update(counts)
        return out

    def counts(self) -> dict[str, int]:
        return {k: int(self.totals.get(k, 0)) for k in KINDS}
