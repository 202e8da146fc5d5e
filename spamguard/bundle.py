"""The model bundle: the only thing the runtime reads, and the one thing training writes for it.

A bundle is a folder: `spamguard.json` (the manifest), `model.onnx` (+ optional `model.int8.onnx`), each
with its weights in a `.data` side file when the export put them there, and the GPT-2 BPE files. The manifest
records every file's sha256, so a truncated copy or a swapped model is caught at load time instead of producing
quietly wrong verdicts.

A bundle is input like any other: it may come from anywhere. Every manifest field the runtime reads is checked
on load against one table (`MANIFEST_FIELDS`: type, range, and file names that stay inside the bundle), and a
bad value is one line naming the field. Bundle files are opened only as regular files of the bundle folder
itself (no links, no FIFOs or devices), with a size limit, and a file the runtime uses is read once: hashed
while its bytes are in memory, and those very bytes are what the caller gets (`Bundle.read_verified`), so no
file can change between the check and its use."""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO, TypeVar

from spamguard import safe_files
from spamguard.datasets import LABEL_NAMES
from spamguard.errors import BundleError
from spamguard.message_text import KINDS
from spamguard.tokenizer import PAD_ID

MANIFEST = "spamguard.json"
FORMAT = "spamguard-bundle"
FORMAT_VERSION = 1
ENCODER_FILE = "encoder.json"
BPE_FILE = "vocab.bpe"
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
DATA_SUFFIX = ".data"  # ONNX external data: a model's weights beside its graph file
PRECISIONS = ("auto", "int8", "fp32")  # which model of a bundle to run: auto takes int8 when there is one
MODEL_PRECISIONS = ("fp32", "int8")  # the models a bundle can hold

# Limits on what a bundle may make the runtime read. GPT-2 XL's fp32 weights are 6.2 GB; nothing a bundle holds
# comes near 8 GiB. The manifest is a few kilobytes (training reports per data source included).
MAX_FILE_BYTES = 8 << 30
MAX_BUNDLE_BYTES = 16 << 30  # all files together (`spamguard models install` copies them)
MAX_FILES = 32  # a bundle has up to 11 (two models and a student's two, their weights, tokenizer, curves, checkpoint)
MAX_MANIFEST_BYTES = 4 << 20
MAX_TOKENS_LIMIT = 1 << 16  # above any GPT-2 position table (1024); model_config.n_positions bounds it further
# A model name is printed in verdicts, mail headers and logs, and names a folder of the models dir: a safe token.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# A threshold is a P(spam) in [0, 1], or the one value just above 1 that training writes when no threshold meets
# the false-positive target (`metrics.threshold_for_fpr`): the model then flags nothing.
THRESHOLD_MAX = math.nextafter(1.0, 2.0)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")  # plain: no separator, no leading dot, no control


