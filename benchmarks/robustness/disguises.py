"""The ways spam changes how its words are written, not what they say: one function per disguise, seeded, for
the robustness benchmark (`benchmarks/bench_robustness.py`) and the tests alike.

Each disguise takes a message and a `random.Random` and returns the disguised message of the same type: an SMS
(`str`) is rewritten as text; a mail (`bytes`) has its Subject and text parts rewritten (HTML parts in their text
only, never inside tags, entities, `<head>`, `<style>` or `<script>`). The HTML-only disguises (comment-split
words, hidden padding) turn a mail's plain-text parts into HTML parts (and drop its own HTML alternatives, which
the plain text stood in for), so the disguise reaches what a filter reads; for an SMS they are `None`, since a
phone shows markup as it is.

Reversible disguises leave what the reader sees unchanged, so the model text of the disguised message must equal
that of the plain one (`REVERSIBLE`); leetspeak changes the letters themselves."""

from __future__ import annotations

import email
import email.header
import email.policy
import html
import random
import re
from collections.abc import Callable, Sequence
from email.message import Message
from functools import cache

from spamguard.lookalikes import LATIN_LOOKALIKES

# Subject and parts decoded exactly as the model text decodes them, so only the disguise differs.
from spamguard.message_text import _header_text, _part_text

ZERO_WIDTH = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff")
SOFT_HYPHEN = "\u00ad"
LEET = {"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"}
HAM_WORDS = [
    "meeting",
    "tomorrow",
    "thanks",
    "report",
    "attached",
    "project",
    "schedule",
    "review",
    "please",
    "call",
    "lunch",
    "family",
    "weekend",
    "notes",
    "agenda",
    "draft",
    "update",
    "question",
    "budget",
    "team",
    "office",
    "minutes",
    "invoice",
    "regards",
    "colleague",
]
# Where attackers take look-alikes from: the confusables of Latin letters in these two scripts.
_LOOKALIKE_SCRIPTS = re.compile(r"CYRILLIC|GREEK")

TextDisguise = Callable[[str, random.Random], str]
HtmlDisguise = Callable[[str, random.Random], str]


@cache
def _lookalikes_of() -> dict[str, list[str]]:
    """ASCII letter -> the Cyrillic and Greek letters that imitate it (the inverse of normalize's table)."""
    import unicodedata

    inverse: dict[str, list[str]] = {}
    for char, latin in sorted(LATIN_LOOKALIKES.items()):
        if _LOOKALIKE_SCRIPTS.match(unicodedata.name(char, "")):
            inverse.setdefault(latin, []).append(char)
    return inverse


# --- text disguises: text in, text out ------------------------------------------------------------------------
_WORD = re.compile(r"[A-Za-z]+")


def homoglyphs(rate: float) -> TextDisguise:
    """Replace `rate` of all letters (as far as letters with look-alikes go) by Cyrillic or Greek look-alikes."""

    def disguise(text: str, rng: random.Random) -> str:
        table = _lookalikes_of()
        letters = sum(c.isalpha() for c in text)
        candidates = [i for i, c in enumerate(text) if c in table]
        chosen = rng.sample(candidates, min(len(candidates), round(rate * letters)))
        chars = list(text)
        for i in chosen:
            chars[i] = rng.choice(table[chars[i]])
        return "".join(chars)

    return disguise


def _inside_words(text: str, rng: random.Random, insert: Callable[[random.Random], str], min_len: int) -> str:
    """Insert `insert(rng)` at one random inner position of every ASCII word of at least `min_len` letters."""

    def split(match: re.Match[str]) -> str:
        word = match.group()
        if len(word) < min_len:
            return word
        cut = rng.randrange(1, len(word))
        return word[:cut] + insert(rng) + word[cut:]

    return _WORD.sub(split, text)


def zero_width(text: str, rng: random.Random) -> str:
    """A zero-width character (space, joiner, non-joiner, word joiner, BOM) inside every word of 2+ letters."""
    return _inside_words(text, rng, lambda r: r.choice(ZERO_WIDTH), 2)


def soft_hyphens(text: str, rng: random.Random) -> str:
    """A soft hyphen (shown only at a line break) inside every word of 4+ letters."""
    return _inside_words(text, rng, lambda _r: SOFT_HYPHEN, 4)


