"""The milter front door (Postfix `smtpd_milters`, Sendmail `INPUT_MAIL_FILTER`), split as every front door is:
`protocol` (the wire format: bytes in, objects out), `session` (one connection's conversation as a pure state
machine), `server` (asyncio: the only module with sockets), `client` (the MTA side, for `spamguard pipe
--connect`, tests and benchmarks) and `address` (where it listens). Nothing is imported here, so the pipe's
client mode does not load asyncio."""
