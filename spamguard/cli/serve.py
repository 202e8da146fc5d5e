"""`spamguard serve`: one process, one loaded model, one scoring pool, and any of three front doors: the milter
(Postfix, Sendmail), the spamd protocol (spamc, Exim, rspamd) and an HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from spamguard.cascade import describe
from spamguard.cli.options import cascade_option, model_option, precision_option, threads_option, threshold_option
from spamguard.cli.pool_options import pool_options, pool_settings
from spamguard.cli.server_options import milter_options, milter_policy, server_limits, server_options
from spamguard.errors import SpamguardError
from spamguard.plugins.connections import ConnectionTable, ServerLimits
from spamguard.plugins.frontdoor import InetAddress, NoObserver, Observer, Pool, failure_reason, parse_inet
from spamguard.plugins.headers import VerdictLike
from spamguard.plugins.milter.address import ListenAddress, parse_listen
from spamguard.plugins.milter.server import MilterServer
from spamguard.plugins.milter.session import MilterPolicy
from spamguard.plugins.pool import ScoringPool
from spamguard.plugins.server_guards import ensure_descriptors
from spamguard.plugins.spamd.points import DEFAULT_REQUIRED
from spamguard.plugins.spamd.server import SpamdServer
from spamguard.plugins.spamd.session import SpamdSettings

log = logging.getLogger("spamguard.serve")


class ObservedPool:
    """The pool as one front door sees it, reporting each verdict and failure (by the pool's reason) to the
    metrics: lets the milter server, which knows nothing of metrics, be counted like the other doors."""

    def __init__(self, pool: Pool, observer: Observer, door: str) -> None:
        self.pool, self.observer, self.door = pool, observer, door

    async def classify(self, message: bytes) -> VerdictLike:
        start = time.perf_counter()
        try:
            verdict = await self.pool.classify(message)
        except Exception as exc:
            self.observer.failed(self.door, failure_reason(exc))
            raise
        self.observer.scored(self.door, verdict.label, time.perf_counter() - start)
        return verdict


@dataclass(frozen=True)
class Doors:
    milter: ListenAddress | None
    spamd: InetAddress | None
    http: InetAddress | None


@dataclass(frozen=True)
class DoorSettings:
    """What the front doors are configured with, beside the pool they share."""

    max_size: int
    limits: ServerLimits  # one connection table for all doors: its caps are the process's
    spamd: SpamdSettings
    token: str | None
    milter_policy: MilterPolicy
    socket_mode: int


def _read_token(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpamguardError(f"cannot read the token file {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    if not token or any(c.isspace() or not c.isprintable() for c in token):
        raise SpamguardError(f"the token file {path} must hold one token: printable, no spaces")
    return token


def _http_modules() -> tuple[Any, Any]:
    try:
        from spamguard.plugins.http.metrics import Metrics
        from spamguard.plugins.http.server import HttpApi
    except ImportError as exc:
        text = f"--http needs the http extra ({exc.name} is missing): pip install 'spamguard[http]'"
        raise SpamguardError(text) from None
    return Metrics, HttpApi


async def _listen(door: str, address: object, start: Callable[[], Awaitable[Any]]) -> Any:
    try:
        return await start()
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)  # asyncio's own text repeats the address
        raise SpamguardError(f"cannot listen on {door} {address}: {reason}") from exc


async def _serve(doors: Doors, pool: ScoringPool, model: str, settings: DoorSettings) -> None:
    closers: list[Callable[[], Any]] = []
    observer: Observer = NoObserver()
    connections: list[Callable[[], set[asyncio.Task[Any]]]] = []
    table = ConnectionTable(settings.limits)
    try:
        if doors.http is not None:
            Metrics, HttpApi = _http_modules()
            observer = Metrics(lambda: pool.pending, pool.stats)
            api = HttpApi(
                pool, model=model, table=table, max_size=settings.max_size, token=settings.token,
                observer=observer, metrics=observer,
            )  # fmt: skip
            server = await _listen("http", doors.http, lambda: api.start(doors.http))
            closers.append(api.stop)  # its open requests get the same grace period
            host, port = server.sockets[0].getsockname()[:2]
            log.info("listening: http %s", InetAddress(host, port))
        if doors.spamd is not None:
            spamd = SpamdServer(pool, settings.spamd, table, observer=observer)
            server = await _listen("spamd", doors.spamd, lambda: spamd.start(doors.spamd))
            closers.append(server.close)
            connections.append(lambda: spamd.connections)
            host, port = server.sockets[0].getsockname()[:2]
            log.info("listening: spamd %s", InetAddress(host, port))
        if doors.milter is not None:
            milter = MilterServer(
                ObservedPool(pool, observer, "milter"), settings.milter_policy, table
            )  # the pool's classify() contract
            milter_server = await _listen(
                "milter", doors.milter, lambda: milter.start(doors.milter, socket_mode=settings.socket_mode)
            )
            closers.append(lambda: milter.stop(milter_server))  # its connections get the same grace period
            bound = doors.milter
            if bound.kind == "inet":
                host, port = milter_server.sockets[0].getsockname()[:2]
                bound = ListenAddress("inet", host=host, port=port)
            log.info("listening: milter %s", bound)
    except BaseException:
        for close in reversed(closers):
            with contextlib.suppress(Exception):
                await _maybe_await(close())
        table.stop()
        raise

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("stopping")
    for close in reversed(closers):
        await _maybe_await(close())
    # connections in progress get a short grace period to finish their message
    tasks = set().union(*(tasks() for tasks in connections))
    if tasks:
        await asyncio.wait(tasks, timeout=2)
    for task in tasks:
        task.cancel()
    table.stop()


async def _maybe_await(result: Any) -> None:
    if asyncio.iscoroutine(result):
        await result


@click.command("serve")
@click.option("--milter", "milter_address", help="Milter address: inet:HOST:PORT, inet:PORT@HOST or unix:/path.")
@click.option("--spamd", "spamd_address", help="spamd-protocol address: HOST:PORT or PORT (on 127.0.0.1).")
@click.option("--http", "http_address", help="HTTP API address: HOST:PORT or PORT (on 127.0.0.1).")
@model_option
@precision_option
@cascade_option
@threshold_option
@threads_option
@pool_options
@server_options
@click.option(
    "--required-score",
    type=click.FloatRange(min=0.1, max=1000),
    default=DEFAULT_REQUIRED,
    show_default=True,
    help="The required score reported to spamd clients; the threshold maps to it (docs/servers.md).",
)
@click.option("--token-file", type=click.Path(path_type=Path, dir_okay=False), help="HTTP bearer token, in a file.")
@milter_options
def serve(
    milter_address: str | None,
    spamd_address: str | None,
    http_address: str | None,
    model: str | None,
    precision: str,
    cascade: bool,
    threshold: float | None,
    threads: int | None,
    max_size: int,
    max_connections: int,
    max_buffer: int,
    read_timeout: float,
    idle_timeout: float,
    required_score: float,
    token_file: Path | None,
    reject_threshold: float | None,
    reject_message: str,
    fail_closed: bool,
    max_headers: int,
    max_header_bytes: int,
    socket_mode: int,
    **pool_choices: Any,
) -> None:
    """Serve the milter, spamd and HTTP front doors from one loaded model.

    Give any of --milter, --spamd and --http. The limits (--max-connections, --max-buffer, timeouts, --max-size)
    apply to every door, the --reject-*, --fail-closed, --max-header* and --socket-mode options to the milter.
    Logs one line per message on stderr (door, verdict, score, ms)."""
    if not (milter_address or spamd_address or http_address):
        raise click.UsageError("give at least one of --milter, --spamd, --http")
    doors = Doors(
        parse_listen(milter_address) if milter_address else None,
        parse_inet(spamd_address, "spamd") if spamd_address else None,
        parse_inet(http_address, "http") if http_address else None,
    )
    token = _read_token(token_file)
    if doors.http is not None:
        _http_modules()  # a missing extra is reported before the model loads
    ensure_descriptors(max_connections)  # before the model loads: a cap that cannot hold fails at once
    logging.basicConfig(level=logging.INFO, format="%(asctime)s spamguard-serve %(levelname)s %(message)s")
    from spamguard import Classifier

    classifier = Classifier.load(model, precision=precision, threads=threads, cascade=cascade)
    effective = classifier.bundle.threshold if threshold is None else threshold
    log.info(
        "model %s (%s), threshold %.4f, %s", classifier.bundle.name, classifier.precision, effective,
        describe(classifier, threshold),
    )  # fmt: skip
    pool = ScoringPool(classifier, pool_settings(threshold=threshold, **pool_choices))
    settings = DoorSettings(
        max_size=max_size,
        limits=server_limits(
            max_connections=max_connections, max_buffer=max_buffer, read_timeout=read_timeout,
            idle_timeout=idle_timeout,
        ),
        spamd=SpamdSettings(max_size, required_score),
        token=token,
        milter_policy=milter_policy(
            max_size=max_size, reject_threshold=reject_threshold, reject_message=reject_message,
            fail_closed=fail_closed, max_headers=max_headers, max_header_bytes=max_header_bytes,
        ),
        socket_mode=socket_mode,
    )  # fmt: skip
    try:
        asyncio.run(_serve(doors, pool, classifier.bundle.name, settings))
    finally:
        pool.close()
        log.info("%s", pool.stats().line())
