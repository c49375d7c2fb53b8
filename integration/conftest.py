# SPDX-License-Identifier: MIT
"""Shared fixtures and helpers for the arborkv integration suite.

The server binary comes from the ARBORKV_BIN environment variable (meson sets it); there is no
fallback into the build tree. Every server runs on a free loopback port, in its own directory under
tmp_path, from a generated TOML config, with stderr captured to a file there. Nothing sleeps to
synchronize: `wait_until(pred, timeout_s, what)` polls a predicate against a deadline.

Processes are owned by a per-test `ProcessRegistry`. At teardown every process still running gets
SIGTERM and must exit with status 0; any captured log containing a sanitizer report fails the test.
When a test fails, every process's log is attached to the failure report.

Replication (end of this file): `Broker` is a mosquitto `ManagedProcess` in the same registry
(stopped after the servers); `make_cluster` starts several `Peer`s sharing a broker under a topic
prefix unique to the test; `Subscriber`/`Publisher` are paho-mqtt test clients stopped at
teardown; `info`, `eventually_equal`, `converged`, `wait_info` wait for replication to happen.
"""

import itertools
import os
import re
import resource
import secrets
import select
import shutil
import signal
import socket
import subprocess
import threading
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
LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"


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


_ports_handed_out = set()


def free_port(host=LOOPBACK):
    """Returns a TCP port that was free on host a moment ago (bind to port 0, read it back).

    A port is handed out once per test session: a port picked for a process that is not started
    yet (a broker started later in the test) must not be picked again for another one.
    """
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _ports_handed_out:
            _ports_handed_out.add(port)
            return port
    raise RuntimeError("no free loopback port that was not handed out already")


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
    faketime: run the server with its wall clock offset by libfaketime, e.g. "+1h" or "-10m"
              (LD_PRELOAD in the server's own environment, so its pid is the server's; only
              CLOCK_REALTIME moves).
    wrapper: argv prefix for other tools (its pid, not the server's, gets the signals).
    env: extra environment variables for the server process.
    """

    def __init__(self, name, workdir, *, conf=None, config_text=None, args=(), port=None,
                 cli_only=False, faketime=None, wrapper=(), env=None):
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
        self.wrapper = [str(a) for a in wrapper]
        self.extra_env = dict(env or {})
        self.faketime = faketime
        if faketime is not None:
            lib = LIBFAKETIME
            if not os.path.exists(lib):
                pytest.fail(f"{lib} not found: install the faketime package", pytrace=False)
            pre = os.environ.get("LD_PRELOAD", "")
            asan = os.environ.get("ASAN_OPTIONS", "")
            self.extra_env.update({
                "LD_PRELOAD": (pre + ":" if pre else "") + lib,
                "FAKETIME": faketime,
                "DONT_FAKE_MONOTONIC": "1",
                "FAKETIME_DONT_FAKE_MONOTONIC": "1",
                # libfaketime is preloaded ahead of a sanitizer runtime; ASan must accept that.
                "ASAN_OPTIONS": (asan + ":" if asan else "") + "verify_asan_link_order=0",
            })

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
            return self.wrapper + [arborkv_bin(), "--host", self.host, "--port", str(self.port),
                                   "--storage-path", str(self.storage_path),
                                   "--node-id", self.name] + self.args
        return self.wrapper + [arborkv_bin(), "--config", str(self.config_path)] + self.args

    def env(self):
        e = dict(os.environ)
        e.update(self.extra_env)
        return e

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
        self.closers = []   # callables run before any process is stopped (MQTT test clients)

    def add(self, p):
        self.procs.append(p)
        return p

    def on_teardown(self, fn):
        self.closers.append(fn)
        return fn

    def logs(self):
        return [(p.name, p.log_tail(20000)) for p in self.procs]

    def shutdown_all(self):
        problems = []
        for fn in reversed(self.closers):
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - reported, teardown goes on
                problems.append(f"teardown of {fn!r}: {exc!r}")
        # Servers first, brokers last (stop_order 1), so peers leave while their broker is up.
        for p in sorted(self.procs, key=lambda q: getattr(q, "stop_order", 0)):
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


# --------------------------------------------------------------------------------------------
# MQTT replication: a mosquitto broker per test, MQTT test clients, replicated clusters.
#
# Every test gets its own broker on a free loopback port and its own topic prefix, so tests
# never see each other's retained presence or persistent sessions.

try:  # only the replication tests need these; the rest of the suite must not depend on them
    import cbor2
    import paho.mqtt.client as mqtt
except ImportError:  # pragma: no cover - reported by the fixtures that need them
    cbor2 = None
    mqtt = None

REPL_TIMEOUT_S = 90.0     # an event or a whole batch of writes reaching every peer
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"

_client_ids = itertools.count()


def _need_mqtt_libs():
    if mqtt is None or cbor2 is None:
        pytest.fail("python3-paho-mqtt and python3-cbor2 are needed (run with /usr/bin/python3)",
                    pytrace=False)
    if not os.access(MOSQUITTO, os.X_OK):
        pytest.fail(f"mosquitto not found ({MOSQUITTO}); install the mosquitto package",
                    pytrace=False)


class Broker(ManagedProcess):
    """A mosquitto 2.0 broker on 127.0.0.1, configured from a generated file in its own directory.

    username/password: a password file is generated (mosquitto_passwd) and anonymous clients are
        refused; otherwise anonymous access is allowed.
    persistence: sessions, subscriptions and queued messages are saved under workdir/data/ (every
        second, on SIGTERM, and on `save()`), so they survive `restart()`, and also `kill()` for
        whatever was saved before it.
    The per-client queue is effectively unbounded (max_queued_messages 1,000,000, no byte limit)
    so that a peer that is away finds every event waiting.
    The port is chosen once; `restart()` reuses it, as peers are configured with it.
    """

    stop_order = 1  # the registry stops servers first, then brokers

    def __init__(self, name, workdir, *, port=None, username=None, password=None,
                 persistence=False, extra_conf=()):
        super().__init__(name, workdir)
        self.host = LOOPBACK
        self.fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.username = username
        self.password = password
        self.persistence = persistence
        self.extra_conf = list(extra_conf)
        self.config_path = self.workdir / f"{name}.conf"
        self.data_dir = self.workdir / "data"
        self.passwd_path = self.workdir / "passwd"

    def write_config(self):
        lines = [
            f"listener {self.port} {self.host}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_timestamp_format %H:%M:%S",
            "connection_messages true",
            "max_queued_messages 1000000",
            "max_queued_bytes 0",
            "set_tcp_nodelay true",  # as docs/replication.md recommends
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # else mosquitto switches to user mosquitto: no access here
        if self.username is not None:
            if not self.passwd_path.exists():
                subprocess.run([MOSQUITTO_PASSWD, "-b", "-c", str(self.passwd_path),
                                self.username, self.password or ""],
                               check=True, capture_output=True, timeout=60)
            lines += ["allow_anonymous false", f"password_file {self.passwd_path}"]
        else:
            lines.append("allow_anonymous true")
        if self.persistence:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            lines += ["persistence true", f"persistence_location {self.data_dir}/",
                      "autosave_interval 1"]
        lines += self.extra_conf
        self.config_path.write_text("\n".join(lines) + "\n")

    def argv(self):
        return [MOSQUITTO, "-c", str(self.config_path)]

    @property
    def db_file(self):
        return self.data_dir / "mosquitto.db"

    def start(self, timeout_s=START_TIMEOUT_S):
        """Starts mosquitto and waits until it accepts TCP connections on its port."""
        _need_mqtt_libs()
        deadline = time.monotonic() + timeout_s
        last = "no attempt"
        while True:
            self.write_config()
            self.spawn()
            while time.monotonic() < deadline:
                rc = self.proc.poll()
                if rc is not None:
                    self._record(rc)
                    last = f"exited with status {rc}"
                    break
                if port_is_listening(self.port, self.host):
                    self.fixed_port = True  # peers know this port from now on
                    return self
                time.sleep(0.02)
            else:
                if self.running():
                    self.kill()
                pytest.fail(f"{self.name} did not listen on {self.port} within {timeout_s} s\n"
                            f"{self.log_tail()}")
            in_use = "in use" in self.log_tail(1000).lower()
            if in_use and not self.fixed_port:
                self.port = free_port()
            elif not in_use or time.monotonic() >= deadline:
                pytest.fail(f"{self.name} could not start ({last})\n{self.log_tail()}")
            else:
                time.sleep(0.2)  # the same port again, once whoever holds it lets go

    def stop(self, timeout_s=STOP_TIMEOUT_S):
        """SIGTERM (mosquitto saves its persistence file) and a clean exit with status 0."""
        rc = self.signal_and_wait(signal.SIGTERM, timeout_s)
        if rc is None:
            self.kill()
            pytest.fail(f"{self.name} did not exit within {timeout_s} s of SIGTERM")
        assert rc == 0, f"{self.name} exited with status {rc}\n{self.log_tail()}"

    def restart(self, timeout_s=START_TIMEOUT_S):
        """Starts the broker again on the same port (stopping it first if it runs)."""
        if self.running():
            self.stop()
        return self.start(timeout_s)

    def save(self, timeout_s=IO_TIMEOUT_S):
        """Makes mosquitto write its persistence file now (SIGUSR1) and waits until it has."""
        assert self.persistence, "save() needs a broker started with persistence=True"

        def stamp():
            try:
                st = os.stat(self.db_file)
                return (st.st_ino, st.st_mtime_ns, st.st_size)
            except FileNotFoundError:
                return None

        before = stamp()
        self.proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: stamp() not in (None, before), timeout_s,
                   f"{self.name} to write {self.db_file}")

    def log_count(self, needle):
        return self.log_text().count(needle)


def _mqtt_port(target):
    return target.port if hasattr(target, "port") else int(target)


class _MqttClient:
    """A paho-mqtt 1.6 client running its network loop in a thread."""

    def __init__(self, target, *, username=None, password=None, client_id=None,
                 clean_session=True, timeout_s=IO_TIMEOUT_S, role="client"):
        _need_mqtt_libs()
        self.port = _mqtt_port(target)
        if username is None and getattr(target, "username", None) is not None:
            username, password = target.username, target.password
        self.timeout_s = timeout_s
        self.client_id = client_id or f"pytest-{role}-{os.getpid()}-{next(_client_ids)}"
        self.client = mqtt.Client(client_id=self.client_id, clean_session=clean_session)
        if username is not None:
            self.client.username_pw_set(username, password)
        self._connected = threading.Event()
        self.connect_rc = None
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.stopped = False

    def _on_connect(self, client, userdata, flags, rc):
        self.connect_rc = rc
        if rc == 0:
            self._connected.set()

    def _on_disconnect(self, client, userdata, rc):
        self._connected.clear()

    def _start(self):
        self.client.connect(LOOPBACK, self.port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(self.timeout_s):
            self.stop()
            pytest.fail(f"MQTT client {self.client_id} could not connect to port {self.port} "
                        f"(CONNACK rc {self.connect_rc})")

    def stop(self):
        if self.stopped:
            return
        self.stopped = True
        try:
            self.client.disconnect()
        except Exception:  # noqa: BLE001 - best effort
            pass
        self.client.loop_stop()


class Subscriber(_MqttClient):
    """Subscribes to a topic filter and collects every message as (topic, payload, retain).

    The constructor returns once the broker has acknowledged the subscription (SUBACK), so any
    message published after that is collected. Safe to read from any thread.
    """

    def __init__(self, target, topic, *, qos=1, **kw):
        super().__init__(target, role="sub", **kw)
        self.topic = topic
        self.qos = qos
        self._cond = threading.Condition()
        self._msgs = []
        self._nevents = 0
        self._suback = threading.Event()
        self.client.on_subscribe = lambda c, u, mid, granted: self._suback.set()
        self.client.on_message = self._on_message
        self._start()
        if not self._suback.wait(self.timeout_s):
            self.stop()
            pytest.fail(f"no SUBACK for {topic!r} within {self.timeout_s} s")

    def _on_connect(self, client, userdata, flags, rc):
        super()._on_connect(client, userdata, flags, rc)
        if rc == 0:
            client.subscribe(self.topic, qos=self.qos)  # again after any reconnect

    def _on_message(self, client, userdata, msg):
        payload = bytes(msg.payload)
        try:
            n = len(decode_events(payload)) if cbor2 is not None else 0
        except Exception:  # noqa: BLE001 - not an event payload: counts no event
            n = 0
        with self._cond:
            self._msgs.append((msg.topic, payload, bool(msg.retain)))
            self._nevents += n
            self._cond.notify_all()

    def messages(self):
        with self._cond:
            return list(self._msgs)

    def count(self):
        with self._cond:
            return len(self._msgs)

    def event_count(self):
        """Events received so far, counted inside batches (undecodable payloads count 0)."""
        with self._cond:
            return self._nevents

    def wait_for(self, pred, timeout_s=REPL_TIMEOUT_S, what="messages", _on_self=False):
        """Waits until pred(list of messages) is truthy; returns its value."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                v = pred(self) if _on_self else pred(list(self._msgs))
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"timed out after {timeout_s:.1f} s waiting for {what} on "
                                f"{self.topic!r} ({len(self._msgs)} messages received)")
                self._cond.wait(min(left, 0.5))

    def wait_count(self, n, timeout_s=REPL_TIMEOUT_S):
        """Waits until at least n messages arrived; returns the messages."""
        return self.wait_for(lambda m: m if len(m) >= n else None, timeout_s,
                             f"{n} messages")

    def events(self):
        """Every event in the collected messages, batches flattened: [(topic, event dict)].
        Payloads that are not events are skipped."""
        out = []
        for t, p, _ in self.messages():
            try:
                out += [(t, e) for e in decode_events(p)]
            except Exception:  # noqa: BLE001 - not an event payload
                pass
        return out

    def wait_events(self, n, timeout_s=REPL_TIMEOUT_S):
        """Waits until at least n events (counted inside batches) arrived; returns them."""
        self.wait_for(lambda s: s._nevents >= n, timeout_s, f"{n} events", _on_self=True)
        return self.events()


