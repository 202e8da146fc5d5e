"""`spamguard serve` on a bundle with a student, as a real process on loopback: every log line (HTTP and spamd
doors) and the HTTP answer say which stage decided, `--no-cascade` makes it the full model, a repeated message
is answered from the verdict cache, and the hit rate is in /metrics and in the pool's line at the end."""

from __future__ import annotations

import http.client
import json
import re
import shutil
from pathlib import Path

import pytest
from servestack import Serve, running_serve, spamc

from spamguard import Classifier

from bundles import add_student
from conftest import SMS_FILE

pytestmark = pytest.mark.integration

SMS = [line.split("\t", 1)[1] for line in SMS_FILE.read_text(encoding="utf-8").splitlines()[:40]]


@pytest.fixture(scope="module")
def cascade_bundle(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random student whose SMS band holds the middle half of its scores on `SMS` (and the threshold)."""
    pytest.importorskip("aiohttp")
    bundle = add_student(Path(shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("c") / "b")), {"sms": (0.5, 0.5)})
    clf = Classifier.load(bundle)
    import numpy as np

    low, high = np.quantile(clf.student_scores([clf.text_tokens(t) for t in SMS]), [0.25, 0.75])
    shutil.rmtree(bundle)
    shutil.copytree(tiny_bundle, bundle)
    return add_student(bundle, {"sms": (float(min(low, 0.5)), float(max(high, 0.5)))})


def _post(serve: Serve, text: str) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", serve.port("http"), timeout=30)
    try:
        connection.request("POST", "/v1/check", body=text.encode(), headers={"Content-Type": "text/plain"})
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


def _metrics(serve: Serve) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", serve.port("http"), timeout=30)
    try:
        connection.request("GET", "/metrics")
        return connection.getresponse().read().decode()
    finally:
        connection.close()


def test_the_stage_is_answered_and_logged_and_repeats_are_cached(cascade_bundle: Path, tmp_path: Path) -> None:
    expected = [v.stage for v in Classifier.load(cascade_bundle).classify_batch([t.encode() for t in SMS])]
    assert set(expected) == {"student", "full"}
    log = tmp_path / "serve.log"
    options = ("--http", "127.0.0.1:0", "--spamd", "127.0.0.1:0")
    with running_serve(cascade_bundle, *options, log=log) as serve:
        answers = [_post(serve, text) for text in SMS]
        assert [a["stage"] for a in answers] == expected
        http_lines = serve.lines("door=http")
        assert [re.search(r" stage=(\w+) ", line).group(1) for line in http_lines] == expected  # type: ignore[union-attr]
        spamc(serve.port("spamd"), "-c", message=SMS[0].encode())
        assert re.search(r"door=spamd .* kind=sms stage=(student|full) ", serve.lines("door=spamd")[-1])
        assert [_post(serve, text) for text in SMS[:10]] == answers[:10]  # from the cache, the same answers
        metrics = _metrics(serve)
        assert "spamguard_cache_hits_total 11.0" in metrics  # the spamd copy of SMS[0] too
        stages = dict(re.findall(r'spamguard_stage_verdicts_total\{stage="(\w+)"\} (\S+)', metrics))
        assert sum(map(float, stages.values())) == len(SMS) + 11
        serve.stop()
    assert "cascade: the int8 student decides outside the bands sms [" in log.read_text()
    assert re.search(r"scoring pool: .* cache_hits=11 cache_misses=40 cache_hit_rate=0\.216", log.read_text())


def test_no_cascade_makes_every_stage_full(cascade_bundle: Path, tmp_path: Path) -> None:
    with running_serve(cascade_bundle, "--http", "127.0.0.1:0", "--no-cascade", log=tmp_path / "s.log") as serve:
        assert {_post(serve, text)["stage"] for text in SMS} == {"full"}
    assert "cascade: off (--no-cascade: the full model decides every message)" in (tmp_path / "s.log").read_text()