def check_name(name: str) -> str:
    """A model name is a safe token: it names a folder, and it is printed in verdicts, headers and logs."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        shown = f"{name!a}" if isinstance(name, str) else _show(name)
        raise BundleError(f"invalid model name {shown}: use letters, digits, '.', '_' or '-' (at most 64)")
    return name


def weights_file(graph: Path) -> Path:
    """Where ONNX external data puts a model's weights: beside the graph, under the graph's name + `.data`
    (the graph records that name, so the two files travel together)."""
    graph = Path(graph)
    return graph.with_name(graph.name + DATA_SUFFIX)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- the manifest schema ----------------------------------------------------------------------------------------

_T = TypeVar("_T")


class _Invalid(Exception):
    """A manifest value is wrong: `problem` says what it must be, `keys` where it lies below the field (the
    caller adds the field and the bundle)."""

    def __init__(self, problem: str, keys: tuple[str, ...] = ()) -> None:
        super().__init__(problem)
        self.problem = problem
        self.keys = keys

    def under(self, key: str) -> _Invalid:
        return _Invalid(self.problem, (key, *self.keys))


def _show(value: object) -> str:
    """A value as one short line of ASCII, whatever a manifest put there (newlines, control characters, megabytes)."""
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        text = ascii(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(value: Any, low: float, high: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Invalid(f"must be {what}, not {_show(value)}")
    if not low <= value <= high:
        raise _Invalid(f"must be {what}, not {_show(value)}")
    return float(value)


def _integer(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _Invalid(f"must be an integer from {low} to {high}, not {_show(value)}")
        return value

    return parse


def _threshold(value: Any) -> float:
    return _number(value, 0.0, THRESHOLD_MAX, "a number from 0 to 1")


def _band(value: Any) -> tuple[float, float] | None:
    """`null` or `[low, high]`: scores in `low <= score < high` are unsure (`spamguard.thresholds`)."""
    if value is None:
        return None
    what = "null or [low, high] with 0 <= low < high <= 1"
    if not isinstance(value, list) or len(value) != 2:
        raise _Invalid(f"must be {what}, not {_show(value)}")
    low, high = (_number(v, 0.0, 1.0, what) for v in value)
    if not low < high:
        raise _Invalid(f"must be {what}, not {_show(value)}")
    return low, high


def _record(value: Any, fields: Mapping[str, Callable[[Any], Any]], what: str) -> dict[str, Any]:
    """An object holding these keys, each parsed (a missing key is parsed as `null`); a problem says under which
    key it lies. Other keys describe and are left alone."""
    if not isinstance(value, dict):
        raise _Invalid(f"must be {what}, not {_show(value)}")
    parsed = {}
    for key, parse in fields.items():
        try:
            parsed[key] = parse(value.get(key))
        except _Invalid as exc:
            raise exc.under(key) from None
    return parsed


@dataclass(frozen=True)
class KindThreshold:
    """The decision for one kind of message (mail or SMS): spam at `threshold`, unsure in `unsure`."""

    threshold: float
    unsure: tuple[float, float] | None

    def label(self, score: float) -> str:
        """The verdict rule (`spamguard.thresholds`), defined once: "unsure" inside the band, else "spam" at or
        above the threshold, else "ham". The classifier and the cascade's band choice both apply it."""
        if self.unsure is not None and self.unsure[0] <= score < self.unsure[1]:
            return "unsure"
        return "spam" if score >= self.threshold else "ham"

    def band_limits(self) -> tuple[float, float]:
        """(highest `low`, lowest `high`) of a cascade band for this kind: a band contains the threshold and the
        unsure band, so whatever the student decides is the plain verdict of its score, never unsure."""
        if self.unsure is None:
            return self.threshold, self.threshold
        return min(self.threshold, self.unsure[0]), max(self.threshold, self.unsure[1])


@dataclass(frozen=True)
class Band:
    """A cascade band (`spamguard.cascade`): student scores in `[low, high)` go to the full model; below `low`
    the student's verdict (ham) is final, from `high` on its verdict (spam) is."""

    low: float
    high: float

    def decides(self, score: float) -> bool:
        return score < self.low or score >= self.high

    def to_manifest(self) -> dict[str, float]:
        return {"low": self.low, "high": self.high}


def _keyed_by_kind(value: Any, parse: Callable[[Any], _T]) -> Mapping[str, _T]:
    """An object keyed by message kind (some or all of them), each record read by `parse`; a problem names the
    kind it lies under."""
    what = f"an object keyed by {' and/or '.join(KINDS)}"
    if not isinstance(value, dict) or not value or set(value) - set(KINDS):
        raise _Invalid(f"must be {what}, not {_show(value)}")
    parsed = {}
    for kind, record in value.items():
        try:
            parsed[kind] = parse(record)
        except _Invalid as exc:
            raise exc.under(kind) from None
    return MappingProxyType(parsed)


def _kind_threshold(record: Any) -> KindThreshold:
    fields = _record(record, {"threshold": _threshold, "unsure": _band}, '{"threshold": t, "unsure": band}')
    return KindThreshold(fields["threshold"], fields["unsure"])


def _per_kind(value: Any) -> Mapping[str, KindThreshold]:
    """`{"mail": {"threshold": t, "unsure": band}, "sms": {...}}`; a kind left out uses the top-level pair."""
    return _keyed_by_kind(value, _kind_threshold)


_SCRIPT_NAME = re.compile(r"[A-Z][A-Z_-]{0,39}")
MAX_SCRIPTS = 300  # Unicode names fewer scripts than this


