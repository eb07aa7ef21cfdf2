"""OpenAI chat-completions request shape (the subset a radio bot needs), checked strictly."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from meshai_gateway.ollama.protocol import INT32, INT64, Int, stop_sequences


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class ContentPart(_Strict):
    type: str
    text: str | None = None


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.type != "text":
                raise ValueError(f"content part type {part.type!r} is not supported (text only)")
            parts.append(part.text or "")
        return "".join(parts)


class StreamOptions(_Strict):
    include_usage: bool = False


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class ChatCompletionRequest(_Strict):
    model: str = ""
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Int | None = Field(None, ge=1, le=INT32)
    max_completion_tokens: Int | None = Field(None, ge=1, le=INT32)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    seed: Int | None = Field(None, ge=-INT64 - 1, le=INT64)
    stop: list[str] | str | None = None
    n: Int = Field(1, ge=1, le=1)
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    # Radio budget for this request (gateway extension).
    chunk_bytes: Int | None = Field(None, ge=16, le=4096)
    max_chunks: Int | None = Field(None, ge=0, le=64)

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: list[str] | str | None) -> list[str] | None:
        return stop_sequences(v, 4)  # OpenAI's own limit
