"""Real components around `spamguard serve` for the integration tests, each private to the test and removed
after it (the recipes of MAIL-TESTBED-SPAMD.md): `spamguard serve` processes, an Exim daemon (the extracted
exim4-daemon-heavy that .ci/run installs), rspamd, HAProxy, and spamc runs. Loopback only."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from mailstack import SPAMGUARD, free_port, port_open, public_dir, require, wait_for
from processes import stop_process


def spread(items: list, n: int) -> list:
    """`n` items evenly spaced through `items` (ham and spam alike from a sorted corpus, whatever its size)."""
    return items[:: max(1, len(items) // n)][:n]


# .ci/run extracts Debian's exim4-daemon-heavy here (installing it would remove postfix)
EXIM = os.environ.get("SPAMGUARD_EXIM", "/opt/exim4-heavy/usr/sbin/exim4")


@dataclass
class Serve:
    process: subprocess.Popen
    log: Path
    doors: dict[str, str] = field(default_factory=dict)  # door -> address as logged ("127.0.0.1:8000")

    def lines(self, contains: str = "door=") -> list[str]:
        return [line for line in self.log.read_text().splitlines() if contains in line]

    def port(self, door: str) -> int:
        return int(self.doors[door].rsplit(":", 1)[1])

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, signum: int = signal.SIGTERM) -> None:
        stop_process(self.process, signum)


@contextmanager
def running_serve(model: Path, *options: str, log: Path, env: dict[str, str] | None = None) -> Iterator[Serve]:
    """`spamguard serve` as its own process, as an administrator runs it; stopped at the end whatever happens.
    Give addresses with port 0 to let the system pick; the ports in use are read back from the log."""
    with open(log, "w") as err:
        process = subprocess.Popen(
            [SPAMGUARD, "serve", "--model", str(model), *options],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
    serve = Serve(process, log)
    wanted = sum(options.count(f"--{door}") for door in ("milter", "spamd", "http"))
    try:

        def listening() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"serve exited with {process.returncode}: {log.read_text()}")
            return len(serve.lines("listening: ")) == wanted

        wait_for(listening, 60, "serve to listen")
        for line in serve.lines("listening: "):
            door, address = line.split("listening: ")[1].split()
            serve.doors[door] = address.removeprefix("inet:")
        yield serve
    finally:
        serve.stop()


def spamc(port: int, *args: str, message: bytes = b"", host: str = "127.0.0.1") -> subprocess.CompletedProcess:
    """Debian's spamc against a port; a test that calls it is skipped where spamc is not installed (.ci/run
    installs it), as the tests of the other programs are."""
    require("spamc")
    return subprocess.run(
        ["spamc", "-d", host, "-p", str(port), *args], input=message, capture_output=True, timeout=60, check=False
    )


# --- Exim -----------------------------------------------------------------------------------------------------

EXIM_CONF = """\
primary_hostname = mx.example.test
exim_path = {exim}
keep_environment =
spool_directory = {root}/spool
log_file_path = {root}/log/%slog
pid_file_path = {root}/exim.pid
local_interfaces = 127.0.0.1
daemon_smtp_ports = {port}
tls_advertise_hosts =
host_lookup =
# no DNS for the client's HELO name either: Python's smtplib says EHLO localhost, which Exim looks up by default
# (helo_lookup_domains = @ : @[]), and one lookup in ten waited out the resolver's 5 s timeout here
helo_lookup_domains =
rfc1413_hosts =
smtp_accept_max = 50
smtp_accept_queue_per_connection = 0
.ifndef SPAMD
SPAMD = {spamd}
.endif
.ifndef SPAMCOND
SPAMCOND = nobody:true
.endif
spamd_address = SPAMD
acl_smtp_rcpt = acl_rcpt
acl_smtp_data = acl_data
begin acl
acl_rcpt:
  accept hosts = 127.0.0.1
  deny   message = relay not permitted
acl_data:
.ifndef NOSPAM
  warn   spam       = SPAMCOND
         add_header = X-Spam-Score: $spam_score ($spam_bar)
         add_header = X-Spam-Report: $spam_report
  deny   spam       = SPAMCOND
         condition  = ${{if >{{$spam_score_int}}{{{reject_tenths}}}}}
         message    = Rejected as spam (score $spam_score)
.endif
  accept
begin routers
to_maildir:
  driver = accept
  transport = maildir
