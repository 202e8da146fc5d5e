"""What every long-running front door needs against a peer that floods it: log lines that cannot outgrow the
disk, a connection cap that fits the process's file descriptors, who is behind a connection (to close the
connections of whoever holds the most when the cap is reached), and freed memory handed back to the system."""

from __future__ import annotations

import ipaddress
import logging
import resource
import socket
import struct
import time
from collections.abc import Callable

from spamguard.classifier import _release_free_memory as release_free_memory
from spamguard.errors import SpamguardError

__all__ = ["RESERVED_DESCRIPTORS", "ThrottledLog", "ensure_descriptors", "peer_identity", "release_free_memory"]

# Descriptors a server needs besides its connections: the listening socket, the model and tokenizer files while
# loading, two pipes per text extraction process, the event loop's own, the log, and room for a spike.
RESERVED_DESCRIPTORS = 64


class ThrottledLog:
    """At most `burst` lines per `period` seconds for each kind of event; the rest are counted and reported in one
    summary line when the window closes (at the next event of that kind or the next `flush()`). A flood of bad
    connections then costs a few lines every `period` instead of a line per connection or packet."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 5,
        period: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._burst = burst
        self._period = period
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}  # kind -> (window start, events in it)

    def warning(self, kind: str, message: str, *args: object) -> None:
        now = self._clock()
        start, count = self._windows.get(kind, (now, 0))
        if now - start >= self._period:
            self._summary(kind, count)
            start, count = now, 0
        self._windows[kind] = (start, count + 1)
        if count < self._burst:
            self._logger.warning(message, *args)

    def _summary(self, kind: str, count: int) -> None:
        if count > self._burst:
            self._logger.warning(
                "%d more %s events in %g s (not logged one by one)", count - self._burst, kind, self._period
            )

    def flush(self, *, final: bool = False) -> None:
        """Report and close the windows that are over (call it every few seconds), or all of them (`final`, when
        stopping)."""
        now = self._clock()
        for kind, (start, count) in list(self._windows.items()):
            if final or now - start >= self._period:
                self._summary(kind, count)
                del self._windows[kind]


def ensure_descriptors(connections: int, reserved: int = RESERVED_DESCRIPTORS) -> int:
    """Make sure `connections` sockets plus `reserved` fit under RLIMIT_NOFILE, raising the soft limit up to the
    hard one if needed (what an unprivileged process may do); returns the soft limit in force. A server whose cap
    is above its limit would fail in accept() under load instead of applying its cap."""
    need = connections + reserved
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise SpamguardError(
                f"{connections} connections need {need} file descriptors, but the limit is {hard}: "
                f"lower --max-connections or raise the limit (LimitNOFILE= in the systemd unit, ulimit -n)"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
        soft = need
    return soft


# Linux sock_diag (netlink), as `ss -e` uses it: the owner of one TCP socket, found by its address and port pair.
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_NLMSG_ERROR = 2
_NLMSG_HEADER = struct.Struct("=IHHII")
_DIAG_REQUEST = struct.Struct("=BBBBI")  # family, protocol, extensions, pad, states
_SOCKET_ID = struct.Struct("!HH16s16s")  # ports and addresses in network order, then interface and cookie
_NO_COOKIE = struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF)
_UID_OFFSET = _NLMSG_HEADER.size + 4 + _SOCKET_ID.size + 12 + 12  # inet_diag_msg: ..., expires, queues, uid


def _loopback_owner(family: int, local: tuple[str, int], peer: tuple[str, int]) -> int | None:
    """The uid owning the other end of a loopback TCP connection: the socket whose local end is our peer."""
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as link:
            link.settimeout(0.5)  # the kernel answers at once; this only bounds a surprise
            sockid = _SOCKET_ID.pack(
                peer[1],
                local[1],
                socket.inet_pton(family, peer[0]).ljust(16, b"\0"),
                socket.inet_pton(family, local[0]).ljust(16, b"\0"),
            )
            request = _DIAG_REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF) + sockid + _NO_COOKIE
            header = _NLMSG_HEADER.pack(_NLMSG_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0)
            link.send(header + request)
            answer = link.recv(4096)
    except (OSError, AttributeError, ValueError):  # no netlink (not Linux, a sandbox), or an odd address
        return None
    if len(answer) < _UID_OFFSET + 4 or _NLMSG_HEADER.unpack_from(answer)[1] != _SOCK_DIAG_BY_FAMILY:
        return None
    return struct.unpack_from("=I", answer, _UID_OFFSET)[0]


def peer_identity(sock: socket.socket) -> str:
    """Who is behind a connection, for fairness at the connection cap: the uid of a local peer (SO_PEERCRED on a
    unix socket, the owner of the other end of a loopback TCP connection), the address of a remote one. Postfix's
    smtpd processes share one uid, so a local user opening connections competes with itself, not with the MTA."""
    if sock.family == socket.AF_UNIX:
        if not hasattr(socket, "SO_PEERCRED"):
            return "local"
        _, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        return f"uid {uid}"
    peer, local = sock.getpeername()[:2], sock.getsockname()[:2]
    if ipaddress.ip_address(peer[0]).is_loopback:
        uid = _loopback_owner(sock.family, local, peer)
        if uid is not None:
            return f"uid {uid}"
    return str(peer[0])
