"""The pipe filter: one message in, the same message with spamguard headers out (procmail `:0fw`, maildrop
`xfilter`, an Exim or Postfix `pipe` transport).

A filter in a delivery chain must never lose mail. Whatever goes wrong (no model, a corrupt one, a timeout,
running out of memory while scoring, a bug), the original bytes come out unchanged with exit 0 and one line on
stderr says why (procmail writes it to its LOGFILE, maildrop to its log); there is deliberately no error
header, so "unchanged" means byte-for-byte. With `fail_closed` the filter writes nothing and exits 75
(EX_TEMPFAIL) instead, so the MTA keeps the message queued and retries later.

"Whatever goes wrong" includes what Python cannot catch: a native library that calls exit() or crashes, the
kernel's OOM killer, a call stuck in C. So the scoring runs in a forked child; the parent only holds the message
bytes, waits for the child's answer with a deadline, and writes either the filtered or the original message.
The child is the big process, so it is the one the OOM killer picks, and a timeout simply kills it; the kernel
kills it too when the parent dies (an MTA that gives up on a filter kills the filter, not its children).

It includes our own header code: before writing, `check_rewrite` checks that the output is the input minus the
forged copies of our headers plus ours, and the original goes out otherwise. The message is held once: read
into one growing buffer, written as views of it around our header lines (`Rewrite.pieces`)."""

from __future__ import annotations

import json
import os
import select
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from spamguard.errors import one_line
from spamguard.plugins import die_with_parent, spamguard_version
from spamguard.plugins.headers import OUR_HEADERS, Buffer, Field, check_rewrite, plan_headers, verdict_fields

EX_OK = 0
EX_TEMPFAIL = 75  # sysexits.h: procmail, maildrop and Postfix's pipe(8) all read it as "try again later"
DEFAULT_MAX_SIZE = 500 * 1024  # spamc's default: larger messages are scored on their first part only
DEFAULT_TIMEOUT = 30.0  # seconds for loading the model and scoring; a slower scorer is treated as broken
_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class PipeSettings:
    model: str | None = None  # name or bundle path; None: $SPAMGUARD_MODEL, then the default model
    precision: str = "auto"
    cascade: bool = True  # the bundle's student decides where it is sure (docs/cascade.md)
    threshold: float | None = None  # None: the bundle's threshold
    max_size: int = DEFAULT_MAX_SIZE
    timeout: float = DEFAULT_TIMEOUT
    fail_closed: bool = False
    threads: int | None = None
    connect: str | None = None  # a running milter's address: score there instead of loading the model here
    max_memory: int | None = None  # address-space limit (bytes) of the scoring child: fail fast, not swap


@dataclass(frozen=True)
class PipeResult:
    exit_code: int
    output: Sequence[Buffer] | None  # what to write on stdout, piece after piece; None when failing closed
    error: str | None = None  # one line for stderr, when something went wrong


def read_message(stream: BinaryIO) -> bytearray:
    """All of `stream` in one buffer. `read()` on a pipe collects chunks and joins them, holding the message
    twice at the end; a bytearray grows in place (glibc moves a big block with mremap, not a copy)."""
    data = bytearray()
    scratch = bytearray(_READ_CHUNK)
    view = memoryview(scratch)
    while count := stream.readinto(scratch):
        data += view[:count]
    return data


def fields_from_model(message: bytes, settings: PipeSettings) -> list[Field]:
    from spamguard import Classifier  # here, so a missing or broken runtime is a failure like any other

    classifier = Classifier.load(
        settings.model, precision=settings.precision, threads=settings.threads, cascade=settings.cascade
    )
    return verdict_fields(classifier.classify(message, threshold=settings.threshold), spamguard_version())


def fields_from_milter(message: bytes, settings: PipeSettings) -> list[Field]:
    """Ask a running `spamguard milter` (spamc/spamd style): the model stays loaded there, so each delivery
    costs a process start and a socket round trip instead of loading the model again."""
    from spamguard.errors import SpamguardError
    from spamguard.plugins.milter import protocol as p
    from spamguard.plugins.milter.client import MilterClient

    try:
        with MilterClient(settings.connect, timeout=settings.timeout) as client:  # type: ignore[arg-type]
            client.negotiate()
            reply = client.message(message)
    except OSError as exc:
        raise SpamguardError(f"cannot reach the milter at {settings.connect}: {exc.strerror or exc}") from exc
    ours = {name.lower() for name in OUR_HEADERS}
    space = b" " if client.protocol & p.SMFIP_HDR_LEADSPC else b""
    fields = [
        (m.name.decode("ascii"), m.value.removeprefix(space).decode("ascii"))
        for m in reply.modifications
        if m.code in (p.INSHEADER, p.ADDHEADER) and m.name.decode("ascii", "replace").lower() in ours
    ]
    if not fields or any("\n" in value or "\r" in value for _, value in fields):
        answer = p.REPLY_NAMES.get(reply.code, repr(reply.code))
        raise SpamguardError(f"the milter at {settings.connect} did not score the message (it answered {answer})")
    return fields


