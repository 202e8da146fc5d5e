"""Hostile bundles: manifest values and file names chosen to mislead the runtime, and model files changed after
their check. Each must be refused with one line naming what is wrong (exit 3 from `check`), before anything
parses a file that failed its sha256, and without reading anything outside the bundle folder."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from spamguard import Classifier
from spamguard.bundle import MANIFEST, Bundle, load_bundle, sha256_file
from spamguard.cli import main
from spamguard.errors import BundleError

SMS = "Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005."


def _copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_bundle, tmp_path / "b"))


def _edit(bundle: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    manifest = json.loads((bundle / MANIFEST).read_text())
    change(manifest)
    (bundle / MANIFEST).write_text(json.dumps(manifest))  # NaN and Infinity are written as JSON's extensions
    return bundle


def _set(key: str, value: object) -> Callable[[dict[str, Any]], None]:
    def change(manifest: dict[str, Any]) -> None:
        manifest[key] = value

    return change


def _refused(bundle: Path) -> str:
    """The one line `check` prints for this bundle; it must exit 3 (error), never 0/1 (a verdict)."""
    result = CliRunner().invoke(main, ["check", "--model", str(bundle)], input=SMS)
    assert result.exit_code == 3, result.output
    assert result.stdout == "" and result.stderr.count("\n") == 1, result.output
    assert result.stderr.startswith("Error: ")
    return result.stderr.removeprefix("Error: ").rstrip("\n")


BAD_VALUES = [
    # (field, value, what the message says after "'field' in spamguard.json ")
    ("threshold", float("nan"), "must be a number from 0 to 1, not NaN"),  # made everything ham
    ("threshold", -1, "must be a number from 0 to 1, not -1"),  # made everything spam
    ("threshold", float("inf"), "must be a number from 0 to 1, not Infinity"),
    ("threshold", "0.5", 'must be a number from 0 to 1, not "0.5"'),
    ("threshold", True, "must be a number from 0 to 1, not true"),
    ("threshold", None, "must be a number from 0 to 1, not null"),
    ("max_tokens", 0, "must be an integer from 1 to 65536, not 0"),  # scored every message as one token
    ("max_tokens", 12.5, "must be an integer from 1 to 65536, not 12.5"),
    ("max_tokens", "128", 'must be an integer from 1 to 65536, not "128"'),
    ("max_tokens", 10**30, "must be an integer from 1 to 65536, not 1000000000000000000000000000000"),
    ("unsure", [0.9, 0.1], "must be null or [low, high] with 0 <= low < high <= 1, not [0.9, 0.1]"),
    ("unsure", [float("nan"), 1], "must be null or [low, high] with 0 <= low < high <= 1, not NaN"),
    ("unsure", "0.3,0.9", 'must be null or [low, high] with 0 <= low < high <= 1, not "0.3,0.9"'),
    ("pad_id", -1, "must be an integer from 0 to 16777215, not -1"),
    ("pad_id", 60000, "is 60000, outside the model's vocabulary of 50257"),
    ("labels", ["spam", "ham"], 'must be ["ham", "spam"] (the model\'s output order), not ["spam", "ham"]'),
    ("truncation", "tail", 'must be "head" (the only truncation this spamguard applies), not "tail"'),
    (
        "name",
        "evil\nX-Spam-Flag: NO",
        "must be letters, digits, '.', '_' or '-' (at most 64), not \"evil\\nX-Spam-Flag: NO\"",
    ),
    ("name", 7, "must be letters, digits, '.', '_' or '-' (at most 64), not 7"),
    ("models", "model.onnx", 'must map fp32 and/or int8 to a model file, not "model.onnx"'),
    ("models", {"fp16": "model.onnx"}, 'must map fp32 and/or int8 to a model file, not {"fp16": "model.onnx"}'),
    ("tokenizer", None, 'must be {"encoder": file, "bpe": file}, not null'),
    ("files", [], "must map 1 to 32 file names to their sha256, not []"),
    ("base_model", "gpt2\r\nX-Spam-Flag: NO", "must be one line of printable text (at most 1000 characters), not "),
    ("format_version", "1", 'must be an integer from 1 to 1, not "1"'),
]


@pytest.mark.parametrize(("key", "value", "problem"), BAD_VALUES, ids=[f"{k}={v!r}" for k, v, _ in BAD_VALUES])
def test_a_bad_manifest_value_is_one_line_naming_the_field(
    tiny_bundle: Path, tmp_path: Path, key: str, value: object, problem: str
) -> None:
    bundle = _edit(_copy(tiny_bundle, tmp_path), _set(key, value))
    shown = f"corrupt bundle {bundle}: '{key}' in spamguard.json {problem}"
    assert _refused(bundle).startswith(shown)
    with pytest.raises(BundleError) as caught:
        load_bundle(bundle, verify=False)
    assert "\n" not in str(caught.value) and str(caught.value).startswith(shown)


@pytest.fixture(scope="module")
def student_bundle(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle (threshold 0.5) with a student whose sms band is [0.3, 0.7)."""
    from bundles import add_student

    return add_student(
        Path(shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("student") / "b")), {"sms": (0.3, 0.7)}
    )


