"""Invariants of the deployment files that an operator relies on.

Parses Dockerfiles, compose files and Kubernetes manifests; no Docker engine or cluster is needed. Where
`kubectl` is installed, every kustomization is also rendered and the rendered objects are checked too.
Each checker returns a list of problems, so a failure names every offending file and field at once.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
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


def listens_on_every_interface(listen: str | None, port: int) -> bool:
    """A container's listen address must be the unspecified address (other pods reach it) on its port.
    Only the manifests' text is read here; nothing binds."""
    host, _, got = (listen or "").rpartition(":")
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified and got == str(port)
    except ValueError:
        return False
# The documented wiring (root README "Configuration", meshai_common.config.ENV_HELP) plus the documented
# optional knobs that deployments set.
DOCUMENTED_ENV = set(ENV_HELP) | {
    "MESHAI_S3_SECURE", "MESHAI_WORKDIR", "MESHAI_LOG_LEVEL", "MESHAI_MODEL_NAME", "MESHAI_MODEL_ALIASES",
    "MESHAI_CONVERTER_DIR", "MESHAI_CODE_VERSION", "MESHAI_GATEWAY_URL",
}
# Variables for the runtime and third-party programs, not Mesh-AI's own.
OTHER_ENV = {
    "HOME", "PATH", "HF_HOME", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PIP_NO_CACHE_DIR",
    "PIP_DISABLE_PIP_VERSION_CHECK", "CMAKE_ARGS", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "MINIO_BROWSER",
}
WORKLOADS = {"Deployment", "StatefulSet", "Job", "DaemonSet", "CronJob"}


# -- helpers ---------------------------------------------------------------------------------------------------


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


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        instr, _, args = (buf + line).partition(" ")
        out.append((instr.upper(), args.strip()))
        buf = ""
    return out


def final_stage(instrs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (ins, _) in enumerate(instrs) if ins == "FROM")
    return instrs[last_from:]


def dockerfile_env(instrs: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins, args in instrs:
        if ins == "ENV":
            for key, value in re.findall(r'([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S+)', args):
                env[key] = value.strip('"')
    return env


def load_yaml_docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def kustomizations() -> list[Path]:
    return sorted(K8S.rglob("kustomization.yaml"))


def manifest_files() -> list[Path]:
    """Files listed as `resources` (complete objects; patches are partial and checked after rendering)."""
    files = []
    for kust in kustomizations():
        for res in yaml.safe_load(kust.read_text()).get("resources", []):
            path = (kust.parent / res).resolve()
            if path.is_file():
                files.append(path)
    return sorted(set(files))


def pod_spec(obj: dict) -> dict:
    spec = obj["spec"]
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def pod_spec_labels(obj: dict) -> dict:
    return obj["spec"]["template"]["metadata"]["labels"]


def pod_problems(obj: dict) -> list[str]:
    """Hardening every Mesh-AI pod must have (the namespace enforces the restricted Pod Security Standard)."""
    name = f"{obj['kind']}/{obj['metadata']['name']}"
    pod = pod_spec(obj)
    problems = []
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        problems.append(f"{name}: pod securityContext.runAsNonRoot is not true")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{name}: pod seccompProfile is not RuntimeDefault")
    volumes = {v["name"] for v in pod.get("volumes", [])}
    volumes |= {v["metadata"]["name"] for v in obj["spec"].get("volumeClaimTemplates", [])}
    for c in pod.get("initContainers", []) + pod["containers"]:
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


def probe_problems(obj: dict) -> list[str]:
    """Long-running containers have readiness and liveness probes; gRPC services are ready by gRPC health."""
    name = obj["metadata"]["name"]
    problems = []
    for c in pod_spec(obj)["containers"]:
        where = f"{obj['kind']}/{name}/{c['name']}"
        ready, alive = c.get("readinessProbe"), c.get("livenessProbe")
        if not ready or not alive:
            problems.append(f"{where}: readiness and liveness probes are required")
            continue
        if name in WORKERS and ready.get("grpc", {}).get("port") != GRPC_PORTS[name]:
            problems.append(f"{where}: readiness must be the native gRPC probe on {GRPC_PORTS[name]}")
        if name == "gateway":
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            for probe, path in ((ready, "/readyz"), (alive, "/healthz")):
                get = probe.get("httpGet", {})
                if get.get("path") != path or ports.get(get.get("port"), get.get("port")) != HTTP_PORT:
                    problems.append(f"{where}: expected an HTTP probe on {path}:{HTTP_PORT}, got {probe}")
    return problems


def container_env_names(obj: dict) -> list[str]:
    return [e["name"] for c in pod_spec(obj)["containers"] for e in c.get("env", [])]


def render(path: Path) -> list[dict]:
    proc = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"kubectl kustomize {path.relative_to(ROOT)}: {proc.stderr.strip()}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def compose_ports(spec: dict) -> list[tuple[str, str]]:
    """(host port, container port) pairs from short or long port syntax."""
    out = []
    for p in spec.get("ports", []):
        if isinstance(p, dict):
            out.append((str(p.get("published", "")), str(p["target"])))
        else:
            parts = str(p).rsplit(":", 2)
            out.append((parts[-2] if len(parts) > 1 else "", parts[-1].split("/")[0]))
    return out


COMPOSE = yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text())
MESHAI_COMPOSE = [*SERVICES, "orchestrator"]


