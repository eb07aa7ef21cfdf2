"""The controller's submit / watch / cancel against an API server on 127.0.0.1, with the real S3 server.

No kube-apiserver installs here from PyPI or Debian (bookworm has etcd-server and kubectl, not the API
server), so `KubeAPI` below serves TrainJobs the way the API server does for a CRD: the REST paths, the
Status objects for 401/404/409/410/422, resourceVersions, list and chunked watch streams (ADDED, MODIFIED,
DELETED, ERROR 410 Expired), foreground deletion (the object stays with a deletionTimestamp until its
dependents are gone), and a create validated against the TrainJob CRD's schema. The controller talks to it
through the official `kubernetes` client, configured from a kubeconfig with a bearer token: the client code
path a cluster sees. The test plays Kubeflow's part (conditions) and rank 0's (the status object in the
bucket, written with the pods' own StatusWriter).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from test_kubeflow_trainjob import _request, _settings, crd_problems

from meshai.v1 import jobs_pb2
from meshai_common.errors import InvalidInput, MeshAIError, Unavailable
from meshai_common.jobs import JobRuntime
from meshai_common.progress import LocalContext, Progress

State = jobs_pb2.JobState
TOKEN = "test-token-" + uuid.uuid4().hex
PATH = re.compile(r"^/apis/trainer\.kubeflow\.org/v1alpha1/namespaces/(?P<ns>[^/]+)/trainjobs"
                  r"(?:/(?P<name>[^/]+))?$")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str, name: str = "") -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code,
            "details": {"name": name, "group": "trainer.kubeflow.org", "kind": "trainjobs"}}


class KubeAPI:
    """TrainJobs in memory, served over HTTP on 127.0.0.1 as the API server serves a custom resource."""

    def __init__(self, delete_delay_s: float = 0.5) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[tuple[int, str, dict[str, Any]]] = []  # (resourceVersion, type, object)
        self.rv = 100
        self.compacted_before = 0  # a watch from an older resourceVersion gets 410 Expired
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.delete_delay_s = delete_delay_s
        self.cond = threading.Condition()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method: str) -> None:
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                api.requests.append((method, url.path, query, body))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._send(401, _status(401, "Unauthorized", "Unauthorized"))
                m = PATH.match(url.path)
                if not m:  # what the API server says for a resource it does not serve (CRD not installed)
                    return self._send(404, _status(404, "NotFound",
                                                   "the server could not find the requested resource"))
                if method == "GET" and not m["name"] and query.get("watch") in ("true", "1"):
                    return self._watch(m["ns"], query)
                code, out = api.handle(method, m["ns"], m["name"], body, query)
                self._send(code, out)

            def _watch(self, ns: str, query: dict[str, str]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                since = int(query.get("resourceVersion") or 0)
                name = query.get("fieldSelector", "").removeprefix("metadata.name=")
                deadline = time.monotonic() + float(query.get("timeoutSeconds", 30))

                def chunk(event: dict[str, Any]) -> None:
                    line = json.dumps(event).encode() + b"\n"
                    self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                    self.wfile.flush()

                if since and since < api.compacted_before:
                    chunk({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                                       "status": "Failure", "reason": "Expired", "code": 410,
                                                       "message": f"too old resource version: {since}"}})
                else:
                    while time.monotonic() < deadline:
                        with api.cond:
                            fresh = [(rv, t, o) for rv, t, o in api.events if rv > since
                                     and o["metadata"]["namespace"] == ns and o["metadata"]["name"] == name]
                            if not fresh:
                                api.cond.wait(timeout=max(0.0, min(0.2, deadline - time.monotonic())))
                                continue
                        for rv, kind, obj in fresh:
                            chunk({"type": kind, "object": obj})
                            since = rv
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            def do_GET(self) -> None:  # noqa: N802
                self._route("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._route("POST")

            def do_DELETE(self) -> None:  # noqa: N802
                self._route("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- the API server's behaviour -----------------------------------------------------------------------

    def _emit(self, kind: str, obj: dict[str, Any]) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.events.append((self.rv, kind, json.loads(json.dumps(obj))))
        self.cond.notify_all()

    def handle(self, method: str, ns: str, name: str | None, body: Any,
               query: dict[str, str]) -> tuple[int, Any]:
        with self.cond:
            if method == "POST":
                problems = crd_problems(body, "trainjobs")
                if problems:
                    return 422, _status(422, "Invalid", f"TrainJob.trainer.kubeflow.org is invalid: {problems}")
                key = (ns, body["metadata"]["name"])
                if key in self.objects:
                    return 409, _status(409, "AlreadyExists",
                                        f'trainjobs.trainer.kubeflow.org "{key[1]}" already exists', key[1])
                obj = json.loads(json.dumps(body))
                obj["metadata"].update(namespace=ns, uid=str(uuid.uuid4()), generation=1,
                                       creationTimestamp=_now())
                self.objects[key] = obj
                self._emit("ADDED", obj)
                return 201, obj
            if name is None:
                items = [o for (n, _), o in self.objects.items() if n == ns]
                return 200, {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJobList",
                             "metadata": {"resourceVersion": str(self.rv)}, "items": items}
            obj = self.objects.get((ns, name))
            if obj is None:
                return 404, _status(404, "NotFound", f'trainjobs.trainer.kubeflow.org "{name}" not found', name)
            if method == "GET":
                return 200, obj
            # DELETE: with Foreground the object stays (finalizer foregroundDeletion) until its dependents go.
            policy = (body or {}).get("propagationPolicy") or query.get("propagationPolicy")
            if policy == "Foreground":
                obj["metadata"].update(deletionTimestamp=_now(), finalizers=["foregroundDeletion"])
                self._emit("MODIFIED", obj)
                threading.Timer(self.delete_delay_s, self.remove, (ns, name)).start()
                return 200, obj
            self.remove(ns, name)
            return 200, _status(200, "", "", name) | {"status": "Success"}

    def remove(self, ns: str, name: str) -> None:
        with self.cond:
            obj = self.objects.pop((ns, name), None)
            if obj is not None:
                self._emit("DELETED", obj)

    # -- what Kubeflow's controller would do ----------------------------------------------------------------

    def set_condition(self, ns: str, name: str, kind: str, reason: str, message: str) -> None:
        with self.cond:
            obj = self.objects[(ns, name)]
            conds = [c for c in obj.setdefault("status", {}).setdefault("conditions", []) if c["type"] != kind]
            conds.append({"type": kind, "status": "True", "reason": reason, "message": message,
                          "lastTransitionTime": _now()})
            obj["status"]["conditions"] = conds
            self._emit("MODIFIED", obj)

    def posts(self) -> list[dict[str, Any]]:
        return [b for m, p, q, b in self.requests if m == "POST"]

    def deletes(self) -> list[tuple[str, dict[str, str], Any]]:
        """(path, query, body) of every DELETE: the propagation policy may come in either."""
        return [(p, q, b) for m, p, q, b in self.requests if m == "DELETE"]


@pytest.fixture
def kube(tmp_path, monkeypatch):
    api = KubeAPI()
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "test",
              "clusters": [{"name": "test", "cluster": {"server": api.url}}],
              "users": [{"name": "test", "user": {"token": TOKEN}}],
              "contexts": [{"name": "test",
                            "context": {"cluster": "test", "user": "test", "namespace": "meshai"}}]}
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    yield api
    api.close()


@pytest.fixture
def controller(kube):
    from meshai_trainer.kubeflow.controller import TrainJobController

    return TrainJobController(_settings(poll_s=1.0))  # the API from the kubeconfig, as out of a cluster


@pytest.fixture
def runtime(store, tmp_path):
    rt = JobRuntime("train", store, tmp_path / "work", workers=2)
    yield rt
    rt.shutdown(timeout=5)


def _submit(runtime, controller, req):
    from functools import partial

    from meshai_trainer.service import _run_trainjob

    return runtime.submit(req.run_id, partial(_run_trainjob, controller, req)).job_id


def _wait(what, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _trainjob(kube, req):
    from meshai_trainer.kubeflow.trainjob import trainjob_name

    return _wait(lambda: kube.objects.get(("meshai", trainjob_name(req.run_id))))


def test_submit_watch_relays_progress_and_completion_returns_the_train_result(kube, controller, runtime, store):
    from meshai_trainer.kubeflow.status import StatusWriter

    req = _request("run-ok")
    job_id = _submit(runtime, controller, req)
    obj = _trainjob(kube, req)
    assert kube.posts()[0]["spec"]["trainer"]["args"][-1] == obj["spec"]["trainer"]["args"][-1]
    # Rank 0 in the pod: progress, then the result, then Kubeflow marks the TrainJob Complete.
    rank0 = StatusWriter(store, req.run_id, attempt="pod-1", every_s=0.0)
    for step in (1, 2, 3):
        rank0.report(Progress(step=step, total=3, loss=2.0 / step, metrics={"lr": 1e-3}))
    result = jobs_pb2.TrainResult(merged_prefix="runs/run-ok/train/merged",
                                  adapter_prefix="runs/run-ok/train/adapter", base_prefix="cache/base/k",
                                  base_key="k", metrics={"train_loss": 0.7})
    from google.protobuf import json_format

    rank0.finish("succeeded", result=json_format.MessageToDict(result, preserving_proto_field_name=True),
                 manifest_key="runs/run-ok/train/manifest.json")
    kube.set_condition("meshai", obj["metadata"]["name"], "Complete", "JobSetCompleted", "jobset completed")
    job = _wait(lambda: (j := runtime.get(job_id)).state == State.JOB_STATE_SUCCEEDED and j, 30)
    assert job.train == result and job.manifest_key == "runs/run-ok/train/manifest.json"
    steps = [e.step for e in runtime._jobs[job_id].events if e[1].step for e in [e[1]]]
    assert steps[:3] == [1, 2, 3]
    assert any(e[1].loss == pytest.approx(2.0) for e in runtime._jobs[job_id].events)
    assert kube.deletes() == []  # a finished TrainJob stays for `kubectl describe`
    watches = [q for m, p, q, b in kube.requests if m == "GET" and p.endswith("/trainjobs")
               and q.get("watch")]
    assert watches, "the controller follows the TrainJob with the watch API"
    [(method, path, query, body)] = [r for r in kube.requests if r[0] == "POST"]
    assert query.get("fieldValidation") == "Strict"  # unknown fields refused, not dropped


def test_failed_trainjob_fails_the_job_naming_the_trainjob_and_its_condition(kube, controller, runtime, store):
    from meshai_trainer.kubeflow.status import StatusWriter

    req = _request("run-bad")
    job_id = _submit(runtime, controller, req)
    obj = _trainjob(kube, req)
    StatusWriter(store, req.run_id, attempt="pod-1").finish("failed", error="CUDA out of memory")
    kube.set_condition("meshai", obj["metadata"]["name"], "Failed", "BackoffLimitExceeded",
                       "jobset failed: job node-0 has failed 1 times")
    job = _wait(lambda: (j := runtime.get(job_id)).state == State.JOB_STATE_FAILED and j, 30)
    name = obj["metadata"]["name"]
    assert f"TrainJob meshai/{name} failed: BackoffLimitExceeded: jobset failed" in job.error
    assert "rank 0: CUDA out of memory" in job.error


def test_cancel_deletes_the_trainjob_in_the_foreground_and_waits_until_it_is_gone(kube, controller, runtime):
    req = _request("run-cancel")
    job_id = _submit(runtime, controller, req)
    obj = _trainjob(kube, req)
    runtime.cancel(job_id)
    job = _wait(lambda: (j := runtime.get(job_id)).state == State.JOB_STATE_CANCELLED and j, 30)
    [(path, query, body)] = kube.deletes()
    assert path.endswith("/trainjobs/" + obj["metadata"]["name"])
    assert "Foreground" in (query.get("propagationPolicy"), (body or {}).get("propagationPolicy"))
    # Gone (its pods and their GPUs with it) before the job says "cancelled".
    assert ("meshai", obj["metadata"]["name"]) not in kube.objects
    messages = [e[1].message for e in runtime._jobs[job_id].events]
    assert any(m.startswith("deleting TrainJob") for m in messages)
    assert job.state == State.JOB_STATE_CANCELLED


def test_a_restarted_controller_follows_the_running_trainjob_and_restarts_a_failed_one(kube, controller, runtime):
    from meshai_trainer.kubeflow.trainjob import render_trainjob

    running, failed = _request("run-left"), _request("run-failed")
    for req in (running, failed):
        code, _ = kube.handle("POST", "meshai", None, render_trainjob(req, _settings()), {})
        assert code == 201
    failed_name = render_trainjob(failed, _settings())["metadata"]["name"]
    kube.set_condition("meshai", failed_name, "Failed", "DeadlineExceeded", "too slow")
    before = len(kube.posts())
    _submit(runtime, controller, running)
    failed_id = _submit(runtime, controller, failed)
    _wait(lambda: len(kube.posts()) > before)
    # The running one is followed (no second create); the failed one is deleted and created again.
    created = [b["metadata"]["name"] for b in kube.posts()[before:]]
    assert created == [failed_name]
    assert [p.rsplit("/", 1)[1] for p, q, b in kube.deletes()] == [failed_name]
    obj = _trainjob(kube, failed)
    assert "status" not in obj  # the new TrainJob, not the old Failed one
    runtime.cancel(failed_id)


def test_a_trainjob_still_being_deleted_is_waited_for_then_created_again(kube, controller, runtime):
    from meshai_trainer.kubeflow.trainjob import render_trainjob

    req = _request("run-deleting")
    old = render_trainjob(req, _settings())
    kube.handle("POST", "meshai", None, old, {})
    kube.delete_delay_s = 1.5
    kube.handle("DELETE", "meshai", old["metadata"]["name"], {"propagationPolicy": "Foreground"}, {})
    job_id = _submit(runtime, controller, req)
    _wait(lambda: len(kube.posts()) == 1 and [e for e in kube.events if e[1] == "ADDED"][1:])
    obj = _trainjob(kube, req)
    assert "deletionTimestamp" not in obj["metadata"]  # the new one, created after the old one went
    runtime.cancel(job_id)


class Ctx(LocalContext):
    """The controller's view of a job (RunContext) without the job runtime: store, run id, progress, cancel."""

    def __init__(self, workdir: Path, store: Any, run_id: str) -> None:
        super().__init__(workdir)
        self.store, self.run_id = store, run_id


