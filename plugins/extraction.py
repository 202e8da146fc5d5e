"""The prepare stage of the scoring pool: a message's kind and the token ids the model reads, worked out in a
separate process with a deadline.

Turning a mail into text runs Python's mail and HTML parsers on bytes a sender chose. Bounded as they are, a
pathological input (or the next parser bug) can still take seconds, recurse or crash, and in a server that
must never hold up every other message. So this stage runs in processes started once, one message at a time
each: a message past its deadline gets its process killed (SIGKILL works whatever the process is stuck in) and
a fresh one started, which frees the slot for the next message.

Each process is `python -m spamguard.plugins.extraction`, a fresh interpreter that imports only the text
function and the tokenizer (not the server's model, threads or sockets, and not the program that started it,
as multiprocessing's spawn and forkserver would). They speak length-prefixed frames over stdin and stdout.
The tokenizer goes in once at start-up; after that the parent sends raw bytes and reads back a kind and an
array of token ids, size-checked before it is read: nothing a sender controls crosses as pickle."""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
import warnings
from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING

from spamguard.errors import SpamguardError, one_line
from spamguard.message_text import KINDS, message_kind, message_text
from spamguard.plugins import die_with_parent
from spamguard.tokenizer import encode

if TYPE_CHECKING:
    import tiktoken

_OK, _ERROR = b"k", b"e"
_KIND_CODES = {kind: kind[:1].encode() for kind in KINDS}  # b"m" / b"s"
_KIND_OF_CODE = {code: kind for kind, code in _KIND_CODES.items()}
_TOKEN = "I"  # uint32: every GPT-2 id fits; array's "I" is 4 bytes wherever onnxruntime runs
_LENGTH = struct.Struct(">I")
_ERROR_CHARS = 300  # a reason is one log line
START_TIMEOUT = 30.0  # seconds for a new process to import and build its tokenizer (0.2-0.4 s here)


@dataclass(frozen=True)
class Prepared:
    """What the score stage needs of a message: its kind (whose threshold applies) and the ids the model reads."""

    kind: str
    tokens: list[int]


def prepare(raw: bytes, encoding: tiktoken.Encoding, max_tokens: int) -> Prepared:
    """The kind and tokens of a message, as `Classifier.classify` computes them in-process."""
    return Prepared(message_kind(raw), encode(encoding, message_text(raw), max_tokens))


class ExtractionError(SpamguardError):
    """No prepared message: the process timed out (`timed_out`), died, or the extraction raised."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


# --- the extraction process ----------------------------------------------------------------------------------


def _answer(raw: bytes, encoding: tiktoken.Encoding, max_tokens: int) -> bytes:
    try:
        prepared = prepare(raw, encoding, max_tokens)
        return _OK + _KIND_CODES[prepared.kind] + array(_TOKEN, prepared.tokens).tobytes()
    except Exception as exc:  # RecursionError and MemoryError included: this message's failure, not ours
        return _ERROR + one_line(exc)[:_ERROR_CHARS].encode("utf-8", "replace")


def _read_frame(fd: int) -> bytes | None:
    header = _read_exactly(fd, _LENGTH.size)
    return None if header is None else _read_exactly(fd, _LENGTH.unpack(header)[0])


def _read_exactly(fd: int, size: int) -> bytes | None:
    data = bytearray()
    while len(data) < size:
        chunk = os.read(fd, min(size - len(data), 1 << 20))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main() -> None:
    """The extraction process: the tokenizer in the first frame (from our parent, which built it from a verified
    bundle), then one message in and one answer out per frame until the parent closes the pipe."""
    die_with_parent(int(sys.argv[1]))
    warnings.simplefilter("ignore")  # nothing a message makes a library say belongs in the server's log
    answers = os.dup(1)
    os.dup2(2, 1)  # whatever a library prints goes to the log, never into the answer stream
    setup = _read_frame(0)
    if setup is None:
        return
    encoding, max_tokens, memory_limit = pickle.loads(setup)
    if memory_limit:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    _write_all(answers, _LENGTH.pack(0))  # ready
    while (raw := _read_frame(0)) is not None:
        answer = _answer(raw, encoding, max_tokens)
        _write_all(answers, _LENGTH.pack(len(answer)) + answer)


# --- the parent's side -------------------------------------------------------------------------------------------


def _decode(reply: bytes) -> Prepared | None:
    """The answer of `_answer`; ExtractionError for the message's own failure, None for a malformed answer."""
    if reply[:1] == _ERROR:
        raise ExtractionError(reply[1:].decode("utf-8", "replace"))
    kind = _KIND_OF_CODE.get(reply[1:2])
    if reply[:1] != _OK or kind is None or (len(reply) - 2) % struct.calcsize(_TOKEN):
        return None
    return Prepared(kind, array(_TOKEN, reply[2:]).tolist())


