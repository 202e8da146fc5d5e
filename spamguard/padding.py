"""Token lists to the model's two inputs (DESIGN.md, ONNX signature): `input_ids` right-padded with `PAD_ID` to
the batch's longest member only, and `lengths`, where the model reads each row (at `lengths - 1`). Training,
the export's checks and the runtime all pad here, so they feed the model the same arrays."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from spamguard.tokenizer import PAD_ID


def pad_batch(token_lists: Sequence[Sequence[int]], pad_id: int = PAD_ID) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids int64 (B, T), lengths int64 (B,)), T the longest list's length."""
    lengths = np.array([len(t) for t in token_lists], dtype=np.int64)
    ids = np.full((len(token_lists), int(lengths.max())), pad_id, dtype=np.int64)
    for row, tokens in enumerate(token_lists):
        ids[row, : len(tokens)] = tokens
    return ids, lengths
