"""The Modelfile `meshai models export` writes is one `ollama create` accepts (checked with the port of Ollama's
parser in ollama_modelfile_grammar.py) and carries the stored Modelfile's TEMPLATE, SYSTEM and PARAMETERs."""

from __future__ import annotations

from pathlib import Path

import pytest
from ollama_modelfile_grammar import check_create, parse_file

from meshai_common.errors import InvalidInput
from meshai_common.modelfile import default_modelfile, parse_modelfile
from meshai_orchestrator.models_cli import ollama_modelfile

STORED = '''# meshai: grounding=catalog-v1
FROM ./mesh-ai-Q4_K_M.gguf
TEMPLATE """<|im_start|>system
{{ .System }}<|im_end|>
<|im_start|>user
{{ .Prompt }}<|im_end|>
<|im_start|>assistant
"""
SYSTEM """You are Mesh-AI. Say "/help" when unsure.
Reply briefly."""
PARAMETER num_ctx 1024
PARAMETER temperature 0.7
PARAMETER stop "<|im_end|>"
PARAMETER stop "<|im_start|>"
PARAMETER chunk_bytes 160
PARAMETER max_chunks 2
'''


def export_to(tmp_path: Path, text: str) -> Path:
    (tmp_path / "model.gguf").write_bytes(b"GGUF" + bytes(32))
    (tmp_path / "Modelfile").write_text(text)
    return tmp_path / "Modelfile"


def test_export_keeps_template_system_parameters(tmp_path: Path) -> None:
    text = ollama_modelfile(STORED, "model.gguf", "runs/r1/quantize/Modelfile")
    req = check_create(export_to(tmp_path, text))
    stored = parse_modelfile(STORED)
    assert req.files["model"] == tmp_path / "model.gguf"
    assert req.template == stored.template and req.system == stored.system
    assert req.parameters == {"num_ctx": ["1024"], "temperature": ["0.7"], "stop": ["<|im_end|>", "<|im_start|>"]}
    # The gateway reads the exported file as it read the stored one, less the parameters only it knows.
    again = parse_modelfile(text)
    assert again.extensions == {"grounding": "catalog-v1"} and again.system == stored.system
    assert again.parameters == {k: v for k, v in stored.parameters.items() if k not in {"chunk_bytes", "max_chunks"}}
    assert "# gateway only (Ollama has no such parameter): PARAMETER chunk_bytes 160" in text
    assert [c.name for c in parse_file(text)][0] == "model"


def test_without_a_stored_modelfile_the_default_is_written(tmp_path: Path) -> None:
    text = ollama_modelfile(None, "model.gguf")
    assert text == default_modelfile("./model.gguf")
    req = check_create(export_to(tmp_path, text))
    assert req.parameters["num_predict"] == ["80"] and req.system


def test_the_quantizers_modelfile_round_trips(tmp_path: Path) -> None:
    stored = default_modelfile("./x.gguf", extensions={"grounding": "catalog-v1"})
    req = check_create(export_to(tmp_path, ollama_modelfile(stored, "model.gguf")))
    assert req.system == parse_modelfile(stored).system


def test_unquotable_text_is_refused() -> None:
    with pytest.raises(InvalidInput, match='Modelfile: SYSTEM contains'):
        ollama_modelfile('FROM x\nSYSTEM "say \\"\\"\\" now"\n', "model.gguf")
