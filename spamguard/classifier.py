"""Scoring with onnxruntime: bundle in, P(spam) and verdicts out, for one message or thousands.

One `InferenceSession` per `Classifier`, created once: it is the expensive part (model load, graph
optimisation), and onnxruntime's `run` is thread-safe, so a milter's worker threads share one classifier.
Everything a classifier holds is immutable after `load` (setting an attribute raises), which is what makes
sharing it safe.

Verify first: every file a classifier uses is read once and checked against its sha256 before anything parses
it, and onnxruntime builds the session from those verified bytes, the weights side file included
(`add_external_initializers_from_files_in_memory`), so it never opens a bundle file itself and a file swapped
or damaged after the check cannot reach it."""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from spamguard.bundle import PRECISIONS, Band, Bundle, KindThreshold, weights_file
from spamguard.cascade import FULL, STUDENT, route
from spamguard.errors import BundleError, SpamguardError
from spamguard.message_text import KINDS, TEXT_VERSION, message_kind, message_text
from spamguard.normalize import main_script
from spamguard.padding import pad_batch
from spamguard.registry import open_model
from spamguard.tokenizer import encode, encoding_from_bytes

if TYPE_CHECKING:
    import tiktoken

MessageLike = str | bytes | Message

# Batches are formed from messages sorted by length and padded to their longest member; a batch stops
# growing at this many rows or this many padded tokens. On a CPU a GPT-2 forward pass is compute-bound from a
# few dozen tokens on (measured: batching 32 SMS saves a few percent over scoring them one by one), so big
# batches buy no speed, while onnxruntime's memory arena keeps the largest batch's activations for good.
MAX_BATCH_ROWS = 32
MAX_BATCH_TOKENS = 1024
# Model metadata key (set by `spamguard.training.quantize.quantize_int8`) saying how activations are quantized.
ACTIVATION_QUANTIZATION_KEY = "spamguard.activation_quantization"


@dataclass(frozen=True)
class Verdict:
    """A decision on one message. `label` is "unsure" when the bundle has an unsure band for the message's kind
    and the score falls in it; unsure is not spam (`is_spam` is False), because calling real mail spam is the
    costly error. `threshold` is the one that applied: the bundle's for the message's `kind`, or the caller's.
    `stage` says which model decided: "student" (the cascade's first stage was sure, `score` is its P(spam))
    or "full" (the bundle's model; always, for a bundle without a student or a cascade turned off)."""

    label: str  # "spam" | "ham" | "unsure"
    score: float  # P(spam) of the model that decided
    threshold: float
    model: str
    kind: str  # "mail" | "sms" (`message_text.message_kind`)
    stage: str = FULL  # "student" | "full" (`spamguard.cascade`)
    reason: str | None = None  # why the label is not the score's: the script guard (`Bundle.unseen_script`)

    @property
    def is_spam(self) -> bool:
        return self.label == "spam"

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "score": self.score,
            "threshold": self.threshold,
            "model": self.model,
            "kind": self.kind,
            "stage": self.stage,
            "reason": self.reason,
        }


def token_script(encoding: tiktoken.Encoding, tokens: Sequence[int]) -> str | None:
    """The main script of the text these tokens spell: one definition for training (`ham_scripts` in the
    manifest) and scoring, on what the model reads (the first `max_tokens` tokens), not the whole message."""
    return main_script(encoding.decode_bytes(list(tokens)).decode("utf-8", "replace"))


def spam_probability(logits: np.ndarray) -> np.ndarray:
    """Softmax of the two logits, taken for the spam class in float64: 1/(1+e^-(s-h)) written with tanh, which
    neither overflows nor loses the scores close to 0 or 1 that thresholds for a low FPR live among."""
    diff = logits[:, 1].astype(np.float64) - logits[:, 0].astype(np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * diff))


