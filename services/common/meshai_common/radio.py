"""The radio budget: how much text a reply may be once Mesh-Master cuts it into LoRa messages.

Mesh-Master cuts every reply into chunks of `chunk_size` UTF-8 *bytes* (160 typical), breaking at a space,
newline, tab or '-' found in the last 30 characters of the chunk when there is one, and never inside a
character. Each chunk is one radio message, spaced ~5 s apart, so the project's rule is that a good reply
fits 2 chunks of 160 bytes.

Two ways of measuring are offered, on purpose:
- bytes (`trim_to_budget`, `budget_bytes`): the simple rule the data and evaluation stages state (<= 320 B);
- chunks (`fits_budget`, `trim_to_chunks`, `BudgetStream`): what the radio actually sends. Breaking at a
  space wastes up to 30 bytes per chunk, so 300 bytes can need 3 chunks. The gateway uses this one.

Trimming prefers a sentence end (if it keeps at least `min_keep` of the budget), else a word end, else a
hard cut marked with "...". `BudgetStream` applies the same rule while tokens arrive, releasing only text
that the final trimmed reply is certain to start with, so a client that concatenates the stream (as the
bot does) receives exactly the trimmed reply.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

CHUNK_BYTES = 160
MAX_CHUNKS = 2
BOT_MAX_CHUNKS = 5  # the bot silently drops anything after its 5th chunk
BREAK_CHARS = frozenset(" \n\t-")
BREAK_WINDOW = 30  # characters at the end of a chunk searched for a break
ELLIPSIS = "..."  # ASCII: 3 bytes on every radio and client
SENTENCE_ENDS = frozenset(".!?…。！？")
CLOSERS = frozenset("\"')]}”’»")
MIN_KEEP = 0.5  # a sentence-end cut must keep at least this share of the budget

Fits = Callable[[str], bool]


def utf8_len(text: str) -> int:
    """Bytes the text takes on the radio (lone surrogates, which cannot be sent, count as 3)."""
    return len(text.encode("utf-8", "surrogatepass"))


def budget_bytes(chunk_bytes: int = CHUNK_BYTES, max_chunks: int = MAX_CHUNKS) -> int:
    return chunk_bytes * max_chunks


def _char_bytes(ch: str) -> int:
    code = ord(ch)
    return 1 if code < 0x80 else 2 if code < 0x800 else 3 if code < 0x10000 else 4


def _prefix_chars(text: str, max_bytes: int) -> int:
    """Number of leading characters whose UTF-8 encoding fits in max_bytes (never half a character)."""
    used = 0
    for i, ch in enumerate(text[:max_bytes]):  # every character takes >= 1 byte
        used += _char_bytes(ch)
        if used > max_bytes:
            return i
    return min(len(text), max_bytes)


def split_chunks(text: str, chunk_bytes: int = CHUNK_BYTES) -> list[str]:
    """Cut text into radio messages the way Mesh-Master does.

    Each chunk is at most chunk_bytes UTF-8 bytes. When the rest does not fit, the cut goes after the last
    space, newline, tab or '-' within the chunk's last 30 characters (the '-' stays with the chunk, the
    whitespace is dropped), else at the byte limit on a character boundary. Whitespace at chunk edges is
    not sent; an empty or blank text gives no chunks.
    """
    if chunk_bytes < 4:
        raise ValueError(f"chunk_bytes must be >= 4 (one UTF-8 character), got {chunk_bytes}")
    chunks: list[str] = []
    rest = text.strip()
    while rest:
        if utf8_len(rest) <= chunk_bytes:
            chunks.append(rest)
            break
        end = _prefix_chars(rest, chunk_bytes)
        cut = -1
        for i in range(end - 1, max(0, end - BREAK_WINDOW) - 1, -1):
            if rest[i] in BREAK_CHARS:
                cut = i
                break
        if cut > 0:
            keep = cut + 1 if rest[cut] == "-" else cut
            piece, rest = rest[:keep], rest[cut + 1:]
        else:
            piece, rest = rest[:end], rest[end:]
        piece = piece.rstrip()
        if piece:
            chunks.append(piece)
        rest = rest.lstrip()
    return chunks


def chunk_count(text: str, chunk_bytes: int = CHUNK_BYTES) -> int:
    return len(split_chunks(text, chunk_bytes))


def fits_budget(text: str, chunk_bytes: int = CHUNK_BYTES, max_chunks: int = MAX_CHUNKS) -> bool:
    """True when the bot would send the text in at most max_chunks radio messages."""
    return chunk_count(text, chunk_bytes) <= max_chunks


@dataclass(frozen=True)
class BudgetReport:
    """The training guide's `analyze_response`, measured in bytes and real chunks."""

    bytes: int
    chars: int
    chunk_count: int
    fits_budget: bool
    trim_needed: bool
    token_estimate: int
    budget_utilization: float  # percent of chunk_bytes * max_chunks


