"""Where a milter listens, in the spellings MTAs use: Postfix's `inet:HOST:PORT`, Sendmail's `inet:PORT@HOST`,
and `unix:/path`. Kept apart from the server so the pipe's client mode can import it without asyncio."""

from __future__ import annotations

import re
from dataclasses import dataclass

from spamguard.errors import SpamguardError


@dataclass(frozen=True)
class ListenAddress:
    kind: str  # "inet" or "unix"
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.kind == "unix" else f"inet:{self.host}:{self.port}"


_INET_SENDMAIL = re.compile(r"^(\d+)(?:@(.+))?$")  # PORT@HOST (Sendmail, libmilter)
_INET_POSTFIX = re.compile(r"^(?:(.+):)?(\d+)$")  # HOST:PORT (Postfix)


def parse_listen(spec: str) -> ListenAddress:
    """`inet:HOST:PORT`, `inet:PORT@HOST` (Sendmail's spelling), `inet:PORT` (loopback), `unix:/path` or
    `local:/path`. No host means 127.0.0.1: the milter answers mail servers on this machine unless told
    otherwise."""
    kind, _, rest = spec.partition(":")
    if kind in ("unix", "local") and rest.startswith("/"):
        return ListenAddress("unix", path=rest)
    if kind in ("inet", "inet6") and rest:
        host, port_text = "", ""
        if sendmail := _INET_SENDMAIL.match(rest):
            port_text, host = sendmail.groups()
        elif postfix := _INET_POSTFIX.match(rest):
            host, port_text = postfix.groups()
        if port_text and int(port_text) <= 65535:
            return ListenAddress("inet", host=(host or "127.0.0.1").strip("[]"), port=int(port_text))
    raise SpamguardError(f"bad milter address {spec!r}: use inet:HOST:PORT, inet:PORT@HOST or unix:/absolute/path")
