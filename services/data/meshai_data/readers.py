"""Read Mesh-Master's own files: message archives (current and rotated) and the mailbox store.

Archive: a JSON array of records {timestamp, node, node_id, message, emergency, reply_to, direct, channel_idx,
is_ai}. An AI reply has is_ai true and reply_to = the asking record's timestamp; the bot appends " (Ns)".
Question -> answer pairs are rebuilt from reply_to. What carries no usable text is dropped and counted:
empty or placeholder text ("📨 dm received"), error replies ("⚠️ OLLAMA error: ..."), the bot's empty-reply
fallback ("🤖 [No AI response]"), replies to timestamps that are not in the archives, and emergency traffic.

A file that is not JSON or not of the right shape is an error. A bad record inside a good file is skipped and
counted (its file and index are reported), or with strict=True raises at the first one.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshai_common.errors import InvalidInput

ARCHIVE_GLOB = "messages_archive*.json"
_ROTATED = re.compile(r"^messages_archive_(\d{8}_\d{6})\.json$")
MAX_PROBLEMS = 50  # problems kept verbatim for the report; the count is always exact

_BOT_SUFFIX = re.compile(r"\s*\(\d+(?:\.\d+)?\s?s\)\s*$")
_NODE_WITH_ID = re.compile(r"^(?P<short>.*?)\s*\((?P<id>![0-9a-fA-F]{8})\)\s*$")
_NODE_ID = re.compile(r"^![0-9a-fA-F]{8}$")
# An emoji (or other symbol) then a few lower-case words and nothing else: "📨 dm received", "✉️ mail sent".
_PLACEHOLDER = re.compile(r"^[^\w\s\[\]()/<>\"']+\s*[a-z]+(?: [a-z]+){0,3}$")
_WARNING_START = re.compile(r"^\s*(?:⚠|❌|🚫|⛔|❗|‼)")
_ERROR_WORDS = re.compile(
    r"(?i)^\W*(?:[\w-]+\s+){0,3}?(?:error|exception|traceback)\s*[:(\[]"
    r"|^\W*(?:ai|ollama|openai|lm ?studio|home assistant)\b.{0,40}\b(?:error|timed? ?out|unavailable|not responding|offline)\b"
)
_FALLBACK = re.compile(r"(?i)^\W*\[?\s*no (?:ai )?response\b")
_EMERGENCY = re.compile(r"(?i)(?:\b(?:emergency|sos|mayday|911)\b|🚨|🆘)")
# The user addressed the AI explicitly; the model saw only the rest.
_AI_PREFIX = re.compile(r"(?i)^/(?:ai|bot|data|system|meshtastic)\b[ \t:,-]*")
_COMMAND = re.compile(r"^/[A-Za-z]")


@dataclass(frozen=True)
class Record:
    timestamp: str
    node: str
    node_id: str | None
    message: str
    emergency: bool
    reply_to: str | None
    direct: bool
    channel_idx: int | None
    is_ai: bool
    source: str  # file name
    index: int  # position in its file

    @property
    def where(self) -> str:
        return f"{self.source} record {self.index}"


@dataclass(frozen=True)
class QAPair:
    question: str
    answer: str
    where: str  # "file record N" of the answer
    direct: bool


@dataclass
class ReadReport:
    """What reading found: counts per reason, and the first problems verbatim."""

    files: list[str] = field(default_factory=list)
    records: int = 0
    bad_records: int = 0
    problems: list[str] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    names: set[str] = field(default_factory=set)  # node short names seen (to scrub)

    def bad(self, message: str, strict: bool) -> None:
        if strict:
            raise InvalidInput(message)
        self.bad_records += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(message)


# -- files ------------------------------------------------------------------------------------------------


def archive_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders into archive files: rotated ones oldest first, then the current one."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(p.rglob(ARCHIVE_GLOB))
            if not found:
                raise InvalidInput(f"{p}: folder holds no {ARCHIVE_GLOB} file")
            out.extend(sorted(found, key=_archive_order))
        elif p.is_file():
            out.append(p)
        else:
            raise InvalidInput(f"{p}: archive not found")
    seen: set[Path] = set()
    unique = []
    for p in out:
        r = p.resolve()
        if r not in seen:
            seen.add(r)
            unique.append(p)
    return unique


def _archive_order(p: Path) -> tuple[int, str, str]:
    m = _ROTATED.match(p.name)
    return (0, m.group(1), str(p)) if m else (1, "", str(p))


def load_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc


# -- archives ---------------------------------------------------------------------------------------------

_REQUIRED = {"timestamp": str, "node": str, "message": str, "is_ai": bool}
_OPTIONAL: dict[str, tuple[type, ...]] = {
    "node_id": (str, type(None)), "emergency": (bool,), "reply_to": (str, type(None)), "direct": (bool,),
    "channel_idx": (int, type(None)),
}


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_record(raw: Any, where: str) -> str | None:
    """Why a raw archive record is unusable, or None."""
    if not isinstance(raw, dict):
        return f"{where}: expected an object, got {_type_name(raw)}"
    for key, typ in _REQUIRED.items():
        if key not in raw:
            return f"{where}: missing field '{key}'"
        if not isinstance(raw[key], typ):
            return f"{where}: field '{key}' must be {typ.__name__}, got {_type_name(raw[key])}"
    for key, types in _OPTIONAL.items():
        value = raw.get(key)
        # bool is an int in Python; a channel index of true is still wrong.
        if key in raw and (not isinstance(value, types) or (key == "channel_idx" and isinstance(value, bool))):
            want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            return f"{where}: field '{key}' must be {want}, got {_type_name(value)}"
    if not raw["timestamp"].strip():
        return f"{where}: field 'timestamp' is empty"
    return None


def read_archive(path: Path, report: ReadReport, *, strict: bool = False) -> list[Record]:
    data = load_json(path)
    if not isinstance(data, list):
        raise InvalidInput(f"{path}: expected a JSON array of message records, got {_type_name(data)}")
    report.files.append(str(path))
    out = []
    for i, raw in enumerate(data):
        problem = _check_record(raw, f"{path}: record {i}")
        if problem:
            report.bad(problem, strict)
            continue
        out.append(Record(
            timestamp=raw["timestamp"].strip(), node=raw["node"], node_id=raw.get("node_id"),
            message=raw["message"], emergency=bool(raw.get("emergency", False)), reply_to=raw.get("reply_to"),
            direct=bool(raw.get("direct", False)), channel_idx=raw.get("channel_idx"), is_ai=raw["is_ai"],
            source=path.name, index=i,
        ))
    report.records += len(data)
    return out


def read_archives(paths: Iterable[str | Path], *, strict: bool = False) -> tuple[list[Record], ReadReport]:
    """All records of all archives (files or folders), in order, exact repeats across files removed."""
    report = ReadReport()
    records: list[Record] = []
    seen: set[tuple] = set()
    for path in archive_files(paths):
        for rec in read_archive(path, report, strict=strict):
            key = (rec.timestamp, rec.node_id or rec.node, rec.message, rec.is_ai, rec.reply_to)
            if key in seen:  # rotated archives can overlap the current one
                report.skipped["duplicate_record"] += 1
                continue
            seen.add(key)
            records.append(rec)
            short, _ = node_parts(rec.node)
            if short and not rec.is_ai:
                report.names.add(short)
    return records, report


def node_parts(node: str) -> tuple[str | None, str | None]:
    """("Short", "!id") from "Short (!89449aaa)"; (None, "!id") from "!376be684"; ("Name", None) otherwise."""
    node = node.strip()
    m = _NODE_WITH_ID.match(node)
    if m:
        return (m.group("short") or None), m.group("id").lower()
    if _NODE_ID.match(node):
        return None, node.lower()
    return (node or None), None


# -- text rules -------------------------------------------------------------------------------------------


def strip_bot_suffix(text: str) -> str:
    """Remove the " (12s)" the bot appends to every AI reply."""
    return _BOT_SUFFIX.sub("", text)


def is_placeholder(text: str) -> bool:
    return bool(_PLACEHOLDER.match(text.strip()))


def is_error_reply(text: str) -> bool:
    t = text.strip()
    return bool(_WARNING_START.match(t) or _ERROR_WORDS.search(t))


def is_fallback_reply(text: str) -> bool:
    return bool(_FALLBACK.match(text.strip()))


def is_emergency_text(text: str) -> bool:
    return bool(_EMERGENCY.search(text))


def unusable_reason(text: str) -> str | None:
    """Why a message text cannot be a training turn (after the bot suffix is stripped), or None."""
    t = text.strip()
    if not t:
        return "empty"
    if is_fallback_reply(t):
        return "fallback_reply"
    if is_error_reply(t):
        return "error_reply"
    if is_placeholder(t):
        return "placeholder"
    return None


def question_text(message: str) -> tuple[str | None, str | None]:
    """(question, None) for a usable asking message, or (None, reason)."""
    reason = unusable_reason(message)
    if reason:
        return None, reason
    q = _AI_PREFIX.sub("", message.strip(), count=1).strip()
    if not q:
        return None, "empty"
    if _COMMAND.match(q):
        return None, "command_question"  # the bot answered it itself, not the model
    return q, None


def extract_pairs(records: list[Record], report: ReadReport) -> list[QAPair]:
    """Question -> answer pairs from AI replies and the records their reply_to points at."""
    asked: dict[str, list[Record]] = defaultdict(list)
    for rec in records:
        if not rec.is_ai:
            asked[rec.timestamp].append(rec)
    pairs: list[QAPair] = []
    skipped = report.skipped
    for rec in records:
        if not rec.is_ai:
            continue
        if rec.reply_to is None:
            skipped["ai_without_reply_to"] += 1
            continue
        answer = strip_bot_suffix(rec.message).strip()
        if answer != rec.message.strip():
            skipped["suffix_stripped"] += 1  # informational: the pair is kept
        if rec.emergency:
            skipped["emergency"] += 1
            continue
        reason = unusable_reason(answer)
        if reason:
            skipped[reason] += 1
            continue
        candidates = asked.get(rec.reply_to.strip())
        if not candidates:
            skipped["unknown_reply_to"] += 1
            continue
        if len({c.message.strip() for c in candidates}) > 1:
            skipped["ambiguous_reply_to"] += 1  # two different questions in the same second
            continue
        q_rec = candidates[0]
        if q_rec.emergency or is_emergency_text(q_rec.message):
            skipped["emergency"] += 1
            continue
        question, reason = question_text(q_rec.message)
        if question is None:
            skipped[reason or "empty"] += 1
            continue
        pairs.append(QAPair(question=question, answer=answer, where=rec.where, direct=q_rec.direct))
    return pairs


# -- mailboxes --------------------------------------------------------------------------------------------

FERNET_PREFIX = "gAAAAA"
_BOX_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,23}$")


@dataclass(frozen=True)
class MailItem:
    box: str
    body: str | None  # None when locked (PIN-encrypted)
    sender_short: str | None
    locked: bool


@dataclass
class Mailboxes:
    boxes: dict[str, list[MailItem]] = field(default_factory=dict)
    items: int = 0
    locked_items: int = 0
    bad_records: int = 0
    problems: list[str] = field(default_factory=list)
    skipped_boxes: int = 0  # names that cannot be typed in a command

    def bad(self, message: str, strict: bool) -> None:
        if strict:
            raise InvalidInput(message)
        self.bad_records += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(message)

    @property
    def names(self) -> list[str]:
        return sorted(self.boxes)

    def locked(self, box: str) -> bool:
        return any(item.locked for item in self.boxes.get(box, ()))

    @property
    def senders(self) -> set[str]:
        return {i.sender_short for items in self.boxes.values() for i in items if i.sender_short}


_MAIL_FIELDS = ("sender_id", "sender_short", "timestamp", "mailbox", "id")


def read_mailboxes(path: str | Path, *, strict: bool = False) -> Mailboxes:
    """mesh_mailboxes.json: {box: [{body, sender_id, sender_short, timestamp, mailbox, id}]}.

    Locked bodies (Fernet tokens) are counted, never read. Bodies are kept only in memory: nothing here
    copies them into training text.
    """
    path = Path(path)
    data = load_json(path)
    if not isinstance(data, dict):
        raise InvalidInput(f"{path}: expected a JSON object of mailbox name -> list of messages, "
                           f"got {_type_name(data)}")
    out = Mailboxes()
    for box, items in data.items():
        where = f"{path}: mailbox {box!r}"
        if not isinstance(items, list):
            out.bad(f"{where}: expected a list of messages, got {_type_name(items)}", strict)
            continue
        name = box.strip().lower()
        usable = bool(_BOX_NAME.match(name))
        if not usable:
            out.skipped_boxes += 1
        kept: list[MailItem] = []
        for i, raw in enumerate(items):
            rw = f"{where} record {i}"
            if not isinstance(raw, dict):
                out.bad(f"{rw}: expected an object, got {_type_name(raw)}", strict)
                continue
            if not isinstance(raw.get("body"), str):
                out.bad(f"{rw}: " + ("missing field 'body'" if "body" not in raw else
                                     f"field 'body' must be str, got {_type_name(raw['body'])}"), strict)
                continue
            wrong = next((k for k in _MAIL_FIELDS if k in raw and not isinstance(raw[k], str)), None)
            if wrong:
                out.bad(f"{rw}: field '{wrong}' must be str, got {_type_name(raw[wrong])}", strict)
                continue
            locked = raw["body"].startswith(FERNET_PREFIX)
            out.items += 1
            out.locked_items += locked
            kept.append(MailItem(box=name, body=None if locked else raw["body"],
                                 sender_short=raw.get("sender_short") or None, locked=locked))
        if usable:
            out.boxes.setdefault(name, []).extend(kept)
    return out
