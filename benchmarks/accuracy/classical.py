"""The filters people already use, behind one small interface: fit on train (+ validation), score P(spam).

scikit-learn for the n-gram models (the standard baselines of the SMS-spam literature) and the real bogofilter
binary, trained and scored the way its users run it (`-s`/`-n` to register, `-T` to score)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from spamguard.training.data import SPAM, Example


class SklearnMethod:
    """A text pipeline whose `predict_proba` column 1 is P(spam); default threshold 0.5 as sklearn predicts."""

    default_threshold = 0.5

    def __init__(self, name: str, make_pipeline: object) -> None:
        self.name = name
        self._make = make_pipeline
        self._model = None

    def fit(self, train: list[Example], validation: list[Example]) -> None:
        self._model = self._make()  # type: ignore[operator]
        self._model.fit([e.text for e in train], [e.label for e in train])

    def score(self, examples: list[Example]) -> np.ndarray:
        return self._model.predict_proba([e.text for e in examples])[:, 1]


def sklearn_methods(seed: int) -> list[SklearnMethod]:
    """Each model's regularisation is chosen by 5-fold cross-validation on the training split (never on test),
    so the baselines are as strong as a careful user would make them."""
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.naive_bayes import MultinomialNB
    from sklearn.pipeline import make_pipeline

    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)

    def tuned(vectorizer: object, model: object, grid: dict) -> object:
        return GridSearchCV(make_pipeline(vectorizer, model), grid, cv=folds, scoring="accuracy")

    regularisation = {"logisticregression__C": [1.0, 10.0, 100.0, 1000.0]}
    return [
        SklearnMethod(
            "tfidf-char2-5+logreg",
            lambda: tuned(
                TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
                LogisticRegression(max_iter=5000, random_state=seed),
                regularisation,
            ),
        ),
        SklearnMethod(
            "tfidf-word1-2+logreg",
            lambda: tuned(
                TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                LogisticRegression(max_iter=5000, random_state=seed),
                regularisation,
            ),
        ),
        SklearnMethod(
            "count+multinomialNB",
            lambda: tuned(CountVectorizer(), MultinomialNB(), {"multinomialnb__alpha": [0.01, 0.1, 0.3, 1.0]}),
        ),
    ]


class Bogofilter:
    """bogofilter 1.2.5 with a private word list. Raw mail is registered as it is; an SMS becomes a message
    with an empty header block, so its words count as body text. Its own default verdict is 'S' (spamicity at
    or above its spam cutoff), so the default threshold is that cutoff, read from `bogofilter -Q`."""

    name = "bogofilter"

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="bogofilter-bench-"))
        self.default_threshold = self._spam_cutoff()

    @staticmethod
    def available() -> bool:
        return shutil.which("bogofilter") is not None

    def _run(self, *args: str) -> str:
        """bogofilter exits 0/1/2 for spam/ham/unsure (of the last message in bulk mode) and 3 on error."""
        done = subprocess.run(["bogofilter", "-C", "-d", str(self._dir / "db"), *args], capture_output=True, text=True)
        if done.returncode not in (0, 1, 2):
            raise RuntimeError(f"bogofilter {' '.join(args[:2])} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def _spam_cutoff(self) -> float:
        for line in self._run("-Q").splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "spam_cutoff":
                return float(value.split()[0])
        raise RuntimeError("bogofilter -Q did not report spam_cutoff")

    def _files(self, examples: list[Example], tag: str) -> list[str]:
        """Raw files where the example came from one, else one temporary message per text."""
        folder = self._dir / tag
        folder.mkdir(exist_ok=True)
        files = []
        for i, e in enumerate(examples):
            if e.source and Path(e.source).is_file():
                files.append(e.source)
            else:
                path = folder / f"{i}.eml"
                path.write_bytes(b"\n" + e.text.encode("utf-8"))
                files.append(str(path))
        return files

    def fit(self, train: list[Example], validation: list[Example]) -> None:
        (self._dir / "db").mkdir(exist_ok=True)
        spam = [e for e in train if e.label == SPAM]
        ham = [e for e in train if e.label != SPAM]
        self._run("-s", "-B", *self._files(spam, "train-spam"))
        self._run("-n", "-B", *self._files(ham, "train-ham"))

    def score(self, examples: list[Example]) -> np.ndarray:
        files = self._files(examples, f"score-{len(list(self._dir.iterdir()))}")
        scores = {}
        for line in self._run("-T", "-B", *files).splitlines():
            path, _verdict, value = line.rsplit(" ", 2)
            scores[path] = float(value)
        return np.array([scores[f] for f in files])

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)
