"""Invariants of the Dockerfiles and the compose files that an operator relies on.

Parses them; no Docker engine is needed. The Kubernetes manifests are rendered and checked in
test_k8s_manifests.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from deploy_checks import (
    COMPOSE_DIR,
    DEPLOY,
    GRPC_PORTS,
    HTTP_PORT,
    ROOT,
    SERVICES,
    WORKERS,
    env_problems,
    listens_on_every_interface,
    load_yaml_docs,
    pod_problems,
    pod_spec,
    probe_problems,
)

# -- helpers ---------------------------------------------------------------------------------------------------


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


IMAGES = ROOT / "deploy/images/Dockerfile"


def stages(instrs: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """Each named stage's instructions (its FROM first), in file order."""
    out: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for ins, args in instrs:
        if ins == "FROM":
            m = re.search(r"\s+AS\s+(\S+)$", args, re.IGNORECASE)
            assert m, f"an unnamed stage: FROM {args}"
            current = out.setdefault(m.group(1), [])
        if current is not None:
            current.append((ins, args))
    return out


def target(name: str) -> list[tuple[str, str]]:
    """What image `name` is built from: the target stage's instructions after those of the stages it builds on
    (FROM another stage of the file), base first."""
    by_name = stages(dockerfile(IMAGES))
    chain: list[list[tuple[str, str]]] = []
    while name in by_name:
        chain.insert(0, by_name[name])
        name = by_name[name][0][1].split()[0]
    return [x for stage in chain for x in stage]


def build_stage(svc: str) -> list[tuple[str, str]]:
    """The stage that makes `svc`'s /opt/venv: the one its target copies /opt/venv from."""
    src = next(a for ins, a in stages(dockerfile(IMAGES))[svc] if ins == "COPY" and a.endswith("/opt/venv /opt/venv"))
    return stages(dockerfile(IMAGES))[src.split()[0].removeprefix("--from=")]


