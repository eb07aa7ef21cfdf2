"""The data service's gRPC face: downloads inputs, runs `prepare`, publishes the splits and a manifest."""

from __future__ import annotations

import time
from functools import partial

import grpc

from meshai.v1 import data_pb2, data_pb2_grpc, jobs_pb2
from meshai_common.errors import InvalidInput
from meshai_common.jobs import JobServicerMixin, RunContext, job_service
from meshai_common.manifest import write_manifest
from meshai_common.refs import check_refs, fetch, to_ref
from meshai_common.store import StoredObject

STAGE = "data"
SPLITS = ("train", "val", "test")


def run_prepare(req: data_pb2.PrepareDataRequest, ctx: RunContext) -> tuple[jobs_pb2.DataResult, str]:
    from meshai_data.prepare import DEFAULT_MIN_PAIRS, prepare

    t0 = time.monotonic()
    archives = fetch(ctx, list(req.archives), "archives")
    mailboxes = fetch(ctx, [req.mailboxes], "mailboxes")[0] if req.HasField("mailboxes") else None
    out_dir = ctx.workdir / "out"
    meta = prepare(
        archives, mailboxes, out_dir, seed=req.seed, min_pairs=req.min_pairs or DEFAULT_MIN_PAIRS,
        cap=req.cap, strict=req.strict, exclude_prompts=list(req.exclude_prompts), ctx=ctx,
    )
    ctx.check_cancelled()
    outputs = {name: ctx.store.put_file(out_dir / f"{name}.jsonl", f"{ctx.prefix}/{name}.jsonl") for name in SPLITS}
    outputs["metadata"] = ctx.store.put_file(out_dir / "metadata.json", f"{ctx.prefix}/metadata.json")
    manifest = write_manifest(
        ctx.store, ctx.run_id, STAGE,
        inputs=[StoredObject(r.key, r.sha256, r.size) for r in [*req.archives, *([req.mailboxes] if mailboxes else [])]],
        outputs=outputs.values(),
        config={"seed": req.seed, "min_pairs": req.min_pairs or DEFAULT_MIN_PAIRS, "cap": req.cap,
                "strict": req.strict, "excluded_prompts": len(req.exclude_prompts),
                "grounding": meta.get("grounding"), "decontaminated": meta.get("decontaminated_by_suite")},
        timings={"total": time.monotonic() - t0},
        metrics={k: meta.get(k) for k in ("train_size", "val_size", "test_size", "total_pairs", "sources")},
    )
    result = jobs_pb2.DataResult(
        train=to_ref(outputs["train"]), val=to_ref(outputs["val"]), test=to_ref(outputs["test"]),
        metadata=to_ref(outputs["metadata"]), train_size=int(meta.get("train_size", 0)),
        val_size=int(meta.get("val_size", 0)), test_size=int(meta.get("test_size", 0)),
    )
    return result, manifest.key


class DataServicer(JobServicerMixin, data_pb2_grpc.DataServiceServicer):

    def Submit(self, request: data_pb2.PrepareDataRequest, context: grpc.ServicerContext) -> jobs_pb2.JobRef:  # noqa: N802
        if not request.archives:
            raise InvalidInput("PrepareDataRequest.archives is empty: give at least one messages_archive.json object")
        if request.min_pairs < 0:
            raise InvalidInput(f"PrepareDataRequest.min_pairs must be >= 0, got {request.min_pairs}")
        check_refs(
            self.runtime.store,
            [*request.archives, *([request.mailboxes] if request.HasField("mailboxes") else [])],
            "PrepareDataRequest.archives/mailboxes",
        )
        return self.runtime.submit(request.run_id, partial(run_prepare, request))


build = job_service(STAGE, DataServicer, data_pb2_grpc.add_DataServiceServicer_to_server,
                    data_pb2.DESCRIPTOR.services_by_name["DataService"], workers=2)
