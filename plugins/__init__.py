"""Mail-system plugins: a procmail-style pipe filter and an SMTP milter, both on top of the runtime."""

from __future__ import annotations

import functools


@functools.cache
def spamguard_version() -> str:
    """The installed spamguard version, for the headers (an administrator reading a header wants to know which
    build wrote it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spamguard")
    except PackageNotFoundError:
        return "unknown"
