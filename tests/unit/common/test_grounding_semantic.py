"""Semantic grounding (catalog-v6): sentence vectors from all-MiniLM-L6-v2 through llama.cpp, fused with the
lexical score. The model tests load the real embedding GGUF (`make install` converts it) and are marked slow."""

from __future__ import annotations

import pytest

from meshai_common import grounding
from meshai_common.errors import Unavailable
from meshai_common.grounding import build_index, semantic
from meshai_common.grounding.index import embed_text


@pytest.fixture
def no_cached_embedder():
    semantic.embedder.cache_clear()
    grounding._index.cache_clear()
    yield
    semantic.embedder.cache_clear()
    grounding._index.cache_clear()


def test_a_missing_embedding_model_is_refused_when_the_model_loads(tmp_path, monkeypatch, no_cached_embedder):
    from meshai_common.inference.core import resolve_grounder

    monkeypatch.setenv("MESHAI_EMBEDDER_GGUF", str(tmp_path / "nope.gguf"))
    with pytest.raises(Unavailable, match=r"MESHAI_EMBEDDER_GGUF=.*nope.gguf: no such file"):
        resolve_grounder("catalog-v6")
    monkeypatch.delenv("MESHAI_EMBEDDER_GGUF")
    monkeypatch.setenv("MESHAI_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(Unavailable, match=r"all-minilm-l6-v2-f16.gguf.*python -m meshai_quantizer.embedder"):
        semantic.embedder_path()
    (tmp_path / "embedder").mkdir()
    (tmp_path / "embedder" / semantic.EMBEDDER_FILE).write_bytes(b"GGUF")
    assert semantic.embedder_path() == tmp_path / "embedder" / semantic.EMBEDDER_FILE  # where the converter writes
    assert resolve_grounder("catalog-v5") is not None  # a lexical model needs none


def test_documents_are_embedded_as_words():
    assert embed_text("tell {name} {msg}  now") == "tell name msg now"
    docs = build_index().docs
    assert all(d.text for d in docs)  # every document has a text to embed, the catalog's included


def test_only_the_latest_vector_files_are_kept(tmp_path):
    import os

    for i in range(semantic.VECTOR_FILES + 3):
        (tmp_path / f"{i:02d}.npy").write_bytes(b"x")
        os.utime(tmp_path / f"{i:02d}.npy", (1000 + i, 1000 + i))
    (tmp_path / "00.77.tmp.npy").write_bytes(b"x")  # another process's file being written
    os.utime(tmp_path / "00.77.tmp.npy", (1, 1))
    semantic._prune(tmp_path)
    left = sorted(p.name for p in tmp_path.glob("*.npy"))
    assert left == ["00.77.tmp.npy", *[f"{i:02d}.npy" for i in range(3, semantic.VECTOR_FILES + 3)]]


@pytest.mark.slow
def test_vectors_are_unit_length_cached_on_disk_and_the_same_in_a_new_embedder(tmp_path, monkeypatch):
    import numpy as np

    path = semantic.embedder_path()
    (tmp_path / path.name).symlink_to(path)
    first = semantic.Embedder(tmp_path / path.name)
    texts = ["list the nodes", "read my mail", "what is snr"]
    vectors = first.embed_cached(texts)
    assert vectors.shape == (3, 384) and np.allclose((vectors**2).sum(axis=1), 1.0, atol=1e-4)
    assert len(list((tmp_path / "vectors").glob("*.npy"))) == 1
    second = semantic.Embedder(tmp_path / path.name)
    monkeypatch.setattr(second, "embed", lambda _texts: pytest.fail("read from the cache, not embedded"))
    assert np.allclose(second.embed_cached(texts), vectors)
    assert float(vectors[0] @ first.embed_question("show me the node list")) > float(vectors[1] @ first.embed_question(
        "show me the node list"))
