"""The Python port of Ollama's Modelfile parser agrees with Ollama's own tests (parser/parser_test.go at the
commit named in ollama_modelfile_grammar.py): the cases below are copied from there, expectations unchanged."""

from __future__ import annotations

import pytest
from ollama_modelfile_grammar import (
    Command,
    CreateError,
    MissingFrom,
    ParserError,
    UnexpectedEOF,
    check_create,
    parse_file,
)

LLAMA_TEMPLATE = ("{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}"
                  "{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}<|eot_id|>{{ end }}"
                  "<|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}<|eot_id|>")


def test_parse_file_file() -> None:  # TestParseFileFile
    text = (f'\nFROM model1\nADAPTER adapter1\nLICENSE MIT\nPARAMETER param1 value1\nPARAMETER param2 value2\n'
            f'TEMPLATE """{LLAMA_TEMPLATE}"""    \n')
    assert parse_file(text) == [Command("model", "model1"), Command("adapter", "adapter1"),
                                Command("license", "MIT"), Command("param1", "value1"),
                                Command("param2", "value2"), Command("template", LLAMA_TEMPLATE)]


def test_parse_file_trim_space() -> None:  # TestParseFileTrimSpace
    text = (f'\nFROM "     model 1"\nADAPTER      adapter3\nLICENSE "MIT       "\nPARAMETER param1        value1\n'
            f'PARAMETER param2    value2\nTEMPLATE """   {LLAMA_TEMPLATE}   """    \n')
    assert parse_file(text) == [Command("model", "     model 1"), Command("adapter", "adapter3"),
                                Command("license", "MIT       "), Command("param1", "value1"),
                                Command("param2", "value2"), Command("template", f"   {LLAMA_TEMPLATE}   ")]


@pytest.mark.parametrize(("text", "expected"), [  # TestParseFileFrom
    ('FROM "FOO  BAR  "', [Command("model", "FOO  BAR  ")]),
    ('FROM "FOO BAR"\nPARAMETER param1 value1', [Command("model", "FOO BAR"), Command("param1", "value1")]),
    ("FROM     FOOO BAR    ", [Command("model", "FOOO BAR")]),
    ("FROM /what/is/the path ", [Command("model", "/what/is/the path")]),
    ("FROM llama3:7b-instruct-q4_K_M", [Command("model", "llama3:7b-instruct-q4_K_M")]),
    ("PARAMETER param1 value1\nFROM foo", [Command("param1", "value1"), Command("model", "foo")]),
    ("PARAMETER what the \nFROM lemons make lemonade ",
     [Command("what", "the"), Command("model", "lemons make lemonade")]),
])
def test_parse_file_from(text: str, expected: list[Command]) -> None:
    assert parse_file(text) == expected


@pytest.mark.parametrize("text", ["", "PARAMETER param1 value1"])
def test_missing_from(text: str) -> None:
    with pytest.raises(MissingFrom):
        parse_file(text)


@pytest.mark.parametrize("text", [
    "\nFROM foo\nPARAMETER param1\n",  # TestParseFileParametersMissingValue
    "\nFROM foo\nMESSAGE system\n", "\nFROM foo\nMESSAGE system",  # TestParseFileMessages
    '\nFROM foo\nSYSTEM """This is a multiline system.""\n\t\t\t', '\nFROM foo\nSYSTEM "\n\t\t\t',  # Quoted
])
def test_unexpected_eof(text: str) -> None:
    with pytest.raises(UnexpectedEOF):
        parse_file(text)


def test_bad_command_names_its_line() -> None:  # TestParseFileBadCommand
    with pytest.raises(ParserError) as err:
        parse_file("\nFROM foo\nBADCOMMAND param1 value1\n")
    assert err.value.line == 3


def test_messages() -> None:  # TestParseFileMessages
    text = ("\nFROM foo\nMESSAGE system You are a file parser. Always parse things.\nMESSAGE user Hey there!\n"
            "MESSAGE assistant Hello, I want to parse all the things!\n")
    assert parse_file(text) == [Command("model", "foo"),
                                Command("message", "system: You are a file parser. Always parse things."),
                                Command("message", "user: Hey there!"),
                                Command("message", "assistant: Hello, I want to parse all the things!")]
    assert parse_file('\nFROM foo\nMESSAGE system """\nYou are a multiline file parser. Always parse things.\n"""\n'
                      '\t\t\t')[1] == Command("message", "system: \nYou are a multiline file parser. "
                                                         "Always parse things.\n")
    with pytest.raises(ParserError) as err:
        parse_file("\nFROM foo\nMESSAGE badguy I'm a bad guy!\n")
    assert err.value.line == 3


