"""The pipe filter: one message in, the same message with spamguard headers out (procmail `:0fw`, maildrop
`xfilter`, an Exim or Postfix `pipe` transport).

A filter in a delivery chain must never lose mail. Whatever goes wrong (no model, a corrupt one, a timeout,
running out of memory while scoring, a bug), the original bytes come out unchanged with exit 0 and one line on
stderr says why (procmail writes it to its LOGFILE, maildrop to its log); there is deliberately no error
header, so "unchanged" means byte-for-byte. With `fail_closed` the filter writes nothing and exits 75
(EX_TEMPFAIL) instead, so the MTA keeps the message queued and retries later."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from spamguard.plugins import spamguard_version
from spamguard.plugins.headers import OUR_HEADERS, Field, add_headers, verdict_fields

EX_OK = 0
EX_TEMPFAIL = 75  # sysexits.h: procmail, maildrop and Postfix's pipe(8) all read it as "try again later"
DEFAULT_MAX_SIZE = 500 * 1024  # spamc's default: larger messages are scored on their first part only
DEFAULT_TIMEOUT = 30.0  # seconds for loading the model and scoring; a slower scorer is treated as broken


@dataclass(frozen=True)
class PipeSettings:
    model: str | None = None  # name or bundle path; None: $SPAMGUARD_MODEL, then the default model
    precision: str = "auto"
    threshold: float | None = None  # None: the bundle's threshold
    max_size: int = DEFAULT_MAX_SIZE
    timeout: float = DEFAULT_TIMEOUT
    fail_closed: bool = False
    threads: int | None = None
    connect: str | None = None  # a running milter's address: score there instead of loading the model here


@dataclass(frozen=True)
class PipeResult:
    exit_code: int
    output: bytes | None  # what to write on stdout; None when failing closed
    error: str | None = None  # one line for stderr, when something went wrong
    abandoned: bool = False  # a scoring thread is still running (timeout): the process must exit without joining


def fields_from_model(message: bytes, settings: PipeSettings) -> list[Field]:
    from spamguard import Classifier  # here, so a missing or broken runtime is a failure like any other

    classifier = Classifier.load(settings.model, precision=settings.precision, threads=settings.threads)
    return verdict_fields(classifier.classify(message, threshold=settings.threshold), spamguard_version())


def fields_from_milter(message: bytes, settings: PipeSettings) -> list[Field]:
    """Ask a running `spamguard milter` (spamc/spamd style): the model stays loaded there, so each delivery
    costs a process start and a socket round trip instead of loading the model again."""
    from spamguard.errors import SpamguardError
    from spamguard.plugins import milter_protocol as p
    from spamguard.plugins.milter_client import MilterClient

    try:
        with MilterClient(settings.connect, timeout=settings.timeout) as client:  # type: ignore[arg-type]
            client.negotiate()
            reply = client.message(message)
    except OSError as exc:
        raise SpamguardError(f"cannot reach the milter at {settings.connect}: {exc.strerror or exc}") from exc
    ours = {name.lower() for name in OUR_HEADERS}
    fields = [
        (m.name.decode("ascii"), m.value.decode("ascii"))
        for m in reply.modifications
        if m.code in (p.INSHEADER, p.ADDHEADER) and m.name.decode("ascii", "replace").lower() in ours
    ]
    if not fields or any("\n" in value or "\r" in value for _, value in fields):
        raise SpamguardError(f"the milter at {settings.connect} did not score the message (reply {reply.code!r})")
    return fields


def filter_message(raw: bytes, settings: PipeSettings) -> bytes:
    """Score the message (its first `max_size` bytes) and return it with the headers. Raises on any failure."""
    scored = raw[: settings.max_size]
    fields = fields_from_milter(scored, settings) if settings.connect else fields_from_model(scored, settings)
    return add_headers(raw, fields)


def describe_error(exc: BaseException) -> str:
    """Our own errors are already one line for people; anything else gets its type, so a log reader can tell a
    MemoryError from a bug."""
    from spamguard.errors import SpamguardError

    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, SpamguardError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def failure(raw: bytes, reason: str, settings: PipeSettings, *, abandoned: bool = False) -> PipeResult:
    if settings.fail_closed:
        return PipeResult(EX_TEMPFAIL, None, f"{reason}; exit {EX_TEMPFAIL} (tempfail) so the MTA retries", abandoned)
    return PipeResult(EX_OK, raw, f"{reason}; message passed through unchanged", abandoned)


def run_filter(raw: bytes, settings: PipeSettings) -> PipeResult:
    """Filter with a deadline. The work runs in a daemon thread because a stuck native call (onnxruntime, a
    huge allocation) cannot be interrupted; on timeout the caller writes the result and ends the process."""
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            outcome["output"] = filter_message(raw, settings)
        except BaseException as exc:  # MemoryError, KeyboardInterrupt in the worker: all mean "not scored"
            outcome["error"] = exc

    worker = threading.Thread(target=work, name="spamguard-pipe", daemon=True)
    worker.start()
    worker.join(settings.timeout)
    if worker.is_alive():
        return failure(raw, f"timed out after {settings.timeout:g} s", settings, abandoned=True)
    if "error" in outcome:
        return failure(raw, describe_error(outcome["error"]), settings)  # type: ignore[arg-type]
    return PipeResult(EX_OK, outcome["output"])  # type: ignore[arg-type]