class Publisher(_MqttClient):
    """Publishes and waits for the broker's acknowledgement (PUBACK for QoS 1)."""

    def __init__(self, target, **kw):
        super().__init__(target, role="pub", **kw)
        self.client.max_inflight_messages_set(100)
        self._start()

    def publish(self, topic, payload, qos=1, retain=False, wait=True):
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if wait:
            self.wait(info)
        return info

    def publish_many(self, topic, payloads, qos=1):
        """Publishes every payload in order, then waits for all acknowledgements."""
        infos = [self.client.publish(topic, p, qos=qos) for p in payloads]
        for i in infos:
            self.wait(i)

    def wait(self, info):
        deadline = time.monotonic() + self.timeout_s
        while not info.is_published():
            if time.monotonic() >= deadline:
                pytest.fail(f"no acknowledgement for message {info.mid} within {self.timeout_s} s")
            try:
                info.wait_for_publish(0.5)
            except (RuntimeError, ValueError) as exc:
                pytest.fail(f"publish of message {info.mid} failed: {exc!r}")


def publish(target, topic, payload, qos=1, retain=False, **kw):
    """One message through a short-lived client; returns after the broker acknowledged it."""
    p = Publisher(target, **kw)
    try:
        p.publish(topic, payload, qos=qos, retain=retain)
    finally:
        p.stop()


