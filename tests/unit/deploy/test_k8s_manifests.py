"""The Kubernetes manifests as a cluster receives them: every kustomize leaf rendered with kubectl, every
object checked against the Kubernetes schema of its kind, then what an operator relies on (images from one
place, pods that fit their nodes, probes on the ports the services serve, grace periods that cover the stop
path, Secrets that `apply` never overwrites)."""

from __future__ import annotations

import inspect
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest
import yaml
from deploy_checks import (
    COMPOSE_DIR,
    GRPC_PORTS,
    HTTP_PORT,
    K8S,
    K8S_VERSIONS,
    RUNTIME_KINDS,
    SERVICES,
    WORKERS,
    WORKLOADS,
    asks_for_gpu,
    containers,
    controller_trainjob,
    created_secrets,
    env_problems,
    find,
    kubectl,
    listens_on_every_interface,
    load_yaml_docs,
    name_of,
    pod_problems,
    pod_spec,
    probe_problems,
    quantity,
    render,
    runtime_pods,
    schema_problems,
    secret_references,
    trainjob_pod,
)

pytestmark = pytest.mark.skipif(kubectl() is None, reason="kubectl is not installed (pip install '.[dev]')")

# What `kubectl apply -k` / `kubectl create -k` is pointed at. Every other kustomization is a component.
LEAVES = ("base", "overlays/gpu", "overlays/gpu-deployment", "overlays/local", "overlays/external-s3", "pipeline",
          "overlays/gpu/pipeline", "examples/ingress-nginx")
# Training on GPUs: Kubeflow TrainJobs (the default), or the trainer Deployment holding a GPU (the fallback).
GPU_LEAVES = ("overlays/gpu", "overlays/gpu-deployment")
PROJECT_IMAGES = {*(f"meshai-{s}" for s in SERVICES), "meshai-trainer-cuda"}
IMAGES_COMPONENT = K8S / "components/images/kustomization.yaml"
# What pods may ask of a node, after the kubelet's reserve and the usual DaemonSets (network, logging,
# device plugin): a 4-vCPU / 16 GiB GPU node (g4dn.xlarge, g2-standard-4) keeps about 3.5 CPU / 12.5 GiB; a
# laptop cluster of 4 CPU / 8 GiB about 3.5 CPU / 6 GiB for all Mesh-AI pods together.
GPU_NODE = {"cpu": 3.5, "memory": 12.5 * 2**30}
LAPTOP = {"cpu": 3.5, "memory": 6 * 2**30}


@cache
def rendered(leaf: str) -> tuple[dict, ...]:
    return tuple(render(K8S / leaf))


def workloads(objs) -> list[dict]:
    return [o for o in objs if o["kind"] in WORKLOADS]


def gpu_recipe() -> str:
    """The trainer recipe the GPU pipeline Job asks for (the same Job serves both GPU leaves)."""
    job = pod_spec(find(rendered("overlays/gpu/pipeline"), "Job", "meshai-pipeline"))["containers"][0]
    return job["args"][job["args"].index("--config") + 1]


def pods(objs) -> list[dict]:
    """What gets scheduled: the workloads, and where a training runtime is deployed the pod of each node of
    the TrainJob the controller creates for the GPU recipe."""
    extra = [trainjob_pod(controller_trainjob(list(objs), gpu_recipe()), list(objs))] \
        if any(o["kind"] in RUNTIME_KINDS for o in objs) else []
    return workloads(objs) + extra


def gpu_pods(objs) -> list[dict]:
    return [o for o in pods(objs) if asks_for_gpu(o)]


def copy_of_k8s(tmp_path: Path) -> Path:
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    return copy


# -- every leaf renders, and every object is a valid Kubernetes object ------------------------------------------


