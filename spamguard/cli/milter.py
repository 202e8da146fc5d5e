"""`spamguard milter`: the daemon Postfix (smtpd_milters) and Sendmail (INPUT_MAIL_FILTER) talk to."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import click

from spamguard.cascade import describe
from spamguard.cli.options import (
    ByteSize,
    cascade_option,
    model_option,
    precision_option,
    threads_option,
    threshold_option,
)
from spamguard.cli.pool_options import pool_options, pool_settings
from spamguard.plugins.milter.address import parse_listen
from spamguard.plugins.milter.server import DEFAULT_LISTEN, MilterServer, ServerLimits
from spamguard.plugins.milter.session import (
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_HEADERS,
    DEFAULT_MAX_SIZE,
    DEFAULT_REJECT_REPLY,
    MilterPolicy,
)
from spamguard.plugins.pool import ScoringPool
from spamguard.plugins.server_guards import ensure_descriptors

LIMITS = ServerLimits()
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
@cascade_option
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
    "--max-size",
    type=ByteSize(),
    default=DEFAULT_MAX_SIZE,
    show_default=True,
    help="Score only the first SIZE bytes of a larger body (the whole message is delivered).",
)
@click.option(
    "--max-headers",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_HEADERS,
    show_default=True,
    help="Headers per message kept for scoring (the rest are delivered, not scored).",
)
@click.option(
    "--max-header-bytes",
    type=ByteSize(),
    default=DEFAULT_MAX_HEADER_BYTES,
    show_default=True,
    help="Bytes of headers per message kept for scoring.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    default=LIMITS.max_connections,
    show_default=True,
    help="Open MTA connections; past it one of the connections of whoever holds the most (uid or address) is "
    "closed. Must fit under the file descriptor limit (checked at start).",
)
@click.option(
    "--max-buffer",
    type=ByteSize(),
    default=LIMITS.max_buffer,
    show_default=True,
    help="Bytes all connections may hold together (messages being received); past it the largest holder is closed.",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=LIMITS.idle_timeout,
    show_default=True,
    help="Seconds a connection may stay silent between messages.",
)
@click.option(
    "--read-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=LIMITS.read_timeout,
    show_default=True,
    help="Seconds to negotiate after connecting, and to finish a packet once started.",
)
@pool_options
@threads_option
@click.option("--socket-mode", default="660", show_default=True, help="Permissions of a unix socket (octal).")
def milter(
    listen: str,
    model: str | None,
    precision: str,
    cascade: bool,
    threshold: float | None,
    reject_threshold: float | None,
    reject_message: str,
    fail_closed: bool,
    max_size: int,
    max_headers: int,
    max_header_bytes: int,
    max_connections: int,
    max_buffer: int,
    idle_timeout: float,
    read_timeout: float,
    threads: int | None,
    socket_mode: str,
    **pool: Any,
) -> None:
    """Run the milter: score each message at end of data, add the spamguard headers, optionally reject.

    Logs one line per message on stderr (queue id, verdict, score, action, ms)."""
    address = parse_listen(listen)
    try:
        mode = int(socket_mode, 8)
    except ValueError:
        raise click.BadParameter(f"{socket_mode!r} is not an octal mode", param_hint="--socket-mode") from None
    ensure_descriptors(max_connections)  # before the model loads: a cap that cannot hold fails at once
    logging.basicConfig(level=logging.INFO, format="%(asctime)s spamguard-milter %(levelname)s %(message)s")
    from spamguard import Classifier

    classifier = Classifier.load(model, precision=precision, threads=threads, cascade=cascade)
    effective = classifier.bundle.threshold if threshold is None else threshold
    logging.getLogger("spamguard.milter").info(
        "model %s (%s), threshold %.4f, %s", classifier.bundle.name, classifier.precision, effective,
        describe(classifier, threshold),
    )  # fmt: skip
    policy = MilterPolicy(
        reject_threshold=reject_threshold,
        reject_reply=reject_message,
        fail_closed=fail_closed,
        max_size=max_size,
        max_headers=max_headers,
        max_header_bytes=max_header_bytes,
    )
    limits = ServerLimits(
        max_connections=max_connections, max_buffer=max_buffer, idle_timeout=idle_timeout, read_timeout=read_timeout
    )
    with ScoringPool(classifier, pool_settings(threshold=threshold, **pool)) as scoring:
        asyncio.run(MilterServer(scoring, policy, limits).serve(address, socket_mode=mode))