class _Expired(Exception):
    """The deadline passed while writing to or reading from the process."""


class _Gone(Exception):
    """The process closed its end: it died."""


class ExtractionProcess:
    """One slot: a process that prepares one message at a time, killed and replaced when a message outlasts
    its deadline or kills it. Used from one thread at a time (the pool gives each slot its own thread)."""

    def __init__(self, encoding: tiktoken.Encoding, max_tokens: int, *, memory_limit: int | None = None) -> None:
        self._setup = pickle.dumps((encoding, max_tokens, memory_limit))
        self._max_reply = 2 + 4 * max_tokens + 4 * _ERROR_CHARS
        self._process: subprocess.Popen[bytes] | None = None
        self.restarts = 0  # processes killed (timeout) or found dead, to be replaced

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the process if there is none (at creation, and after a kill), and wait until it is ready.
        Raises ExtractionError when the machine cannot start one (out of processes, memory or descriptors)."""
        if self._process is not None:
            return
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                close_fds=True,
                cwd="/",  # `-m` puts the working directory first on sys.path: make it one no user controls
                start_new_session=True,  # a terminal's Ctrl-C and SIGTSTP are the server's business
            )
        except OSError as exc:
            raise ExtractionError(f"cannot start a text extraction process: {exc.strerror or exc}") from exc
        self._process = process
        try:
            self._exchange(self._setup, time.monotonic() + START_TIMEOUT)
        except (_Expired, _Gone, OSError):
            self._kill()
            raise ExtractionError("a new text extraction process did not start (see the log above)") from None

    def prepare(self, raw: bytes, timeout: float) -> Prepared:
        """The message prepared within `timeout` seconds, or ExtractionError (the process is then gone)."""
        if self._process is not None and self._process.poll() is not None:  # died while idle: replace it first
            self.restarts += 1
            self._kill()
        self.start()
        try:
            reply = self._exchange(raw, time.monotonic() + timeout)
        except _Expired:
            self.restarts += 1
            self._kill()
            raise ExtractionError(f"text extraction timed out after {timeout:g} s", timed_out=True) from None
        except (_Gone, OSError):
            self.restarts += 1
            raise ExtractionError(f"text extraction process died{self._kill(grace=1.0)}") from None
        prepared = _decode(reply)
        if prepared is None:
            self.restarts += 1
            self._kill()
            raise ExtractionError("text extraction process sent a malformed answer")
        return prepared

    def _exchange(self, data: bytes, deadline: float) -> bytes:
        """Send one frame and read the answer frame, all before `deadline`."""
        process = self._process
        assert process is not None and process.stdin is not None and process.stdout is not None
        into, out = process.stdin.fileno(), process.stdout.fileno()
        os.set_blocking(into, False)
        frame = memoryview(_LENGTH.pack(len(data)) + data)
        while frame:
            _wait(into, select.POLLOUT, deadline)
            try:
                frame = frame[os.write(into, frame) :]
            except BlockingIOError:
                continue
        (size,) = _LENGTH.unpack(self._read(out, _LENGTH.size, deadline))
        if size > self._max_reply:
            raise _Gone  # not our protocol any more: treat it as dead
        return self._read(out, size, deadline)

    @staticmethod
    def _read(fd: int, size: int, deadline: float) -> bytes:
        data = bytearray()
        while len(data) < size:
            _wait(fd, select.POLLIN, deadline)
            chunk = os.read(fd, size - len(data))
            if not chunk:
                raise _Gone
            data += chunk
        return bytes(data)

    def _kill(self, grace: float = 0.0) -> str:
        """Kill and reap the process (after `grace` seconds to end by itself); for a process that died on its
        own, the signal that ended it."""
        process, self._process = self._process, None
        if process is None:
            return ""
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)
        alive = process.poll() is None
        if alive:
            process.kill()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()
        code = process.wait()
        if not alive and code < 0:
            return f" ({signal.Signals(-code).name})"
        return ""

    def close(self) -> None:
        self._kill()


def _wait(fd: int, event: int, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _Expired
    poller = select.poll()
    poller.register(fd, event)
    if not poller.poll(remaining * 1000):
        raise _Expired


if __name__ == "__main__":
    main()
