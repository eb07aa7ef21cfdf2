"""Word normalization for retrieval: radio shorthand expanded, plurals and verb endings folded.

Questions on the mesh are short, lower-case, abbreviated and misspelled ("how 2 chek ur msgs"). Documents
(catalog lines, the question bank, facts) and questions go through the same `terms`, so both sides agree on
what a word is.
"""

from __future__ import annotations

import re
import unicodedata

_APOSTROPHES = str.maketrans({"\u2019": "", "\u2018": "", "'": "", "`": ""})
_TOKEN = re.compile(r"[a-z0-9]+")


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Radio and chat shorthand -> the words the catalog and the bank use. Only general shorthand belongs here.
SHORTHAND: dict[str, str] = {
    "u": "you", "ya": "you", "yu": "you", "ur": "your", "yr": "your", "r": "are", "y": "why", "n": "and",
    "2": "to", "4": "for", "b4": "before", "w": "with", "wo": "without",
    "msg": "message", "msgs": "messages", "txt": "text", "txts": "texts",
    "cmd": "command", "cmds": "commands", "pls": "please", "plz": "please", "thx": "thanks", "ty": "thanks",
    "ppl": "people", "cuz": "because", "bc": "because", "pw": "password", "pwd": "password",
    "wanna": "want", "gonna": "going", "gotta": "got", "lemme": "let", "gimme": "give",
    "whats": "what", "wat": "what", "wut": "what", "wht": "what", "hows": "how", "wheres": "where",
    "whos": "who", "im": "i", "ive": "i", "thru": "through", "abt": "about",
    "dont": "do", "doesnt": "does", "cant": "can", "wont": "will", "isnt": "is", "didnt": "did",
    "email": "mail", "emails": "mail", "inbox": "mailbox", "e": "", "info": "information",
    "wx": "weather", "pos": "position", "loc": "location", "gps": "position", "sig": "signal",
    "2nite": "tonight", "tmrw": "tomorrow", "rn": "now",
    "cmnd": "command", "cmnds": "commands", "config": "settings", "cfg": "settings", "pm": "dm",
    "diff": "different",
}

# Everyday words for what a command does that its catalog line and bank phrasings may not use: a question
# with the word also asks with these (at a lower weight). General vocabulary, not tied to any one question.
RELATED: dict[str, tuple[str, ...]] = {
    "wake": ("alarm",), "woke": ("alarm", "wake"), "woken": ("alarm", "wake"), "waken": ("alarm", "wake"),
    "wakeup": ("alarm", "wake"), "remind": ("alarm",), "reminder": ("alarm",), "reminders": ("alarm",),
    "laugh": ("joke",), "funny": ("joke",), "humor": ("joke",), "humour": ("joke",), "lol": ("joke",),
    "erase": ("delete",), "purge": ("delete",), "remove": ("delete",),
    "forecast": ("weather",), "rain": ("weather",), "storm": ("weather",), "temperature": ("weather",),
    "snow": ("weather",), "wind": ("weather",),
    "verse": ("bible",), "scripture": ("bible",), "psalm": ("bible",), "countdown": ("timer",),
    "tone": ("vibe",), "mood": ("vibe",), "attitude": ("vibe",), "persona": ("vibe", "personality"),
    "personality": ("vibe",), "style": ("vibe",),
    "tutorial": ("onboard", "tour"), "newbie": ("new",), "noob": ("new",), "beginner": ("new",),
    "newcomer": ("new",),
    "coordinates": ("position",), "coords": ("position",), "latitude": ("position",),
    "longitude": ("position",), "lat": ("position",), "lon": ("position",),
    "journal": ("note", "log"), "diary": ("note", "log"), "memo": ("note",), "jot": ("note",),
    "headlines": ("news",), "encyclopedia": ("wiki",), "article": ("wiki",), "google": ("web", "search"),
    "internet": ("web",), "reception": ("signal",), "strength": ("signal",),
    "statistics": ("stats",), "stats": ("meshinfo",), "restart": ("reboot",), "creator": ("about", "made"),
    "author": ("about", "made"), "developer": ("about", "made"), "credits": ("about",),
    "quiet": ("stop",), "silence": ("stop",), "shush": ("stop", "mute"), "unmute": ("start", "resume"),
    "letter": ("mail",), "mailbox": ("mail",), "users": ("node",), "devices": ("node",), "radios": ("node",),
    "neighbors": ("node",), "stations": ("node",), "sms": ("message",), "chatbot": ("ai",), "gpt": ("ai",),
    "llm": ("ai",), "options": ("command",), "features": ("command",), "inform": ("tell",), "notify": ("tell",),
    "swap": ("switch", "change"),
}

