"""Serve whatever is promoted in the bucket: follows `models/<name>/current.json` (see meshai_common.registry).

A new pointer is downloaded into a local cache named by sha256 and verified before the gateway may load it;
a corrupt or missing object raises, and the gateway keeps serving the model it has.
"""

from __future__ import annotations

import threading
from pathlib import Path

from meshai_common.modelfile import Modelfile, parse_modelfile
from meshai_common.registry import check_model_name, current, pointer_key
from meshai_common.store import ArtifactStore
from meshai_gateway.model_source import ModelInfo, ModelSource, check_gguf

KEEP_VERSIONS = 2  # the model being served and the one before it (a swap may still be finishing)


class BucketSource(ModelSource):
    def __init__(self, store: ArtifactStore, name: str, cache_dir: Path, poll_interval_s: float | None = 15.0) -> None:
        self.store = store
        self.name = check_model_name(name)
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.poll_interval_s = poll_interval_s
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"s3://{self.store.bucket}/{pointer_key(self.name)}"

    def current(self) -> ModelInfo:
        with self._lock:  # one download at a time, even if a refresh races the poller
            ptr = current(self.store, self.name)
            gguf = ptr["gguf"]
            path = self.cache_dir / f"{gguf['sha256']}.gguf"
            if not path.exists():
                self.store.get_file(gguf["key"], path, expected_sha256=gguf["sha256"])
            check_gguf(path)
            modelfile = Modelfile()
            if ptr.get("modelfile"):
                mf = ptr["modelfile"]
                mf_path = self.cache_dir / f"{mf['sha256']}.Modelfile"
                if not mf_path.exists():
                    self.store.get_file(mf["key"], mf_path, expected_sha256=mf["sha256"])
                modelfile = parse_modelfile(mf_path.read_text(encoding="utf-8"), source=mf["key"])
            self._prune(keep=path)
            return ModelInfo(
                name=self.name, path=path, sha256=gguf["sha256"], size=int(gguf["size"]),
                modified_at=float(ptr.get("promoted_unix") or 0.0), modelfile=modelfile,
                run_id=ptr.get("run_id", ""),
                extra={"source": self.describe(), "gguf_key": gguf["key"], "overall": ptr.get("overall")},
            )

    def _prune(self, keep: Path) -> None:
        versions = sorted(self.cache_dir.glob("*.gguf"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in [p for p in versions if p != keep][KEEP_VERSIONS - 1 :]:
            old.unlink(missing_ok=True)
