"""What a generation request becomes on its way through the core, and what comes back.

Every API family (Ollama, OpenAI, gRPC, the evaluator's local model) reduces a call to a GenerationRequest;
GenerationCore.prepare turns it into a PreparedRequest (prompt tokens, sampling, radio budget, grammar) and
GenerationCore.run yields TextDelta events and one GenerationResult.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

# Mesh-Master appends " (Ns)" to every AI reply before chunking it; 120 s is its request timeout.
BOT_REPLY_SUFFIX = " (120s)"


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True)
class SamplingParams:
    """Ollama's options and defaults (num_predict -1: until the model stops or the context is full)."""

    num_predict: int = -1
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    mirostat: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    stop: tuple[str, ...] = ()
    seed: int | None = None
    num_ctx: int | None = None
    num_keep: int = 4

    @classmethod
    def merged(cls, *layers: Mapping[str, Any]) -> SamplingParams:
        """Defaults, then each layer in turn (model defaults, then the request); unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for layer in layers:
            for key, value in layer.items():
                if key in names and value is not None:
                    values[key] = tuple(value) if key == "stop" else value
        return replace(cls(), **values)


@dataclass(frozen=True)
class RadioBudget:
    chunk_bytes: int
    max_chunks: int  # 0: no budget
    suffix: str = ""

    @property
    def enabled(self) -> bool:
        return self.max_chunks > 0

    def as_dict(self) -> dict[str, Any]:
        return {"chunk_bytes": self.chunk_bytes, "max_chunks": self.max_chunks, "reserved_suffix": self.suffix}


@dataclass(frozen=True)
class GenerationRequest:
    """What every API family reduces to. Either `messages` (chat) or `prompt` (completion)."""

    prompt: str | None = None
    messages: tuple[ChatMessage, ...] = ()
    system: str | None = None
    raw: bool = False
    template: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)  # request options (validated types)
    format: str | dict[str, Any] | None = None


@dataclass(frozen=True)
class PreparedRequest:
    prompt: str
    tokens: list[int]
    params: SamplingParams
    budget: RadioBudget
    max_tokens: int
    grammar_spec: str | dict[str, Any] | None  # the request's JSON `format`
    truncated: bool
    # GBNF that keeps a radio reply to real commands (None: unconstrained, or a `format` grammar applies).
    command_grammar: str | None = None
    # Unknown slash words of the prompt the grammar lets the reply echo; the core drops their slash.
    echo: tuple[str, ...] = ()

    @property
    def radio(self) -> bool:
        """A radio reply: the budget applies (a JSON `format` is exempt, trimming would break it)."""
        return self.budget.enabled and self.grammar_spec is None


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class GenerationResult:
    text: str  # the whole reply (after trimming)
    tail: str  # reply text not yet sent as TextDelta events
    done_reason: str  # "stop" | "length" | "cancelled"
    trimmed: bool
    removed: str  # generated text cut off to meet the budget
    budget_stop: bool  # generation was stopped by the radio budget
    chunks: list[str]  # the reply as Mesh-Master will cut it
    budget: RadioBudget
    prompt_tokens: int
    completion_tokens: int
    prompt_eval_ns: int
    eval_ns: int

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / (self.eval_ns / 1e9) if self.eval_ns > 0 else 0.0


@dataclass
class DecodeProgress:
    """Filled in by a backend's token loop: when the first token came, how many, and why it stopped."""

    first_ns: int | None = None
    n_out: int = 0
    reason: str = "length"  # "stop" | "length" | "cancelled"