def test_an_expired_watch_starts_again_from_the_object(kube, controller, store, tmp_path):
    ctx = Ctx(tmp_path, store, "run-expired")
    obj = controller.start(_request("run-expired"), ctx)
    kube.compacted_before = int(obj["metadata"]["resourceVersion"]) + 1  # its resourceVersion is too old now
    kube.set_condition("meshai", obj["metadata"]["name"], "Failed", "Stopped", "gone")
    with pytest.raises(MeshAIError, match="Stopped: gone"):
        controller.follow(obj, ctx)
    assert any(q.get("resourceVersion") == obj["metadata"]["resourceVersion"] for m, p, q, b in kube.requests
               if q.get("watch")), "the first watch started from the created object's resourceVersion"


def test_missing_crd_and_refused_objects_are_clear_errors(kube, controller, store, tmp_path, monkeypatch):
    ctx = Ctx(tmp_path, store, "run-x")
    controller.settings = _settings(runtime="")  # the CRD requires a runtime name: the API server says 422
    with pytest.raises(InvalidInput, match="the API server refused it: TrainJob.trainer.kubeflow.org is invalid"):
        controller.start(_request("run-x"), ctx)
    controller.settings = _settings()
    monkeypatch.setitem(globals(), "PATH", re.compile(r"^/nothing$"))  # as if Kubeflow Trainer were not installed
    with pytest.raises(Unavailable, match="Kubeflow Trainer's CRDs installed"):
        controller.start(_request("run-y"), ctx)


