"""The GPU overlay's Kubeflow Trainer side, rendered with kubectl: the controller (no GPU, its RBAC exactly
what it calls), the training runtime its TrainJobs run on (Kubeflow's torch shape, the pod hardening every
Mesh-AI pod has), and the TrainJob the controller renders from the overlay's own settings (valid against the
vendored TrainJob CRD schema, wired to the bucket with the controller's own key). Schema of every object, sizes,
GPU scheduling and images: test_k8s_manifests.py, for every leaf."""

from __future__ import annotations

import pytest
from deploy_checks import (
    K8S_VERSIONS,
    controller_trainjob,
    created_secrets,
    env_problems,
    find,
    kubectl,
    name_of,
    pod_problems,
    pod_spec,
    quantity,
    runtime_pods,
    schema_problems,
    secret_references,
)
from test_k8s_manifests import gpu_recipe, rendered

pytestmark = pytest.mark.skipif(kubectl() is None, reason="kubectl is not installed (pip install '.[dev]')")


@pytest.fixture(scope="module")
def objs() -> tuple[dict, ...]:
    return rendered("overlays/gpu")


def test_the_gpu_overlay_trains_with_trainjobs_and_the_fallback_without(objs):
    """overlays/gpu is the controller with its runtime; overlays/gpu-deployment needs no Kubeflow Trainer."""
    assert find(list(objs), "TrainingRuntime", "meshai-torch-distributed")
    fallback = rendered("overlays/gpu-deployment")
    assert not [name_of(o) for o in fallback if o["apiVersion"].startswith("trainer.kubeflow.org/")
                or o["kind"] in ("ServiceAccount", "Role", "RoleBinding")]
    env = {e["name"] for e in pod_spec(find(fallback, "Deployment", "trainer"))["containers"][0]["env"]}
    assert not [n for n in env if n.startswith("MESHAI_KUBEFLOW_") or n == "MESHAI_TRAIN_BACKEND"]


def test_rbac_grants_exactly_the_trainjob_verbs_the_controller_uses(objs):
    roles = [o for o in objs if o["kind"] in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")]
    assert sorted(name_of(o) for o in roles) == ["Role/meshai-trainer-controller",
                                                 "RoleBinding/meshai-trainer-controller"]
    role = find(list(objs), "Role", "meshai-trainer-controller")
    assert len(role["rules"]) == 1
    [rule] = role["rules"]
    assert rule["apiGroups"] == ["trainer.kubeflow.org"] and rule["resources"] == ["trainjobs"]
    assert sorted(rule["verbs"]) == ["create", "delete", "get", "list", "watch"]
    assert "resourceNames" not in rule  # TrainJob names are made per run
    binding = find(list(objs), "RoleBinding", "meshai-trainer-controller")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "meshai-trainer-controller"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "meshai-trainer-controller",
                                    "namespace": "meshai"}]
    account = find(list(objs), "ServiceAccount", "meshai-trainer-controller")
    assert account["automountServiceAccountToken"] is False
    # Only the trainer runs under it; every other pod keeps no identity.
    users = {o["metadata"]["name"] for o in objs if o["kind"] in ("Deployment", "StatefulSet", "Job")
             and pod_spec(o).get("serviceAccountName") == "meshai-trainer-controller"}
    assert users == {"trainer"}


def test_the_controller_is_cpu_only_hardened_and_reaches_the_api_with_a_projected_token(objs):
    trainer = find(list(objs), "Deployment", "trainer")
    pod = pod_spec(trainer)
    assert "nvidia.com/gpu" not in str(pod)  # GPUs are the TrainJobs', held only while one runs
    assert pod_problems(trainer) == []  # automountServiceAccountToken stays false, root filesystem read-only
    [c] = pod["containers"]
    assert c["image"].startswith("meshai-trainer:")  # the CPU build; the ranks get the CUDA one
    assert quantity(c["resources"]["requests"]["cpu"]) <= 0.5
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    token = next(v for v in pod["volumes"] if v["name"] == mounts["/var/run/secrets/kubernetes.io/serviceaccount"])
    sources = token["projected"]["sources"]
    assert any("serviceAccountToken" in s and s["serviceAccountToken"]["path"] == "token" for s in sources)
    assert any(s.get("configMap", {}).get("name") == "kube-root-ca.crt" for s in sources)
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["MESHAI_TRAIN_BACKEND"] == "kubeflow"
    assert env_problems(list(env), "Deployment/trainer") == []  # documented, and read by the code
    # The TrainJob's S3 key is the controller's own Secret, one that create-secrets.sh makes.
    own = {name for name, _, _ in secret_references(trainer) if name.startswith("meshai-s3-")}
    assert own == {env["MESHAI_KUBEFLOW_S3_SECRET"]} and own <= set(created_secrets())


def test_the_training_runtime_is_kubeflow_torch_shaped_and_hardened(objs):
    runtime = find(list(objs), "TrainingRuntime", "meshai-torch-distributed")
    assert runtime["metadata"]["labels"]["trainer.kubeflow.org/framework"] == "torch"
    assert runtime["spec"]["mlPolicy"] == {"numNodes": 1, "torch": {}}
    [job] = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    # What the torch plugin looks for: the `node` replicated job of the trainer step, container `node`.
    assert job["name"] == "node"
    assert job["template"]["metadata"]["labels"]["trainer.kubeflow.org/trainjob-ancestor-step"] == "trainer"
    [as_job] = runtime_pods(runtime)
    assert pod_problems(as_job) == []  # the namespace enforces the restricted Pod Security Standard
    pod = pod_spec(as_job)
    [c] = pod["containers"]
    assert c["name"] == "node" and c["image"] == "meshai-trainer:0.1.0-cuda"  # from components/images
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/tmp", "/work", "/dev/shm"}
    # A preempted pod: the JobSet starts the ranks again and they resume from the bucket's checkpoints.
    assert runtime["spec"]["template"]["spec"]["failurePolicy"]["maxRestarts"] >= 1
    from meshai_trainer.launch import STOP_GRACE_S

    assert pod["terminationGracePeriodSeconds"] >= STOP_GRACE_S


def test_the_trainjob_from_the_overlays_settings_is_valid_and_reaches_the_bucket(objs):
    config = find(list(objs), "ConfigMap", "meshai-config")["data"]
    job = controller_trainjob(list(objs), gpu_recipe())
    assert [p for v in K8S_VERSIONS for p in schema_problems(job, v)] == []
    assert job["metadata"]["namespace"] == "meshai"
    ref = job["spec"]["runtimeRef"]
    assert find(list(objs), ref["kind"], ref["name"])  # the runtime it names is deployed with it
    per_node = job["spec"]["trainer"]["resourcesPerNode"]
    assert int(per_node["limits"]["nvidia.com/gpu"]) >= 1  # its size against a GPU node: test_k8s_manifests.py
    env = {e["name"]: e for e in job["spec"]["trainer"]["env"]}
    assert env["MESHAI_S3_ENDPOINT"]["value"] == config["MESHAI_S3_ENDPOINT"]
    assert env["MESHAI_S3_BUCKET"]["value"] == config["MESHAI_S3_BUCKET"]
    assert env["MESHAI_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] in created_secrets()
    assert env_problems([n for n in env if n.startswith("MESHAI_")], "TrainJob") == []
