"""The evaluator's gRPC face: candidate and baseline GGUFs through the suite, results.json, the promotion gate."""

from __future__ import annotations

import time
from functools import partial

import grpc

from meshai.v1 import evaluator_pb2, evaluator_pb2_grpc, jobs_pb2
from meshai_common.errors import InvalidInput
from meshai_common.jobs import JobServicerMixin, RunContext, job_service
from meshai_common.manifest import write_manifest
from meshai_common.refs import check_refs, fetch, from_ref, to_ref
from meshai_evaluator.runner import evaluate, write_results
from meshai_evaluator.scoring import compare
from meshai_evaluator.suite import load_suite

STAGE = "eval"


def run_eval(req: evaluator_pb2.EvalRequest, ctx: RunContext) -> tuple[jobs_pb2.EvalResult, str]:
    t0 = time.monotonic()
    suite = load_suite(req.suite or "public")
    cand_path, base_path = fetch(ctx, [req.candidate, req.baseline], "models")
    candidate = evaluate(cand_path, suite, ctx=ctx, label="candidate")
    baseline = evaluate(base_path, suite, ctx=ctx, label="baseline")
    verdict = compare(candidate, baseline, req.threshold)
    results = {"run_id": ctx.run_id, "suite": candidate["suite"], "candidate": candidate, "baseline": baseline,
               "comparison": verdict, "threshold": req.threshold}
    path = write_results(ctx.workdir / "results.json", results)
    stored = ctx.store.put_file(path, f"{ctx.prefix}/results.json")
    manifest = write_manifest(
        ctx.store, ctx.run_id, STAGE, inputs=[from_ref(req.candidate), from_ref(req.baseline)], outputs=[stored],
        config={"suite": candidate["suite"], "threshold": req.threshold, **candidate["settings"]},
        timings={"total": time.monotonic() - t0},
        metrics={"candidate_overall": candidate["overall"], "baseline_overall": baseline["overall"],
                 "promote": verdict["promote"], "candidate_latency": candidate["latency"]},
        parents={"quantize": f"runs/{ctx.run_id}/quantize/manifest.json"},
    )
    out = jobs_pb2.EvalResult(results=to_ref(stored), candidate_overall=candidate["overall"],
                              baseline_overall=baseline["overall"], promote=verdict["promote"], reason=verdict["reason"])
    out.candidate_areas.update(candidate["areas"])
    out.baseline_areas.update(baseline["areas"])
    return out, manifest.key


class EvaluatorServicer(JobServicerMixin, evaluator_pb2_grpc.EvaluatorServiceServicer):

    def Submit(self, request: evaluator_pb2.EvalRequest, context: grpc.ServicerContext) -> jobs_pb2.JobRef:  # noqa: N802
        if not request.candidate.key or not request.baseline.key:
            raise InvalidInput("EvalRequest needs both a candidate and a baseline GGUF")
        if not 0 <= request.threshold <= 100:
            raise InvalidInput(f"EvalRequest.threshold must be within 0-100, got {request.threshold}")
        load_suite(request.suite or "public")
        check_refs(self.runtime.store, [request.candidate, request.baseline], "EvalRequest.candidate/baseline")
        return self.runtime.submit(request.run_id, partial(run_eval, request))


build = job_service(STAGE, EvaluatorServicer, evaluator_pb2_grpc.add_EvaluatorServiceServicer_to_server,
                    evaluator_pb2.DESCRIPTOR.services_by_name["EvaluatorService"], workers=1)
