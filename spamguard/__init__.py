"""spamguard: is this message spam? A GPT-2 classifier exported to ONNX, for mail and SMS.

```python
from spamguard import Classifier, is_spam, score
is_spam(raw_mail_bytes)                      # default model, cached per process
clf = Classifier.load("mymodel", threads=2)  # explicit: a name, a bundle path, or None for the default
clf.classify_batch(messages)                 # -> [Verdict(label, score, threshold, model, kind), ...]
```
`import spamguard` stays cheap (numpy and onnxruntime load on first use), so a CLI or a plugin that only
needs the errors or the registry does not pay for the inference engine.

`is_spam` and `score` raise only `spamguard.errors.SpamguardError`s: a caller that catches those never mistakes
a crash for a verdict, and anything unforeseen arrives as a `ScoringError` naming the original type."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import Message
from typing import TYPE_CHECKING, Any

from spamguard.errors import ScoringError, SpamguardError, one_line

if TYPE_CHECKING:
    from spamguard.classifier import Classifier, Verdict

__all__ = ["Classifier", "Verdict", "is_spam", "score"]

_cache: dict[tuple[str, int, str], Classifier] = {}
_cache_lock = threading.Lock()


def __getattr__(name: str) -> Any:
    if name in ("Classifier", "Verdict"):
        from spamguard import classifier

        return getattr(classifier, name)
    raise AttributeError(f"module 'spamguard' has no attribute {name!r}")


def _classifier(model: str | os.PathLike | None, precision: str = "auto") -> Classifier:
    """One classifier per bundle, kept for the process: the module functions are meant for many calls, and
    loading a model takes far longer than scoring. A bundle reinstalled in place (new manifest) is reloaded."""
    from spamguard.bundle import MANIFEST
    from spamguard.classifier import Classifier
    from spamguard.registry import resolve

    path = resolve(model).resolve()
    try:
        stamp = (path / MANIFEST).stat().st_mtime_ns
    except OSError:
        stamp = 0
    key = (str(path), stamp, precision)
    with _cache_lock:
        clf = _cache.get(key)
        if clf is None:
            clf = _cache[key] = Classifier.load(path, precision=precision)
        return clf


@contextmanager
def _only_our_errors() -> Iterator[None]:
    try:
        yield
    except SpamguardError:
        raise
    except Exception as exc:
        raise ScoringError(f"cannot score the message: {one_line(exc)}") from exc


def score(message: str | bytes | Message, *, model: str | os.PathLike | None = None) -> float:
    """P(spam) of one message (raw mail bytes or text, a parsed Message, or SMS text)."""
    with _only_our_errors():
        return _classifier(model).score(message)


def is_spam(
    message: str | bytes | Message, *, model: str | os.PathLike | None = None, threshold: float | None = None
) -> bool:
    """True when the message scores at or above the threshold (the bundle's unless given) and outside the
    bundle's unsure band, if it has one."""
    with _only_our_errors():
        return _classifier(model).classify(message, threshold=threshold).is_spam
