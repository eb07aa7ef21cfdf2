"""The protocol-agnostic core: load a GGUF, build prompts with the model's template, generate under the radio
budget, and swap models atomically.

Nothing here knows HTTP. `Engine.prepare` checks a request and builds its prompt (cheap; errors become 400s
before any byte is sent); `Engine.run` generates, yielding TextDelta events and one GenerationResult. A
llama_cpp.Llama is not thread-safe, so each generation checks out one instance of the model for itself; an
Engine holds `num_instances` of them (one by default).

`ModelManager` owns the current Engine: it asks the ModelSource for the current model, loads a new version
next to the old one, then swaps the reference; requests that hold the old Engine finish on it, and it is
closed when the last one lets go.
"""

from __future__ import annotations

import codecs
import ctypes
import json
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, fields, replace
from typing import Any

from meshai_common.errors import InvalidInput, MeshAIError, Unavailable
from meshai_common.prompts import DEFAULT_SYSTEM_PROMPT  # the prompt the model was trained under
from meshai_common.radio import BudgetStream, split_chunks
from meshai_gateway.model_source import ModelInfo, ModelSource, Progress
from meshai_gateway.prompting import ChatMessage, ChatTemplate, fallback_render, render_go_template
from meshai_gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

# llama.cpp file types (general.file_type) as Ollama names them.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
}


# Compiled `format` grammars kept per engine (requests tend to reuse a few schemas).
GRAMMAR_CACHE = 16


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
    grammar_spec: str | dict[str, Any] | None
    truncated: bool


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


