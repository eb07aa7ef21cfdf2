"""Gateway settings: one deployment's defaults. Requests may override the radio budget per call."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from meshai_common.config import env, read_secret, secret_from_env
from meshai_common.errors import ConfigError
from meshai_common.inference import BOT_REPLY_SUFFIX, CoreSettings
from meshai_common.radio import CHUNK_BYTES, MAX_CHUNKS

__all__ = ["BOT_REPLY_SUFFIX", "GatewaySettings", "read_api_key"]
ON_OFF = {"on": True, "off": False}
GROUNDING_MODES = ("auto", "off")
# A shorter key is guessable by brute force over the network.
MIN_API_KEY_CHARS = 16


def read_api_key(path: str | os.PathLike[str], source: str = "--api-key-file") -> str:
    """The key in a file (a Kubernetes secret or a file readable only by the operator), stripped."""
    return read_secret(path, source)


# The smallest value each numeric setting accepts, and what an operator is told when it is smaller.
_LEAST: dict[str, tuple[int, str]] = {
    "chunk_bytes": (16, "must be >= 16"),
    "max_chunks": (0, "0 disables the budget; must be >= 0"),
    "num_ctx": (128, "must be >= 128"),
    "num_threads": (0, "0 uses every core; must be >= 0"),
    "num_batch": (1, "must be >= 1"),
    "max_queue": (0, "must be >= 0"),
    "max_body_bytes": (1024, "must be >= 1024"),
    "max_prompt_chars": (1, "must be >= 1"),
    "max_predict": (0, "0 means no cap; must be >= 0"),
    "num_instances": (1, "must be >= 1"),
}


@dataclass(frozen=True)
class GatewaySettings:
    model_name: str = "mesh-ai"
    # Other names clients may use for the served model (e.g. the bot's default "llama3.2:1b").
    aliases: tuple[str, ...] = ()
    # Radio budget: replies must fit max_chunks messages of chunk_bytes once the bot adds reply_suffix.
    chunk_bytes: int = CHUNK_BYTES
    max_chunks: int = MAX_CHUNKS
    reply_suffix: str = BOT_REPLY_SUFFIX
    # llama.cpp: context size the model is loaded with (requests may ask for less, not more).
    num_ctx: int = 2048
    num_threads: int = 0  # 0: all CPU cores
    num_batch: int = 512
    # Read the GGUF into memory instead of mapping it: a file replaced in place under a mapping would
    # corrupt the served model, and a hot swap must not depend on how the new file was written.
    use_mmap: bool = False
    # Admission: one generation at a time per model instance; this many more may wait, beyond that 503.
    max_queue: int = 8
    max_body_bytes: int = 1 << 20
    # How long a client may wait in the queue before it gets 503.
    queue_timeout_s: float = 120.0
    # Prompt text a request may carry (prompt + system + messages, in characters): longer ones are a 400.
    # Mesh-Master sends its `ollama_context_chars` of history (4000 by default), its system prompt and the
    # question: well under this.
    max_prompt_chars: int = 32_768
    # Most tokens one reply may generate, whatever num_predict asks (-1 or a huge value included): one
    # client cannot hold the model for minutes. 0: limited by the context only.
    max_predict: int = 1024
    # Independent llama.cpp instances of the served model: that many generations at once, the CPU threads
    # split among them (each instance holds its own copy of the weights).
    num_instances: int = 1
    # Radio replies may only name commands of the catalog (a grammar while sampling; see
    # meshai_common/inference/command_grammar.py).
    constrain_commands: bool = True
    # "auto": ground prompts (meshai_common.grounding) for a model whose Modelfile says it was trained with
    # grounding (`# meshai: grounding=...`); "off": never.
    grounding: str = "auto"
    # When set, every route but /healthz and /readyz needs `Authorization: Bearer <key>`.
    api_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        problems = [f"{name}={getattr(self, name)} ({why})" for name, (least, why) in _LEAST.items()
                    if getattr(self, name) < least]
        if self.grounding not in GROUNDING_MODES:
            problems.append(f"grounding={self.grounding!r} (must be one of {', '.join(GROUNDING_MODES)})")
        if self.api_key is not None and len(self.api_key) < MIN_API_KEY_CHARS:
            problems.append(f"the API key is {len(self.api_key)} characters (must be >= {MIN_API_KEY_CHARS})")
        if problems:
            raise ConfigError("invalid gateway settings: " + ", ".join(problems))

    @property
    def generation_slots(self) -> int:
        """Generations that may run at once: one per model instance."""
        return self.num_instances

    def core(self) -> CoreSettings:
        """What the generation core needs of these settings."""
        return CoreSettings(chunk_bytes=self.chunk_bytes, max_chunks=self.max_chunks,
                            reply_suffix=self.reply_suffix, max_predict=self.max_predict,
                            constrain_commands=self.constrain_commands)

    def with_overrides(self, **changes: object) -> GatewaySettings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls) -> GatewaySettings:
        """MESHAI_MODEL_NAME, MESHAI_MODEL_ALIASES (comma-separated), MESHAI_CHUNK_BYTES, MESHAI_MAX_CHUNKS,
        MESHAI_NUM_CTX, MESHAI_NUM_THREADS, MESHAI_NUM_INSTANCES, MESHAI_MAX_QUEUE, MESHAI_MAX_BODY_BYTES,
        MESHAI_MAX_PROMPT_CHARS, MESHAI_MAX_PREDICT, MESHAI_CONSTRAIN_COMMANDS (on|off), MESHAI_GROUNDING
        (auto|off), MESHAI_API_KEY or MESHAI_API_KEY_FILE; unset ones keep defaults."""
        ints = {
            "chunk_bytes": "MESHAI_CHUNK_BYTES",
            "max_chunks": "MESHAI_MAX_CHUNKS",
            "num_ctx": "MESHAI_NUM_CTX",
            "num_threads": "MESHAI_NUM_THREADS",
            "num_instances": "MESHAI_NUM_INSTANCES",
            "max_queue": "MESHAI_MAX_QUEUE",
            "max_body_bytes": "MESHAI_MAX_BODY_BYTES",
            "max_prompt_chars": "MESHAI_MAX_PROMPT_CHARS",
            "max_predict": "MESHAI_MAX_PREDICT",
        }
        changes: dict[str, object] = {"model_name": env("MESHAI_MODEL_NAME", cls.model_name)}
        for name, var in ints.items():
            raw = os.environ.get(var, "").strip()
            if raw:
                try:
                    changes[name] = int(raw)
                except ValueError:
                    raise ConfigError(f"environment variable {var}={raw!r} is not an integer") from None
        constrain = os.environ.get("MESHAI_CONSTRAIN_COMMANDS", "").strip().lower()
        if constrain:
            if constrain not in ON_OFF:
                raise ConfigError(f"environment variable MESHAI_CONSTRAIN_COMMANDS={constrain!r} must be on or off")
            changes["constrain_commands"] = ON_OFF[constrain]
        grounding = os.environ.get("MESHAI_GROUNDING", "").strip().lower()
        if grounding:
            if grounding not in GROUNDING_MODES:
                raise ConfigError(f"environment variable MESHAI_GROUNDING={grounding!r} must be auto or off")
            changes["grounding"] = grounding
        aliases = os.environ.get("MESHAI_MODEL_ALIASES", "").strip()
        if aliases:
            changes["aliases"] = tuple(a.strip() for a in aliases.split(",") if a.strip())
        key = secret_from_env("MESHAI_API_KEY")
        if key:
            changes["api_key"] = key
        return cls(**changes)  # type: ignore[arg-type]

