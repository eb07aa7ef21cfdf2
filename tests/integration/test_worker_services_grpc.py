"""Trainer, quantizer and evaluator as real processes over gRPC: health, validation at submit, unknown ids.

Their real work runs in tests/e2e; here each API rejects bad requests before queueing anything.
"""

from __future__ import annotations

import grpc
import pytest

from meshai.v1 import (
    evaluator_pb2,
    evaluator_pb2_grpc,
    jobs_pb2,
    quantizer_pb2,
    quantizer_pb2_grpc,
    trainer_pb2,
    trainer_pb2_grpc,
)

STUBS = {
    "trainer": trainer_pb2_grpc.TrainerServiceStub,
    "quantizer": quantizer_pb2_grpc.QuantizerServiceStub,
    "evaluator": evaluator_pb2_grpc.EvaluatorServiceStub,
}
STAGE = {"trainer": "train", "quantizer": "quantize", "evaluator": "eval"}


@pytest.fixture(scope="module", params=sorted(STUBS))
def worker(request, tmp_path_factory, s3_server):
    import uuid

    from meshai_common.config import S3Settings
    from meshai_common.store import ArtifactStore
    from meshai_testing import ServiceProcess

    bucket = f"t-{uuid.uuid4().hex[:12]}"
    store = ArtifactStore(S3Settings(bucket=bucket, **s3_server))
    store.ensure_bucket()
    env = {"MESHAI_S3_ENDPOINT": s3_server["endpoint"], "MESHAI_S3_ACCESS_KEY": s3_server["access_key"],
           "MESHAI_S3_SECRET_KEY": s3_server["secret_key"], "MESHAI_S3_BUCKET": bucket}
    svc = ServiceProcess(request.param, env, tmp_path_factory.mktemp(request.param))
    svc.wait_health("SERVING", timeout=90)
    channel = grpc.insecure_channel(svc.addr)
    yield request.param, STUBS[request.param](channel), store, svc.addr
    channel.close()
    svc.stop()


def _code(fn, *args):
    with pytest.raises(grpc.RpcError) as err:
        fn(*args, timeout=30)
    return err.value.code(), err.value.details()


def test_unknown_job_is_not_found(worker):
    name, stub, *_ = worker
    code, details = _code(stub.Get, jobs_pb2.GetJobRequest(job_id=f"nope/{STAGE[name]}"))
    assert code == grpc.StatusCode.NOT_FOUND and "nope" in details
    code, _ = _code(stub.Cancel, jobs_pb2.CancelJobRequest(job_id="bad id"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_missing_inputs_are_rejected_at_submit(worker):
    name, stub, *_ = worker
    ref = jobs_pb2.ObjectRef(key="runs/x/data/train.jsonl")
    req = {
        "trainer": trainer_pb2.TrainRequest(run_id="x", train=ref, val=ref),
        "quantizer": quantizer_pb2.QuantizeRequest(run_id="x", candidate_prefix="runs/x/train/merged"),
        "evaluator": evaluator_pb2.EvalRequest(run_id="x", candidate=ref, baseline=ref),
    }[name]
    code, details = _code(stub.Submit, req)
    assert code == grpc.StatusCode.NOT_FOUND and "runs/x/" in details


def test_bad_settings_are_invalid_argument(worker):
    name, stub, store, _ = worker
    ref_obj = store.put_bytes(b"{}\n", "runs/y/data/train.jsonl")
    ref = jobs_pb2.ObjectRef(key=ref_obj.key, sha256=ref_obj.sha256, size=ref_obj.size)
    req, fragment = {
        "trainer": (trainer_pb2.TrainRequest(run_id="y", train=ref, val=ref, config_name="cpu-smollm2",
                                             overrides={"lora_rank": "8"}), "lora_rank: unknown key"),
        "quantizer": (quantizer_pb2.QuantizeRequest(run_id="y", candidate_prefix="runs/y/data", qtype="Q3_X"),
                      "unknown quantization 'Q3_X'"),
        "evaluator": (evaluator_pb2.EvalRequest(run_id="y", candidate=ref, baseline=ref, threshold=140),
                      "threshold must be within 0-100"),
    }[name]
    code, details = _code(stub.Submit, req)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fragment in details
    assert store.list("runs/y/") == ["runs/y/data/train.jsonl"]


def test_evaluator_serves_its_suite_questions(worker):
    """The pipeline asks the evaluator for its suites' questions over gRPC (for decontamination)."""
    name, stub, store, addr = worker
    if name != "evaluator":
        pytest.skip("the evaluator's own method")
    reply = stub.GetSuiteQuestions(evaluator_pb2.SuiteQuestionsRequest(suites=["public"]), timeout=30)
    (public,) = reply.suites
    assert (public.name, public.version, len(public.questions)) == ("public", 1, 19)
    assert public.questions[:3] == ["How do I see all the nodes on the mesh?", "How do I relay a message to bob?",
                                    "How do I check my mail?"]
    every = stub.GetSuiteQuestions(evaluator_pb2.SuiteQuestionsRequest(), timeout=30)
    assert [s.name for s in every.suites] == ["field", "fresh", "public"]
    assert [len(s.questions) for s in every.suites] == [184, 90, 19]  # each suite's question: lines
    code, details = _code(stub.GetSuiteQuestions, evaluator_pb2.SuiteQuestionsRequest(suites=["../etc/passwd"]))
    assert code == grpc.StatusCode.NOT_FOUND and "shipped: field, fresh, public" in details

    from meshai_orchestrator.pipeline import Addresses, Pipeline

    pipeline = Pipeline(Addresses("", "", "", addr), store, out=lambda _: None, progress=False)
    try:
        exclude = pipeline.suite_questions()
    finally:
        pipeline.close()
    # Each text once, whichever suites share it.
    assert len(exclude) == len(set(exclude)) and "How do I relay a message to bob?" in exclude
    assert set(public.questions) <= set(exclude) and set(every.suites[0].questions) <= set(exclude)
