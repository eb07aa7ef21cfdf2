"""Gateway settings: one deployment's defaults. Requests may override the radio budget per call."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from meshai_common.config import env
from meshai_common.errors import ConfigError
from meshai_common.radio import CHUNK_BYTES, MAX_CHUNKS

# Mesh-Master appends " (Ns)" to every AI reply before chunking it; 120 s is its request timeout.
BOT_REPLY_SUFFIX = " (120s)"


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
    # Admission: generations run one at a time per model; this many more may wait, beyond that 503.
    max_concurrent: int = 1
    max_queue: int = 8
    max_body_bytes: int = 1 << 20
    # How long a client may wait in the queue before it gets 503.
    queue_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        problems = []
        if self.chunk_bytes < 16:
            problems.append(f"chunk_bytes={self.chunk_bytes} (must be >= 16)")
        if self.max_chunks < 0:
            problems.append(f"max_chunks={self.max_chunks} (0 disables the budget; must be >= 0)")
        if self.num_ctx < 128:
            problems.append(f"num_ctx={self.num_ctx} (must be >= 128)")
        if self.max_concurrent < 1:
            problems.append(f"max_concurrent={self.max_concurrent} (must be >= 1)")
        if self.max_queue < 0:
            problems.append(f"max_queue={self.max_queue} (must be >= 0)")
        if self.max_body_bytes < 1024:
            problems.append(f"max_body_bytes={self.max_body_bytes} (must be >= 1024)")
        if problems:
            raise ConfigError("invalid gateway settings: " + ", ".join(problems))

    def with_overrides(self, **changes: object) -> GatewaySettings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls) -> GatewaySettings:
        """MESHAI_MODEL_NAME, MESHAI_MODEL_ALIASES (comma-separated), MESHAI_CHUNK_BYTES, MESHAI_MAX_CHUNKS,
        MESHAI_NUM_CTX, MESHAI_NUM_THREADS, MESHAI_MAX_QUEUE, MESHAI_MAX_BODY_BYTES; unset ones keep defaults."""
        ints = {
            "chunk_bytes": "MESHAI_CHUNK_BYTES",
            "max_chunks": "MESHAI_MAX_CHUNKS",
            "num_ctx": "MESHAI_NUM_CTX",
            "num_threads": "MESHAI_NUM_THREADS",
            "max_queue": "MESHAI_MAX_QUEUE",
            "max_body_bytes": "MESHAI_MAX_BODY_BYTES",
        }
        changes: dict[str, object] = {"model_name": env("MESHAI_MODEL_NAME", cls.model_name)}
        for name, var in ints.items():
            raw = os.environ.get(var, "").strip()
            if raw:
                try:
                    changes[name] = int(raw)
                except ValueError:
                    raise ConfigError(f"environment variable {var}={raw!r} is not an integer") from None
        aliases = os.environ.get("MESHAI_MODEL_ALIASES", "").strip()
        if aliases:
            changes["aliases"] = tuple(a.strip() for a in aliases.split(",") if a.strip())
        return cls(**changes)  # type: ignore[arg-type]

