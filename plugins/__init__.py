"""Mail-system plugins: a procmail-style pipe filter and an SMTP milter, both on top of the runtime."""

from __future__ import annotations

import contextlib
import functools
import os
import signal

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@functools.cache
def spamguard_version() -> str:
    """The installed spamguard version, for the headers (an administrator reading a header wants to know which
    build wrote it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spamguard")
    except PackageNotFoundError:
        return "unknown"


def die_with_parent(parent: int) -> None:
    """In a helper process (the pipe's scorer, the pool's text extraction): have the kernel kill it when its parent
    dies (Linux's PR_SET_PDEATHSIG), so a parent killed by the MTA or the OOM killer leaves nothing behind, even a
    helper stuck in a parser; if the parent is gone already, exit now."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # not Linux: the helpers' deadlines and pipes still end them
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)
