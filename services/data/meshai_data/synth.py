"""Grounded synthetic question -> answer pairs, driven by the command catalog and the facts file.

Every intent has phrasings ("actions" combined with question frames, or whole "asks") and one terse,
formulaic answer with the command first. Variety comes from frames, slot values (node names, mailboxes,
topics) and typos; never from repeating a pair. Each phrasing is a template group: the split keeps a group in
one split, so val/test ask in ways train never saw.

Every answer is checked: at most 320 UTF-8 bytes and no slash word outside the catalog. A failure is a bug in
this file, not bad input, and raises `SynthError`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache

from meshai_common.meshmaster import load_catalog, load_facts, unknown_slash_words
from meshai_common.prompts import MESHMASTER_SYSTEM_PROMPT, meshmaster_prompt
from meshai_common.radio import budget_bytes, utf8_len
from meshai_data.normalize import stable_hash

ANSWER_BUDGET = budget_bytes()  # 320 bytes: two 160-byte radio chunks
TYPO_VARIANTS = 2  # extra misspelled copies of each phrasing
FILLS_PER_PHRASE = 2  # slot fillings per (phrasing, frame)
WRAP_FRACTION = 0.2  # user turns shaped like Mesh-Master's own prompt


class SynthError(RuntimeError):
    """The generator produced an answer that breaks the rules (a bug in the templates)."""


@dataclass(frozen=True)
class Example:
    question: str  # what the person typed
    answer: str
    intent: str
    group: str  # template group: the unit the split keeps together
    source: str = "synthetic"  # synthetic | mailboxes | archive
    user: str = ""  # the user turn as trained: the question, or a Mesh-Master prompt around it
    typo: bool = False  # a misspelled variant of a phrasing

    @property
    def user_turn(self) -> str:
        return self.user or self.question


@dataclass(frozen=True)
class Intent:
    id: str
    answers: Mapping[str, str]  # slot signature ("", "name", "msg+name", ...) -> answer template
    actions: tuple[str, ...] = ()  # verb phrases, used inside FRAMES
    asks: tuple[str, ...] = ()  # whole questions
    weight: float = 1.0


_h = stable_hash


@lru_cache(maxsize=65536)
def _answer_problem(answer: str) -> str | None:
    if not answer.strip():
        return "empty answer"
    size = utf8_len(answer)
    if size > ANSWER_BUDGET:
        return f"answer over {ANSWER_BUDGET} bytes ({size})"
    bad = unknown_slash_words(answer)
    if bad:
        return f"answer uses unknown command(s) {', '.join(bad)}"
    return None


def check_answer(answer: str, where: str = "") -> str:
    """The answer itself when it is within budget and names only real commands; else SynthError."""
    problem = _answer_problem(answer)
    if problem:
        raise SynthError(f"{problem} {where}: {answer!r}")
    return answer


# -- phrasing -------------------------------------------------------------------------------------------

FRAMES = (
    "how do I {a}?", "how can I {a}?", "how do i {a}", "what's the command to {a}?", "whats the cmd to {a}",
    "which command lets me {a}?", "is there a way to {a}?", "can I {a}?", "I want to {a}", "how to {a}",
    "how 2 {a}", "cmd to {a}?", "{a}?", "need to {a}", "help me {a}", "how would I {a}?",
    "what do I send to {a}?", "tell me how to {a}", "best way to {a}?", "i'd like to {a}",
)

NAMES = ("bob", "alice", "dave", "kim", "sam", "joe", "mia", "tom", "jen", "max", "ray", "liz", "ned", "ana",
         "gus", "BASE", "HILL", "K7AB", "RV01", "TWR2")
MESSAGES = ("meet at 5", "on my way", "running late", "call me", "at camp now", "need water", "all good here",
            "back by 6", "check ch 2", "bring the map", "road is closed", "see you at the trailhead")
BOXES = ("admin", "camp", "ops", "family", "team", "sar", "net", "base", "news", "club", "events", "help")
TOPICS = ("antenna", "water", "solar", "repeater", "battery", "weather", "first aid", "generator", "knots",
          "radio", "trail map", "shelter")
TIMES = ("7am", "6:30am", "2:34pm", "9pm", "noon", "5:15pm")
DURATIONS = ("10m", "5m", "30m", "1h", "90s", "45m")
REFS = ("john 3:16", "psalm 23", "genesis 1:1", "romans 8:28")

_SLOT = re.compile(r"\{(\w+)\}")

RELAY_ALT = "To relay, DM me '<shortname> <message>'. "
# Commands people expect but Mesh-Master does not have, with the real way to do what they want.
FAKE_COMMANDS: dict[str, str] = {
    "relay": RELAY_ALT, "superrelay": RELAY_ALT, "relayto": RELAY_ALT, "forward": RELAY_ALT, "msg": RELAY_ALT,
    "deletemesh": "Nothing can delete the mesh. ", "nuke": "Nothing can delete the mesh. ",
    "wipeall": "/wipe only clears your own mailbox or history. ",
    "hint": "For help on one topic send /help <topic>. ",
    "broadcast": "A plain channel message reaches everyone in range. ",
    "sendall": "A plain channel message reaches everyone in range. ",
    "announce": "A plain channel message reaches everyone in range. ",
    "traceroute": "", "kick": "", "ban": "", "unban": "",
    "mute": "/stop pauses my replies in a DM. ", "unsubscribe": "/optout stops relays to you. ",
    "inbox": "/c reads your mailbox. ", "readmail": "/c reads your mailbox. ",
    "sendmail": "/m <mailbox> <message> sends mail. ", "email": "/m <mailbox> <message> sends mail. ",
    "deletemail": "/wipe mailbox <name> deletes a mailbox. ",
    "map": "/whereami shows your position. ", "gps": "/whereami shows your position. ",
    "position": "/whereami shows your position. ", "location": "/whereami shows your position. ",
    "snr": "/node <shortname> shows a node's signal. ", "signal": "/node <shortname> shows a node's signal. ",
    "rssi": "/node <shortname> shows a node's signal. ",
    "ping": "Send plain ping, without the slash, and I answer Pong! ", "joke": "Try /jokes. ",
    "forecast": "/weather gives the forecast. ", "users": "/nodes lists nodes heard in 24h. ",
    "online": "/nodes lists nodes heard in 24h. ", "nodelist": "/nodes lists nodes heard in 24h. ",
    "who": "/nodes lists nodes heard in 24h. ", "restart": "Admins use /reboot. ",
    "settings": "/aisettings shows your AI settings. ", "clear": "/reset clears your AI context. ",
    "history": "/chathistory opens the history menu. ", "note": "/log <title> saves a private note. ",
    "notes": "/checklog reads your private notes. ", "emergency": "", "hops": "",
}
FAKE_ASKS = (
    "how do I use /{fake}?", "what does /{fake} do?", "is there a /{fake} command?", "/{fake} isn't working",
    "how do I /{fake}?", "explain /{fake}", "whats /{fake}", "does /{fake} exist?", "what's the syntax for /{fake}?",
    "/{fake} help", "why doesn't /{fake} work?", "can I use /{fake}?", "tell me about the /{fake} command",
    "/{fake} usage?", "how does the /{fake} command work?", "i tried /{fake} and nothing happened",
)
EXPLAIN_ASKS = (
    "what does {cmd} do?", "what is {cmd}?", "{cmd}?", "how do I use {cmd}?", "explain {cmd}",
    "what's {cmd} for?", "{cmd} usage?", "how does {cmd} work?", "what is the {cmd} command?", "tell me about {cmd}",
)

GENERAL = (
    (("how many feet in a mile", "feet per mile", "how many ft is a mile"), "5,280 feet."),
    (("how many km in a mile", "a mile in km", "miles to km"), "About 1.61 km."),
    (("how many miles is 10 km", "10k in miles", "convert 10 km to miles"), "About 6.2 miles."),
    (("what does 73 mean", "why do people say 73", "meaning of 73 on radio"), "73 is ham radio shorthand for best regards."),
    (("what does QTH mean", "qth meaning", "what is my qth"), "QTH is ham shorthand for your location."),
    (("what is 0 celsius in fahrenheit", "freezing point in f", "0c in f"), "0 °C is 32 °F."),
    (("boiling point of water", "what temp does water boil", "water boils at what temperature"),
     "100 °C (212 °F) at sea level."),
    (("what is a mesh network", "how does a mesh network work", "explain mesh networking"),
     "Nodes relay each other's messages, so text hops past any single radio's range."),
    (("what is meshtastic", "what's meshtastic", "explain meshtastic"),
     "Open-source firmware that turns cheap LoRa radios into an off-grid text mesh."),
    (("what is a dB", "what does dB mean", "explain decibels"),
     "A decibel is a log ratio: +3 dB is about double the power, +10 dB ten times."),
    (("what is dBm", "what does dBm mean", "dbm vs db"), "dBm is power relative to 1 mW: 0 dBm = 1 mW, 30 dBm = 1 W."),
    (("what is line of sight", "what does LOS mean", "why does line of sight matter"),
     "A clear straight path between antennas. LoRa range drops fast behind hills and buildings."),
)


def _intents() -> list[Intent]:
    i = Intent
    return [
        # -- the commands the public suite asks about (weight: they carry the score)
        i("nodes", {"": "Send /nodes to list nodes heard in the last 24h, newest first."},
          actions=("see all nodes", "list the nodes", "see who is on the mesh", "list nodes heard today",
                   "show all nodes on the mesh", "see which nodes are online", "view the node list",
                   "find out who's around", "check which nodes are up", "see every node I can reach"),
          asks=("who's on the mesh?", "who is online right now?", "any nodes around?", "who can hear me?",
                "node list?", "who's out there?", "what nodes are active?", "which stations are on the air?"),
          weight=4),
        i("relay", {
            "": "No command needed: DM me '<shortname> <message>', e.g. 'bob on my way'. Their next plain DM "
                "comes back to you.",
            "name": "DM me '{name} <message>'. I relay it to {name}, and {name}'s next plain DM comes back to you.",
            "msg+name": "DM me '{name} {msg}'. I relay it to {name}; {name}'s next plain DM comes back to you.",
          },
          actions=("relay a message to {name}", "send a message to {name}", "message {name}",
                   "pass a note to {name}", "get a message to {name}", "reach {name} through the mesh",
                   "send {name} a DM through you", "forward a msg to {name}", "relay a message",
                   "relay to another node", "send a message through the bot", "message someone out of range",
                   "relay messages"),
          asks=("how does relay work?", "can you relay for me?", "can you pass a message to {name}?",
                "relay to {name}", "tell {name} {msg}", "send {name} {msg}", "can you tell {name} {msg}?",
                "relay '{msg}' to {name}", "how do relays work here?", "can you forward messages?"),
          weight=4),
        i("mail_check", {
            "": "Send /c <mailbox> (or /checkmail). Add the PIN if it's locked, or a word to search.",
            "box": "Send /c {box}. Add the PIN if it's locked, or a word to search it.",
          },
          actions=("check my mail", "read my mail", "check my mailbox", "read my messages in a mailbox",
                   "see if I have mail", "check the {box} mailbox", "read the {box} box", "search my mail for a word",
                   "open my inbox", "check mail in {box}", "look for mail"),
          asks=("any mail for me?", "do I have mail?", "got mail?", "where is my mail?", "anything in {box}?",
                "any new mail in the {box} box?"),
          weight=4),
        i("mail_send", {
            "": "Send /m <mailbox> <message>. A new mailbox asks Y/N, then an optional PIN.",
            "box": "Send /m {box} <message>. A new mailbox asks Y/N, then an optional PIN.",
          },
          actions=("send mail to {box}", "leave a message in the {box} mailbox", "send an email to {box}",
                   "write to the {box} box", "mail {box}", "leave a note in a mailbox", "send mail",
                   "create a mailbox", "leave a message for the {box} team", "post to a mailbox",
                   "drop a note in {box}"),
          asks=("how does mail work?", "can I leave mail for {box}?", "how do mailboxes work?",
                "can I send mail here?"),
          weight=4),
        i("optout", {"": "Send /optout to refuse relays to you. Send /optin to allow them again."},
          actions=("stop receiving relays", "stop relayed messages", "block relays to me", "opt out of relays",
                   "stop people relaying to me", "turn off relays", "refuse relayed messages",
                   "stop getting messages from other nodes", "disable relays"),
          asks=("I don't want relayed messages", "too many relays, how do I stop them?", "can I block relays?",
                "how to stop relays?"),
          weight=4),
        i("find", {
            "": "Send /find <words> to search logs, reports, the offline wiki and caches.",
            "topic": "Send /find {topic} to search logs, reports, the offline wiki and caches.",
          },
          actions=("search my logs", "search the logs", "find an old log", "search reports", "search my notes",
                   "search the database", "find a note about {topic}", "search for {topic}",
                   "look something up in the logs", "find a log entry", "search my saved logs for {topic}"),
          asks=("where did I log that?", "can I search my notes?", "how do I find something I logged?"),
          weight=4),
        i("log", {
            "": "Send /log <title> to save a private note. Read yours with /checklog.",
            "topic": "Send /log {topic} to save a private note. Read yours with /checklog.",
          },
          actions=("create a private note", "make a private note", "save a note just for me", "write a private log",
                   "log something privately", "keep a private note", "add a log entry", "start a private log",
                   "jot down a private note", "save a private log about {topic}"),
          asks=("can I keep private notes?", "where can I write notes only I see?"),
          weight=4),
        i("report", {
            "": "Send /report <title> to file a public report. Read reports with /checkreport.",
            "topic": "Send /report {topic} to file a public report. Read reports with /checkreport.",
          },
          actions=("file a public report", "make a public report", "post a report for everyone",
                   "write a public report", "share a report with the mesh", "submit a report",
                   "create a report everyone can read", "report something publicly", "file a report about {topic}"),
          asks=("can I post a public report?", "how do reports work?"),
          weight=4),
        i("games", {"": "Send /games in a DM for the game menu: /wordle, /hangman, /blackjack, /trivia and more."},
          actions=("play a game", "play games", "find a game", "see the games", "kill some time", "play something",
                   "see the game menu", "start a game"),
          asks=("any games?", "i'm bored", "what games do you have?", "got games?", "are there games on here?",
                "what can I play?"),
          weight=4),
        i("onboard", {"": "Welcome! DM me /onboard for a 9-step tour. /help lists commands."},
          actions=("get started", "learn how this works", "get a tour", "start the tutorial",
                   "get help as a new user", "learn the basics", "get onboarded", "start the tour"),
          asks=("I'm new here", "new user, where do I start?", "first time here, help?", "im new what do i do",
                "just joined the mesh, what now?", "new here, how does this work?", "is there a tutorial?",
                "newbie here, any tips?"),
          weight=4),
        i("node_signal", {
            "": "Send /node <shortname> for one node's signal (SNR) and last heard, or /nodes for all nodes heard "
                "in 24h.",
            "name": "Send /node {name} for {name}'s signal (SNR) and last heard time.",
          },
          actions=("check node signal strength", "see a node's SNR", "check {name}'s signal",
                   "see how well I hear {name}", "check the signal of {name}", "see signal strength",
                   "check the SNR of nodes", "see the signal of a node", "check how strong {name} is",
                   "see {name}'s SNR"),
          asks=("how strong is {name}'s signal?", "what's my signal to {name}?", "how's the signal to {name}?",
                "signal report for {name}?", "what's {name}'s snr?", "how good is my link to {name}?"),
          weight=4),
        i("help", {"": "Send /help for help or /menu for the command categories."},
          actions=("list commands", "see all commands", "see what you can do", "get help", "see the menu",
                   "find the command list", "list all the commands", "see the commands", "get a list of commands",
                   "see the help"),
          asks=("what commands are there?", "help?", "commands?", "what can you do?", "menu?",
                "what can I send you?", "what are the commands?", "which commands work here?"),
          weight=4),
        # -- everything else the bot does
        i("optin", {"": "Send /optin to allow relays to you again."},
          actions=("allow relays again", "opt back in to relays", "turn relays back on",
                   "start receiving relays again", "undo optout")),
        i("help_topic", {"": "Send /help <topic> for help on one topic; /menu shows the categories."},
          actions=("get help on one topic", "get help about a specific command", "read help on a topic")),
        i("checklog", {"": "Send /checklog to read your private notes (also /readlog)."},
          actions=("read my logs", "see my private notes", "read my notes", "check my logs", "list my logs")),
        i("checkreport", {"": "Send /checkreport to read public reports."},
          actions=("read the reports", "see public reports", "check reports", "read what others reported")),
        i("jokes", {"": "Send /jokes in a DM. Also /chucknorris, /yomomma and /blond."},
          actions=("get a joke", "hear a joke", "read a joke", "get a funny joke"),
          asks=("got any jokes?", "make me laugh")),
        i("trivia", {"": "Send /trivia in a DM. More quizzes: /meshtasticquiz, /mathquiz, /masterquiz."},
          actions=("play trivia", "take a quiz", "do a quiz", "test my knowledge")),
        i("motd", {"": "Send /motd for the message of the day."},
          actions=("see the message of the day", "read the motd", "get today's message")),
        i("about", {"": "Send /about for credits and version."},
          actions=("see who made this bot", "see the credits", "check the bot version"),
          asks=("who made you?", "what version are you?")),
        i("meshinfo", {"": "Send /meshinfo for mesh health and node counts."},
          actions=("check mesh health", "see how many nodes there are", "get mesh stats"),
          asks=("how many nodes are there?", "how big is the mesh?", "is the mesh healthy?")),
        i("meshtastic_q", {"": "Send /meshtastic <question> for an answer from the Meshtastic knowledge file."},
          actions=("ask a Meshtastic question", "look up Meshtastic info", "get Meshtastic help")),
        i("weather", {"": "Send /weather for the forecast."},
          actions=("get the weather", "see the forecast", "check the weather"),
          asks=("what's the weather?", "will it rain?", "forecast?")),
        i("whereami", {"": "Send /whereami to see your GPS position."},
          actions=("see my position", "find my location", "check my GPS", "get my coordinates"),
          asks=("where am i?", "what's my location?")),
        i("test", {"": "Send /test for an echo test, or plain ping for Pong!"},
          actions=("test my link", "test the connection", "check if you can hear me", "do an echo test"),
          asks=("radio check?", "is my radio working?")),
        i("ping_word", {"": "Send plain ping (no slash) and I reply Pong!"},
          asks=("how do I ping the bot?", "what happens if I send ping?", "is there a ping?")),
        i("ai_ask", {"": "Send /ai <question> (or /bot) on a channel. In a DM, plain text reaches me too."},
          actions=("ask the AI a question", "talk to the AI", "ask you something on the channel",
                   "get the AI to answer on a channel"),
          asks=("how do I ask you a question?", "how do I talk to the ai on the channel?")),
        i("vibe", {"": "Send /vibe set <name> to change my tone, /vibe status to see it, /vibe reset to undo."},
          actions=("change your tone", "change the AI personality", "make you sound different", "reset your vibe")),
        i("aisettings", {"": "Send /aisettings to see your AI settings."},
          actions=("see my AI settings", "check AI settings", "view my AI settings")),
        i("reset_ai", {"": "Send /reset to clear your AI chat context."},
          actions=("clear the AI context", "start a fresh chat", "make you forget our chat",
                   "reset the conversation")),
        i("chathistory", {"": "Send /chathistory for the history menu."},
          actions=("see my chat history", "open chat history", "browse old chats")),
        i("save_chat", {"": "Send /save <name>. Later /recall <name> brings it back."},
          actions=("save this chat", "save our conversation", "keep this chat for later")),
        i("recall_chat", {"": "Send /recall <name> to reload a saved chat; /exit closes it."},
          actions=("load a saved chat", "bring back a saved chat", "recall a conversation")),
        i("exit_session", {"": "Send /exit to close a recalled session."},
          actions=("close a recalled chat", "leave a recalled session", "end a recalled chat")),
        i("stop_replies", {"": "Send /stop to pause my replies in this DM; /start resumes them."},
          actions=("pause your replies", "stop the bot replying to me", "mute the bot", "make you stop replying")),
        i("start_replies", {"": "Send /start (or /resume) to resume my replies."},
          actions=("resume replies", "unmute the bot", "turn replies back on")),
        i("networks", {"": "Send /networks to see the channel names."},
          actions=("see channel names", "list the channels", "see which channels exist")),
        i("emailhelp", {"": "Send /emailhelp for mail help. In short: /m <mailbox> <message> sends, /c <mailbox> reads."},
          actions=("get help with mail", "learn how mail works", "read the mail help")),
        i("wipe", {
            "": "Send /wipe mailbox <name>, /wipe chathistory or /wipe personality. /wipe all <name> clears all.",
            "box": "Send /wipe mailbox {box} to delete that mailbox.",
          },
          actions=("delete a mailbox", "delete my chat history", "wipe my data", "clear my personality setting",
                   "delete the {box} mailbox")),
        i("snooze", {"": "Send /snooze to snooze new-mail notices."},
          actions=("snooze mail notices", "stop mail notifications for a while", "quiet the mail alerts")),
        i("web", {"": "Send /web <query> to search the web.", "topic": "Send /web {topic} to search the web."},
          actions=("search the web", "look something up online", "search the internet for {topic}",
                   "google {topic}")),
        i("wiki", {"": "Send /wiki <topic> for a Wikipedia summary.",
                   "topic": "Send /wiki {topic} for a Wikipedia summary."},
          actions=("look up {topic} on wikipedia", "read about {topic}", "get a wikipedia summary")),
        i("offline_wiki", {"": "Send /offline wiki <topic> to read the offline wiki.",
                           "topic": "Send /offline wiki {topic} to read it from the offline wiki."},
          actions=("read the offline wiki", "look up {topic} offline", "use the wiki without internet")),
        i("drudge", {"": "Send /drudge for news headlines."},
          actions=("get the news headlines", "read the news", "see headlines")),
        i("bible", {"": "Send /bible for a verse, or /bible <reference> for a given one.",
                    "ref": "Send /bible {ref}."},
          actions=("read a bible verse", "get a verse", "look up {ref}")),
        i("alarm", {"": "Send /alarm <time> [daily|mm-dd|weekday] [label], e.g. /alarm 6:30am daily wake.",
                    "time": "Send /alarm {time}. Add daily, a date or a weekday, then a label."},
          actions=("set an alarm", "set an alarm for {time}", "get woken up at {time}", "set a daily alarm")),
        i("timer", {"": "Send /timer <duration> [label], e.g. /timer 10m tea.",
                    "dur": "Send /timer {dur}, plus an optional label."},
          actions=("set a timer", "set a {dur} timer", "start a countdown", "start a timer for {dur}")),
        i("stopwatch", {"": "Send /stopwatch start, then /stopwatch stop; /stopwatch status shows the time."},
          actions=("start a stopwatch", "time something", "use the stopwatch")),
        i("admin_motd", {"": "Admins: DM /changemotd <text> (needs the admin password)."},
          actions=("change the message of the day", "set a new motd")),
        i("admin_prompt", {"": "Admins: DM /changeprompt <text>; /showprompt shows it. Needs the admin password."},
          actions=("change the AI prompt", "see the system prompt")),
        i("admin_model", {"": "Admins: /showmodel shows it, /selectmodel picks one. Needs the admin password in a DM."},
          actions=("change the AI model", "see which model you run", "switch models")),
        i("admin_reboot", {"": "Admins: DM /reboot (needs the admin password)."},
          actions=("restart the bot", "reboot the bot")),
        i("admin_login", {"": "DM /admin and give the admin password. /allcommands lists every command."},
          actions=("log in as admin", "get admin access", "use admin commands")),
        i("blacklist", {"": "Send blacklistme (no slash) and I stop replying; send unblock to undo."},
          actions=("make the bot ignore me", "block the bot", "stop the bot talking to me for good")),
        i("greeting", {"": "Hi! Ask me anything, or send /help for commands."},
          asks=("hello", "hi there", "good morning", "anyone there?", "hello bot", "evening all")),
        i("thanks", {"": "You're welcome. 73!"}, asks=("thanks", "thank you", "ty", "appreciate it", "cheers")),
        i("identity", {"": "I'm Mesh-AI, this mesh's assistant. Send /help for commands, or just ask."},
          asks=("who are you?", "what are you?", "are you a bot?", "what is mesh-ai?", "what is this bot?")),
    ]


# -- slots ------------------------------------------------------------------------------------------------

def _slot_pools(boxes: Iterable[str]) -> dict[str, tuple[str, ...]]:
    return {"name": NAMES, "msg": MESSAGES, "box": tuple(dict.fromkeys(boxes)), "topic": TOPICS, "time": TIMES,
            "dur": DURATIONS, "ref": REFS}


def _signature(template: str) -> str:
    return "+".join(sorted(set(_SLOT.findall(template))))


def _fills(template: str, pools: Mapping[str, tuple[str, ...]], seed: int, key: str, count: int) -> list[dict]:
    slots = sorted(set(_SLOT.findall(template)))
    if not slots:
        return [{}]
    rng = random.Random(_h(seed, "fill", key))
    out, seen = [], set()
    for _ in range(count * 3):
        fill = {s: rng.choice(pools[s]) for s in slots}
        sig = tuple(sorted(fill.items()))
        if sig not in seen:
            seen.add(sig)
            out.append(fill)
        if len(out) >= count:
            break
    return out


# -- typos ------------------------------------------------------------------------------------------------

_ABBREV = {"you": "u", "your": "ur", "are": "r", "message": "msg", "messages": "msgs", "what's": "whats",
           "people": "ppl", "for": "4", "see": "c", "before": "b4", "command": "cmd", "commands": "cmds",
           "because": "cuz", "with": "w", "tonight": "2nite", "doesn't": "doesnt", "don't": "dont",
           "i'm": "im", "can't": "cant", "is": "s"}
_WORD = re.compile(r"[A-Za-z']+")


def _typo(text: str, rng: random.Random, protect: frozenset[str]) -> str:
    """One realistic slip: a swapped, dropped or doubled letter, or radio shorthand."""
    words = list(_WORD.finditer(text))
    options = [m for m in words if m.group(0).lower() not in protect and not m.group(0).isupper()
               and text[max(0, m.start() - 1)] != "/" and text[max(0, m.start() - 1)] != "{"]
    if not options:
        return text
    m = rng.choice(options)
    w = m.group(0)
    low = w.lower()
    ops = ["swap", "drop", "double"] if len(w) >= 4 else []
    if low in _ABBREV:
        ops += ["abbrev", "abbrev"]
    if not ops:
        return text
    op = rng.choice(ops)
    if op == "abbrev":
        new = _ABBREV[low]
    else:
        j = rng.randrange(1, len(w) - 2) if len(w) > 3 else 1
        if op == "swap":
            new = w[:j] + w[j + 1] + w[j] + w[j + 2:]
        elif op == "drop":
            new = w[:j] + w[j + 1:]
        else:
            new = w[:j] + w[j] + w[j:]
    return text[: m.start()] + new + text[m.end():]


@lru_cache(maxsize=65536)
def _variants(text: str, seed: int, n: int, protect: frozenset[str]) -> tuple[str, ...]:
    out = [text]
    for k in range(n):
        rng = random.Random(_h(seed, "typo", text, k))
        v = _typo(text, rng, protect)
        if v not in out:
            out.append(v)
    return tuple(out)


# -- generation -------------------------------------------------------------------------------------------

@dataclass
class _Sink:
    seed: int
    typos: int
    mail_boxes: frozenset[str]
    fills: int = FILLS_PER_PHRASE
    examples: list[Example] = field(default_factory=list)

    def add(self, intent: str, group: str, template: str, answer_tpl: str, pools, protect=frozenset(),
            fills: int | None = None) -> None:
        for fill in _fills(template, pools, self.seed, f"{group}|{template}", fills or self.fills):
            answer = check_answer(answer_tpl.format(**fill), f"(intent {intent})")
            # Typos go into the template's own words only (never "{slot}" or "/command"), so slot values
            # the answer repeats stay exact.
            for k, q in enumerate(_variants(template, self.seed, self.typos, frozenset(protect))):
                question = q.format(**fill)
                source = "mailboxes" if fill.get("box") in self.mail_boxes else "synthetic"
                self.examples.append(Example(question, answer, intent, group, source, typo=k > 0))


def generate(seed: int = 42, *, mailbox_names: Iterable[str] = (), locked_boxes: Iterable[str] = (),
             typos: int = TYPO_VARIANTS, fills: int = FILLS_PER_PHRASE) -> list[Example]:
    """Every synthetic example, deterministic for a seed. Near-duplicates are removed later, by the caller.

    mailbox_names: box names from the operator's mesh_mailboxes.json; mail examples use them (source
    "mailboxes") next to generic names. locked_boxes: those holding PIN-locked mail (their check examples
    say to add the PIN). Message bodies are never used.
    """
    mail_boxes = frozenset(b for b in mailbox_names if b)
    sink = _Sink(seed, typos, mail_boxes, fills)
    pools = _slot_pools([*sorted(mail_boxes), *BOXES])
    for intent in _intents():
        for idx, action in enumerate(intent.actions):
            answer_tpl = _answer_for(intent, action)
            for f_idx, frame in enumerate(FRAMES):
                # Rotate frames per phrasing so each phrasing gets a different subset of frames.
                if (idx + f_idx) % 2 and len(intent.actions) > 6:
                    continue
                sink.add(intent.id, f"{intent.id}:a{idx}", frame.replace("{a}", action), answer_tpl, pools)
        for idx, ask in enumerate(intent.asks):
            sink.add(intent.id, f"{intent.id}:q{idx}", ask, _answer_for(intent, ask), pools, fills=2 * fills)
    _locked_examples(sink, sorted(set(locked_boxes) & mail_boxes))
    _explain_examples(sink)
    _fake_examples(sink)
    _fact_examples(sink)
    for idx, (asks, answer) in enumerate(GENERAL):
        for j, ask in enumerate(asks):
            sink.add("general", f"general:{idx}:{j}", ask, answer, pools)
    return sink.examples


def _answer_for(intent: Intent, template: str) -> str:
    sig = _signature(template)
    if sig not in intent.answers:
        raise SynthError(f"intent {intent.id}: no answer for slots {sig or '(none)'} in {template!r}")
    return intent.answers[sig]


def _locked_examples(sink: _Sink, boxes: list[str]) -> None:
    if not boxes:
        return
    pools = {"box": tuple(boxes)}
    answer = "Send /c {box} <PIN>. That box is PIN-locked; add a word after the PIN to search."
    for idx, ask in enumerate(("how do I read the {box} mailbox?", "the {box} box asks for a pin",
                               "check the {box} mailbox", "open the {box} box")):
        sink.add("mail_check", f"mail_check:locked{idx}", ask, answer, pools, fills=len(boxes))


def _explain_examples(sink: _Sink) -> None:
    catalog = load_catalog()
    for cmd in catalog.commands:
        note = " (admin, DM only)" if cmd.admin else " (DM only)" if cmd.dm_only else ""
        usage = "" if cmd.usage == cmd.name else f" Usage: {cmd.usage}"
        for name in cmd.names:
            same = "" if name == cmd.name else f"Same as {cmd.name}: "
            answer = f"{name}: {same}{cmd.description}{note}.{usage}"
            if utf8_len(answer) > 160:
                answer = f"{name}: {same}{cmd.description}{note}."
            for idx, ask in enumerate(EXPLAIN_ASKS):
                # Two frames per name keep the catalog covered without flooding the pool.
                if _h(sink.seed, "explain", name, idx) % 5 > 1:
                    continue
                sink.add("explain", f"explain:{idx}", ask.replace("{cmd}", name), answer, {}, protect={name[1:]})


def _fake_examples(sink: _Sink) -> None:
    catalog = load_catalog()
    for fake, alt in FAKE_COMMANDS.items():
        if catalog.is_known(fake):
            raise SynthError(f"/{fake} is a real command; remove it from FAKE_COMMANDS")
        if fake == "hint":
            answer = "There is no hint command. For help on one topic send /help <topic>."
        else:
            answer = f"There is no {fake} command. {alt}Send /help for the real commands."
        for idx, ask in enumerate(FAKE_ASKS):
            if _h(sink.seed, "fake", fake, idx) % 4 > 1 and fake not in ("relay", "deletemesh", "superrelay", "hint"):
                continue
            sink.add("fake_command", f"fake_command:{idx}", ask.replace("{fake}", fake), answer, {},
                     protect={fake})


def _fact_examples(sink: _Sink) -> None:
    for topic in load_facts().topics.values():
        for i, item in enumerate(topic.items):
            for j, ask in enumerate(item.asks):
                sink.add(f"fact:{topic.id}", f"fact:{topic.id}:{i}:{j}", ask, item.answer, {},
                         protect={"snr", "rssi", "ack", "lora", "dbm"})


# -- weights and wrapping ---------------------------------------------------------------------------------

_FACT_WEIGHTS = {"snr": 4, "ack": 4, "chunks": 4, "roles": 4, "poor_signal": 4}


@lru_cache(maxsize=1)
def intent_weights() -> dict[str, float]:
    """How much of a dataset each intent gets when there is more material than needed."""
    w = {i.id: i.weight for i in _intents()}
    w.update({f"fact:{t}": float(_FACT_WEIGHTS.get(t, 2)) for t in load_facts().topics})
    w.update({"fake_command": 8.0, "explain": 4.0, "general": 1.5, "archive": 6.0})
    return w


BOT_SYSTEMS = (MESHMASTER_SYSTEM_PROMPT, "", "Mesh assistant. Be brief and accurate.")
CONTEXT_LINES = (("BOB", "anyone copy?"), ("K7AB", "net check at 7"), ("HILL", "good signal here"),
                 ("RV01", "heading out now"), ("BASE", "copy that"), ("MIA", "thanks all"),
                 ("TWR2", "tower is up"), ("JEN", "water at the spring"))


def wrap_meshmaster(examples: list[Example], seed: int, fraction: float = WRAP_FRACTION) -> list[Example]:
    """Give a stable `fraction` of the user turns the shape of Mesh-Master's own prompt."""
    out = []
    for ex in examples:
        h = _h(seed, "wrap", ex.question)
        if (h % 10_000) / 10_000 >= fraction:
            out.append(ex)
            continue
        rng = random.Random(h)
        context = rng.sample(CONTEXT_LINES, rng.choice((0, 1, 1, 2)))
        prompt = meshmaster_prompt(ex.question, context, bot_system=rng.choice(BOT_SYSTEMS))
        out.append(replace(ex, user=prompt))
    return out