@pytest.mark.parametrize(("text", "system"), [  # TestParseFileQuoted
    ('\nFROM foo\nSYSTEM """\nThis is a\nmultiline system.\n"""\n\t\t\t', "\nThis is a\nmultiline system.\n"),
    ('\nFROM foo\nSYSTEM """\nThis is a\nmultiline system."""\n\t\t\t', "\nThis is a\nmultiline system."),
    ('\nFROM foo\nSYSTEM """This is a\nmultiline system."""\n\t\t\t', "This is a\nmultiline system."),
    ('\nFROM foo\nSYSTEM """This is a multiline system."""\n\t\t\t', "This is a multiline system."),
    ('\nFROM foo\nSYSTEM """\nThis is a multiline system with "quotes".\n"""\n',
     '\nThis is a multiline system with "quotes".\n'),
    ('\nFROM foo\nSYSTEM """"""\n', ""),
    ('\nFROM foo\nSYSTEM ""\n', ""),
    ("\nFROM foo\nSYSTEM \"'\"\n", "'"),
    ('\nFROM foo\nSYSTEM """\'\'"\'""\'""\'"\'\'\'\'\'""\'""\'"""\n', '\'\'"\'""\'""\'"\'\'\'\'\'""\'""\''),
])
def test_quoted(text: str, system: str) -> None:
    assert parse_file(text) == [Command("model", "foo"), Command("system", system)]


@pytest.mark.parametrize(("line", "name", "value"), [  # TestParseFileParameters (a selection)
    ("num_ctx 1", "num_ctx", "1"), ("top_p 1.0", "top_p", "1.0"), ("use_mmap true", "use_mmap", "true"),
    ("stop ### User:", "stop", "### User:"), ("stop ### User: ", "stop", "### User:"),
    ('stop "### User:"', "stop", "### User:"), ('stop "### User: "', "stop", "### User: "),
    ('stop """### User:"""', "stop", "### User:"), ('stop """### User:\n"""', "stop", "### User:\n"),
    ("stop <|eot_id|>", "stop", "<|eot_id|>"),
])
def test_parameters(line: str, name: str, value: str) -> None:
    assert parse_file(f"FROM foo\nPARAMETER {line}\n") == [Command("model", "foo"), Command(name, value)]


def test_comments_and_bom() -> None:  # TestParseFileComments; BOMOverride
    assert parse_file("\n# comment\nFROM foo\n\t") == [Command("model", "foo")]
    assert parse_file(b"\xef\xbb\xbfFROM foo\n") == [Command("model", "foo")]
    assert parse_file("FROM foo\n".encode("utf-16-le").join([b"\xff\xfe", b""])) == [Command("model", "foo")]


def test_create_request_checks(tmp_path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"GGUF" + bytes(64))
    mf = tmp_path / "Modelfile"
    mf.write_text("FROM ./m.gguf\nPARAMETER num_ctx 1024\nPARAMETER temperature 0.7\nPARAMETER mirostat 1\n")
    req = check_create(mf)
    assert req.files["model"] == tmp_path / "m.gguf" and req.parameters["num_ctx"] == ["1024"]
    assert req.warnings == ["warning: parameter mirostat is deprecated"]
    for body, why in [("FROM ./absent.gguf\n", "does not exist"), ("FROM ./m.gguf\nPARAMETER chunk_bytes 160\n",
                      "unknown parameter 'chunk_bytes'"), ("FROM ./m.gguf\nPARAMETER num_ctx 0.5\n", "invalid int"),
                      ("FROM ./m.gguf\nPARAMETER top_p high\n", "invalid float"),
                      ("FROM ./m.gguf\nREQUIRES latest\n", "semver")]:
        mf.write_text(body)
        with pytest.raises(CreateError, match=why):
            check_create(mf)
