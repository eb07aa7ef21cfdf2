"""The trainer service as a controller: a training job becomes a TrainJob, watched until it ends.

submit: the TrainJob for the run is created (or, when one with the run's name exists, followed: a restarted
controller picks up the training it left running; a Failed one is deleted and created again, and its ranks
resume from the bucket's checkpoints). watch: the API server's watch on that one TrainJob, in windows of
`poll_s` seconds, between which rank 0's status object is read from the bucket and its events relayed to the
job's Watch stream and the job's cancellation is checked. Complete: rank 0's result (the same TrainResult as
the in-process path). Failed: an error naming the TrainJob and its condition's message. cancel: DELETE
with propagationPolicy Foreground, then wait until the TrainJob is gone, which is when its pods (and their
GPUs) are.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from google.protobuf import json_format

from meshai.v1 import jobs_pb2, trainer_pb2
from meshai_common.errors import Cancelled, ConfigError, InvalidInput, MeshAIError, Unavailable
from meshai_common.jobs import RunContext
from meshai_common.progress import Progress
from meshai_trainer.kubeflow.status import new_events, read_status, status_key
from meshai_trainer.kubeflow.trainjob import (
    GROUP,
    PLURAL,
    VERSION,
    KubeflowSettings,
    condition,
    describe,
    render_trainjob,
)

log = logging.getLogger(__name__)

# Pods get their grace period (the runtime's, 360 s) to write a checkpoint; the TrainJob goes after them.
DELETE_WAIT_S = 420.0
# Consecutive failed calls to the API server before the job fails (a control-plane upgrade takes a minute).
API_RETRIES = 12


def load_api() -> Any:
    """CustomObjectsApi for this pod's service account (in a cluster) or the kubeconfig (KUBECONFIG)."""
    from kubernetes import client, config

    settings = client.Configuration()  # this controller's own, not the library's process-wide default
    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=settings)  # re-reads the token as it rotates
        else:
            # KUBECONFIG read now (the library reads it once, at import), else ~/.kube/config.
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None,
                                    client_configuration=settings)
    except (config.ConfigException, OSError) as exc:
        raise ConfigError(f"MESHAI_TRAIN_BACKEND=kubeflow needs the Kubernetes API: {exc}") from None
    return client.CustomObjectsApi(client.ApiClient(settings))


def _api_error(exc: Exception, what: str) -> MeshAIError:
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        message = exc.reason or ""
        try:
            import json

            message = json.loads(exc.body or "{}").get("message") or message
        except ValueError:
            pass
        if exc.status == 404:
            return Unavailable(f"{what}: not found ({message}); are Kubeflow Trainer's CRDs installed "
                               "(deploy/README.md)?")
        if exc.status == 403:
            return Unavailable(f"{what}: forbidden by RBAC: {message}")
        if exc.status in (400, 422):
            return InvalidInput(f"{what}: the API server refused it: {message}")
        return Unavailable(f"{what}: API server answered {exc.status}: {message}")
    return Unavailable(f"{what}: cannot reach the Kubernetes API server: {exc}")


