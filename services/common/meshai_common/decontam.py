"""Keep evaluation questions out of training data: suite question texts, and a near-duplicate matcher.

`suite_questions(directory)` reads every evaluation suite (*.yaml) in a folder the caller names and returns
each suite's question texts, without importing the evaluator: any `question` or `prompt` string, or
`questions` / `prompts` list of strings, anywhere in the file counts.

`SuiteMatcher` says whether a training question is a near-duplicate of one of them. Both texts are normalized
(NFKC, lower case, apostrophes dropped, everything but letters and digits to single spaces, radio shorthand
spelled out: u -> you, chk -> check, 2 -> to; filler such as pls, hey, thx dropped) and cut into overlapping
character 4-grams, word boundaries included, so a misspelling costs only the few grams around it.
A question matches when

    Jaccard(grams(question), grams(suite question)) >= JACCARD_THRESHOLD (0.5), or
    |shared| / |grams(suite question)| >= CONTAINMENT_THRESHOLD (0.85) and the question is at most
    CONTAINMENT_MAX_RATIO (2) times longer: the suite question with words around it.

Measured on the shipped suites (Jaccard / containment): removed "how do I relay a messsage to tom?" (0.69
against "How do I relay a message to bob?"), "how do u relay a message 2 KD9QRT" (0.51), "how do u chk my
mail?" (0.63 against "How do I check my mail?"), "how do I check node sginal strength" (0.54), "i want to
play a game" (0.57), "quick q, how do i search my saved logs 4 fire" (0.51 / 0.91); kept "how do i check
the wx" (0.39), "how do I use /nuke?" (0.41 against "How do I use /deletemesh?"), "what is a good snr"
(0.42 / 0.80 against "What is SNR?"), "how do i read my private notes" (0.43 against "How do I create a
private note?"). Below 0.5 the pairs are mostly other questions sharing a frame; from 0.5 up, variants.
The price, accepted because a missed variant inflates a score and a dropped example costs little: some
false hits ("how do i start a stopwatch", 0.50 against "how do i start a /poll") and some misses ("relay a
message to TWR2?", 0.49; "how do I send mail to ranch?", 0.48 against "How do I send mail to the admin
mailbox?"). Suite n-grams sit in an inverted index read with a prefix filter (only
the rarest grams' postings), so a question costs a few set operations.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from meshai_common.errors import ConfigError

NGRAM = 4
JACCARD_THRESHOLD = 0.5
CONTAINMENT_THRESHOLD = 0.85
CONTAINMENT_MAX_RATIO = 2.0
_TEXT_KEYS = ("question", "prompt")
_LIST_KEYS = ("questions", "prompts")
_APOSTROPHES = str.maketrans({"\u2019": "", "\u2018": "", "'": "", "`": ""})
_NON_ALNUM = re.compile(r"[^0-9a-z]+")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# Radio shorthand spelled out and filler dropped before comparing: "how do u chk my mail pls" is
# "how do you check my mail".
_SHORTHAND = {"u": "you", "ur": "your", "r": "are", "2": "to", "4": "for", "chk": "check", "msg": "message",
              "msgs": "messages", "hw": "how", "wat": "what", "whats": "what is", "abt": "about", "thru": "through",
              "wx": "weather", "cmd": "command", "cmds": "commands", "ppl": "people", "b4": "before", "im": "i am",
              "w": "with", "pm": "message", "tmrw": "tomorrow", "rn": "now", "y": "why", "c": "see", "kno": "know"}
_FILLER = frozenset({"pls", "plz", "please", "hey", "hi", "yo", "thx", "thanks", "quick", "q", "ok", "okay", "so",
                     "just", "um", "uh"})


def _collect(node: Any, out: list[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _TEXT_KEYS and isinstance(value, str) and value.strip():
                out.append(value)
            elif key in _LIST_KEYS and isinstance(value, list):
                out.extend(v for v in value if isinstance(v, str) and v.strip())
            else:
                _collect(value, out)
    elif isinstance(node, list):
        for item in node:
            _collect(item, out)


def suite_questions(directory: str | Path) -> dict[str, list[str]]:
    """{suite name: its question texts, in file order} for every *.yaml / *.yml file in `directory`.

    The suite name is the file's `name` field, else its stem. A missing folder or an unreadable file is a
    ConfigError naming it.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: evaluation suites folder not found")
    out: dict[str, list[str]] = {}
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        try:
            doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)  # noqa: S506 - a safe loader
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read the evaluation suite: {exc}") from exc
        found: list[str] = []
        _collect(doc, found)
        name = doc.get("name") if isinstance(doc, dict) and isinstance(doc.get("name"), str) else path.stem
        out.setdefault(name, []).extend(found)
    return out