def length_batches(
    lengths: Sequence[int], max_rows: int = MAX_BATCH_ROWS, max_tokens: int = MAX_BATCH_TOKENS
) -> Iterator[list[int]]:
    """Indices grouped into batches of similar length (sorted), so padding to the longest member wastes little."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batch: list[int] = []
    for index in order:
        if batch and (len(batch) >= max_rows or (len(batch) + 1) * lengths[index] > max_tokens):
            yield batch
            batch = []
        batch.append(index)
    if batch:
        yield batch


def _providers(ort: Any) -> list[str]:
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def _session(ort: Any, files: dict[str, bytes], threads: int | None, providers: list[str]) -> Any:
    """A session built from a model's verified bytes: `files` holds the graph first, then its weights side file
    if it has one. onnxruntime reads nothing from disk: a graph naming any other external file fails to load."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    # Idle intra-op threads sleep instead of spinning: on a host that also runs an MTA (or other engineers'
    # jobs) spinning threads steal the CPU the other thread needs; measured on this 2-core machine under load,
    # 2 spinning threads were 10-30% slower per message than 2 sleeping ones.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = threads
    graph, *side = files.items()
    if side:
        names, buffers = zip(*side, strict=True)
        # onnxruntime copies what it needs while the session is built; the buffers only have to live until then
        options.add_external_initializers_from_files_in_memory(list(names), list(buffers), [len(b) for b in buffers])
    session = ort.InferenceSession(graph[1], sess_options=options, providers=providers)
    # The Python wrapper keeps the serialized model for a provider fallback that would rebuild the session from
    # it (with the options' in-memory weights gone by then): no fallback, and the model's bytes are freed now
    # rather than held for the process's life (498 MB for an fp32 GPT-2 124M in one file).
    session.disable_fallback()
    session._model_bytes = None
    return session


def session_for_file(ort: Any, graph: os.PathLike, threads: int | None, providers: list[str]) -> Any:
    """A session for an ONNX file outside a bundle (training's own export, the benchmarks), built as a bundle's
    is: its graph and, when the export put them beside it, its weights, read into memory first."""
    graph = Path(graph)
    files = {path.name: path.read_bytes() for path in (graph, weights_file(graph)) if path.is_file()}
    return _session(ort, files, threads, providers)