def test_every_kustomization_is_a_leaf_or_a_component():
    found = {k.parent.relative_to(K8S).as_posix(): yaml.safe_load(k.read_text()) for k in K8S.rglob("kustomization.yaml")}
    components = {d for d, spec in found.items() if spec.get("kind") == "Component"}
    assert set(found) - components == set(LEAVES)
    # Every manifest in base is listed (a forgotten file would silently not deploy).
    listed = set(found["base"]["resources"])
    assert listed == {p.name for p in (K8S / "base").glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("leaf", LEAVES)
def test_rendered_objects_match_the_kubernetes_schema(leaf, version):
    objs = rendered(leaf)
    assert objs
    assert [p for o in objs for p in schema_problems(o, version)] == []
    assert all(o["metadata"].get("namespace") == "meshai" for o in objs if o["kind"] != "Namespace")


def test_the_schema_check_rejects_what_kubernetes_rejects():
    deployment = find(rendered("base"), "Deployment", "data")
    bad = yaml.safe_load(yaml.safe_dump(deployment))
    bad["spec"]["template"]["spec"]["terminationGracePeriod"] = 60             # misspelled field
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "50051"  # wrong type
    del bad["spec"]["selector"]                                                # required
    problems = schema_problems(bad, K8S_VERSIONS[0])
    assert len(problems) == 3, problems
    assert any("terminationGracePeriod" in p for p in problems)
    assert any("containerPort" in p for p in problems)
    assert schema_problems({"apiVersion": "example.org/v1", "kind": "Nothing", "metadata": {"name": "x"}},
                           K8S_VERSIONS[0]) == ["Nothing/x (example.org/v1, k8s 1.30): no schema for this kind"]
    # Custom resources against their vendored CRD schema, as strictly, metadata as ObjectMeta.
    runtime = yaml.safe_load(yaml.safe_dump(find(rendered("overlays/gpu"), "TrainingRuntime", "meshai-torch-distributed")))
    runtime["spec"]["mlPolicy"]["torhc"] = {}                                  # misspelled field
    runtime["spec"]["template"]["spec"]["failurePolicy"]["maxRestarts"] = "3"  # wrong type
    runtime["metadata"]["label"] = {}                                          # not in ObjectMeta
    problems = schema_problems(runtime, K8S_VERSIONS[0])
    assert len(problems) == 3 and all("TrainingRuntime/" in p for p in problems), problems
    assert any("torhc" in p for p in problems) and any("maxRestarts" in p for p in problems)
    job = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "metadata": {"name": "Run_1"},
           "spec": {"runtimeRef": {"name": "meshai-torch-distributed"}}}
    assert [p.rpartition(": ")[2] for p in schema_problems(job, K8S_VERSIONS[0])] == [
        "metadata.name must match RFC 1035 DNS label format"]  # the CRD's rule on the name


@pytest.mark.parametrize("leaf", LEAVES)
def test_pods_are_hardened_and_probed(leaf):
    objs = pods(rendered(leaf)) + [j for o in rendered(leaf) if o["kind"] in RUNTIME_KINDS for j in runtime_pods(o)]
    problems = [p for o in objs for p in pod_problems(o)]
    problems += [p for o in objs if o["kind"] in {"Deployment", "StatefulSet"} for p in probe_problems(o)]
    assert problems == []


# -- images ----------------------------------------------------------------------------------------------------


def images(objs) -> list[tuple[str, str]]:
    return [(name_of(o), c["image"]) for o in pods(objs) for c in containers(o)]


# A Mesh-AI image named with a tag or digest, wherever it appears (an environment variable's value included).
IMAGE_REF = re.compile(r"(?:[\w.-]+(?::\d+)?/)*meshai-[a-z]+(?:-cuda)?(?::[\w.-]+|@sha256:[0-9a-f]+)")


def strings(node) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return [node] if isinstance(node, str) else []


