# SPDX-License-Identifier: MIT
"""Shared fixtures and helpers for the arborkv integration suite.

The server binary comes from the ARBORKV_BIN environment variable (meson sets it); there is no
fallback into the build tree. Every server runs on a free loopback port, in its own directory under
tmp_path, from a generated TOML config, with stderr captured to a file there. Nothing sleeps to
synchronize: `wait_until(pred, timeout_s, what)` polls a predicate against a deadline.

Processes are owned by a per-test `ProcessRegistry`. At teardown every process still running gets
SIGTERM and must exit with status 0; any captured log containing a sanitizer report fails the test.
When a test fails, every process's log is attached to the failure report.

Designed to grow: a later replication suite adds a mosquitto `ManagedProcess` to the same registry
and starts several `Peer`s sharing a broker (see `make_peer`).
"""

import os
import re
import resource
import select
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

# --------------------------------------------------------------------------------------------
# Time budget. The suite runs on a slow shared 2-core machine, sanitizer builds included, so every
# deadline is generous; no test measures throughput.

START_TIMEOUT_S = 60.0   # server start until it answers PING
STOP_TIMEOUT_S = 20.0    # SIGTERM until exit (the 1 s promise is tested on its own)
IO_TIMEOUT_S = 30.0      # one reply on a socket
SANITIZER_MARKERS = ("AddressSanitizer", "runtime error:", "LeakSanitizer")

LOOPBACK = "127.0.0.1"


