"""Prompts every stage agrees on.

`DEFAULT_SYSTEM_PROMPT` is the one system line used in the training data, the Modelfile SYSTEM, the evaluator
and the gateway's default: the model is trained and judged under the prompt it is served with.

`meshmaster_prompt` builds the exact text Mesh-Master sends as Ollama's `prompt` (it sends no `system` field):
the bot's own system text, a `Context:` block of "<shortname>: <text>" history lines and `Question: <text>`,
joined by blank lines, then "\\nAnswer:". `parse_meshmaster_prompt` takes such a text apart again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_SYSTEM_PROMPT = "You are Mesh-AI on a LoRa mesh. Reply briefly; use only real commands."

# A stand-in for the operator's `system_prompt` in Mesh-Master's config.json (each operator writes their own).
MESHMASTER_SYSTEM_PROMPT = "You answer questions on a Meshtastic radio mesh. Keep replies short: bandwidth is scarce."

_ANSWER_TAIL = "\nAnswer:"
_TAIL_RE = re.compile(r"\nAnswer:\s*$")


def _context_line(line: str | tuple[str, str]) -> str:
    if isinstance(line, tuple):
        short, text = line
        return f"{short}: {text}"
    return line


def meshmaster_prompt(
    question: str,
    context_lines: Iterable[str | tuple[str, str]] = (),
    bot_system: str = MESHMASTER_SYSTEM_PROMPT,
) -> str:
    """The prompt Mesh-Master sends for `question`.

    context_lines: recent history, either ready "<shortname>: <text>" strings or (shortname, text) pairs,
    oldest first. An empty bot_system or context is left out (as the bot does), never sent as a blank part.
    """
    parts = []
    if bot_system.strip():
        parts.append(bot_system.strip())
    lines = [_context_line(x) for x in context_lines]
    if lines:
        parts.append("Context:\n" + "\n".join(lines))
    parts.append(f"Question: {question.strip()}")
    return "\n\n".join(parts) + _ANSWER_TAIL


@dataclass(frozen=True)
class MeshmasterPrompt:
    system: str
    context: tuple[str, ...]
    question: str


def parse_meshmaster_prompt(prompt: str) -> MeshmasterPrompt | None:
    """Split a Mesh-Master prompt into its parts; None when the text does not have that shape."""
    m = _TAIL_RE.search(prompt)
    if not m:
        return None
    body = prompt[: m.start()]
    if body.startswith("Question: "):
        head, question = "", body[len("Question: "):]
    else:
        head, sep, question = body.rpartition("\n\nQuestion: ")
        if not sep:
            return None
    context: tuple[str, ...] = ()
    if head.startswith("Context:\n"):
        system, block = "", head[len("Context:\n"):]
        context = tuple(block.split("\n"))
    else:
        system, sep, block = head.partition("\n\nContext:\n")
        if sep:
            context = tuple(block.split("\n"))
    return MeshmasterPrompt(system=system, context=context, question=question.strip())


def question_of(user_text: str) -> str:
    """The question a user turn asks: the `Question:` of a Mesh-Master prompt, else the text itself."""
    parsed = parse_meshmaster_prompt(user_text)
    return parsed.question if parsed else user_text.strip()