def test_images_come_from_one_place_for_every_leaf(tmp_path):
    """Rename the registry and the tag in components/images only: every leaf, the pipeline Jobs, the GPU
    trainer, the training runtime and so the TrainJobs' pods follow, and no Mesh-AI image is named any other
    way anywhere in a leaf (a controller setting naming the trainer image would be left behind)."""
    copy = copy_of_k8s(tmp_path)
    component = yaml.safe_load(IMAGES_COMPONENT.read_text())
    assert {i["name"] for i in component["images"]} == PROJECT_IMAGES
    for entry in component["images"]:
        entry["newName"] = "registry.invalid/acme/" + entry["newName"].rpartition("/")[2]
        entry["newTag"] = entry["newTag"].replace("0.1.0", "7.7.7")
    (copy / "components/images/kustomization.yaml").write_text(yaml.safe_dump(component))
    tags: dict[str, dict[str, str]] = {}
    for leaf in LEAVES:
        objs = render(copy / leaf)
        for where, image in images(objs):
            if "@sha256:" in image:  # third-party, pinned by digest (checked below)
                continue
            name, _, tag = image.rpartition(":")
            assert name.startswith("registry.invalid/acme/meshai-") and tag.startswith("7.7.7"), (leaf, where, image)
            tags.setdefault(leaf, {})[where] = tag
        stale = [s for s in strings(objs) if IMAGE_REF.fullmatch(s) and not s.startswith("registry.invalid/acme/")]
        assert stale == [], (leaf, stale)
    assert tags["pipeline"]["Job/meshai-pipeline"] == tags["overlays/gpu/pipeline"]["Job/meshai-pipeline"] == "7.7.7"
    assert {leaf for leaf, seen in tags.items() if "Deployment/trainer" in seen} == {
        "base", "overlays/gpu", "overlays/gpu-deployment", "overlays/local", "overlays/external-s3"}
    assert tags["base"]["Deployment/trainer"] == "7.7.7"
    # GPU work runs the CUDA build: the TrainJob's pods (the controller itself the CPU one), or the fallback's
    # trainer Deployment.
    assert tags["overlays/gpu"]["Deployment/trainer"] == "7.7.7"
    assert [tag for where, tag in tags["overlays/gpu"].items() if where.endswith("-node")] == ["7.7.7-cuda"]
    assert tags["overlays/gpu-deployment"]["Deployment/trainer"] == "7.7.7-cuda"


def test_manifests_name_project_images_only_by_their_logical_name():
    # A registry or tag written into a manifest or an overlay would escape components/images.
    for path in K8S.rglob("*.yaml"):
        if path == IMAGES_COMPONENT:
            continue
        for doc in load_yaml_docs(path):
            assert "images" not in doc or doc.get("kind") not in (None, "Kustomization", "Component"), path
            pod_docs = [doc] if doc.get("kind") in WORKLOADS else \
                runtime_pods(doc) if doc.get("kind") in RUNTIME_KINDS else []
            for c in (c for d in pod_docs for c in containers(d)):
                image = c.get("image")  # a patch may leave it as it is
                assert image is None or image in PROJECT_IMAGES or "@sha256:" in image, (path, image)
    gpu_patch = load_yaml_docs(K8S / "overlays/gpu-deployment/trainer/trainer-gpu.yaml")[0]
    assert pod_spec(gpu_patch)["containers"][0]["image"] == "meshai-trainer-cuda"
    [runtime] = load_yaml_docs(K8S / "components/kubeflow-trainer/training-runtime.yaml")
    assert pod_spec(runtime_pods(runtime)[0])["containers"][0]["image"] == "meshai-trainer-cuda"


def test_minio_comes_from_quay_pinned_by_digest_as_in_compose():
    compose_images = {s["image"] for s in yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text())[
        "services"].values() if "minio" in s["image"]}
    k8s_images = {image for _, image in images(rendered("base")) if "minio" in image}
    assert k8s_images == compose_images and len(k8s_images) == 2
    for image in k8s_images:
        assert image.startswith(("quay.io/minio/minio:RELEASE.", "quay.io/minio/mc:RELEASE.")), image
        digest = image.partition("@sha256:")[2]
        assert len(digest) == 64 and int(digest, 16) >= 0, image


