"""The Classifier on a real (tiny) exported bundle: scores, verdicts, padding invariance, threads."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from spamguard import Classifier, Verdict
from spamguard.bundle import MANIFEST, THRESHOLD_MAX
from spamguard.classifier import length_batches, spam_probability
from spamguard.errors import BundleError
from spamguard.tokenizer import encode

from conftest import SMS_FILE

SHORT = "Ok lar... Joking wif u oni..."
LONG = "WINNER!! As a valued network customer you have been selected to receive a £900 prize reward! " * 8


@pytest.fixture(scope="module")
def clf(tiny_bundle: Path) -> Classifier:
    return Classifier.load(tiny_bundle, threads=1)


@pytest.fixture(scope="module")
def sms() -> list[str]:
    lines = SMS_FILE.read_text(encoding="utf-8", errors="replace").splitlines()
    return [line.split("\t", 1)[1] for line in lines[:200]]


def test_auto_precision_takes_int8_and_fp32_on_request(tiny_bundle: Path) -> None:
    assert Classifier.load(tiny_bundle).precision == "int8"
    assert Classifier.load(tiny_bundle, precision="fp32").precision == "fp32"


def test_scores_are_the_softmax_of_the_onnx_logits(clf: Classifier, tiny_bundle: Path) -> None:
    ids = clf.tokens(SHORT)
    session = ort.InferenceSession(str(tiny_bundle / "model.int8.onnx"))
    logits = session.run(["logits"], {"input_ids": np.array([ids]), "lengths": np.array([len(ids)])})[0]
    expected = np.exp(logits[0].astype(np.float64))
    assert clf.score(SHORT) == pytest.approx(expected[1] / expected.sum(), abs=1e-12)


def test_spam_probability_is_stable_at_the_extremes() -> None:
    p = spam_probability(np.array([[0.0, 0.0], [-800.0, 800.0], [800.0, -800.0]], dtype=np.float32))
    assert p.tolist() == [0.5, 1.0, 0.0]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_alone_equals_in_a_padded_batch(tiny_bundle: Path, precision: str) -> None:
    clf = Classifier.load(tiny_bundle, precision=precision, threads=1)
    alone = [clf.score(m) for m in (SHORT, LONG, "")]
    together = clf.score_batch([LONG, SHORT, "", LONG + LONG])
    assert np.abs(np.array(alone) - np.array(together[:3])[[1, 0, 2]]).max() <= 1e-5


def test_batch_keeps_input_order_across_length_groups(clf: Classifier, sms: list[str]) -> None:
    batch = clf.score_batch(sms)
    assert len(batch) == len(sms)
    assert np.abs(np.array(batch) - np.array([clf.score(m) for m in sms[:20]] + batch[20:])).max() <= 1e-5


def test_texts_are_truncated_to_max_tokens(clf: Classifier) -> None:
    assert clf.bundle.max_tokens == 128
    assert len(clf.tokens(LONG * 10)) == 128
    assert clf.score(LONG * 10) == pytest.approx(clf.score(LONG * 20), abs=1e-9)


def test_length_batches_cover_everything_once_by_length() -> None:
    lengths = [5, 100, 3, 100, 7, 50] * 20
    batches = list(length_batches(lengths, max_rows=8, max_tokens=400))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 8 and len(batch) * max(lengths[i] for i in batch) <= 400


def test_str_bytes_and_message_agree(clf: Classifier) -> None:
    import email

    raw = b"From: a@example.com\nTo: b@example.com\nSubject: cheap meds\n\nBuy now, limited offer.\n"
    scores = clf.score_batch([raw, raw.decode(), email.message_from_bytes(raw)])
    assert scores[0] == scores[1] == scores[2]


def test_verdict_labels_threshold_and_unsure(tiny_bundle: Path, tmp_path: Path) -> None:
    clf = Classifier.load(tiny_bundle)
    s = clf.score(SHORT)
    assert clf.classify(SHORT, threshold=s) == Verdict("spam", s, s, "tiny", "sms")
    assert clf.classify(SHORT, threshold=np.nextafter(s, 1)).label == "ham"
    assert clf.classify(SHORT).threshold == 0.5
    copy = Path(shutil.copytree(tiny_bundle, tmp_path / "b"))
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["unsure"] = [s - 0.01, s + 0.01]
    (copy / MANIFEST).write_text(json.dumps(manifest))
    unsure = Classifier.load(copy).classify(SHORT, threshold=0.0)
    assert unsure.label == "unsure" and not unsure.is_spam
    assert [v.label for v in Classifier.load(copy).classify_batch([SHORT, SHORT], threshold=0.0)] == ["unsure"] * 2


def test_many_threads_get_the_same_scores(clf: Classifier, sms: list[str]) -> None:
    jobs = [sms[i::8] for i in range(8)] * 4
    expected = [clf.score_batch(job) for job in jobs]  # one thread, one job after the other
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(clf.score_batch, jobs))
    assert results == expected
    assert (
        np.abs(np.concatenate(results[:8]) - np.array(clf.score_batch([m for j in jobs[:8] for m in j]))).max() < 1e-5
    )


def test_tokens_use_the_bundle_tokenizer(clf: Classifier) -> None:
    assert clf.tokens("hello <|endoftext|>") == encode(clf._encoding, "hello <|endoftext|>", 128)
    assert 50256 not in clf.tokens("hello <|endoftext|>")
    assert clf.tokens("") == [50256]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="precision must be one of auto, int8, fp32"):
        Classifier.load(precision="fp16")
    with pytest.raises(ValueError, match="threads must be at least 1"):
        Classifier.load(threads=0)


def test_no_model_installed() -> None:
    with pytest.raises(BundleError, match="no model installed: run 'spamguard train'"):
        Classifier.load()


def test_fp32_requested_of_an_int8_only_bundle_says_so(tmp_path: Path) -> None:
    from bundles import make_bundle

    bundle = make_bundle(tmp_path / "noint8", int8=False)
    assert Classifier.load(bundle).precision == "fp32"
    with pytest.raises(BundleError, match="has no int8 model"):
        Classifier.load(bundle, precision="int8")


def test_corrupt_model_file_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(tiny_bundle, tmp_path / "b"))
    (copy / "model.int8.onnx").write_bytes(b"not a model")
    with pytest.raises(BundleError, match=r"model\.int8\.onnx does not match its sha256 \(reinstall the model\)"):
        Classifier.load(copy)
    assert Classifier.load(copy, precision="fp32").precision == "fp32"  # the intact model still loads


def test_max_tokens_beyond_the_position_table_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(tiny_bundle, tmp_path / "b"))
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["max_tokens"] = 257
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"'max_tokens' in spamguard\.json is 257, beyond the model's 256 positions$"):
        Classifier.load(copy)


TRAINED_ON = "bundle {path} was trained on text version "
NOT_A_VERSION = "corrupt bundle {path}: 'text_version' in spamguard.json must be an integer from 1 to 65536, not "


@pytest.mark.parametrize(
    ("version", "line"),
    [
        (None, TRAINED_ON + "1, this spamguard reads messages as version 6: retrain the model (spamguard train)"),
        (4, TRAINED_ON + "4, this spamguard reads messages as version 6: retrain the model (spamguard train)"),
        # the version tried and not adopted: its bundles are refused, not read as version 6
        (5, TRAINED_ON + "5, this spamguard reads messages as version 6: retrain the model (spamguard train)"),
        (7, TRAINED_ON + "7, this spamguard reads messages as version 6: upgrade spamguard (pip install -U spamguard)"),
        ("2", NOT_A_VERSION + '"2"'),  # not a version at all: the manifest's schema refuses it first
        (True, NOT_A_VERSION + "true"),
    ],
)
def test_a_model_trained_on_another_text_version_is_refused(
    tiny_bundle: Path, tmp_path: Path, version: object, line: str
) -> None:
    """A model is served only with the text it was trained on; a bundle without `text_version` is version 1."""
    from click.testing import CliRunner

    from spamguard.cli import main

    copy = Path(shutil.copytree(tiny_bundle, tmp_path / "b"))
    manifest = json.loads((copy / MANIFEST).read_text())
    assert manifest["text_version"] == 6
    if version is None:
        del manifest["text_version"]
    else:
        manifest["text_version"] = version
    (copy / MANIFEST).write_text(json.dumps(manifest))
    line = line.format(path=copy)
    with pytest.raises(BundleError) as caught:
        Classifier.load(copy)
    assert str(caught.value) == line
    result = CliRunner().invoke(main, ["check", "--model", str(copy)], input="hello")
    assert result.exit_code == 3 and result.stderr == f"Error: {line}\n"


def test_score_texts_scores_extracted_text_without_extracting_it_again(clf: Classifier) -> None:
    from spamguard.message_text import message_text

    raw = b"From: a@example.com\nSubject: To: all staff\n\nthe office is closed on Friday\n"
    text = message_text(raw)  # "To: all staff\n\n...": read as a mail again, it would lose its first line
    assert clf.text_tokens(text) == clf.tokens(raw) != clf.tokens(text)
    assert clf.score_texts([text, SHORT]) == clf.score_batch([raw, SHORT])


def test_a_classifier_is_immutable(clf: Classifier) -> None:
    """Documented as immutable so that threads can share it: setting or deleting any attribute raises."""
    for name, value in [("bundle", None), ("precision", "fp32"), ("threads", 8), ("_session", None), ("new", 1)]:
        with pytest.raises(AttributeError):
            setattr(clf, name, value)
    with pytest.raises(AttributeError):
        del clf.bundle
    with pytest.raises(TypeError):
        clf.bundle.fields["threshold"] = 0.0  # type: ignore[index]
    before = clf.classify(SHORT)
    clf.bundle.manifest["threshold"] = 0.0  # the manifest as read is for people; verdicts never read it
    assert clf.classify(SHORT) == before and clf.bundle.threshold == 0.5
    clf.bundle.manifest["threshold"] = 0.5


MAIL = b"From: a@example.com\nTo: b@example.com\nSubject: lunch\n\nShall we meet at noon on Friday?\n"


@pytest.fixture(scope="module")
def two_threshold_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Mail is spam from 0 on, SMS never (the one value above 1 a threshold may take), the fallback 0.5 between:
    every verdict shows which threshold applied, whatever the random model scores."""
    from bundles import make_bundle

    thresholds = {"mail": {"threshold": 0.0, "unsure": None}, "sms": {"threshold": THRESHOLD_MAX, "unsure": None}}
    return make_bundle(tmp_path_factory.mktemp("kinds") / "two", int8=False, thresholds=thresholds)


