"""Training on GPUs, in both GPU leaves: overlays/gpu (the default: a CPU-only controller whose Kubeflow
TrainJobs hold the GPUs only while they run) and overlays/gpu-deployment (the fallback: the trainer Deployment
holds one). The same behaviour is checked wherever the GPU pod is, each TrainJob node's pod being the training
runtime with the controller's per-node settings: it fits a GPU node, schedules on any GPU node, runs the CUDA
build and the pipeline's GPU recipe, and takes the optional RuntimeClass alone."""

from __future__ import annotations

import json

import pytest
import yaml
from deploy_checks import (
    GRPC_PORTS,
    K8S_VERSIONS,
    asks_for_gpu,
    containers,
    find,
    kubectl,
    name_of,
    pod_spec,
    quantity,
    render,
    schema_problems,
)
from test_k8s_manifests import (
    GPU_LEAVES,
    GPU_NODE,
    copy_of_k8s,
    gpu_pods,
    gpu_recipe,
    pods,
    rendered,
    resources,
    workloads,
)

pytestmark = pytest.mark.skipif(kubectl() is None, reason="kubectl is not installed (pip install '.[dev]')")


@pytest.mark.parametrize("leaf", GPU_LEAVES)
def test_gpu_trainer_fits_a_4_vcpu_16_gib_gpu_node(leaf):
    """The pod that holds the GPU: each TrainJob node's pod (the runtime with the controller's per-node
    resources), or the fallback's trainer Deployment."""
    [gpu] = gpu_pods(rendered(leaf))
    [c] = [c for c in containers(gpu) if "nvidia.com/gpu" in c["resources"].get("limits", {})]
    req, lim = resources(c, "requests"), resources(c, "limits")
    assert req["cpu"] <= GPU_NODE["cpu"] and req["memory"] <= GPU_NODE["memory"], req
    assert lim["memory"] <= GPU_NODE["memory"], "the limit would let the trainer push the node into OOM"
    assert int(c["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    # /dev/shm is memory backed and counts against that limit.
    shm = [v for v in pod_spec(gpu)["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory"]
    assert shm and sum(quantity(v["emptyDir"]["sizeLimit"]) for v in shm) < lim["memory"]


@pytest.mark.parametrize("leaf", GPU_LEAVES)
def test_gpu_overlay_schedules_on_any_gpu_node_and_runs_the_gpu_recipe(leaf):
    objs = rendered(leaf)
    [gpu] = gpu_pods(objs)
    pod = pod_spec(gpu)
    # The GPU request is what selects a GPU node; a label only GPU feature discovery sets is not required.
    assert "nodeSelector" not in pod and "affinity" not in pod and "runtimeClassName" not in pod
    assert any(t["key"] == "nvidia.com/gpu" and t["operator"] == "Exists" for t in pod["tolerations"])
    assert [c["image"] for c in pod["containers"]] == ["meshai-trainer:0.1.0-cuda"]
    trainer = find(objs, "Deployment", "trainer")
    assert pod_spec(trainer)["containers"][0]["readinessProbe"]["grpc"]["port"] == GRPC_PORTS["trainer"]
    # Nothing else holds a GPU: with TrainJobs, not even the trainer Deployment (the controller).
    assert [name_of(o) for o in workloads(objs) if asks_for_gpu(o)] == ([] if gpu is not trainer else [name_of(trainer)])
    assert all("nvidia.com/gpu" not in str(pod_spec(o)) for o in workloads(objs) if o is not gpu)
    recipe = gpu_recipe()
    assert recipe.startswith("gpu-")
    from meshai_trainer.config import load_config

    assert load_config(recipe).bf16 is True  # a recipe that exists and is the CUDA one
    if gpu is not trainer:  # each rank gets the whole request, the pipeline's recipe with it
        args = pod["containers"][0]["args"]
        assert json.loads(args[args.index("--request") + 1])["config_name"] == recipe
    cpu_job = pod_spec(find(rendered("pipeline"), "Job", "meshai-pipeline"))["containers"][0]
    assert "--config" not in cpu_job["args"]


@pytest.mark.parametrize("leaf", GPU_LEAVES)
def test_runtime_class_component_is_optional_and_works(leaf, tmp_path):
    copy = copy_of_k8s(tmp_path)
    kust = copy / leaf / "kustomization.yaml"
    spec = yaml.safe_load(kust.read_text())
    spec["components"].insert(spec["components"].index("../../components/images"), "../../components/gpu-runtime-class")
    kust.write_text(yaml.safe_dump(spec))
    objs = render(copy / leaf)
    [gpu] = gpu_pods(objs)
    assert pod_spec(gpu)["runtimeClassName"] == "nvidia"
    # Only the pods that hold the GPU: the TrainJobs' controller stays on any node.
    assert [name_of(o) for o in pods(objs) if "runtimeClassName" in pod_spec(o)] == [name_of(gpu)]
    assert [p for o in objs for p in schema_problems(o, K8S_VERSIONS[0])] == []