def _release_free_memory() -> None:
    """Hand the heap memory freed while the session was built (the model file's protobuf, weights before
    packing) back to the system. glibc keeps it in per-thread arenas otherwise: measured on the int8 124M
    bundle, resident memory after loading is then 236 MB or 180 MB depending on thread timing."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to trim


def _rows_independent(session: Any, precision: str) -> bool:
    """Whether a row's logits are independent of the other rows of its batch. True for fp32. An int8 model
    whose activations are quantized with one scale per tensor (onnxruntime's `quantize_dynamic`) lets a long
    batch mate move a message's score, so such a model is run one message at a time; `quantize_int8` marks the
    models it quantizes per row in the model's metadata."""
    metadata = session.get_modelmeta().custom_metadata_map
    return precision == "fp32" or metadata.get(ACTIVATION_QUANTIZATION_KEY) == "per-row"


class _Student(NamedTuple):
    """The cascade's first stage as loaded: its session, the precision it runs in, and its batch rows."""

    session: Any
    precision: str
    max_rows: int


def _load_session(ort: Any, bundle: Bundle, names: list[str], threads: int | None, providers: list[str]) -> Any:
    """A session from a bundle's model files, each read once and checked against its sha256 first."""
    files = {name: bundle.read_verified(name) for name in names}
    try:
        return _session(ort, files, threads, providers)
    except Exception as exc:  # onnxruntime's errors share no base class but Exception
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BundleError(f"cannot load {bundle.path / names[0]}: {message} (reinstall the model)") from exc
    finally:
        files.clear()


def _manifest_digest(bundle: Bundle) -> str:
    """sha256 of the manifest as read (keys sorted): it lists every file's sha256, so it names the model."""
    return hashlib.sha256(json.dumps(bundle.manifest, sort_keys=True).encode()).hexdigest()


def _verified_encoding(bundle: Bundle) -> tiktoken.Encoding:
    """The bundle's tokenizer, built from its files as they were read and checked against their sha256."""
    encoder, bpe = bundle.encoder_json, bundle.vocab_bpe
    try:
        return encoding_from_bytes(bundle.read_verified(encoder.name), bundle.read_verified(bpe.name), encoder, bpe)
    except BundleError:
        raise
    except SpamguardError as exc:
        raise BundleError(f"corrupt bundle {bundle.path}: {exc}") from exc


def _check_text_version(bundle: Bundle) -> None:
    """A model reads messages as the text it was trained on; another text version would score it blind."""
    version = bundle.text_version  # an integer of at least 1 (the manifest's schema)
    if version != TEXT_VERSION:
        fix = (
            "upgrade spamguard (pip install -U spamguard)"
            if version > TEXT_VERSION
            else "retrain the model (spamguard train)"
        )
        raise BundleError(
            f"bundle {bundle.path} was trained on text version {version!r}, this spamguard reads messages as "
            f"version {TEXT_VERSION}: {fix}"
        )


def _run(session: Any, max_rows: int, token_lists: Sequence[Sequence[int]], pad_id: int) -> np.ndarray:
    """P(spam) of each token list through one session, in length batches of at most `max_rows`."""
    scores = np.empty(len(token_lists), dtype=np.float64)
    for batch in length_batches([len(t) for t in token_lists], max_rows=max_rows):
        ids, batch_lengths = pad_batch([token_lists[i] for i in batch], pad_id)
        logits = session.run(["logits"], {"input_ids": ids, "lengths": batch_lengths})[0]
        scores[batch] = spam_probability(logits)
    return scores


class Classifier:
    """A loaded model: `Classifier.load()` once, then `score_batch`/`classify` from any number of threads.
    Immutable: its attributes are read-only properties, and setting or deleting any attribute raises."""

    __slots__ = (
        "_bands",
        "_bundle",
        "_encoding",
        "_identity",
        "_max_rows",
        "_precision",
        "_session",
        "_student",
        "_threads",
    )

    def __init__(
        self,
        bundle: Bundle,
        session: Any,
        encoding: tiktoken.Encoding,
        precision: str,
        threads: int | None,
        student: _Student | None = None,
    ) -> None:
        bands = bundle.cascade.bands if student is not None and bundle.cascade is not None else {}
        values = {
            "_bundle": bundle,
            "_precision": precision,
            "_threads": threads,
            "_session": session,
            "_encoding": encoding,
            "_max_rows": MAX_BATCH_ROWS if _rows_independent(session, precision) else 1,
            "_student": student,
            "_bands": MappingProxyType(dict(bands)),
            "_identity": f"{bundle.path.resolve()}:{_manifest_digest(bundle)}:{precision}:"
            f"cascade={'on' if student is not None else 'off'}",
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a Classifier is immutable: cannot set {name!r} (load another one)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"a Classifier is immutable: cannot delete {name!r}")

    @property
    def bundle(self) -> Bundle:
        return self._bundle

    @property
    def precision(self) -> str:
        """The model actually loaded: "int8" or "fp32"."""
        return self._precision

    @property
    def threads(self) -> int | None:
        return self._threads

    @property
    def cascade(self) -> bool:
        """Whether a student scores first (the bundle has one and `load` was not told `cascade=False`)."""
        return self._student is not None

    @property
    def student_precision(self) -> str | None:
        return self._student.precision if self._student is not None else None

    @property
    def identity(self) -> str:
        """Everything that makes this classifier's verdict on a token list what it is, as one string: the
        bundle's folder, the sha256 of its manifest (which lists every file's), the precision, and whether the
        cascade runs. A verdict cache keys on it, so it never answers for another model."""
        return self._identity

    @classmethod
    def load(
        cls,
        model: str | os.PathLike | None = None,
        *,
        precision: str = "auto",
        threads: int | None = None,
        cascade: bool = True,
    ) -> Classifier:
        """Open a bundle (name, path, `$SPAMGUARD_MODEL` or the default) and start its inference session.

        `precision="auto"` takes the int8 model when the bundle has one (on the CPU; a GPU gets fp32),
        `"fp32"` the full-precision one. `threads` sets onnxruntime's intra-op threads (default: one per
        physical core). A bundle with a student (`spamguard distill`) runs the cascade unless `cascade=False`:
        the student, in the same precision where it has it, decides the messages it is sure of. Any problem
        with the model raises `BundleError`."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        import onnxruntime as ort  # here, not at import: `import spamguard` stays cheap

        bundle = open_model(model, verify=False)  # the manifest is checked; files are hashed as they are read
        _check_text_version(bundle)
        providers = _providers(ort)
        if precision == "auto":
            on_gpu = providers[0] == "CUDAExecutionProvider"
            precision = "int8" if bundle.has_int8 and not on_gpu else "fp32"
        # Start-up time is latency for a `spamguard check` in a procmail recipe: the tokenizer files are read,
        # checked and built on another thread while this one reads and checks the model, then builds the
        # session (C++, no GIL) from the checked bytes.
        with ThreadPoolExecutor(max_workers=1) as pool:
            tokenizer = pool.submit(_verified_encoding, bundle)
            session = _load_session(ort, bundle, bundle.model_files(precision), threads, providers)
            student = None
            if cascade and bundle.cascade is not None:
                models = bundle.cascade.models
                student_precision = precision if precision in models else next(iter(models))
                names = bundle.student_files(student_precision)
                student_session = _load_session(ort, bundle, names, threads, providers)
                rows = MAX_BATCH_ROWS if _rows_independent(student_session, student_precision) else 1
                student = _Student(student_session, student_precision, rows)
            encoding = tokenizer.result()
        _release_free_memory()
        return cls(bundle, session, encoding, precision, threads, student)

    @property
    def encoding(self) -> tiktoken.Encoding:
        """The bundle's tokenizer (for callers that need to know where the token budget ends in a text)."""
        return self._encoding

    def tokens(self, message: MessageLike) -> list[int]:
        """The token ids the model reads for a message: its text, truncated to the bundle's `max_tokens`."""
        return self.text_tokens(message_text(message))

    def text_tokens(self, text: str) -> list[int]:
        """Token ids of a text that already is what the model reads (`message_text`'s output, an `Example` of
        `spamguard.mail_sources`). Extracting it again could change it: a subject such as "From: the desk of
        ..." followed by the body's blank line reads as a mail header block."""
        return encode(self._encoding, text, self.bundle.max_tokens)

    def score_tokens(self, token_lists: Sequence[Sequence[int]]) -> list[float]:
        """The full model's P(spam) of each token list (the `score_*` methods never use the student; the
        `classify_*` methods run the cascade)."""
        return _run(self._session, self._max_rows, token_lists, self.bundle.pad_id).tolist()

    def student_scores(self, token_lists: Sequence[Sequence[int]]) -> list[float]:
        """The student's P(spam) of each token list; `BundleError` when no student is loaded."""
        if self._student is None:
            raise BundleError(f"no student loaded from {self.bundle.path} (none in the bundle, or cascade=False)")
        return _run(self._student.session, self._student.max_rows, token_lists, self.bundle.pad_id).tolist()

    def score_batch(self, messages: Iterable[MessageLike]) -> list[float]:
        """The full model's P(spam) for each message, in order: batched by length, padded only to each batch's
        longest member."""
        return self.score_tokens([self.tokens(m) for m in messages])

    def score_texts(self, texts: Iterable[str]) -> list[float]:
        """P(spam) for texts that already are what the model reads (see `text_tokens`), in order."""
        return self.score_tokens([self.text_tokens(t) for t in texts])

    def score(self, message: MessageLike) -> float:
        return self.score_batch([message])[0]

    def verdict(
        self, score: float, kind: str, threshold: float | None = None, stage: str = FULL, script: str | None = None
    ) -> Verdict:
        """The decision on a score for a message of this kind: the bundle's threshold and unsure band for the
        kind; a `threshold` given here replaces the threshold of every kind (the unsure band still applies). A
        message written mainly in a `script` the model saw too little ham in is unsure, with the reason."""
        band = self._bundle.unsure_for(kind)
        threshold = self._bundle.threshold_for(kind) if threshold is None else float(threshold)
        reason = self._bundle.unseen_script(kind, script)
        label = "unsure" if reason else KindThreshold(threshold, band).label(score)
        return Verdict(label, score, threshold, self._bundle.name, kind, stage, reason)

    def script(self, tokens: Sequence[int]) -> str | None:
        """The main script (`normalize.main_script`) of what the model reads of a message: its tokens, decoded.
        None when the bundle does not ask (`Bundle.unseen_script`), which spares the decoding."""
        if not self._bundle.ham_scripts:
            return None
        return token_script(self._encoding, tokens)

    def band_for(self, kind: str, threshold: float | None = None) -> Band | None:
        """The band in which the full model decides for this kind, None when it decides everything: no band
        for the kind, or a threshold other than the one the band was chosen for."""
        band = self._bands.get(kind)
        if band is None or (threshold is not None and float(threshold) != self._bundle.threshold_for(kind)):
            return None
        return band

    def classify_tokens(
        self, token_lists: Sequence[Sequence[int]], kinds: Sequence[str], *, threshold: float | None = None
    ) -> list[Verdict]:
        """Verdicts on token lists of messages of these kinds. With a cascade, the student scores the whole
        batch and only the messages it is not sure of (`spamguard.cascade`) go to the full model, as one batch."""
        if len(kinds) != len(token_lists):
            raise ValueError(f"{len(token_lists)} token lists but {len(kinds)} kinds")
        scripts = [self.script(tokens) for tokens in token_lists]
        if self._student is None:
            scores = self.score_tokens(token_lists)
            stages = [FULL] * len(scores)
        else:
            scores = self.student_scores(token_lists)
            stages = [STUDENT] * len(scores)
            routed = route(scores, [self.band_for(kind, threshold) for kind in kinds])
            for index, score in zip(routed, self.score_tokens([token_lists[i] for i in routed]), strict=True):
                scores[index], stages[index] = score, FULL
        return [
            self.verdict(score, kind, threshold, stage, script)
            for score, kind, stage, script in zip(scores, kinds, stages, scripts, strict=True)
        ]

    def classify(self, message: MessageLike, *, threshold: float | None = None) -> Verdict:
        """The verdict on one message, with the threshold of its kind (`message_kind`) unless one is given."""
        return self.classify_batch([message], threshold=threshold)[0]

    def classify_batch(self, messages: Iterable[MessageLike], *, threshold: float | None = None) -> list[Verdict]:
        messages = list(messages)
        tokens = [self.tokens(m) for m in messages]
        return self.classify_tokens(tokens, [message_kind(m) for m in messages], threshold=threshold)

    def classify_texts(
        self, texts: Sequence[str], kinds: str | Sequence[str], *, threshold: float | None = None
    ) -> list[Verdict]:
        """Verdicts on texts that already are what the model reads (see `text_tokens`). Their kind cannot be
        told from the text any more (a mail's text has lost its header block), so the caller says it: one kind
        for all of them, or one per text (an `Example`'s)."""
        kinds = [kinds] * len(texts) if isinstance(kinds, str) else list(kinds)
        if len(kinds) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(kinds)} kinds")
        for kind in set(kinds) - set(KINDS):
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        return self.classify_tokens([self.text_tokens(t) for t in texts], kinds, threshold=threshold)
