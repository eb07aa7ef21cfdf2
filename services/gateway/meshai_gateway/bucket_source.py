"""Serve whatever is promoted in the bucket: follows `models/<name>/current.json` (see meshai_common.registry).

A new pointer is downloaded into a local cache named by sha256 and verified before the gateway may load it;
a corrupt or missing object raises, and the gateway keeps serving the model it has.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from meshai_common.modelfile import Modelfile, parse_modelfile
from meshai_common.registry import check_model_name, current, pointer_key
from meshai_common.store import ArtifactStore
from meshai_gateway.model_source import ModelInfo, ModelSource, Progress, check_gguf

KEEP_VERSIONS = 2  # the model being served and the one before it (a swap may still be finishing)
PROGRESS_EVERY_S = 0.25  # pull status lines while downloading: about four a second, as Ollama sends them


class BucketSource(ModelSource):
    fetches = True

    def __init__(self, store: ArtifactStore, name: str, cache_dir: Path, poll_interval_s: float | None = 15.0) -> None:
        self.store = store
        self.name = check_model_name(name)
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.poll_interval_s = poll_interval_s
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"s3://{self.store.bucket}/{pointer_key(self.name)}"

    def current(self, progress: Progress | None = None) -> ModelInfo:
        report = progress or (lambda _status: None)
        with self._lock:  # one download at a time, even if a refresh races the poller
            ptr = current(self.store, self.name)
            report({"status": "pulling manifest"})
            gguf = ptr["gguf"]
            path = self.cache_dir / f"{gguf['sha256']}.gguf"
            self._fetch(gguf, path, report)
            check_gguf(path)
            modelfile = Modelfile()
            if ptr.get("modelfile"):
                mf = ptr["modelfile"]
                mf_path = self.cache_dir / f"{mf['sha256']}.Modelfile"
                self._fetch(mf, mf_path, report)
                modelfile = parse_modelfile(mf_path.read_text(encoding="utf-8"), source=mf["key"])
            self._prune(keep=path)
            return ModelInfo(
                name=self.name, path=path, sha256=gguf["sha256"], size=int(gguf["size"]),
                modified_at=float(ptr.get("promoted_unix") or 0.0), modelfile=modelfile,
                run_id=ptr.get("run_id", ""),
                extra={"source": self.describe(), "gguf_key": gguf["key"], "overall": ptr.get("overall")},
            )

    def _fetch(self, ref: dict[str, Any], path: Path, report: Progress) -> None:
        """Download a pointer's object into the cache unless it is there; Ollama-style status while doing so."""
        sha, total = ref["sha256"], int(ref["size"])
        line = {"status": f"pulling {sha[:12]}", "digest": f"sha256:{sha}", "total": total}
        if path.exists():
            report(line | {"completed": total})
            return
        last = 0.0

        def on_bytes(done: int, size: int) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY_S or done >= size:
                last = now
                report(line | {"total": size, "completed": done})

        report(line | {"completed": 0})
        self.store.get_file(ref["key"], path, expected_sha256=sha, progress=on_bytes)
        report({"status": "verifying sha256 digest"})  # get_file has checked it by the time it returns

    def _prune(self, keep: Path) -> None:
        versions = sorted(self.cache_dir.glob("*.gguf"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in [p for p in versions if p != keep][KEEP_VERSIONS - 1 :]:
            old.unlink(missing_ok=True)
