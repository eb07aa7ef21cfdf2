"""Read an Ollama Modelfile: the SYSTEM prompt, TEMPLATE and PARAMETER defaults that travel with a model.

The quantizer writes one next to every GGUF; the gateway reads it. Only what the gateway uses is interpreted; other instructions (FROM, LICENSE, ADAPTER, MESSAGE) are kept
for display by /api/show.

How a model was trained travels as comment lines, `# meshai: key=value` (e.g. `# meshai: grounding=catalog-v1`):
Ollama ignores comments, so `ollama create` still accepts the file, and the gateway serves the model as trained.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from meshai_common.errors import InvalidInput

# PARAMETER names and the type Ollama gives them; anything else is rejected with the line number.
PARAMETER_TYPES: dict[str, type] = {
    "num_ctx": int, "num_predict": int, "num_keep": int, "num_thread": int, "num_batch": int,
    "repeat_last_n": int, "seed": int, "top_k": int, "mirostat": int,
    "temperature": float, "top_p": float, "min_p": float, "typical_p": float, "repeat_penalty": float,
    "presence_penalty": float, "frequency_penalty": float, "mirostat_tau": float, "mirostat_eta": float,
    "stop": str,
    # radio budget defaults for this model (gateway extension)
    "chunk_bytes": int, "max_chunks": int,
}
INSTRUCTIONS = {"FROM", "SYSTEM", "TEMPLATE", "PARAMETER", "LICENSE", "ADAPTER", "MESSAGE", "REQUIRES"}
_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string"}
_INSTRUCTION = re.compile(r"^\s*([A-Za-z]+)\s+(.*)$", re.DOTALL)
_EXTENSION = re.compile(r"^\s*#\s*meshai:\s*([a-z_]+)\s*=\s*(\S*)\s*$")


@dataclass(frozen=True)
class Modelfile:
    text: str = ""
    from_: str = ""
    system: str | None = None
    template: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    extensions: dict[str, str] = field(default_factory=dict)  # `# meshai: key=value` lines


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    return value


def parse_modelfile(text: str, source: str = "Modelfile") -> Modelfile:
    """Parse Modelfile text. Multi-line values use triple quotes, as in Ollama."""
    lines = text.splitlines()
    params: dict[str, Any] = {}
    system: str | None = None
    template: str | None = None
    from_ = ""
    extensions: dict[str, str] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        lineno = i + 1
        i += 1
        ext = _EXTENSION.match(line)
        if ext:
            extensions[ext.group(1)] = ext.group(2)
            continue
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _INSTRUCTION.match(line)
        if not match:
            raise InvalidInput(f"{source}:{lineno}: expected 'INSTRUCTION value', got {line.strip()!r}")
        name, value = match.group(1).upper(), match.group(2)
        if name not in INSTRUCTIONS:
            raise InvalidInput(f"{source}:{lineno}: unknown instruction {match.group(1)!r}")
        if value.lstrip().startswith('"""'):
            body = value.lstrip()[3:]
            parts = []
            while '"""' not in body:
                parts.append(body)
                if i >= len(lines):
                    raise InvalidInput(f"{source}:{lineno}: unterminated triple-quoted {name}")
                body = lines[i]
                i += 1
            parts.append(body[: body.index('"""')])
            value = "\n".join(parts)
        else:
            value = _unquote(value)
        if name == "FROM":
            from_ = value
        elif name == "SYSTEM":
            system = value
        elif name == "TEMPLATE":
            template = value
        elif name == "PARAMETER":
            key, _, raw = value.strip().partition(" ")
            key = key.lower()
            kind = PARAMETER_TYPES.get(key)
            if kind is None:
                raise InvalidInput(f"{source}:{lineno}: unknown PARAMETER {key!r}")
            raw = _unquote(raw)
            try:
                parsed = kind(raw)
            except ValueError:
                raise InvalidInput(f"{source}:{lineno}: PARAMETER {key} needs {_TYPE_NAMES[kind]}, got {raw!r}") from None
            if key == "stop":
                params.setdefault("stop", []).append(parsed)
            else:
                params[key] = parsed
        # LICENSE, ADAPTER, MESSAGE, REQUIRES: kept in the text only
    return Modelfile(text=text, from_=from_, system=system, template=template, parameters=params,
                     extensions=extensions)


def render_modelfile(mf: Modelfile, from_: str) -> str:
    """A Modelfile describing what is served (for /api/show when the model came without one)."""
    out = [f"# meshai: {k}={v}" for k, v in sorted(mf.extensions.items())]
    out.append(f"FROM {from_}")
    if mf.template is not None:
        out.append(f'TEMPLATE """{mf.template}"""')
    if mf.system is not None:
        out.append(f'SYSTEM """{mf.system}"""')
    for key, value in mf.parameters.items():
        for v in value if isinstance(value, list) else [value]:
            out.append(f'PARAMETER {key} "{v}"' if isinstance(v, str) else f"PARAMETER {key} {v}")
    return "\n".join(out) + "\n"


def default_modelfile(from_: str, system: str | None = None, extensions: dict[str, str] | None = None) -> str:
    """The Modelfile shipped next to a quantized model: `ollama create NAME -f Modelfile` works with it, and the
    gateway takes its SYSTEM and PARAMETER defaults. The chat template is the one inside the GGUF."""
    from meshai_common.prompts import DEFAULT_SYSTEM_PROMPT

    mf = Modelfile(
        system=system or DEFAULT_SYSTEM_PROMPT,
        # min_p: the bot sends temperature, top_p and top_k but not min_p, so this default holds. Dropping tokens
        # under half the likeliest one keeps sampled replies as right as greedy ones at the bot's temperature
        # 0.7 while wording still varies where the model has no clear favourite. Same catalog-v4 model, field
        # suite, greedy + 2 sampled passes (README): min_p 0.1 gave 75.4 % right commands and 58.1 % fake
        # commands called out (one sampled pass 16.1 %: its first token went to "Send /help"), 0.3 gave 77.4 /
        # 68.8, 0.5 gave 78.3 / 75.3 (greedy alone 79.1 / 80.6).
        parameters={"num_ctx": 1024, "num_predict": 80, "temperature": 0.7, "top_p": 0.9, "top_k": 40,
                    "min_p": 0.5, "repeat_penalty": 1.1},
        extensions=dict(extensions or {}),
    )
    return render_modelfile(mf, from_)