# -- every file parses -----------------------------------------------------------------------------------------


def test_every_yaml_file_under_deploy_parses():
    files = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
    assert len(files) >= 10
    for path in files:
        assert load_yaml_docs(path), f"{path.relative_to(ROOT)} is empty"


# -- Dockerfiles -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("svc", SERVICES)
def test_dockerfile_runs_the_service_module_as_non_root(svc):
    instrs = dockerfile(ROOT / "services" / svc / "Dockerfile")
    final = final_stage(instrs)
    users = [args for ins, args in final if ins == "USER"]
    assert users, "the runtime stage sets no USER"
    assert users[-1].split(":")[0] == "10001", f"runs as {users[-1]}"
    cmd = [args for ins, args in final if ins == "CMD"]
    assert cmd and yaml.safe_load(cmd[-1]) == ["python", "-m", f"meshai_{svc}"], cmd
    assert (ROOT / "services" / svc / f"meshai_{svc}" / "__main__.py").is_file(), f"meshai_{svc}/__main__.py"
    assert any(ins == "HEALTHCHECK" for ins, _ in final), "no HEALTHCHECK"


@pytest.mark.parametrize("svc", SERVICES)
def test_dockerfile_builds_in_stages_and_ships_no_toolchain(svc):
    instrs = dockerfile(ROOT / "services" / svc / "Dockerfile")
    runs = [args for ins, args in instrs if ins == "RUN"]
    assert sum(ins == "FROM" for ins, _ in instrs) >= 2, "single stage: the toolchain would ship"
    final_runs = " ".join(args for ins, args in final_stage(instrs) if ins == "RUN")
    for tool in ("build-essential", "cmake", "grpcio-tools"):
        assert tool not in final_runs, f"{tool} installed in the runtime stage"
    assert not any(ins == "ADD" for ins, _ in instrs), "use COPY (ADD fetches URLs and unpacks archives)"
    # This service's extra, protos generated before the project is installed.
    assert any(f'" {svc}' in r and "optional-dependencies" in r for r in runs), f"does not install .[{svc}]"
    gen = next(i for i, r in enumerate(runs) if "protos/generate.py" in r)
    assert "pip install --no-deps ." in runs[gen][runs[gen].index("protos/generate.py"):]
    # Copied sources exist and are not excluded by .dockerignore.
    ignore = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for ins, args in instrs:
        if ins == "COPY" and "--from=" not in args:
            for src in args.split()[:-1]:
                assert (ROOT / src).exists() and src not in ignore, f"COPY {src}"


@pytest.mark.parametrize("svc", SERVICES)
def test_dockerfile_listens_where_deployments_expect(svc):
    instrs = dockerfile(ROOT / "services" / svc / "Dockerfile")
    final = final_stage(instrs)
    env = dockerfile_env(final)
    assert listens_on_every_interface(env["MESHAI_LISTEN"], GRPC_PORTS[svc])
    assert env["HOME"] == "/tmp" and env["MESHAI_WORKDIR"].startswith("/tmp/"), "writes outside /tmp by default"
    exposed = {p for ins, args in final if ins == "EXPOSE" for p in args.split()}
    assert str(GRPC_PORTS[svc]) in exposed
    health = next(args for ins, args in final if ins == "HEALTHCHECK")
    if svc == "gateway":
        assert listens_on_every_interface(env["MESHAI_HTTP_LISTEN"], HTTP_PORT) and str(HTTP_PORT) in exposed
        assert "/healthz" in health
    else:
        assert "meshai_common.healthcheck" in health
    assert (ROOT / "services/common/meshai_common/healthcheck.py").is_file()
    assert env_problems(list(env), f"services/{svc}/Dockerfile") == []