def _script_counts(value: Any) -> Mapping[str, int]:
    """`{"LATIN": 866, "CJK": 2}`: how many training ham of a kind were written mainly in each script."""
    what = f"an object of at most {MAX_SCRIPTS} script names (as LATIN, CJK) and counts"
    if not isinstance(value, dict) or len(value) > MAX_SCRIPTS:
        raise _Invalid(f"must be {what}, not {_show(value)}")
    for script, count in value.items():
        if not _SCRIPT_NAME.fullmatch(script) or isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise _Invalid(f"must be {what}, not {_show({script: count})}")
    return MappingProxyType(dict(value))


def _ham_scripts(value: Any) -> Mapping[str, Mapping[str, int]]:
    return _keyed_by_kind(value, _script_counts)


# A kind's message written mainly in a script that fewer of the model's training ham of that kind were written
# in is unsure, whatever its score (`Bundle.unseen_script`). A judgment, not a measurement: the default data hold
# no ham at all outside Latin script, and a model trained on it calls every such message spam (docs/robustness.md).
MIN_SCRIPT_HAM = 20


@dataclass(frozen=True)
class CascadeRecord:
    """The student of a cascade (`spamguard.cascade`): its model files by precision, the sizes it was built
    with, and the band of each kind it decides for (a kind without one always goes to the full model)."""

    models: Mapping[str, str]
    model_config: Mapping[str, int]
    bands: Mapping[str, Band]


def _band_record(record: Any) -> Band:
    fields = _record(record, {"low": _threshold, "high": _threshold}, '{"low": l, "high": h}')
    if not fields["low"] <= fields["high"]:
        raise _Invalid(f"must have low <= high, not {_show(record)}")
    return Band(fields["low"], fields["high"])


def _bands(value: Any) -> Mapping[str, Band]:
    """`{"mail": {"low": l, "high": h}, "sms": {...}}` with 0 <= low <= high: students scores in [low, high) go
    to the full model; `high` may be the value just above 1 (the student never calls spam)."""
    return _keyed_by_kind(value, _band_record)


def _cascade(value: Any) -> CascadeRecord:
    fields = _record(
        value,
        {"models": _models, "model_config": _model_config, "bands": _bands},
        '{"models": {...}, "model_config": {...}, "bands": {...}}',
    )
    return CascadeRecord(fields["models"], fields["model_config"], fields["bands"])


def _file_name(value: Any) -> str:
    if not isinstance(value, str) or not _FILE_NAME.fullmatch(value) or value == MANIFEST:
        raise _Invalid(f"must be a plain file name inside the bundle, not {_show(value)}")
    return value


def _files(value: Any) -> Mapping[str, str]:
    if not isinstance(value, dict) or not 1 <= len(value) <= MAX_FILES:
        raise _Invalid(f"must map 1 to {MAX_FILES} file names to their sha256, not {_show(value)}")
    for name, digest in value.items():
        _file_name(name)
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise _Invalid(f"must be a sha256 in lowercase hex, not {_show(digest)}", (name,))
    return MappingProxyType(dict(value))


def _models(value: Any) -> Mapping[str, str]:
    if not isinstance(value, dict) or not value or set(value) - set(MODEL_PRECISIONS):
        raise _Invalid(f"must map {' and/or '.join(MODEL_PRECISIONS)} to a model file, not {_show(value)}")
    return MappingProxyType({precision: _file_name(name) for precision, name in value.items()})


def _tokenizer(value: Any) -> tuple[str, str]:
    names = _record(value, {"encoder": _file_name, "bpe": _file_name}, '{"encoder": file, "bpe": file}')
    return names["encoder"], names["bpe"]


def _model_name(value: Any) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise _Invalid(f"must be letters, digits, '.', '_' or '-' (at most 64), not {_show(value)}")
    return value


def _labels(value: Any) -> list[str]:
    if value != list(LABEL_NAMES):
        raise _Invalid(f"must be {_show(list(LABEL_NAMES))} (the model's output order), not {_show(value)}")
    return list(LABEL_NAMES)


