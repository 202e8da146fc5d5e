from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from own_mail_helpers import make_message

from spamguard.explain import (
    MAX_LINE_CHARS,
    explain_message,
    explain_text,
    has_subject_line,
    remove_part,
    split_parts,
    visible_chars,
)
from spamguard.message_text import TEXT_VERSION

from conftest import BPE_DIR, SMS_FILE

WEIGHTS = {"viagra": 6.0, "cheap": 1.0, "meeting": -1.0, "prize": 3.0}


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def _word_score(text: str) -> float:
    words = text.lower().replace(",", " ").replace(".", " ").replace("!", " ").split()
    return _sigmoid(-3 + sum(WEIGHTS.get(w, 0.0) for w in words))


class Recorder:
    """A known scoring function that also records how it was called."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> list[float]:
        self.calls.append(list(texts))
        return [_word_score(t) for t in texts]


MAIL = make_message(
    "Quarterly meeting",
    "Hi team,\nthe agenda is attached.\nBuy cheap viagra now\n\nRegards, Bob",
)


def test_spam_line_is_found_first_with_its_exact_delta() -> None:
    score = Recorder()
    explanation = explain_message(MAIL, score)
    text = explanation.text
    assert text.startswith("Quarterly meeting\n\n")
    top = explanation.effects[0]
    assert (top.part.kind, top.part.text, top.part.line) == ("line", "Buy cheap viagra now", 5)
    without = _word_score(text.replace("Buy cheap viagra now\n", ""))
    assert explanation.score == pytest.approx(_word_score(text))
    assert top.delta == pytest.approx(_word_score(text) - without) and top.delta > 0.5
    assert top.delta_logit == pytest.approx(7.0)  # the line carries viagra (+6) and cheap (+1)
    subject = next(e for e in explanation.effects if e.part.kind == "subject")
    assert subject.delta < 0 and subject is explanation.effects[-1]  # "meeting" pulls towards ham
    assert len(score.calls) == 1 and len(score.calls[0]) == 1 + len(explanation.effects)  # one batch
    assert explanation.lines(2)[0] == f"{top.delta:+.4f} (log-odds +7.00)  line 5: 'Buy cheap viagra now'"


def test_subject_is_a_part_of_its_own() -> None:
    explanation = explain_message(make_message("You won a prize", "see you at lunch"), Recorder())
    top = explanation.effects[0]
    assert (top.part.kind, top.part.text, top.part.line) == ("subject", "You won a prize", 1)
    assert remove_part(explanation.text, top.part) == "see you at lunch"


def test_sms_and_subjectless_mail_have_no_subject_part() -> None:
    assert not has_subject_line("WIN a prize now\nreply STOP")
    assert not has_subject_line(b"From: a@b\nTo: c@d\nSubject: \n\nbody")
    assert not has_subject_line(b"From: a@b\nTo: c@d\nSubject: =?utf-8?q??=\n\nbody")
    assert has_subject_line(b"From: a@b\nTo: c@d\nSubject: =?utf-8?q?caf=C3=A9?=\n\nbody")
    explanation = explain_message("hello\nWIN a prize now", Recorder())
    assert [e.part.kind for e in explanation.effects] == ["line", "line"]
    assert explanation.effects[0].part.text == "WIN a prize now"


def test_long_lines_are_split_into_sentences() -> None:
    filler = "We met at the office on Monday. " * 8
    text = f"Notes\n\n{filler}Buy cheap viagra now! Thanks for coming."
    assert len(text.split("\n")[-1]) > MAX_LINE_CHARS
    explanation = explain_text(text, Recorder(), has_subject=True)
    top = explanation.effects[0]
    assert (top.part.kind, top.part.text) == ("sentence", "Buy cheap viagra now!")
    assert remove_part(text, top.part).endswith("Monday. Thanks for coming.")


def test_parts_beyond_the_visible_text_are_not_scored() -> None:
    text = "Subject\n\nfirst line\nsecond line\ncheap viagra at the end"
    score = Recorder()
    explanation = explain_text(text, score, has_subject=True, visible=text.index("second") + 3)
    assert [e.part.text for e in explanation.effects] != [] and explanation.unseen == 1
    assert all("viagra" not in e.part.text for e in explanation.effects)
    assert explanation.lines()[-1] == "(1 parts beyond the model's token budget were not scored)"


def test_many_lines_are_merged_to_bound_the_batch() -> None:
    text = "Subject\n\n" + "\n".join(f"line {i}" for i in range(100)) + "\ncheap viagra"
    score = Recorder()
    explanation = explain_text(text, score, has_subject=True, max_parts=10)
    assert len(explanation.effects) <= 10 and len(score.calls[0]) == len(explanation.effects) + 1
    assert {e.part.kind for e in explanation.effects} == {"subject", "lines"}
    assert "cheap viagra" in explanation.effects[0].part.text


def test_split_parts_cover_the_whole_body() -> None:
    text = "Subject line\n\nalpha\n\nbeta\ngamma"
    parts = split_parts(text, has_subject=True)
    assert [(p.kind, p.line, p.text) for p in parts] == [
        ("subject", 1, "Subject line"),
        ("line", 3, "alpha"),
        ("line", 5, "beta"),
        ("line", 6, "gamma"),
    ]
    assert [remove_part(text, p) for p in parts] == [
        "alpha\n\nbeta\ngamma",
        "Subject line\n\n\nbeta\ngamma",
        "Subject line\n\nalpha\n\ngamma",
        "Subject line\n\nalpha\n\nbeta",
    ]


def test_visible_chars_follow_the_token_budget() -> None:
    from spamguard.tokenizer import load_encoding

    encoding = load_encoding(BPE_DIR / "encoder.json", BPE_DIR / "vocab.bpe")
    text = "hello world, " * 50
    assert visible_chars(encoding, text, 10_000) == len(text)
    cut = visible_chars(encoding, text, 8)
    assert text[:cut] == encoding.decode(encoding.encode_ordinary(text)[:8])


# --- the real exported model: a tiny GPT-2 trained to react to one phrase ---------------------------------------

TRIGGER = "cheap viagra pills"


def _trained_tiny_onnx(out: Path) -> Path:
    """A 2-layer GPT-2 trained for 200 steps to call a text spam exactly when it holds the trigger
    phrase (on lines of real SMS ham around it), exported through the product's ONNX export."""
    import random

    import torch

    from spamguard.datasets import HAM, read_sms_tsv
    from spamguard.padding import pad_batch
    from spamguard.tokenizer import encode, load_encoding
    from spamguard.training.export import export_onnx
    from spamguard.training.gpt2 import GPT2Classifier, GPTConfig

    encoding = load_encoding(BPE_DIR / "encoder.json", BPE_DIR / "vocab.bpe")
    filler = [e.text for e in read_sms_tsv(SMS_FILE) if e.label == HAM and len(e.text) < 60][:400]
    rng = random.Random(0)
    torch.manual_seed(0)
    model = GPT2Classifier(GPTConfig(n_layer=2, n_head=2, n_embd=32, n_positions=128))
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small only loses to thread handover on a shared 2-core machine
    try:
        for _ in range(200):
            texts, labels = [], []
            for _ in range(16):
                lines = rng.sample(filler, rng.randint(2, 4))
                label = rng.random() < 0.5
                if label:
                    lines.insert(rng.randint(0, len(lines)), TRIGGER)
                texts.append("\n".join(lines))
                labels.append(int(label))
            ids, lengths = pad_batch([encode(encoding, t, 120) for t in texts])
            logits = model(torch.from_numpy(ids), torch.from_numpy(lengths))
            loss = torch.nn.functional.cross_entropy(logits, torch.tensor(labels))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    finally:
        torch.set_num_threads(threads)
    export_onnx(model.eval(), out)
    return out


