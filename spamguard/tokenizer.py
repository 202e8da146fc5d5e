"""GPT-2's byte-pair encoding, built by tiktoken from BPE files on disk so neither half ever needs the network.

tiktoken is imported when an encoding is built, not with this module: the bundle writer and `spamguard models`
need `PAD_ID` without paying for it."""

from __future__ import annotations

import json
import re
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING

from spamguard.errors import TokenizerError

if TYPE_CHECKING:
    import tiktoken

# GPT-2's pre-tokenizer pattern, as tiktoken's own "gpt2" encoding defines it (tiktoken_ext.openai_public).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
END_OF_TEXT = "<|endoftext|>"
END_OF_TEXT_ID = 50256
# Every spamguard model pads with GPT-2's end-of-text: the export, training batches, the runtime and the bundle
# manifest all take it from here. Its embedding never reaches a verdict, which is read at the last real token.
PAD_ID = END_OF_TEXT_ID

# The first window of text `encode` tokenizes, in characters per wanted token. English runs at about 4
# characters per token; the window grows when a text is denser than this.
_CHARS_PER_TOKEN = 8
# A cut is exact only between a non-space and a space (see `_cut`); a text with no such place in this many
# characters (one giant "word") is cut there anyway, so garbage costs bounded work.
_MAX_WINDOW = 1 << 20
_SPACE_AFTER_WORD = re.compile(r"\s(?=\S)")  # read backwards: a word ends here


def _data_gym_alphabet() -> dict[int, int]:
    """GPT-2's files spell bytes as printable characters: printable Latin-1 bytes stand for themselves, the
    others (space, control bytes...) are shifted to U+0100 onwards. Returns the str.translate table back."""
    printable = {b for b in range(256) if chr(b).isprintable() and chr(b) != " "}
    shifted = [b for b in range(256) if b not in printable]
    return {256 + i: b for i, b in enumerate(shifted)}


def _single_byte_order() -> list[int]:
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    return printable + [b for b in range(256) if b not in printable]


def _mergeable_ranks(
    encoder_data: bytes, vocab_data: bytes, encoder_json: Path | str, vocab_bpe: Path | str
) -> dict[bytes, int]:
    """The same ranks as `tiktoken.load.data_gym_to_mergeable_bpe_ranks`, with the same consistency check
    (tiktoken assumes rank order is merge priority, so the merges must list the tokens 256.. in rank order),
    in a fifth of the time and without the copy it writes into /tmp: process start matters on a mail host.
    Takes the files' bytes (named for messages), so a caller that verified them builds from what it checked."""
    try:
        encoder = json.loads(encoder_data)
        merges = vocab_data.decode("utf-8").split("\n")[1:-1]
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise TokenizerError(f"tokenizer files {encoder_json} and {vocab_bpe} are not GPT-2 BPE files ({exc})") from exc
    if not isinstance(encoder, dict):
        raise TokenizerError(f"tokenizer file {encoder_json} is not a GPT-2 encoder.json")
    encoder.pop(END_OF_TEXT, None)
    tokens: list[str | None] = [None] * len(encoder)
    for token, rank in encoder.items():
        if isinstance(rank, int) and 0 <= rank < len(tokens):
            tokens[rank] = token
    table = _data_gym_alphabet()
    singles = [t.translate(table).encode("latin-1") if t and len(t) == 1 else None for t in tokens[:256]]
    consistent = (
        None not in tokens
        and singles == [bytes([b]) for b in _single_byte_order()]
        and len(merges) == len(tokens) - 256
        and all(m.count(" ") == 1 for m in merges)
        and [m.replace(" ", "") for m in merges] == tokens[256:]
    )
    if not consistent:
        raise TokenizerError(f"tokenizer files {encoder_json} and {vocab_bpe} are not a matching GPT-2 BPE pair")
    try:
        data = "".join(tokens).translate(table).encode("latin-1")  # type: ignore[arg-type]
    except UnicodeEncodeError as exc:
        raise TokenizerError(f"tokenizer file {encoder_json} holds characters outside GPT-2's byte alphabet") from exc
    ends = list(accumulate(len(t) for t in tokens))  # type: ignore[arg-type]
    return {data[end - len(t) : end]: rank for rank, (t, end) in enumerate(zip(tokens, ends, strict=True))}  # type: ignore[arg-type]


def load_encoding(encoder_json: Path, vocab_bpe: Path) -> tiktoken.Encoding:
    """Build the encoding from OpenAI's `encoder.json` + `vocab.bpe` (or the hub's identical `vocab.json` +
    `merges.txt`); a mismatched pair is refused, as tiktoken's own loader does."""

    for path in (encoder_json, vocab_bpe):
        if not Path(path).is_file():
            raise TokenizerError(f"tokenizer file not found: {path}")
    return encoding_from_bytes(Path(encoder_json).read_bytes(), Path(vocab_bpe).read_bytes(), encoder_json, vocab_bpe)


def encoding_from_bytes(
    encoder_data: bytes, vocab_data: bytes, encoder_json: Path | str, vocab_bpe: Path | str
) -> tiktoken.Encoding:
    """`load_encoding` from the two files' contents (a bundle's, verified against their sha256 as they were
    read); the names only label errors."""
    import tiktoken

    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=_mergeable_ranks(encoder_data, vocab_data, encoder_json, vocab_bpe),
        special_tokens={END_OF_TEXT: END_OF_TEXT_ID},
    )


def _cut(text: str, limit: int) -> str:
    """The longest head of `text` of at most `limit` characters that ends between a non-space and a space.

    Every GPT-2 pre-token holding a non-space character is at most one leading space plus non-spaces, so no
    pre-token crosses such a place, and BPE works within pre-tokens: the tokens of the head are exactly the
    first tokens of the whole text."""
    if len(text) <= limit:
        return text
    found = _SPACE_AFTER_WORD.search(text[limit::-1])  # text read backwards from position `limit`
    return text[: limit - found.start()] if found else text[:limit]


def encode(encoding: tiktoken.Encoding, text: str, max_tokens: int) -> list[int]:
    """Token ids of untrusted text, cut to the model's budget.

    `encode_ordinary` treats a literal `<|endoftext|>` as plain text (a spammer controls the text), and an empty
    message still yields one token so the model has a last real position to read. Only a head of the text that
    is sure to hold `max_tokens` tokens is tokenized, so a long mail costs no more than a short one."""
    window = max(max_tokens * _CHARS_PER_TOKEN, 64)
    while True:
        head = _cut(text, window)
        ids = encoding.encode_ordinary(head)
        if len(ids) >= max_tokens or len(head) == len(text) or window >= _MAX_WINDOW:
            break
        window *= 4
    return ids[:max_tokens] or [END_OF_TEXT_ID]
