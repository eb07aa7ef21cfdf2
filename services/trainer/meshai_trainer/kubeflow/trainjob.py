"""The TrainJob (trainer.kubeflow.org/v1alpha1) for one TrainRequest, and what its status conditions mean.

Only `spec.runtimeRef` and `spec.trainer` are used: the fields every Kubeflow Trainer v2 release has kept
(pod-level settings moved from podSpecOverrides to podTemplateOverrides to runtimePatches between releases),
so pod hardening, volumes, tolerations and the runtime class live in the training runtime the TrainJob names
(deploy/k8s/components/kubeflow-trainer ships one).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from meshai.v1 import trainer_pb2
from meshai_common.errors import ConfigError

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
PLURAL = "trainjobs"
KIND = "TrainJob"
# The pod hostname `<name>-node-0-0` (torchrun's PET_MASTER_ADDR) must stay a DNS label (63 characters).
NAME_MAX = 40
RUN_ID_LABEL = "meshai.io/run-id"
RUN_ID_ANNOTATION = "meshai.io/run-id"
SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# What the ranks read from the controller's own environment and pass on as plain values.
COPIED_ENV = ("MESHAI_S3_ENDPOINT", "MESHAI_S3_BUCKET", "MESHAI_S3_SECURE", "MESHAI_S3_REGION",
              "MESHAI_LOG_LEVEL", "MESHAI_CODE_VERSION", "MESHAI_MLFLOW_TRACKING_URI",
              "MESHAI_MLFLOW_EXPERIMENT", "HF_HUB_OFFLINE", "HF_ENDPOINT")
LABEL_VALUE_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
QUANTITY_RE = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")


def _int_env(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name, "").strip() or str(default)
    if not raw.isdigit() or int(raw) < minimum:
        raise ConfigError(f"environment variable {name}={raw!r} must be a whole number >= {minimum}")
    return int(raw)


def _quantity_env(name: str, default: str) -> str:
    raw = os.environ.get(name, "").strip() or default
    if not QUANTITY_RE.match(raw):
        raise ConfigError(f"environment variable {name}={raw!r} is not a Kubernetes quantity "
                          "(e.g. 3, 500m, 12Gi)")
    return raw


@dataclass(frozen=True)
class KubeflowSettings:
    """Where and how TrainJobs run; each field from a MESHAI_KUBEFLOW_* variable (docs/environment.md)."""

    namespace: str
    runtime: str = "torch-distributed"
    runtime_kind: str = "ClusterTrainingRuntime"
    image: str | None = None  # unset: the runtime's image
    nodes: int = 1
    gpus_per_node: int = 1
    cpu: str = "3"
    memory: str = "12Gi"
    s3_secret: str = "meshai-s3-trainer"
    poll_s: float = 5.0
    env: dict[str, str] = field(default_factory=dict)  # copied from the controller (COPIED_ENV)

    @classmethod
    def from_env(cls) -> KubeflowSettings:
        namespace = os.environ.get("MESHAI_KUBEFLOW_NAMESPACE", "").strip()
        if not namespace and SA_NAMESPACE_FILE.is_file():
            namespace = SA_NAMESPACE_FILE.read_text().strip()
        kind = os.environ.get("MESHAI_KUBEFLOW_RUNTIME_KIND", "").strip() or "ClusterTrainingRuntime"
        if kind not in ("ClusterTrainingRuntime", "TrainingRuntime"):
            raise ConfigError(f"environment variable MESHAI_KUBEFLOW_RUNTIME_KIND={kind!r} must be "
                              "ClusterTrainingRuntime or TrainingRuntime")
        return cls(
            namespace=namespace or "default",
            runtime=os.environ.get("MESHAI_KUBEFLOW_RUNTIME", "").strip() or "torch-distributed",
            runtime_kind=kind,
            image=os.environ.get("MESHAI_KUBEFLOW_IMAGE", "").strip() or None,
            nodes=_int_env("MESHAI_KUBEFLOW_NODES", 1, 1),
            gpus_per_node=_int_env("MESHAI_KUBEFLOW_GPUS_PER_NODE", 1, 0),
            cpu=_quantity_env("MESHAI_KUBEFLOW_CPU", "3"),
            memory=_quantity_env("MESHAI_KUBEFLOW_MEMORY", "12Gi"),
            s3_secret=os.environ.get("MESHAI_KUBEFLOW_S3_SECRET", "").strip() or "meshai-s3-trainer",
            poll_s=float(_int_env("MESHAI_KUBEFLOW_POLL_S", 5, 1)),
            env={k: os.environ[k] for k in COPIED_ENV if os.environ.get(k)},
        )


def trainjob_name(run_id: str) -> str:
    """A stable RFC 1035 label for the run (one TrainJob per run): lowercased, with a hash of the exact id
    so that runs differing only in case or punctuation do not share a TrainJob."""
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
    slug = re.sub(r"[^a-z0-9]+", "-", run_id.lower()).strip("-")
    slug = slug[: NAME_MAX - len("train--") - len(digest)].rstrip("-")
    return f"train-{slug}-{digest}" if slug else f"train-{digest}"


def rank_args(req: trainer_pb2.TrainRequest) -> list[str]:
    """torchrun's arguments: the rank entrypoint with the whole request (inputs are bucket keys)."""
    request = json_format.MessageToJson(req, indent=None, preserving_proto_field_name=True)
    return ["-m", "meshai_trainer.cli", "train", "job", "--request", request]