# Function words: kept (a question made only of them still matches its bank twin) but weighted down.
STOPWORDS = _wordset("""
a an the to of for in on at by from with and or but if so as is are am was were be been being do does did
done i me my mine myself you your yours we us our it its this that these those there here how what which
can could would should will shall may might must please want need like way some any just get got let give
make have has had one thing something anything about into out up then than too also very really ok okay hey
hi yo thanks going go use using
""")

# Slot values a question writes in a shape of their own become the term a bank slot of that kind becomes
# ("{time}" and "5:45am" -> "zslottime"), so "wake me 5:45" meets "get woken up at {time}".
SLOT_PREFIX = "zslot"
_BOOKS = _wordset("""
genesis exodus leviticus numbers deuteronomy joshua judges ruth samuel kings chronicles ezra nehemiah esther job
psalm psalms proverbs ecclesiastes song isaiah jeremiah lamentations ezekiel daniel hosea joel amos obadiah jonah
micah nahum habakkuk zephaniah haggai zechariah malachi matthew mark luke john acts romans corinthians galatians
ephesians philippians colossians thessalonians timothy titus philemon hebrews james peter jude revelation
revelations
""")
_TYPED = (
    ("ref", re.compile(rf"\b(?:[123] ?)?(?:{'|'.join(sorted(_BOOKS))}) \d{{1,3}}(?::\d{{1,3}}(?:-\d{{1,3}})?)?\b")),
    ("time", re.compile(r"\b(?:\d{1,2}(?::\d{2})? ?(?:am|pm)|\d{1,2}:\d{2}|noon|midnight)\b")),
    ("dur", re.compile(r"\b\d+ ?(?:s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?)\b")),
)
TYPED_SLOTS = tuple(kind for kind, _ in _TYPED)


# Multi-word shorthand and idioms, rewritten before splitting into words.
_PHRASES = (
    (re.compile(r"\bw/o\b"), " without "),
    (re.compile(r"\bw/(?=\s)"), " with "),
    (re.compile(r"\bb/c\b"), " because "),
    (re.compile(r"\blet ([a-z0-9]+) know\b"), r"tell \1"),  # "let bob know ..." asks to tell bob
)

_IRREGULAR = {"was": "be", "were": "be", "is": "be", "are": "be", "am": "be", "people": "person",
              "children": "child", "men": "man", "sent": "send", "heard": "hear", "ran": "run", "made": "make",
              "saw": "see", "woke": "wake", "woken": "wake", "wrote": "write", "written": "write",
              "left": "leave",
              "got": "get", "gotten": "get", "went": "go", "gone": "go", "did": "do", "done": "do",
              "does": "do", "has": "have", "had": "have"}
_VOWELS = set("aeiou")


def stem(word: str) -> str:
    """Fold plurals and -ing/-ed endings ("nodes" -> "node", "checking" -> "check", "relayed" -> "relay")."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) <= 3 or word.isdigit():
        return word
    w = word
    if w.endswith("ies") and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith(("sses", "shes", "ches", "xes")):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    for suffix in ("ing", "ed"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3 and set(w[: -len(suffix)]) & _VOWELS:
            w = w[: -len(suffix)]
            # "getting" -> "gett" -> "get"; "stopped" -> "stop"; but "fall" keeps its double l
            if len(w) >= 3 and w[-1] == w[-2] and w[-1] not in "lsz":
                w = w[:-1]
            elif suffix == "ing" and w.endswith(("at", "iz", "bl")):
                w += "e"  # "updating" -> "update"
            break
    if w.endswith("e") and len(w) > 4 and not w.endswith(("ee", "ie")):
        w = w[:-1]  # "message"/"messag" and "save"/"sav" meet: both sides lose a final silent e
    return w


def words(text: str) -> list[str]:
    """Lower-case word tokens, NFKC-folded, apostrophes dropped, shorthand expanded (unstemmed)."""
    t = unicodedata.normalize("NFKC", text).lower().translate(_APOSTROPHES)
    for kind, pattern in _TYPED:
        t = pattern.sub(f" {SLOT_PREFIX}{kind} ", t)
    for pattern, repl in _PHRASES:
        t = pattern.sub(repl, t)
    out: list[str] = []
    for tok in _TOKEN.findall(t):
        full = SHORTHAND.get(tok, tok)
        if full:
            out.extend(full.split())
    return out


SURFACE = "="  # prefix of a word's own form, kept next to its stem when they differ ("=nodes" beside "node")


_SHORTNAME = re.compile(r"(?<![\w/])(?=[A-Z0-9]*[A-Z])[A-Z][A-Z0-9]{1,5}(?![\w/])")


def shortnames(text: str) -> list[str]:
    """Words written like a node's short name: 2-6 capitals and digits, starting with a capital ("K7AB")."""
    return _SHORTNAME.findall(text)


