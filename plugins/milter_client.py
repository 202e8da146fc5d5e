"""The MTA side of the milter protocol, over a blocking socket, speaking as Postfix does: negotiate, then per
message the headers, end of headers, the body in 64 KiB chunks and end of message, skipping the steps the
milter negotiated away. Tests and benchmarks use it to reach the milter without an MTA in between."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from spamguard.plugins import milter_protocol as p
from spamguard.plugins.headers import header_fields
from spamguard.plugins.milter_address import ListenAddress, parse_listen

CHUNK = 65535
# What Postfix 3.7 offers: every action but the newer MDS sizes, every protocol flag up to SMFIP_HDR_LEADSPC.
MTA_ACTIONS = 0x1FF
MTA_PROTOCOL = 0x1FFFFF


@dataclass
class MilterReply:
    code: bytes  # the final reply: ACCEPT, CONTINUE, REJECT, TEMPFAIL, REPLYCODE, DISCARD
    text: str = ""  # the SMTP reply of a REPLYCODE
    modifications: list[p.Modification] = field(default_factory=list)


def split_message(raw: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Header fields as (name, value) the way an MTA hands them to a milter (value without the colon and the
    final line ending, folding kept), and the body after the empty line."""
    fields = header_fields(raw)
    headers = []
    for name, start, end in fields:
        if not name:
            continue
        value = raw[start:end].split(b":", 1)[1]
        headers.append((name, value.removesuffix(b"\n").removesuffix(b"\r")))
    end = fields[-1][2] if fields else 0
    body = raw[end:]
    for separator in (b"\r\n", b"\n", b"\r"):
        if body.startswith(separator):
            return headers, body[len(separator) :]
    return headers, body


class MilterClient:
    def __init__(self, address: str | ListenAddress, *, timeout: float = 30.0) -> None:
        self.address = parse_listen(address) if isinstance(address, str) else address
        family = socket.AF_UNIX if self.address.kind == "unix" else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        if family == socket.AF_INET:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        target = self.address.path if self.address.kind == "unix" else (self.address.host, self.address.port)
        self.sock.connect(target)
        self._reader = p.PacketReader()
        self._packets: list[p.Packet] = []
        self._outgoing = bytearray()  # commands that get no reply wait here, to go out in one write
        self.protocol = 0
        self.actions = 0

    def __enter__(self) -> MilterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self._outgoing += data

    def flush(self) -> None:
        if self._outgoing:
            self.sock.sendall(self._outgoing)
            self._outgoing.clear()

    def read_packet(self) -> p.Packet:
        self.flush()
        while not self._packets:
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionError("milter closed the connection")
            self._packets.extend(self._reader.feed(data))
        return self._packets.pop(0)

    def negotiate(self, actions: int = MTA_ACTIONS, protocol: int = MTA_PROTOCOL) -> p.OptionNegotiation:
        self.send(p.optneg_command(actions, protocol))
        packet = self.read_packet()
        if packet.code != p.OPTNEG:
            raise p.MilterProtocolError(f"expected option negotiation, got {packet.code!r}")
        reply = p.decode_command(packet)
        if not isinstance(reply, p.OptionNegotiation):
            raise p.MilterProtocolError("malformed option negotiation")
        self.protocol, self.actions = reply.protocol, reply.actions
        return reply

    def _step(self, data: bytes, no_reply_flag: int) -> p.Packet | None:
        self.send(data)
        return None if self.protocol & no_reply_flag else self.read_packet()

    def message(self, raw: bytes, *, queue_id: str = "") -> MilterReply:
        """Run one message through the milter, as an MTA does between DATA and its reply."""
        skip = {
            p.SMFIP_NOCONNECT: (p.connect_command("client.example", "127.0.0.1", 40000), p.SMFIP_NR_CONN),
            p.SMFIP_NOHELO: (p.encode_packet(p.HELO, b"client.example\0"), p.SMFIP_NR_HELO),
            p.SMFIP_NOMAIL: (p.encode_packet(p.MAIL, b"<a@example.test>\0"), p.SMFIP_NR_MAIL),
            p.SMFIP_NORCPT: (p.encode_packet(p.RCPT, b"<b@example.test>\0"), p.SMFIP_NR_RCPT),
            p.SMFIP_NODATA: (p.encode_packet(p.DATA), p.SMFIP_NR_DATA),
        }
        for left_out, (command, no_reply) in skip.items():
            if not self.protocol & left_out:
                reply = self._step(command, no_reply)
                if reply is not None and reply.code != p.CONTINUE:
                    return MilterReply(reply.code)
        headers, body = split_message(raw)
        if not self.protocol & p.SMFIP_NOHDRS:
            for name, value in headers:
                if not self.protocol & p.SMFIP_HDR_LEADSPC:
                    value = value.lstrip(b" \t")
                self._step(p.header_command(name, value), p.SMFIP_NR_HDR)
        if not self.protocol & p.SMFIP_NOEOH:
            self._step(p.encode_packet(p.EOH), p.SMFIP_NR_EOH)
        if not self.protocol & p.SMFIP_NOBODY:
            for start in range(0, len(body), CHUNK):
                reply = self._step(p.encode_packet(p.BODY, body[start : start + CHUNK]), p.SMFIP_NR_BODY)
                if reply is not None and reply.code == p.SKIP:
                    break
        if queue_id:
            self.send(p.macro_command(p.BODYEOB, {"i": queue_id}))
        self.send(p.encode_packet(p.BODYEOB))
        result = MilterReply(b"")
        while True:
            packet = self.read_packet()
            if packet.code in p.FINAL_REPLIES and packet.code != p.SKIP:
                result.code = packet.code
                if packet.code == p.REPLYCODE:
                    result.text = packet.data.rstrip(b"\0").decode()
                return result
            if packet.code != p.PROGRESS:
                result.modifications.append(p.decode_modification(packet))

    def close(self) -> None:
        try:
            self.send(p.encode_packet(p.QUIT))
            self.flush()
        except OSError:
            pass
        self.sock.close()
