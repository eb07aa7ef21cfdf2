"""The data service as a real process over real gRPC, with a real bucket."""

from __future__ import annotations

import json
import signal

import grpc
import pytest

from meshai.v1 import data_pb2, data_pb2_grpc, jobs_pb2
from meshai_common.refs import to_ref
from meshai_testing import FIXTURES

State = jobs_pb2.JobState


@pytest.fixture
def data_service(start_service, s3_env):
    svc = start_service("data", s3_env)
    svc.wait_health("SERVING")
    channel = grpc.insecure_channel(svc.addr)
    yield svc, data_pb2_grpc.DataServiceStub(channel)
    channel.close()


def _finish(stub, job_id):
    events = list(stub.Watch(jobs_pb2.WatchRequest(job_id=job_id), timeout=120))
    return events, stub.Get(jobs_pb2.GetJobRequest(job_id=job_id), timeout=10)


def test_prepare_over_grpc_publishes_splits_and_manifest(data_service, store):
    svc, stub = data_service
    arch = store.put_file(FIXTURES / "messages_archive.json", "runs/g1/inputs/messages_archive.json")
    mb = store.put_file(FIXTURES / "mesh_mailboxes.json", "runs/g1/inputs/mesh_mailboxes.json")
    ref = stub.Submit(data_pb2.PrepareDataRequest(run_id="g1", archives=[to_ref(arch)], mailboxes=to_ref(mb),
                                                  min_pairs=200, seed=7, cap=True), timeout=30)
    assert ref.job_id == "g1/data"
    events, job = _finish(stub, ref.job_id)
    assert job.state == State.JOB_STATE_SUCCEEDED, job.error
    assert events[-1].state == State.JOB_STATE_SUCCEEDED
    d = job.data
    assert d.train_size > 0 and d.val_size > 0 and d.test_size > 0
    for r in (d.train, d.val, d.test, d.metadata):
        assert store.stat(r.key).sha256 == r.sha256
    manifest = store.get_json(job.manifest_key)
    assert manifest["stage"] == "data"
    assert {i["sha256"] for i in manifest["inputs"]} == {arch.sha256, mb.sha256}
    first = json.loads(store.get_bytes(d.train.key).decode().splitlines()[0])
    assert [m["role"] for m in first["messages"]][-1] == "assistant"


def test_missing_input_object_is_not_found_at_submit(data_service):
    _, stub = data_service
    req = data_pb2.PrepareDataRequest(run_id="g2", archives=[jobs_pb2.ObjectRef(key="runs/g2/inputs/nope.json")])
    with pytest.raises(grpc.RpcError) as err:
        stub.Submit(req, timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "runs/g2/inputs/nope.json" in err.value.details()


def test_no_archives_is_invalid_argument(data_service):
    _, stub = data_service
    with pytest.raises(grpc.RpcError) as err:
        stub.Submit(data_pb2.PrepareDataRequest(run_id="g3"), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "archives is empty" in err.value.details()


def test_malformed_archive_fails_with_file_named_and_publishes_nothing(data_service, store, tmp_path):
    _, stub = data_service
    bad = tmp_path / "messages_archive.json"
    bad.write_text('[{"timestamp": "2025-09-20 08:37:04 UTC", "message": ')  # truncated JSON
    arch = store.put_file(bad, "runs/g4/inputs/messages_archive.json")
    ref = stub.Submit(data_pb2.PrepareDataRequest(run_id="g4", archives=[to_ref(arch)], cap=True), timeout=10)
    _, job = _finish(stub, ref.job_id)
    assert job.state == State.JOB_STATE_FAILED
    assert "messages_archive.json" in job.error and "\n" not in job.error
    assert store.list("runs/g4/data/") == ["runs/g4/data/job.json"]


def test_unknown_job_is_not_found(data_service):
    _, stub = data_service
    with pytest.raises(grpc.RpcError) as err:
        stub.Get(jobs_pb2.GetJobRequest(job_id="no-such-run/data"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no-such-run" in err.value.details()


def test_sigterm_drains_and_exits_cleanly(data_service):
    svc, _ = data_service
    svc.proc.send_signal(signal.SIGTERM)
    assert svc.proc.wait(30) == 0


def test_health_is_not_serving_while_bucket_unreachable(start_service, s3_env):
    from meshai_common.net import free_port

    svc = start_service("data", s3_env | {"MESHAI_S3_ENDPOINT": f"127.0.0.1:{free_port()}"})
    assert svc.wait_health("NOT_SERVING") == "NOT_SERVING"
    assert "cannot reach S3" in svc.log()


def test_missing_env_exits_with_the_variable_named(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHAI_")}
    proc = subprocess.run([sys.executable, "-m", "meshai_data"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "MESHAI_S3_ENDPOINT is not set" in proc.stderr
