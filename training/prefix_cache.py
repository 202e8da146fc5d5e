"""The frozen prefix of the model, computed once per example instead of once per epoch.

With the backbone frozen, everything below the first trainable block maps an example to the same hidden states
in every epoch, so training only has to run the tail on stored states. The prefix pass sorts examples by length
(each batch is padded only to its longest member), runs under `torch.no_grad`, in fp32 or under bf16 autocast
(`prefix_precision` chooses: bf16 only where it measurably wins). States are stored per example at its own
length, in fp16 by default (half the memory, and the residual stream's range fits), in memory or, for corpora
larger than the memory budget, in a numpy memmap on disk."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from spamguard.training.export import pad_batch
from spamguard.training.gpt2 import GPT2Classifier
from spamguard.training.prefix_precision import autocast


def memory_budget() -> int:
    """Bytes a cache may hold in memory before it moves to disk: a quarter of the memory free right now."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError, AttributeError):
        return 1 << 30


def length_sorted_chunks(lengths: Sequence[int], batch_size: int) -> Iterator[np.ndarray]:
    """Index batches of similar length: padding each to its longest member then costs almost nothing."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    for begin in range(0, len(order), batch_size):
        yield order[begin : begin + batch_size]


class PrefixCache:
    """Hidden states after block `start - 1` (the input of block `start`), one row range per example.

    Rows of example i are `data[offsets[i]:offsets[i + 1]]`; with `last_only` (only the head trains) each
    example keeps just its last real position, and the tail reads it as a sequence of length 1."""

    def __init__(
        self,
        data: np.ndarray,
        offsets: np.ndarray,
        start: int,
        last_only: bool,
        spill_dir: Path | None = None,
    ) -> None:
        self.data = data  # (positions, C), fp16 or fp32, ndarray or memmap
        self.offsets = offsets  # (N + 1,)
        self.start = start
        self.last_only = last_only
        self.spill_dir = spill_dir  # set when the states live on disk

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    @property
    def on_disk(self) -> bool:
        return self.spill_dir is not None

    def batch(self, indices: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """States of `indices` right-padded with zeros to the longest of them, in fp32 for the tail. Zero rows
        sit after each example's last real position, which causal attention never lets it see."""
        lengths = self.lengths[np.asarray(indices)]
        x = np.zeros((len(lengths), int(lengths.max()), self.data.shape[1]), dtype=np.float32)
        for row, i in enumerate(indices):
            x[row, : lengths[row]] = self.data[self.offsets[i] : self.offsets[i + 1]]
        return torch.from_numpy(x), torch.from_numpy(lengths.astype(np.int64))  # (B, T, C), (B,)

    def close(self) -> None:
        """Drop the states; a cache on disk deletes its file."""
        self.data = np.zeros((0, self.data.shape[1]), dtype=self.data.dtype)
        if self.spill_dir is not None:
            shutil.rmtree(self.spill_dir, ignore_errors=True)
            self.spill_dir = None

    def __enter__(self) -> PrefixCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_cache(
    model: GPT2Classifier,
    token_lists: Sequence[Sequence[int]],
    start: int,
    *,
    last_only: bool = False,
    batch_size: int = 32,
    precision: str = "fp32",
    store_dtype: type[np.floating] = np.float16,
    memory_limit: int | None = None,
    work_dir: Path | None = None,
    desc: str = "prefix cache",
    progress: Callable[..., Iterator] = tqdm,
) -> PrefixCache:
    """Run embeddings + blocks `[0, start)` once over every example (all of them for `last_only`).

    `precision` is a resolved one (`fp32` or `bf16`: `prefix_precision.choose_precision`); `memory_limit` (bytes,
    default: `memory_budget()`) decides between memory and a memmap in a fresh folder under `work_dir` (default:
    the system temp dir)."""
    lengths = [len(t) for t in token_lists]
    if min(lengths, default=1) < 1:
        raise ValueError("every example needs at least one token")
    stored = np.ones(len(lengths), dtype=np.int64) if last_only else np.asarray(lengths, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(stored)]).astype(np.int64)
    shape = (int(offsets[-1]), model.config.n_embd)
    nbytes = shape[0] * shape[1] * np.dtype(store_dtype).itemsize
    spill_dir = None
    if nbytes > (memory_budget() if memory_limit is None else memory_limit):
        spill_dir = Path(tempfile.mkdtemp(prefix="spamguard-prefix-cache-", dir=work_dir))
        data = np.lib.format.open_memmap(spill_dir / "states.npy", mode="w+", dtype=store_dtype, shape=shape)
    else:
        data = np.empty(shape, dtype=store_dtype)
    cache = PrefixCache(data, offsets, start, last_only, spill_dir)
    was_training = model.training
    model.eval()
    chunks = list(length_sorted_chunks(lengths, batch_size))
    try:
        with torch.no_grad(), autocast(precision):
            for chunk in progress(chunks, desc=desc, unit="batch", leave=False):
                ids, chunk_lengths = pad_batch([list(token_lists[i]) for i in chunk])
                hidden = model.prefix(torch.from_numpy(ids), start).float()  # (B, T, C)
                for row, i in enumerate(chunk):
                    n = int(chunk_lengths[row])
                    states = hidden[row, n - 1 : n] if last_only else hidden[row, :n]
                    data[offsets[i] : offsets[i + 1]] = states.numpy()
    except BaseException:
        cache.close()
        raise
    finally:
        model.train(was_training)
    if spill_dir is not None:
        data.flush()
    return cache
