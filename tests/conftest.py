from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Small slices of the public data sets, committed with the tests (tests/fixtures/README.md: what, source, licence),
# in the layout of `spamguard.paths.datasets_dir()`, so no test needs anything outside the repository.
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SMS_FILE = FIXTURES / "sms_spam_collection" / "SMSSpamCollection"
BPE_DIR = FIXTURES / "gpt2_bpe"
MAIL_DIR = FIXTURES / "spamassassin_2003_part1"

# How fast hypothesis generates inputs on a CPU that other jobs share says nothing about the code under test (a
# draw of a few bytes took 1.1 s in a loaded run): no health check and no deadline on speed.
settings.register_profile("shared-cpu", suppress_health_check=[HealthCheck.too_slow], deadline=None)
settings.load_profile("shared-cpu")


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