def _truncation(value: Any) -> str:
    if value != "head":
        raise _Invalid(f'must be "head" (the only truncation this spamguard applies), not {_show(value)}')
    return value


def _model_config(value: Any) -> Mapping[str, int]:
    """Only the sizes the runtime checks other fields against; the rest describes the model."""
    if not isinstance(value, dict):
        raise _Invalid(f"must be an object, not {_show(value)}")
    parsed = {}
    for key in ("n_positions", "vocab_size"):
        if key in value:
            try:
                parsed[key] = _integer(1, 1 << 24)(value[key])
            except _Invalid as exc:
                raise exc.under(key) from None
    return MappingProxyType(parsed)


def _text(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 1000 or not value.isprintable():
        raise _Invalid(f"must be one line of printable text (at most 1000 characters), not {_show(value)}")
    return value


@dataclass(frozen=True)
class ManifestField:
    """One field the runtime reads: how to check it and turn it into the value the runtime uses. A field that
    is not required may be absent (its value is then `default`)."""

    key: str
    parse: Callable[[Any], Any]
    required: bool = True
    default: Any = None


# Every manifest field the runtime reads, and nothing else: the other fields (metrics, training settings, the
# threshold choice) describe the model for people. A new field the runtime reads is one entry here.
MANIFEST_FIELDS: tuple[ManifestField, ...] = (
    ManifestField("format_version", _integer(1, FORMAT_VERSION)),
    ManifestField("name", _model_name),
    ManifestField("labels", _labels),
    ManifestField("pad_id", _integer(0, (1 << 24) - 1)),
    ManifestField("truncation", _truncation),
    ManifestField("max_tokens", _integer(1, MAX_TOKENS_LIMIT)),
    ManifestField("threshold", _threshold),
    ManifestField("unsure", _band, required=False),
    ManifestField("thresholds", _per_kind, required=False, default=MappingProxyType({})),
    ManifestField("files", _files),
    ManifestField("models", _models),
    ManifestField("tokenizer", _tokenizer),
    ManifestField("model_config", _model_config, required=False, default=MappingProxyType({})),
    ManifestField("base_model", _text, required=False),
    # the version of `message_text` the model was trained on; bundles from before text versions read version 1
    ManifestField("text_version", _integer(1, 1 << 16), required=False, default=1),
    # a student model and the band of each kind it decides (`spamguard distill`); absent: the full model alone
    ManifestField("cascade", _cascade, required=False),
    # per kind, the training ham by main script (`normalize.main_script`); absent: every script is trusted
    ManifestField("ham_scripts", _ham_scripts, required=False, default=MappingProxyType({})),
)


def _consistent(fields: Mapping[str, Any]) -> tuple[str, str] | None:
    """Checks across fields, as (field, problem), once each field is valid on its own."""
    for precision, name in fields["models"].items():
        if name not in fields["files"]:
            return f"models.{precision}", f"names {name}, which 'files' does not list"
    for key, name in zip(("encoder", "bpe"), fields["tokenizer"], strict=True):
        if name not in fields["files"]:
            return f"tokenizer.{key}", f"names {name}, which 'files' does not list"
    positions = fields["model_config"].get("n_positions")
    if positions is not None and fields["max_tokens"] > positions:
        return "max_tokens", f"is {fields['max_tokens']}, beyond the model's {positions} positions"
    vocab = fields["model_config"].get("vocab_size")
    if vocab is not None and fields["pad_id"] >= vocab:
        return "pad_id", f"is {fields['pad_id']}, outside the model's vocabulary of {vocab}"
    return _consistent_cascade(fields)


def _consistent_cascade(fields: Mapping[str, Any]) -> tuple[str, str] | None:
    """The student reads what the full model reads (the same token ids, so as many positions and the pad id in
    its vocabulary), its files are the bundle's, and each band contains its kind's threshold and unsure band."""
    cascade: CascadeRecord | None = fields["cascade"]
    if cascade is None:
        return None
    for precision, name in cascade.models.items():
        if name not in fields["files"]:
            return f"cascade.models.{precision}", f"names {name}, which 'files' does not list"
        if name in fields["models"].values():
            return f"cascade.models.{precision}", f"names {name}, the full model's file"
    positions = cascade.model_config.get("n_positions")
    if positions is not None and fields["max_tokens"] > positions:
        return "cascade.model_config.n_positions", f"is {positions}, below max_tokens {fields['max_tokens']}"
    vocab = cascade.model_config.get("vocab_size")
    if vocab is not None and fields["pad_id"] >= vocab:
        return "cascade.model_config.vocab_size", f"is {vocab}, which does not hold pad_id {fields['pad_id']}"
    for kind, band in cascade.bands.items():
        own = fields["thresholds"].get(kind)
        threshold, unsure = (own.threshold, own.unsure) if own else (fields["threshold"], fields["unsure"])
        low_cap, high_floor = KindThreshold(threshold, unsure).band_limits()
        if not (band.low <= low_cap and band.high >= high_floor):
            return (
                f"cascade.bands.{kind}",
                f"is [{band.low:.6g}, {band.high:.6g}), which must contain the {kind} threshold {threshold:.6g}"
                + (f" and unsure band [{unsure[0]:.6g}, {unsure[1]:.6g})" if unsure else ""),
            )
    return None


def parse_manifest(manifest: Mapping[str, Any], where: Path) -> Mapping[str, Any]:
    """The runtime's values of a manifest (keyed as `MANIFEST_FIELDS`), or `BundleError` naming the first bad
    field. The format and its version are checked first: a newer bundle says to upgrade, not what is wrong."""
    if manifest.get("format") != FORMAT:
        raise BundleError(f"not a spamguard bundle: {where / MANIFEST}")
    version = manifest.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise BundleError(
            f"bundle {where} has format version {version}, this spamguard reads up to {FORMAT_VERSION}: "
            "upgrade spamguard (pip install -U spamguard)"
        )
    fields: dict[str, Any] = {}
    for field in MANIFEST_FIELDS:
        if field.key not in manifest or (manifest[field.key] is None and not field.required):
            if field.required:
                raise BundleError(f"corrupt bundle {where}: {MANIFEST} has no '{field.key}'")
            fields[field.key] = field.default
            continue
        try:
            fields[field.key] = field.parse(manifest[field.key])
        except _Invalid as exc:
            key = ".".join((field.key, *exc.keys))
            raise BundleError(f"corrupt bundle {where}: '{key}' in {MANIFEST} {exc.problem}") from None
    problem = _consistent(fields)
    if problem is not None:
        raise BundleError(f"corrupt bundle {where}: '{problem[0]}' in {MANIFEST} {problem[1]}")
    return MappingProxyType(fields)


# --- reading bundle files ---------------------------------------------------------------------------------------


def open_regular(path: Path, max_bytes: int) -> tuple[BinaryIO, int]:
    """Open a bundle file for reading only if it is a regular file reached without a link, of at most
    `max_bytes`: a link could lead out of the bundle (to a secret, to /dev/zero), a FIFO would block, a device
    never ends (`safe_files.open_regular`). Returns the file and its size."""
    try:
        f, size = safe_files.open_regular(path, follow_links=False)
    except safe_files.NotRegularFile as exc:
        raise BundleError(f"{path} is not a regular file: a bundle holds regular files only") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BundleError(f"{path} is a symbolic link: a bundle holds regular files only") from exc
        raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if size > max_bytes:
        f.close()
        raise BundleError(f"{path} is {size} bytes, over the limit of {max_bytes}")
    return f, size


def read_regular(path: Path, max_bytes: int) -> bytes:
    """The whole of a regular file (see `open_regular`), read once; a file that grows or shrinks while it is read
    is refused rather than half read."""
    f, size = open_regular(path, max_bytes)
    with f:
        try:
            data = f.read(size + 1)
        except OSError as exc:
            raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) != size:
        raise BundleError(f"{path} changed while it was read")
    return data


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle: its folder, its manifest as read (for people: metrics, training settings), and the
    checked values the runtime uses (`fields`, read-only). Every property reads `fields`, never the manifest."""

    path: Path
    manifest: dict[str, Any]
    fields: Mapping[str, Any]

    @property
    def name(self) -> str:
        return self.fields["name"]

    @property
    def threshold(self) -> float:
        """The threshold of a bundle with one threshold, and the fallback for a kind `thresholds` leaves out."""
        return self.fields["threshold"]

    @property
    def unsure(self) -> tuple[float, float] | None:
        return self.fields["unsure"]

    def threshold_for(self, kind: str) -> float:
        """The threshold for messages of this kind (`message_text.message_kind`)."""
        return self._kind(kind).threshold

    def unsure_for(self, kind: str) -> tuple[float, float] | None:
        return self._kind(kind).unsure

    def _kind(self, kind: str) -> KindThreshold:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        own = self.fields["thresholds"].get(kind)
        return own if own is not None else KindThreshold(self.threshold, self.unsure)

    @property
    def ham_scripts(self) -> Mapping[str, Mapping[str, int]]:
        """Per kind, the training ham by main script; empty for a bundle from before the record."""
        return self.fields["ham_scripts"]

    def unseen_script(self, kind: str, script: str | None) -> str | None:
        """Why a message of this kind written mainly in `script` must not get a verdict from its score, or None.
        A model has no idea what ham in a script looks like when it saw (almost) none: the offline models call
        every non-Latin SMS spam. Only for a kind whose training scripts the bundle records (older bundles, and
        kinds a model was not trained on, are scored as before)."""
        counts = self.ham_scripts.get(kind)
        if counts is None or script is None:
            return None
        seen = counts.get(script, 0)
        if seen >= MIN_SCRIPT_HAM:
            return None
        return f"{script.lower()} script: the model saw {seen} {kind} ham written in it, fewer than {MIN_SCRIPT_HAM}"

    @property
    def max_tokens(self) -> int:
        return self.fields["max_tokens"]

    @property
    def pad_id(self) -> int:
        return self.fields["pad_id"]

    @property
    def text_version(self) -> int:
        """The version of `message_text` the model was trained on (1 for bundles from before text versions)."""
        return self.fields["text_version"]

    @property
    def files(self) -> Mapping[str, str]:
        """File name -> sha256, for every file of the bundle but the manifest."""
        return self.fields["files"]

    @property
    def has_int8(self) -> bool:
        return "int8" in self.fields["models"]

    def model_path(self, precision: str = "auto") -> Path:
        """`auto` prefers the int8 copy (faster on CPUs, verdicts checked against fp32 at export)."""
        models = self.fields["models"]
        if precision == "auto":
            precision = "int8" if "int8" in models else "fp32"
        if precision not in models:
            raise BundleError(f"bundle {self.path} has no {precision} model (it has: {', '.join(models)})")
        return self.path / models[precision]

    def model_files(self, precision: str = "auto") -> list[str]:
        """The files one model is read from: its graph and, when the weights live beside it, their file."""
        graph = self.model_path(precision).name
        return [graph, graph + DATA_SUFFIX] if graph + DATA_SUFFIX in self.files else [graph]

    @property
    def cascade(self) -> CascadeRecord | None:
        """The student and its bands (`spamguard distill`), or None for a bundle with the full model alone."""
        return self.fields["cascade"]

    def student_files(self, precision: str) -> list[str]:
        """The files the student of this precision is read from (its graph and, when beside it, its weights)."""
        cascade = self.cascade
        if cascade is None or precision not in cascade.models:
            raise BundleError(f"bundle {self.path} has no {precision} student")
        graph = cascade.models[precision]
        return [graph, graph + DATA_SUFFIX] if graph + DATA_SUFFIX in self.files else [graph]

    def read_verified(self, name: str) -> bytes:
        """A file's bytes, read once and checked against the sha256 the manifest recorded: what the caller
        builds from is exactly what was checked, however the file on disk changes meanwhile."""
        data = read_regular(self.path / name, MAX_FILE_BYTES)
        self._check(name, hashlib.sha256(data).hexdigest())
        return data

    def copy_verified(self, name: str, target: Path) -> None:
        """Copy one file to a new file `target`, hashing what is copied: the copy is what the manifest recorded,
        or `BundleError` (the caller removes the partial copy)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        with os.fdopen(os.open(target, flags, 0o644), "wb") as out:
            self._check(name, self._stream(name, out.write))

    def verify(self, names: Iterable[str]) -> None:
        """Check files against the sha256 the manifest recorded for them, a chunk at a time."""
        for name in names:
            self._check(name, self._stream(name, lambda _: None))

    def _stream(self, name: str, sink: Callable[[bytes], object]) -> str:
        """Pass a file's bytes to `sink` in chunks and return their sha256; a file that grows or shrinks while it
        is read is refused rather than half read."""
        source, size = open_regular(self.path / name, MAX_FILE_BYTES)
        digest = hashlib.sha256()
        done = 0
        with source:
            while done <= size and (chunk := source.read(min(1 << 20, size + 1 - done))):
                digest.update(chunk)
                sink(chunk)
                done += len(chunk)
        if done != size:
            raise BundleError(f"{self.path / name} changed while it was read")
        return digest.hexdigest()

    def _check(self, name: str, digest: str) -> None:
        if name not in self.files:
            raise BundleError(f"corrupt bundle {self.path}: {name} has no sha256 in {MANIFEST}")
        if digest != self.files[name]:
            raise BundleError(f"corrupt bundle {self.path}: {name} does not match its sha256 (reinstall the model)")

    @property
    def encoder_json(self) -> Path:
        return self.path / self.fields["tokenizer"][0]

    @property
    def vocab_bpe(self) -> Path:
        return self.path / self.fields["tokenizer"][1]


