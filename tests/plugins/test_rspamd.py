"""rspamd 3.4 (Debian's package) with `external_services` of type `spamassassin` pointed at `spamguard serve
--spamd`: rspamd sends HEADERS, reads only the first segment of the reply and takes the score from
`X-Spam-Status: ..., score=S ... tests=T autolearn=...`, so `rspamc symbols` shows the SPAMD symbol with
spamguard's own score (P(spam) as the X-Spam-Status header carries it, times the symbol's weight, 1.0 here)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from mailstack import free_port
from servestack import Rspamd, Serve, running_rspamd, running_serve, spread

from spamguard import Classifier

from conftest import MAIL_DIR

pytestmark = pytest.mark.integration

SAMPLE = spread(sorted(MAIL_DIR.glob("*/*")), 5)
SYMBOL = re.compile(r"Symbol: SPAMD \(([\d.]+)\)\[SPAMGUARD\]")


@pytest.fixture(scope="module")
def server(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with running_serve(tiny_bundle, "--spamd", "127.0.0.1:0", log=log) as running:
        yield running


@pytest.fixture(scope="module")
def rspamd(server: Serve) -> Iterator[Rspamd]:
    # a dead server listed first: rspamd's retransmit finds the live one
    with running_rspamd(f"127.0.0.1:{free_port()},{server.doors['spamd']}") as running:
        yield running


def test_rspamc_shows_the_symbol_with_spamguards_score(server: Serve, rspamd: Rspamd, tiny_bundle: Path) -> None:
    classifier = Classifier.load(tiny_bundle)
    for path in SAMPLE:
        out = rspamd.symbols(path)
        match = SYMBOL.search(out)
        assert match is not None, out
        # rspamd scores what the X-Spam-Status header says: P(spam) to two decimals, as the pipe writes it
        assert float(match.group(1)) == pytest.approx(float(f"{classifier.score(path.read_bytes()):.2f}"))
    assert len(server.lines("verb=HEADERS")) >= len(SAMPLE)


def test_server_down_is_a_fail_symbol_and_the_message_still_scored(rspamd: Rspamd, server: Serve) -> None:
    with running_rspamd(f"127.0.0.1:{free_port()}") as lonely:
        out = lonely.symbols(SAMPLE[0])
    assert "Symbol: SPAMD_FAIL" in out and "Connection refused" in out and "Action:" in out
