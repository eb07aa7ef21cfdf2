"""The embedded base's dequantized copy in the cache: the very weights the GGUF gives, read instead of it."""

from __future__ import annotations

import pytest

SPEC = "embedded:smollm2"


@pytest.mark.slow  # dequantizes the embedded GGUF twice (~35 s each)
def test_the_cached_copy_holds_the_weights_and_tokenizer_the_gguf_gives(tmp_path, monkeypatch):
    import torch

    from meshai_trainer import model as model_mod

    monkeypatch.setenv("MESHAI_CACHE_DIR", str(tmp_path))
    cached, cached_tok = model_mod.load_base(SPEC)  # writes <cache>/bases/<key>-float32 once
    (folder,) = (tmp_path / "bases").iterdir()
    assert folder.name.endswith("-float32") and (folder / "config.json").is_file()
    assert not [p for p in (tmp_path / "bases").iterdir() if p.name.startswith(".")]  # no temporary left

    gguf, gguf_tok = model_mod._load(SPEC, *model_mod._source(SPEC))
    a, b = gguf.state_dict(), cached.state_dict()
    assert a.keys() == b.keys()
    assert all(b[k].dtype == torch.float32 and torch.equal(a[k], b[k]) for k in a)
    text = "<|im_start|>user\nhow do i list nodes? /nodes<|im_end|>"
    assert gguf_tok(text)["input_ids"] == cached_tok(text)["input_ids"]
    assert gguf_tok.chat_template == cached_tok.chat_template


def test_a_cache_that_cannot_be_written_falls_back_to_the_gguf(monkeypatch):
    from meshai_trainer import model as model_mod

    def read_only(spec):
        raise PermissionError(13, "Permission denied", "/cache/bases")

    loaded = []
    monkeypatch.setattr(model_mod, "embedded_folder", read_only)
    monkeypatch.setattr(model_mod, "_load", lambda spec, where, kwargs, *rest: loaded.append((where, kwargs)))
    model_mod.load_base(SPEC)
    ((where, kwargs),) = loaded
    assert kwargs["gguf_file"].endswith(".gguf") and where == str(model_mod.embedded_gguf(SPEC).parent)