def write_bundle(
    out: Path,
    *,
    models: dict[str, Path],
    encoder_json: Path,
    vocab_bpe: Path,
    manifest: dict[str, Any],
    extra_files: dict[str, Path] | None = None,
) -> Bundle:
    """Assemble a bundle in a temporary sibling folder and rename it into place, so a crash never leaves a
    half-written bundle that looks complete. `models` maps precision (`fp32`, `int8`) to an ONNX file;
    `manifest` holds the descriptive fields (name, threshold, max_tokens, model_config, training, metrics...)."""
    out = Path(out)
    if out.exists():
        raise BundleError(f"output directory already exists: {out} (choose another --out or remove it)")
    if "fp32" not in models:
        raise BundleError("a bundle needs an fp32 model")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        names = {"fp32": FP32_FILE, "int8": INT8_FILE}
        placed: dict[str, Path] = {}
        for precision, src in models.items():
            placed[names[precision]] = src
            side = weights_file(src)
            if side.is_file():
                # the graph names its weights file; that name only holds when the model keeps its bundle name
                if Path(src).name != names[precision]:
                    raise BundleError(
                        f"{src} keeps its weights in {side.name}: export it as {names[precision]} to bundle it"
                    )
                placed[names[precision] + DATA_SUFFIX] = side
        placed[ENCODER_FILE] = encoder_json
        placed[BPE_FILE] = vocab_bpe
        placed.update(extra_files or {})
        for name, src in placed.items():
            shutil.copyfile(src, staging / name)
        full = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "labels": list(LABEL_NAMES),
            "pad_id": PAD_ID,
            "truncation": "head",
            "unsure": None,
            **manifest,
            "models": {precision: names[precision] for precision in models},
            "tokenizer": {"encoder": ENCODER_FILE, "bpe": BPE_FILE},
            "files": {name: sha256_file(staging / name) for name in sorted(placed)},
        }
        fields = parse_manifest(full, out)  # training writes nothing the runtime would refuse
        write_manifest(staging, full)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Bundle(out, full, fields)