class TrainJobController:
    def __init__(self, settings: KubeflowSettings, api: Any | None = None) -> None:
        self.settings = settings
        self.api = api if api is not None else load_api()
        self.detached = False  # the service is stopping: leave TrainJobs running for the next controller

    # -- the job ------------------------------------------------------------------------------------------

    def run(self, req: trainer_pb2.TrainRequest, ctx: RunContext) -> tuple[jobs_pb2.TrainResult, str]:
        """The work function of a training job (see service.py): returns the TrainResult and manifest key."""
        obj = self.start(req, ctx)
        try:
            return self.follow(obj, ctx)
        except Cancelled:
            if not self.detached:
                self.delete(obj["metadata"]["name"], ctx)
            raise

    def start(self, req: trainer_pb2.TrainRequest, ctx: RunContext) -> dict[str, Any]:
        body = render_trainjob(req, self.settings)
        name = body["metadata"]["name"]
        existing = self.get(name)
        if existing is not None and existing["metadata"].get("deletionTimestamp"):
            ctx.report(Progress(message=f"waiting for {describe(existing)}, being deleted, to go"))
            self.wait_gone(name)
        elif existing is not None:
            if condition(existing, "Failed"):
                ctx.report(Progress(message=f"{describe(existing)} failed before; starting it again"))
                self.delete(name, ctx)
            elif existing["spec"].get("trainer", {}).get("args") != body["spec"]["trainer"]["args"]:
                raise InvalidInput(f"{describe(existing)} is training another request for run {req.run_id}; "
                                   "cancel it (or delete it) first")
            else:
                ctx.report(Progress(message=f"following {describe(existing)}"))
                return existing
        ctx.store.delete_prefix(status_key(req.run_id))  # a stale result must not be taken for this one's
        try:
            # Strict: a field this cluster's TrainJob version does not know is refused, not silently dropped.
            created = self.api.create_namespaced_custom_object(
                GROUP, VERSION, self.settings.namespace, PLURAL, body, field_validation="Strict")
        except Exception as exc:
            if getattr(exc, "status", None) == 409:  # created meanwhile (another replica, a retried call)
                found = self.get(name)
                if found is not None:
                    return found
            raise _api_error(exc, f"creating TrainJob {self.settings.namespace}/{name}") from None
        ctx.report(Progress(message=f"created {describe(created)} ({self.settings.nodes} x "
                                    f"{self.settings.gpus_per_node} GPU, runtime {self.settings.runtime})"))
        return created

    def follow(self, obj: dict[str, Any], ctx: RunContext) -> tuple[jobs_pb2.TrainResult, str]:
        name, rv = obj["metadata"]["name"], obj["metadata"].get("resourceVersion", "")
        latest: dict[str, Any] | None = obj
        seen, attempt, failures, suspended = 0, None, 0, False
        while True:
            ctx.check_cancelled()
            if not _finished(latest):
                try:
                    latest, rv = self._watch_window(name, rv, latest)
                    failures = 0
                except MeshAIError as exc:
                    failures += 1
                    if failures >= API_RETRIES:
                        raise
                    log.warning("watch failed; retrying", extra={"trainjob": name, "error": str(exc)})
                    time.sleep(self.settings.poll_s)
            doc = read_status(ctx.store, ctx.run_id)
            if doc and doc.get("attempt") != attempt:  # a new pod (a restart) numbers its events from 1
                attempt, seen = doc.get("attempt"), 0
            events, seen = new_events(doc, seen)
            for progress in events:
                ctx.report(progress)
            if latest is None:
                raise MeshAIError(f"TrainJob {self.settings.namespace}/{name} was deleted outside Mesh-AI; "
                                  "submit the job again to resume from its checkpoints")
            failed = condition(latest, "Failed")
            if failed:
                said = f"; rank 0: {doc['error']}" if doc and doc.get("error") else ""
                raise MeshAIError(f"{describe(latest)} failed: {failed.get('reason', '')}: "
                                  f"{failed.get('message', '')}{said}")
            if condition(latest, "Complete"):
                return _result(latest, doc)
            held = condition(latest, "Suspended")
            if bool(held) != suspended:
                suspended = bool(held)
                ctx.report(Progress(message=f"{describe(latest)} suspended: {held.get('message', '')}" if held
                                    else f"{describe(latest)} resumed"))

    def _watch_window(self, name: str, rv: str,
                      latest: dict[str, Any] | None) -> tuple[dict[str, Any] | None, str]:
        """Events on the TrainJob for up to poll_s seconds; returns the newest object (None: deleted)."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        w = watch.Watch()
        try:
            for event in w.stream(self.api.list_namespaced_custom_object, GROUP, VERSION,
                                  self.settings.namespace, PLURAL, field_selector=f"metadata.name={name}",
                                  resource_version=rv, timeout_seconds=max(1, int(self.settings.poll_s))):
                if event["type"] == "BOOKMARK":
                    continue
                obj = event["object"]
                rv = obj["metadata"].get("resourceVersion", rv)
                if event["type"] == "DELETED":
                    w.stop()
                    return None, rv
                latest = obj
                if _finished(latest):
                    w.stop()
                    break
        except ApiException as exc:
            if exc.status != 410:
                raise _api_error(exc, f"watching TrainJob {self.settings.namespace}/{name}") from None
            fresh = self.get(name)  # the watch fell too far behind: start again from the object as it is now
            return fresh, (fresh or {}).get("metadata", {}).get("resourceVersion", "")
        except MeshAIError:
            raise
        except Exception as exc:
            raise _api_error(exc, f"watching TrainJob {self.settings.namespace}/{name}") from None
        return latest, rv

    # -- API calls ----------------------------------------------------------------------------------------

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            return self.api.get_namespaced_custom_object(GROUP, VERSION, self.settings.namespace, PLURAL,
                                                         name)
        except Exception as exc:
            if getattr(exc, "status", None) == 404 and "trainjobs" in str(getattr(exc, "body", "")):
                return None
            raise _api_error(exc, f"reading TrainJob {self.settings.namespace}/{name}") from None

    def delete(self, name: str, ctx: RunContext | None = None, wait_s: float = DELETE_WAIT_S) -> None:
        """Delete the TrainJob and wait until it is gone: Foreground, so it goes after its JobSet, Jobs and
        pods, and a TrainJob created again under the same name never meets pods of the old one."""
        try:
            self.api.delete_namespaced_custom_object(GROUP, VERSION, self.settings.namespace, PLURAL, name,
                                                     propagation_policy="Foreground")
        except Exception as exc:
            if getattr(exc, "status", None) != 404:
                raise _api_error(exc, f"deleting TrainJob {self.settings.namespace}/{name}") from None
        if ctx is not None:
            ctx.report(Progress(message=f"deleting TrainJob {self.settings.namespace}/{name}; its pods save "
                                        "a checkpoint first"))
        self.wait_gone(name, wait_s)

    def wait_gone(self, name: str, wait_s: float = DELETE_WAIT_S) -> None:
        deadline = time.monotonic() + wait_s
        while self.get(name) is not None:
            if time.monotonic() > deadline:
                raise Unavailable(f"TrainJob {self.settings.namespace}/{name} still exists {wait_s:.0f} s "
                                  "after it was deleted (kubectl describe trainjob shows what holds it)")
            time.sleep(min(self.settings.poll_s, 2.0))


def _finished(obj: dict[str, Any] | None) -> bool:
    return obj is None or bool(condition(obj, "Complete") or condition(obj, "Failed"))


def _result(obj: dict[str, Any], doc: dict[str, Any] | None) -> tuple[jobs_pb2.TrainResult, str]:
    if not doc or doc.get("state") != "succeeded" or not doc.get("result"):
        state = doc.get("state") if doc else "no status object"
        raise MeshAIError(f"{describe(obj)} completed but rank 0 published no result ({state}); see the "
                          "pods' logs")
    result = json_format.ParseDict(doc["result"], jobs_pb2.TrainResult(), ignore_unknown_fields=True)
    return result, doc.get("manifest_key", "")
