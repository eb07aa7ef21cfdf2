"""The promotion gate, the multi-pass runner and the HTML report, on replies given by a scripted asker."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from meshai_common.errors import InvalidInput
from meshai_evaluator.askers import BOT_OPTIONS, HttpAsker, Reply
from meshai_evaluator.gate import GatePolicy, decide
from meshai_evaluator.report import render
from meshai_evaluator.runner import evaluate, passes, prompt_for
from meshai_evaluator.suite import load_suite, questions


def _result(overall: float, halluc: float = 0.0, **areas: float) -> dict[str, Any]:
    base = {"commands": overall, "technical": overall, "hallucination": overall, "brevity": overall}
    return {"overall": overall, "hallucinated_command_rate": halluc, "areas": base | areas}


def test_gate_promotes_only_a_clear_improvement():
    policy = GatePolicy(margin=2.0)
    ok = decide(_result(60.0), _result(50.0), "production", policy)
    assert ok["promote"] and ok["reference"] == "production" and ok["overall_delta"] == pytest.approx(10.0)
    close = decide(_result(51.0), _result(50.0), "production", policy)
    assert not close["promote"] and "margin" in close["reason"] and "51.0" in close["reason"]


def test_gate_names_each_failed_rule_with_numbers():
    cand = _result(70.0, halluc=3.0, technical=20.0)
    ref = _result(50.0, halluc=0.0, technical=45.0)
    verdict = decide(cand, ref, "base", GatePolicy(floor=85.0))
    failed = {r["rule"] for r in verdict["rules"] if not r["passed"]}
    assert failed == {"hallucination", "areas", "floor"}
    assert "3.0%" in verdict["reason"] and "technical -25.0" in verdict["reason"] and "floor 85.0" in verdict["reason"]


def test_gate_hallucination_may_not_rise_even_under_the_ceiling():
    verdict = decide(_result(70.0, halluc=2.0), _result(50.0, halluc=1.0), "production",
                     GatePolicy(max_hallucination_rate=5.0))
    assert not verdict["promote"] and "hallucination" in verdict["reason"]


def test_gate_policy_bounds():
    with pytest.raises(InvalidInput, match="margin"):
        GatePolicy(margin=-1)


class ScriptedAsker:
    """Answers by looking the question up: the runner's logic without a model."""

    label = "scripted"
    identity = "scripted-v1"

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.calls: list[tuple[str, Mapping[str, Any]]] = []

    def ask(self, prompt: str, options: Mapping[str, Any]) -> Reply:
        self.calls.append((prompt, dict(options)))
        return Reply(text=self.answer(prompt, options), latency_s=0.01, first_token_s=0.005, tokens=5)

    def close(self) -> None:
        pass


def test_runner_asks_as_the_bot_greedy_first_then_seeds_and_caches():
    items = questions(load_suite("public"))
    asker = ScriptedAsker(lambda p, o: "Send /nodes to list nodes heard in the last 24h.")
    store: dict[str, Any] = {}
    cache = (store.get, store.__setitem__)
    res = evaluate(asker, items, seeds=2, cache=cache)
    assert res["passes"] == ["greedy", "seed 1", "seed 2"] and res["n"] == len(items)
    assert len(asker.calls) == 3 * len(items)
    prompt, opts = asker.calls[0]
    assert prompt == prompt_for(items[0][1]) and prompt.endswith("\nAnswer:") and "Question: " in prompt
    assert opts["temperature"] == 0.0 and asker.calls[-1][1]["temperature"] == BOT_OPTIONS["temperature"]
    assert {o["seed"] for _, o in asker.calls} == {0, 1, 2}
    # The same model and questions again: replies come from the cache, scores are computed afresh.
    again = evaluate(asker, items, seeds=2, cache=cache)
    assert len(asker.calls) == 3 * len(items) and again["from_cache"]
    assert again["overall"] == pytest.approx(res["overall"])


def test_runner_spread_shows_luck_between_passes():
    items = questions(load_suite("public"))

    def answer(prompt: str, options: Mapping[str, Any]) -> str:
        if "see all the nodes" in prompt and options["seed"] == 1:
            return "Send /nodes to list nodes heard in the last 24h."
        return "Send /weather for the forecast."

    res = evaluate(ScriptedAsker(answer), items, seeds=2)
    assert res["spread"]["commands"]["max"] > res["spread"]["commands"]["min"]
    item = next(i for i in res["items"] if "see all the nodes" in i["question"])
    assert [r["passed"] for r in item["replies"]] == [False, True, False]


def test_report_is_self_contained_and_lists_failures():
    items = questions(load_suite("public"))
    cand = evaluate(ScriptedAsker(lambda p, o: "Send /nodes <b>now</b>."), items, seeds=0)
    base = evaluate(ScriptedAsker(lambda p, o: ""), items, seeds=0)
    results = {"run_id": "r1", "suite": {"name": "public", "version": 1}, "options": BOT_OPTIONS,
               "models": {"candidate": cand, "base": base}, "gate": decide(cand, base, "base", GatePolicy())}
    page = render(results)
    assert page.startswith("<!doctype html>") and "<script" not in page and "http" not in page.split("<body>")[1]
    assert "&lt;b&gt;now&lt;/b&gt;" in page  # replies are escaped
    assert "Failed replies" in page and "Gate" in page


def test_http_asker_checks_the_url():
    with pytest.raises(InvalidInput, match="http"):
        HttpAsker("localhost:11434", "mesh-ai")
    assert HttpAsker("http://127.0.0.1:11434/api/generate", "m").url == "http://127.0.0.1:11434/api/generate"
    assert passes(0) == [("greedy", {"temperature": 0.0, "seed": 0})]