# -- CBOR change events (spec §2)


def decode_events(payload):
    """A message payload as a list of event maps (one map, or a batch array of maps).

    Raises ValueError if the payload is not that (the watch tool and tests treat it as malformed).
    """
    obj = cbor2.loads(payload)
    if isinstance(obj, dict):
        return [obj]
    if isinstance(obj, list) and all(isinstance(e, dict) for e in obj):
        return obj
    raise ValueError(f"not an event map or an array of maps: {obj!r:.200}")


def encode_event(op, key, val, ts, src="fake-node", op_id=None, *, merklekv=False, v=1,
                 extra=None):
    """One change event as CBOR bytes, in arborkv's encoding or MerkleKV's (integer arrays, no v).

    key/val: str or bytes (val None for a delete). op_id: 16 bytes (random if None).
    """
    if op_id is None:
        op_id = os.urandom(16)
    if isinstance(val, str):
        val = val.encode()
    ev = {}
    if not merklekv and v is not None:
        ev["v"] = v
    ev.update({"op": op, "key": key,
               "val": (list(val) if merklekv and val is not None else val),
               "ts": ts, "src": src,
               "op_id": list(op_id) if merklekv else bytes(op_id)})
    ev.update(extra or {})
    return cbor2.dumps(ev)


def event_order(ev):
    """The LWW order of spec §1: (ts, op_id bytes)."""
    return (ev["ts"], bytes(ev["op_id"]))