def test_trainer_takes_a_cuda_base_and_a_torch_index():
    instrs = dockerfile(ROOT / "services/trainer/Dockerfile")
    first_from = next(i for i, (ins, _) in enumerate(instrs) if ins == "FROM")
    assert ("ARG", "BASE_IMAGE=python:3.11-slim") in instrs[:first_from]
    assert all(args.startswith("${BASE_IMAGE}") for ins, args in instrs if ins == "FROM")
    args = dict(a.split("=", 1) for ins, a in instrs if ins == "ARG" and "=" in a)
    assert args["TORCH_INDEX_URL"].endswith("/whl/cpu")
    assert any('--index-url "${TORCH_INDEX_URL}"' in a for ins, a in instrs if ins == "RUN")


def test_quantizer_image_carries_the_converter():
    instrs = dockerfile(ROOT / "services/quantizer/Dockerfile")
    runs = " ".join(a for ins, a in instrs if ins == "RUN")
    assert "meshai_quantizer.converter --cache-dir /opt/meshai/llama.cpp" in runs
    final = final_stage(instrs)
    assert ("COPY", "--from=build /opt/meshai/llama.cpp /opt/meshai/llama.cpp") in final
    assert dockerfile_env(final)["MESHAI_CONVERTER_DIR"] == "/opt/meshai/llama.cpp"


@pytest.mark.parametrize("svc", ["quantizer", "evaluator", "gateway"])
def test_llama_cpp_images_ship_the_openmp_runtime(svc):
    # llama.cpp's CPU backend links libgomp.so.1, which python:3.11-slim lacks.
    final = final_stage(dockerfile(ROOT / "services" / svc / "Dockerfile"))
    assert any(ins == "RUN" and "libgomp1" in a for ins, a in final)


def test_dockerignore_keeps_the_context_small_and_secret_free():
    lines = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for needed in (".git", ".venv", ".cache", "tests", "protos/meshai/v1/*_pb2*.py", "**/.env"):
        assert needed in lines, needed
    for kept in ("pyproject.toml", "README.md", "protos", "services"):
        assert kept not in lines, kept


# -- docker compose --------------------------------------------------------------------------------------------


def test_compose_services_are_hardened():
    services = COMPOSE["services"]
    assert {"minio", "bucket-init", *MESHAI_COMPOSE} <= set(services)
    for name in [*MESHAI_COMPOSE, "bucket-init"]:
        spec = services[name]
        assert str(spec.get("user", "")).split(":")[0] == "10001", name
        assert spec.get("read_only") is True and spec.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in spec.get("security_opt", []), name
        assert any(str(t).split(":")[0] == "/tmp" for t in spec.get("tmpfs", [])), name
    minio = services["minio"]
    assert minio.get("read_only") is True and minio.get("cap_drop") == ["ALL"]


@pytest.mark.parametrize("svc", SERVICES)
def test_compose_grpc_services_listen_on_their_port_and_are_healthchecked(svc):
    spec = COMPOSE["services"][svc]
    env = spec["environment"]
    assert listens_on_every_interface(env["MESHAI_LISTEN"], GRPC_PORTS[svc])
    test = " ".join(spec["healthcheck"]["test"])
    if svc == "gateway":
        assert listens_on_every_interface(env["MESHAI_HTTP_LISTEN"], HTTP_PORT) and f":{HTTP_PORT}/healthz" in test
    else:
        assert f"meshai_common.healthcheck 127.0.0.1:{GRPC_PORTS[svc]}" in test
    assert spec["depends_on"]["bucket-init"]["condition"] == "service_completed_successfully"
    build = spec["build"]
    assert (COMPOSE_DIR / build["context"]).resolve() == ROOT
    assert (ROOT / build["dockerfile"]).is_file() and build["dockerfile"] == f"services/{svc}/Dockerfile"


def test_compose_env_names_are_documented():
    for name in MESHAI_COMPOSE:
        assert env_problems(list(COMPOSE["services"][name]["environment"]), f"compose {name}") == []


def test_compose_publishes_only_the_gateway_on_11434():
    services = COMPOSE["services"]
    assert (str(HTTP_PORT), str(HTTP_PORT)) in compose_ports(services["gateway"])
    for name in [*WORKERS, "orchestrator", "bucket-init"]:
        assert not services[name].get("ports"), f"{name} publishes ports"
    assert all(p.startswith("127.0.0.1:") for p in services["minio"].get("ports", [])), "console off-host"


def test_compose_start_order_and_orchestrator():
    services = COMPOSE["services"]
    assert "healthcheck" in services["minio"]
    assert services["bucket-init"]["depends_on"]["minio"]["condition"] == "service_healthy"
    orch = services["orchestrator"]
    assert orch["profiles"] == ["tools"] and orch["command"][0] == "meshai"
    assert {s: d["condition"] for s, d in orch["depends_on"].items()} == {s: "service_healthy" for s in SERVICES}
    for svc, port in GRPC_PORTS.items():
        assert orch["environment"][f"MESHAI_{svc.upper()}_ADDR"] == f"{svc}:{port}"
    image = orch["image"].split(":")[0]
    assert any(services[s]["image"].split(":")[0] == image for s in SERVICES), "orchestrator image is not built"


