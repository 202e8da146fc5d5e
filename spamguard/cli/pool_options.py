"""The scoring pool's options, defined once for every server command that scores through the shared pool
(`spamguard milter`, `spamguard serve`): one name and one default for each idea."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from spamguard.cli.options import ByteSize
from spamguard.plugins.pool import PoolSettings
from spamguard.plugins.verdict_cache import DEFAULT_BYTES, DEFAULT_ENTRIES

F = TypeVar("F", bound=Callable[..., Any])
DEFAULTS = PoolSettings()

_OPTIONS = [
    click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=DEFAULTS.timeout,
        show_default=True,
        help="Seconds from a message's arrival to its verdict (queueing included); past it the failure policy applies.",
    ),
    click.option(
        "--workers",
        type=click.IntRange(min=1),
        default=DEFAULTS.workers,
        show_default=True,
        help="Scoring threads, each scoring a batch at a time (with N workers, give each about cores/N --threads).",
    ),
    click.option(
        "--max-batch",
        type=click.IntRange(min=1),
        default=DEFAULTS.max_batch,
        show_default=True,
        help="Messages per batch.",
    ),
    click.option(
        "--max-pending",
        type=click.IntRange(min=1),
        default=DEFAULTS.max_pending,
        show_default=True,
        help="Messages allowed in the pool at a time; more are handled by the failure policy at once.",
    ),
    click.option(
        "--extract-workers",
        type=click.IntRange(min=1),
        default=DEFAULTS.extract_workers,
        show_default=True,
        help="Processes that turn messages into text and tokens, one message at a time each.",
    ),
    click.option(
        "--extract-timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=DEFAULTS.extract_timeout,
        show_default=True,
        help="Seconds one message's text extraction may take; past it its process is replaced and the failure "
        "policy applies.",
    ),
    click.option(
        "--extract-memory",
        type=ByteSize(),
        default=DEFAULTS.extract_memory,
        show_default=True,
        help="Address-space limit of each text extraction process.",
    ),
    click.option(
        "--cache-entries",
        type=click.IntRange(min=0),
        default=DEFAULT_ENTRIES,
        show_default=True,
        help="Verdicts kept for messages seen again (same text and kind, same model and threshold); 0: no cache.",
    ),
    click.option(
        "--cache-size",
        type=ByteSize(),
        default=DEFAULT_BYTES,
        show_default=True,
        help="Memory the verdict cache may take.",
    ),
]


def pool_options(command: F) -> F:
    """Add the pool's options to a click command; build the settings with `pool_settings(**those values)`."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def pool_settings(
    *,
    threshold: float | None,
    timeout: float,
    workers: int,
    max_batch: int,
    max_pending: int,
    extract_workers: int,
    extract_timeout: float,
    extract_memory: int,
    cache_entries: int,
    cache_size: int,
) -> PoolSettings:
    """The settings these options describe."""
    return PoolSettings(
        threshold=threshold,
        workers=workers,
        max_batch=max_batch,
        max_pending=max_pending,
        timeout=timeout,
        extract_workers=extract_workers,
        extract_timeout=extract_timeout,
        extract_memory=extract_memory,
        cache_entries=cache_entries,
        cache_bytes=cache_size,
    )
