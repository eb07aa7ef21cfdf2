"""Ollama API request shapes (https://docs.ollama.com/api). Types are checked strictly: a string where a
number belongs is a 400, not a silent conversion. Unknown fields are ignored, as Ollama does."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator


def _integral(value: Any) -> Any:
    # JSON clients may send 80.0 for 80; Ollama accepts that. Bools and fractional values stay errors.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Int = Annotated[int, BeforeValidator(_integral)]
# Bounds keep every value inside what llama.cpp's C types hold (int32, float32) and away from values that
# only make the sampler misbehave; Ollama's own clients never come near them.
INT32 = (1 << 31) - 1
INT64 = (1 << 63) - 1
STOP_CHARS = 256


def stop_sequences(v: list[str] | str | None, most: int) -> list[str] | None:
    """`stop` as a list (one string is one sequence), with a cap on how many and how long: each is checked
    against the text after every token."""
    if v is None:
        return None
    stops = [v] if isinstance(v, str) else v
    if len(stops) > most:
        raise ValueError(f"at most {most} stop sequences")
    if any(len(s) > STOP_CHARS for s in stops):
        raise ValueError(f"a stop sequence is at most {STOP_CHARS} characters")
    return stops


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class Options(_Strict):
    num_predict: Int | None = Field(None, ge=-2, le=INT32)
    num_ctx: Int | None = Field(None, ge=1, le=1 << 20)
    num_keep: Int | None = Field(None, ge=-1, le=INT32)
    num_batch: Int | None = Field(None, ge=1, le=INT32)
    num_thread: Int | None = Field(None, ge=0, le=INT32)  # accepted; the deployment sets threads
    num_gpu: Int | None = Field(None, ge=-1, le=INT32)
    seed: Int | None = Field(None, ge=-INT64 - 1, le=INT64)
    top_k: Int | None = Field(None, ge=0, le=INT32)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    typical_p: float | None = Field(None, ge=0.0, le=1.0)
    temperature: float | None = Field(None, ge=0.0, le=100.0)
    repeat_penalty: float | None = Field(None, ge=0.0, le=100.0)
    repeat_last_n: Int | None = Field(None, ge=-1, le=1 << 20)
    presence_penalty: float | None = Field(None, ge=-100.0, le=100.0)
    frequency_penalty: float | None = Field(None, ge=-100.0, le=100.0)
    mirostat: Int | None = Field(None, ge=0, le=2)
    mirostat_tau: float | None = Field(None, ge=0.0, le=100.0)
    mirostat_eta: float | None = Field(None, ge=0.0, le=10.0)
    stop: list[str] | str | None = None
    # Radio budget for this request (gateway extension): max_chunks 0 turns it off.
    chunk_bytes: Int | None = Field(None, ge=16, le=4096)
    max_chunks: Int | None = Field(None, ge=0, le=64)

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: list[str] | str | None) -> list[str] | None:
        stops = stop_sequences(v, 16)
        return [s for s in stops if s] if stops is not None else None

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


Format = Literal["json", ""] | dict[str, Any] | None
KeepAlive = str | float | int | None


class GenerateRequest(_Strict):
    model: str = ""
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[Int] | None = None  # accepted for compatibility, not used
    stream: bool = True
    raw: bool = False
    format: Format = None
    images: list[str] | None = None
    keep_alive: KeepAlive = None
    options: Options | None = None
    think: bool | str | None = None


class Message(_Strict):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[str] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    thinking: str | None = None


class ChatRequest(_Strict):
    model: str = ""
    messages: list[Message] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    stream: bool = True
    format: Format = None
    keep_alive: KeepAlive = None
    options: Options | None = None
    think: bool | str | None = None


class ShowRequest(_Strict):
    model: str | None = None
    name: str | None = None  # older clients
    verbose: bool | None = None

    @property
    def target(self) -> str | None:
        return self.model or self.name


class PullRequest(_Strict):
    model: str | None = None
    name: str | None = None
    stream: bool = True
    insecure: bool | None = None

    @property
    def target(self) -> str | None:
        return self.model or self.name


class DeleteRequest(_Strict):
    model: str | None = None
    name: str | None = None

    @property
    def target(self) -> str | None:
        return self.model or self.name