class _StopScanner:
    """Finds stop sequences in streamed text, holding back what could be the start of one."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.buf = ""

    def feed(self, text: str) -> tuple[str, bool]:
        if not self.stops:
            return text, False
        self.buf += text
        hits = [i for i in (self.buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.buf = self.buf[: min(hits)], ""
            return out, True
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.buf)), 0, -1):
                if self.buf.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        out = self.buf[: len(self.buf) - hold]
        self.buf = self.buf[len(out):]
        return out, False

    def flush(self) -> str:
        out, self.buf = self.buf, ""
        return out


class Lifecycle:
    """Reference counting for a loaded model: a retired version is unloaded when its last user lets go.

    Generation runs on an instance checked out of a pool (`instance()`); unloading takes every instance
    back first, so it waits for generations still running."""

    def __init__(self, instances: list[Any] | None = None) -> None:
        self._lock = threading.Lock()  # serializes close()
        self._state_lock = threading.Lock()
        self._users = 0
        self._retired = False
        self._closed = False
        self._all = list(instances) if instances else [None]
        self._free: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for inst in self._all:
            self._free.put(inst)

    @property
    def num_instances(self) -> int:
        return len(self._all)

    @contextmanager
    def instance(self) -> Iterator[Any]:
        """One model instance for one generation (waits while all are busy)."""
        inst = self._free.get()
        try:
            if self._closed:
                raise Unavailable("that model version was unloaded")
            yield inst
        finally:
            self._free.put(inst)

    @property
    def closed(self) -> bool:
        return self._closed

    def acquire(self) -> None:
        with self._state_lock:
            if self._closed:
                raise Unavailable("that model version was unloaded")
            self._users += 1

    def release(self) -> None:
        with self._state_lock:
            self._users -= 1
            close = self._retired and self._users == 0
        if close:
            self.close()

    def retire(self) -> None:
        """A newer version took over: close once the last request using this one is done."""
        with self._state_lock:
            self._retired = True
            close = self._users == 0
        if close:
            self.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            taken = [self._free.get() for _ in self._all]  # waits for running generations to end
            try:
                self._unload()
            finally:
                for inst in taken:  # a late generation then fails with "unloaded", it does not hang
                    self._free.put(inst)

    def _unload(self) -> None:
        raise NotImplementedError


@dataclass
class _Progress:
    """Filled in by the token loop: when the first token came, how many, and why it stopped."""

    first_ns: int | None = None
    n_out: int = 0
    reason: str = "length"


class Engine(Lifecycle):
    """One loaded model version. Thread-safe: each generation runs on an instance of its own (one by default,
    `num_instances` when configured); more generations wait for a free instance.

    The token source is `_pieces` (llama.cpp here); prompt building, stop sequences and the radio budget
    are in the shared methods, so a test double only replaces `__init__`, `_tokenize` and `_pieces`.
    """

    info: ModelInfo
    settings: GatewaySettings
    load_ns: int
    loaded_at: float
    metadata: dict[str, str]
    n_ctx: int
    chat_template: ChatTemplate | None
    bos_text: str

    def __init__(self, info: ModelInfo, settings: GatewaySettings) -> None:
        from llama_cpp import Llama  # heavy import, only where a model is loaded

        self.info = info
        self.settings = settings
        started = time.perf_counter_ns()
        wanted_ctx = max(settings.num_ctx, int(info.parameters.get("num_ctx", 0) or 0))
        n = settings.num_instances
        # The CPU is shared: n instances of t threads each, never more threads than cores in all.
        threads = max(1, (settings.num_threads or os.cpu_count() or 1) // n)
        llamas: list[Any] = []
        try:
            for _ in range(n):
                llamas.append(Llama(
                    model_path=str(info.path), n_ctx=wanted_ctx, n_batch=min(settings.num_batch, wanted_ctx),
                    n_threads=threads, use_mmap=settings.use_mmap, verbose=False,
                ))
        except (ValueError, RuntimeError) as exc:
            for llama in llamas:
                llama.close()
            raise Unavailable(f"could not load model {info.name} from {info.path}: {exc}") from None
        super().__init__(llamas)
        self._llama = llamas[0]  # metadata, tokenizer and vocabulary are the same in every instance
        self.load_ns = time.perf_counter_ns() - started
        self.loaded_at = time.time()
        self.metadata = dict(self._llama.metadata)
        self.n_ctx = self._llama.n_ctx()
        self._vocab = self._llama._model.vocab  # for end-of-generation checks
        self.bos_text = self._token_text(self._llama.token_bos())
        eos_text = self._token_text(self._llama.token_eos())
        template_src = self.metadata.get("tokenizer.chat_template")
        self.chat_template = ChatTemplate(template_src, self.bos_text, eos_text) if template_src else None
        self._grammars: dict[str, Any] = {}
        self._grammar_lock = threading.Lock()

    def _token_text(self, token: int) -> str:
        return self._llama._model.token_get_text(token) if token >= 0 else ""

    # -- facts -----------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def architecture(self) -> str:
        return self.metadata.get("general.architecture", "llama")

    @property
    def default_system(self) -> str | None:
        """The model's Modelfile SYSTEM, else the project's default system prompt."""
        if self.info.system is not None:
            return self.info.system
        return DEFAULT_SYSTEM_PROMPT

    def details(self) -> dict[str, Any]:
        ftype = self.metadata.get("general.file_type", "")
        quant = FILE_TYPES.get(int(ftype), f"type{ftype}") if ftype.isdigit() else "unknown"
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.architecture,
            "families": [self.architecture],
            "parameter_size": self.metadata.get("general.size_label", ""),
            "quantization_level": quant,
        }

    def model_info(self) -> dict[str, Any]:
        """GGUF key/values for /api/show (the chat template is shown separately)."""
        return {k: _number(v) for k, v in self.metadata.items() if not k.startswith("tokenizer.chat_template")}

    # -- requests --------------------------------------------------------------------------------------

    def budget_for(self, options: Mapping[str, Any]) -> RadioBudget:
        """Deployment default, then the model's Modelfile, then the request's options."""
        s = self.settings
        chunk_bytes = options.get("chunk_bytes") or self.info.parameters.get("chunk_bytes") or s.chunk_bytes
        max_chunks = options.get("max_chunks")
        if max_chunks is None:
            max_chunks = self.info.parameters.get("max_chunks", s.max_chunks)
        if chunk_bytes < 16:
            raise InvalidInput(f"options.chunk_bytes={chunk_bytes} is too small (must be >= 16)")
        if max_chunks < 0:
            raise InvalidInput(f"options.max_chunks={max_chunks} must be >= 0 (0 turns the radio budget off)")
        return RadioBudget(chunk_bytes=chunk_bytes, max_chunks=max_chunks, suffix=s.reply_suffix)

    def render_prompt(self, req: GenerationRequest) -> str:
        if req.raw:
            if req.messages:
                raise InvalidInput("raw is only for prompt requests, not chat messages")
            return req.prompt or ""
        system = req.system if req.system else self.default_system
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
        if self.chat_template is not None:
            return self.chat_template.render(messages)
        if self.info.modelfile.template and len(messages) <= 2:
            user = next((m.content for m in messages if m.role == "user"), "")
            return render_go_template(self.info.modelfile.template, {"System": system or "", "Prompt": user,
                                                                    "Response": ""})
        return fallback_render(messages)

    def _tokenize(self, prompt: str) -> list[int]:
        add_bos = not (self.bos_text and prompt.startswith(self.bos_text))  # templates may include BOS
        return self._llama.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)

    def check_prompt_size(self, req: GenerationRequest) -> None:
        """Refuse prompts over the deployment's limit before spending CPU on templates and tokenizing."""
        limit = self.settings.max_prompt_chars
        size = (len(req.prompt or "") + len(req.system or "") + len(req.template or "")
                + sum(len(m.content) for m in req.messages))
        if size > limit:
            raise InvalidInput(f"prompt is {size} characters; the limit is {limit} "
                               "(max_prompt_chars, MESHAI_MAX_PROMPT_CHARS)")

    def prepare(self, req: GenerationRequest) -> PreparedRequest:
        """Check options, render and tokenize the prompt. Raises InvalidInput (a 400) on bad requests."""
        self.check_prompt_size(req)
        params = SamplingParams.merged(self.info.parameters, req.options)
        budget = self.budget_for(req.options)
        if req.format is not None and req.format != "json" and not isinstance(req.format, dict):
            raise InvalidInput('format must be "json" or a JSON schema object')
        self._grammar(req.format)  # an unusable schema is a 400 now, not an error line mid-stream
        prompt = self.render_prompt(req)
        tokens = self._tokenize(prompt)
        n_ctx = min(params.num_ctx or self.n_ctx, self.n_ctx)
        # Room left for the reply: what was asked for, else a default share of the context.
        reserve = min(params.num_predict, n_ctx // 2) if params.num_predict > 0 else min(256, n_ctx // 4)
        truncated = False
        if len(tokens) > n_ctx - reserve:
            # Keep the first num_keep tokens (BOS, template start) and the end of the prompt, as Ollama does.
            keep = max(0, min(params.num_keep, n_ctx // 4))
            tokens = tokens[:keep] + tokens[len(tokens) - (n_ctx - reserve - keep):]
            truncated = True
        room = n_ctx - len(tokens)
        max_tokens = room if params.num_predict <= 0 else min(params.num_predict, room)
        if self.settings.max_predict > 0:  # the deployment's cap, whatever was asked for
            max_tokens = min(max_tokens, self.settings.max_predict)
        if max_tokens < 1:
            raise InvalidInput(f"the prompt ({len(tokens)} tokens) leaves no room in the {n_ctx}-token context")
        return PreparedRequest(prompt=prompt, tokens=tokens, params=params, budget=budget, max_tokens=max_tokens,
                               grammar_spec=req.format, truncated=truncated)

    def _grammar(self, spec: str | dict[str, Any] | None) -> Any:
        if spec is None:
            return None
        from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

        try:
            key = spec if isinstance(spec, str) else json.dumps(spec, sort_keys=True)
        except (TypeError, ValueError, RecursionError):
            raise InvalidInput("format: not a JSON schema") from None
        with self._grammar_lock:
            grammar = self._grammars.pop(key, None)
            if grammar is None:
                try:
                    grammar = (LlamaGrammar.from_string(JSON_GBNF, verbose=False) if spec == "json"
                               else LlamaGrammar.from_json_schema(key, verbose=False))
                except Exception as exc:  # the converter raises many types on bad schemas
                    raise InvalidInput(f"format: unusable JSON schema: {str(exc)[:200]}") from None
                self._check_grammar(grammar)
            self._grammars[key] = grammar  # most recently used last
            while len(self._grammars) > GRAMMAR_CACHE:
                self._grammars.pop(next(iter(self._grammars)))
        return grammar

    def _check_grammar(self, grammar: Any) -> None:
        """llama.cpp parses a grammar only when sampling starts, and a sampler it could not build crashes the
        process there: build one now and refuse the schema if llama.cpp cannot."""
        from llama_cpp import llama_cpp as C

        sampler = C.llama_sampler_init_grammar(self._vocab, grammar._grammar.encode("utf-8"),
                                               grammar._root.encode("utf-8"))
        if not sampler:
            raise InvalidInput("format: llama.cpp cannot use the grammar made from this JSON schema")
        C.llama_sampler_free(sampler)

    def _pieces(self, llama: Any, prep: PreparedRequest, cancel: threading.Event,
                progress: _Progress) -> Iterator[str]:
        """Decoded text, token by token, from one llama.cpp instance. Sets progress (first token time, count,
        reason)."""
        from llama_cpp import llama_cpp as C

        p = prep.params
        llama.last_n_tokens_size = min(p.repeat_last_n, self.n_ctx) if p.repeat_last_n >= 0 else self.n_ctx
        # llama.cpp seeds are 32-bit; Ollama's are 64-bit integers, and a negative one means "random".
        llama.set_seed(p.seed & 0xFFFFFFFF if p.seed is not None and p.seed >= 0 else random.getrandbits(31))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        gen = llama.generate(
            prep.tokens, top_k=p.top_k, top_p=p.top_p, min_p=p.min_p, typical_p=p.typical_p,
            temp=p.temperature, repeat_penalty=p.repeat_penalty, frequency_penalty=p.frequency_penalty,
            presence_penalty=p.presence_penalty, mirostat_mode=p.mirostat, mirostat_tau=p.mirostat_tau,
            mirostat_eta=p.mirostat_eta, grammar=self._grammar(prep.grammar_spec),
        )
        try:
            for token in gen:
                if progress.first_ns is None:
                    progress.first_ns = time.perf_counter_ns()
                if cancel.is_set():
                    progress.reason = "cancelled"
                    return
                if C.llama_vocab_is_eog(self._vocab, token):
                    progress.reason = "stop"
                    break
                progress.n_out += 1
                text = decoder.decode(llama.detokenize([token]))
                if text:
                    yield text
                if progress.n_out >= prep.max_tokens:
                    progress.reason = "length"
                    break
        finally:
            gen.close()
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail

    def run(self, prep: PreparedRequest, cancel: threading.Event | None = None
            ) -> Iterator[TextDelta | GenerationResult]:
        """Generate. Yields TextDelta as text becomes safe to send, then one GenerationResult.

        The radio budget is enforced while generating: as soon as the reply would not fit, generation stops
        and the reply is trimmed (radio.BudgetStream), so what was streamed plus the result's tail is
        exactly the final reply. With a `format` (JSON) the budget is not applied: trimming breaks JSON.
        """
        cancel = cancel or threading.Event()
        with self.instance() as llama:
            yield from self._generate(llama, prep, cancel)

    def _generate(self, llama: Any, prep: PreparedRequest,
                  cancel: threading.Event) -> Iterator[TextDelta | GenerationResult]:
        budget = prep.budget
        use_budget = budget.enabled and prep.grammar_spec is None
        stream = (BudgetStream.for_chunks(budget.chunk_bytes, budget.max_chunks, suffix=budget.suffix)
                  if use_budget else BudgetStream.unlimited())
        stops = _StopScanner(prep.params.stop)
        progress = _Progress()
        leading = use_budget  # radio replies do not start with whitespace
        hit = False

        def push(text: str) -> Iterator[TextDelta]:
            nonlocal leading
            if leading:
                text = text.lstrip()
                leading = not text
            if text:
                out, _ = stream.feed(text)
                if out:
                    yield TextDelta(out)

        t0 = time.perf_counter_ns()
        pieces = self._pieces(llama, prep, cancel, progress)
        try:
            if cancel.is_set():
                progress.reason = "cancelled"
            else:
                for text in pieces:
                    piece, hit = stops.feed(text)
                    yield from push(piece)
                    if hit:
                        progress.reason = "stop"
                        break
                    if stream.over_budget:
                        break
        finally:
            pieces.close()
        if not hit and not stream.over_budget and progress.reason != "cancelled":
            yield from push(stops.flush())
        if stream.over_budget:
            progress.reason = "length"
        t_end = time.perf_counter_ns()
        t_first = progress.first_ns or t_end
        result = stream.finish()
        yield GenerationResult(
            text=result.text, tail=result.tail, done_reason=progress.reason, trimmed=result.trimmed,
            removed=result.removed, budget_stop=stream.over_budget, budget=budget,
            chunks=split_chunks(result.text, budget.chunk_bytes) if result.text else [],
            prompt_tokens=len(prep.tokens), completion_tokens=progress.n_out,
            prompt_eval_ns=t_first - t0, eval_ns=t_end - t_first,
        )

    def _unload(self) -> None:
        for llama in self._all:
            llama.close()
        release_freed_memory()
        log.info("unloaded model %s (sha256 %s)", self.name, self.info.sha256[:12])


def release_freed_memory() -> None:
    """Give pages freed by an unloaded (or refused) model back to the OS. glibc keeps freed heap for reuse:
    measured with SmolLM2-135M, resident memory went 239 -> 258 MiB after one swap and 268 MiB after eight
    without this, and stayed at 240-245 MiB with it."""
    with suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _number(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


EngineFactory = Callable[[ModelInfo, GatewaySettings], Engine]


class ModelManager:
    """Holds the current Engine and replaces it when the ModelSource points elsewhere."""

    def __init__(self, source: ModelSource, settings: GatewaySettings, factory: EngineFactory = Engine,
                 on_change: Callable[[Engine], None] | None = None) -> None:
        self.source = source
        self.settings = settings
        self.factory = factory
        self.on_change = on_change
        self._engine: Engine | None = None
        self._reason = "model not loaded yet"
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refused: dict[str, tuple[type[MeshAIError], str]] = {}
        # Why the latest refresh did not replace the model being served (None after a good one).
        self.refresh_error: str | None = None
        self.swaps = 0

    @property
    def ready(self) -> bool:
        return self._engine is not None

    @property
    def reason(self) -> str:
        return "ready" if self._engine is not None else self._reason

    @property
    def current(self) -> Engine | None:
        return self._engine

    def engine(self) -> Engine:
        engine = self._engine
        if engine is None:
            raise Unavailable(self._reason)
        return engine

    @contextmanager
    def use(self) -> Iterator[Engine]:
        engine = self.acquire()
        try:
            yield engine
        finally:
            engine.release()

    def acquire(self) -> Engine:
        """The current Engine, held until release(): a swap meanwhile does not close it."""
        while True:
            engine = self.engine()
            try:
                engine.acquire()
                return engine
            except Unavailable:
                if self._engine is engine:  # closed but still current: stopping
                    raise

    def refresh(self, progress: Progress | None = None, *, retry_refused: bool = True) -> Engine:
        """Ask the source for the current model; load and swap it in when it changed. Blocks while loading.

        A version that failed to load is remembered by sha256: the poller does not reload it every interval
        (retry_refused=False); an explicit refresh (pull, the Refresh RPC) tries again."""
        with self._refresh_lock:
            old = self._engine
            try:
                info = self.source.current(progress)
            except MeshAIError as exc:
                self._failed(old, f"no model: {exc}", f"cannot check the promoted model: {exc}")
                raise
            if old is not None and old.info.sha256 == info.sha256:
                self.refresh_error = None
                return old  # same bytes: nothing to do, wherever the file now lives
            refused = self._refused.get(info.sha256)
            if refused is not None and not retry_refused:
                kind, message = refused
                raise kind(message)  # a fresh error: re-raising one object would grow its traceback
            log.info("loading model %s (sha256 %s) from %s", info.name, info.sha256[:12], info.path)
            if old is None:
                self._reason = f"loading model {info.name}"
            if progress is not None:
                progress({"status": f"loading model {info.name}", "digest": f"sha256:{info.sha256}"})
            try:
                engine = self.factory(info, self.settings)
            except Exception as exc:
                err = exc if isinstance(exc, MeshAIError) else Unavailable(
                    f"model {info.name} failed to load: {type(exc).__name__}: {exc}")
                self._refused = {info.sha256: (type(err), str(err))}  # the latest refusal is what matters
                release_freed_memory()  # what the failed load allocated
                self._failed(old, f"model {info.name} failed to load: {exc}",
                             f"promoted version {info.sha256[:12]} refused: {err}")
                if err is exc:
                    raise
                raise err from exc
            self._engine = engine  # the swap: new requests get the new engine from here on
            self._refused.pop(info.sha256, None)
            self.refresh_error = None
            if old is not None:
                self.swaps += 1
                old.retire()
            log.info("serving model %s (sha256 %s), loaded in %.2fs", info.name, info.sha256[:12],
                     engine.load_ns / 1e9)
            if self.on_change is not None:
                self.on_change(engine)
            return engine

    def _failed(self, old: Engine | None, not_ready: str, still_serving: str) -> None:
        if old is None:
            self._reason = not_ready
        else:  # still serving the old version: /readyz says why the new one is not in
            self.refresh_error = f"{still_serving}; still serving sha256 {old.info.sha256[:12]}"

    def start(self) -> None:
        """Load in the background (so /healthz answers at once), then poll if the source asks for it."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="model-manager", daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._engine is None and time.monotonic() < deadline:
            if self._thread is not None and not self._thread.is_alive():
                break
            time.sleep(0.05)
        return self._engine is not None

    def _loop(self) -> None:
        interval = self.source.poll_interval_s
        while not self._stop.is_set():
            try:
                self.refresh(retry_refused=False)
            except MeshAIError as exc:
                log.warning("model refresh failed: %s", exc)
            except Exception:  # keep serving the current model whatever the source does
                log.exception("model refresh crashed")
            if interval is None and self._engine is not None:
                return
            self._stop.wait(interval if interval is not None else 5.0)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        engine, self._engine = self._engine, None
        self._reason = "stopped"
        if engine is not None:
            engine.retire()
