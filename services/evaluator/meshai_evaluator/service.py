"""The evaluator's gRPC face: the candidate, the model in production and the base model through the suite, asked
as Mesh-Master asks; results.json, report.html and the promotion gate."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

import grpc

from meshai.v1 import evaluator_pb2, evaluator_pb2_grpc, jobs_pb2
from meshai_common.errors import InvalidInput, NotFound
from meshai_common.jobs import JobServicerMixin, RunContext, job_service
from meshai_common.manifest import write_manifest
from meshai_common.modelfile import Modelfile, parse_modelfile
from meshai_common.refs import check_refs, fetch, from_ref, to_ref
from meshai_common.registry import check_model_name
from meshai_common.registry import current as current_pointer
from meshai_common.sampling import even_spread
from meshai_common.store import ArtifactStore
from meshai_evaluator.askers import BOT_OPTIONS, LocalAsker
from meshai_evaluator.gate import GatePolicy, decide
from meshai_evaluator.report import render
from meshai_evaluator.runner import evaluate, write_results
from meshai_evaluator.suite import load_suite, questions, suite_names
from meshai_evaluator.test_split import test_split_questions

STAGE = "eval"
DEFAULT_SUITE = "field"
CACHE_PREFIX = "cache/eval-replies"


def policy_of(req: evaluator_pb2.EvalRequest) -> GatePolicy:
    defaults = GatePolicy()
    return GatePolicy(
        margin=req.margin if req.HasField("margin") else defaults.margin,
        max_hallucination_rate=(req.max_hallucination_rate if req.HasField("max_hallucination_rate")
                                else defaults.max_hallucination_rate),
        max_area_drop=req.max_area_drop if req.HasField("max_area_drop") else defaults.max_area_drop,
        floor=req.threshold,
    )


def bucket_cache(store: ArtifactStore) -> tuple[Any, Any]:
    """Replies of a local model, kept in the bucket under the key of everything that made them."""

    def get(key: str) -> Any:
        try:
            return store.get_json(f"{CACHE_PREFIX}/{key}.json")
        except NotFound:
            return None

    def put(key: str, value: Any) -> None:
        store.put_json(value, f"{CACHE_PREFIX}/{key}.json")

    return get, put


def _modelfile(ctx: RunContext, ref: jobs_pb2.ObjectRef, folder: str) -> Modelfile | None:
    if not ref.key:
        return None
    (path,) = fetch(ctx, [ref], folder)
    return parse_modelfile(path.read_text(), ref.key)


def _production(ctx: RunContext, name: str) -> tuple[Path, Modelfile | None, dict[str, Any]] | None:
    """The promoted model's GGUF and Modelfile, or None when nothing is in production yet."""
    if not name:
        return None
    try:
        pointer = current_pointer(ctx.store, check_model_name(name))
    except NotFound:
        return None
    gguf = jobs_pb2.ObjectRef(key=pointer["gguf"]["key"], sha256=pointer["gguf"]["sha256"])
    (path,) = fetch(ctx, [gguf], "production")
    mf = pointer.get("modelfile")
    modelfile = _modelfile(ctx, jobs_pb2.ObjectRef(key=mf["key"], sha256=mf["sha256"]), "production") if mf else None
    return path, modelfile, pointer