begin transports
maildir:
  driver = appendfile
  directory = {root}/maildir
  maildir_format
  create_directory
  user = Debian-exim
  group = Debian-exim
  mode = 0640
begin retry
*  *  F,1h,5m
"""


@dataclass
class Exim:
    root: Path
    port: int
    process: subprocess.Popen

    def delivered(self) -> list[Path]:
        return sorted((self.root / "maildir" / "new").glob("*")) if (self.root / "maildir" / "new").is_dir() else []

    def log(self, name: str = "main") -> str:
        path = self.root / "log" / f"{name}log"
        return path.read_text(errors="replace") if path.exists() else ""


def require_exim() -> None:
    require("spamc")
    if not Path(EXIM).exists():
        pytest.skip(f"needs Debian's exim4-daemon-heavy extracted to {Path(EXIM).parents[2]} (done by .ci/run)")
    try:
        pwd.getpwnam("Debian-exim")
    except KeyError:
        pytest.skip("needs the Debian-exim user (created by .ci/run)")
    if os.geteuid() != 0:
        pytest.skip("a private Exim daemon needs root")


@contextmanager
def running_exim(spamd: str, *macros: str, reject_tenths: int = 100) -> Iterator[Exim]:
    """An Exim daemon on loopback that asks `spamd` (Exim's `spamd_address` syntax: "127.0.0.1 7830 : ...") about
    every message, adds X-Spam-Score/X-Spam-Report, rejects above `reject_tenths` / 10 points, and delivers the
    rest to a Maildir. `macros`: extra -D settings (SPAMD=..., SPAMCOND=..., NOSPAM=1 for no spam check)."""
    require_exim()
    root = public_dir("spamguard-exim-")
    port = free_port()
    for sub in ("spool", "log", "maildir"):
        (root / sub).mkdir()
    (root / "exim.conf").write_text(
        EXIM_CONF.format(exim=EXIM, root=root, port=port, spamd=spamd, reject_tenths=reject_tenths)
    )
    # Exim runs as Debian-exim (-C drops root); its configuration must stay root's, not writable by others
    subprocess.run(["chown", "-R", "Debian-exim:Debian-exim", *(str(root / d) for d in ("spool", "log", "maildir"))])
    command = [EXIM, "-C", str(root / "exim.conf"), *(f"-D{m}" for m in macros), "-bdf", "-q30m"]
    with open(root / "daemon.out", "w") as out:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:

        def up() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"exim exited with {process.returncode}: {(root / 'daemon.out').read_text()}")
            return port_open(port)

        wait_for(up, 30, "exim to listen")
        yield Exim(root, port, process)
    finally:
        stop_process(process)
        shutil.rmtree(root, ignore_errors=True)


# --- rspamd ---------------------------------------------------------------------------------------------------

RSPAMD_FILES = {
    "override.d/worker-normal.inc": 'bind_socket = "127.0.0.1:{normal}"; count = 1;\n',
    "override.d/worker-controller.inc": (
        'bind_socket = "127.0.0.1:{controller}"; count = 1; password = "q1"; secure_ip = "127.0.0.1";\n'
    ),
    "override.d/worker-proxy.inc": "enabled = false;\n",
    "override.d/fuzzy_check.conf": "enabled = false;\n",  # it would resolve fuzzy1.rspamd.com at start
    # No DNS leaves the machine (a dead loopback port). A short list of top-level domains for the URL detector:
    # compiling the 9,600 public suffixes of Debian's list takes about a minute on 2 busy cores, at every
    # start with a fresh database folder.
    "local.d/options.inc": (
        'dns {{ nameserver = ["127.0.0.1:{dns}"]; timeout = 0.1s; retransmits = 1; }}\nurl_tld = "{root}/tld.dat";\n'
    ),
    "local.d/logging.inc": 'type = "file"; filename = "{root}/log/rspamd.log"; level = "info";\n',
    "local.d/external_services.conf": (
        "spamassassin {{\n"
        '  servers = "{servers}";\n'
        '  symbol = "SPAMD"; timeout = 15; retransmits = 1; log_clean = true; extended = false;\n'
        "}}\n"
    ),
    # without a weight the symbol scores 0 (rspamd multiplies the reported score by it)
    "local.d/external_services_group.conf": (
        'symbols = {{ "SPAMD" {{ weight = 1.0; description = "spamguard over the spamd protocol"; }} }}\n'
    ),
}


@dataclass
class Rspamd:
    root: Path
    port: int
    process: subprocess.Popen

    def symbols(self, message: Path) -> str:
        result = subprocess.run(
            ["rspamc", "-h", f"127.0.0.1:{self.port}", "symbols", str(message)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout


@contextmanager
def running_rspamd(servers: str) -> Iterator[Rspamd]:
    """rspamd with Debian's configuration, its workers and its `external_services` pointed at `servers`
    ("127.0.0.1:PORT[,...]"); no DNS leaves the machine, no Redis."""
    require("rspamd", "rspamc")
    if os.geteuid() != 0:
        pytest.skip("rspamd drops privileges to _rspamd: needs root")
    root = public_dir("spamguard-rspamd-")
    normal, controller = free_port(), free_port()
    values = {"normal": normal, "controller": controller, "dns": free_port(), "root": root, "servers": servers}
    for name, text in RSPAMD_FILES.items():
        path = root / "etc" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.format(**values))
    (root / "tld.dat").write_text("com\nnet\norg\nedu\ngov\nde\nuk\nco.uk\ntest\ncn\ncc\nau\n")
    for sub in ("db", "run", "log"):
        (root / sub).mkdir()
    subprocess.run(["chown", "-R", "_rspamd:_rspamd", str(root / "db"), str(root / "run"), str(root / "log")])
    variables = [f"--var={k}={root / v}" for k, v in (("LOCAL_CONFDIR", "etc"), ("DBDIR", "db"), ("RUNDIR", "run"))]
    variables.append(f"--var=LOGDIR={root / 'log'}")
    command = ["rspamd", "-f", "-u", "_rspamd", "-g", "_rspamd", "-c", "/etc/rspamd/rspamd.conf", *variables]
    with open(root / "daemon.out", "w") as out:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:

        def up() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"rspamd exited with {process.returncode}: {(root / 'daemon.out').read_text()}")
            return port_open(normal)

        wait_for(up, 120, "rspamd to listen")
        yield Rspamd(root, normal, process)
    finally:
        # the main process and its workers are one process group of their own (start_new_session)
        with_group = os.getpgid(process.pid) if process.poll() is None else None
        stop_process(process, grace=15)
        if with_group is not None:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    os.killpg(with_group, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.killpg(with_group, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


# --- HAProxy --------------------------------------------------------------------------------------------------

HAPROXY_CFG = """\
global
    maxconn 400
    stats socket {root}/admin.sock mode 600 level admin
defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    retries 2
    option redispatch
frontend http_in
    mode http
    bind 127.0.0.1:{http}
    default_backend http_pool
backend http_pool
    mode http
    balance roundrobin
    option httpchk GET /healthz
    option http-buffer-request
    retry-on all-retryable-errors
    default-server inter 500ms fall 2 rise 2
    server a {http_a} check
    server b {http_b} check
frontend milter_in
    bind 127.0.0.1:{milter}
    default_backend milter_pool
backend milter_pool
    balance roundrobin
    default-server inter 500ms fall 2 rise 2
    server a {milter_a} check
    server b {milter_b} check
"""


@dataclass
class HAProxy:
    root: Path
    http: int
    milter: int
    process: subprocess.Popen


@contextmanager
def running_haproxy(
    http_servers: tuple[str, str], milter_servers: tuple[str, str], *, milter_port: int = 0
) -> Iterator[HAProxy]:
    """HAProxy on loopback in front of two HTTP servers (HTTP mode: it retries a request whose server died) and
    two milters (TCP mode: a milter conversation cannot be replayed), listening for milter clients on
    `milter_port` (0: any free port)."""
    require("haproxy")
    root = public_dir("spamguard-haproxy-")
    http, milter = free_port(), milter_port or free_port()
    (root / "haproxy.cfg").write_text(
        HAPROXY_CFG.format(
            root=root,
            http=http,
            milter=milter,
            http_a=http_servers[0],
            http_b=http_servers[1],
            milter_a=milter_servers[0],
            milter_b=milter_servers[1],
        )
    )
    with open(root / "haproxy.out", "w") as out:
        process = subprocess.Popen(
            ["haproxy", "-db", "-f", str(root / "haproxy.cfg")], stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    try:
        wait_for(lambda: port_open(http) and port_open(milter), 30, "haproxy to listen")
        yield HAProxy(root, http, milter, process)
    finally:
        stop_process(process)
        shutil.rmtree(root, ignore_errors=True)
