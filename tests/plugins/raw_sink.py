"""An SMTP sink for the Postfix tests: every message is stored exactly as it arrived (aiosmtpd's own Mailbox
handler parses and re-serialises, which would hide how Postfix wrote the headers), one file per message in
`DIR/new/`, written to `DIR/tmp/` first so a reader never sees half a message.

    python raw_sink.py HOST:PORT DIR
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
from pathlib import Path

from aiosmtpd.controller import Controller


class RawMaildir:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        for sub in ("tmp", "new"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        self.counter = itertools.count()

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        name = f"{os.getpid()}.{next(self.counter)}"
        temporary = self.folder / "tmp" / name
        temporary.write_bytes(envelope.original_content)  # type: ignore[attr-defined]
        temporary.rename(self.folder / "new" / name)
        return "250 OK"


def main() -> None:
    host, port = sys.argv[1].rsplit(":", 1)
    stop = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # before the server thread starts, so it inherits the mask
    controller = Controller(RawMaildir(Path(sys.argv[2])), hostname=host, port=int(port))
    controller.start()
    signal.sigwait(stop)
    controller.stop()


if __name__ == "__main__":
    main()