def lww_winners(events):
    """{key: winning event} over an iterable of event maps (keys normalised to bytes)."""
    win = {}
    for ev in events:
        k = ev["key"].encode() if isinstance(ev["key"], str) else bytes(ev["key"])
        if k not in win or event_order(ev) > event_order(win[k]):
            win[k] = ev
    return win


# -- peers in a cluster


def info(peer):
    """The line-protocol INFO reply of peer as a dict of name -> value (strings)."""
    with peer.line() as c:
        lines = c.request_open_ended(b"INFO")
    assert lines and lines[0] == b"INFO", f"bad INFO header from {peer.name}: {lines[:1]!r}"
    out = {}
    for ln in lines[1:]:
        name, sep, value = ln.decode(errors="replace").partition(":")
        assert sep, f"INFO line without ':' from {peer.name}: {ln!r}"
        out[name] = value
    return out


def info_int(peer, name):
    d = info(peer)
    assert name in d, f"INFO of {peer.name} has no {name!r} field: {sorted(d)}"
    return int(d[name])


def line_request(peer, line):
    """One line-protocol request on a fresh connection; the response line without CRLF."""
    with peer.line() as c:
        return c.request(line)[:-2]


def _b(x):
    if x is None or isinstance(x, bytes):
        return x
    return str(x).encode()


