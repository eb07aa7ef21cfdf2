"""Ollama's Modelfile grammar, ported line for line to Python to check exported Modelfiles in tests.

Follows github.com/ollama/ollama, commit fb30760996871fa9460115c753afd2c60d4ab0f7 (2026-08-21):
- parser/parser.go `ParseFile` and `parseRuneForState`: the rune-by-rune state machine (comments only at the
  start of a line, instruction names of letters, PARAMETER names of letters, digits and '_', MESSAGE roles,
  values ending at a newline only once their quotes are closed, `"..."` and `\"\"\"...\"\"\"` quoting, only
  printable runes kept, a FROM line required), with its errors: ParserError(line), unexpected EOF, no FROM;
- parser/parser.go `Modelfile.CreateRequest` as `ollama create NAME -f FILE` calls it (cmd/cmd.go, with the
  Modelfile's folder as the base of relative paths): FROM/ADAPTER/DRAFT paths, REQUIRES semver, and every
  other name a PARAMETER whose value api.FormatParams (api/types.go) must parse for that option's type.
The server-side steps after that (reading the GGUF, parsing TEMPLATE as a Go template) are not ported; the GGUF
magic is checked instead.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

NIL, NAME, VALUE, PARAMETER, MESSAGE, COMMENT = range(6)
ERR_INVALID_COMMAND = ('command must be one of "from", "license", "template", "system", "adapter", "draft", '
                       '"renderer", "parser", "parameter", "message", or "requires"')
ERR_INVALID_ROLE = 'message role must be one of "system", "user", or "assistant"'
COMMANDS = {"from", "license", "template", "system", "adapter", "draft", "renderer", "parser", "parameter",
            "message", "requires"}
# parser.go deprecatedParameters: accepted with a warning, then ignored.
DEPRECATED = {"penalize_newline", "low_vram", "f16_kv", "logits_all", "vocab_only", "use_mlock", "mirostat",
              "mirostat_tau", "mirostat_eta"}
# api/types.go Options and Runner: json tag -> Go kind as FormatParams switches on it.
OPTION_KINDS = {
    **dict.fromkeys(("num_keep", "seed", "num_predict", "top_k", "repeat_last_n", "num_ctx", "num_batch", "num_gpu",
                     "num_thread", "draft_num_predict", "main_gpu"), "int"),
    **dict.fromkeys(("top_p", "min_p", "typical_p", "temperature", "repeat_penalty", "presence_penalty",
                     "frequency_penalty"), "float"),
    "use_mmap": "bool",
    "stop": "strings",
}


class ParserError(Exception):
    def __init__(self, line: int, msg: str) -> None:
        super().__init__(f"(line {line}): {msg}")
        self.line = line


class UnexpectedEOF(Exception):
    pass


class MissingFrom(Exception):
    def __init__(self) -> None:
        super().__init__("no FROM line")


class CreateError(Exception):
    """What `ollama create` would refuse after parsing."""


@dataclass(frozen=True)
class Command:
    name: str
    args: str


def _is_alpha(r: str) -> bool:
    return "a" <= r <= "z" or "A" <= r <= "Z"


def _is_number(r: str) -> bool:
    return "0" <= r <= "9"


def _is_space(r: str) -> bool:
    return r in (" ", "\t")


def _is_newline(r: str) -> bool:
    return r in ("\r", "\n")


def _is_print(r: str) -> bool:
    """Go's strconv.IsPrint: letters, marks, numbers, punctuation, symbols and the ASCII space."""
    return r == " " or (r != "" and unicodedata.category(r)[0] in "LMNPS")


def _decode(data: bytes) -> str:
    """unicode.BOMOverride(UTF8 decoder): a BOM picks UTF-8/16 and is dropped; bad bytes become U+FFFD."""
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")):
        if data.startswith(bom):
            return data[len(bom):].decode(codec, "replace")
    return data.decode("utf-8", "replace")


def _parse_rune(r: str, cs: int) -> tuple[int, str, str | None]:
    """parseRuneForState: (next state, rune to keep or '', error: None, 'eof' or a message)."""
    if cs == NIL:
        if r == "#":
            return COMMENT, "", None
        if _is_space(r) or _is_newline(r):
            return NIL, "", None
        return NAME, r, None
    if cs == NAME:
        if _is_alpha(r):
            return NAME, r, None
        if _is_space(r):
            return VALUE, "", None
        return NIL, "", ERR_INVALID_COMMAND
    if cs == VALUE:
        if _is_newline(r) or _is_space(r):
            return NIL, r, None
        return VALUE, r, None
    if cs == PARAMETER:
        if _is_alpha(r) or _is_number(r) or r == "_":
            return PARAMETER, r, None
        if _is_space(r):
            return VALUE, "", None
        return NIL, "", "eof"
    if cs == MESSAGE:
        if _is_alpha(r):
            return MESSAGE, r, None
        if _is_space(r):
            return VALUE, "", None
        return NIL, "", "eof"
    if cs == COMMENT:
        return (NIL if _is_newline(r) else COMMENT), "", None
    return NIL, "", ""


def unquote(s: str) -> tuple[str, bool]:
    if len(s) >= 3 and s[:3] == '"""':
        if len(s) >= 6 and s[-3:] == '"""':
            return s[3:-3], True
        return "", False
    if len(s) >= 1 and s[0] == '"':
        if len(s) >= 2 and s[-1] == '"':
            return s[1:-1], True
        return "", False
    return s, True


