"""The llama.cpp binding of the generation core: a GGUF opened with llama_cpp.Llama as a TokenBackend.

What is llama.cpp-specific lives here and only here: loading, tokenizing, the token loop, seeds, the
end-of-generation check, and grammars (JSON `format` schemas and the command grammar) compiled once, checked
against the vocabulary before use, and applied after sampling. llama_cpp is imported lazily: importing this
module costs nothing until a model is opened.
"""

from __future__ import annotations

import codecs
import ctypes
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from meshai_common.cpu import available_cpus
from meshai_common.errors import InvalidInput, Unavailable
from meshai_common.inference.types import DecodeProgress, PreparedRequest

# Compiled grammars kept per loaded model (requests reuse a few schemas; the command grammar is one more).
GRAMMAR_CACHE = 16


def format_key(spec: str | dict[str, Any]) -> str:
    """The cache key of an Ollama `format` ("json" or a JSON schema object)."""
    try:
        return spec if isinstance(spec, str) else json.dumps(spec, sort_keys=True)
    except (TypeError, ValueError, RecursionError):
        raise InvalidInput("format: not a JSON schema") from None


def format_grammar(spec: str | dict[str, Any]) -> str:
    """GBNF for an Ollama `format`. InvalidInput when the schema is unusable."""
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    key = format_key(spec)
    if spec == "json":
        return JSON_GBNF
    try:
        return json_schema_to_gbnf(key)
    except Exception as exc:  # the converter raises many types on bad schemas
        raise InvalidInput(f"format: unusable JSON schema: {str(exc)[:200]}") from None


class GrammarCache:
    """GBNF texts already checked against one vocabulary (shared by the instances of one model)."""

    def __init__(self, vocab: Any) -> None:
        self._vocab = vocab
        self._checked: dict[str, str] = {}  # cache key -> GBNF, most recently used last
        self._lock = threading.Lock()

    def get(self, key: str, build: Callable[[], str], what: str) -> str:
        """The GBNF under `key`, built by `build()` and checked the first time."""
        with self._lock:
            gbnf = self._checked.pop(key, None)
            if gbnf is None:
                gbnf = build()
                self._check(gbnf, what)
            self._checked[key] = gbnf
            while len(self._checked) > GRAMMAR_CACHE:
                self._checked.pop(next(iter(self._checked)))
        return gbnf

    def _check(self, gbnf: str, what: str) -> None:
        """llama.cpp parses a grammar only when sampling starts, and a sampler it could not build crashes the
        process there: build one now and refuse the grammar if llama.cpp cannot."""
        from llama_cpp import llama_cpp as C

        sampler = C.llama_sampler_init_grammar(self._vocab, gbnf.encode("utf-8"), b"root")
        if not sampler:
            raise InvalidInput(f"{what}: llama.cpp cannot use the grammar made from it")
        C.llama_sampler_free(sampler)


