"""`meshai chat`: talk to a model the way Mesh-Master talks to it, and see what the radio would send.

Each message is asked as the bot asks (mesh-master.py, `send_to_ollama` and `build_ollama_history`, snapshot
2025-10-10):
- the message is logged before the model is asked, so the `Context:` block ends with the question itself;
- the Context is the last `max_messages` lines ("<shortname>: <text>", the bot's replies with their " (Ns)"
  suffix), joined, then cut to its last `context_chars` characters (`ollama_context_chars`; the cut may fall
  inside a line, as the bot's does);
- the prompt is meshai_common.prompts.meshmaster_prompt (system text, Context, "Question: ...\\nAnswer:"),
  streamed from /api/generate with the bot's options;
- an empty reply becomes the bot's fallback line, " (Ns)" is appended, the text is cut to chunk_size x 5
  characters and split into radio chunks (meshai_common.radio.split_chunks); chunks past the fifth are
  dropped by the bot and shown as such.
The bot (since v1.99) logs DM text as placeholders ("📨 dm received"), so in a DM its model sees those lines
instead of the text; this chat keeps the text, as the bot does on a channel.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from meshai_common.errors import InvalidInput, MeshAIError
from meshai_common.ollama_client import BOT_OPTIONS, generate_url, stream_generate
from meshai_common.prompts import MESHMASTER_SYSTEM_PROMPT, meshmaster_prompt
from meshai_common.radio import BOT_MAX_CHUNKS, CHUNK_BYTES, MAX_CHUNKS, split_chunks, utf8_len

# Mesh-Master's config.json as shipped: ai_node_name "Mesh Master", ollama_context_chars 1600,
# ollama_max_messages 8, chunk_size 160. Its replies are logged under ai_node_name, which its
# get_node_shortname renders as "Node_<name>" (no radio node has that id).
BOT_LABEL = "Node_Mesh Master"
CONTEXT_CHARS = 1600
MAX_MESSAGES = 8
EMPTY_REPLY = "Mongo no know... Mongo only pawn in game of life"  # the bot's text for an empty model reply


def to_ascii(text: str) -> str:
    """The bot passes the question through unidecode (a GPL package this project does not ship): used when
    installed, else the text is left as typed."""
    try:
        from unidecode import unidecode
    except ImportError:
        return text
    return unidecode(text)


@dataclass
class MeshHistory:
    """One conversation's history as Mesh-Master keeps it for its `Context:` block."""

    context_chars: int = CONTEXT_CHARS
    max_messages: int = MAX_MESSAGES
    lines: list[str] = field(default_factory=list)

    def add(self, who: str, text: str) -> None:
        self.lines.append(f"{who}: {text}")

    def clear(self) -> None:
        self.lines.clear()

    def context(self) -> tuple[str, bool]:
        """The Context text and whether the character budget cut it (build_ollama_history)."""
        history = "\n".join(self.lines[-self.max_messages:]) if self.max_messages > 0 else ""
        if len(history) > self.context_chars:
            return history[-self.context_chars:].strip(), True
        return history.strip(), False


@dataclass(frozen=True)
class ChatSettings:
    url: str
    model: str = "mesh-ai"
    user_name: str = "ME"
    bot_label: str = BOT_LABEL
    bot_system: str = MESHMASTER_SYSTEM_PROMPT
    context_chars: int = CONTEXT_CHARS
    max_messages: int = MAX_MESSAGES
    chunk_bytes: int = CHUNK_BYTES
    max_chunks: int = MAX_CHUNKS  # the project's budget, reported; the bot itself sends up to 5
    api_key: str | None = None
    timeout_s: float = 120.0
    show_prompt: bool = False
    options: Mapping[str, Any] = field(default_factory=lambda: dict(BOT_OPTIONS))


@dataclass(frozen=True)
class Turn:
    prompt: str
    reply: str  # the model's text as streamed
    sent: str  # what the bot sends: reply (or its fallback) + " (Ns)", cut to chunk_size x 5 characters
    chunks: list[str]  # radio messages the bot sends (at most 5)
    dropped: list[str]  # chunks the bot drops
    first_token_s: float | None
    total_s: float


class Chat:
    """The conversation: history, asking, and what the radio would carry. I/O stays with the caller."""

    def __init__(self, settings: ChatSettings, clock: Callable[[], float] = time.perf_counter) -> None:
        if settings.chunk_bytes < 4 or settings.context_chars < 0 or settings.max_messages < 0:
            raise InvalidInput("chat: --chunk-bytes must be >= 4, --context-chars and --max-messages >= 0")
        self.settings = settings
        self.endpoint = generate_url(settings.url)  # the evaluator's rules too: one --url for both
        self.history = MeshHistory(settings.context_chars, settings.max_messages)
        self.clock = clock

    def prompt_for(self, message: str) -> str:
        """Log the message, then build the prompt from the history that now ends with it (as the bot does)."""
        self.history.add(self.settings.user_name, message)
        context, _ = self.history.context()
        return meshmaster_prompt(to_ascii(message), [context] if context else (), self.settings.bot_system)

    def ask(self, message: str, on_text: Callable[[str], None] = lambda _t: None) -> Turn:
        s = self.settings
        prompt = self.prompt_for(message)
        t0 = self.clock()
        first: float | None = None
        parts: list[str] = []
        for line in stream_generate(self.endpoint, s.model, prompt, s.options, api_key=s.api_key,
                                    timeout_s=s.timeout_s):
            piece = line.get("response", "")
            if not piece:
                continue
            if first is None:
                first = self.clock() - t0
            parts.append(piece)
            on_text(piece)
        total = self.clock() - t0
        limit = s.chunk_bytes * BOT_MAX_CHUNKS  # MAX_RESPONSE_LENGTH: characters, not bytes
        reply = "".join(parts)[:limit]
        sent = (f"{reply or EMPTY_REPLY} ({int(round(max(0.01, total)))}s)")[:limit]
        chunks = split_chunks(sent, s.chunk_bytes)
        self.history.add(s.bot_label, sent)
        return Turn(prompt=prompt, reply=reply, sent=sent, chunks=chunks[:BOT_MAX_CHUNKS],
                    dropped=chunks[BOT_MAX_CHUNKS:], first_token_s=first, total_s=total)