def analyze(text: str, chunk_bytes: int = CHUNK_BYTES, max_chunks: int = MAX_CHUNKS) -> BudgetReport:
    n_bytes = utf8_len(text)
    count = chunk_count(text, chunk_bytes)
    fits = count <= max_chunks
    return BudgetReport(
        bytes=n_bytes,
        chars=len(text),
        chunk_count=count,
        fits_budget=fits,
        trim_needed=not fits,
        token_estimate=math.ceil(len(text) / 4),
        budget_utilization=round(100.0 * n_bytes / budget_bytes(chunk_bytes, max_chunks), 1),
    )


# -- trimming -------------------------------------------------------------------------------------------

def _is_sentence_end(text: str, i: int, *, confirmed: bool = False) -> bool:
    """text[:i] ends a sentence: '.', '!' or '?' (maybe closed by a quote or bracket) then whitespace, or
    a line break. At the very end of the text a sentence end counts only when not `confirmed` (a streamed
    text may still continue: "2." may become "2.5")."""
    if i <= 0 or i > len(text):
        return False
    if i == len(text):
        if confirmed:
            return False
    elif not text[i].isspace():
        return False
    prev = text[i - 1]
    if i < len(text) and text[i] == "\n" and not prev.isspace():
        return True
    if prev in SENTENCE_ENDS:
        return True
    return prev in CLOSERS and i >= 2 and text[i - 2] in SENTENCE_ENDS


def _is_word_end(text: str, i: int) -> bool:
    return 0 < i < len(text) and text[i].isspace() and not text[i - 1].isspace()


def _reach(text: str, max_bytes: int) -> int:
    """Longest prefix whose non-whitespace characters take at most max_bytes: an upper bound for any prefix
    that fits max_bytes of chunks, since chunking drops only whitespace."""
    used = 0
    for i, ch in enumerate(text):
        if not ch.isspace():
            used += _char_bytes(ch)
            if used > max_bytes:
                return i
    return len(text)


def _hard_cut_ok(text: str, i: int) -> bool:
    return i == 0 or not text[i - 1].isspace()


def _best_cut(text: str, fits: Fits, upper_bytes: int, min_keep_bytes: float) -> tuple[int, bool]:
    """Where to cut a text that does not fit: (index, add_ellipsis). BudgetStream._commit_point mirrors
    this rule; keep them in step."""
    n_max = _reach(text, upper_bytes)  # no longer prefix can fit
    for i in range(n_max, 0, -1):
        if _is_sentence_end(text, i) and fits(text[:i]):
            if utf8_len(text[:i]) < min_keep_bytes:
                break
            return i, False
    for i in range(n_max, 0, -1):
        if _is_word_end(text, i) and fits(text[:i]):
            return i, False
    for i in range(n_max, -1, -1):
        if _hard_cut_ok(text, i) and fits(text[:i] + ELLIPSIS):
            return i, True
    return 0, False  # a budget too small for even "..."


def _trim(text: str, fits: Fits, upper_bytes: int, min_keep_bytes: float) -> tuple[str, bool]:
    if fits(text):
        return text, False
    cut, ellipsis = _best_cut(text, fits, upper_bytes, min_keep_bytes)
    return text[:cut] + (ELLIPSIS if ellipsis else ""), True


def trim_to_budget(text: str, budget_bytes: int = CHUNK_BYTES * MAX_CHUNKS, *,
                   min_keep: float = MIN_KEEP) -> tuple[str, bool]:
    """Cut text to at most budget_bytes UTF-8 bytes. Returns (text, trimmed).

    Prefers the last sentence end that keeps >= min_keep of the budget, else the last word end, else a hard
    cut (on a character boundary) followed by "...". Text that fits is returned unchanged.
    """
    if budget_bytes < len(ELLIPSIS):
        raise ValueError(f"budget_bytes must be >= {len(ELLIPSIS)}, got {budget_bytes}")
    return _trim(text, lambda t: utf8_len(t) <= budget_bytes, budget_bytes, min_keep * budget_bytes)


def chunk_fits(chunk_bytes: int = CHUNK_BYTES, max_chunks: int = MAX_CHUNKS, suffix: str = "") -> Fits:
    """Predicate: the text plus the suffix the bot appends (e.g. " (12s)") fits max_chunks radio messages."""
    return lambda t: len(split_chunks(t + suffix, chunk_bytes)) <= max_chunks


