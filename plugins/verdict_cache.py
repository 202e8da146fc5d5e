"""The verdict cache of the scoring pool: the same text from the same model gets the same verdict, so a server
answers a repeated message (a campaign sends one text thousands of times; mailing lists and receipts repeat
too) without running the model again.

The key is a hash of what decides the verdict and nothing else: the model's identity (`Classifier.identity`:
bundle folder, manifest sha256, precision, cascade on or off) and the threshold the pool applies, the message's
kind, and the token ids the model reads. So a cache shared by several pools (or a pool given a cache that a
previous model filled) never answers for another model or threshold, and two messages that differ only where
the model does not read (past `max_tokens`, in headers the text leaves out) share an entry. The hash is
BLAKE2b with a 256-bit digest: a sender who controls both texts cannot make a spam collide with a ham's key.

Bounded twice: at most `max_entries` verdicts and about `max_bytes` of memory (each entry counted as the
memory its key, verdict and slot take, `entry_bytes`); the least recently used entry goes first."""

from __future__ import annotations

import hashlib
import sys
import threading
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spamguard.classifier import Verdict

DEFAULT_ENTRIES = 100_000
DEFAULT_BYTES = 64 * 1024**2
# What the cache's own structure holds per entry besides the key and verdict objects: the OrderedDict's table slot
# and order node, the (verdict, size) pair and the size. Measured with tracemalloc on CPython 3.11: 226 bytes per
# entry over 20,000 entries whose keys and verdicts already existed (which add 289 by `sys.getsizeof`).
_SLOT_BYTES = 226


def entry_bytes(key: bytes, verdict: Verdict) -> int:
    """Memory one entry holds: its key, the verdict object with its attribute dict and two floats, its slot.
    The verdict's strings (label, kind, stage, model name) are shared by every verdict and not counted."""
    return sys.getsizeof(key) + sys.getsizeof(verdict) + sys.getsizeof(verdict.__dict__) + 2 * 24 + _SLOT_BYTES


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    entries: int
    bytes: int
    evictions: int
    max_entries: int
    max_bytes: int

    @property
    def hit_rate(self) -> float:
        looked_up = self.hits + self.misses
        return self.hits / looked_up if looked_up else 0.0


class VerdictCache:
    """A bounded LRU map from `key(...)` to verdicts, safe to use from several threads."""

    def __init__(self, max_entries: int = DEFAULT_ENTRIES, max_bytes: int = DEFAULT_BYTES) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError(f"a cache needs room: max_entries {max_entries}, max_bytes {max_bytes}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[bytes, tuple[Verdict, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._bytes = self._hits = self._misses = self._evictions = 0

    @staticmethod
    def key(identity: str, kind: str, tokens: Sequence[int]) -> bytes:
        """The key of a message: `identity` says whose verdict (the model and the threshold applied), `kind`
        and `tokens` what the model reads. Each part is length-prefixed, so no two splits read the same."""
        digest = hashlib.blake2b(digest_size=32)
        for part in (identity.encode("utf-8", "surrogatepass"), kind.encode("ascii")):
            digest.update(len(part).to_bytes(4, "big") + part)
        digest.update(array("I", tokens).tobytes())
        return digest.digest()

    def get(self, key: bytes) -> Verdict | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                self._misses += 1
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return found[0]

    def put(self, key: bytes, verdict: Verdict) -> None:
        size = entry_bytes(key, verdict)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._entries[key] = (verdict, size)
            self._bytes += size
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped
                self._evictions += 1

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                self._hits,
                self._misses,
                len(self._entries),
                self._bytes,
                self._evictions,
                self.max_entries,
                self.max_bytes,
            )