def rewrite_bundle(
    bundle: Bundle, *, add: Mapping[str, Path], drop: Iterable[str] = (), fields: Mapping[str, Any]
) -> Bundle:
    """A new version of an existing bundle, in place: its files (each checked against its sha256 as it is
    copied) less `drop`, plus `add` (bundle name -> file), and its manifest with `fields` set and every hash
    recomputed. Built in a staging folder beside it and checked as a runtime would read it, then exchanged with
    the old folder in one rename, so a reader sees the old version or the new one, never a mix; any failure
    leaves the old bundle as it was and no staging folder behind."""
    path = Path(bundle.path)
    dropped = set(drop)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.rewriting-", dir=path.parent))
    try:
        kept = [name for name in bundle.files if name not in dropped and name not in add]
        for name in kept:
            bundle.copy_verified(name, staging / name)
        for name, source in add.items():
            _file_name(name)  # a plain name inside the bundle, as the schema will demand
            shutil.copyfile(source, staging / name)
        names = sorted([*kept, *add])
        manifest = {**bundle.manifest, **fields, "files": {name: sha256_file(staging / name) for name in names}}
        parse_manifest(manifest, path)  # nothing the runtime would refuse
        write_manifest(staging, manifest)
        load_bundle(staging, verify=True)  # what was written reads back, every file against its hash
        staging.chmod(stat.S_IMODE(os.stat(path).st_mode))  # mkdtemp's 0700 would hide it from a service
        _exchange(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # after the exchange: the old version
    return load_bundle(path, verify=False)


def _exchange(new: Path, target: Path) -> None:
    """Put `new` where `target` is, and `target` where `new` was: one `renameat2(RENAME_EXCHANGE)` on Linux,
    atomic for every reader; elsewhere (or on a file system without it) two renames, the old folder moved
    back if the second fails."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        renameat2 = None
    if renameat2 is not None:
        at_fdcwd, rename_exchange = -100, 2
        if renameat2(at_fdcwd, os.fsencode(new), at_fdcwd, os.fsencode(target), rename_exchange) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise BundleError(f"cannot replace {target}: {os.strerror(code)}")
    aside = target.with_name(f".{target.name}.old-{os.getpid()}")
    target.rename(aside)
    try:
        new.rename(target)
    except BaseException:
        aside.rename(target)
        raise
    aside.rename(new)


def write_manifest(folder: Path, manifest: Mapping[str, Any]) -> None:
    (Path(folder) / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest alone, checked (`MANIFEST_FIELDS`) but with no file hashed: enough to list or describe a
    bundle."""
    return _read(Path(path))[0]


def _read(path: Path) -> tuple[dict[str, Any], Mapping[str, Any]]:
    if not path.is_dir():
        raise BundleError(f"no model bundle at {path}: not a directory")
    manifest_path = path / MANIFEST
    if not manifest_path.exists() and not manifest_path.is_symlink():
        raise BundleError(f"no model bundle at {path}: {MANIFEST} is missing")
    try:
        manifest = json.loads(read_regular(manifest_path, MAX_MANIFEST_BYTES))
    except BundleError as exc:
        raise BundleError(f"corrupt bundle {path}: {exc}") from exc
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        reason = str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__
        raise BundleError(f"corrupt bundle {path}: {MANIFEST} is not valid JSON ({reason})") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"not a spamguard bundle: {manifest_path}")
    return manifest, parse_manifest(manifest, path)


