"""The generation core, free of llama.cpp: request -> prompt -> tokens -> reply under the radio budget.

A TokenBackend is one loaded model: it tokenizes and, for a PreparedRequest, yields detokenized pieces of the
reply while it samples (llama.cpp in `llama_backend.LlamaBackend`; a scripted one in tests). Everything else
is here, once, for the gateway and the evaluator alike:

- prepare: the system prompt (request, else the Modelfile's SYSTEM, else DEFAULT_SYSTEM_PROMPT), the chat
  template, the Modelfile's PARAMETER defaults under the request's options, truncation that keeps num_keep
  tokens, the reply's token limit, the radio budget (deployment default -> Modelfile -> request), and the
  command grammar for radio replies (`command_grammar.py`: the model cannot name a command that does not
  exist). An optional grounder rewrites a plain prompt before templating.
- run: stop sequences, the radio budget while generating (radio.BudgetStream), timing, GenerationResult.

Nothing here is thread-safe per backend: a caller runs one generation at a time on each backend.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from meshai_common.errors import InvalidInput, Unavailable
from meshai_common.inference.command_grammar import (
    catalog_command_grammar,
    echo_words,
    grounded_command_grammar,
)
from meshai_common.inference.template import ChatTemplate, render_request
from meshai_common.inference.types import (
    BOT_REPLY_SUFFIX,
    DecodeProgress,
    GenerationRequest,
    GenerationResult,
    PreparedRequest,
    RadioBudget,
    SamplingParams,
    TextDelta,
)
from meshai_common.meshmaster import load_catalog, slash_word_matches
from meshai_common.modelfile import Modelfile
from meshai_common.prompts import DEFAULT_SYSTEM_PROMPT  # the prompt the model was trained under
from meshai_common.radio import CHUNK_BYTES, MAX_CHUNKS, BudgetStream, split_chunks

# Rewrites the text of a plain prompt request before templating (meshai_common.grounding.ground_prompt).
Grounder = Callable[[str], str]



class TokenBackend(Protocol):
    """One loaded model. `pieces` fills `progress` (first token time, tokens, why it stopped) as it goes."""

    n_ctx: int
    bos_text: str
    eos_text: str
    chat_template_source: str | None  # the GGUF's Jinja chat template, when it has one
    metadata: Mapping[str, str]  # GGUF key/values

    def tokenize(self, text: str) -> list[int]: ...

    def check_format(self, spec: str | dict[str, Any]) -> None:
        """Raise InvalidInput now if a JSON `format` cannot become a grammar this backend can use."""

    def pieces(self, prep: PreparedRequest, cancel: threading.Event,
               progress: DecodeProgress) -> Iterator[str]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class CoreSettings:
    """What a deployment decides for every request (the gateway's defaults; the evaluator uses the same)."""

    chunk_bytes: int = CHUNK_BYTES
    max_chunks: int = MAX_CHUNKS  # 0: no radio budget
    reply_suffix: str = BOT_REPLY_SUFFIX  # what the bot appends to each reply before chunking it
    # Most tokens one reply may generate, whatever num_predict asks; 0: limited by the context only.
    max_predict: int = 1024
    constrain_commands: bool = True  # radio replies may only name catalog commands


class GenerationCore:
    """Prepares and runs generations on a backend (or, for `run`, any backend loaded from the same model)."""

    def __init__(self, backend: TokenBackend, modelfile: Modelfile | None = None,
                 settings: CoreSettings | None = None, grounder: Grounder | None = None) -> None:
        self.backend = backend
        self.modelfile = modelfile or Modelfile()
        self.settings = settings or CoreSettings()
        self.grounder = grounder
        source = backend.chat_template_source
        self.chat_template = ChatTemplate(source, backend.bos_text, backend.eos_text) if source else None

    @property
    def n_ctx(self) -> int:
        return self.backend.n_ctx

    @property
    def default_system(self) -> str:
        """The model's Modelfile SYSTEM, else the project's default system prompt."""
        return self.modelfile.system if self.modelfile.system is not None else DEFAULT_SYSTEM_PROMPT

    def budget_for(self, options: Mapping[str, Any]) -> RadioBudget:
        """Deployment default, then the model's Modelfile, then the request's options."""
        s, params = self.settings, self.modelfile.parameters
        chunk_bytes = options.get("chunk_bytes") or params.get("chunk_bytes") or s.chunk_bytes
        max_chunks = options.get("max_chunks")
        if max_chunks is None:
            max_chunks = params.get("max_chunks", s.max_chunks)
        if chunk_bytes < 16:
            raise InvalidInput(f"options.chunk_bytes={chunk_bytes} is too small (must be >= 16)")
        if max_chunks < 0:
            raise InvalidInput(f"options.max_chunks={max_chunks} must be >= 0 (0 turns the radio budget off)")
        return RadioBudget(chunk_bytes=chunk_bytes, max_chunks=max_chunks, suffix=s.reply_suffix)

    def _grounds(self, req: GenerationRequest) -> bool:
        """Grounding applies to a plain prompt request of a model trained with it (not raw, templated or chat)."""
        return self.grounder is not None and req.prompt is not None and not (req.raw or req.template or req.messages)

    def render_prompt(self, req: GenerationRequest) -> str:
        if self._grounds(req):
            req = replace(req, prompt=self.grounder(req.prompt))
        return render_request(req, self.default_system, self.chat_template, self.modelfile.template)

    def prepare(self, req: GenerationRequest) -> PreparedRequest:
        """Check options, render and tokenize the prompt. Raises InvalidInput (a 400) on bad requests."""
        params = SamplingParams.merged(self.modelfile.parameters, req.options)
        budget = self.budget_for(req.options)
        if req.format is not None:
            if req.format != "json" and not isinstance(req.format, dict):
                raise InvalidInput('format must be "json" or a JSON schema object')
            self.backend.check_format(req.format)  # an unusable schema is a 400 now, not an error mid-stream
        prompt = self.render_prompt(req)
        tokens = self.backend.tokenize(prompt)
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
        constrained = self.settings.constrain_commands and budget.enabled and req.format is None
        echo = echo_words(prompt) if constrained else ()
        return PreparedRequest(prompt=prompt, tokens=tokens, params=params, budget=budget, max_tokens=max_tokens,
                               grammar_spec=req.format, truncated=truncated,
                               command_grammar=self._command_grammar(req, prompt, echo) if constrained else None,
                               echo=echo)

    def _command_grammar(self, req: GenerationRequest, prompt: str, echo: tuple[str, ...]) -> str:
        """The catalog's commands; for a grounded prompt only the commands grounding put in front of the model
        (and /help, /menu): what the model was trained to choose from. Both with the prompt's echo words; a
        grounded reply opens as its first grounding line dictates (grounding.reply_opening): "sos is not a
        command", "DM me 'KJ5", a fact's first words."""
        if self._grounds(req):
            from meshai_common.grounding import reply_opening  # a grounder exists: grounding is imported

            return grounded_command_grammar(prompt, echo, reply_opening(prompt))
        return catalog_command_grammar(echo)

    def run(self, prep: PreparedRequest, cancel: threading.Event | None = None,
            backend: TokenBackend | None = None) -> Iterator[TextDelta | GenerationResult]:
        """Generate. Yields TextDelta as text becomes safe to send, then one GenerationResult.

        The radio budget is enforced while generating: as soon as the reply would not fit, generation stops
        and the reply is trimmed (radio.BudgetStream), so what was streamed plus the result's tail is
        exactly the final reply. With a `format` (JSON) the budget is not applied: trimming breaks JSON.
        """
        cancel = cancel or threading.Event()
        budget = prep.budget
        stream = (BudgetStream.for_chunks(budget.chunk_bytes, budget.max_chunks, suffix=budget.suffix)
                  if prep.radio else BudgetStream.unlimited())
        stops = StopScanner(prep.params.stop)
        echoes = EchoSlashes(prep.echo)
        progress = DecodeProgress()
        leading = prep.radio  # radio replies do not start with whitespace
        hit = False

        def push(text: str) -> Iterator[TextDelta]:
            nonlocal leading
            text = echoes.feed(text)
            if leading:
                text = text.lstrip()
                leading = not text
            if text:
                out, _ = stream.feed(text)
                if out:
                    yield TextDelta(out)

        t0 = time.perf_counter_ns()
        pieces = (backend or self.backend).pieces(prep, cancel, progress)
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
        if not stream.over_budget and progress.reason != "cancelled":
            yield from push(echoes.flush())
        if stream.over_budget:
            progress.reason = "length"
        t_end = time.perf_counter_ns()
        t_first = progress.first_ns or t_end
        result = stream.finish()
        text, tail = result.text, result.tail
        if prep.command_grammar is not None:
            text, tail = drop_unfinished_command(text, tail)
        yield GenerationResult(
            text=text, tail=tail, done_reason=progress.reason, trimmed=result.trimmed,
            removed=result.removed, budget_stop=stream.over_budget, budget=budget,
            chunks=split_chunks(text, budget.chunk_bytes) if text else [],
            prompt_tokens=len(prep.tokens), completion_tokens=progress.n_out,
            prompt_eval_ns=t_first - t0, eval_ns=t_end - t_first,
        )


def drop_unfinished_command(text: str, tail: str) -> tuple[str, str]:
    """The grammar only lets a command name be completed; a reply cut off by the token limit in the middle
    of one ("Use /nod") would still end in an unknown slash word. Drop it while it is in the unsent tail
    (radio replies release text only up to a word end, so a last word that is still growing is unsent)."""
    match = next((m for m in slash_word_matches(text) if m.end() == len(text)), None)  # a slash word at the end
    if match is None or load_catalog().is_known(match.group()):
        return text, tail
    kept = text[:match.start()].rstrip()
    sent = len(text) - len(tail)
    if len(kept) < sent:
        return text, tail
    return kept, kept[sent:]


# A word-start "/" and the letters after it at the end of streamed text: a slash word that may still grow.
_OPEN_SLASH_WORD = re.compile(r"(?<![\w/\\.:~<@#-])/\w*\Z")


class EchoSlashes:
    """Drops the slash of an echo word in streamed text ("/sos is not a command" -> "sos is not a command").

    The command grammar lets a reply repeat the prompt's own unknown slash words (`command_grammar.echo_words`)
    so that a model copying "/sos" from the question is not pushed to another command; the reply the user gets
    names the word without the slash. Text from a word-start "/" is held until its word ends, so nothing sent
    has to be taken back. With no echo words, text passes unchanged."""

    def __init__(self, echo: tuple[str, ...]) -> None:
        self.echo = frozenset(w.lower() for w in echo)
        self.before = ""  # the last character released: a "/" after a letter or mark starts no word
        self.buf = ""

    def feed(self, text: str) -> str:
        if not self.echo:
            return text
        self.buf += text
        open_word = _OPEN_SLASH_WORD.search(self.before + self.buf)
        hold = len(self.before) + len(self.buf) - open_word.start() if open_word else 0
        hold = min(hold, len(self.buf))
        ready, self.buf = self.buf[:len(self.buf) - hold], self.buf[len(self.buf) - hold:]
        return self._release(ready)

    def flush(self) -> str:
        ready, self.buf = self.buf, ""
        return self._release(ready)

    def _release(self, ready: str) -> str:
        if not ready:
            return ""
        text = self.before + ready
        out = []
        last = len(self.before)
        for m in slash_word_matches(text):
            if m.start() >= len(self.before) and m.group(1).lower() in self.echo:
                out.append(text[last:m.start()])
                last = m.start() + 1  # the word, without its slash
        out.append(text[last:])
        self.before = ready[-1]
        return "".join(out)


class StopScanner:
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


def resolve_grounder(spec: str | None) -> Grounder | None:
    """The grounder a model was trained with: `spec` is its Modelfile's `# meshai: grounding=...` value (or a
    caller's override). None, "" or "off": no grounding; a version: meshai_common.grounding as that version
    grounds (an unknown version is refused: serving it otherwise would not serve it as trained)."""
    if not spec or spec.strip().lower() == "off":
        return None
    try:  # imported only for models trained with grounding
        from meshai_common.grounding import grounder_for
    except ImportError as exc:
        raise Unavailable(f"the model was trained with grounding={spec}, but meshai_common.grounding cannot be "
                          f"imported ({exc}): serving it ungrounded would not serve it as trained") from None
    try:
        return grounder_for(spec)
    except ValueError as exc:
        raise Unavailable(f"the model was trained with grounding={spec}: {exc}; serving it otherwise would not "
                          f"serve it as trained") from None