def score_fields(message: bytes, settings: PipeSettings) -> list[Field]:
    """The headers for a message (already cut to `max_size`). Raises on any failure."""
    return fields_from_milter(message, settings) if settings.connect else fields_from_model(message, settings)


def failure(raw: Buffer, reason: str, settings: PipeSettings) -> PipeResult:
    if settings.fail_closed:
        return PipeResult(EX_TEMPFAIL, None, f"{reason}; exit {EX_TEMPFAIL} (tempfail) so the MTA retries")
    return PipeResult(EX_OK, (raw,), f"{reason}; message passed through unchanged")


def format_size(size: int) -> str:
    """Bytes in the binary units `--max-memory` and `--max-size` take."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            return f"{size / factor:g} {unit}"
    return f"{size} bytes"


def _describe_failure(exc: BaseException, settings: PipeSettings) -> str:
    """One line for the log. Under `--max-memory`, running out of address space while loading surfaces as an
    ImportError of a native library (or a MemoryError): say so with the limit, and only the exception's type (a
    failed import's own text is numpy's page of advice)."""
    if settings.max_memory and isinstance(exc, (ImportError, MemoryError)):
        return (
            f"--max-memory {format_size(settings.max_memory)} is too low to load the runtime and the model "
            f"or to score ({type(exc).__name__}); raise the limit"
        )
    return one_line(exc)


class ScoringFailed(Exception):
    """The scoring child gave no verdict; the text says why, for the log line."""


def _child(message: bytes, settings: PipeSettings, answer: int, parent: int) -> None:
    """Runs in the forked child and never returns. Its stdout is the parent's stdout, the message stream: point
    it at stderr, so nothing a library prints can end up inside the mail."""
    os.dup2(2, 1)
    try:
        die_with_parent(parent)
        if settings.max_memory:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (settings.max_memory, settings.max_memory))
        reply = b"ok\n" + json.dumps(score_fields(message, settings)).encode()
    except BaseException as exc:  # MemoryError, KeyboardInterrupt, anything: the parent decides
        try:
            reply = b"error\n" + _describe_failure(exc, settings).encode("utf-8", "replace")
        except BaseException:
            reply = b"error\n" + type(exc).__name__.encode()
    try:
        view = memoryview(reply)
        while view:
            view = view[os.write(answer, view) :]
    finally:
        os._exit(0)


def _died(status: int, settings: PipeSettings) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        reason = f"the scorer was killed by signal {number} ({signal.Signals(number).name})"
    else:
        reason = f"the scorer exited with status {os.waitstatus_to_exitcode(status)} without a verdict"
    if settings.max_memory:  # native libraries that cannot allocate tend to exit or abort, not raise
        reason += f" (--max-memory {format_size(settings.max_memory)} may be too low)"
    return reason


def score_in_child(message: bytes, settings: PipeSettings) -> list[Field]:
    """`score_fields` in a forked child, within `settings.timeout` seconds; ScoringFailed on anything else."""
    read_end, write_end = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _child(message, settings, write_end, parent)
    os.close(write_end)
    chunks: list[bytes] = []
    deadline = time.monotonic() + settings.timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([read_end], [], [], remaining)[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise ScoringFailed(f"timed out after {settings.timeout:g} s")
            chunk = os.read(read_end, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
    _, status = os.waitpid(pid, 0)
    kind, _, body = b"".join(chunks).partition(b"\n")
    if kind == b"ok":
        return [(str(name), str(value)) for name, value in json.loads(body)]
    if kind == b"error":
        raise ScoringFailed(body.decode("utf-8", "replace"))
    raise ScoringFailed(_died(status, settings))


def run_filter(raw: Buffer, settings: PipeSettings) -> PipeResult:
    """The whole filter: the message with our headers, or the failure policy's answer. Never raises (but for
    BaseExceptions such as KeyboardInterrupt): a bug is a failure like any other."""
    try:
        fields = score_in_child(bytes(raw[: settings.max_size]), settings)
    except ScoringFailed as exc:
        return failure(raw, str(exc), settings)
    except OSError as exc:  # no fork, no pipe: the machine is out of processes or descriptors
        return failure(raw, f"cannot start the scorer: {exc.strerror or exc}", settings)
    except Exception as exc:
        return failure(raw, f"internal error: {one_line(exc)}", settings)
    try:
        rewrite = plan_headers(raw, fields)
        problem = check_rewrite(raw, rewrite)
    except Exception as exc:
        problem = f"internal error: {one_line(exc)}"
    if problem is not None:
        return failure(raw, f"cannot add the headers without changing the message ({problem})", settings)
    return PipeResult(EX_OK, rewrite.pieces(raw))
