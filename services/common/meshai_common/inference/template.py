"""Chat templates: turning messages into the model's prompt text, as Ollama does.

- Chat and plain prompts go through the model's own chat template (the Jinja `tokenizer.chat_template` in the
  GGUF): `prompt` becomes the user message, after a system message (the request's `system`, else the model's
  default system prompt).
- `raw: true` sends the prompt as is.
- A request `template` (Ollama's Go template syntax) is honoured for the subset single-turn templates use:
  `{{ .System }}`, `{{ .Prompt }}`, `{{ .Response }}`, `{{ if .X }}...{{ else }}...{{ end }}` and `{{-`/`-}}`.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from meshai_common.errors import InvalidInput
from meshai_common.inference.types import ChatMessage, GenerationRequest


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class _IgnoreGeneration(jinja2.ext.Extension):
    """HF chat templates may wrap assistant turns in {% generation %}; it only matters for training."""

    tags = {"generation"}

    def parse(self, parser: Any) -> Any:
        parser.stream.skip(1)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


class ChatTemplate:
    """The model's Jinja chat template, rendered like transformers/llama.cpp do (sandboxed)."""

    def __init__(self, source: str, bos_token: str = "", eos_token: str = "") -> None:
        env = ImmutableSandboxedEnvironment(
            loader=jinja2.BaseLoader(), trim_blocks=True, lstrip_blocks=True,
            extensions=[_IgnoreGeneration, jinja2.ext.loopcontrols],
        )
        env.filters["tojson"] = _tojson
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateError as exc:
            raise InvalidInput(f"the model's chat template does not parse: {exc}") from None
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token

    def render(self, messages: list[ChatMessage], add_generation_prompt: bool = True) -> str:
        def raise_exception(message: str) -> None:
            raise InvalidInput(f"chat template: {message}")

        try:
            return self._template.render(
                messages=[{"role": m.role, "content": m.content} for m in messages],
                bos_token=self.bos_token, eos_token=self.eos_token, add_generation_prompt=add_generation_prompt,
                raise_exception=raise_exception, strftime_now=lambda f: datetime.now().strftime(f),
            )
        except InvalidInput:
            raise
        except jinja2.TemplateError as exc:
            raise InvalidInput(f"chat template failed on these messages: {exc}") from None


# -- Ollama Go-template subset ---------------------------------------------------------------------------

_GO_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.DOTALL)
_GO_FIELDS = {"System", "Prompt", "Response"}


def _go_tokens(template: str) -> list[tuple[str, str]]:
    """[(kind, value)] with kind 'text' or 'action'; applies the {{- and -}} whitespace trims."""
    out: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    for m in _GO_ACTION.finditer(template):
        text = template[pos:m.start()]
        if trim_next:
            text = text.lstrip()
        if m.group(1):
            text = text.rstrip()
        out.append(("text", text))
        out.append(("action", m.group(2)))
        trim_next = bool(m.group(3))
        pos = m.end()
    tail = template[pos:]
    out.append(("text", tail.lstrip() if trim_next else tail))
    return out


def render_go_template(template: str, values: dict[str, str]) -> str:
    """Render the single-turn subset of Ollama's template language; anything else is a clear 400."""
    tokens = _go_tokens(template)
    pos = 0

    def field_name(expr: str) -> str:
        if not expr.startswith(".") or expr[1:] not in _GO_FIELDS:
            raise InvalidInput(f"template: unsupported expression {{{{ {expr} }}}} "
                               f"(supported: .System, .Prompt, .Response, if/else/end)")
        return expr[1:]

    def block(stop: set[str]) -> tuple[str, str]:
        nonlocal pos
        out = []
        while pos < len(tokens):
            kind, value = tokens[pos]
            pos += 1
            if kind == "text":
                out.append(value)
                continue
            if value in stop:
                return "".join(out), value
            if value.startswith("if "):
                cond = bool(values.get(field_name(value[3:].strip()), ""))
                then, ended = block({"else", "end"})
                other = ""
                if ended == "else":
                    other, ended = block({"end"})
                if ended != "end":
                    raise InvalidInput("template: {{ if }} without {{ end }}")
                out.append(then if cond else other)
            elif value in ("else", "end"):
                raise InvalidInput(f"template: unexpected {{{{ {value} }}}}")
            else:
                out.append(values.get(field_name(value), ""))
        if stop:
            raise InvalidInput("template: {{ if }} without {{ end }}")
        return "".join(out), ""

    text, _ = block(set())
    return text


def fallback_render(messages: list[ChatMessage]) -> str:
    """For a model with no template at all: plain text turns ending with an open assistant turn."""
    parts = [f"{m.role.capitalize()}: {m.content}" for m in messages]
    return "\n\n".join(parts) + "\n\nAssistant:"


def render_request(req: GenerationRequest, default_system: str | None, chat_template: ChatTemplate | None,
                   modelfile_template: str | None = None) -> str:
    """The prompt text for a request: raw as is, a request template (Go syntax), else the model's chat
    template (a Modelfile TEMPLATE for single-turn requests of a model without one), else plain turns."""
    if req.raw:
        if req.messages:
            raise InvalidInput("raw is only for prompt requests, not chat messages")
        return req.prompt or ""
    system = req.system if req.system else default_system
    if req.template:
        if req.messages:
            raise InvalidInput("a template override is only supported with a prompt, not chat messages")
        return render_go_template(req.template, {"System": system or "", "Prompt": req.prompt or "",
                                                 "Response": ""})
    messages = list(req.messages)
    if req.prompt is not None:
        messages.append(ChatMessage("user", req.prompt))
    if system and not any(m.role == "system" for m in messages):
        messages.insert(0, ChatMessage("system", system))
    if chat_template is not None:
        return chat_template.render(messages)
    if modelfile_template and len(messages) <= 2:
        user = next((m.content for m in messages if m.role == "user"), "")
        return render_go_template(modelfile_template, {"System": system or "", "Prompt": user, "Response": ""})
    return fallback_render(messages)