def dockerfile_env(instrs: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins, args in instrs:
        if ins == "ENV":
            for key, value in re.findall(r'([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S+)', args):
                env[key] = value.strip('"')
    return env


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


_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: $$, ${VAR}, $VAR, ${VAR:-default}, ${VAR-default}, ${VAR:?error}."""
    def substitute(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3) or ""
        value = env.get(name)
        missing = value is None or (value == "" and op in (":-", ":?"))
        if missing and op in (":?", "?"):
            raise ValueError(f"compose: {name} is required: {arg}")
        if missing and op in (":-", "-"):
            return arg
        return value or ""
    return _VARIABLE.sub(substitute, text)


REQUIRED_ENV = {"MESHAI_S3_ACCESS_KEY": "meshai", "MESHAI_S3_SECRET_KEY": "a-long-random-secret"}


def compose(env: dict[str, str] | None = None, file: str = "docker-compose.yml") -> dict:
    """The compose file as `docker compose` reads it with `env` (the required secrets by default)."""
    return yaml.safe_load(interpolate((COMPOSE_DIR / file).read_text(), REQUIRED_ENV if env is None else env))


COMPOSE = compose()
MESHAI_COMPOSE = [*SERVICES, "orchestrator"]


# -- every file parses -----------------------------------------------------------------------------------------


def test_every_yaml_file_under_deploy_parses():
    files = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
    assert len(files) >= 10
    for path in files:
        assert load_yaml_docs(path), f"{path.relative_to(ROOT)} is empty"


# -- Dockerfiles -----------------------------------------------------------------------------------------------


def test_one_dockerfile_builds_every_image_as_a_target():
    names = stages(dockerfile(IMAGES))
    assert set(SERVICES) <= set(names), f"targets: {sorted(names)}"
    assert not list(ROOT.glob("services/*/Dockerfile")), "one Dockerfile (deploy/images/Dockerfile) builds them all"
    first_from = next(i for i, (ins, _) in enumerate(dockerfile(IMAGES)) if ins == "FROM")
    assert ("ARG", "BASE_IMAGE=python:3.11-slim") in dockerfile(IMAGES)[:first_from]


@pytest.mark.parametrize("svc", SERVICES)
def test_dockerfile_runs_the_service_module_as_non_root(svc):
    final = target(svc)
    users = [args for ins, args in final if ins == "USER"]
    assert users, "the runtime stage sets no USER"
    assert users[-1].split(":")[0] == "10001", f"runs as {users[-1]}"
    cmd = [args for ins, args in final if ins == "CMD"]
    assert cmd and yaml.safe_load(cmd[-1]) == ["python", "-m", f"meshai_{svc}"], cmd
    assert (ROOT / "services" / svc / f"meshai_{svc}" / "__main__.py").is_file(), f"meshai_{svc}/__main__.py"
    assert any(ins == "HEALTHCHECK" for ins, _ in final), "no HEALTHCHECK"


@pytest.mark.parametrize("svc", SERVICES)
def test_dockerfile_builds_in_stages_and_ships_no_toolchain(svc):
    final = target(svc)
    assert final[0] == ("FROM", "${BASE_IMAGE} AS base"), "the runtime starts from the base image, not a build stage"
    final_runs = " ".join(args for ins, args in final if ins == "RUN")
    for tool in ("build-essential", "cmake", "grpcio-tools", "venv.py"):
        assert tool not in final_runs, f"{tool} in the runtime stage"
    assert not any(ins == "ADD" for ins, _ in dockerfile(IMAGES)), "use COPY (ADD fetches URLs and unpacks archives)"
    # This service's extra, then the project (protos generated first) from the read-only source tree.
    runs = [args for ins, args in build_stage(svc) if ins == "RUN"]
    assert any(re.search(rf"meshai-venv\.py deps {svc}\b", r) for r in runs), f"does not install .[{svc}]"
    assert any("meshai-venv.py project" in r and "from=src" in r for r in runs)
    venv = (ROOT / "deploy/images/venv.py").read_text()
    assert venv.index('"protos/generate.py"') < venv.index('"install", "--no-deps", "."')
    # Copied sources exist and are not excluded by .dockerignore (a "!" line lets one back in).
    ignore = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for ins, args in dockerfile(IMAGES):
        if ins == "COPY" and "--from=" not in args:
            for src in args.split()[:-1]:
                top = src.split("/")[0]
                assert (ROOT / src).exists() and src not in ignore, f"COPY {src}"
                assert top not in ignore or f"!{src}" in ignore, f"COPY {src}: .dockerignore leaves it out"


@pytest.mark.parametrize("svc", SERVICES)
def test_dockerfile_listens_where_deployments_expect(svc):
    final = target(svc)
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
    assert env_problems(list(env), f"deploy/images/Dockerfile {svc}") == []


def test_trainer_takes_a_cuda_base_and_a_torch_index():
    instrs = dockerfile(IMAGES)
    assert all(args.split()[0] in {"${BASE_IMAGE}", "scratch", *stages(instrs)} for ins, args in instrs if ins == "FROM")
    build = build_stage("trainer")
    args = dict(a.split("=", 1) for ins, a in build if ins == "ARG" and "=" in a)
    assert args["TORCH_INDEX_URL"].endswith("/whl/cpu")
    assert any('--torch-index "${TORCH_INDEX_URL}"' in a for ins, a in build if ins == "RUN")


def test_quantizer_image_carries_the_converter():
    runs = " ".join(a for ins, a in build_stage("quantizer") if ins == "RUN")
    assert "meshai_quantizer.converter --cache-dir /opt/meshai/llama.cpp" in runs
    final = target("quantizer")
    assert ("COPY", "--from=quantizer-build /opt/meshai/llama.cpp /opt/meshai/llama.cpp") in final
    assert dockerfile_env(final)["MESHAI_CONVERTER_DIR"] == "/opt/meshai/llama.cpp"


@pytest.mark.parametrize("svc", ["quantizer", "evaluator", "gateway", "trainer"])
def test_llama_cpp_and_torch_images_ship_the_openmp_runtime(svc):
    # llama.cpp's CPU backend and torch's CPU kernels link libgomp.so.1, which python:3.11-slim lacks.
    assert any(ins == "RUN" and "libgomp1" in a for ins, a in target(svc))


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
    assert build["dockerfile"] == "deploy/images/Dockerfile" and build["target"] == svc


def test_compose_env_names_are_documented():
    for name in MESHAI_COMPOSE:
        assert env_problems(list(COMPOSE["services"][name]["environment"]), f"compose {name}") == []


def test_compose_publishes_only_the_gateway_on_11434():
    services = COMPOSE["services"]
    assert services["gateway"]["ports"] == [f"127.0.0.1:{HTTP_PORT}:{HTTP_PORT}"], "loopback:11434 by default"
    for name in [*WORKERS, "orchestrator", "bucket-init"]:
        assert not services[name].get("ports"), f"{name} publishes ports"
    assert all(p.startswith("127.0.0.1:") for p in services["minio"].get("ports", [])), "console off-host"


def test_compose_gateway_bind_address_and_host_port_are_configurable():
    # A Mesh-Master host may already run Ollama on 11434: the gateway moves, the container port stays.
    env = REQUIRED_ENV | {"MESHAI_GATEWAY_BIND": "127.0.0.2", "MESHAI_GATEWAY_PORT": "11435"}
    moved = compose(env)["services"]
    assert compose_ports(moved["gateway"]) == [("11435", str(HTTP_PORT))]
    assert moved["gateway"]["ports"][0].startswith("127.0.0.2:")
    # The orchestrator prints the address Mesh-Master should use: the moved one.
    assert moved["orchestrator"]["environment"]["MESHAI_GATEWAY_URL"] == "http://localhost:11435"
    with pytest.raises(ValueError, match="MESHAI_S3_SECRET_KEY"):
        compose({"MESHAI_S3_ACCESS_KEY": "meshai"})


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


# -- the checkers shared with test_k8s_manifests.py can fail ---------------------------------------------------


def test_checkers_reject_what_they_must():
    good = load_yaml_docs(DEPLOY / "k8s/base/data.yaml")[0]
    assert pod_problems(good) == [] and probe_problems(good) == []
    bad = yaml.safe_load(yaml.safe_dump(good))
    pod = pod_spec(bad)
    pod["securityContext"]["runAsUser"] = 0
    pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    pod["containers"][0]["livenessProbe"] = {"tcpSocket": {"port": 8080}}
    del pod["containers"][0]["readinessProbe"]
    assert len(pod_problems(bad)) == 2 and probe_problems(bad)
    pod["containers"][0]["readinessProbe"] = {"grpc": {"port": 50051}}
    assert probe_problems(bad) == ["Deployment/data/data: livenessProbe reaches port 8080, the service listens on "
                                   "[50051]"]
    assert env_problems(["MESHAI_S3_ENDPIONT", "MESHAI_LISTEN", "SECRET_THING"], "x") == [
        "x: MESHAI_S3_ENDPIONT is not a documented variable", "x: unexpected variable SECRET_THING"]


def test_compose_mlflow_is_an_optional_profile_on_loopback_that_the_trainer_can_use():
    services = COMPOSE["services"]
    mlflow = services["mlflow"]
    assert mlflow["profiles"] == ["mlflow"], "tracking is opt-in"
    assert all(p.startswith("127.0.0.1:") for p in mlflow["ports"])
    assert services["trainer"]["environment"]["MESHAI_MLFLOW_TRACKING_URI"] in ("", None)  # off unless .env sets it
    runs = " ".join(a for ins, a in build_stage("trainer") if ins == "RUN")
    assert "deps trainer mlflow" in runs, "the trainer image must carry the mlflow client"