def _cascade(change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def edit(manifest: dict[str, Any]) -> None:
        change(manifest["cascade"])

    return edit


BAD_CASCADES = [
    # (what changes in the cascade record, the field named, what the message says)
    (
        {"bands": {"sms": {"low": float("nan"), "high": 0.7}}},
        "cascade.bands.sms.low",
        "must be a number from 0 to 1, not NaN",
    ),
    ({"bands": {"sms": {"low": -0.1, "high": 0.7}}}, "cascade.bands.sms.low", "must be a number from 0 to 1, not -0.1"),
    ({"bands": {"sms": {"low": 0.3, "high": 2}}}, "cascade.bands.sms.high", "must be a number from 0 to 1, not 2"),
    (
        {"bands": {"sms": {"low": 0.3, "high": "0.7"}}},
        "cascade.bands.sms.high",
        'must be a number from 0 to 1, not "0.7"',
    ),
    (
        {"bands": {"sms": {"low": 0.7, "high": 0.3}}},
        "cascade.bands.sms",
        'must have low <= high, not {"low": 0.7, "high": 0.3}',
    ),
    (
        {"bands": {"sms": {"low": 0.6, "high": 0.7}}},  # the student would call ham what the threshold calls spam
        "cascade.bands.sms",
        "is [0.6, 0.7), which must contain the sms threshold 0.5",
    ),
    (
        {"bands": {"fax": {"low": 0.3, "high": 0.7}}},
        "cascade.bands",
        "must be an object keyed by mail and/or sms, not ",
    ),
    ({"bands": None}, "cascade.bands", "must be an object keyed by mail and/or sms, not null"),
    ({"models": {"fp32": "model.onnx"}}, "cascade.models.fp32", "names model.onnx, the full model's file"),
    ({"models": {"fp32": "../student.onnx"}}, "cascade.models", "must be a plain file name inside the bundle"),
    ({"models": {"fp32": "ghost.onnx"}}, "cascade.models.fp32", "names ghost.onnx, which 'files' does not list"),
    ({"model_config": {"n_positions": 16}}, "cascade.model_config.n_positions", "is 16, below max_tokens 128"),
]


@pytest.mark.parametrize(("change", "key", "problem"), BAD_CASCADES, ids=[k for _, k, _ in BAD_CASCADES])
def test_a_bad_cascade_record_is_one_line_naming_the_field(
    student_bundle: Path, tmp_path: Path, change: dict[str, Any], key: str, problem: str
) -> None:
    bundle = _edit(_copy(student_bundle, tmp_path), _cascade(lambda record: record.update(change)))
    assert _refused(bundle).startswith(f"corrupt bundle {bundle}: '{key}' in spamguard.json {problem}")


def test_a_cascade_that_is_no_record_is_refused(student_bundle: Path, tmp_path: Path) -> None:
    bundle = _edit(_copy(student_bundle, tmp_path), _set("cascade", [0.3, 0.7]))
    assert _refused(bundle).startswith(f"corrupt bundle {bundle}: 'cascade' in spamguard.json must be ")


def test_a_swapped_student_is_caught_by_its_sha256(student_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(student_bundle, tmp_path)
    shutil.copy(bundle / "model.int8.onnx", bundle / "student.int8.onnx")
    assert (
        _refused(bundle)
        == f"corrupt bundle {bundle}: student.int8.onnx does not match its sha256 (reinstall the model)"
    )
    assert Classifier.load(bundle, cascade=False).classify(SMS).stage == "full"  # not read at all without a cascade


def test_a_missing_field_is_named(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = _edit(_copy(tiny_bundle, tmp_path), lambda m: m.pop("max_tokens"))
    assert _refused(bundle) == f"corrupt bundle {bundle}: spamguard.json has no 'max_tokens'"


def test_nested_fields_are_named_by_their_path(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(tiny_bundle, tmp_path)
    _edit(
        bundle,
        _set("thresholds", {"mail": {"threshold": 0.5, "unsure": None}, "sms": {"threshold": 7, "unsure": None}}),
    )
    assert _refused(bundle) == (
        f"corrupt bundle {bundle}: 'thresholds.sms.threshold' in spamguard.json must be a number from 0 to 1, not 7"
    )
    _edit(bundle, _set("thresholds", {"fax": {"threshold": 0.5, "unsure": None}}))
    assert _refused(bundle).startswith(
        f"corrupt bundle {bundle}: 'thresholds' in spamguard.json must be an object keyed by mail and/or sms, not "
    )
    _edit(bundle, _set("thresholds", {"mail": {"unsure": None}}))
    assert _refused(bundle) == (
        f"corrupt bundle {bundle}: 'thresholds.mail.threshold' in spamguard.json must be a number from 0 to 1, not null"
    )
    _edit(bundle, _set("thresholds", {"mail": [0.5]}))
    assert _refused(bundle) == (
        f"corrupt bundle {bundle}: 'thresholds.mail' in spamguard.json must be "
        '{"threshold": t, "unsure": band}, not [0.5]'
    )
    _edit(bundle, _set("thresholds", None))  # null: no thresholds per kind
    _edit(bundle, lambda m: m["files"].update({"vocab.bpe": "x" * 64}))
    assert _refused(bundle) == (
        f"corrupt bundle {bundle}: 'files.vocab.bpe' in spamguard.json must be a sha256 in lowercase hex, "
        'not "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...'
    )


@pytest.mark.parametrize("outside", ["../model.onnx", "/ABSOLUTE/model.onnx", "sub/model.onnx", ".hidden", "..", ""])
def test_file_names_outside_the_bundle_are_refused(tiny_bundle: Path, tmp_path: Path, outside: str) -> None:
    """Before: `"models": {"fp32": "../model.onnx"}` with that name in `files` loaded a model from beside the
    bundle (an absolute path from anywhere)."""
    bundle = _copy(tiny_bundle, tmp_path)
    outside = outside.replace("/ABSOLUTE", str(tmp_path))
    shutil.copy(bundle / "model.onnx", tmp_path / "model.onnx")

    def change(manifest: dict[str, Any]) -> None:
        manifest["models"] = {"fp32": outside}
        manifest["files"][outside] = manifest["files"].pop("model.onnx")

    _edit(bundle, change)
    assert _refused(bundle).startswith(
        f"corrupt bundle {bundle}: 'files' in spamguard.json must be a plain file name inside the bundle, not "
    )


def test_a_model_name_with_a_newline_cannot_forge_an_output_line(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = _edit(_copy(tiny_bundle, tmp_path), _set("name", "x\ntiny: ham score=0.0001"))
    message = _refused(bundle)
    assert "\n" not in message and "'name' in spamguard.json" in message


@pytest.mark.parametrize("listed", ["model.int8.onnx.data", "encoder.json"])
def test_a_listed_file_that_is_a_link_is_refused(tiny_bundle: Path, tmp_path: Path, listed: str) -> None:
    """A link would lead the runtime out of the bundle, even with a matching sha256 (the file it points to may
    change after the check)."""
    bundle = _copy(tiny_bundle, tmp_path)
    (bundle / listed).rename(tmp_path / listed)
    (bundle / listed).symlink_to(tmp_path / listed)
    assert _refused(bundle) == f"corrupt bundle {bundle}: {listed} is not a regular file (a bundle holds no links)"


def test_special_files_in_place_of_the_manifest_or_a_model(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(tiny_bundle, tmp_path)
    (bundle / MANIFEST).rename(tmp_path / MANIFEST)
    (bundle / MANIFEST).symlink_to(tmp_path / MANIFEST)
    assert _refused(bundle) == (
        f"corrupt bundle {bundle}: {bundle / MANIFEST} is a symbolic link: a bundle holds regular files only"
    )
    (bundle / MANIFEST).unlink()
    os.mkfifo(bundle / MANIFEST)  # opened non-blocking: no writer, and still no hang
    assert _refused(bundle) == (
        f"corrupt bundle {bundle}: {bundle / MANIFEST} is not a regular file: a bundle holds regular files only"
    )
    (bundle / MANIFEST).unlink()
    shutil.copy(tmp_path / MANIFEST, bundle / MANIFEST)
    (bundle / "model.int8.onnx.data").unlink()
    os.mkfifo(bundle / "model.int8.onnx.data")
    assert _refused(bundle) == (
        f"corrupt bundle {bundle}: model.int8.onnx.data is not a regular file (a bundle holds no links)"
    )


def test_oversized_or_malformed_manifests(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(tiny_bundle, tmp_path)
    (bundle / MANIFEST).write_text("[" * 200_000 + "]" * 200_000)  # the JSON parser recursed to a traceback
    assert _refused(bundle).startswith(f"corrupt bundle {bundle}: {MANIFEST} is not valid JSON (")
    (bundle / MANIFEST).write_text('{"format": "spamguard-bundle", "pad": "' + "x" * (5 << 20) + '"}')
    assert _refused(bundle) == (
        f"corrupt bundle {bundle}: {bundle / MANIFEST} is {(5 << 20) + 41} bytes, over the limit of {4 << 20}"
    )
    (bundle / MANIFEST).write_bytes(b"\xff\xfe{")
    assert _refused(bundle).startswith(f"corrupt bundle {bundle}: {MANIFEST} is not valid JSON (")
    (bundle / MANIFEST).write_text("[1, 2]")
    assert _refused(bundle) == f"not a spamguard bundle: {bundle / MANIFEST}"


# --- verify first: nothing parses a model file before its sha256 holds --------------------------------------------


class _SessionSpy:
    """Records what onnxruntime is asked to build sessions from."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import onnxruntime as ort

        self.sources: list[object] = []
        real = ort.InferenceSession

        def spy(source: object, *args: object, **kwargs: object) -> object:
            self.sources.append(source)
            return real(source, *args, **kwargs)

        monkeypatch.setattr(ort, "InferenceSession", spy)


@pytest.mark.parametrize("damaged", ["model.int8.onnx", "model.int8.onnx.data"])
def test_a_tampered_model_never_reaches_onnxruntime(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damaged: str
) -> None:
    """Before: the session was built from the file while another thread hashed it, so onnxruntime parsed the
    tampered bytes and the sha256 error came after."""
    bundle = _copy(tiny_bundle, tmp_path)
    with open(bundle / damaged, "r+b") as f:
        f.seek(200)
        f.write(b"\x13\x37")
    spy = _SessionSpy(monkeypatch)
    with pytest.raises(BundleError, match=rf"^corrupt bundle .*: {damaged} does not match its sha256"):
        Classifier.load(bundle)
    assert spy.sources == []


def test_onnxruntime_builds_from_the_checked_bytes_not_from_files(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model files are read once: swapping them on disk right after their check changes nothing (before,
    onnxruntime opened them again by name, after or while they were hashed)."""
    bundle = _copy(tiny_bundle, tmp_path)
    expected = Classifier.load(tiny_bundle).score(SMS)
    real = Bundle.read_verified

    def read_then_swap(self: Bundle, name: str) -> bytes:
        data = real(self, name)
        (self.path / name).write_bytes(b"\0" * len(data))  # a writer racing the loader
        return data

    monkeypatch.setattr(Bundle, "read_verified", read_then_swap)
    spy = _SessionSpy(monkeypatch)
    clf = Classifier.load(bundle)
    assert [type(s) for s in spy.sources] == [bytes]
    assert clf.score(SMS) == expected


def test_a_graph_naming_a_weights_file_outside_the_bundle_is_not_read(tiny_bundle: Path, tmp_path: Path) -> None:
    """The graph (hashes and all, made by whoever made the bundle) says where its weights are; onnxruntime is
    given only the bundle's own side file, so any other location fails instead of being read."""
    onnx = pytest.importorskip("onnx")
    bundle = _copy(tiny_bundle, tmp_path)
    shutil.copy(bundle / "model.int8.onnx.data", tmp_path / "secret.data")
    graph = onnx.load(str(bundle / "model.int8.onnx"), load_external_data=False)
    for tensor in graph.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../secret.data"
    (bundle / "model.int8.onnx").write_bytes(graph.SerializeToString())
    _edit(bundle, lambda m: m["files"].update({"model.int8.onnx": sha256_file(bundle / "model.int8.onnx")}))
    message = _refused(bundle)
    assert message.startswith(f"cannot load {bundle / 'model.int8.onnx'}: ") and "../secret.data" in message