def test_mail_and_sms_get_the_threshold_of_their_kind(two_threshold_bundle: Path) -> None:
    clf = Classifier.load(two_threshold_bundle)
    mail, sms = clf.classify_batch([MAIL, SHORT])
    assert (mail.kind, mail.threshold, mail.label) == ("mail", 0.0, "spam")
    assert (sms.kind, sms.threshold, sms.label) == ("sms", THRESHOLD_MAX, "ham")
    assert clf.classify(MAIL) == mail and clf.classify(SHORT) == sms
    assert mail.to_dict()["kind"] == "mail" and sms.to_dict()["threshold"] == THRESHOLD_MAX
    assert clf.bundle.threshold == 0.5  # the fallback stays what one-threshold readers see
    # an explicit threshold overrides both kinds
    assert [(v.kind, v.threshold, v.label) for v in clf.classify_batch([MAIL, SHORT], threshold=1.0)] == [
        ("mail", 1.0, "ham"),
        ("sms", 1.0, "ham"),
    ]
    # extracted texts have lost their header block: the caller says their kind
    from spamguard.message_text import message_text

    texts = [message_text(MAIL), SHORT]
    assert clf.classify_texts(texts, ["mail", "sms"]) == [mail, sms]
    assert [v.label for v in clf.classify_texts(texts, "mail")] == ["spam", "spam"]
    with pytest.raises(ValueError, match="kind must be one of mail, sms, not 'fax'"):
        clf.classify_texts(texts, "fax")
    with pytest.raises(ValueError, match="2 texts but 1 kinds"):
        clf.classify_texts(texts, ["mail"])