def _raise_nofile_limit(want=16384):
    """1,000 concurrent client connections need more than the usual 1,024 descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


_raise_nofile_limit()


# --------------------------------------------------------------------------------------------
# Generic helpers


def wait_until(pred, timeout_s, what, interval_s=0.02):
    """Polls pred() until it returns a truthy value, which is returned.

    Fails the test with `what` once timeout_s has passed. Exceptions raised by pred count as "not
    yet" and the last one is shown in the failure message.
    """
    deadline = time.monotonic() + timeout_s
    last_exc = None
    while True:
        try:
            value = pred()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - reported below
            last_exc = exc
        if time.monotonic() >= deadline:
            msg = f"timed out after {timeout_s:.1f} s waiting for {what}"
            if last_exc is not None:
                msg += f" (last error: {last_exc!r})"
            pytest.fail(msg)
        time.sleep(interval_s)


def free_port(host=LOOPBACK):
    """Returns a TCP port that was free on host a moment ago (bind to port 0, read it back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_listening(port, host=LOOPBACK):
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def proc_rss_kb(pid):
    """Resident set size of pid in KiB, from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status", "r", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def sanitizer_lines(text):
    return [ln for ln in text.splitlines() if any(m in ln for m in SANITIZER_MARKERS)]


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


def render_toml(conf):
    """Renders a dict as TOML: scalar keys first, then one [table] per dict value."""
    out = []
    for k, v in conf.items():
        if not isinstance(v, dict):
            out.append(f"{k} = {toml_value(v)}")
    for k, v in conf.items():
        if isinstance(v, dict):
            out.append("")
            out.append(f"[{k}]")
            for k2, v2 in v.items():
                out.append(f"{k2} = {toml_value(v2)}")
    return "\n".join(out) + "\n"


def arborkv_bin():
    path = os.environ.get("ARBORKV_BIN")
    if not path:
        pytest.fail("ARBORKV_BIN is not set: point it at the arborkv server binary "
                    "(meson test sets it; by hand: ARBORKV_BIN=build/src/arborkv "
                    "/usr/bin/python3 -m pytest -q integration)", pytrace=False)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"ARBORKV_BIN={path!r} is not an executable file", pytrace=False)
    return os.path.abspath(path)


def run_arborkv(args, cwd, timeout_s=START_TIMEOUT_S):
    """Runs the binary to completion (--help, --version, config errors).

    Returns subprocess.CompletedProcess with bytes stdout/stderr. Fails the test on a sanitizer
    report or if the process is still running after timeout_s (it is killed then).
    """
    argv = [arborkv_bin()] + [str(a) for a in args]
    try:
        cp = subprocess.run(argv, cwd=str(cwd), stdin=subprocess.DEVNULL,
                            capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{argv} still running after {timeout_s} s; stderr:\n"
                    f"{(exc.stderr or b'').decode(errors='replace')}")
    bad = sanitizer_lines(cp.stderr.decode(errors="replace"))
    if bad:
        pytest.fail(f"{argv}: sanitizer report:\n" + cp.stderr.decode(errors="replace"))
    return cp


# --------------------------------------------------------------------------------------------
# Clients


class ConnectionClosed(Exception):
    """The server closed the connection (EOF or reset) before a complete reply arrived."""


class _SockClient:
    """A blocking socket with a receive buffer and deadline-based reads."""

    def __init__(self, port, host=LOOPBACK, timeout_s=IO_TIMEOUT_S, sock=None):
        self.timeout_s = timeout_s
        if sock is None:
            sock = socket.create_connection((host, port), timeout=timeout_s)
        self.sock = sock
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    def _fill(self, deadline):
        """Reads more bytes into buf. Raises ConnectionClosed on EOF/reset, TimeoutError."""
        if self.eof:
            raise ConnectionClosed(f"connection closed; unparsed bytes: {bytes(self.buf)[:200]!r}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete reply within {self.timeout_s} s; "
                               f"have {bytes(self.buf)[:200]!r}")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(1 << 20)
        except socket.timeout:
            raise TimeoutError(f"no complete reply within {self.timeout_s} s; "
                               f"have {bytes(self.buf)[:200]!r}") from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            raise ConnectionClosed(f"connection closed; unparsed bytes: {bytes(self.buf)[:200]!r}")
        self.buf += chunk

    def read_exact(self, n, timeout_s=None):
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while len(self.buf) < n:
            self._fill(deadline)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_until_closed(self, timeout_s=None):
        """Reads until EOF (or reset) and returns everything not consumed yet.

        Fails with TimeoutError if the server keeps the connection open.
        """
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            try:
                self._fill(deadline)
            except ConnectionClosed:
                out = bytes(self.buf)
                self.buf.clear()
                return out

    def assert_closed(self, timeout_s=None):
        rest = self.read_until_closed(timeout_s)
        assert rest == b"", f"expected the server to close the connection, got more bytes {rest!r}"

    def assert_no_data(self, wait_s=0.2):
        """Nothing is pending on the socket right now (used after replies were all read)."""
        r, _, _ = select.select([self.sock], [], [], wait_s)
        if r:
            data = self.sock.recv(65536)
            assert False, f"unexpected extra bytes from the server: {data[:200]!r}"


class LineClient(_SockClient):
    """Line-protocol client: send request lines, read CRLF-terminated response lines."""

    def read_line(self, timeout_s=None):
        """One response line, CRLF included."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        start = 0
        while True:
            i = self.buf.find(b"\r\n", start)
            if i >= 0:
                out = bytes(self.buf[:i + 2])
                del self.buf[:i + 2]
                return out
            start = max(0, len(self.buf) - 1)
            self._fill(deadline)

    def read_lines(self, n, timeout_s=None):
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        return [self.read_line(max(0.001, deadline - time.monotonic())) for _ in range(n)]

    def request(self, line, timeout_s=None):
        """Sends line + CRLF and returns exactly one response line (CRLF included)."""
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        return self.read_line(timeout_s)

    def request_lines(self, line, n, timeout_s=None):
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        return self.read_lines(n, timeout_s)

    def request_open_ended(self, line, timeout_s=None):
        """For STATS/INFO, whose length is not announced: sends line, then a sentinel PING, and
        returns the response lines (CRLF stripped) before the sentinel's PONG."""
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\nPING __sentinel__\r\n")
        lines = []
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            ln = self.read_line(max(0.001, deadline - time.monotonic()))
            if ln == b"PONG __sentinel__\r\n":
                return lines
            lines.append(ln[:-2])

    def stats(self):
        """STATS as an ordered list of (name, value) plus a dict; header line checked."""
        lines = self.request_open_ended("STATS")
        assert lines and lines[0] == b"STATS", f"bad STATS header: {lines[:1]!r}"
        pairs = [tuple(ln.decode().split(":", 1)) for ln in lines[1:]]
        return pairs, dict(pairs)


class RespError(Exception):
    """A RESP error reply; str() is the message without the leading '-'."""


class RespClient(_SockClient):
    """Raw RESP2 client: encodes requests as arrays of bulk strings, returns raw or parsed replies."""

    @staticmethod
    def encode(*args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, str):
                a = a.encode()
            elif isinstance(a, int):
                a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def _parse(self, pos):
        """Parses one reply at buf[pos:]; returns (value, end) or None when incomplete."""
        buf = self.buf
        i = buf.find(b"\r\n", pos)
        if i < 0:
            return None
        kind, line = buf[pos:pos + 1], bytes(buf[pos + 1:i])
        end = i + 2
        if kind == b"+":
            return line, end
        if kind == b"-":
            return RespError(line.decode(errors="replace")), end
        if kind == b":":
            return int(line), end
        if kind == b"$":
            n = int(line)
            if n < 0:
                return None, end
            if len(buf) < end + n + 2:
                return None
            assert buf[end + n:end + n + 2] == b"\r\n", "bulk string not followed by CRLF"
            return bytes(buf[end:end + n]), end + n + 2
        if kind == b"*":
            n = int(line)
            if n < 0:
                return None, end
            items = []
            for _ in range(n):
                r = self._parse(end)
                if r is None:
                    return None
                v, end = r
                items.append(v)
            return items, end
        raise AssertionError(f"bad RESP reply type byte {bytes(kind)!r} in {bytes(buf[:200])!r}")

    def read_reply_raw(self, timeout_s=None):
        """Exactly the bytes of the next complete reply."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            r = self._parse(0) if self.buf else None
            if r is not None:
                out = bytes(self.buf[:r[1]])
                del self.buf[:r[1]]
                return out
            self._fill(deadline)

    def read_reply(self, timeout_s=None):
        """The next reply, parsed: bytes, int, None, list, or a RespError instance (not raised)."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            r = self._parse(0) if self.buf else None
            if r is not None:
                del self.buf[:r[1]]
                return r[0]
            self._fill(deadline)

    def call_raw(self, *args, timeout_s=None):
        self.send(self.encode(*args))
        return self.read_reply_raw(timeout_s)

    def call(self, *args, timeout_s=None):
        """Parsed reply; an error reply is raised as RespError."""
        self.send(self.encode(*args))
        v = self.read_reply(timeout_s)
        if isinstance(v, RespError):
            raise v
        return v


# --------------------------------------------------------------------------------------------
# Processes


class ManagedProcess:
    """A child process with its stdout+stderr captured to one log file (appended across restarts)."""

    def __init__(self, name, workdir):
        self.name = name
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"{name}.log"
        self.proc = None
        self.exit_codes = []      # every exit status seen, in order
        self.expect_dead = False  # killed on purpose: teardown does not check its exit status

    def argv(self):
        raise NotImplementedError

    def spawn(self):
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} already running"
        with open(self.log_path, "ab") as log:
            log.write(f"=== {time.strftime('%H:%M:%S')} start: {' '.join(self.argv())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.argv(), cwd=str(self.workdir),
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env=self.env())
        self.expect_dead = False

    def env(self):
        return dict(os.environ)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log_text(self):
        try:
            return self.log_path.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, nbytes=6000):
        t = self.log_text()
        return t if len(t) <= nbytes else "...\n" + t[-nbytes:]

    def signal_and_wait(self, sig, timeout_s):
        """Sends sig and waits; returns the exit status, or None if it did not exit in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None
        self._record(rc)
        return rc

    def _record(self, rc):
        self.exit_codes.append(rc)

    def kill(self):
        """SIGKILL and reap; teardown will not complain about this exit."""
        self.expect_dead = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(timeout=STOP_TIMEOUT_S)


class Peer(ManagedProcess):
    """One arborkv server.

    conf: dict rendered to TOML (defaults: host, port, storage_path, engine, log_level, node_id;
          replication disabled, anti-entropy disabled, so a lone peer needs no broker).
    config_text: raw config file text instead of conf; "@PORT@" and "@STORAGE@" are substituted.
    args: extra command-line arguments.
    cli_only: no config file; host, port, storage path and node id go on the command line.
    """

    def __init__(self, name, workdir, *, conf=None, config_text=None, args=(), port=None,
                 cli_only=False):
        super().__init__(name, workdir)
        self.host = LOOPBACK
        self.fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.storage_path = self.workdir / "data"
        self.config_path = self.workdir / f"{name}.toml"
        self.conf_overrides = dict(conf or {})
        self.config_text = config_text
        self.args = [str(a) for a in args]
        self.cli_only = cli_only

    # -- configuration

    def conf(self):
        c = {
            "host": self.host,
            "port": self.port,
            "storage_path": str(self.storage_path),
            "engine": "sqlite",
            "log_level": "info",
            "node_id": self.name,
            "replication": {"enabled": False},
            "anti_entropy": {"enabled": False},
        }
        for k, v in self.conf_overrides.items():
            if isinstance(v, dict) and isinstance(c.get(k), dict):
                c[k] = {**c[k], **v}
            elif v is None:
                c.pop(k, None)
            else:
                c[k] = v
        return c

    def write_config(self):
        if self.cli_only:
            return
        if self.config_text is not None:
            text = (self.config_text.replace("@PORT@", str(self.port))
                    .replace("@STORAGE@", str(self.storage_path)))
        else:
            text = render_toml(self.conf())
        self.config_path.write_text(text)

    def argv(self):
        if self.cli_only:
            return [arborkv_bin(), "--host", self.host, "--port", str(self.port),
                    "--storage-path", str(self.storage_path), "--node-id", self.name] + self.args
        return [arborkv_bin(), "--config", str(self.config_path)] + self.args

    @property
    def db_path(self):
        return self.storage_path / "arborkv.db"

    # -- life cycle

    def start(self, timeout_s=START_TIMEOUT_S):
        """Starts the server and waits until it answers PING. Retries with a new port when the
        auto-chosen one was taken in the meantime."""
        for attempt in range(3):
            self.write_config()
            self.spawn()
            err = self._wait_ready(timeout_s)
            if err is None:
                return self
            if ("in use" in self.log_tail(2000).lower() and not self.fixed_port
                    and attempt < 2 and not self.running()):
                self.port = free_port()
                continue
            break
        if self.running():
            self.kill()
        pytest.fail(f"{self.name} did not become ready: {err}\n--- {self.name} log ---\n"
                    f"{self.log_tail()}")

    def _wait_ready(self, timeout_s):
        deadline = time.monotonic() + timeout_s
        last = "no attempt"
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self._record(rc)
                return f"exited with status {rc} during start-up"
            try:
                with socket.create_connection((self.host, self.port), timeout=2.0) as s:
                    s.settimeout(max(1.0, deadline - time.monotonic()))
                    s.sendall(b"PING\r\n")
                    got = b""
                    while not got.endswith(b"\r\n"):
                        chunk = s.recv(64)
                        if not chunk:
                            break
                        got += chunk
                    if got == b"PONG\r\n":
                        return None
                    last = f"PING answered {got!r}"
            except OSError as exc:
                last = repr(exc)
            time.sleep(0.02)
        return f"not ready after {timeout_s} s ({last})"

    def start_expect_failure(self, timeout_s=START_TIMEOUT_S):
        """Starts the server expecting it to exit by itself; returns (status, log text)."""
        self.write_config()
        self.spawn()
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.name} was expected to refuse to start but is still running "
                        f"after {timeout_s} s\n{self.log_tail()}")
        self._record(rc)
        self.expect_dead = True
        return rc, self.log_text()

    def stop(self, sig=signal.SIGTERM, timeout_s=STOP_TIMEOUT_S):
        """Sends sig (SIGTERM by default) and asserts a clean exit with status 0."""
        rc = self.signal_and_wait(sig, timeout_s)
        if rc is None:
            self.kill()
            pytest.fail(f"{self.name} did not exit within {timeout_s} s of {sig!r}\n"
                        f"{self.log_tail()}")
        assert rc == 0, f"{self.name} exited with status {rc} after {sig!r}\n{self.log_tail()}"
        self.check_log()
        return rc

    def restart(self, timeout_s=START_TIMEOUT_S):
        if self.running():
            self.stop()
        return self.start(timeout_s)

    def wait_exit(self, timeout_s=STOP_TIMEOUT_S):
        """Waits for the server to exit by itself (SHUTDOWN); returns its status."""
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} still running {timeout_s} s later\n{self.log_tail()}")
        self._record(rc)
        return rc

    def check_log(self):
        bad = sanitizer_lines(self.log_text())
        if bad:
            pytest.fail(f"{self.name}: sanitizer report in its log:\n{self.log_tail(20000)}")

    def rss_kb(self):
        return proc_rss_kb(self.pid)

    # -- clients

    def line(self, timeout_s=IO_TIMEOUT_S):
        return LineClient(self.port, self.host, timeout_s)

    def resp(self, timeout_s=IO_TIMEOUT_S):
        return RespClient(self.port, self.host, timeout_s)


class ProcessRegistry:
    """Every process a test starts. Teardown stops them all and reports problems."""

    def __init__(self):
        self.procs = []

    def add(self, p):
        self.procs.append(p)
        return p

    def logs(self):
        return [(p.name, p.log_tail(20000)) for p in self.procs]

    def shutdown_all(self):
        problems = []
        for p in self.procs:
            if p.running():
                rc = p.signal_and_wait(signal.SIGTERM, STOP_TIMEOUT_S)
                if rc is None:
                    p.kill()
                    problems.append(f"{p.name}: still running {STOP_TIMEOUT_S} s after SIGTERM")
                elif rc != 0:
                    problems.append(f"{p.name}: exit status {rc} after SIGTERM")
            elif p.proc is not None and not p.expect_dead:
                rc = p.proc.returncode
                if rc != 0:
                    problems.append(f"{p.name}: had exited by itself with status {rc}")
            bad = sanitizer_lines(p.log_text())
            if bad:
                problems.append(f"{p.name}: sanitizer report: {bad[0]}")
        return problems


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Remembers each phase's report on the item and attaches process logs to failures."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
    reg = getattr(item, "_arborkv_registry", None)
    if reg is not None and rep.failed and rep.when in ("setup", "call"):
        for name, text in reg.logs():
            rep.sections.append((f"log of {name}", text))


@pytest.fixture
def procs(request):
    """The test's ProcessRegistry; stops everything at teardown and fails on problems."""
    reg = ProcessRegistry()
    request.node._arborkv_registry = reg
    yield reg
    problems = reg.shutdown_all()
    if problems:
        logs = "\n".join(f"--- log of {n} ---\n{t}" for n, t in reg.logs())
        pytest.fail("process problems at teardown:\n  " + "\n  ".join(problems) + "\n" + logs)


@pytest.fixture
def make_peer(procs, tmp_path):
    """Factory: make_peer(name="p0", start=True, **Peer kwargs) -> Peer, registered for teardown."""
    arborkv_bin()

    def make(name="p0", start=True, **kw):
        p = procs.add(Peer(name, tmp_path / name, **kw))
        if start:
            p.start()
        return p

    return make


@pytest.fixture
def peer(make_peer):
    """One running sqlite-engine server with default settings."""
    return make_peer()


@pytest.fixture
def lc(peer):
    """A line-protocol client connected to `peer`."""
    c = peer.line()
    yield c
    c.close()


@pytest.fixture
def rc(peer):
    """A raw RESP client connected to `peer`."""
    c = peer.resp()
    yield c
    c.close()


SEMVER_RE = re.compile(rb"\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?")