def test_external_s3_overlay_runs_without_minio_over_tls():
    objs = rendered("overlays/external-s3")
    assert not [o for o in objs if "minio" in o["metadata"]["name"] or o["metadata"]["name"] == "bucket-init"]
    assert not [image for _, image in images(objs) if "minio" in image]
    config = find(objs, "ConfigMap", "meshai-config")["data"]
    assert config["MESHAI_S3_SECURE"] == "true" and config["MESHAI_S3_ENDPOINT"] != "minio:9000"
    assert config["MESHAI_DATA_ADDR"] == f"data:{GRPC_PORTS['data']}"  # merged, not replaced


# -- resources -------------------------------------------------------------------------------------------------


def resources(c: dict, kind: str) -> dict[str, float]:
    return {k: quantity(v) for k, v in c.get("resources", {}).get(kind, {}).items() if k in ("cpu", "memory")}


@pytest.mark.parametrize("leaf", LEAVES)
def test_every_container_has_sane_requests_and_limits(leaf):
    problems = []
    for obj in pods(rendered(leaf)):
        pod = pod_spec(obj)
        for c in containers(obj):
            where = f"{name_of(obj)}/{c['name']}"
            req, lim = resources(c, "requests"), resources(c, "limits")
            if "memory" not in lim or "cpu" not in req or "memory" not in req:
                problems.append(f"{where}: needs cpu and memory requests and a memory limit")
                continue
            problems += [f"{where}: {k} request {req[k]} above its limit {lim[k]}" for k in lim if req.get(k, 0) > lim[k]]
            # Memory-backed volumes count against the memory limit.
            in_memory = sum(quantity(v["emptyDir"].get("sizeLimit", "0")) for v in pod.get("volumes", [])
                            if v.get("emptyDir", {}).get("medium") == "Memory")
            if in_memory >= lim["memory"]:
                problems.append(f"{where}: memory-backed volumes ({in_memory}) fill the memory limit")
    assert problems == []


def test_local_overlay_fits_a_laptop_cluster():
    total = {"cpu": 0.0, "memory": 0.0}
    for obj in workloads(rendered("overlays/local")):
        replicas = obj["spec"].get("replicas", 1)
        for c in pod_spec(obj)["containers"]:
            for k, v in resources(c, "requests").items():
                total[k] += v * replicas
    assert total["cpu"] <= LAPTOP["cpu"] and total["memory"] <= LAPTOP["memory"], total


# -- wiring: Services, addresses, environment ------------------------------------------------------------------


def test_services_select_their_pods_on_the_ports_the_cli_dials():
    objs = rendered("base")
    config = find(objs, "ConfigMap", "meshai-config")["data"]
    problems = []
    for svc, port in GRPC_PORTS.items():
        pod = pod_spec(find(objs, "Deployment", svc))
        labels = find(objs, "Deployment", svc)["spec"]["template"]["metadata"]["labels"]
        service = find(objs, "Service", svc)
        if not service["spec"]["selector"].items() <= labels.items():
            problems.append(f"Service {svc} does not select the {svc} pods")
        named = {p["name"]: p["containerPort"] for p in pod["containers"][0]["ports"]}
        targets = {p["port"]: named.get(p["targetPort"], p["targetPort"]) for p in service["spec"]["ports"]}
        if targets.get(port) != port:
            problems.append(f"Service {svc}: port {port} reaches container port {targets.get(port)}")
        if config.get(f"MESHAI_{svc.upper()}_ADDR") != f"{svc}:{port}":
            problems.append(f"meshai-config: MESHAI_{svc.upper()}_ADDR is not {svc}:{port}")
        env = {e["name"]: e.get("value") for e in pod["containers"][0].get("env", [])}
        if not listens_on_every_interface(env.get("MESHAI_LISTEN"), port):
            problems.append(f"{svc}: MESHAI_LISTEN={env.get('MESHAI_LISTEN')}")
    gateway = find(objs, "Service", "gateway")
    if HTTP_PORT not in {p["port"] for p in gateway["spec"]["ports"]}:
        problems.append(f"Service gateway does not expose {HTTP_PORT}")
    problems += env_problems(list(config), "meshai-config")
    for obj in workloads(objs) + workloads(rendered("pipeline")):
        problems += env_problems([e["name"] for c in containers(obj) for e in c.get("env", [])], name_of(obj))
    assert problems == []


