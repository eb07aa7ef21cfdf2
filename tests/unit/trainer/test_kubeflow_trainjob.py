"""The TrainJob the controller renders, checked against Kubeflow Trainer's own TrainJob CRD schema (vendored
from kubeflow/trainer v2.3.0 in deploy/k8s/crds/), strictly: an unknown field is an error, as with
`kubectl apply`'s strict field validation. The CRD's CEL rules on the name are checked too."""

from __future__ import annotations

import argparse
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from meshai.v1 import jobs_pb2, trainer_pb2
from meshai_common.errors import ConfigError
from meshai_testing import strict_schema

ROOT = Path(__file__).resolve().parents[3]
CRDS = ROOT / "deploy/k8s/crds"
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # the TrainJob CRD's CEL rule on metadata.name



@cache
def crd_validator(plural: str) -> Any:
    from jsonschema import Draft7Validator

    path = CRDS / f"trainer.kubeflow.org_{plural}.v1alpha1.schema.json"
    return Draft7Validator(strict_schema(json.loads(path.read_text())))


def crd_problems(obj: dict[str, Any], plural: str) -> list[str]:
    """Every way `obj` breaks the vendored CRD schema (field path and message), plus the CEL name rules."""
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    problems = [f"{where}: {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                for e in crd_validator(plural).iter_errors(obj)]
    name = obj.get("metadata", {}).get("name", "")
    if plural == "trainjobs" and (not DNS_LABEL.match(name) or len(name) > 63):
        problems.append(f"{where}: metadata.name must be an RFC 1035 label of at most 63 characters")
    return problems


def _request(run_id: str = "20261129-101500-ab12cd") -> trainer_pb2.TrainRequest:
    return trainer_pb2.TrainRequest(
        run_id=run_id, config_name="gpu-smollm2", overrides={"max_steps": "40"},
        train=jobs_pb2.ObjectRef(key=f"runs/{run_id}/data/train.jsonl", sha256="a" * 64, size=10),
        val=jobs_pb2.ObjectRef(key=f"runs/{run_id}/data/val.jsonl", sha256="b" * 64, size=5))


def _settings(**kw):
    from meshai_trainer.kubeflow.trainjob import KubeflowSettings

    return KubeflowSettings(namespace="meshai", env={"MESHAI_S3_ENDPOINT": "minio:9000",
                                                     "MESHAI_S3_BUCKET": "meshai"}, **kw)


def test_rendered_trainjob_matches_the_trainjob_crd_schema():
    from meshai_trainer.kubeflow.trainjob import render_trainjob

    for settings in (_settings(), _settings(nodes=2, gpus_per_node=4, image="registry.example/meshai-trainer:1"),
                     _settings(gpus_per_node=0, runtime="cpu-runtime", runtime_kind="TrainingRuntime")):
        job = render_trainjob(_request(), settings)
        assert crd_problems(job, "trainjobs") == []


def test_the_schema_check_rejects_what_the_api_server_rejects():
    from meshai_trainer.kubeflow.trainjob import render_trainjob

    job = render_trainjob(_request(), _settings())
    job["spec"]["trainer"]["numNodes"] = "2"            # wrong type
    job["spec"]["trainer"]["numProcsPerNode"] = 1       # misspelled field
    del job["spec"]["runtimeRef"]                       # required
    job["metadata"]["name"] = "Train_1"                 # not an RFC 1035 label
    problems = crd_problems(job, "trainjobs")
    assert len(problems) == 4, problems
    assert any("numProcsPerNode" in p for p in problems) and any("runtimeRef" in p for p in problems)


def test_trainjob_runs_torchrun_on_the_rank_entrypoint_with_the_whole_request():
    from meshai_trainer.cli import register
    from meshai_trainer.kubeflow.podjob import parse_request
    from meshai_trainer.kubeflow.trainjob import render_trainjob

    req = _request()
    trainer = render_trainjob(req, _settings(nodes=2, gpus_per_node=4))["spec"]["trainer"]
    assert trainer["command"] == ["torchrun"]
    assert trainer["args"][:2] == ["-m", "meshai_trainer.cli"]
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 4
    # What torchrun hands the module parses with the real CLI back into the same request.
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(trainer["args"][2:])
    assert args.func.__name__ == "cmd_job"
    assert parse_request(args.request) == req


def test_trainjob_resources_env_and_labels():
    from meshai_trainer.kubeflow.trainjob import render_trainjob

    job = render_trainjob(_request(), _settings(gpus_per_node=2, cpu="3", memory="12Gi", s3_secret="s3-keys"))
    trainer = job["spec"]["trainer"]
    assert trainer["resourcesPerNode"] == {"requests": {"cpu": "3", "memory": "12Gi"},
                                           "limits": {"memory": "12Gi", "nvidia.com/gpu": "2"}}
    env = {e["name"]: e for e in trainer["env"]}
    # torchrun's PET_* variables are the torch plugin's: Kubeflow refuses a TrainJob that sets them.
    assert not [n for n in env if n.startswith("PET_")]
    for key in ("MESHAI_S3_ACCESS_KEY", "MESHAI_S3_SECRET_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "s3-keys", "key": key}
        assert "value" not in env[key]
    assert env["MESHAI_S3_ENDPOINT"]["value"] == "minio:9000"
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert job["metadata"]["labels"]["meshai.io/run-id"] == "20261129-101500-ab12cd"
    assert job["spec"]["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime",
                                         "name": "torch-distributed"}
    assert "image" not in trainer  # the runtime's image unless MESHAI_KUBEFLOW_IMAGE names one
    cpu_only = render_trainjob(_request(), _settings(gpus_per_node=0))["spec"]["trainer"]
    assert "nvidia.com/gpu" not in cpu_only["resourcesPerNode"]["limits"] and cpu_only["numProcPerNode"] == 1


@pytest.mark.parametrize("run_id", ["20261129-101500-ab12cd", "Run.With_Caps", "x" * 64, "a-", "9lives", "Z"])
def test_trainjob_names_are_dns_labels_short_enough_for_torchrun_hostnames(run_id):
    from meshai_trainer.kubeflow.trainjob import render_trainjob, trainjob_name

    name = trainjob_name(run_id)
    assert DNS_LABEL.match(name) and len(name) <= 40
    assert len(f"{name}-node-0-0") <= 63  # PET_MASTER_ADDR's host, a pod hostname
    assert trainjob_name(run_id) == name  # stable: a restarted controller finds the same TrainJob
    job = render_trainjob(_request(run_id), _settings())
    assert crd_problems(job, "trainjobs") == []
    assert job["metadata"]["annotations"]["meshai.io/run-id"] == run_id


def test_distinct_run_ids_get_distinct_trainjobs():
    from meshai_trainer.kubeflow.trainjob import trainjob_name

    ids = ["Run.1", "run-1", "run_1", "RUN-1", "x" * 63 + "a", "x" * 63 + "b"]
    assert len({trainjob_name(i) for i in ids}) == len(ids)


def test_settings_come_from_the_environment_and_bad_values_name_the_variable(monkeypatch):
    from meshai_trainer.kubeflow.trainjob import KubeflowSettings

    monkeypatch.setenv("MESHAI_KUBEFLOW_NAMESPACE", "ml")
    monkeypatch.setenv("MESHAI_KUBEFLOW_NODES", "2")
    monkeypatch.setenv("MESHAI_KUBEFLOW_GPUS_PER_NODE", "8")
    monkeypatch.setenv("MESHAI_KUBEFLOW_MEMORY", "64Gi")
    monkeypatch.setenv("MESHAI_S3_ENDPOINT", "s3.example:443")
    s = KubeflowSettings.from_env()
    assert (s.namespace, s.nodes, s.gpus_per_node, s.memory, s.cpu) == ("ml", 2, 8, "64Gi", "3")
    assert s.env["MESHAI_S3_ENDPOINT"] == "s3.example:443"
    for name, value in (("MESHAI_KUBEFLOW_NODES", "0"), ("MESHAI_KUBEFLOW_MEMORY", "lots"),
                        ("MESHAI_KUBEFLOW_RUNTIME_KIND", "Runtime")):
        monkeypatch.setenv(name, value)
        with pytest.raises(ConfigError, match=name):
            KubeflowSettings.from_env()
        monkeypatch.delenv(name)


def test_backend_variable(monkeypatch):
    from meshai_trainer.service import train_backend

    monkeypatch.delenv("MESHAI_TRAIN_BACKEND", raising=False)
    assert train_backend() == "local"
    monkeypatch.setenv("MESHAI_TRAIN_BACKEND", "Kubeflow")
    assert train_backend() == "kubeflow"
    monkeypatch.setenv("MESHAI_TRAIN_BACKEND", "slurm")
    with pytest.raises(ConfigError, match="MESHAI_TRAIN_BACKEND"):
        train_backend()