def load_bundle(path: Path, *, verify: bool | Iterable[str] = True) -> Bundle:
    """Open a bundle: its manifest must pass `MANIFEST_FIELDS`, every listed file must be a regular file of the
    folder within the size limits, and the files named by `verify` (True: all of them) must match their
    recorded sha256. A classifier verifies just the files it reads, as it reads them (`read_verified`), so a
    mail host does not hash a 500 MB fp32 model it never loads on every start."""
    path = Path(path)
    manifest, fields = _read(path)
    total = 0
    for name in fields["files"]:
        try:
            info = os.lstat(path / name)
        except FileNotFoundError:
            raise BundleError(f"corrupt bundle {path}: {name} is missing (reinstall the model)") from None
        except OSError as exc:
            raise BundleError(f"corrupt bundle {path}: cannot read {name} ({exc.strerror or exc})") from exc
        if not stat.S_ISREG(info.st_mode):
            raise BundleError(f"corrupt bundle {path}: {name} is not a regular file (a bundle holds no links)")
        if info.st_size > MAX_FILE_BYTES:
            raise BundleError(f"corrupt bundle {path}: {name} is {info.st_size} bytes, over {MAX_FILE_BYTES}")
        total += info.st_size
    if total > MAX_BUNDLE_BYTES:
        raise BundleError(f"corrupt bundle {path}: its files hold {total} bytes, over {MAX_BUNDLE_BYTES}")
    bundle = Bundle(path, manifest, fields)
    if verify:
        bundle.verify(fields["files"] if verify is True else verify)
    return bundle
