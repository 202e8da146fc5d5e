"""Why a message was flagged: score it again with each part (the subject, a line, a sentence of a long line)
taken out, all in one batch, and rank the parts by how much their removal lowers P(spam).

Occlusion is slower than reading attention weights but it answers the administrator's actual question ("what
would the verdict be without this?") on the exported model itself, with no access to its internals, and it
costs one batched call: the message plus one copy per part.

Parts follow the shape of `message_text`'s output: the decoded Subject, a blank line, then the body's lines.
Only what the model reads is explained: parts beyond its token budget are counted, not scored, because
removing them changes nothing the model sees."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import Message
from typing import TYPE_CHECKING

from spamguard.message_text import mail_subject, message_text

if TYPE_CHECKING:
    import tiktoken

    from spamguard.classifier import Classifier

ScoreBatch = Callable[[list[str]], Sequence[float]]
TextFunction = Callable[[str | bytes | Message], str]

MAX_LINE_CHARS = 200  # a longer line (an HTML paragraph, a wrapped-off body) is split into sentences
MAX_PARTS = 64  # bounds the cost: more parts are merged into runs of neighbouring parts
_SENTENCE = re.compile(r"[^.!?]*(?:[.!?]+|$)\s*")


@dataclass(frozen=True)
class Part:
    kind: str  # subject | line | sentence | lines (a run of merged parts)
    line: int  # 1-based line of the text where the part starts
    start: int  # span in the text, end exclusive; removing the span removes the part and its separator
    end: int
    text: str  # the part itself, without its separator


@dataclass(frozen=True)
class PartEffect:
    part: Part
    score_without: float
    delta: float  # score - score_without: how much this part raises P(spam); negative means it lowers it

    @property
    def delta_logit(self) -> float:
        """The same effect in log-odds, which still separates parts when the score is saturated near 1."""
        return _logit(self.score_without + self.delta) - _logit(self.score_without)


@dataclass(frozen=True)
class Explanation:
    text: str
    score: float
    effects: list[PartEffect]  # largest delta first
    unseen: int  # parts past the model's token budget, not scored

    def lines(self, top: int = 5) -> list[str]:
        """Human-readable lines for `spamguard check --explain`: the change in P(spam), and in log-odds, which
        still tells parts apart when a confident model's score barely moves from 0.999."""
        shown = [
            f"{e.delta:+.4f} (log-odds {e.delta_logit:+.2f})  {e.part.kind} {e.part.line}: {_excerpt(e.part.text)}"
            for e in self.effects[:top]
        ]
        if self.unseen:
            shown.append(f"({self.unseen} parts beyond the model's token budget were not scored)")
        return shown

    def to_list(self, top: int = 5) -> list[dict[str, object]]:
        """The same parts for `check --explain --json`, largest effect first."""
        return [
            {
                "part": e.part.kind,
                "line": e.part.line,
                "text": e.part.text,
                "delta": e.delta,
                "delta_logit": e.delta_logit,
                "score_without": e.score_without,
            }
            for e in self.effects[:top]
        ]


def _logit(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))


def _excerpt(text: str, width: int = 70) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= width else flat[: width - 3] + "...")


def _pieces(line: str, offset: int) -> list[tuple[int, int]]:
    """Sentence spans of a long line (a sentence still too long is cut at word boundaries)."""
    spans = []
    for match in _SENTENCE.finditer(line):
        start, end = match.span()
        while end - start > MAX_LINE_CHARS:
            cut = line.rfind(" ", start + 1, start + MAX_LINE_CHARS)
            cut = cut + 1 if cut > start else start + MAX_LINE_CHARS
            spans.append((offset + start, offset + cut))
            start = cut
        if line[start:end].strip():
            spans.append((offset + start, offset + end))
    return spans


def split_parts(text: str, *, has_subject: bool) -> list[Part]:
    """The subject (everything before the first blank line, when the message has one), then each non-blank
    line of the body, long lines as sentences. Each span includes its trailing separator, so removing it
    leaves a text shaped as message_text would have made it."""
    parts = []
    body_start = 0
    if has_subject:
        cut = text.find("\n\n")
        body_start = len(text) if cut < 0 else cut + 2
        if text[:body_start].strip():
            parts.append(Part("subject", 1, 0, body_start, text[: cut if cut >= 0 else len(text)]))
    position = body_start
    number = text.count("\n", 0, body_start)
    lines = text[body_start:].split("\n")
    for index, content in enumerate(lines):
        number += 1
        length = len(content) + (index < len(lines) - 1)  # with its newline, but the last line has none
        if content.strip():
            if len(content) <= MAX_LINE_CHARS:
                last = index == len(lines) - 1 and position > body_start
                start = position - 1 if last else position  # the last line takes the newline before it
                parts.append(Part("line", number, start, position + length, content))
            else:
                for start, end in _pieces(content, position):
                    parts.append(Part("sentence", number, start, end, text[start:end].strip()))
        position += length
    return parts