class LlamaBackend:
    """One llama.cpp instance of a model (not thread-safe: one generation at a time)."""

    def __init__(self, llama: Any, grammars: GrammarCache | None = None) -> None:
        self.llama = llama
        self.metadata: dict[str, str] = dict(llama.metadata)
        self.n_ctx: int = llama.n_ctx()
        self._vocab = llama._model.vocab
        self.bos_text = self._token_text(llama.token_bos())
        self.eos_text = self._token_text(llama.token_eos())
        self.chat_template_source: str | None = self.metadata.get("tokenizer.chat_template")
        self.grammars = grammars or GrammarCache(self._vocab)

    def _token_text(self, token: int) -> str:
        return self.llama._model.token_get_text(token) if token >= 0 else ""

    def tokenize(self, text: str) -> list[int]:
        add_bos = not (self.bos_text and text.startswith(self.bos_text))  # templates may include BOS
        return self.llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def check_format(self, spec: str | dict[str, Any]) -> None:
        self._format_gbnf(spec)

    def _format_gbnf(self, spec: str | dict[str, Any]) -> str:
        return self.grammars.get("format:" + format_key(spec), lambda: format_grammar(spec), "format")

    def _grammar(self, prep: PreparedRequest) -> Any:
        from llama_cpp.llama_grammar import LlamaGrammar

        if prep.grammar_spec is not None:
            gbnf = self._format_gbnf(prep.grammar_spec)
        elif prep.command_grammar is not None:
            text = prep.command_grammar
            gbnf = self.grammars.get("commands:" + text, lambda: text, "the command grammar")
        else:
            return None
        return LlamaGrammar.from_string(gbnf, verbose=False)

    def pieces(self, prep: PreparedRequest, cancel: threading.Event, progress: DecodeProgress) -> Iterator[str]:
        """Decoded text, token by token. Sets progress (first token time, count, reason)."""
        from llama_cpp import llama_cpp as C

        p, llama = prep.params, self.llama
        llama.last_n_tokens_size = min(p.repeat_last_n, self.n_ctx) if p.repeat_last_n >= 0 else self.n_ctx
        # llama.cpp seeds are 32-bit; Ollama's are 64-bit integers, and a negative one means "random".
        llama.set_seed(p.seed & 0xFFFFFFFF if p.seed is not None and p.seed >= 0 else random.getrandbits(31))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        gen = llama.generate(
            prep.tokens, top_k=p.top_k, top_p=p.top_p, min_p=p.min_p, typical_p=p.typical_p,
            temp=p.temperature, repeat_penalty=p.repeat_penalty, frequency_penalty=p.frequency_penalty,
            presence_penalty=p.presence_penalty, mirostat_mode=p.mirostat, mirostat_tau=p.mirostat_tau,
            mirostat_eta=p.mirostat_eta, grammar=self._grammar(prep),
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

    def close(self) -> None:
        self.llama.close()


def open_backends(path: Path, *, instances: int = 1, n_ctx: int = 2048, n_threads: int = 0, n_batch: int = 512,
                  use_mmap: bool = False, name: str = "", grammar_first: bool = False) -> list[LlamaBackend]:
    """`instances` llama.cpp instances of the GGUF at `path`, sharing the CPU: n instances of t threads
    each, never more threads in all than `n_threads` (0: every CPU this process may use, see meshai_common.cpu). Unavailable when it does not load.

    grammar_first: llama-cpp-python's own sampler chain, grammar over the whole vocabulary before top-k
    (only to measure what applying it after sampling saves)."""
    if grammar_first:
        from llama_cpp import Llama as llama_class
    else:
        llama_class = grammar_last_llama()
    threads = max(1, (n_threads or available_cpus()) // instances)  # the pod's CPU quota, not the node's cores
    llamas: list[Any] = []
    try:
        for _ in range(instances):
            llamas.append(llama_class(
                model_path=str(path), n_ctx=n_ctx, n_batch=min(n_batch, n_ctx), n_threads=threads,
                use_mmap=use_mmap, verbose=False,
            ))
    except (ValueError, RuntimeError) as exc:
        for llama in llamas:
            llama.close()
        raise Unavailable(f"could not load model {name or path.name} from {path}: {exc}") from None
    grammars = GrammarCache(llamas[0]._model.vocab)  # the vocabulary is the same in every instance
    return [LlamaBackend(llama, grammars) for llama in llamas]


@lru_cache(maxsize=1)
def grammar_last_llama() -> type:
    """llama_cpp.Llama whose sampler applies a grammar after sampling instead of before.

    llama-cpp-python puts the grammar in the sampler chain before top-k, so llama.cpp matches every one of
    the vocabulary's tokens (49k for SmolLM2) against the grammar for every token generated. This samples
    with the plain chain first and checks only the chosen token; only when the grammar rejects it are the
    logits filtered by the grammar and sampled again. That is what llama.cpp's own common sampler does
    (common_sampler_sample, grammar_first=false): a token the grammar allows comes out with at least the
    probability it had, and a rejected one is never produced. Figures: services/gateway/README.md.
    """
    from llama_cpp import Llama

    class GrammarLastLlama(Llama):  # type: ignore[misc]
        def _init_sampler(self, *args: Any, grammar: Any = None, **kwargs: Any) -> Any:
            chain = super()._init_sampler(*args, grammar=None, **kwargs)
            return chain if grammar is None else GrammarLastSampler(self, chain, grammar)

    return GrammarLastLlama


class GrammarLastSampler:
    """Stands in for llama-cpp-python's LlamaSampler inside Llama.generate (which only calls sample())."""

    def __init__(self, llama: Any, chain: Any, grammar: Any) -> None:
        from llama_cpp import _internals
        from llama_cpp import llama_cpp as C

        self._C = C
        self.chain = chain  # the plain sampler chain (penalties, top-k, ..., dist); frees itself
        self.grammar = C.llama_sampler_init_grammar(llama._model.vocab, grammar._grammar.encode("utf-8"),
                                                    grammar._root.encode("utf-8"))
        if not self.grammar:  # grammars are checked before a generation starts; this is a last guard
            raise InvalidInput("llama.cpp cannot use this grammar")
        self.n_vocab = llama.n_vocab()
        self.candidates = _internals.LlamaTokenDataArray(n_vocab=self.n_vocab)
        self.one = (C.llama_token_data * 1)()
        self.one_array = C.llama_token_data_array(data=self.one, size=1, selected=-1, sorted=False)
        self.sampled = self.resampled = 0  # tokens sampled; how many the grammar sent back (for measurements)

    def _reset(self, logits: Any) -> Any:
        self.candidates.copy_logits(logits)
        self.candidates.candidates.selected = -1
        return ctypes.byref(self.candidates.candidates)

    def _selected(self) -> int:
        return int(self.candidates.candidates_data.id[self.candidates.candidates.selected])

    def _allowed(self, token: int) -> bool:
        self.one[0].id, self.one[0].logit, self.one[0].p = token, 1.0, 0.0
        self.one_array.size, self.one_array.selected = 1, -1
        self._C.llama_sampler_apply(self.grammar, ctypes.byref(self.one_array))
        return self.one[0].logit != float("-inf")

    def sample(self, ctx: Any, idx: int) -> int:
        import numpy as np

        C = self._C
        logits = np.ctypeslib.as_array(C.llama_get_logits_ith(ctx.ctx, idx), shape=(self.n_vocab,))
        C.llama_sampler_apply(self.chain.sampler, self._reset(logits))
        token = self._selected()
        self.sampled += 1
        if not self._allowed(token):  # sample again among the tokens the grammar allows
            self.resampled += 1
            candidates = self._reset(logits)
            C.llama_sampler_apply(self.grammar, candidates)
            C.llama_sampler_apply(self.chain.sampler, candidates)
            token = self._selected()
        C.llama_sampler_accept(self.grammar, token)
        C.llama_sampler_accept(self.chain.sampler, token)
        return token

    def close(self) -> None:
        if self.grammar:
            self._C.llama_sampler_free(self.grammar)
            self.grammar = None

    def __del__(self) -> None:
        self.close()

