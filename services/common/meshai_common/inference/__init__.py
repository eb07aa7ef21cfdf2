"""One inference path for everything that asks the model: the gateway serves with it, the evaluator judges
with it (`local.LocalModel`).

- types.py: requests, sampling options, radio budget, results.
- template.py: chat templates, Ollama's Go-template subset.
- core.py: GenerationCore, free of llama.cpp, on any TokenBackend.
- llama_backend.py: the llama.cpp TokenBackend (imports llama_cpp only when a model is opened).
- command_grammar.py: the GBNF grammar that keeps radio replies to real commands.
- local.py: LocalModel, a GGUF on disk asked the way the gateway asks it.
"""

from meshai_common.inference.core import CoreSettings, GenerationCore, Grounder, TokenBackend
from meshai_common.inference.types import (
    BOT_REPLY_SUFFIX,
    ChatMessage,
    DecodeProgress,
    GenerationRequest,
    GenerationResult,
    PreparedRequest,
    RadioBudget,
    SamplingParams,
    TextDelta,
)

__all__ = [
    "BOT_REPLY_SUFFIX",
    "ChatMessage",
    "CoreSettings",
    "DecodeProgress",
    "GenerationCore",
    "GenerationRequest",
    "GenerationResult",
    "Grounder",
    "PreparedRequest",
    "RadioBudget",
    "SamplingParams",
    "TextDelta",
    "TokenBackend",
]
