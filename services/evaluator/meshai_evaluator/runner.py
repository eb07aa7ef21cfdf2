"""Ask every suite question as Mesh-Master asks it, over several passes, and score each pass.

A pass is the bot's sampling (temperature 0.7, top_p 0.9, top_k 40, repeat_penalty 1.1, num_predict 80) with its
own seed; one greedy pass (temperature 0) comes first, so a run is reproducible and the spread over seeds shows how
much luck is in a score. Areas are the mean over passes; `spread` gives min, max and standard deviation.

Replies of a local model are cached by what makes them what they are (model digest, Modelfile, suite questions,
options, seeds, the catalog and grounding versions), so the base model is asked once per machine and bucket, not
once per run. Scores are always computed afresh from the cached replies.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from meshai_common.progress import JobContext, Progress
from meshai_common.prompts import meshmaster_prompt
from meshai_evaluator.askers import BOT_OPTIONS, Asker
from meshai_evaluator.scoring import score

Item = tuple[str, dict[str, Any]]  # (area, item)
# get(key) -> cached value or None; put(key, value)
CacheGet = Callable[[str], Any]
CachePut = Callable[[str, Any], None]


def passes(seeds: int) -> list[tuple[str, dict[str, Any]]]:
    """Greedy first, then `seeds` passes at the bot's sampling, each with its own seed."""
    out = [("greedy", {"temperature": 0.0, "seed": 0})]
    out += [(f"seed {s}", {"seed": s}) for s in range(1, seeds + 1)]
    return out


def prompt_for(item: dict[str, Any]) -> str:
    """The exact `prompt` the bot would send for this item (an item may carry a ready prompt: the test split)."""
    if item.get("prompt"):
        return item["prompt"]
    return meshmaster_prompt(item["question"], item.get("context") or ())


def _cache_key(asker: Asker, items: Sequence[Item], plan: list[tuple[str, dict[str, Any]]]) -> str:
    from meshai_common.grounding import GROUNDING_VERSION
    from meshai_common.meshmaster import load_catalog

    h = hashlib.sha256()
    h.update(asker.identity.encode())
    h.update(json.dumps([prompt_for(it) for _, it in items]).encode())
    h.update(json.dumps([BOT_OPTIONS, plan], sort_keys=True).encode())
    h.update(f"catalog {load_catalog().version} grounding {GROUNDING_VERSION}".encode())
    return h.hexdigest()


def evaluate(asker: Asker, items: Sequence[Item], *, seeds: int = 1, ctx: JobContext | None = None,
             label: str = "", cache: tuple[CacheGet, CachePut] | None = None) -> dict[str, Any]:
    """Ask every item in every pass, score each pass, aggregate."""
    plan = passes(seeds)
    key = _cache_key(asker, items, plan) if cache and asker.identity else ""
    cached = cache[0](key) if key and cache else None
    total = len(plan) * len(items)
    asked: list[list[dict[str, Any]]] = []
    if cached is not None and len(cached) == len(plan) and all(len(p) == len(items) for p in cached):
        asked = cached
        if ctx:
            ctx.report(Progress(step=total, total=total, message=f"{label}: replies from cache".strip()))
    else:
        done = 0
        asked = [[] for _ in plan]
        # Item by item, every pass in turn: consecutive asks share the whole prompt, so llama.cpp reuses its
        # evaluated prefix and only the first pass pays for the prompt.
        for _area, item in items:
            prompt = prompt_for(item)
            for (name, opts), replies in zip(plan, asked, strict=True):
                if ctx:
                    ctx.check_cancelled()
                r = asker.ask(prompt, BOT_OPTIONS | opts)
                replies.append({"reply": r.text, "latency_s": r.latency_s, "first_token_s": r.first_token_s,
                                "tokens": r.tokens})
                done += 1
                if ctx and (done % 5 == 0 or done == total):
                    ctx.report(Progress(step=done, total=total, message=label or name))
        if key and cache:
            cache[1](key, asked)
    runs = []
    for (name, _), replies in zip(plan, asked, strict=True):
        scored = score([{"area": area, "item": item, **r} for (area, item), r in zip(items, replies, strict=True)])
        scored["pass"] = name
        runs.append(scored)
    result = aggregate(runs)
    result["latency"] = latency_summary([r for p in asked for r in p])
    result["model"] = asker.label
    result["passes"] = [name for name, _ in plan]
    result["from_cache"] = cached is not None and asked is cached
    return result


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean of each area over passes, with min/max/sd; every item with its reply in each pass."""
    areas = list(runs[0]["areas"])

    def spread(values: list[float]) -> dict[str, float]:
        return {"min": min(values), "max": max(values),
                "sd": statistics.pstdev(values) if len(values) > 1 else 0.0}

    out: dict[str, Any] = {
        "areas": {a: statistics.fmean(r["areas"][a] for r in runs) for a in areas},
        "overall": statistics.fmean(r["overall"] for r in runs),
        "hallucinated_command_rate": statistics.fmean(r["hallucinated_command_rate"] for r in runs),
        "n": runs[0]["n"],
        "spread": {a: spread([r["areas"][a] for r in runs]) for a in areas}
        | {"overall": spread([r["overall"] for r in runs]),
           "hallucinated_command_rate": spread([r["hallucinated_command_rate"] for r in runs])},
        "per_pass": [{"pass": r["pass"], "areas": r["areas"], "overall": r["overall"],
                      "hallucinated_command_rate": r["hallucinated_command_rate"]} for r in runs],
    }
    items = []
    for i, first in enumerate(runs[0]["items"]):
        entry = {k: v for k, v in first.items() if k not in ("reply", "passed", "reason", "latency_s")}
        entry["replies"] = [{"pass": r["pass"], "reply": r["items"][i]["reply"], "passed": r["items"][i]["passed"],
                             "reason": r["items"][i].get("reason", "")} for r in runs]
        entry["pass_rate"] = 100.0 * sum(x["passed"] for x in entry["replies"]) / len(runs)
        items.append(entry)
    out["items"] = items
    return out


def latency_summary(replies: list[dict[str, Any]]) -> dict[str, float]:
    lat = sorted(r["latency_s"] for r in replies)
    if not lat:
        return {}
    first = sorted(r["first_token_s"] for r in replies if r.get("first_token_s") is not None)
    tokens = sum(r.get("tokens", 0) for r in replies)

    def pct(xs: list[float], q: float) -> float:
        return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]

    out = {"p50_s": pct(lat, 0.5), "p90_s": pct(lat, 0.9), "p99_s": pct(lat, 0.99), "mean_s": statistics.fmean(lat),
           "tokens_per_s": tokens / sum(lat) if sum(lat) else 0.0}
    if first:
        out["first_token_p50_s"] = pct(first, 0.5)
    return out


def write_results(path: Path, results: dict[str, Any]) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(results, indent=2, ensure_ascii=False))
    os.replace(tmp, path)
    return path