def terms(text: str, surface: bool = False) -> list[str]:
    """The stemmed terms retrieval compares; with `surface`, also each inflected word as written."""
    out = []
    for w in words(text):
        s = stem(w)
        out.append(s)
        if surface and s != w and not is_stopword(s):
            out.append(SURFACE + w)
    return out


def is_stopword(term: str) -> bool:
    return term in _STOP_STEMS


_STOP_STEMS = frozenset(stem(w) for w in STOPWORDS)


def deletes(word: str) -> set[str]:
    """The word and every form of it with one letter dropped (a symmetric-delete spelling index)."""
    return {word} | {word[:i] + word[i + 1:] for i in range(len(word))}


# Words that stand before "command" without naming one: "the right cmd", "a new command".
_NOT_NAMES = _wordset("""
right correct same new real exact actual proper other another magic secret special specific certain first last
next main full whole slash bot mesh text single every each no wrong old different good best better only
unknown invalid bad broken fake missing unrecognized unrecognised known valid any that this a an
""")
_NAMED = re.compile(r"\b([a-z][a-z0-9]{2,19})\s+(?:cmd|command)\b")


def named_words(text: str) -> list[str]:
    """Command names a question writes without the slash, as "/word": "the whois cmd" -> ["/whois"].

    Only the word right before "cmd"/"command" counts, and only one that is neither a function word nor an
    adjective ("the right command").
    """
    t = unicodedata.normalize("NFKC", text).lower().translate(_APOSTROPHES)
    out = []
    for m in _NAMED.finditer(t):
        w = m.group(1)
        if w in _NOT_NAMES or w in STOPWORDS or is_stopword(stem(w)) or w in SHORTHAND or "/" + w in out:
            continue
        if m.start(1) > 0 and t[m.start(1) - 1] == "/":
            continue  # "/whois cmd": already a slash word
        out.append("/" + w)
    return out


# "tell dave back by 6", "msg luis for me", "let jen know ...", "pass a note to marco", "get word to sam":
# the word after a verb of passing something on, or after its "to", is the node it is for.
_RELAY_TARGET = re.compile(
    r"(?<!\bmy )(?<!\bthe )(?<!\ba )(?<!\bur )(?<!\byour )(?<!\bmax )(?<!\bper )(?<!\bone )(?<!\bno )"  # "my dm"
    r"\b(?:(?:tell|msg|message|dm|text|reach|contact|notify|let)"
    r"|(?:relay|forward|pass|send|get|deliver)(?:\s+(?:a|this|that|the|my|our|some|it|word|msg|message|note|dm|"
    r"text|'[^']{1,60}'|\"[^\"]{1,60}\"))*\s+(?:on\s+)?(?:to|2)"
    r"|send(?=\s+\S+\s+\w))\s+@?([A-Za-z][A-Za-z0-9_-]{1,11})\b(?![/'])", re.I)  # "send luis back by 6"
# Words that stand after those verbs without naming a node ("tell everyone", "reach the mesh", "send help").
_NOT_TARGETS = _wordset("""
him her them he she they me us you u ya everyone everybody someone somebody anyone anybody all people folks ppl
nobody noone group channel mesh net network bot yourself myself whether when where who why what which how if
time apart more less mail email messages msgs notes note stuff word words
""")


_REFERS = re.compile(
    r"\b(?:tell|msg|message|dm|text|reach|send)\s+(?:him|her|them)\b"  # "tell him ...", "send them one"
    r"|\b(?:pass|send|relay|forward|get)\b[^.?!]{0,30}\bto\s+(?:him|her|them)\b"  # "pass it to them"
    r"|\bget\s+(?:him|her|them)\s+(?:a|the|this|that|my)\b", re.I)  # "get him a msg", not "get them to stop"


def refers_to_a_node(text: str) -> bool:
    """A question that asks to pass something on to someone it does not name: "can u tell him check ch 2"."""
    return bool(_REFERS.search(text))


def relay_targets(text: str) -> list[str]:
    """Node names a question asks to pass something on to, as written: "tell dave back by 6" -> ["dave"].

    Only the word right after a verb of passing on ("tell", "msg", "let ... know") or after its "to" ("pass a
    note to marco") counts, and only one that is not a function word, pronoun or the like ("tell me", "reach the
    mesh"); whether it is a word retrieval knows (a command, "joke") the caller decides."""
    out = []
    for m in _RELAY_TARGET.finditer(unicodedata.normalize("NFKC", text)):
        w = m.group(1)
        low = w.lower()
        if low in _NOT_TARGETS or low in STOPWORDS or is_stopword(stem(low)) or low in SHORTHAND or w in out:
            continue
        out.append(w)
    return out