def test_compose_variables_are_all_in_the_env_example():
    example = (COMPOSE_DIR / ".env.example").read_text()
    defined = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", example, re.M))
    for path in COMPOSE_DIR.glob("docker-compose*.yml"):
        used = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", path.read_text()))
        assert used <= defined, f"{path.name}: {sorted(used - defined)} missing from .env.example"
    assert re.search(r"^MESHAI_S3_SECRET_KEY=change-me", example, re.M), "the example must hold a placeholder"


def test_compose_gpu_file_reserves_an_nvidia_gpu_for_the_trainer():
    gpu = yaml.safe_load((COMPOSE_DIR / "docker-compose.gpu.yml").read_text())
    assert set(gpu["services"]) == {"trainer"}
    devices = gpu["services"]["trainer"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "cu" in gpu["services"]["trainer"]["build"]["args"]["TORCH_INDEX_URL"]


# -- Kubernetes ------------------------------------------------------------------------------------------------


def test_kustomization_resources_and_patches_exist():
    kusts = kustomizations()
    assert {k.parent.relative_to(K8S).as_posix() for k in kusts} >= {"base", "overlays/gpu", "pipeline"}
    for kust in kusts:
        spec = yaml.safe_load(kust.read_text())
        for res in spec.get("resources", []):
            assert (kust.parent / res).exists(), f"{kust.relative_to(ROOT)}: resource {res}"
        for patch in spec.get("patches", []):
            if "path" in patch:
                assert (kust.parent / patch["path"]).is_file(), f"{kust.relative_to(ROOT)}: patch {patch}"
    # Every manifest in base is listed (a forgotten file would silently not deploy).
    listed = set(yaml.safe_load((K8S / "base/kustomization.yaml").read_text())["resources"])
    present = {p.name for p in (K8S / "base").glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_k8s_pods_are_hardened_and_probed():
    objs = [(p, d) for p in manifest_files() for d in load_yaml_docs(p)]
    workloads = [d for _, d in objs if d["kind"] in WORKLOADS]
    assert {d["metadata"]["name"] for d in workloads if d["kind"] == "Deployment"} == set(SERVICES)
    problems = [p for d in workloads for p in pod_problems(d)]
    problems += [p for d in workloads if d["kind"] in {"Deployment", "StatefulSet"} for p in probe_problems(d)]
    assert problems == []


def test_k8s_services_env_and_references_line_up():
    base = yaml.safe_load((K8S / "base/kustomization.yaml").read_text())
    configmaps = {g["name"]: dict(x.split("=", 1) for x in g["literals"]) for g in base["configMapGenerator"]}
    secrets = {g["name"]: dict(x.split("=", 1) for x in g["literals"]) for g in base["secretGenerator"]}
    objs = [d for p in manifest_files() for d in load_yaml_docs(p)]
    problems = env_problems([k for m in (*configmaps.values(), *secrets.values()) for k in m], "k8s generators")
    svc_objs = {d["metadata"]["name"]: d for d in objs if d["kind"] == "Service"}
    for obj in (d for d in objs if d["kind"] in WORKLOADS):
        name = obj["metadata"]["name"]
        problems += env_problems(container_env_names(obj), f"k8s {name}")
        for c in pod_spec(obj)["containers"]:
            for ref in c.get("envFrom", []):
                if "configMapRef" in ref and ref["configMapRef"]["name"] not in configmaps:
                    problems.append(f"{name}: unknown ConfigMap {ref['configMapRef']['name']}")
                if "secretRef" in ref and ref["secretRef"]["name"] not in secrets:
                    problems.append(f"{name}: unknown Secret {ref['secretRef']['name']}")
            for e in c.get("env", []):
                key_ref = e.get("valueFrom", {}).get("secretKeyRef")
                # An optional secret is the operator's to create (the gateway's API key); any other must exist.
                if key_ref and not key_ref.get("optional") and key_ref["key"] not in secrets.get(key_ref["name"], {}):
                    problems.append(f"{name}: secret key {key_ref} does not exist")
            if name in SERVICES:
                env = {e["name"]: e.get("value") for e in c.get("env", [])}
                if not listens_on_every_interface(env.get("MESHAI_LISTEN"), GRPC_PORTS[name]):
                    problems.append(f"{name}: MESHAI_LISTEN={env.get('MESHAI_LISTEN')}")
        if obj["kind"] == "Deployment":
            service = svc_objs.get(name)
            labels = pod_spec_labels(obj)
            if service is None or not service["spec"]["selector"].items() <= labels.items():
                problems.append(f"Service {name} missing or does not select the {name} pods")
            elif GRPC_PORTS[name] not in {p["port"] for p in service["spec"]["ports"]}:
                problems.append(f"Service {name} does not expose {GRPC_PORTS[name]}")
    # The addresses the CLI reads point at these Services.
    for svc, port in GRPC_PORTS.items():
        if configmaps["meshai-config"].get(f"MESHAI_{svc.upper()}_ADDR") != f"{svc}:{port}":
            problems.append(f"meshai-config: MESHAI_{svc.upper()}_ADDR is not {svc}:{port}")
    gateway_ports = {p["port"] for p in svc_objs["gateway"]["spec"]["ports"]}
    if HTTP_PORT not in gateway_ports:
        problems.append(f"Service gateway does not expose {HTTP_PORT}")
    assert problems == []


def test_gateway_has_a_disruption_budget_and_namespace_enforces_restricted():
    objs = [d for p in manifest_files() for d in load_yaml_docs(p)]
    pdb = next(d for d in objs if d["kind"] == "PodDisruptionBudget" and d["metadata"]["name"] == "gateway")
    gateway = next(d for d in objs if d["kind"] == "Deployment" and d["metadata"]["name"] == "gateway")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_spec_labels(gateway).items()
    assert gateway["spec"]["replicas"] > pdb["spec"]["minAvailable"]
    ns = next(d for d in objs if d["kind"] == "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_pipeline_job_uses_the_base_image_tag():
    def tag(path: Path, image: str) -> str:
        return next(i["newTag"] for i in yaml.safe_load(path.read_text())["images"] if i["name"] == image)

    assert tag(K8S / "pipeline/kustomization.yaml", "meshai-data") == tag(K8S / "base/kustomization.yaml",
                                                                           "meshai-data")


def test_gpu_overlay_patch_asks_for_a_gpu_and_tolerates_the_taint():
    patch = load_yaml_docs(K8S / "overlays/gpu/trainer-gpu.yaml")[0]
    pod = patch["spec"]["template"]["spec"]
    trainer = next(c for c in pod["containers"] if c["name"] == "trainer")
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] >= 1
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])


