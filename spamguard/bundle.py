"""The model bundle: the only thing the runtime reads, and the one thing training writes for it.

A bundle is a folder: `spamguard.json` (the manifest), `model.onnx` (+ optional `model.int8.onnx`), each
with its weights in a `.data` side file when the export put them there, and the GPT-2 BPE files. The manifest
records every file's sha256, so a truncated copy or a swapped model is caught at load time instead of producing
quietly wrong verdicts."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from spamguard.errors import BundleError

MANIFEST = "spamguard.json"
FORMAT = "spamguard-bundle"
FORMAT_VERSION = 1
LABELS = ["ham", "spam"]
ENCODER_FILE = "encoder.json"
BPE_FILE = "vocab.bpe"
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
DATA_SUFFIX = ".data"  # ONNX external data: a model's weights beside its graph file


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


@dataclass(frozen=True)
class Bundle:
    """A loaded, verified bundle: its folder and its manifest, with the fields the runtime needs as properties."""

    path: Path
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def threshold(self) -> float:
        return float(self.manifest["threshold"])

    @property
    def unsure(self) -> tuple[float, float] | None:
        band = self.manifest.get("unsure")
        return (float(band[0]), float(band[1])) if band else None

    def threshold_for(self, kind: str) -> float:
        """The threshold of a message of `kind` (`mail`/`sms`): the manifest's `thresholds[kind]`, else the one
        `threshold` (a one-threshold bundle, or a kind the model has no threshold for)."""
        entry = (self.manifest.get("thresholds") or {}).get(kind)
        return float(entry["threshold"]) if entry else self.threshold

    def unsure_for(self, kind: str) -> tuple[float, float] | None:
        """The unsure band of a message of `kind`, with the same fallback as `threshold_for`."""
        entry = (self.manifest.get("thresholds") or {}).get(kind)
        if not entry:
            return self.unsure
        band = entry.get("unsure")
        return (float(band[0]), float(band[1])) if band else None

    @property
    def max_tokens(self) -> int:
        return int(self.manifest["max_tokens"])

    @property
    def pad_id(self) -> int:
        return int(self.manifest["pad_id"])

    @property
    def has_int8(self) -> bool:
        return "int8" in self.manifest["models"]

    def model_path(self, precision: str = "auto") -> Path:
        """`auto` prefers the int8 copy (faster on CPUs, verdicts checked against fp32 at export)."""
        models = self.manifest["models"]
        if precision == "auto":
            precision = "int8" if "int8" in models else "fp32"
        if precision not in models:
            raise BundleError(f"bundle {self.path} has no {precision} model (it has: {', '.join(models)})")
        return self.path / models[precision]

    def model_files(self, precision: str = "auto") -> list[str]:
        """The files one model is read from: its graph and, when the weights live beside it, their file."""
        graph = self.model_path(precision).name
        return [graph, graph + DATA_SUFFIX] if graph + DATA_SUFFIX in self.manifest["files"] else [graph]

    def verify(self, names: Iterable[str]) -> None:
        """Check files against the sha256 the manifest recorded for them."""
        files = self.manifest["files"]
        for name in names:
            if name not in files:
                raise BundleError(f"corrupt bundle {self.path}: {name} has no sha256 in {MANIFEST}")
            if sha256_file(self.path / name) != files[name]:
                raise BundleError(f"corrupt bundle {self.path}: {name} does not match its sha256 (reinstall the model)")

    @property
    def encoder_json(self) -> Path:
        return self.path / self.manifest["tokenizer"]["encoder"]

    @property
    def vocab_bpe(self) -> Path:
        return self.path / self.manifest["tokenizer"]["bpe"]


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
            "labels": LABELS,
            "pad_id": 50256,
            "truncation": "head",
            "unsure": None,
            **manifest,
            "models": {precision: names[precision] for precision in models},
            "tokenizer": {"encoder": ENCODER_FILE, "bpe": BPE_FILE},
            "files": {name: sha256_file(staging / name) for name in sorted(placed)},
        }
        for key in ("name", "threshold", "max_tokens"):
            if key not in full:
                raise BundleError(f"bundle manifest needs '{key}'")
        (staging / MANIFEST).write_text(json.dumps(full, indent=2, sort_keys=False) + "\n")
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Bundle(out, full)


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest alone, with the format checks but no hashing: enough to list or describe a bundle."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise BundleError(f"no model bundle at {path}: not a directory")
    if not manifest_path.is_file():
        raise BundleError(f"no model bundle at {path}: {MANIFEST} is missing")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"corrupt bundle {path}: {MANIFEST} is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"not a spamguard bundle: {manifest_path}")
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise BundleError(f"corrupt bundle {path}: format_version is missing")
    if version > FORMAT_VERSION:
        raise BundleError(
            f"bundle {path} has format version {version}, this spamguard reads up to {FORMAT_VERSION}: "
            "upgrade spamguard (pip install -U spamguard)"
        )
    return manifest


def load_bundle(path: Path, *, verify: bool | Iterable[str] = True) -> Bundle:
    """Open a bundle: every listed file must exist, and the files named by `verify` (True: all of them) must
    match their recorded sha256. A classifier verifies just the files it reads, so a mail host does not hash
    a 500 MB fp32 model it never loads on every start; `spamguard models install` checks them all."""
    path = Path(path)
    manifest = read_manifest(path)
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"corrupt bundle {path}: the manifest lists no files")
    for name in files:
        if not (path / name).is_file():
            raise BundleError(f"corrupt bundle {path}: {name} is missing (reinstall the model)")
    bundle = Bundle(path, manifest)
    if verify:
        bundle.verify(files if verify is True else verify)
    return bundle
