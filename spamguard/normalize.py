"""Text as a reader sees it: the same letters however they were encoded.

GPT-2's byte-level BPE reads code points, not glyphs: Cyrillic "а" for Latin "a", a zero-width space or a soft
hyphen inside a word, full-width or mathematical-bold letters all turn one familiar spam word into a string of
rare tokens, while the person reading sees the same word. `normalize_text` undoes those disguises:

1. combining-mark runs longer than `MAX_MARKS` are cut (Unicode's stream-safe limit, UAX #15): no script needs
   more, and CPython's normalizer sorts a run of marks by insertion, quadratic in its length;
2. invisible format characters are removed: Unicode category Cf and the Default_Ignorable_Code_Point property
   (zero-width spaces and joiners, bidi controls, soft hyphen, variation selectors, tag characters, fillers),
   except the prepended concatenation marks (visible Arabic number signs) and ZWJ/ZWNJ next to letters of the
   scripts whose spelling needs them (Arabic, Indic, emoji sequences);
3. NFKC: full-width, ligature, mathematical and other compatibility forms become the plain characters (but
   Thai/Lao SARA AM, and full-width punctuation beside CJK text, which those scripts write as a matter of course);
4. letters of another script that imitate Latin letters (Unicode TR39 confusables, as the
   `confusable_homoglyphs` package publishes them, generated into `spamguard.lookalikes`) become those Latin
   letters, inside words that mix them with Latin letters, and in words made only of such look-alikes when no
   neighbouring word is written in their script. A word written in another script (Russian, Greek, Chinese) stays
   as it is, and so does a word that mixes Latin with letters that have no Latin look-alike ("Приветcafé" from
   two joined encoded words).

5. leetspeak: in every run of ASCII letters and digits that holds a letter, the digits that imitate letters (0 o, 1
   i or l, 3 e, 4 a, 5 s, 7 t) become those letters: "fr33" -> "free", "m0n3y" -> "money", "FR33" -> "FREE",
   "Sh0p.We" -> "Shop.We". A "1" reads as "l" when that gives a word GPT-2's vocabulary holds whole and "i" does not
   ("c1ick" -> "click", `spamguard.known_words`), as "i" otherwise. Digits also write "mp3", "5am", "W45WQ", "win32"
   and hashes, and these change too ("mpe", "sam", "WASWQ", "wine2"): the model reads the same text in training as
   in scoring, so what it loses is the rare difference between a digit and its letter ("5am" and "sam" read alike),
   while rules that kept some digits inside words (text versions 3 and 4) left leetspeak ham reading like the spam
   those digits came from (docs/robustness.md measures both). A run without letters ("2024", "0800 123 4567") stays
   as written, and so does a word whose every letter was written as a digit ("533" for "see"): nothing says it was a
   word. Letters keep their case; a digit becomes a capital in a run of two or more letters, all capitals.

The result is idempotent (normalizing twice changes nothing), so text that is already normalized (an `Example`
from `spamguard.mail_sources`) can go through again. Time is linear in the text."""

from __future__ import annotations

import unicodedata
from functools import cache

import regex

from spamguard.lookalikes import LATIN_LOOKALIKES

MAX_MARKS = 30  # UAX #15 stream-safe text format: at most 30 non-starters in a row