def render_trainjob(req: trainer_pb2.TrainRequest, settings: KubeflowSettings) -> dict[str, Any]:
    """The TrainJob that trains `req` on `settings.nodes` nodes with `settings.gpus_per_node` GPUs each."""
    name = trainjob_name(req.run_id)
    run_label = req.run_id if LABEL_VALUE_RE.match(req.run_id) else name
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(settings.env.items())]
    env += [
        {"name": "MESHAI_WORKDIR", "value": "/work"},
        {"name": "HF_HOME", "value": "/work/huggingface"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        # The bucket keys: the controller's own Secret, by reference (never copied into the TrainJob).
        *({"name": key, "valueFrom": {"secretKeyRef": {"name": settings.s3_secret, "key": key}}}
          for key in ("MESHAI_S3_ACCESS_KEY", "MESHAI_S3_SECRET_KEY")),
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "meshai-hf-token", "key": "token",
                                                            "optional": True}}},
    ]
    limits: dict[str, str] = {"memory": settings.memory}
    if settings.gpus_per_node:
        limits["nvidia.com/gpu"] = str(settings.gpus_per_node)  # extended resource: the request equals it
    trainer: dict[str, Any] = {
        "numNodes": settings.nodes,
        # torchrun gets PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK, PET_MASTER_ADDR/_PORT from Kubeflow.
        "numProcPerNode": max(1, settings.gpus_per_node),
        "resourcesPerNode": {"requests": {"cpu": settings.cpu, "memory": settings.memory}, "limits": limits},
        "command": ["torchrun"],
        "args": rank_args(req),
        "env": env,
    }
    if settings.image:
        trainer["image"] = settings.image
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": {"app.kubernetes.io/part-of": "meshai",
                       "app.kubernetes.io/managed-by": "meshai-trainer", RUN_ID_LABEL: run_label},
            "annotations": {RUN_ID_ANNOTATION: req.run_id},
        },
        "spec": {
            "runtimeRef": {"apiGroup": GROUP, "kind": settings.runtime_kind, "name": settings.runtime},
            "trainer": trainer,
        },
    }


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The status condition `kind` (Complete, Failed, Suspended) when it is True."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return cond
    return None


def describe(obj: dict[str, Any]) -> str:
    return f"TrainJob {obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"