def test_the_trainer_service_with_the_kubeflow_backend_over_grpc(kube, store, s3_env, start_service):
    """`python -m meshai_trainer` with MESHAI_TRAIN_BACKEND=kubeflow: a GPU recipe is accepted by the CPU-only
    controller, becomes a TrainJob, rank 0's progress reaches Watch, and Cancel deletes the TrainJob."""
    import grpc

    from meshai.v1 import trainer_pb2, trainer_pb2_grpc
    from meshai_trainer.kubeflow.status import StatusWriter

    svc = start_service("trainer", s3_env | {"MESHAI_TRAIN_BACKEND": "kubeflow",
                                             "MESHAI_KUBEFLOW_NAMESPACE": "meshai", "MESHAI_KUBEFLOW_POLL_S": "1"})
    svc.wait_health(timeout=90)
    stub = trainer_pb2_grpc.TrainerServiceStub(grpc.insecure_channel(svc.addr))
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    split = store.put_bytes((json.dumps(row) + "\n").encode(), "runs/grpc-1/data/train.jsonl")
    ref = jobs_pb2.ObjectRef(key=split.key, sha256=split.sha256, size=split.size)
    req = trainer_pb2.TrainRequest(run_id="grpc-1", config_name="gpu-smollm2", train=ref, val=ref)
    stub.Submit(req, timeout=30)
    obj = _trainjob(kube, req)
    assert obj["spec"]["trainer"]["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "1"
    StatusWriter(store, "grpc-1", attempt="pod-1", every_s=0.0).report(Progress(step=5, total=10, loss=1.5))
    seen = None
    for event in stub.Watch(jobs_pb2.WatchRequest(job_id="grpc-1/train"), timeout=60):
        if event.step == 5:
            seen = event
            break
    assert seen is not None and seen.loss == pytest.approx(1.5) and seen.state == State.JOB_STATE_RUNNING
    stub.Cancel(jobs_pb2.CancelJobRequest(job_id="grpc-1/train"), timeout=30)
    job = _wait(lambda: (j := stub.Get(jobs_pb2.GetJobRequest(job_id="grpc-1/train"), timeout=10)).state
                == State.JOB_STATE_CANCELLED and j, 60)
    assert job.state == State.JOB_STATE_CANCELLED
    assert [p.rsplit("/", 1)[1] for p, q, b in kube.deletes()] == [obj["metadata"]["name"]]
    assert ("meshai", obj["metadata"]["name"]) not in kube.objects
