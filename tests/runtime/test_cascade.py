"""The cascade: the band choice (agreement target, false positives, ties; against a brute force), and a real
bundle with a student: exactly the band goes to the full model, in one batch; `cascade=False`; a caller's
threshold; the stage in `check --json`; a bundle without a student as before."""

from __future__ import annotations

import itertools
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from spamguard import Classifier
from spamguard.bundle import THRESHOLD_MAX, Band, KindThreshold, load_bundle, rewrite_bundle
from spamguard.cascade import choose_band, route
from spamguard.cli import main

from bundles import add_student
from conftest import SMS_FILE

SMS = [line.split("\t", 1)[1] for line in SMS_FILE.read_text(encoding="utf-8").splitlines()[:120]]


# --- the band choice ---------------------------------------------------------------------------------------------


def _cascade_labels(student: np.ndarray, full: np.ndarray, band: Band, rule: KindThreshold) -> np.ndarray:
    return np.array([rule.label(f if not band.decides(s) else s) for s, f in zip(student, full, strict=True)])


def _check(student: np.ndarray, full: np.ndarray, labels: np.ndarray, rule: KindThreshold, target: float) -> Band:
    choice = choose_band(student, full, labels, rule.threshold, rule.unsure, min_agreement=target)
    band = choice.band
    low_cap, high_floor = rule.band_limits()
    assert band.low <= low_cap and band.high >= high_floor  # contains the threshold and the unsure band
    full_labels = np.array([rule.label(f) for f in full])
    cascade = _cascade_labels(student, full, band, rule)
    assert np.sum(cascade != full_labels) <= math.floor((1 - target) * len(full) + 1e-9)
    ham = labels == 0
    assert np.sum(ham & (cascade == "spam")) <= np.sum(ham & (full_labels == "spam"))  # no rise of the FPR
    assert choice.record["to_full"] == sum(not band.decides(s) for s in student)
    return band


def test_a_confident_student_decides_everything_it_agrees_on() -> None:
    student = np.array([0.01, 0.02, 0.03, 0.45, 0.97, 0.98, 0.99])  # 0.45: the student would say ham
    full = np.array([0.05, 0.1, 0.2, 0.6, 0.9, 0.95, 0.99])
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    band = _check(student, full, labels, KindThreshold(0.5, None), 0.995)
    assert [not band.decides(s) for s in student] == [False, False, False, True, False, False, False]
    assert band.low == np.nextafter(0.03, 1) and band.high == 0.97  # widest band with that partition


def test_ties_are_decided_together() -> None:
    """Three messages share the student score 0.2; one of them is spam to the full model: with no disagreement
    allowed, all three go to the full model, never two of them."""
    student = np.array([0.1, 0.2, 0.2, 0.2, 0.9])
    full = np.array([0.1, 0.1, 0.7, 0.1, 0.9])
    labels = np.array([0, 0, 1, 0, 1])
    band = _check(student, full, labels, KindThreshold(0.5, None), 0.995)
    routed = [not band.decides(s) for s in student]
    assert routed == [False, True, True, True, False]


def test_the_disagreement_budget_is_spent_only_where_allowed() -> None:
    """1000 messages, 0.5% may disagree: 5. Ten messages the student scores low are spam to the full model;
    five of them may be decided (missed spam), the rest must reach the full model."""
    rng = np.random.default_rng(0)
    student = np.concatenate([rng.uniform(0, 0.1, 990), np.linspace(0.001, 0.09, 10)])
    full = np.concatenate([rng.uniform(0, 0.2, 990), np.full(10, 0.8)])
    labels = (full > 0.5).astype(int)
    band = _check(student, full, labels, KindThreshold(0.5, None), 0.995)
    missed = [s for s, f in zip(student, full, strict=True) if f > 0.5 and band.decides(s)]
    assert len(missed) == 5


def test_a_ham_the_student_would_flag_stays_with_the_full_model() -> None:
    """Agreement alone would let the student call one ham spam (1 of 1000 may disagree at 99.9%... here the
    target allows 5), but that is a false positive the full model did not make: the band keeps it."""
    student = np.concatenate([np.full(995, 0.01), [0.99] * 4, [0.98]])
    full = np.concatenate([np.full(995, 0.01), [0.99] * 4, [0.1]])
    labels = np.concatenate([np.zeros(995), np.ones(4), [0]]).astype(int)
    band = _check(student, full, labels, KindThreshold(0.5, None), 0.995)
    assert not band.decides(0.98) and band.decides(0.99)


