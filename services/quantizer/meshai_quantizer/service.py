"""The quantizer's gRPC face: HF folders from the bucket -> GGUF (candidate, and a cached baseline) + Modelfile."""

from __future__ import annotations

import time
from functools import partial

import grpc

from meshai.v1 import jobs_pb2, quantizer_pb2, quantizer_pb2_grpc
from meshai_common.jobs import JobServicerMixin, RunContext, job_service
from meshai_common.manifest import write_manifest
from meshai_common.modelfile import default_modelfile
from meshai_common.progress import Progress
from meshai_common.refs import check_prefix, fetch_prefix, to_ref
from meshai_common.registry import check_model_name
from meshai_quantizer.quantize import check_qtype, hf_to_gguf_pair, hf_to_quantized

STAGE = "quantize"


def run_quantize(req: quantizer_pb2.QuantizeRequest, ctx: RunContext) -> tuple[jobs_pb2.QuantizeResult, str]:
    t0 = time.monotonic()
    qtype = check_qtype(req.qtype)
    name = check_model_name(req.model_name or "mesh-ai")
    timings: dict[str, float] = {}
    steps = 4 if req.baseline_prefix else 2
    ctx.report(Progress(step=0, total=steps, message="downloading merged model"))
    cand_dir = fetch_prefix(ctx.store, req.candidate_prefix, ctx.workdir / "candidate")
    ctx.report(Progress(step=1, total=steps, message=f"converting and quantizing to {qtype}"))
    gguf, f16, t = hf_to_gguf_pair(cand_dir, ctx.workdir / "gguf", name, qtype)
    timings |= {f"candidate_{k}": v for k, v in t.items()}
    ctx.check_cancelled()
    cand = ctx.store.put_file(gguf, f"{ctx.prefix}/{gguf.name}")
    outputs = [cand]
    result = jobs_pb2.QuantizeResult(candidate_gguf=to_ref(cand), qtype=qtype)
    if qtype != "F16":  # kept so the evaluator can measure what quantization costs
        cand_f16 = ctx.store.put_file(f16, f"{ctx.prefix}/{f16.name}")
        result.candidate_f16.CopyFrom(to_ref(cand_f16))
        outputs.append(cand_f16)
    mf_path = ctx.workdir / "Modelfile"
    extensions = {"grounding": req.grounding} if req.grounding else {}
    mf_path.write_text(default_modelfile(f"./{gguf.name}", extensions=extensions))
    modelfile = ctx.store.put_file(mf_path, f"{ctx.prefix}/Modelfile")
    result.modelfile.CopyFrom(to_ref(modelfile))
    outputs.append(modelfile)
    if req.baseline_prefix:
        # The base's GGUF depends only on the base weights and qtype: built once, then reused by every run.
        cached_key = f"cache/baseline/{req.baseline_key or 'unkeyed'}/base-{qtype}.gguf"
        if req.baseline_key and ctx.store.exists(cached_key):
            base = ctx.store.stat(cached_key)
            ctx.report(Progress(step=3, total=steps, message="baseline GGUF from cache"))
        else:
            ctx.report(Progress(step=2, total=steps, message="building the baseline GGUF"))
            base_dir = fetch_prefix(ctx.store, req.baseline_prefix, ctx.workdir / "base")
            base_gguf, t = hf_to_quantized(base_dir, ctx.workdir / "gguf-base", "base", qtype)
            timings |= {f"baseline_{k}": v for k, v in t.items()}
            base = ctx.store.put_file(base_gguf, cached_key if req.baseline_key else f"{ctx.prefix}/{base_gguf.name}")
        result.baseline_gguf.CopyFrom(to_ref(base))
        outputs.append(base)
    ctx.report(Progress(step=steps, total=steps, message="done"))
    manifest = write_manifest(
        ctx.store, ctx.run_id, STAGE, inputs=[ctx.store.stat(k) for k in ctx.store.list(req.candidate_prefix + "/")],
        outputs=outputs, config={"qtype": qtype, "model_name": name, "baseline_key": req.baseline_key,
                "grounding": req.grounding or None},
        timings=timings | {"total": time.monotonic() - t0},
        parents={"train": f"runs/{ctx.run_id}/train/manifest.json"},
    )
    return result, manifest.key


class QuantizerServicer(JobServicerMixin, quantizer_pb2_grpc.QuantizerServiceServicer):

    def Submit(self, request: quantizer_pb2.QuantizeRequest, context: grpc.ServicerContext) -> jobs_pb2.JobRef:  # noqa: N802
        check_qtype(request.qtype)
        check_model_name(request.model_name or "mesh-ai")
        check_prefix(self.runtime.store, request.candidate_prefix, "QuantizeRequest.candidate_prefix")
        if request.baseline_prefix:
            check_prefix(self.runtime.store, request.baseline_prefix, "QuantizeRequest.baseline_prefix")
        return self.runtime.submit(request.run_id, partial(run_quantize, request))


build = job_service(STAGE, QuantizerServicer, quantizer_pb2_grpc.add_QuantizerServiceServicer_to_server,
                    quantizer_pb2.DESCRIPTOR.services_by_name["QuantizerService"], workers=1)