def run_eval(req: evaluator_pb2.EvalRequest, ctx: RunContext) -> tuple[jobs_pb2.EvalResult, str]:
    t0 = time.monotonic()
    suite = load_suite(req.suite or DEFAULT_SUITE)
    items = questions(suite)
    seeds = req.seeds if req.HasField("seeds") else 1
    policy = policy_of(req)
    cache = bucket_cache(ctx.store)
    (cand_path,) = fetch(ctx, [req.candidate], "candidate")
    cand_mf = _modelfile(ctx, req.candidate_modelfile, "candidate")
    (base_path,) = fetch(ctx, [req.baseline], "base")
    production = _production(ctx, req.model_name)
    timings: dict[str, float] = {}

    def run(name: str, asker: LocalAsker, run_items: list[Any], n_seeds: int) -> dict[str, Any]:
        t = time.monotonic()
        out = evaluate(asker, run_items, seeds=n_seeds, ctx=ctx, label=name, cache=cache)
        timings[name] = time.monotonic() - t
        return out

    models: dict[str, dict[str, Any]] = {}
    test_result = None
    cand = LocalAsker(cand_path, cand_mf, sha256=req.candidate.sha256)
    try:
        models["candidate"] = run("candidate", cand, items, seeds)
        if req.test_split.key:
            (split_path,) = fetch(ctx, [req.test_split], "data")
            split = test_split_questions(split_path)
            split = even_spread(split, req.test_limit)
            test_result = run("test split", cand, split, 0)
    finally:
        cand.close()
    refs = [("production", production[0], production[1], production[2]["gguf"]["sha256"])] if production else []
    refs.append(("base", base_path, None, req.baseline.sha256))
    if req.candidate_f16.key:
        (f16_path,) = fetch(ctx, [req.candidate_f16], "candidate-f16")
        refs.append(("candidate_f16", f16_path, cand_mf, req.candidate_f16.sha256))
    for name, path, mf, sha in refs:
        asker = LocalAsker(path, mf, sha256=sha)
        try:
            models[name] = run(name, asker, items, seeds)
        finally:
            asker.close()
    reference = "production" if production else "base"
    verdict = decide(models["candidate"], models[reference], reference, policy)
    results = {"run_id": ctx.run_id, "suite": {"name": suite.get("name"), "version": suite.get("version")},
               "options": BOT_OPTIONS, "seeds": seeds, "models": models, "gate": verdict,
               "production_run_id": production[2].get("run_id") if production else None,
               "test_split": test_result, "timings_s": timings}
    path = write_results(ctx.workdir / "results.json", results)
    stored = ctx.store.put_file(path, f"{ctx.prefix}/results.json")
    report_path = ctx.workdir / "report.html"
    report_path.write_text(render(results), encoding="utf-8")
    report = ctx.store.put_file(report_path, f"{ctx.prefix}/report.html")
    c, r = models["candidate"], models[reference]
    manifest = write_manifest(
        ctx.store, ctx.run_id, STAGE, inputs=[from_ref(req.candidate), from_ref(req.baseline)],
        outputs=[stored, report],
        config={"suite": results["suite"], "seeds": seeds, "options": BOT_OPTIONS, "gate": verdict["policy"],
                "reference": reference},
        timings=timings | {"total": time.monotonic() - t0},
        metrics={"candidate_overall": c["overall"], "reference_overall": r["overall"], "promote": verdict["promote"],
                 "candidate_hallucinated_command_rate": c["hallucinated_command_rate"],
                 "candidate_latency": c["latency"]},
        parents={"quantize": f"runs/{ctx.run_id}/quantize/manifest.json"},
    )
    out = jobs_pb2.EvalResult(results=to_ref(stored), report=to_ref(report), candidate_overall=c["overall"],
                              baseline_overall=r["overall"], promote=verdict["promote"], reason=verdict["reason"],
                              reference=reference, candidate_hallucinated_rate=c["hallucinated_command_rate"])
    out.candidate_areas.update(c["areas"])
    out.baseline_areas.update(r["areas"])
    return out, manifest.key


class EvaluatorServicer(JobServicerMixin, evaluator_pb2_grpc.EvaluatorServiceServicer):

    def Submit(self, request: evaluator_pb2.EvalRequest, context: grpc.ServicerContext) -> jobs_pb2.JobRef:  # noqa: N802
        if not request.candidate.key or not request.baseline.key:
            raise InvalidInput("EvalRequest needs both a candidate and a baseline GGUF")
        if not 0 <= request.threshold <= 100:
            raise InvalidInput(f"EvalRequest.threshold must be within 0-100, got {request.threshold}")
        if request.test_limit < 0:
            raise InvalidInput(f"EvalRequest.test_limit must be >= 0, got {request.test_limit}")
        if request.HasField("seeds") and not 0 <= request.seeds <= 10:
            raise InvalidInput(f"EvalRequest.seeds must be within 0-10, got {request.seeds}")
        policy_of(request)  # bounds checked now, not minutes into the job
        if request.model_name:
            check_model_name(request.model_name)
        load_suite(request.suite or DEFAULT_SUITE)
        refs = [request.candidate, request.baseline]
        refs += [r for r in (request.candidate_modelfile, request.candidate_f16, request.test_split) if r.key]
        check_refs(self.runtime.store, refs, "EvalRequest inputs")
        return self.runtime.submit(request.run_id, partial(run_eval, request))

    def GetSuiteQuestions(self, request: evaluator_pb2.SuiteQuestionsRequest,  # noqa: N802
                          context: grpc.ServicerContext) -> evaluator_pb2.SuiteQuestionsReply:
        return suite_questions_reply(list(request.suites))


def suite_questions_reply(names: list[str]) -> evaluator_pb2.SuiteQuestionsReply:
    """The question texts of the named shipped suites (every shipped suite when none is named). Names only,
    never paths: a caller cannot make the service read a file of its choosing."""
    shipped = suite_names()
    unknown = [n for n in names if n not in shipped]
    if unknown:
        raise NotFound(f"no evaluation suite {unknown[0]!r} (shipped: {', '.join(shipped)})")
    reply = evaluator_pb2.SuiteQuestionsReply()
    for name in names or shipped:
        suite = load_suite(name)
        reply.suites.add(name=name, version=int(suite.get("version") or 0),
                         questions=[item["question"] for _, item in questions(suite)])
    return reply


build = job_service(STAGE, EvaluatorServicer, evaluator_pb2_grpc.add_EvaluatorServiceServicer_to_server,
                    evaluator_pb2.DESCRIPTOR.services_by_name["EvaluatorService"], workers=1)