def test_gateway_probes_hit_routes_the_gateway_serves(tmp_path):
    from meshai_gateway.app import create_app
    from meshai_gateway.model_source import LocalFileSource
    from meshai_gateway.settings import GatewaySettings

    routes = {getattr(r, "path", None) for r in create_app(GatewaySettings(), LocalFileSource(tmp_path / "x.gguf")).routes}
    c = pod_spec(find(rendered("base"), "Deployment", "gateway"))["containers"][0]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["path"] in routes, probe


# -- Secrets: created once, never by apply ---------------------------------------------------------------------


def test_apply_never_writes_a_secret_and_every_required_one_is_created_once():
    created = created_secrets()
    problems = []
    for leaf in LEAVES:
        objs = rendered(leaf)
        problems += [f"{leaf}: renders {name_of(o)}: apply would overwrite it" for o in objs if o["kind"] == "Secret"]
        for obj in workloads(objs):
            for name, key, optional in secret_references(obj):
                if optional:
                    continue
                if name not in created or (key is not None and key not in created[name]):
                    problems.append(f"{leaf}: {name_of(obj)} needs secret {name} key {key}, which nothing creates")
    assert problems == []
    # The optional ones an operator may add: the gateway key and a Hugging Face token for gated models.
    optional = {(n, k) for o in workloads(rendered("base")) for n, k, opt in secret_references(o) if opt}
    assert optional == {("meshai-gateway-key", "api-key"), ("meshai-hf-token", "token")}
    trainer_env = {e["name"]: e for e in pod_spec(find(rendered("base"), "Deployment", "trainer"))["containers"][0]["env"]}
    assert trainer_env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True


def test_each_service_has_its_own_s3_key_and_only_minio_sees_the_root_account():
    objs = rendered("base")
    users = {}
    for obj in workloads(objs) + workloads(rendered("pipeline")):
        refs = {name for name, _, _ in secret_references(obj)}
        if "meshai-s3-root" in refs and obj["metadata"]["name"] not in ("minio", "bucket-init"):
            pytest.fail(f"{name_of(obj)} reads MinIO's root account")
        own = sorted(r for r in refs if r.startswith("meshai-s3-") and r != "meshai-s3-root")
        if obj["metadata"]["name"] not in ("minio", "bucket-init"):
            assert len(own) == 1, (name_of(obj), own)
            users[obj["metadata"]["name"]] = own[0]
    assert len(set(users.values())) == len(users) == len(SERVICES) + 1  # + the pipeline Job
    # bucket-init registers exactly those keys in MinIO.
    init = find(objs, "Job", "bucket-init")
    registered = {name for name, key, _ in secret_references(init) if key == "MESHAI_S3_SECRET_KEY"}
    assert registered == set(users.values())
    script = pod_spec(init)["containers"][0]["args"][0]
    assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0
    # The gateway only reads the bucket: it gets the read-only policy.
    assert 'if [ "$service" = gateway ]; then policy=meshai-readonly; fi' in script


