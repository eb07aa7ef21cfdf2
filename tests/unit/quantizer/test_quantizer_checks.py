from __future__ import annotations

import pytest

from meshai_common.errors import InvalidInput
from meshai_common.modelfile import default_modelfile, parse_modelfile
from meshai_quantizer.quantize import check_hf_dir, check_qtype


def test_qtypes():
    assert check_qtype("q4_k_m") == "Q4_K_M"
    assert check_qtype("") == "Q4_K_M"
    with pytest.raises(InvalidInput, match="unknown quantization 'Q2'"):
        check_qtype("Q2")


def test_hf_dir_names_what_is_missing(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(InvalidInput, match=r"missing tokenizer.json, \*.safetensors"):
        check_hf_dir(tmp_path)
    with pytest.raises(InvalidInput, match="does not exist"):
        check_hf_dir(tmp_path / "nope")


def test_default_modelfile_round_trips():
    mf = parse_modelfile(default_modelfile("./m.gguf"))
    assert mf.from_ == "./m.gguf" and mf.parameters["num_predict"] == 80 and "Mesh-AI" in mf.system
