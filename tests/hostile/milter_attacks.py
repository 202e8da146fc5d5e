"""A local user attacking `spamguard milter` on its port, from threads: header floods, connections holding
unfinished packets, idle connections by the thousand. Shared by the soak test and
`benchmarks/milter_memory.py`."""

from __future__ import annotations

import contextlib
import resource
import socket
import threading
from dataclasses import dataclass

from mailstack import Milter, milter_socket

from spamguard.plugins.milter import protocol as p
from spamguard.plugins.milter.client import MTA_ACTIONS, MTA_PROTOCOL

MiB = 1024 * 1024


@dataclass(frozen=True)
class Soak:
    messages: int  # through Postfix, from 4 clients
    waves: int  # attack rounds, one after the other, while the messages flow
    flood: int  # header bytes per flooding connection (two of them per wave)
    holders: int  # connections each holding an unfinished 250 KiB packet
    idle: int  # idle connections


def raise_descriptors(wanted: int) -> int:
    """Raise this process's descriptor limit as far as the hard limit allows; how many sockets it can open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


class Attacker:
    """A local user hammering the milter's port from threads until told to stop; every socket it opened is
    closed at the end."""

    def __init__(self, milter: Milter, soak: Soak) -> None:
        self.milter = milter
        self.soak = soak
        self.stop = threading.Event()
        self.socks: list[socket.socket] = []
        self.lock = threading.Lock()
        self.flood_replies: list[bytes] = []

    def _open(self, negotiate: bool) -> socket.socket | None:
        try:
            sock = milter_socket(self.milter.address, timeout=10)
            if negotiate:
                sock.sendall(p.optneg_command(MTA_ACTIONS, MTA_PROTOCOL))
                sock.recv(4096)
        except OSError:
            return None  # closed at the cap already, or the backlog was full: an attacker shrugs
        with self.lock:
            self.socks.append(sock)
        return sock

    def flood(self) -> None:
        big = p.header_command(b"X-Flood", b" " + b"x" * (100 * 1024))
        sock = self._open(negotiate=True)
        if sock is None:
            return
        try:
            sock.settimeout(60)
            for _ in range(self.soak.flood // len(big)):
                sock.sendall(big)
            sock.sendall(p.encode_packet(p.EOH) + p.encode_packet(p.BODYEOB, b"flood\r\n"))
            reader, packets = p.PacketReader(), []
            while not packets or packets[-1].code not in p.FINAL_REPLIES:
                data = sock.recv(65536)
                if not data:
                    return
                packets.extend(reader.feed(data))
            self.flood_replies.append(packets[-1].code)
        except OSError:
            pass  # closed by the milter at a cap: fine

    def hold(self) -> None:
        held = p.header_command(b"X-Held", b" " + b"z" * (250 * 1024))[: 250 * 1024 - 100]
        for _ in range(self.soak.holders):
            sock = self._open(negotiate=True)
            if sock is not None:
                with contextlib.suppress(OSError):  # closed at a cap already
                    sock.sendall(held)

    def idle(self) -> None:
        for _ in range(self.soak.idle):
            if self.stop.is_set():
                return
            self._open(negotiate=False)

    def wave(self) -> None:
        threads = [threading.Thread(target=t) for t in (self.flood, self.flood, self.hold, self.idle)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def close(self) -> None:
        with self.lock:
            for sock in self.socks:
                sock.close()
            self.socks.clear()
