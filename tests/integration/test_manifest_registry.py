from __future__ import annotations

import pytest

from meshai_common.errors import InvalidInput, NotFound
from meshai_common.manifest import lineage, write_manifest
from meshai_common.registry import current, list_models, promote


def test_lineage_is_rebuilt_from_manifests(store, tmp_path):
    ds = store.put_json({"rows": 3}, "runs/r/data/train.jsonl")
    write_manifest(store, "r", "data", inputs=[], outputs=[ds], config={"seed": 1}, timings={"total": 0.1})
    merged = store.put_json({"w": 1}, "runs/r/train/merged/model.safetensors")
    write_manifest(store, "r", "train", inputs=[ds], outputs=[merged], config={}, timings={},
                   parents={"data": "runs/r/data/manifest.json"})
    chain = lineage(store, "r")
    assert [m["stage"] for m in chain] == ["data", "train"]
    assert chain[1]["inputs"][0]["sha256"] == ds.sha256 == chain[0]["outputs"][0]["sha256"]
    assert chain[0]["code_version"]


def test_promote_and_read_pointer(store):
    with pytest.raises(NotFound, match="model 'mesh-ai' not found"):
        current(store, "mesh-ai")
    gguf = store.put_bytes(b"GGUF...", "runs/r/quantize/model-Q4_K_M.gguf")
    promote(store, "mesh-ai", run_id="r", gguf=gguf, overall=71.5)
    ptr = current(store, "mesh-ai")
    assert ptr["gguf"] == {"key": gguf.key, "sha256": gguf.sha256, "size": gguf.size}
    assert list_models(store) == ["mesh-ai"]
    assert len(store.list("models/mesh-ai/history/")) == 1


def test_promote_refuses_a_mismatched_checksum(store):
    gguf = store.put_bytes(b"GGUF...", "runs/r/quantize/m.gguf")

    class Ref:
        key, sha256, size = gguf.key, "f" * 64, gguf.size

    with pytest.raises(InvalidInput, match="refusing to promote"):
        promote(store, "mesh-ai", run_id="r", gguf=Ref())
    assert not store.exists("models/mesh-ai/current.json")