def normalize(text: str) -> str:
    """NFKC, lower case, apostrophes dropped, every run of other non-alphanumerics one space, radio shorthand
    spelled out, filler words dropped."""
    t = (text if text.isascii() else unicodedata.normalize("NFKC", text)).lower().translate(_APOSTROPHES)
    words = [_SHORTHAND.get(w, w) for w in _NON_ALNUM.sub(" ", t).split() if w not in _FILLER]
    return " ".join(words)


def ngrams(text: str, n: int = NGRAM) -> frozenset[str]:
    """Character n-grams of the normalized text, padded with a space at each end."""
    t = f" {normalize(text)} "
    if len(t) <= n:
        return frozenset({t}) if t.strip() else frozenset()
    return frozenset({t[i : i + n] for i in range(len(t) - n + 1)})


@dataclass(frozen=True)
class SuiteMatch:
    suite: str
    question: str  # the suite's question it matches
    jaccard: float
    containment: float  # share of the suite question's n-grams found in the text


class SuiteMatcher:
    """Near-duplicate test of training questions against evaluation questions (see the module doc)."""

    def __init__(self, suites: Mapping[str, Iterable[str]], *, jaccard: float = JACCARD_THRESHOLD,
                 containment: float = CONTAINMENT_THRESHOLD, max_ratio: float = CONTAINMENT_MAX_RATIO) -> None:
        self.jaccard, self.containment, self.max_ratio = jaccard, containment, max_ratio
        self.items: list[tuple[str, str, frozenset[str]]] = []
        self.postings: dict[str, list[int]] = defaultdict(list)
        seen: set[tuple[str, frozenset[str]]] = set()
        for suite, questions in suites.items():
            for q in questions:
                grams = ngrams(q)
                if not grams or (suite, grams) in seen:
                    continue
                seen.add((suite, grams))
                for g in grams:
                    self.postings[g].append(len(self.items))
                self.items.append((suite, q, grams))
        self.all_grams = frozenset(self.postings)
        self.df = {g: len(ids) for g, ids in self.postings.items()}
        # Least overlap, as a share of the question's grams, either test can pass with: Jaccard needs
        # jaccard * |question|; containment needs containment * |suite question| >= containment / max_ratio * |q|.
        self.min_share = min(jaccard, containment / max_ratio)

    def __len__(self) -> int:
        return len(self.items)

    def match(self, text: str) -> SuiteMatch | None:
        """The best-matching suite question when `text` is a near-duplicate of one, else None."""
        grams = ngrams(text)
        if not grams or not self.items:
            return None
        common = grams & self.all_grams
        need = max(1, math.ceil(self.min_share * len(grams) - 1e-9))
        if len(common) < need:
            return None
        # Prefix filter: a suite question sharing `need` grams shares one of the len(common) - need + 1
        # rarest, so only their (short) postings are read; each candidate is then checked in full.
        rarest = sorted(common, key=self.df.__getitem__)[: len(common) - need + 1]
        candidates = {i for g in rarest for i in self.postings[g]}
        best: SuiteMatch | None = None
        for i in sorted(candidates):
            suite, question, q_grams = self.items[i]
            inter = len(grams & q_grams)
            jac = inter / (len(grams) + len(q_grams) - inter)
            cont = inter / len(q_grams)
            hit = jac >= self.jaccard or (cont >= self.containment and len(grams) <= self.max_ratio * len(q_grams))
            if hit and (best is None or jac > best.jaccard):
                best = SuiteMatch(suite, question, round(jac, 3), round(cont, 3))
        return best
