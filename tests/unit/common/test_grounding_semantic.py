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


# -- catalog-v9: the embedding model tuned on the index's own documents ---------------------------------------


def test_catalog_v9_is_v8_ranked_with_the_tuned_model():
    v8, v9 = grounding.VERSIONS["catalog-v8"], grounding.VERSIONS["catalog-v9"]
    assert v9.tuned and not v8.tuned and v9.semantic
    assert {k: v for k, v in vars(v9).items() if k != "tuned"} == {k: v for k, v in vars(v8).items() if k != "tuned"}


def test_the_tuning_documents_are_keyed_phrasings_each_once():
    pairs = grounding.tuning_documents()
    assert len(pairs) == len(set(pairs)) > 1000
    keys = {k for k, _ in pairs}
    assert "" not in keys  # small talk is no key to pull phrasings together around
    assert {"/nodes", "/c", "relay", "snr#0"} <= keys
    # a fact's asks are phrasings of its item, not of its topic: the line served is the item's answer, so the
    # tuning must keep "what is snr" and "how low can snr go" apart
    assert {"snr#0", "snr#1", "snr#2"} <= keys and "snr" not in keys
    assert all("{" not in text for _, text in pairs)  # slots as words, as the index embeds them


def test_the_tuned_model_is_named_by_the_documents_and_the_recipe(monkeypatch):
    grounding.tuning_digest.cache_clear()
    try:
        digest = grounding.tuning_digest()
        assert len(digest) == 16 and digest == grounding.tuning_digest()
        real = grounding.tuning_documents()
        grounding.tuning_digest.cache_clear()
        monkeypatch.setattr(grounding, "tuning_documents", lambda: [*real, ("/nodes", "who is on the air")])
        assert grounding.tuning_digest() != digest  # a new phrasing in the bank asks for a new copy
        grounding.tuning_digest.cache_clear()
        monkeypatch.setattr(grounding, "tuning_documents", lambda: real)
        monkeypatch.setitem(semantic.TUNING, "epochs", semantic.TUNING["epochs"] + 1)
        assert grounding.tuning_digest() != digest
    finally:
        grounding.tuning_digest.cache_clear()


def test_a_missing_tuned_model_is_refused_naming_the_command_that_makes_it(tmp_path, monkeypatch,
                                                                          no_cached_embedder):
    from meshai_common.inference.core import resolve_grounder

    monkeypatch.setenv("MESHAI_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(Unavailable, match=r"catalog-v9 needs .*all-minilm-l6-v2-mesh-abc-f16.gguf.*"
                                          r"python -m meshai_quantizer.embedder"):
        semantic.tuned_embedder_path("abc")
    monkeypatch.setattr(grounding, "tuning_digest", lambda: "abc")
    with pytest.raises(Unavailable, match="catalog-v9 needs"):
        resolve_grounder("catalog-v9")
    (tmp_path / "embedder").mkdir()
    (tmp_path / "embedder" / "all-minilm-l6-v2-mesh-abc-f16.gguf").write_bytes(b"GGUF")
    assert semantic.tuned_embedder_path("abc") == tmp_path / "embedder" / "all-minilm-l6-v2-mesh-abc-f16.gguf"


@pytest.mark.slow
def test_tuning_pulls_a_keys_phrasings_together():
    from meshai_quantizer.embedder import TorchEmbedder, package_weights, tune

    pairs = [(key, text) for key, text in grounding.tuning_documents() if key in ("/blackjack", "/coinflip", "/games")]
    stock = TorchEmbedder(package_weights())
    tuned = tune(pairs, {"epochs": 2, "batch": 8})

    def margin(model) -> float:  # mean cosine to the key's other phrasings minus that to the other keys'
        vectors = model.embed_cached([t for _, t in pairs])
        sims = vectors @ vectors.T
        same = [sims[i, j] for i, (a, _) in enumerate(pairs) for j, (b, _) in enumerate(pairs) if i != j and a == b]
        other = [sims[i, j] for i, (a, _) in enumerate(pairs) for j, (b, _) in enumerate(pairs) if a != b]
        return float(sum(same) / len(same) - sum(other) / len(other))

    assert margin(tuned) > margin(stock) + 0.05


@pytest.mark.slow
def test_the_default_version_ranks_with_the_tuned_model_make_install_wrote():
    from meshai_common.grounding.index import TUNED_SEMANTIC_WEIGHT

    assert grounding.GROUNDING_VERSION == "catalog-v9"
    index = grounding._index(True, True)
    assert index.embedder.path.name == f"{semantic.TUNED_PREFIX}{grounding.tuning_digest()}-f16.gguf"
    assert index.semantic_weight == TUNED_SEMANTIC_WEIGHT and grounding._index(True).semantic_weight is None
    hits = grounding.version_hits("Question: how do i see who is on the mesh\nAnswer:", "catalog-v9")
    assert hits and hits[0].kind == "command"
