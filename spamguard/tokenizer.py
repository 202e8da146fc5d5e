"""GPT-2's byte-pair encoding, built by tiktoken from BPE files on disk so neither half ever needs the network."""

from __future__ import annotations

from pathlib import Path

import tiktoken
import tiktoken.load

from spamguard.errors import TokenizerError

# GPT-2's pre-tokenizer pattern, as tiktoken's own "gpt2" encoding defines it (tiktoken_ext.openai_public).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
END_OF_TEXT = "<|endoftext|>"
END_OF_TEXT_ID = 50256  # also the pad id of every spamguard model


def load_encoding(encoder_json: Path, vocab_bpe: Path) -> tiktoken.Encoding:
    """Build the encoding from OpenAI's `encoder.json` + `vocab.bpe` (or the hub's identical `vocab.json` +
    `merges.txt`); tiktoken checks that the two files agree, which catches a mismatched pair."""
    for path in (encoder_json, vocab_bpe):
        if not Path(path).is_file():
            raise TokenizerError(f"tokenizer file not found: {path}")
    try:
        ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(str(vocab_bpe), str(encoder_json))
    except (AssertionError, KeyError, ValueError, UnicodeDecodeError) as exc:
        raise TokenizerError(
            f"tokenizer files {encoder_json} and {vocab_bpe} are not a matching GPT-2 BPE pair ({exc!r})"
        ) from exc
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={END_OF_TEXT: END_OF_TEXT_ID},
    )


def encode(encoding: tiktoken.Encoding, text: str, max_tokens: int) -> list[int]:
    """Token ids of untrusted text, cut to the model's budget.

    `encode_ordinary` treats a literal `<|endoftext|>` as plain text (a spammer controls the text), and an empty
    message still yields one token so the model has a last real position to read."""
    ids = encoding.encode_ordinary(text)[:max_tokens]
    return ids or [END_OF_TEXT_ID]