def test_the_unsure_band_belongs_to_the_full_model() -> None:
    student = np.array([0.05, 0.35, 0.45, 0.6, 0.95])
    full = student.copy()
    rule = KindThreshold(0.5, (0.3, 0.7))
    band = _check(student, full, np.array([0, 0, 1, 1, 1]), rule, 0.995)
    assert band.low <= 0.3 and band.high >= 0.7
    assert [band.decides(s) for s in student] == [True, False, False, False, True]


def test_nothing_qualifies_but_the_full_model() -> None:
    student = np.array([0.9, 0.1])
    full = np.array([0.1, 0.9])
    band = _check(student, full, np.array([0, 1]), KindThreshold(0.5, None), 0.995)
    assert (band.low, band.high) == (0.0, THRESHOLD_MAX)


def _brute_force(student: np.ndarray, full: np.ndarray, labels: np.ndarray, rule: KindThreshold, target: float) -> int:
    """The fewest messages routed over every band with bounds at the scores (or beyond them)."""
    cuts = sorted({0.0, *student.tolist(), *(np.nextafter(x, 2) for x in student), THRESHOLD_MAX})
    low_cap, high_floor = rule.band_limits()
    full_labels = np.array([rule.label(f) for f in full])
    budget = math.floor((1 - target) * len(full) + 1e-9)
    best = len(full)
    for low, high in itertools.product(cuts, cuts):
        if low > low_cap or high < high_floor:
            continue
        band = Band(low, high)
        cascade = _cascade_labels(student, full, band, rule)
        fp_ok = np.sum((labels == 0) & (cascade == "spam")) <= np.sum((labels == 0) & (full_labels == "spam"))
        if np.sum(cascade != full_labels) <= budget and fp_ok:
            best = min(best, sum(not band.decides(s) for s in student))
    return best


scores = st.lists(st.sampled_from([0.0, 0.1, 0.2, 0.3, 0.45, 0.5, 0.55, 0.7, 0.8, 0.9, 1.0]), min_size=1, max_size=12)


@given(st.data())
def test_the_choice_routes_as_few_as_any_band_can(data: st.DataObject) -> None:
    student = np.array(data.draw(scores))
    n = len(student)
    full = np.array(data.draw(st.lists(st.sampled_from([0.05, 0.4, 0.5, 0.6, 0.95]), min_size=n, max_size=n)))
    labels = np.array(data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    unsure = data.draw(st.sampled_from([None, (0.4, 0.6)]))
    target = data.draw(st.sampled_from([0.995, 0.9, 0.75]))
    rule = KindThreshold(0.5, unsure)
    band = _check(student, full, labels, rule, target)
    assert sum(not band.decides(s) for s in student) == _brute_force(student, full, labels, rule, target)


def test_route_sends_the_band_and_the_kinds_without_one() -> None:
    band = Band(0.2, 0.8)
    assert route([0.1, 0.2, 0.5, 0.8, 0.9, 0.1], [band, band, band, band, band, None]) == [1, 2, 5]


# --- a bundle with a student -------------------------------------------------------------------------------------


class CountingSession:
    """Stands in for the full model's onnxruntime session (set into the classifier's slot for the test: there is
    no other way to see which rows reach the model) and records the rows of every run."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.runs: list[list[list[int]]] = []

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> Any:
        ids, lengths = feeds["input_ids"], feeds["lengths"]
        self.runs.append([row[:n].tolist() for row, n in zip(ids, lengths, strict=True)])
        return self.session.run(names, feeds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


@pytest.fixture(scope="module")
def cascade_bundle(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle with a random student whose SMS band holds the middle third of the student's scores on
    `SMS` (and the threshold); mail has no band."""
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("cascade") / "tiny"))
    add_student(bundle, {"sms": (0.0, THRESHOLD_MAX)})
    clf = Classifier.load(bundle)
    student = clf.student_scores([clf.text_tokens(t) for t in SMS])
    low, high = np.quantile(student, [1 / 3, 2 / 3])
    threshold = load_bundle(bundle).threshold_for("sms")
    record = dict(load_bundle(bundle).manifest["cascade"])
    record["bands"] = {"sms": {"low": float(min(low, threshold)), "high": float(max(high, threshold))}}
    rewrite_bundle(load_bundle(bundle), add={}, fields={"cascade": record})
    return bundle


