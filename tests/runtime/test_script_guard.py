"""A message written in a script the model saw (almost) no ham in is unsure, not spam: the bundle records the
training ham per kind and script, and the verdict holds the message's main script against it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from robustness.non_latin import NON_LATIN_HAM

from spamguard import Classifier
from spamguard.bundle import MANIFEST, MIN_SCRIPT_HAM
from spamguard.cli import main
from spamguard.errors import BundleError
from spamguard.normalize import main_script

MAIL = b"From: a@example.com\nTo: b@example.com\nSubject: hi\n\n"


@pytest.fixture(scope="module")
def guarded(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle (threshold 0 for certainty: every score is spam), trained, as far as its manifest says,
    on 500 Latin SMS ham and 25 Cyrillic ones, and on mail without a record."""
    copy = Path(shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("guard") / "b"))
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["threshold"] = 0.0
    manifest["thresholds"] = {"sms": {"threshold": 0.0, "unsure": None}}
    manifest["ham_scripts"] = {"sms": {"LATIN": 500, "CYRILLIC": MIN_SCRIPT_HAM, "GREEK": MIN_SCRIPT_HAM - 1}}
    (copy / MANIFEST).write_text(json.dumps(manifest))
    return copy


@pytest.mark.parametrize(
    ("text", "script"),
    [
        ("free entry now", "LATIN"),
        ("café naïve", "LATIN"),
        ("Привет, как дела? ok", "CYRILLIC"),
        ("明天下午三点开会 ok", "CJK"),
        ("12345 !!", None),
        ("", None),
    ],
)
def test_main_script(text: str, script: str | None) -> None:
    assert main_script(text) == script


def test_unseen_script_is_unsure_with_its_reason(guarded: Path) -> None:
    clf = Classifier.load(guarded, threads=1)
    greek, cyrillic, latin = clf.classify_batch(["Καλημέρα, τι κάνεις;", "Привет, как дела?", "free entry now"])
    assert (greek.label, greek.kind) == ("unsure", "sms") and greek.score >= 0.0
    assert greek.reason == f"greek script: the model saw {MIN_SCRIPT_HAM - 1} sms ham written in it, fewer than 20"
    assert (cyrillic.label, cyrillic.reason) == ("spam", None)  # enough ham seen: the score decides
    assert (latin.label, latin.reason) == ("spam", None)
    korean = clf.classify("안녕하세요, 내일 봐요")
    assert korean.label == "unsure" and korean.reason.startswith("hangul script: the model saw 0 sms ham")
    assert korean.to_dict()["reason"] == korean.reason


def test_every_non_latin_ham_of_the_benchmark_is_unsure(guarded: Path) -> None:
    verdicts = Classifier.load(guarded, threads=1).classify_batch(NON_LATIN_HAM)
    by_script = {main_script(text): v.label for text, v in zip(NON_LATIN_HAM, verdicts, strict=True)}
    assert by_script.pop("CYRILLIC") == "spam" and set(by_script.values()) == {"unsure"}


def test_a_kind_without_a_record_and_an_old_bundle_are_scored_as_before(guarded: Path, tiny_bundle: Path) -> None:
    mail = MAIL + "Привет, как дела? Увидимся завтра.".encode()
    assert Classifier.load(guarded, threads=1).classify(mail).reason is None  # no mail record: not guarded
    old = Classifier.load(tiny_bundle, threads=1).classify("Καλημέρα, τι κάνεις;")
    assert old.reason is None and old.label in ("spam", "ham")


def test_check_says_why_and_exits_unsure(guarded: Path) -> None:
    result = CliRunner().invoke(main, ["check", "--model", str(guarded)], input="Καλημέρα, τι κάνεις;")
    assert result.exit_code == 2, result.output
    assert result.output.startswith("stdin: unsure score=") and result.output.rstrip().endswith("fewer than 20)")


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"sms": {"latin": 3}}, "ham_scripts.sms"),
        ({"sms": {"LATIN": -1}}, "ham_scripts.sms"),
        ({"sms": {"LATIN": True}}, "ham_scripts.sms"),
        ({"fax": {"LATIN": 3}}, "ham_scripts"),
        ({"sms": ["LATIN"]}, "ham_scripts.sms"),
    ],
)
def test_a_bad_script_record_is_refused(tiny_bundle: Path, tmp_path: Path, value: object, where: str) -> None:
    copy = Path(shutil.copytree(tiny_bundle, tmp_path / "b"))
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["ham_scripts"] = value
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=rf"^corrupt bundle .*: '{where}' in spamguard\.json must be an "):
        Classifier.load(copy)