@pytest.fixture(scope="module")
def trigger_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _trained_tiny_onnx(tmp_path_factory.mktemp("explain") / "model.onnx")


@pytest.fixture(scope="module")
def trigger_bundle(trigger_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trigger model as an installed-style bundle, for the classifier and the CLI."""
    from spamguard.bundle import write_bundle

    bundle = write_bundle(
        tmp_path_factory.mktemp("bundle") / "trigger",
        models={"fp32": trigger_onnx},
        encoder_json=BPE_DIR / "encoder.json",
        vocab_bpe=BPE_DIR / "vocab.bpe",
        manifest={"name": "trigger", "threshold": 0.5, "max_tokens": 120, "text_version": TEXT_VERSION},
    )
    return bundle.path


@pytest.fixture(scope="module")
def onnx_scorer(trigger_onnx: Path) -> Callable[[list[str]], list[float]]:
    """The exported model behind a plain scoring function: tokens, one padded batch, softmax."""
    import onnxruntime as ort

    from spamguard.padding import pad_batch
    from spamguard.tokenizer import encode, load_encoding

    session = ort.InferenceSession(str(trigger_onnx), providers=["CPUExecutionProvider"])
    encoding = load_encoding(BPE_DIR / "encoder.json", BPE_DIR / "vocab.bpe")

    def score(texts: list[str]) -> list[float]:
        ids, lengths = pad_batch([encode(encoding, t, 120) for t in texts])
        logits = session.run(["logits"], {"input_ids": ids, "lengths": lengths})[0].astype(np.float64)
        return list(1 / (1 + np.exp(logits[:, 0] - logits[:, 1])))

    return score


@pytest.mark.slow
def test_real_onnx_model_explanation_finds_the_trigger_line(onnx_scorer: Callable[[list[str]], list[float]]) -> None:
    body = f"Are you coming home tonight?\nI will call you later.\n{TRIGGER}\nOk see you at the station."
    mail = make_message("Tonight", body)
    explanation = explain_message(mail, onnx_scorer)
    assert explanation.score > 0.9  # the model learnt the phrase ...
    assert onnx_scorer([explanation.text.replace(TRIGGER + "\n", "")])[0] < 0.1  # ... and nothing else flags it
    top = explanation.effects[0]
    assert (top.part.kind, top.part.text) == ("line", TRIGGER)
    assert top.delta > 0.8 and all(e.delta < 0.5 * top.delta for e in explanation.effects[1:])


@pytest.mark.slow
def test_classifier_explanation_agrees_with_its_verdict(trigger_bundle: Path) -> None:
    from spamguard.classifier import Classifier
    from spamguard.explain import explain_with_classifier

    clf = Classifier.load(trigger_bundle, precision="fp32")
    body = f"Are you coming home tonight?\n{TRIGGER}\nOk see you at the station."
    # A subject that reads as a header field: extracting the extracted text again would lose it.
    mail = make_message("From: the desk of your manager", body)
    explanation = explain_with_classifier(mail, clf)
    assert explanation.score == pytest.approx(clf.score(mail), abs=1e-6)  # the verdict's own score
    assert explanation.effects[0].part.text == TRIGGER and explanation.score > 0.9
    assert any(e.part.kind == "subject" for e in explanation.effects)


@pytest.mark.slow
def test_check_explain_prints_the_trigger_line_first(trigger_bundle: Path, tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from spamguard.cli import main

    mail = tmp_path / "flagged.eml"
    mail.write_bytes(make_message("Tonight", f"Are you coming home tonight?\n{TRIGGER}\nOk see you at the station."))
    result = CliRunner().invoke(main, ["check", "--explain", "--model", str(trigger_bundle), str(mail)])
    assert result.exit_code == 0, result.output  # spam
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{mail}: spam score=0.9")
    assert len(lines) == 1 + 4  # subject and three body lines, all within the token budget
    delta = float(lines[1].split()[0])
    assert delta > 0.8 and lines[1].endswith(f"line 4: '{TRIGGER}'")
    assert all(float(line.split()[0]) < 0.5 * delta for line in lines[2:])

    result = CliRunner().invoke(main, ["check", "--explain", "--json", "--model", str(trigger_bundle), str(mail)])
    record = json.loads(result.stdout)
    assert record["label"] == "spam" and len(record["explain"]) == 4
    top = record["explain"][0]
    assert (top["text"], top["line"]) == (TRIGGER, 4) and top["delta"] == pytest.approx(delta, abs=1e-4)
    assert top["score_without"] == pytest.approx(record["score"] - top["delta"])
