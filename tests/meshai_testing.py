"""Helpers shared by the test suites (conftest.py files are not importable by name: there are several)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from meshai_common.process import LoggedProcess

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "services" / "data" / "meshai_data" / "samples"


class ServiceProcess:
    """A service started as its own process (`python -m meshai_<name>`) on a free loopback port."""

    def __init__(self, name: str, env: dict[str, str], workdir: Path) -> None:
        from meshai_common.net import free_port

        self.name = name
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.log_path = workdir / f"{name}.log"
        extra = {"MESHAI_LISTEN": self.addr, "MESHAI_WORKDIR": str(workdir / "work"), "PYTHONUNBUFFERED": "1"}
        if name == "gateway":
            self.http_port = free_port()
            extra |= {"MESHAI_HTTP_LISTEN": f"127.0.0.1:{self.http_port}"}
        self._child = LoggedProcess([sys.executable, "-m", f"meshai_{name}"], self.log_path,
                                    env=os.environ | env | extra)
        self.proc = self._child.proc

    def wait_health(self, want: str = "SERVING", timeout: float = 60.0) -> str:
        from meshai_common.healthcheck import is_serving
        from meshai_common.waiting import WaitTimeout, wait_until

        status = ""

        def healthy() -> bool:
            nonlocal status
            _, status = is_serving(self.addr, timeout=2)
            return status == want

        def running() -> None:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}: {self.log()[-3000:]}")

        try:
            wait_until(healthy, timeout=timeout, what=f"{self.name} health", interval=0.2, check=running)
        except WaitTimeout:
            raise AssertionError(f"{self.name} health stayed {status!r}, wanted {want}: {self.log()[-3000:]}") from None
        return status

    def log(self) -> str:
        return self._child.log()

    def stop(self, timeout: float = 30.0) -> int:
        return self._child.stop(timeout=timeout)


def put_chat_jsonl(store: Any, key: str, rows: list[tuple[str, str]]) -> Any:
    """Question/answer pairs as a chat JSONL object in the bucket; its ObjectRef for a job request."""
    import json

    from meshai.v1 import jobs_pb2

    lines = [json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
             for q, a in rows]
    obj = store.put_bytes(("\n".join(lines) + "\n").encode(), key)
    return jobs_pb2.ObjectRef(key=obj.key, sha256=obj.sha256, size=obj.size)


def strict_schema(node: Any) -> Any:
    """A CRD schema with `additionalProperties: false` wherever it lists properties and does not keep unknown
    fields: a misspelled field fails here, as with `kubectl apply`'s strict field validation, instead of being
    pruned silently by the API server."""
    if isinstance(node, dict):
        out = {k: strict_schema(v) for k, v in node.items()}
        if "properties" in out and "additionalProperties" not in out \
                and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [strict_schema(v) for v in node]
    return node


def load_benchmark(path: Path, name: str | None = None) -> Any:
    """A benchmark script (services/*/benchmarks/*.py: a folder, not a package) loaded as a module, its folder
    on sys.path for its own imports."""
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    assert spec and spec.loader, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def right_suite_answer(area: str, item: dict, technical: dict[str, str]) -> str:
    """A right, short answer to an evaluation suite's item, worded as a person would (technical items: the
    caller's answer for the item's id)."""
    from meshai_common.meshmaster import load_catalog

    if area == "technical":
        return technical[item["id"]]
    if area == "hallucination":
        return f"There is no /{item['fake']} command. Send /help for the real ones."
    if item.get("relay") == "*":
        return "No command: DM me '<shortname> <message>' and I pass it on."
    if item.get("relay"):
        return f"DM me '{item['relay']} see you soon'; their next DM comes back to you."
    cmd = load_catalog().get(item["accept"][0])
    return f"Send {item['accept'][0]} (no slash)." if cmd is None else f"Send {cmd.usage}."
