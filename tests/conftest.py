from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SMS_FILE = SHARED_DATA / "sms_spam_collection" / "SMSSpamCollection"
BPE_DIR = SHARED_DATA / "gpt2_bpe"
MAIL_DIR = SHARED_DATA / "spamassassin_2003_part1"


@pytest.fixture(autouse=True)
def spamguard_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own user dir, so no test reads or writes the developer's real models."""
    home = tmp_path_factory.mktemp("spamguard-home")
    monkeypatch.setenv("SPAMGUARD_HOME", str(home))
    monkeypatch.delenv("SPAMGUARD_MODEL", raising=False)
    monkeypatch.delenv("SPAMGUARD_DATA", raising=False)  # no test may read a developer's data sets
    return home


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models train fastest on one thread, above all on a shared machine (`spamguard train --threads 1`
    sets torch's global count); restore the setting after."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only tiny bundle shared by the whole session (exporting takes a few seconds). Tests that modify a
    bundle copy it first."""
    from bundles import make_bundle

    return make_bundle(tmp_path_factory.mktemp("bundles") / "tiny")
