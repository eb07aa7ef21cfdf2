"""A GGUF on local disk, asked exactly as the gateway asks the model it serves.

`LocalModel.generate(prompt, options)` is what the gateway does for an Ollama `/api/generate` request with
that prompt, no `system` field and those options: the same core (system prompt, chat template, Modelfile
defaults, radio budget with the bot's " (120s)" suffix, command grammar, grounding) on the same llama.cpp
binding. What is judged is what is served.

    with LocalModel.open(Path("model.gguf")) as model:
        reply = model.generate(meshmaster_prompt("how do I see nodes?"), {"temperature": 0.7, "seed": 1}).text
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from meshai_common.errors import InvalidInput, NotFound
from meshai_common.inference.core import CoreSettings, GenerationCore, resolve_grounder
from meshai_common.inference.types import GenerationRequest, GenerationResult
from meshai_common.modelfile import Modelfile, parse_modelfile


def sibling_modelfile(gguf: Path) -> Modelfile:
    """The Modelfile the gateway would serve a local GGUF with: `<gguf>.Modelfile`, else a `Modelfile` next
    to it, else none (an empty one)."""
    for candidate in (gguf.with_name(gguf.name + ".Modelfile"), gguf.with_name("Modelfile")):
        if candidate.is_file():
            return parse_modelfile(candidate.read_text(encoding="utf-8"), source=str(candidate))
    return Modelfile()


_INT_OPTIONS = {"num_predict", "num_ctx", "num_keep", "seed", "top_k", "repeat_last_n", "mirostat", "chunk_bytes",
                "max_chunks"}
_FLOAT_OPTIONS = {"temperature", "top_p", "min_p", "typical_p", "repeat_penalty", "presence_penalty",
                  "frequency_penalty", "mirostat_tau", "mirostat_eta"}


def request_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Options as the gateway's Ollama route hands them to the core: None dropped, 80.0 taken as 80, one
    `stop` string as one sequence (empty ones dropped); a wrong type is InvalidInput naming the option."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:
            continue
        if key in _INT_OPTIONS or key in _FLOAT_OPTIONS:
            if isinstance(value, float) and key in _INT_OPTIONS and value.is_integer():
                value = int(value)
            wanted = int if key in _INT_OPTIONS else (int, float)
            if isinstance(value, bool) or not isinstance(value, wanted):
                raise InvalidInput(f"options.{key}: expected {'an integer' if key in _INT_OPTIONS else 'a number'}, "
                                   f"got {value!r}")
        elif key == "stop":
            stops = [value] if isinstance(value, str) else value
            if not isinstance(stops, list | tuple) or not all(isinstance(x, str) for x in stops):
                raise InvalidInput(f"options.stop: expected a string or a list of strings, got {value!r}")
            value = [x for x in stops if x]
        out[key] = value
    return out


class LocalModel:
    """One llama.cpp instance of a GGUF with the gateway's generation core. One generation at a time
    (calls from several threads wait for each other)."""

    def __init__(self, core: GenerationCore) -> None:
        self.core = core
        self._lock = threading.Lock()

    @classmethod
    def open(cls, gguf: Path, modelfile: Modelfile | None = None, *, n_ctx: int = 1024, n_threads: int = 0,
             chunk_bytes: int = 160, max_chunks: int = 2, constrain_commands: bool = True,
             grounding: str | None = None) -> LocalModel:
        """Load `gguf` with `modelfile` (None: the one the gateway would find next to the file).

        n_ctx: context size, raised to the Modelfile's num_ctx when that is larger (as the gateway does).
        n_threads: llama.cpp threads (0: every core). chunk_bytes, max_chunks: the deployment's radio budget
        (max_chunks=0 turns it off; the Modelfile's and the request's values take precedence, as in the
        gateway). constrain_commands: the command grammar on radio replies (MESHAI_CONSTRAIN_COMMANDS).
        grounding: None follows the Modelfile's `# meshai: grounding=...`; "off" or "" disables it; a
        grounding version grounds prompts as that version does (MESHAI_GROUNDING=auto|off in the gateway).
        """
        from meshai_common.inference.llama_backend import open_backends

        gguf = Path(gguf).expanduser()
        if not gguf.is_file():
            raise NotFound(f"model file {gguf} does not exist")
        if modelfile is None:
            modelfile = sibling_modelfile(gguf)
        if chunk_bytes < 16 or max_chunks < 0 or n_ctx < 128 or n_threads < 0:
            raise InvalidInput(f"LocalModel.open({gguf}): need chunk_bytes >= 16, max_chunks >= 0, n_ctx >= 128 "
                               f"and n_threads >= 0 (got {chunk_bytes}, {max_chunks}, {n_ctx}, {n_threads})")
        spec = modelfile.extensions.get("grounding") if grounding is None else grounding
        grounder = resolve_grounder(spec)
        wanted_ctx = max(n_ctx, int(modelfile.parameters.get("num_ctx", 0) or 0))
        (backend,) = open_backends(gguf, n_ctx=wanted_ctx, n_threads=n_threads, use_mmap=True)
        settings = CoreSettings(chunk_bytes=chunk_bytes, max_chunks=max_chunks,
                                constrain_commands=constrain_commands)
        try:
            return cls(GenerationCore(backend, modelfile, settings, grounder))
        except BaseException:
            backend.close()
            raise

    def generate(self, prompt: str, options: Mapping[str, Any]) -> GenerationResult:
        """The reply to an Ollama /api/generate request {"prompt": prompt, "options": options}."""
        with self._lock:
            core = self.core
            prep = core.prepare(GenerationRequest(prompt=prompt, options=request_options(options)))
            result = None
            for event in core.run(prep):
                if isinstance(event, GenerationResult):
                    result = event
            assert result is not None  # run() always ends with one
            return result

    def close(self) -> None:
        with self._lock:
            self.core.backend.close()

    def __enter__(self) -> LocalModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