def format_turn(turn: Turn, settings: ChatSettings) -> str:
    """The radio view of one reply: each chunk with its UTF-8 bytes, then the timing."""
    n = len(turn.chunks)
    lines = []
    for i, chunk in enumerate(turn.chunks, 1):
        lines.append(f"  [{i}/{n}] {utf8_len(chunk):>3} B | {chunk}")
    for chunk in turn.dropped:
        lines.append(f"  [dropped] {utf8_len(chunk):>3} B | {chunk}")
    budget = "within" if n <= settings.max_chunks and not turn.dropped else "OVER"
    first = f"{turn.first_token_s:.2f} s" if turn.first_token_s is not None else "-"
    lines.append(f"  {n} chunk{'s' if n != 1 else ''}, {utf8_len(turn.sent)} B sent ({budget} the "
                 f"{settings.max_chunks} x {settings.chunk_bytes} B budget); first token {first}, "
                 f"total {turn.total_s:.2f} s")
    return "\n".join(lines)


HELP = "/reset clears the history, /quit leaves; other /commands are answered by Mesh-Master, not the model."


def run_chat(settings: ChatSettings, inp: TextIO, out: TextIO, clock: Callable[[], float] = time.perf_counter,
             ) -> int:
    """The interactive loop over any text streams (a terminal, or a test's). Ends at /quit or end of input."""
    chat = Chat(settings, clock)
    out.write(f"chat with {settings.model} at {chat.endpoint} as Mesh-Master asks it (Context: last "
              f"{settings.max_messages} lines, {settings.context_chars} chars; {settings.chunk_bytes}-byte "
              f"chunks).\n{HELP}\n")
    while True:
        out.write(f"{settings.user_name}> ")
        out.flush()
        line = inp.readline()
        if not line:
            out.write("\n")
            return 0
        message = line.strip()
        if not message:
            continue
        if message == "/quit":
            return 0
        if message == "/reset":
            chat.history.clear()
            out.write("history cleared\n")
            continue
        if message.startswith("/"):
            out.write(f"Mesh-Master answers {message.split()[0]} itself; the model never sees it. {HELP}\n")
            continue
        try:
            turn = chat.ask(message, on_text=lambda t: (out.write(t), out.flush()))
        except MeshAIError as exc:
            out.write(f"\nerror: {exc}\n")
            continue
        except KeyboardInterrupt:
            out.write("\n(interrupted)\n")
            continue
        out.write("\n")
        if settings.show_prompt:
            out.write("  prompt sent:\n" + "".join(f"    | {ln}\n" for ln in turn.prompt.split("\n")))
        out.write(format_turn(turn, settings) + "\n")


def register(sub: argparse._SubParsersAction, default_url: Callable[[argparse.Namespace], str],
             api_key: Callable[[], str | None]) -> None:
    """Add `meshai chat`; default_url(args) is the embedded stack's gateway (or MESHAI_GATEWAY_URL)."""
    p = sub.add_parser("chat", help="talk to a model as Mesh-Master asks it, and see the radio chunks")
    p.add_argument("--url", help="gateway or any Ollama endpoint (default: the embedded stack's gateway, "
                   "$MESHAI_GATEWAY_URL, else http://127.0.0.1:11434)")
    p.add_argument("--model", default="mesh-ai")
    p.add_argument("--name", default="ME", help="your short name in the Context lines")
    p.add_argument("--bot-label", default=BOT_LABEL, help="how the bot's own lines appear in its Context")
    p.add_argument("--system", default=MESHMASTER_SYSTEM_PROMPT, help="the bot's system_prompt")
    p.add_argument("--context-chars", type=int, default=CONTEXT_CHARS, help="the bot's ollama_context_chars")
    p.add_argument("--max-messages", type=int, default=MAX_MESSAGES, help="the bot's ollama_max_messages")
    p.add_argument("--chunk-bytes", type=int, default=CHUNK_BYTES, help="the bot's chunk_size")
    p.add_argument("--show-prompt", action="store_true", help="print the exact prompt sent with each reply")

    def run(args: argparse.Namespace) -> int:
        import sys

        settings = ChatSettings(url=args.url or default_url(args), model=args.model, user_name=args.name,
                                bot_label=args.bot_label, bot_system=args.system,
                                context_chars=args.context_chars, max_messages=args.max_messages,
                                chunk_bytes=args.chunk_bytes, api_key=api_key(), show_prompt=args.show_prompt)
        try:
            return run_chat(settings, sys.stdin, sys.stdout)
        except KeyboardInterrupt:
            print()
            return 0

    p.set_defaults(func=run)