def get_value(peer, key):
    """GET over RESP (binary-safe): bytes, or None when the key is absent."""
    with peer.resp() as c:
        return c.call("GET", _b(key))


def snapshot(peer, keys=None):
    """{key: value} of the peer's live data (every key, or only `keys`; absent ones omitted)."""
    with peer.resp(timeout_s=120) as c:
        if keys is None:
            keys = sorted(c.call("KEYS", "*"))
        keys = [_b(k) for k in keys]
        out = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            for k, v in zip(chunk, c.call("MGET", *chunk)):
                if v is not None:
                    out[k] = v
        return out


def eventually_equal(peers, key, value, timeout_s=REPL_TIMEOUT_S):
    """Waits until GET key returns value (None: absent) on every peer."""
    want = _b(value)

    def check():
        got = {p.name: get_value(p, key) for p in peers}
        wrong = {n: v for n, v in got.items() if v != want}
        assert not wrong, f"{key!r}: want {want!r}, got {wrong}"
        return True

    wait_until(check, timeout_s, f"{key!r} == {want!r} on {[p.name for p in peers]}",
               interval_s=0.1)


def converged(peers, keys=None, expected=None, timeout_s=REPL_TIMEOUT_S):
    """Waits until every peer holds the same live data (over `keys`, or all of it) and, if given,
    equal to `expected` ({key: value}); returns that data."""
    exp = None if expected is None else {_b(k): _b(v) for k, v in expected.items()}

    def check():
        snaps = {p.name: snapshot(p, keys) for p in peers}
        first = next(iter(snaps.values()))
        for name, s in snaps.items():
            if s != first:
                diff = sorted(set(s.items()) ^ set(first.items()))[:5]
                raise AssertionError(f"{name} differs from {peers[0].name} "
                                     f"({len(s)} vs {len(first)} keys; e.g. {diff})")
        if exp is not None and first != exp:
            diff = sorted(set(first.items()) ^ set(exp.items()))[:5]
            raise AssertionError(f"converged on the wrong data ({len(first)} keys, "
                                 f"{len(exp)} expected; e.g. {diff})")
        return (first,)  # truthy even when the data is empty

    return wait_until(check, timeout_s, f"{[p.name for p in peers]} to converge",
                      interval_s=0.2)[0]


def wait_info(peer, pred, what, timeout_s=REPL_TIMEOUT_S):
    """Waits until pred(INFO dict of peer) is truthy; returns that INFO dict."""
    last = {}

    def check():
        last.clear()
        last.update(info(peer))
        return pred(last)

    try:
        wait_until(check, timeout_s, f"{peer.name}: {what}", interval_s=0.1)
    except pytest.fail.Exception as exc:
        keys = [k for k in last if k.startswith(("broker", "events", "outbox", "peers",
                                                 "replication", "clock"))]
        raise pytest.fail.Exception(
            f"{exc}; last INFO: {', '.join(f'{k}={last[k]}' for k in keys)}") from None
    return dict(last)


def wait_info_int(peer, name, pred, what=None, timeout_s=REPL_TIMEOUT_S):
    """Waits until pred(int(INFO[name])) holds; returns the value."""
    d = wait_info(peer, lambda d: name in d and pred(int(d[name])),
                  what or f"INFO {name} to reach the expected value", timeout_s)
    return int(d[name])


def repl_conf(broker, prefix, **extra):
    """The [replication] table for a peer of `broker` under topic prefix `prefix`.

    reconnect_max_seconds is 2 (not 30) so tests that restart the broker don't wait long.
    Credentials come from the broker unless given.
    """
    c = {"enabled": True, "mqtt_broker": LOOPBACK, "mqtt_port": broker.port,
         "topic_prefix": prefix, "reconnect_max_seconds": 2}
    if getattr(broker, "username", None) is not None:
        c["username"] = broker.username
        c["client_password"] = broker.password or ""
    c.update(extra)
    return c