def test_an_unsure_band_of_one_kind_only(two_threshold_bundle: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(two_threshold_bundle, tmp_path / "b"))
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["thresholds"] = {"sms": {"threshold": 0.5, "unsure": [0.0, 1.0]}}  # mail falls back to the top level
    (copy / MANIFEST).write_text(json.dumps(manifest))
    clf = Classifier.load(copy)
    mail, sms = clf.classify_batch([MAIL, SHORT])
    assert (mail.threshold, sms.threshold, sms.label) == (0.5, 0.5, "unsure")
    assert clf.bundle.unsure_for("sms") == (0.0, 1.0) and clf.bundle.unsure_for("mail") is None


def test_an_old_one_threshold_bundle_applies_it_to_both_kinds(tiny_bundle: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(tiny_bundle, tmp_path / "b"))
    manifest = json.loads((copy / MANIFEST).read_text())
    assert "thresholds" not in manifest
    del manifest["unsure"]  # written by every spamguard so far, but not needed
    (copy / MANIFEST).write_text(json.dumps(manifest))
    clf = Classifier.load(copy)
    assert [clf.bundle.threshold_for(k) for k in ("mail", "sms")] == [0.5, 0.5]
    assert [(v.kind, v.threshold) for v in clf.classify_batch([MAIL, SHORT])] == [("mail", 0.5), ("sms", 0.5)]