def trim_to_chunks(text: str, chunk_bytes: int = CHUNK_BYTES, max_chunks: int = MAX_CHUNKS, *,
                   suffix: str = "", min_keep: float = MIN_KEEP) -> tuple[str, bool]:
    """Like trim_to_budget, but the measure is what the radio sends: at most max_chunks chunks of
    chunk_bytes, counting a suffix the bot appends to every reply."""
    upper = chunk_bytes * max_chunks
    return _trim(text, chunk_fits(chunk_bytes, max_chunks, suffix), upper,
                 min_keep * max(0, upper - utf8_len(suffix)))


# -- streaming ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BudgetResult:
    text: str  # the final reply
    tail: str  # what finish() releases: text minus what feed() already released
    trimmed: bool
    removed: str  # generated text that was cut off (empty when not trimmed)


class BudgetStream:
    """Enforce a budget on text that arrives piece by piece (tokens).

    feed(piece) returns (text safe to send now, over_budget). Once over_budget is True the producer should
    stop and call finish(). Text is released only up to a point the final reply is sure to contain, so the
    concatenation of everything released equals finish().text. With fits=None there is no budget and text
    is released as it comes (trailing whitespace held back).
    """

    def __init__(self, fits: Fits | None = None, *, upper_bytes: int = 0, min_keep_bytes: float = 0.0) -> None:
        self.fits = fits
        self.upper_bytes = upper_bytes
        self.min_keep_bytes = min_keep_bytes
        self.text = ""  # accepted text (always fits)
        self.over: str | None = None  # accepted text plus the piece that broke the budget
        self.released = 0  # characters of self.text already released

    @classmethod
    def for_chunks(cls, chunk_bytes: int = CHUNK_BYTES, max_chunks: int = MAX_CHUNKS, *, suffix: str = "",
                   min_keep: float = MIN_KEEP) -> BudgetStream:
        upper = chunk_bytes * max_chunks
        return cls(chunk_fits(chunk_bytes, max_chunks, suffix), upper_bytes=upper,
                   min_keep_bytes=min_keep * max(0, upper - utf8_len(suffix)))

    @classmethod
    def unlimited(cls) -> BudgetStream:
        return cls(None)

    @property
    def over_budget(self) -> bool:
        return self.over is not None

    def feed(self, piece: str) -> tuple[str, bool]:
        if self.over is not None:
            self.over += piece
            return "", True
        candidate = self.text + piece
        if self.fits is not None and not self.fits(candidate):
            self.over = candidate
            return "", True
        self.text = candidate
        commit = self._commit_point()
        if commit <= self.released:
            return "", False
        out = self.text[self.released:commit]
        self.released = commit
        return out, False

    def _commit_point(self) -> int:
        """How far the final reply is certain to agree with the accepted text (mirrors _best_cut)."""
        text = self.text
        limit = len(text.rstrip())  # trailing whitespace is never part of a reply
        if self.fits is None:
            return limit
        fits = self.fits
        # A sentence end confirmed by what follows and keeping enough: the final cut is there or later.
        for i in range(limit, 0, -1):
            if _is_sentence_end(text, i, confirmed=True) and fits(text[:i]):
                if utf8_len(text[:i]) >= self.min_keep_bytes:
                    return i
                break
        # Else the last word end: any later sentence end or word end comes after it.
        for i in range(limit, 0, -1):
            if _is_word_end(text, i) and fits(text[:i]):
                return i
        # No word end at all: the final reply may be a hard cut plus "...".
        for i in range(limit, -1, -1):
            if _hard_cut_ok(text, i) and fits(text[:i] + ELLIPSIS):
                return i
        return 0

    def finish(self) -> BudgetResult:
        if self.over is None:
            final, trimmed, removed = self.text.rstrip(), False, ""
        else:
            assert self.fits is not None
            cut, ellipsis = _best_cut(self.over, self.fits, self.upper_bytes, self.min_keep_bytes)
            final, trimmed, removed = self.over[:cut] + (ELLIPSIS if ellipsis else ""), True, self.over[cut:]
        released = self.text[: self.released]
        if not final.startswith(released):
            # Cannot happen while _commit_point mirrors _best_cut; a test guards it.
            raise AssertionError(f"released text {released!r} is not a prefix of the final reply {final!r}")
        return BudgetResult(text=final, tail=final[len(released):], trimmed=trimmed, removed=removed.strip())