def _merge(parts: list[Part], text: str, limit: int) -> list[Part]:
    """Neighbouring body parts merged into runs so that at most `limit` parts remain (the subject stays)."""
    if len(parts) <= limit:
        return parts
    head = [p for p in parts if p.kind == "subject"]
    body = [p for p in parts if p.kind != "subject"]
    size = math.ceil(len(body) / (limit - len(head)))
    runs = [body[i : i + size] for i in range(0, len(body), size)]
    merged = [Part("lines", r[0].line, r[0].start, r[-1].end, text[r[0].start : r[-1].end].strip()) for r in runs]
    return head + merged


def remove_part(text: str, part: Part) -> str:
    return text[: part.start] + text[part.end :]


def visible_chars(encoding: tiktoken.Encoding, text: str, max_tokens: int) -> int:
    """How many leading characters of `text` the model reads within `max_tokens` (truncation keeps the head)."""
    ids = encoding.encode_ordinary(text)
    if len(ids) <= max_tokens:
        return len(text)
    return len(encoding.decode(ids[:max_tokens]))


def explain_text(
    text: str,
    score_batch: ScoreBatch,
    *,
    has_subject: bool = False,
    visible: int | None = None,
    max_parts: int = MAX_PARTS,
) -> Explanation:
    """Rank the parts of an extracted message text. `score_batch` must score *texts as the model reads them*
    (no second extraction); `visible` is how many leading characters the model reads (`visible_chars`)."""
    if max_parts < 2:
        raise ValueError(f"max_parts must be at least 2, got {max_parts}")
    parts = split_parts(text, has_subject=has_subject)
    seen = [p for p in parts if visible is None or p.start < visible]
    seen = _merge(seen, text, max_parts)
    scores = list(score_batch([text] + [remove_part(text, p) for p in seen]))
    if len(scores) != len(seen) + 1:
        raise ValueError(f"score_batch returned {len(scores)} scores for {len(seen) + 1} texts")
    base = float(scores[0])
    effects = [PartEffect(p, float(s), base - float(s)) for p, s in zip(seen, scores[1:], strict=True)]
    effects.sort(key=lambda e: (-e.delta, e.part.start))
    unseen = sum(1 for p in parts if visible is not None and p.start >= visible)
    return Explanation(text, base, effects, unseen)


def has_subject_line(message: str | bytes | Message) -> bool:
    """Whether message_text put a subject first: the message is a mail and its decoded Subject is not blank."""
    return bool(mail_subject(message))


def explain_message(
    message: str | bytes | Message,
    score_batch: ScoreBatch,
    *,
    text_of: TextFunction = message_text,
    visible: Callable[[str], int] | None = None,
    max_parts: int = MAX_PARTS,
) -> Explanation:
    """Explain a raw message: its text by `text_of` (the runtime's message_text by default), parts split as
    that text is shaped, scored by `score_batch` on texts. `visible(text)` gives the characters the model reads."""
    text = text_of(message)
    return explain_text(
        text,
        score_batch,
        has_subject=has_subject_line(message),
        visible=visible(text) if visible else None,
        max_parts=max_parts,
    )


def explain_with_classifier(
    message: str | bytes | Message, classifier: Classifier, *, max_parts: int = MAX_PARTS
) -> Explanation:
    """What `spamguard check --explain` runs: the parts scored by the classifier's own exported model, on the
    text as the model reads it. Texts go straight to tokens (`score_texts`), not through `score_batch`,
    because extracting an already extracted text can change it (a subject such as "From: the desk of ..."
    reads as a mail header)."""
    max_tokens = classifier.bundle.max_tokens
    return explain_message(
        message,
        classifier.score_texts,
        visible=lambda text: visible_chars(classifier.encoding, text, max_tokens),
        max_parts=max_parts,
    )
