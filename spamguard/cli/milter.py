"""`spamguard milter`: the daemon Postfix (smtpd_milters) and Sendmail (INPUT_MAIL_FILTER) talk to."""

from __future__ import annotations

import asyncio
import logging
import re

import click

from spamguard.cli.options import ByteSize, model_option, precision_option, threads_option, threshold_option
from spamguard.plugins.milter_address import parse_listen
from spamguard.plugins.milter_server import (
    DEFAULT_LISTEN,
    DEFAULT_TIMEOUT,
    BatchScorer,
    MilterServer,
)
from spamguard.plugins.milter_session import DEFAULT_MAX_SIZE, DEFAULT_REJECT_REPLY, MilterPolicy

_REPLY = "^[45][0-9][0-9] [245]\\.[0-9]{1,3}\\.[0-9]{1,3} [ -~]+$"


def _reply(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """An SMTP reply the MTA will send as is: one line of printable ASCII, a 4xx/5xx code and an enhanced code.
    `%` is refused because Sendmail reads it as a format character."""
    text = value if value[:1].isdigit() else f"550 5.7.1 {value}"
    if not re.match(_REPLY, text) or "%" in text:
        raise click.BadParameter(f"{value!r}: use one line like '550 5.7.1 Message rejected as spam' (no '%')")
    return text


@click.command("milter")
@click.option(
    "--listen",
    default=DEFAULT_LISTEN,
    show_default=True,
    help="inet:HOST:PORT, inet:PORT@HOST or unix:/path (no host: 127.0.0.1).",
)
@model_option
@precision_option
@threshold_option
@click.option(
    "--reject-threshold",
    type=click.FloatRange(0, 1),
    help="Refuse messages scoring at or above this with the reject reply (default: never reject).",
)
@click.option(
    "--reject-message",
    default=DEFAULT_REJECT_REPLY,
    show_default=True,
    callback=_reply,
    help="SMTP reply for rejected messages (text alone gets '550 5.7.1' in front).",
)
@click.option("--fail-closed", is_flag=True, help="Tempfail (451) instead of accepting when scoring fails.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds from end of message to verdict (queueing included); past it the failure policy applies.",
)
@click.option(
    "--max-size",
    type=ByteSize(),
    default=DEFAULT_MAX_SIZE,
    show_default=True,
    help="Score only the first SIZE bytes of a larger body (the whole message is delivered).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Scoring threads, each scoring a batch at a time (with N workers, give each about cores/N --threads).",
)
@click.option("--max-batch", type=click.IntRange(min=1), default=16, show_default=True, help="Messages per batch.")
@click.option(
    "--max-pending",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Messages allowed to wait for the model; more are handled by the failure policy at once.",
)
@threads_option
@click.option("--socket-mode", default="660", show_default=True, help="Permissions of a unix socket (octal).")
def milter(
    listen: str,
    model: str | None,
    precision: str,
    threshold: float | None,
    reject_threshold: float | None,
    reject_message: str,
    fail_closed: bool,
    timeout: float,
    max_size: int,
    workers: int,
    max_batch: int,
    max_pending: int,
    threads: int | None,
    socket_mode: str,
) -> None:
    """Run the milter: score each message at end of data, add the spamguard headers, optionally reject.

    Logs one line per message on stderr (queue id, verdict, score, action, ms)."""
    address = parse_listen(listen)
    try:
        mode = int(socket_mode, 8)
    except ValueError:
        raise click.BadParameter(f"{socket_mode!r} is not an octal mode", param_hint="--socket-mode") from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s spamguard-milter %(levelname)s %(message)s")
    from spamguard import Classifier

    classifier = Classifier.load(model, precision=precision, threads=threads)
    effective = classifier.bundle.threshold if threshold is None else threshold
    logging.getLogger("spamguard.milter").info(
        "model %s (%s), threshold %.4f", classifier.bundle.name, classifier.precision, effective
    )
    scorer = BatchScorer(classifier, threshold=threshold, workers=workers, max_batch=max_batch, max_pending=max_pending)
    policy = MilterPolicy(threshold, reject_threshold, reject_message, fail_closed, max_size)
    try:
        asyncio.run(MilterServer(scorer, policy, timeout=timeout).serve(address, socket_mode=mode))
    finally:
        scorer.close()