_LONG_MARK_RUNS = regex.compile(rf"(\p{{M}}{{{MAX_MARKS}}})\p{{M}}+")
_JOINERS = "\u200c\u200d"
# Format characters to drop, except the visible prepended concatenation marks and the two joiners (below).
_FORMAT = regex.compile(
    r"[[\p{Cf}\p{Default_Ignorable_Code_Point}]--[\p{Prepended_Concatenation_Mark}\u200c\u200d]]+", regex.V1
)
# ZWJ/ZWNJ carry meaning after letters of scripts that join (Arabic, Indic...) and inside emoji sequences;
# after Latin, Common or Inherited characters (and at the start) they only split a word.
_STRAY_JOINERS = regex.compile(
    r"(?<![^\p{Script=Latin}\p{Script=Common}\p{Script=Inherited}]|\p{Extended_Pictographic}|\p{Emoji_Modifier})"
    r"[\u200c\u200d]+"
)
# Words; scripts written without spaces between words (CJK, Thai...) are cut from Latin glued to them ("IT분야").
_UNSPACED = r"\p{Han}\p{Hangul}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}"
_WORDS = regex.compile(rf"[{_UNSPACED}]+|[^\W{_UNSPACED}]+")
_CJK = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}\u3001-\u303f"
_WIDE_PUNCTUATION = r"\u3000\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65"
_KEEP = regex.compile(rf"[\u0e33\u0eb3]+|(?<=[{_CJK}])[{_WIDE_PUNCTUATION}]+|[{_WIDE_PUNCTUATION}]+(?=[{_CJK}])")
_TRANSLATION = str.maketrans(LATIN_LOOKALIKES)
_LATIN_LETTER = regex.compile(r"\p{Script=Latin}")


def normalize_text(text: str) -> str:
    """`text` with the disguises above undone (see the module docstring for each step and why)."""
    if text.isascii():
        return undo_leetspeak(text)  # ASCII has no format characters, compatibility forms or other scripts
    text = _LONG_MARK_RUNS.sub(r"\1", text)
    text = _FORMAT.sub("", text)
    text = _STRAY_JOINERS.sub("", text)
    text = _nfkc(text)
    if not text.isascii():
        mapped = _unmask_words(text)
        # A look-alike mapped next to a combining mark can compose with it ("а" + U+0301 -> "á").
        text = _nfkc(mapped) if mapped is not text else text
    return undo_leetspeak(text)


# The digits leetspeak writes for letters ("1" for "i" or "l"): the one table that undoing it here and imitating it
# in training (`spamguard.training.augment`) both read.
LEET_DIGITS = {"0": "o", "1": "il", "3": "e", "4": "a", "5": "s", "7": "t"}
# Step 5's unit: a run of ASCII letters and digits (a digit imitates a letter only inside one). What leetspeak
# leaves after the step is counted run by run too (`benchmarks/leet_residue.py`, the augmentation's tests).
RUN = "[A-Za-z0-9]+"
# A run that holds a letter and a digit imitating one.
_LEET_RUN = regex.compile(rf"(?<![A-Za-z0-9])(?=[A-Za-z0-9]*[A-Za-z])(?=[A-Za-z0-9]*[{''.join(LEET_DIGITS)}]){RUN}")
_AS_I = str.maketrans({digit: letters[0] for digit, letters in LEET_DIGITS.items()})
_AS_L = str.maketrans({digit: letters[-1] for digit, letters in LEET_DIGITS.items()})


def undo_leetspeak(text: str) -> str:
    """Step 5 of the module docstring on its own. It maps characters one for one, so a text keeps its length and
    its words their places (`benchmarks/text_unchanged.py` lines the two up to list what it changed)."""
    return _LEET_RUN.sub(_unleet_run, text)


def _unleet_run(match: regex.Match[str]) -> str:
    run = match.group()
    lower = run.lower()
    letters = lower.translate(_AS_I)
    if "1" in run and letters not in _known_words():
        as_l = lower.translate(_AS_L)
        letters = as_l if as_l in _known_words() else letters
    capitals = [c.isupper() for c in run if c.isalpha()]
    if len(capitals) > 1 and all(capitals):  # "FR33"; one capital is a word's first letter ("T34" -> "Tea")
        return letters.upper()
    return "".join(c if c.isalpha() else new for c, new in zip(run, letters, strict=True))


@cache
def _known_words() -> frozenset[str]:
    """Read on the first "1" inside a word: most messages have none."""
    from spamguard.known_words import KNOWN_WORDS

    return frozenset(KNOWN_WORDS)


def _nfkc(text: str) -> str:
    """NFKC, except for the compatibility characters that other scripts write as a matter of course: Thai and
    Lao SARA AM, and full-width punctuation and the ideographic space next to CJK text ("开会，请")."""
    if not _KEEP.search(text):
        return unicodedata.normalize("NFKC", text)
    pieces, last = [], 0
    for match in _KEEP.finditer(text):
        pieces += [unicodedata.normalize("NFKC", text[last : match.start()]), match.group()]
        last = match.end()
    pieces.append(unicodedata.normalize("NFKC", text[last:]))
    return "".join(pieces)


