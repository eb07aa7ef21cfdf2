"""Question keys: what makes two questions "the same" for de-duplication, splitting and decontamination."""

from __future__ import annotations

import hashlib
import re
import unicodedata

from meshai_common.prompts import question_of

_APOSTROPHES = str.maketrans({"\u2019": "", "\u2018": "", "'": "", "`": ""})
_NON_WORD = re.compile(r"[^0-9a-z<>_/]+")
# A slash stays only where it starts a command word: "explain /snr" (a command) is not "explain snr" (a term).
_STRAY_SLASH = re.compile(r"(?<!\S)/(?![a-z])|(?<=\S)/")
# Words that change nothing about what is asked: "hey, how do I see the nodes please?" == "how do i see nodes".
_FILLER = frozenset({"a", "an", "the", "please", "pls", "plz", "hey", "hi", "hello", "yo", "ok", "okay", "so",
                     "just", "thanks", "thx", "um", "uh", "quick", "q"})


def normalize(text: str) -> str:
    """Lower case, NFKC, apostrophes dropped, punctuation (but a command's leading slash) to spaces, whitespace
    collapsed."""
    t = unicodedata.normalize("NFKC", text).lower().translate(_APOSTROPHES)
    return " ".join(_STRAY_SLASH.sub(" ", _NON_WORD.sub(" ", t)).split())


def near_dup_key(text: str) -> str:
    """Key under which near-duplicate questions collide: normalized, filler words removed.

    A Mesh-Master prompt is keyed by its `Question:` only, so a wrapped and a plain copy of one question
    are duplicates.
    """
    words = normalize(question_of(text)).split()
    kept = [w for w in words if w not in _FILLER]
    return " ".join(kept or words)


def stable_hash(*parts: object) -> int:
    """A 64-bit hash that is the same in every process (Python's hash() is salted): seeds every choice."""
    data = "\x1f".join(map(str, parts)).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")
