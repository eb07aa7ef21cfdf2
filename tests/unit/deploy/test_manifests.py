"""Invariants of the deployment files that matter to an operator (no Docker or cluster needed to check)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from meshai_common.config import ENV_HELP

ROOT = Path(__file__).resolve().parents[3]
SERVICES = ("data", "trainer", "quantizer", "evaluator", "gateway")
COMPOSE = yaml.safe_load((ROOT / "deploy/compose/docker-compose.yml").read_text())
K8S = ROOT / "deploy/k8s"
# Variables beyond ENV_HELP's required ones that services read.
OPTIONAL_ENV = {"MESHAI_S3_SECURE", "MESHAI_WORKDIR", "MESHAI_MODEL_NAME", "MESHAI_LOG_LEVEL", "MESHAI_GATEWAY_URL",
                "MESHAI_CODE_VERSION", "MESHAI_CONVERTER_DIR"}


def k8s_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("svc", SERVICES)
def test_dockerfile_runs_the_service_module_as_non_root(svc):
    text = (ROOT / "services" / svc / "Dockerfile").read_text()
    assert re.search(r"^USER 10001$", text, re.M)
    assert f'CMD ["python", "-m", "meshai_{svc}"]' in text
    assert (ROOT / "services" / svc / f"meshai_{svc}" / "__main__.py").is_file()
    assert "HEALTHCHECK" in text


def test_trainer_takes_a_cuda_base_as_build_argument():
    assert "ARG BASE_IMAGE=" in (ROOT / "services/trainer/Dockerfile").read_text()


def test_compose_services_are_hardened_and_healthchecked():
    services = COMPOSE["services"]
    for svc in SERVICES:
        spec = services[svc]
        assert spec["user"] == "10001" and spec["read_only"] is True and spec["cap_drop"] == ["ALL"]
        assert "healthcheck" in spec, svc
        for key in spec["environment"]:
            assert key in ENV_HELP or key in OPTIONAL_ENV or key.startswith("MESHAI_S3_"), key
    assert any(p.endswith(":11434:11434") for p in services["gateway"]["ports"])
    # Workers are reachable only on the compose network, not published on the host.
    assert all("ports" not in services[s] for s in ("data", "trainer", "quantizer", "evaluator"))


def test_kustomize_resources_exist_and_pods_are_hardened():
    for kust in K8S.rglob("kustomization.yaml"):
        for res in yaml.safe_load(kust.read_text()).get("resources", []):
            assert (kust.parent / res).exists(), f"{kust}: {res}"
    for path in (K8S / "base").glob("*.yaml"):
        for doc in k8s_docs(path):
            if doc.get("kind") not in {"Deployment", "StatefulSet", "Job"}:
                continue
            pod = doc["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
            for c in pod["containers"]:
                sc = c["securityContext"]
                assert sc["readOnlyRootFilesystem"] and sc["capabilities"]["drop"] == ["ALL"]
                if doc["kind"] != "Job":
                    assert "readinessProbe" in c and "livenessProbe" in c, c["name"]


def test_gpu_overlay_puts_the_trainer_on_gpus():
    text = (K8S / "overlays/gpu/kustomization.yaml").read_text()
    assert "nvidia.com/gpu: 1" in text and "name: trainer" in text