def full_width(text: str, rng: random.Random) -> str:
    """Every printable ASCII character as its full-width form (U+FF01-FF5E), spaces as ideographic spaces."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else "\u3000" if c == " " else c for c in text)


def leetspeak(text: str, rng: random.Random) -> str:
    """Half the a/e/i/o/s/t letters of every word of 3+ letters as digits ("free" -> "fr33")."""

    def swap(match: re.Match[str]) -> str:
        word = match.group()
        if len(word) < 3:
            return word
        return "".join(LEET[c.lower()] if c.lower() in LEET and rng.random() < 0.5 else c for c in word)

    return _WORD.sub(swap, text)


# --- HTML-only disguises: HTML in, HTML out -------------------------------------------------------------------
_SPLITTERS = ("<!-- -->", "<b></b>", "<span></span>")


def comment_split(markup: str, rng: random.Random) -> str:
    """Words of 4+ letters split by a comment, an empty inline tag, or as two adjacent spans."""

    def split(match: re.Match[str]) -> str:
        word = match.group()
        if len(word) < 4:
            return word
        cut = rng.randrange(1, len(word))
        form = rng.randrange(3)
        if form == 2:
            return f"<span>{word[:cut]}</span><span>{word[cut:]}</span>"
        return word[:cut] + _SPLITTERS[form] + word[cut:]

    return _in_html_text(markup, lambda text: _WORD.sub(split, text))


def hidden_padding(words: Sequence[str] = HAM_WORDS, count: int = 150) -> HtmlDisguise:
    """`count` ordinary (ham) words hidden before and after the content: display:none, font-size:0 and white
    text on a white background, one of the three chosen per message."""

    def disguise(markup: str, rng: random.Random) -> str:
        def pad() -> str:
            filler = " ".join(rng.choice(words) for _ in range(count))
            style = rng.choice(
                ("display:none", "font-size:0", "color:#ffffff;background-color:#ffffff"),
            )
            return f'<div style="{style}">{filler}</div>'

        return pad() + markup + pad()

    return disguise


# --- applying a disguise to a message -------------------------------------------------------------------------
_PROTECTED = re.compile(
    r"<(head|style|script|title)\b.*?</\1\s*>|<!--.*?-->|<[^>]*>|&#?\w+;", re.IGNORECASE | re.DOTALL
)


def _in_html_text(markup: str, change: Callable[[str], str]) -> str:
    """Apply `change` to the text between tags, leaving markup, entities and unrendered elements alone."""
    pieces, last = [], 0
    for match in _PROTECTED.finditer(markup):
        pieces += [change(markup[last : match.start()]), match.group()]
        last = match.end()
    pieces.append(change(markup[last:]))
    return "".join(pieces)


def _as_html(text: str) -> str:
    return "<html><body>" + html.escape(text, quote=False).replace("\n", "<br>\n") + "</body></html>"


def _set_text(part: Message, text: str, subtype: str) -> None:
    for header in ("Content-Transfer-Encoding", "Content-Type"):
        del part[header]
    part.set_payload(text, charset="utf-8")
    part.set_type(f"text/{subtype}")


def _text_parts(message: Message) -> list[Message]:
    return [
        p
        for p in message.walk()
        if not p.is_multipart()
        and p.get_content_type() in ("text/plain", "text/html")
        and str(p.get("content-disposition", "")).split(";")[0].strip().lower() != "attachment"
    ]


def disguise_mail(
    raw: bytes, rng: random.Random, text: TextDisguise | None = None, markup: HtmlDisguise | None = None
) -> bytes:
    """A mail with its Subject and text parts disguised by `text`, or its (possibly converted) HTML by `markup`."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    if text is not None and message.get("subject") is not None:
        subject = _header_text(message["subject"])
        del message["subject"]
        message["Subject"] = email.header.Header(text(subject, rng), "utf-8")
    parts = _text_parts(message)
    if markup is not None and any(p.get_content_type() == "text/plain" for p in parts):
        for part in parts:  # the HTML alternatives go: the disguised copy of the plain text stands in for them
            if part.get_content_type() == "text/html":
                part.set_payload("")
                part.set_type("application/octet-stream")
        parts = [p for p in parts if p.get_content_type() == "text/plain"]
        for part in parts:
            _set_text(part, _as_html(_part_text(part)), "html")
    for part in parts:
        body = _part_text(part)
        if part.get_content_type() == "text/html":
            body = _in_html_text(body, lambda t: text(t, rng)) if text is not None else body
            body = markup(body, rng) if markup is not None else body
            _set_text(part, body, "html")
        elif text is not None:
            _set_text(part, text(body, rng), "plain")
    return message.as_bytes(policy=email.policy.compat32)


def apply(name: str, message: str | bytes, rng: random.Random) -> str | bytes | None:
    """The disguise `name` (a key of `DISGUISES`) applied to an SMS (`str`) or a mail (`bytes`); None where it
    does not apply (an HTML-only disguise on an SMS)."""
    text, markup = DISGUISES[name]
    if isinstance(message, str):
        return None if text is None else text(message, rng)
    return disguise_mail(message, rng, text, markup)


def _chain(*disguises: TextDisguise) -> TextDisguise:
    def disguise(text: str, rng: random.Random) -> str:
        for step in disguises:
            text = step(text, rng)
        return text

    return disguise


def _every(text: str, rng: random.Random) -> str:
    """Each text disguise on its own share of the words: leetspeak, look-alikes, full width, then zero-width
    characters and soft hyphens inside words."""
    words = text.split(" ")
    for i, word in enumerate(words):
        roll = rng.random()
        if roll < 0.2:
            words[i] = leetspeak(word, rng)
        elif roll < 0.4:
            words[i] = full_width(word, rng)
    return _chain(homoglyphs(0.1), zero_width, soft_hyphens)(" ".join(words), rng)


# name -> (text disguise, HTML disguise); a mail gets both when both are set
DISGUISES: dict[str, tuple[TextDisguise | None, HtmlDisguise | None]] = {
    "homoglyphs-10%": (homoglyphs(0.1), None),
    "homoglyphs-30%": (homoglyphs(0.3), None),
    "zero-width": (zero_width, None),
    "soft-hyphens": (soft_hyphens, None),
    "full-width": (full_width, None),
    "comment-split": (None, comment_split),
    "hidden-padding": (None, hidden_padding()),
    "leetspeak": (leetspeak, None),
    "all": (_every, _chain(comment_split, hidden_padding())),
}
# What a reader sees is unchanged by these: normalization must give the plain message's text back.
REVERSIBLE = ("homoglyphs-10%", "homoglyphs-30%", "zero-width", "soft-hyphens", "full-width", "comment-split",
              "hidden-padding")  # fmt: skip