def test_exactly_the_band_reaches_the_full_model_in_one_batch(cascade_bundle: Path) -> None:
    clf = Classifier.load(cascade_bundle, threads=1)
    assert clf.cascade and clf.student_precision == "int8"
    tokens = [clf.text_tokens(t) for t in SMS]
    student = clf.student_scores(tokens)
    full = clf.score_tokens(tokens)
    band = clf.bundle.cascade.bands["sms"]  # type: ignore[union-attr]
    in_band = [i for i, s in enumerate(student) if band.low <= s < band.high]
    assert 0 < len(in_band) < len(SMS)
    spy = CountingSession(clf._session)
    object.__setattr__(clf, "_session", spy)
    verdicts = clf.classify_texts(SMS, "sms")
    seen = sorted(map(tuple, itertools.chain.from_iterable(spy.runs)))
    assert seen == sorted(tuple(tokens[i]) for i in in_band)  # every band message once, nothing else
    assert len(spy.runs) == math.ceil(len(in_band) / 32)  # the undecided ones as batches, not one by one
    for i, verdict in enumerate(verdicts):
        stage, score = ("full", full[i]) if i in in_band else ("student", student[i])
        assert (verdict.stage, verdict.kind) == (stage, "sms")
        assert verdict.score == pytest.approx(score, abs=1e-6)
        assert verdict.label == ("spam" if verdict.score >= verdict.threshold else "ham")


def test_a_kind_without_a_band_and_a_callers_threshold_go_to_the_full_model(cascade_bundle: Path) -> None:
    clf = Classifier.load(cascade_bundle, threads=1)
    assert {v.stage for v in clf.classify_texts(SMS[:20], "mail")} == {"full"}
    own = clf.bundle.threshold_for("sms")
    assert {v.stage for v in clf.classify_texts(SMS, "sms", threshold=own)} == {"student", "full"}
    assert {v.stage for v in clf.classify_texts(SMS, "sms", threshold=0.3)} == {"full"}


def test_no_cascade_uses_the_full_model_alone(cascade_bundle: Path, tiny_bundle: Path) -> None:
    off = Classifier.load(cascade_bundle, cascade=False, threads=1)
    plain = Classifier.load(tiny_bundle, threads=1)
    assert not off.cascade and off.student_precision is None
    verdicts = off.classify_texts(SMS, "sms")
    assert {v.stage for v in verdicts} == {"full"}
    assert [v.score for v in verdicts] == [v.score for v in plain.classify_texts(SMS, "sms")]
    assert len({off.identity, Classifier.load(cascade_bundle).identity, plain.identity}) == 3


def test_a_bundle_without_a_student_is_unchanged(tiny_bundle: Path) -> None:
    clf = Classifier.load(tiny_bundle, threads=1)
    assert not clf.cascade and clf.bundle.cascade is None
    verdicts = clf.classify_batch([s.encode() for s in SMS[:30]])
    assert {v.stage for v in verdicts} == {"full"}
    assert [v.score for v in verdicts] == clf.score_batch([s.encode() for s in SMS[:30]])


def test_check_json_says_which_stage_decided(cascade_bundle: Path, tmp_path: Path) -> None:
    files = []
    for i, text in enumerate(SMS[:40]):
        files.append(tmp_path / f"{i}.txt")
        files[-1].write_text(text)
    clf = Classifier.load(cascade_bundle)
    expected = [v.stage for v in clf.classify_batch([f.read_bytes() for f in files])]
    assert set(expected) == {"student", "full"}
    for flags, stages in (((), expected), (("--no-cascade",), ["full"] * len(files))):
        result = CliRunner().invoke(main, ["check", "--json", "-m", str(cascade_bundle), *flags, *map(str, files)])
        assert result.exit_code in (0, 1), result.output
        assert [json.loads(line)["stage"] for line in result.stdout.splitlines()] == stages


def test_the_header_says_which_stage_decided(cascade_bundle: Path) -> None:
    clf = Classifier.load(cascade_bundle)
    texts = [t for t in SMS if t.strip()][:40]
    stages = [v.stage for v in clf.classify_batch([t.encode() for t in texts])]
    chosen = {stage: texts[stages.index(stage)] for stage in ("student", "full")}
    for stage, text in chosen.items():
        for flags, shown in (((), stage), (("--no-cascade",), "full")):
            result = CliRunner().invoke(main, ["pipe", "-m", str(cascade_bundle), *flags], input=text.encode())
            assert result.exit_code == 0, result.output
            header = [line for line in result.stdout.splitlines() if line.startswith("X-Spamguard: ")]
            assert len(header) == 1 and f" kind=sms stage={shown} model=tiny " in header[0]
