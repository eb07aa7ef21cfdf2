"""A llama.cpp GBNF grammar under which a reply cannot name a command that does not exist.

It agrees with the slash-word rule of meshai_common.meshmaster.catalog (`_SLASH_WORD`, `unknown_slash_words`):
a command is "/" + a letter at the start of a word, a word starting anywhere but after a letter, digit, "_",
"/", "\\", ".", ":", "~", "<", "@", "#" or "-". So, in the text the grammar allows:

- a "/" that starts a word, followed by a letter, must go on with a catalog name or alias (lower case) and
  then a character that is not a letter, digit or "_" (or the reply ends): "/nodes", "/c,", "(/weather)";
  "/deletemesh" and "/Nodes" are impossible;
- a "/" that starts a word may be followed by anything but a letter: "/ ", "/2", "//";
- a "/" after a letter, digit or one of those marks is free text: "km/h", "and/or", "w/o", "24/7",
  "http://x.org/deletemesh", "~/notes", "</b>" (the catalog check does not count those as commands either);
- everything else is free text: prose, "there is no deletemesh command", the relay form "bob meet at 5";
- an `echo` word, one the prompt itself writes as an unknown slash word ("/sos?"), may follow a word-start "/"
  too. A small model answering "/sos?" opens by copying "/sos"; forcing a catalog name after that "/" made it
  write "/help lists the commands" and lose the word. With the echo allowed, the core drops that slash while
  streaming (`EchoSlashes`): the reply reads "sos is not a command", never "/sos".

The grammar is a little stricter than the check: the check also treats a non-ASCII letter before "/" as
gluing ("é/x" holds no command), the grammar treats it as a word start. Every text the grammar accepts passes
`unknown_slash_words(text) == []` once the core has dropped the slash of its echo words, except one that stops
in the middle of a name ("/nod"): GBNF cannot forbid stopping, so the core drops such an unfinished word from a
reply cut off by the token limit.

The reply is scanned as a small automaton (one rule per state, right recursion, so llama.cpp's stacks stay
flat): `free` (after a word-start character or at the start), `glued` (after a gluing character), `slash`
(after a word-start "/"), `named` (right after a complete command name).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import lru_cache

from meshai_common.meshmaster import load_catalog, slash_words, unknown_slash_words

# GBNF character classes. A "/" after a letter, digit, "_" or one of the marks \ . : ~ < @ # - does not start
# a word (the ASCII part of the look-behind of the catalog's _SLASH_WORD); "-" is last, so a literal.
GLUE = r"[A-Za-z0-9_\\.:~<@#-]"
MARKS_OR_SLASH = r"[\\.:~<@#/-]"
PLAIN = r"[^A-Za-z0-9_\\.:~<@#/-]"  # starts a word: space, other punctuation, any non-ASCII character
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_ECHO = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
MAX_ECHO = 8  # echo words per prompt (a question names one or two; a pasted log may name many)


def command_grammar(names: Iterable[str], echo: Iterable[str] = (), opening: str = "") -> str:
    """GBNF (root rule `root`) for free text in which a word-start "/" + letter is one of `names` or `echo`.

    names: command names with or without the slash, any case; each must be a letter then letters, digits
    or "_" (the catalog's own rule). A letter, digit or "_" never follows a name: that would be a longer,
    unknown word ("/nodesx"). echo: words without the slash, as the prompt writes them, that a reply may
    repeat after a "/" so that the core can drop that slash (see the module docstring). opening: text the
    reply must start with (plain words: "sos is not a command"), then free text."""
    words = sorted({n.strip().lower().lstrip("/") for n in names})
    if not words:
        raise ValueError("no command names: the grammar would forbid every command")
    for word in words:
        if not _NAME.fullmatch(word):
            raise ValueError(f"command name {word!r} is not '/' + a letter and letters, digits or '_'")
    echoes = sorted({w for w in echo if w.lower() not in words})
    for word in echoes:
        if not _ECHO.fullmatch(word):
            raise ValueError(f"echo word {word!r} is not a letter and letters, digits or '_'")
    if opening and (not opening.isprintable() or "/" in opening or not opening[-1].isalnum()):
        raise ValueError(f"opening {opening!r} must be printable words without a slash, ending in a letter or digit")
    slash = "command named | echo named | " if echoes else "command named | "
    root = "root ::= " + (json.dumps(opening) + " glued" if opening else "free")  # GBNF strings escape as JSON's
    return "\n".join([
        root,
        'free ::= ( plain free | glue glued | "/" slash )?',
        'glued ::= ( plain free | glue glued | "/" glued )?',
        f"slash ::= ( {slash}[0-9_] glued | {MARKS_OR_SLASH} glued | plain free )?",
        f"named ::= ( plain free | {MARKS_OR_SLASH} glued )?",
        "command ::= " + " | ".join(f'"{w}"' for w in words),
        *(["echo ::= " + " | ".join(f'"{w}"' for w in echoes)] if echoes else []),
        f"plain ::= {PLAIN}",
        f"glue ::= {GLUE}",
        "",
    ])


def echo_words(prompt: str) -> tuple[str, ...]:
    """The unknown slash words a prompt writes, without the slash and as written ("/sos?" -> "sos"): what a
    reply may echo to say that it is not a command. The first MAX_ECHO, in order, each also in lower case."""
    words = [w[1:] for w in unknown_slash_words(prompt)[:MAX_ECHO]]
    return tuple(dict.fromkeys(v for w in words for v in (w, w.lower())))  # "/SOS" may come back as "/sos"


@lru_cache(maxsize=256)
def catalog_command_grammar(echo: tuple[str, ...] = ()) -> str:
    """The grammar for every name and alias in the command catalog, plus `echo` (cached per echo set)."""
    return command_grammar(load_catalog().names, echo)


# Always allowed in a grounded reply: where to go when no retrieved command fits.
GROUNDED_ALWAYS = ("/help", "/menu")


def grounded_command_names(prompt: str) -> tuple[str, ...]:
    """The commands a grounded prompt puts in front of the model (its retrieved Context lines, the history and
    the question), with every alias of each, plus /help and /menu: the only commands a grounded reply needs.
    Retrieval finds the right command among its top 4 for ~97 % of questions; the grammar then keeps a
    sampled reply (temperature 0.7, as the bot asks) from wandering to an unrelated real command."""
    catalog = load_catalog()
    names: set[str] = set()
    for word in (*slash_words(prompt), *GROUNDED_ALWAYS):
        cmd = catalog.get(word)
        if cmd is not None:
            names.update(cmd.names)
    return tuple(sorted(names))


@lru_cache(maxsize=256)
def _grounded_grammar(names: tuple[str, ...], echo: tuple[str, ...], opening: str) -> str:
    return command_grammar(names, echo, opening)


def grounded_command_grammar(prompt: str, echo: tuple[str, ...] = (), opening: str = "") -> str:
    """The command grammar limited to `grounded_command_names(prompt)`, with `echo` (the prompt's echo_words),
    the reply starting with `opening` (grounding.reply_opening); cached per names, echo words and opening."""
    return _grounded_grammar(grounded_command_names(prompt), echo, opening)