_LATIN, _MIXED, _LOOKALIKE, _OTHER = "latin", "mixed", "lookalike", "other"


@cache
def _classes() -> tuple[regex.Pattern[str], regex.Pattern[str]]:
    """Character classes of the look-alike letters and of the letters that are neither Latin nor look-alikes."""
    lookalikes = "".join(regex.escape(c) for c in sorted(LATIN_LOOKALIKES))
    return regex.compile(f"[{lookalikes}]"), regex.compile(rf"[\p{{L}}--\p{{Script=Latin}}--[{lookalikes}]]", regex.V1)


def _kind(word: str) -> str | None:
    """How a word is written: Latin, Latin mixed with look-alikes, only look-alikes, or another script; None
    for a word without letters (numbers), which does not count as a neighbour."""
    if word.isascii():
        return _LATIN if any(c.isalpha() for c in word) else None
    lookalike, other = _classes()
    if other.search(word):
        return _OTHER  # a letter that imitates nothing: this word is written in its own script
    has_lookalike = lookalike.search(word) is not None
    if _LATIN_LETTER.search(word):
        return _MIXED if has_lookalike else _LATIN
    return _LOOKALIKE if has_lookalike else None


def _script(char: str) -> str:
    """A letter's script, as the first word of its Unicode name ("LATIN", "CYRILLIC", "GREEK", "CJK", "HANGUL")."""
    return unicodedata.name(char, "").partition(" ")[0]


def _scripts(word: str) -> set[str]:
    """The scripts of a word's letters."""
    return {_script(c) for c in word if c.isalpha()}


SCRIPT_SAMPLE = 4096  # characters read to find a text's main script: a model reads at most a few thousand


def main_script(text: str) -> str | None:
    """The script most of a text's letters are written in (`_script`: "LATIN", "CYRILLIC", "CJK"...), None for
    a text without letters. A model only knows the scripts its training ham was written in
    (`Bundle.unseen_script`)."""
    sample = text[:SCRIPT_SAMPLE]
    if sample.isascii():
        return "LATIN" if any(c.isalpha() for c in sample) else None
    counts: dict[str, int] = {}
    for char in sample:
        if char.isalpha():
            script = _script(char)
            counts[script] = counts.get(script, 0) + 1
    return max(counts, key=counts.__getitem__) if counts else None


def _unmask_words(text: str) -> str:
    table = _TRANSLATION
    words = [(m.start(), m.end(), _kind(m.group())) for m in _WORDS.finditer(text)]
    words = [w for w in words if w[2] is not None]
    if not any(kind in (_MIXED, _LOOKALIKE) for _s, _e, kind in words):
        return text
    unmask = [kind == _MIXED for _s, _e, kind in words]
    # A run of look-alike-only words is unmasked when words stand around it and none of them is written in the
    # run's own script: "а" in "get а loan" or "ΙΤ" among Korean words, but not "с" in Russian "с другом".
    index = 0
    while index < len(words):
        if words[index][2] != _LOOKALIKE:
            index += 1
            continue
        end = index
        while end < len(words) and words[end][2] == _LOOKALIKE:
            end += 1
        scripts = _scripts("".join(text[s:e] for s, e, _k in words[index:end]))
        around = [words[i] for i in (index - 1, end) if 0 <= i < len(words)]
        # a mixed word is a Latin word (its look-alikes are what is being undone)
        if around and not any(kind == _OTHER and scripts & _scripts(text[s:e]) for s, e, kind in around):
            for i in range(index, end):
                unmask[i] = True
        index = end
    pieces = []
    last = 0
    for (start, end, _), flag in zip(words, unmask, strict=True):
        if flag:
            pieces.append(text[last:start])
            pieces.append(text[start:end].translate(table))
            last = end
    if last == 0:
        return text
    pieces.append(text[last:])
    return "".join(pieces)
