"""Benchmark: what the command grammar costs per generated token, on the embedded SmolLM2-135M.

    python services/gateway/benchmarks/bench_grammar.py [--passes 2] [--threads 2] [--json out.json]

Mesh-Master's requests (its prompt shape, temperature 0.7, top_p 0.9, top_k 40, repeat_penalty 1.1,
num_predict 80, the radio budget on) for 10 questions, through the generation core three ways, each with its
own llama.cpp instance: no grammar; the grammar where llama-cpp-python's sampler chain puts it (before top-k:
every one of the 49k vocabulary tokens is matched against it for every token generated); the grammar applied
after sampling (the backend's way: only the chosen token is checked, the logits are filtered and sampled again
only when it is rejected). The ways take turns prompt by prompt, rotating who goes first, so background load
on a shared machine falls on all of them alike. Decode time per token = time from the first token to the
last / tokens generated (the prompt's evaluation is not in it), compared request by request (median of the
ratios to the same prompt without grammar). First, the sampling call alone is timed for each way on fixed
logits, next to one token's decode, which background load disturbs far less.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import CONTEXT, QUESTIONS, smollm2_gguf  # noqa: E402  (this folder is not a package)

from meshai_common.inference import CoreSettings, GenerationCore, GenerationRequest, GenerationResult  # noqa: E402
from meshai_common.inference.llama_backend import open_backends  # noqa: E402
from meshai_common.meshmaster import unknown_slash_words  # noqa: E402
from meshai_common.prompts import meshmaster_prompt  # noqa: E402

BOT_OPTIONS = {"num_ctx": 1024, "num_predict": 80, "temperature": 0.7, "top_p": 0.9, "top_k": 40,
               "repeat_penalty": 1.1}
OFF, FIRST, LAST = "no grammar", "grammar before top-k (llama-cpp-python)", "grammar after sampling (backend)"


def sampler_costs(gguf: Path, threads: int, calls: int = 200) -> dict[str, float]:
    """Milliseconds per sampling call of each way, on the logits after one Mesh-Master prompt, and of one
    token's decode: the sampler's share of a token without the noise of whole generations."""
    from llama_cpp import Llama
    from llama_cpp.llama_grammar import LlamaGrammar

    from meshai_common.inference.command_grammar import catalog_command_grammar

    (backend,) = open_backends(gguf, n_ctx=1024, n_threads=threads)
    llama = backend.llama
    llama.reset()
    llama.eval(backend.tokenize(meshmaster_prompt(QUESTIONS[0], CONTEXT)))
    chain = dict(top_k=40, top_p=0.9, min_p=0.0, typical_p=1.0, temp=0.7, repeat_penalty=1.1,
                 frequency_penalty=0.0, presence_penalty=0.0, mirostat_mode=0, mirostat_eta=0.1, mirostat_tau=5.0)
    grammar = LlamaGrammar.from_string(catalog_command_grammar(), verbose=False)
    samplers = {OFF: Llama._init_sampler(llama, **chain), FIRST: Llama._init_sampler(llama, **chain, grammar=grammar),
                LAST: llama._init_sampler(**chain, grammar=grammar)}
    out = {}
    for name, sampler in samplers.items():
        t0 = time.perf_counter()
        for _ in range(calls):
            sampler.sample(llama._ctx, -1)  # the grammar's state moves on with every accepted token, as in use
        out[name] = (time.perf_counter() - t0) / calls * 1e3
    t0 = time.perf_counter()
    for _ in range(calls // 4):
        llama.eval([llama.token_bos()])
    out["decode one token"] = (time.perf_counter() - t0) / (calls // 4) * 1e3
    backend.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    gguf = smollm2_gguf()
    print(f"{platform.machine()}, {os.cpu_count()} cores, {args.threads} threads; {gguf.name}", flush=True)
    costs = sampler_costs(gguf, args.threads)
    for name, ms in costs.items():
        print(f"  {name:42s} {ms:7.3f} ms per call", flush=True)

    cores: dict[str, GenerationCore] = {}
    for name, constrain, first in ((OFF, False, False), (FIRST, True, True), (LAST, True, False)):
        (backend,) = open_backends(gguf, n_ctx=1024, n_threads=args.threads, grammar_first=first)
        cores[name] = GenerationCore(backend, settings=CoreSettings(constrain_commands=constrain))
    prompts = [meshmaster_prompt(q, CONTEXT) for q in QUESTIONS[:10]]
    totals = {name: {"tokens": 0, "eval_ns": 0, "unknown": 0, "sampled": 0, "resampled": 0} for name in cores}
    ratios: dict[str, list[float]] = {name: [] for name in cores}
    names = list(cores)
    print(f"{len(prompts)} Mesh-Master prompts x {args.passes} passes, each way in turn", flush=True)
    for n in range(args.passes):
        for i, prompt in enumerate(prompts):
            shift = (i + n) % len(names)
            per_token: dict[str, float] = {}
            for name in names[shift:] + names[:shift]:
                core = cores[name]
                options = dict(BOT_OPTIONS, seed=1000 * n + i)
                result = [e for e in core.run(core.prepare(GenerationRequest(prompt=prompt, options=options)))][-1]
                assert isinstance(result, GenerationResult)
                t = totals[name]
                t["tokens"] += result.completion_tokens
                t["eval_ns"] += result.eval_ns
                t["unknown"] += bool(unknown_slash_words(result.text))
                sampler = getattr(core.backend.llama, "_sampler", None)
                t["sampled"] += getattr(sampler, "sampled", 0)
                t["resampled"] += getattr(sampler, "resampled", 0)
                per_token[name] = result.eval_ns / max(1, result.completion_tokens)
            for name in names:
                ratios[name].append(per_token[name] / per_token[OFF])
        print(f"pass {n + 1} done", flush=True)
    base = totals[OFF]["eval_ns"] / max(1, totals[OFF]["tokens"])
    figures: dict[str, object] = {"sampler_ms_per_call": costs}
    for name, t in totals.items():
        per_token = t["eval_ns"] / max(1, t["tokens"])
        paired = statistics.median(ratios[name]) - 1
        figures[name] = dict(t, ms_per_token=per_token / 1e6, overhead_paired_median=paired)
        extra = f", grammar rejected {t['resampled']} of {t['sampled']} sampled tokens" if t["sampled"] else ""
        print(f"  {name:42s} {per_token / 1e6:6.2f} ms/token, {paired:+6.1%} per request (median) over "
              f"{t['tokens']} tokens; replies naming an unknown command: {t['unknown']}{extra}")
    print(f"  (no grammar: {base / 1e6:.2f} ms/token)")
    for core in cores.values():
        core.backend.close()
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
