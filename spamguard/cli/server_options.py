"""The options of the server commands (`spamguard milter`, `spamguard serve`), defined once: the limits every
front door applies (`server_options`: sizes, connections, buffers, timeouts) and the milter's own choices
(`milter_options`: reject, fail closed, header caps, socket mode), so that `serve --milter` and `spamguard
milter` take the same options with the same defaults, and one `--max-connections` means one thing everywhere.
docs/limits.md ("Servers") says what each limit means at each door."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

import click

from spamguard.cli.options import ByteSize
from spamguard.plugins.connections import ServerLimits
from spamguard.plugins.milter.session import (
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_HEADERS,
    DEFAULT_REJECT_REPLY,
    MilterPolicy,
)
from spamguard.plugins.pipe import DEFAULT_MAX_SIZE

F = TypeVar("F", bound=Callable[..., Any])
LIMITS = ServerLimits()
_REPLY = "^[45][0-9][0-9] [245]\\.[0-9]{1,3}\\.[0-9]{1,3} [ -~]+$"


def _reply(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """An SMTP reply the MTA will send as is: one line of printable ASCII, a 4xx/5xx code and an enhanced code.
    `%` is refused because Sendmail reads it as a format character."""
    text = value if value[:1].isdigit() else f"550 5.7.1 {value}"
    if not re.match(_REPLY, text) or "%" in text:
        raise click.BadParameter(f"{value!r}: use one line like '550 5.7.1 Message rejected as spam' (no '%')")
    return text


def _socket_mode(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        return int(value, 8)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an octal mode") from None


_SERVER_OPTIONS = [
    click.option(
        "--max-size",
        type=ByteSize(),
        default=DEFAULT_MAX_SIZE,
        show_default=True,
        help="Bytes of a message scored and held (the rest is read and dropped; the milter delivers all of it); "
        "spamd PROCESS and HTTP refuse larger messages.",
    ),
    click.option(
        "--max-connections",
        type=click.IntRange(min=1),
        default=LIMITS.max_connections,
        show_default=True,
        help="Open connections, all doors together; past it one connection of whoever holds the most (uid or "
        "address) is closed. Must fit under the file descriptor limit (checked at start).",
    ),
    click.option(
        "--max-buffer",
        type=ByteSize(),
        default=LIMITS.max_buffer,
        show_default=True,
        help="Bytes all connections may hold together (requests being received); past it the largest holder is closed.",
    ),
    click.option(
        "--read-timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=LIMITS.read_timeout,
        show_default=True,
        help="Seconds for a request to arrive once begun (milter: negotiation and each packet; spamd: the request; "
        "HTTP: head and body) and for a reply to be taken.",
    ),
    click.option(
        "--idle-timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=LIMITS.idle_timeout,
        show_default=True,
        help="Seconds a milter connection may stay silent between messages.",
    ),
]

_MILTER_OPTIONS = [
    click.option(
        "--reject-threshold",
        type=click.FloatRange(0, 1),
        help="Milter: refuse messages scoring at or above this with the reject reply (default: never reject).",
    ),
    click.option(
        "--reject-message",
        default=DEFAULT_REJECT_REPLY,
        show_default=True,
        callback=_reply,
        help="Milter: SMTP reply for rejected messages (text alone gets '550 5.7.1' in front).",
    ),
    click.option("--fail-closed", is_flag=True, help="Milter: tempfail (451) instead of accepting when scoring fails."),
    click.option(
        "--max-headers",
        type=click.IntRange(min=1),
        default=DEFAULT_MAX_HEADERS,
        show_default=True,
        help="Milter: headers per message kept for scoring (the rest are delivered, not scored).",
    ),
    click.option(
        "--max-header-bytes",
        type=ByteSize(),
        default=DEFAULT_MAX_HEADER_BYTES,
        show_default=True,
        help="Milter: bytes of headers per message kept for scoring.",
    ),
    click.option(
        "--socket-mode",
        default="660",
        show_default=True,
        callback=_socket_mode,
        help="Milter: permissions of a unix socket (octal).",
    ),
]


def _add(options: list[Callable[[F], F]], command: F) -> F:
    for option in reversed(options):
        command = option(command)
    return command


def server_options(command: F) -> F:
    """Add the limits every door applies; build them with `server_limits(**those values)` (and `max_size`)."""
    return _add(_SERVER_OPTIONS, command)


def milter_options(command: F) -> F:
    """Add the milter's choices; build them with `milter_policy(max_size=..., **those values)`."""
    return _add(_MILTER_OPTIONS, command)


def server_limits(*, max_connections: int, max_buffer: int, read_timeout: float, idle_timeout: float) -> ServerLimits:
    return ServerLimits(
        max_connections=max_connections, max_buffer=max_buffer, read_timeout=read_timeout, idle_timeout=idle_timeout
    )


def milter_policy(
    *,
    max_size: int,
    reject_threshold: float | None,
    reject_message: str,
    fail_closed: bool,
    max_headers: int,
    max_header_bytes: int,
) -> MilterPolicy:
    return MilterPolicy(
        reject_threshold=reject_threshold,
        reject_reply=reject_message,
        fail_closed=fail_closed,
        max_size=max_size,
        max_headers=max_headers,
        max_header_bytes=max_header_bytes,
    )
