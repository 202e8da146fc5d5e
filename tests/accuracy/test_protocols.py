"""The accuracy benchmark's splits and operating points: the parts whose mistakes would make the table lie."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spamguard.training.data import label_counts

from accuracy.evaluate import operating_points
from accuracy.protocols import build
from conftest import MAIL_DIR, SMS_FILE


def _texts(part: list) -> set[str]:
    return {e.text for e in part}


@pytest.mark.parametrize("protocol", ["P1", "P2"])
def test_sms_protocols_are_disjoint_and_reproducible(protocol: str) -> None:
    a = build(protocol, 123, sms_file=SMS_FILE, mail_dir=MAIL_DIR)
    b = build(protocol, 123, sms_file=SMS_FILE, mail_dir=MAIL_DIR)
    assert a == b
    parts = [_texts(p) for p in (a.train, a.validation, a.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert build(protocol, 7, sms_file=SMS_FILE, mail_dir=MAIL_DIR).test != a.test


def test_p1_is_balanced_and_p2_keeps_the_natural_ratio() -> None:
    p1 = build("P1", 123, sms_file=SMS_FILE, mail_dir=MAIL_DIR)
    total = label_counts(p1.train + p1.validation + p1.test)
    assert total == {"ham": 653, "spam": 653}
    p2 = build("P2", 123, sms_file=SMS_FILE, mail_dir=MAIL_DIR)
    counts = [label_counts(p) for p in (p2.train, p2.validation, p2.test)]
    assert sum(c["ham"] for c in counts) == 4518 and sum(c["spam"] for c in counts) == 653
    for c in counts:  # stratified: every part keeps the ~12.6% spam share
        assert abs(c["spam"] / (c["ham"] + c["spam"]) - 653 / 5171) < 0.01


def test_operating_points_come_from_validation_not_test() -> None:
    val_labels = np.array([0] * 1000 + [1] * 10)
    val_scores = np.r_[np.linspace(0, 0.9, 1000), np.full(10, 0.95)]
    test_labels = np.array([0, 0, 1, 1])
    test_scores = np.array([0.91, 0.2, 0.95, 0.5])
    points = operating_points(val_labels, val_scores, test_labels, test_scores)
    # FPR <= 0.1%: one validation ham may pass, so the threshold sits just above the second-highest ham (0.8991)
    assert 0.899 < points[0.001]["threshold"] < 0.9
    assert points[0.001]["fpr"] == 0.5 and points[0.001]["recall"] == 0.5  # test pays for it: 0.91 ham flagged
    assert 0.895 < points[0.005]["threshold"] < 0.897


def test_mail_protocol_is_stratified_deduplicated_and_keeps_raw_paths() -> None:
    p3 = build("P3", 123, sms_file=SMS_FILE, mail_dir=MAIL_DIR)
    parts = (p3.train, p3.validation, p3.test)
    texts = [_texts(p) for p in parts]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    counts = [label_counts(p) for p in parts]
    assert all(c["ham"] > 0 and c["spam"] > 0 for c in counts)
    assert sum(c["spam"] for c in counts) == 246 and sum(c["ham"] for c in counts) == 1238
    assert all(Path(e.source).is_file() for e in p3.test)


class _Stub:
    """Scores a message by its label and kind, so each kind's operating point differs."""

    name = "stub"
    default_threshold = 0.5

    def fit(self, train: list, validation: list) -> None:
        pass

    def score(self, examples: list) -> np.ndarray:
        return np.array([(0.6 if e.label else 0.2) + (0.3 if e.kind == "mail" else 0.0) for e in examples])


def test_mixed_protocol_is_split_by_kind_and_reported_per_kind() -> None:
    from accuracy.evaluate import evaluate

    p4 = build("P4", 123, sms_file=SMS_FILE, mail_dir=MAIL_DIR)
    assert p4.kinds() == ["mail", "sms"]
    assert all(c["ham"] and c["spam"] for kind in p4.counts_by_kind().values() for c in kind.values())
    results = evaluate(_Stub(), p4, "P4", 0)
    assert [r.protocol for r in results] == ["P4 mail", "P4 sms"]
    for result, kind in zip(results, ("mail", "sms"), strict=True):
        assert len(result.test_labels) == sum(e.kind == kind for e in p4.test)
        assert result.at_fpr[0.005]["recall"] == 1.0 and result.at_fpr[0.005]["fpr"] == 0.0  # each kind's own
    mail, sms = results
    assert (mail.default["fpr"], sms.default["fpr"]) == (1.0, 0.0)  # at one threshold mail ham (0.5) is flagged