# -- rendered with kubectl kustomize (where kubectl exists) ----------------------------------------------------

needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")


@needs_kubectl
@pytest.mark.parametrize("kust", ["base", "overlays/gpu", "overlays/local", "pipeline"])
def test_kustomization_renders_hardened_objects(kust):
    objs = render(K8S / kust)
    assert all(d["metadata"].get("namespace") == "meshai" for d in objs if d["kind"] != "Namespace")
    workloads = [d for d in objs if d["kind"] in WORKLOADS]
    assert workloads
    problems = [p for d in workloads for p in pod_problems(d)]
    problems += [p for d in workloads if d["kind"] in {"Deployment", "StatefulSet"} for p in probe_problems(d)]
    assert problems == []


@needs_kubectl
def test_gpu_overlay_renders_the_trainer_on_a_gpu():
    objs = render(K8S / "overlays/gpu")
    trainer = next(d for d in objs if d["kind"] == "Deployment" and d["metadata"]["name"] == "trainer")
    pod = pod_spec(trainer)
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith("-cuda")
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    # Everything else is still the base (the patch must not drop probes or mounts).
    assert container["readinessProbe"]["grpc"]["port"] == GRPC_PORTS["trainer"]
    others = [d for d in objs if d["kind"] == "Deployment" and d["metadata"]["name"] != "trainer"]
    assert all("nvidia.com/gpu" not in str(pod_spec(d)) for d in others)


# -- the checkers can fail -------------------------------------------------------------------------------------


def test_checkers_reject_what_they_must():
    good = load_yaml_docs(K8S / "base/data.yaml")[0]
    assert pod_problems(good) == [] and probe_problems(good) == []
    bad = yaml.safe_load(yaml.safe_dump(good))
    pod = pod_spec(bad)
    pod["securityContext"]["runAsUser"] = 0
    pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    del pod["containers"][0]["readinessProbe"]
    assert len(pod_problems(bad)) == 2 and probe_problems(bad)
    assert env_problems(["MESHAI_S3_ENDPIONT", "MESHAI_LISTEN", "SECRET_THING"], "x") == [
        "x: MESHAI_S3_ENDPIONT is not a documented variable", "x: unexpected variable SECRET_THING"]
