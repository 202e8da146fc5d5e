"""The module-level API (`is_spam`, `score`) and what `import spamguard` and `spamguard check` load."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import spamguard
from spamguard import Classifier, is_spam, registry, score
from spamguard.errors import BundleError

SMS = "URGENT! You have won a 1 week FREE membership in our £100,000 Prize Jackpot!"


def test_score_and_is_spam_with_a_path_and_the_default(tiny_bundle: Path) -> None:
    expected = Classifier.load(tiny_bundle).score(SMS)
    assert score(SMS, model=tiny_bundle) == expected
    assert is_spam(SMS, model=tiny_bundle, threshold=expected) is True
    assert is_spam(SMS.encode(), model=tiny_bundle, threshold=min(1.0, expected + 1e-9)) is False
    with pytest.raises(BundleError, match="no model installed"):
        score(SMS)
    registry.install(tiny_bundle)
    assert score(SMS) == expected


def test_the_module_functions_reuse_one_classifier_per_bundle(tiny_bundle: Path) -> None:
    first = spamguard._classifier(tiny_bundle)
    assert spamguard._classifier(str(tiny_bundle)) is first
    registry.install(tiny_bundle, "copy")
    assert spamguard._classifier("copy") is not first


def _run_python(code: str, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, check=True
    )
    return result.stdout.strip()


def test_import_spamguard_is_cheap() -> None:
    loaded = _run_python(
        "import sys, spamguard; print(sorted({'onnxruntime', 'numpy', 'tiktoken', 'torch'} & set(sys.modules)))"
    )
    assert loaded == "[]"


def test_check_runs_without_torch(tiny_bundle: Path) -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
        "from spamguard.cli import main\n"
        f"main(['check', '--model', {str(tiny_bundle)!r}, '--threshold', '0'])"
    )
    result = subprocess.run([sys.executable, "-c", code], input=SMS, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("stdin: spam score=")