def _trim_space(s: str) -> str:
    """strings.TrimSpace: Unicode white space at both ends."""
    return s.strip(" \t\n\v\f\r\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
                   "\u2028\u2029\u202f\u205f\u3000")


def parse_file(data: bytes | str) -> list[Command]:
    """ParseFile: the commands of a Modelfile, or ParserError / UnexpectedEOF / MissingFrom."""
    text = _decode(data.encode() if isinstance(data, str) else data)
    commands: list[Command] = []
    name = ""
    role = ""
    curr = NIL
    line = 1
    buf: list[str] = []
    for r in text:
        if _is_newline(r):
            line += 1
        nxt, r, err = _parse_rune(r, curr)
        if err == "eof":
            raise UnexpectedEOF("".join(buf))
        if err is not None:
            raise ParserError(line, err)
        if nxt != curr:
            if curr == NAME:
                word = "".join(buf)
                if word.lower() not in COMMANDS:
                    raise ParserError(line, ERR_INVALID_COMMAND)
                low = word.lower()
                if low == "from":
                    name = "model"
                elif low == "parameter":
                    nxt = PARAMETER
                elif low == "message":
                    nxt = MESSAGE
                    name = low
                else:
                    name = low
            elif curr == PARAMETER:
                name = "".join(buf)
            elif curr == MESSAGE:
                if "".join(buf) not in ("system", "user", "assistant"):
                    raise ParserError(line, ERR_INVALID_ROLE)
                role = "".join(buf)
            elif curr == VALUE:
                s, ok = unquote(_trim_space("".join(buf)))
                if not ok or _is_space(r):
                    buf.append(r)
                    continue
                if role:
                    s, role = f"{role}: {s}", ""
                commands.append(Command(name, s))
            buf = []
            curr = nxt
        if r and _is_print(r):
            buf.append(r)
    if curr == VALUE:
        s, ok = unquote(_trim_space("".join(buf)))
        if not ok:
            raise UnexpectedEOF("".join(buf))
        commands.append(Command(name, f"{role}: {s}" if role else s))
    elif curr not in (NIL, COMMENT):
        raise UnexpectedEOF("".join(buf))
    if not any(c.name == "model" for c in commands):
        raise MissingFrom()
    return commands


_SEMVER = re.compile(r"^v(0|[1-9]\d*)(\.(0|[1-9]\d*)(\.(0|[1-9]\d*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?"
                     r"(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?)?)?$")
_GO_INT = re.compile(r"^[+-]?[0-9]+$")
_GO_FLOAT = re.compile(r"^[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|inf|infinity|nan)$", re.IGNORECASE)
_GO_BOOLS = {"1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"}


def _format_param(name: str, value: str) -> None:
    """api.FormatParams for one PARAMETER: unknown names and unparsable values are errors."""
    kind = OPTION_KINDS.get(name)
    if kind is None:
        raise CreateError(f"unknown parameter '{name}'")
    if kind == "int" and not _GO_INT.match(value):
        raise CreateError(f"invalid int value [{value}]")
    if kind == "float" and not _GO_FLOAT.match(value):
        raise CreateError(f"invalid float value [{value}]")
    if kind == "bool" and value not in _GO_BOOLS:
        raise CreateError(f"invalid bool value [{value}]")


def _expand(path: str, base: Path) -> Path:
    if path.startswith(("/", "\\", "~")):
        return Path(path).expanduser().absolute()
    return (base / path).absolute()


@dataclass(frozen=True)
class CreateRequest:
    files: dict[str, Path]
    parameters: dict[str, list[str]]
    template: str | None
    system: str | None
    warnings: list[str]


def check_create(modelfile: Path) -> CreateRequest:
    """What `ollama create NAME -f MODELFILE` does before contacting the server, plus the GGUF magic check."""
    commands = parse_file(Path(modelfile).read_bytes())
    base = Path(modelfile).parent
    files: dict[str, Path] = {}
    params: dict[str, list[str]] = {}
    template = system = None
    warnings: list[str] = []
    for c in commands:
        if c.name in ("model", "adapter", "draft"):
            path = _expand(c.args, base)
            if not path.exists():
                if c.name == "model":  # Ollama then takes FROM as a model name to pull, not a file
                    raise CreateError(f"FROM {c.args}: {path} does not exist (Ollama would look for a model so named)")
                raise CreateError(f"{c.name.upper()} {c.args}: {path} does not exist")
            if c.name == "model" and path.is_file() and path.read_bytes()[:4] != b"GGUF":
                raise CreateError(f"FROM {c.args}: {path} is not a GGUF file")
            files[c.name] = path
        elif c.name == "template":
            template = c.args
        elif c.name == "system":
            system = c.args
        elif c.name in ("license", "renderer", "parser", "message"):
            pass
        elif c.name == "requires":
            if not _SEMVER.match(c.args if c.args.startswith("v") else "v" + c.args):
                raise CreateError("requires must be a valid semver (e.g. 0.14.0)")
        elif c.name in DEPRECATED:
            warnings.append(f"warning: parameter {c.name} is deprecated")
        else:
            _format_param(c.name, c.args)
            params.setdefault(c.name, []).append(c.args)
    return CreateRequest(files=files, parameters=params, template=template, system=system, warnings=warnings)
