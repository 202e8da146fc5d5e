"""`spamguard milter`: the daemon Postfix (smtpd_milters) and Sendmail (INPUT_MAIL_FILTER) talk to."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import click

from spamguard.cascade import describe
from spamguard.cli.options import cascade_option, model_option, precision_option, threads_option, threshold_option
from spamguard.cli.pool_options import pool_options, pool_settings
from spamguard.cli.server_options import milter_options, milter_policy, server_limits, server_options
from spamguard.plugins.connections import ConnectionTable
from spamguard.plugins.milter.address import parse_listen
from spamguard.plugins.milter.server import DEFAULT_LISTEN, MilterServer
from spamguard.plugins.pool import ScoringPool
from spamguard.plugins.server_guards import ensure_descriptors


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
@milter_options
@server_options
@pool_options
@threads_option
def milter(
    listen: str,
    model: str | None,
    precision: str,
    cascade: bool,
    threshold: float | None,
    reject_threshold: float | None,
    reject_message: str,
    fail_closed: bool,
    max_headers: int,
    max_header_bytes: int,
    socket_mode: int,
    max_size: int,
    max_connections: int,
    max_buffer: int,
    read_timeout: float,
    idle_timeout: float,
    threads: int | None,
    **pool: Any,
) -> None:
    """Run the milter: score each message at end of data, add the spamguard headers, optionally reject.

    Logs one line per message on stderr (queue id, verdict, score, action, ms)."""
    address = parse_listen(listen)
    limits = server_limits(
        max_connections=max_connections, max_buffer=max_buffer, read_timeout=read_timeout, idle_timeout=idle_timeout
    )
    policy = milter_policy(
        max_size=max_size,
        reject_threshold=reject_threshold,
        reject_message=reject_message,
        fail_closed=fail_closed,
        max_headers=max_headers,
        max_header_bytes=max_header_bytes,
    )
    ensure_descriptors(max_connections)  # before the model loads: a cap that cannot hold fails at once
    logging.basicConfig(level=logging.INFO, format="%(asctime)s spamguard-milter %(levelname)s %(message)s")
    from spamguard import Classifier

    classifier = Classifier.load(model, precision=precision, threads=threads, cascade=cascade)
    effective = classifier.bundle.threshold if threshold is None else threshold
    logging.getLogger("spamguard.milter").info(
        "model %s (%s), threshold %.4f, %s", classifier.bundle.name, classifier.precision, effective,
        describe(classifier, threshold),
    )  # fmt: skip
    with ScoringPool(classifier, pool_settings(threshold=threshold, **pool)) as scoring:
        server = MilterServer(scoring, policy, ConnectionTable(limits))
        asyncio.run(server.serve(address, socket_mode=socket_mode))
