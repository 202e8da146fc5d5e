"""The bundle's tokenizer: tiktoken's own ranks from the BPE files, and windowed encoding that changes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import tiktoken.load
from hypothesis import given, settings
from hypothesis import strategies as st

from spamguard.errors import TokenizerError
from spamguard.tokenizer import END_OF_TEXT_ID, encode, load_encoding

from conftest import BPE_DIR, MAIL_DIR

ENCODING = load_encoding(BPE_DIR / "encoder.json", BPE_DIR / "vocab.bpe")


def test_ranks_equal_tiktokens_own_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # no copy into /tmp
    expected = tiktoken.load.data_gym_to_mergeable_bpe_ranks(str(BPE_DIR / "vocab.bpe"), str(BPE_DIR / "encoder.json"))
    assert ENCODING._mergeable_ranks == expected
    assert ENCODING.encode_ordinary("Hello world, <|endoftext|>!") == [
        15496,
        995,
        11,
        1279,
        91,
        437,
        1659,
        5239,
        91,
        29,
        0,
    ]


def test_mismatched_or_broken_files_are_refused(tmp_path: Path) -> None:
    merges = (BPE_DIR / "vocab.bpe").read_text(encoding="utf-8").split("\n")
    merges[500], merges[501] = merges[501], merges[500]
    (tmp_path / "vocab.bpe").write_text("\n".join(merges), encoding="utf-8")
    with pytest.raises(TokenizerError, match="are not a matching GPT-2 BPE pair"):
        load_encoding(BPE_DIR / "encoder.json", tmp_path / "vocab.bpe")
    (tmp_path / "encoder.json").write_text(json.dumps(["not", "a", "dict"]))
    with pytest.raises(TokenizerError, match=r"is not a GPT-2 encoder\.json"):
        load_encoding(tmp_path / "encoder.json", BPE_DIR / "vocab.bpe")
    (tmp_path / "encoder.json").write_text("{")
    with pytest.raises(TokenizerError, match="are not GPT-2 BPE files"):
        load_encoding(tmp_path / "encoder.json", BPE_DIR / "vocab.bpe")
    shutil.copy(BPE_DIR / "encoder.json", tmp_path / "e.json")
    with pytest.raises(TokenizerError, match="tokenizer file not found"):
        load_encoding(tmp_path / "e.json", tmp_path / "missing.bpe")


def test_windowed_encoding_equals_full_encoding_on_real_mail() -> None:
    for path in sorted(MAIL_DIR.glob("*/*"))[::5]:
        text = path.read_bytes().decode("latin-1")
        full = ENCODING.encode_ordinary(text)
        for n in (1, 16, 128, 256, 1024):
            assert encode(ENCODING, text, n) == full[:n], (path, n)


PIECES = [*"ab yZ9.'\n\t\r  -é€", "'ll", "'s", "<|endoftext|>", "     "]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=300).map("".join), st.integers(min_value=1, max_value=40))
def test_windowed_encoding_is_exact(text: str, n: int) -> None:
    assert encode(ENCODING, text, n) == (ENCODING.encode_ordinary(text)[:n] or [END_OF_TEXT_ID])


def test_empty_text_still_has_a_token() -> None:
    assert encode(ENCODING, "", 10) == [END_OF_TEXT_ID]
    assert END_OF_TEXT_ID not in encode(ENCODING, "<|endoftext|>", 10)


def test_one_giant_word_costs_bounded_work() -> None:
    ids = encode(ENCODING, "x" * 20_000_000, 64)  # no word boundary at all: cut at the window ceiling
    assert len(ids) == 64