# -- operations ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("leaf", GPU_LEAVES)
def test_grace_periods_cover_each_service_stop_path(leaf):
    from meshai_common.grpc_server import DRAIN_GRACE_S
    from meshai_common.jobs import JobRuntime
    from meshai_trainer.launch import STOP_GRACE_S

    job_stop_s = inspect.signature(JobRuntime.shutdown).parameters["timeout"].default
    gateway_stop_s = 30 + 10  # uvicorn's timeout_graceful_shutdown, then the gRPC server's grace (__main__)
    objs = rendered(leaf)
    grace = {n: pod_spec(find(objs, "Deployment", n))["terminationGracePeriodSeconds"] for n in SERVICES}
    # The trainer: ranks get STOP_GRACE_S to checkpoint, then the job's state is written (10 s SIGKILL window,
    # uploads); the drain runs alongside.
    assert grace["trainer"] >= STOP_GRACE_S + DRAIN_GRACE_S + 10
    [gpu] = gpu_pods(objs)  # where the ranks run: the trainer's pod, or each TrainJob node's
    assert pod_spec(gpu)["terminationGracePeriodSeconds"] >= STOP_GRACE_S
    for worker in WORKERS:
        assert grace[worker] >= job_stop_s + DRAIN_GRACE_S, worker
    assert grace["gateway"] > gateway_stop_s
    compose = yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text())["services"]
    assert float(compose["trainer"]["stop_grace_period"].rstrip("s")) >= grace["trainer"]


def test_llama_cpp_threads_follow_the_gateway_cpu_limit():
    for leaf in ("base", "overlays/local"):
        c = pod_spec(find(rendered(leaf), "Deployment", "gateway"))["containers"][0]
        threads = next(e for e in c["env"] if e["name"] == "MESHAI_NUM_THREADS")["valueFrom"]["resourceFieldRef"]
        assert threads["resource"] == "limits.cpu" and threads.get("containerName", c["name"]) == c["name"]
        # Without a CPU limit the downward API would give the node's CPUs: the limit must be set.
        assert quantity(c["resources"]["limits"]["cpu"]) >= 1


def test_gateway_rollout_progresses_before_any_model_is_promoted():
    """Before the first promotion no replica is ready. A rollout may only replace old replicas with new ones
    if it may go below the ready count, so maxUnavailable must be at least one; the disruption budget must
    still let one replica go."""
    for leaf in ("base", "overlays/local"):
        objs = rendered(leaf)
        gateway = find(objs, "Deployment", "gateway")
        rolling = gateway["spec"]["strategy"]["rollingUpdate"]
        assert gateway["spec"]["strategy"]["type"] == "RollingUpdate" and int(rolling["maxUnavailable"]) >= 1
        pdbs = [o for o in objs if o["kind"] == "PodDisruptionBudget"]
        for pdb in pdbs:
            assert pdb["spec"]["minAvailable"] < gateway["spec"]["replicas"]
            assert pdb["spec"].get("unhealthyPodEvictionPolicy") == "AlwaysAllow"
    assert find(rendered("base"), "Deployment", "gateway")["spec"]["replicas"] >= 2


def test_namespace_enforces_restricted_and_policies_open_only_the_gateway():
    objs = rendered("base")
    ns = find(objs, "Namespace", "meshai")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
    open_ports = {p["port"] for o in policies for rule in o["spec"].get("ingress", []) if "from" not in rule
                  for p in rule.get("ports", [])}
    assert open_ports == {HTTP_PORT}


def test_ingress_example_streams_ndjson_to_the_gateway_over_tls():
    from meshai_gateway.settings import GatewaySettings

    ingress = find(rendered("examples/ingress-nginx"), "Ingress", "gateway")
    notes = ingress["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    # A reply may wait in the gateway's queue, then generate: the proxy must not cut it short.
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(notes[f"nginx.ingress.kubernetes.io/{timeout}"]) > GatewaySettings().queue_timeout_s + 60
    spec = ingress["spec"]
    hosts = {r["host"] for r in spec["rules"]}
    assert hosts <= {h for t in spec["tls"] for h in t["hosts"]} and all(t.get("secretName") for t in spec["tls"])
    service = find(rendered("base"), "Service", "gateway")
    for rule in spec["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            port = next(p for p in service["spec"]["ports"] if p["name"] == backend["port"].get("name")
                        or p["port"] == backend["port"].get("number"))
            assert backend["name"] == "gateway" and port["port"] == HTTP_PORT