def merge_conf(*confs):
    """Merges config dicts left to right, tables (dict values) key by key."""
    out = {}
    for conf in confs:
        for k, v in (conf or {}).items():
            if isinstance(v, dict) and isinstance(out.get(k), dict):
                out[k] = {**out[k], **v}
            else:
                out[k] = dict(v) if isinstance(v, dict) else v
    return out


class Cluster(list):
    """The peers of make_cluster, in order, plus the broker, topic prefix and lookup by name."""

    def __init__(self, peers, broker, prefix):
        super().__init__(peers)
        self.broker = broker
        self.prefix = prefix

    def peer(self, name):
        for p in self:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def events_topic(self):
        return f"{self.prefix}/events/#"


def wait_replicating(peers, timeout_s=REPL_TIMEOUT_S, expect_online=None):
    """Waits until every peer is connected to its broker and sees the others online."""
    n = len(peers) - 1 if expect_online is None else expect_online
    for p in peers:
        wait_info(p, lambda d: (d.get("broker_state") == "connected"
                                and d.get("peers_online") == str(n)),
                  f"broker_state:connected and peers_online:{n}", timeout_s)


@pytest.fixture
def make_broker(procs, tmp_path):
    """Factory: make_broker(name=None, start=True, **Broker kwargs) -> Broker (registered)."""
    _need_mqtt_libs()
    counter = itertools.count()

    def make(name=None, start=True, **kw):
        i = next(counter)
        name = name or ("mosquitto" if i == 0 else f"mosquitto{i}")
        b = procs.add(Broker(name, tmp_path / name, **kw))
        if start:
            b.start()
        return b

    return make


@pytest.fixture
def broker(make_broker):
    """One running anonymous broker without persistence."""
    return make_broker()


@pytest.fixture
def make_proxy(procs):
    """Factory: make_proxy(target_port, mode="pass") -> faults.TcpProxy, closed at teardown
    (before the processes are stopped, by the process registry)."""
    from faults import TcpProxy  # faults imports this module: not at the top

    def make(target_port, **kw):
        p = TcpProxy(target_port, **kw)
        procs.on_teardown(p.close)
        return p
    return make


@pytest.fixture
def make_subscriber(procs):
    """Factory: make_subscriber(broker, topic, **kw) -> Subscriber, stopped at teardown."""
    def make(target, topic, **kw):
        s = Subscriber(target, topic, **kw)
        procs.on_teardown(s.stop)
        return s
    return make


@pytest.fixture
def make_publisher(procs):
    """Factory: make_publisher(broker, **kw) -> Publisher, stopped at teardown."""
    def make(target, **kw):
        p = Publisher(target, **kw)
        procs.on_teardown(p.stop)
        return p
    return make


def unique_prefix(request=None):
    base = "akv"
    if request is not None:
        base = re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:40] or base
    return f"{base}-{secrets.token_hex(3)}"


@pytest.fixture
def make_cluster(make_peer, request):
    """Factory: make_cluster(n, broker, prefix=None, names=None, conf_overrides=None,
    repl=None, per_peer=None, wait=True) -> Cluster.

    Starts n peers (names p0..p{n-1} unless `names`) replicating through `broker` under a topic
    prefix unique to the test. conf_overrides: config merged into every peer's; repl: extra
    [replication] keys for every peer; per_peer: {name: Peer kwargs}, whose "conf" is merged
    last (e.g. {"p1": {"wrapper": ["faketime", "-f", "+1h"]}}). With wait, returns once every
    peer is connected and sees the n-1 others online.
    """
    def make(n, broker, *, prefix=None, names=None, conf_overrides=None, repl=None,
             per_peer=None, wait=True):
        prefix = prefix or unique_prefix(request)
        names = list(names or [f"p{i}" for i in range(n)])
        assert len(names) == n
        peers = []
        for name in names:
            kw = dict((per_peer or {}).get(name, {}))
            conf = merge_conf({"replication": repl_conf(broker, prefix, **(repl or {}))},
                              conf_overrides, kw.pop("conf", None))
            peers.append(make_peer(name, conf=conf, **kw))
        cluster = Cluster(peers, broker, prefix)
        if wait:
            wait_replicating(cluster)
        return cluster

    return make
