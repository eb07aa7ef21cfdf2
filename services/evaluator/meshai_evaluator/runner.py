"""Run a suite through a GGUF with llama-cpp-python, greedy (temperature 0) so runs are reproducible."""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from meshai_common.progress import JobContext, Progress
from meshai_common.prompts import DEFAULT_SYSTEM_PROMPT
from meshai_evaluator.scoring import score
from meshai_evaluator.suite import questions


def evaluate(gguf: Path, suite: dict[str, Any], *, system: str = DEFAULT_SYSTEM_PROMPT, num_predict: int = 80,
             n_threads: int = 0, seed: int = 0, ctx: JobContext | None = None, label: str = "") -> dict[str, Any]:
    """Ask every suite question (the model's own chat template, the default system prompt), then score."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=1024, n_threads=n_threads or os.cpu_count() or 1,
                          seed=seed, verbose=False)
    items = questions(suite)
    replies, latencies, tokens = [], [], 0
    try:
        for i, (area, item) in enumerate(items):
            if ctx:
                ctx.check_cancelled()
            t0 = time.perf_counter()
            out = llm.create_chat_completion(
                messages=[{"role": "system", "content": system}, {"role": "user", "content": item["question"]}],
                max_tokens=num_predict, temperature=0.0, seed=seed,
            )
            dt = time.perf_counter() - t0
            tokens += out["usage"]["completion_tokens"]
            latencies.append(dt)
            replies.append({"area": area, "item": item, "reply": out["choices"][0]["message"]["content"] or "",
                            "latency_s": dt})
            if ctx:
                ctx.report(Progress(step=i + 1, total=len(items), message=f"{label} {item['id']}".strip()))
    finally:
        llm.close()
    result = score(replies)
    lat = sorted(latencies)
    result["latency"] = {
        "p50_s": statistics.median(lat),
        "p99_s": lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))],
        "mean_s": statistics.fmean(lat),
        "tokens_per_s": tokens / sum(lat) if sum(lat) else 0.0,
    }
    result["model"] = str(gguf)
    result["suite"] = {"name": suite.get("name"), "version": suite.get("version")}
    result["settings"] = {"system": system, "num_predict": num_predict, "temperature": 0.0, "seed": seed}
    return result


def write_results(path: Path, results: dict[str, Any]) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(results, indent=2, ensure_ascii=False))
    os.replace(tmp, path)
    return path
