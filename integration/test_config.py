# SPDX-License-Identifier: MIT
"""Configuration file (MerkleKV TOML format plus arborkv keys) and command line."""

import re
import socket
import time

import pytest

from conftest import (LOOPBACK, SEMVER_RE, ConnectionClosed, free_port, port_is_listening, run_arborkv,
                      wait_until)

FAIL_TIMEOUT_S = 30

# MerkleKV's shipped config.toml, verbatim except for the port.
MERKLEKV_CONFIG = """\
# MerkleKV Configuration

host = "127.0.0.1"
port = @PORT@
storage_path = "data"
engine = "rwlock"
sync_interval_seconds = 60

[replication]
enabled = false
mqtt_broker = "localhost"
mqtt_port = 1883
topic_prefix = "merkle_kv"
client_id = "node1"
"""


def _stderr_lines(cp):
    return cp.stderr.decode(errors="replace").splitlines()


def _assert_config_error(cp, path, line):
    want = f"{path}:{line}: "
    lines = _stderr_lines(cp)
    assert cp.returncode == 2, (cp.returncode, lines)
    hits = [ln for ln in lines if ln.startswith(want) and len(ln) > len(want)]
    assert hits, f"no stderr line starting with {want!r}: {lines}"


# --------------------------------------------------------------------------------------------
# Accepted files


def test_merklekv_config_accepted_as_is(make_peer):
    p = make_peer(config_text=MERKLEKV_CONFIG)
    with p.line() as c:
        assert c.request(b"SET a 1") == b"OK\r\n"
        assert c.request(b"GET a") == b"VALUE 1\r\n"
    assert "unknown" not in p.log_text().lower(), p.log_text()


def test_merklekv_sled_config_persists_under_relative_storage_path(make_peer):
    p = make_peer(config_text=MERKLEKV_CONFIG.replace('"rwlock"', '"sled"'))
    with p.line() as c:
        assert c.request(b"SET a 1") == b"OK\r\n"
    p.stop()
    assert (p.workdir / "data" / "arborkv.db").is_file()
    p.start()
    with p.line() as c:
        assert c.request(b"GET a") == b"VALUE 1\r\n"


def test_full_arborkv_config_with_toml_features(make_peer):
    text = """\
# every key arborkv knows, written with the TOML features the parser supports
host = '127.0.0.1'            # literal string
port = @PORT@
storage_path = "@STORAGE@"
engine = "sqlite"
sync_interval_seconds = 30
fsync = "always"
max_clients = 1_000
client_output_limit = 67_108_864
log_level = "debug"
node_id = "n\\u0065-1"   # \\u escape of a plain ASCII letter

[replication]
enabled = false
mqtt_broker = "127.0.0.1"
mqtt_port = 1883
topic_prefix = "arbor\\u002dkv"
client_id = "cid"
client_password = "s\\u00e9cret"
username = "user"
peer_list = ["a", 'b']

[anti_entropy]
enabled = false
interval_seconds = 10
peer_list = [
    "127.0.0.1:1",
    "127.0.0.1:2",  # trailing comma next
]
"""
    p = make_peer(config_text=text)
    with p.line() as c:
        assert c.request(b"SET a 1") == b"OK\r\n"
        lines = c.request_open_ended(b"INFO")
    assert any(ln.endswith(b":ne-1") for ln in lines), lines
    assert "unknown key" not in p.log_text(), p.log_text()


def test_unknown_keys_only_warn(make_peer):
    text = ('host = "127.0.0.1"\nport = @PORT@\nstorage_path = "@STORAGE@"\n'
            'bogus_key = 1\n\n[replication]\nenabled = false\nbogus_repl = "x"\n'
            '\n[bogus_table]\nz = 3\n')
    p = make_peer(config_text=text)
    with p.line() as c:
        assert c.request(b"PING") == b"PONG\r\n"
    log = p.log_text().splitlines()
    for line_no, name in ((4, "bogus_key"), (8, "bogus_repl")):
        want = f"{p.config_path}:{line_no}: "
        assert any(want in ln and name in ln for ln in log), (want, name, log)
    assert any("bogus_table" in ln or ":10: " in ln for ln in log), log


# --------------------------------------------------------------------------------------------
# Refused files


def test_missing_config_file(tmp_path):
    missing = tmp_path / "nope" / "arborkv.toml"
    cp = run_arborkv(["--config", missing], tmp_path, FAIL_TIMEOUT_S)
    assert cp.returncode == 2, (cp.returncode, cp.stderr)
    pat = re.compile(re.escape(str(missing)) + r"(:\d+)?: \S")
    assert any(pat.match(ln) for ln in _stderr_lines(cp)), _stderr_lines(cp)


def test_config_flag_without_value(tmp_path):
    cp = run_arborkv(["--config"], tmp_path, FAIL_TIMEOUT_S)
    assert cp.returncode == 2
    assert any(ln.startswith("command line: ") for ln in _stderr_lines(cp)), _stderr_lines(cp)


HEADER = 'host = "127.0.0.1"\n# comment\n\n'   # three lines, so errors land on line 4+

SYNTAX_ERRORS = [
    ("port = \n", 4),
    ('host = "unterminated\n', 4),
    ("[replication\nenabled = false\n", 4),
    ("port 7379\n", 4),
    ('port = 1\nengine = "sqlite" extra\n', 5),
    ("= 3\n", 4),
    ('storage_path = "bad \\q escape"\n', 4),
]


@pytest.mark.parametrize("body,line", SYNTAX_ERRORS, ids=[b[:20] for b, _ in SYNTAX_ERRORS])
def test_syntax_error(tmp_path, body, line):
    path = tmp_path / "bad.toml"
    path.write_text(HEADER + body)
    cp = run_arborkv(["--config", path], tmp_path, FAIL_TIMEOUT_S)
    _assert_config_error(cp, path, line)


BAD_VALUES = [
    'port = "abc"\n',
    "port = 70000\n",
    "port = -1\n",
    'engine = "foo"\n',
    'fsync = "sometimes"\n',
    'log_level = "loud"\n',
    'sync_interval_seconds = "x"\n',
    "host = 5\n",
    'max_clients = "many"\n',
    "client_output_limit = -5\n",
    "[replication]\nenabled = 3\n",
    '[anti_entropy]\npeer_list = "not an array"\n',
]


@pytest.mark.parametrize("body", BAD_VALUES, ids=[b[:24] for b in BAD_VALUES])
def test_bad_value(tmp_path, body):
    path = tmp_path / "bad.toml"
    path.write_text(HEADER + body)
    line = 4 + body.count("\n") - 1
    cp = run_arborkv(["--config", path, "--port", free_port()], tmp_path, FAIL_TIMEOUT_S)
    _assert_config_error(cp, path, line)


# --------------------------------------------------------------------------------------------
# Command line


def test_cli_port_beats_file(make_peer):
    file_port = free_port()
    cli_port = free_port()
    p = make_peer(config_text=MERKLEKV_CONFIG.replace("@PORT@", str(file_port)),
                  args=["--port", cli_port], port=cli_port)
    with p.line() as c:
        assert c.request(b"PING") == b"PONG\r\n"
    assert not port_is_listening(file_port)


def test_cli_overrides_equals_form(make_peer, tmp_path):
    other_store = tmp_path / "cli-store"
    cli_port = free_port()
    p = make_peer(conf={"engine": "memory", "node_id": "from-file"},
                  args=[f"--port={cli_port}", f"--storage-path={other_store}",
                        "--engine=sqlite", "--node-id", "from-cli", "--log-level", "warn",
                        "--host", "127.0.0.1"],
                  port=cli_port)
    with p.line() as c:
        assert c.request(b"SET a 1") == b"OK\r\n"
        info = c.request_open_ended(b"INFO")
    assert any(ln.endswith(b":from-cli") for ln in info), info
    assert not any(ln.endswith(b":from-file") for ln in info), info
    p.stop()
    assert (other_store / "arborkv.db").is_file()
    assert not p.db_path.exists()


def test_cli_without_config_file(make_peer):
    """All settings from the command line, no --config at all."""
    p = make_peer(cli_only=True)
    with p.line() as c:
        assert c.request(b"SET a 1") == b"OK\r\n"
    p.stop()
    assert p.db_path.is_file()


CLI_ERRORS = [
    ["--port", "abc"],
    ["--port", "70000"],
    ["--port"],
    ["--engine", "foo"],
    ["--log-level", "loud"],
    ["--bogus-option"],
]


@pytest.mark.parametrize("args", CLI_ERRORS, ids=[" ".join(a) for a in CLI_ERRORS])
def test_cli_errors(tmp_path, args):
    cp = run_arborkv(args, tmp_path, FAIL_TIMEOUT_S)
    assert cp.returncode == 2, (cp.returncode, cp.stderr)
    lines = _stderr_lines(cp)
    assert any(ln.startswith("command line: ") and len(ln) > 14 for ln in lines), lines


def test_version_flag(make_peer, tmp_path):
    cp = run_arborkv(["--version"], tmp_path)
    assert cp.returncode == 0, cp.stderr
    m = SEMVER_RE.search(cp.stdout)
    assert m, cp.stdout
    p = make_peer()
    with p.line() as c:
        assert c.request(b"VERSION") == b"VERSION " + m.group(0) + b"\r\n"


def test_help_flag(tmp_path):
    cp = run_arborkv(["--help"], tmp_path)
    assert cp.returncode == 0, cp.stderr
    out = cp.stdout.decode()
    assert "usage" in out.lower(), out
    for opt in ("--config", "--host", "--port", "--storage-path", "--engine", "--node-id",
                "--log-level", "--version", "--help"):
        assert opt in out, (opt, out)


def test_help_and_version_ignore_an_unusable_config(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("port = \"x\"\n")
    for flag, want in (("--help", "usage"), ("--version", "arborkv ")):
        for cfg in (bad, tmp_path / "missing.toml"):
            cp = run_arborkv(["--config", cfg, flag], tmp_path)
            assert cp.returncode == 0, (flag, cfg, cp.stderr)
            assert want in cp.stdout.decode().lower(), cp.stdout


def test_trailing_garbage_error_stays_on_one_line(tmp_path):
    cfg = tmp_path / "a.toml"
    cfg.write_text('port = 7379\nengine = "memory" x\nhost = "127.0.0.1"\n')
    cp = run_arborkv(["--config", cfg], tmp_path)
    assert cp.returncode == 2
    err = cp.stderr.decode()
    assert f"{cfg}:2: unexpected text after value: 'x'\n" in err, err


@pytest.mark.parametrize("engine,persistent", [("sqlite", True), ("sled", True),
                                               ("memory", False), ("rwlock", False),
                                               ("kv", False)])
@pytest.mark.parametrize("where", ["file", "cli"])
def test_engine_aliases(make_peer, engine, persistent, where):
    if where == "file":
        p = make_peer(conf={"engine": engine})
    else:
        p = make_peer(conf={"engine": "memory" if persistent else "sqlite"},
                      args=["--engine", engine])
    with p.line() as c:
        assert c.request(b"SET a 1") == b"OK\r\n"
    p.stop()
    assert p.db_path.is_file() == persistent
    p.start()
    with p.line() as c:
        assert c.request(b"GET a") == (b"VALUE 1\r\n" if persistent else b"NOT_FOUND\r\n")


# --------------------------------------------------------------------------------------------
# Limits from the config


def test_max_clients(make_peer):
    p = make_peer(conf={"max_clients": 3})

    def try_ping():
        with p.line() as x:
            return x.request(b"PING") == b"PONG\r\n"

    first = p.line()
    # the readiness probe's connection may still be counted for a moment
    wait_until(lambda: first.stats()[1]["active_connections"] == "1", 30, "a quiet server")
    ok = [first, p.line(), p.line()]
    try:
        for c in ok:
            assert c.request(b"PING") == b"PONG\r\n"
        with p.line() as extra:
            extra.send(b"PING\r\n")
            try:
                got = extra.read_line()
            except ConnectionClosed:
                got = None  # refused without a reply: acceptable
            if got is not None:
                assert got.startswith(b"ERROR "), got
                assert extra.read_until_closed() == b""
        for c in ok:
            assert c.request(b"PING") == b"PONG\r\n"
        ok.pop().close()
        wait_until(try_ping, 30, "a new client accepted after one left")
    finally:
        for c in ok:
            c.close()


def test_client_output_limit_disconnects(make_peer):
    limit = 1024 * 1024
    p = make_peer(conf={"client_output_limit": limit})
    val = b"v" * (8 * 1024 * 1024)
    with p.resp() as r:
        assert r.call("SET", "huge", val, timeout_s=120) == b"OK"
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((LOOPBACK, p.port))
    try:
        mine = "%s:%d" % s.getsockname()
        s.sendall(b"*2\r\n$3\r\nGET\r\n$4\r\nhuge\r\n" * 4)
        with p.line() as c:
            def gone():
                lines = []
                c.send(b"CLIENT LIST\r\n")
                while True:
                    ln = c.read_line()
                    if ln == b"END\r\n":
                        break
                    lines.append(ln)
                return not any(f"addr={mine} ".encode() in ln for ln in lines)
            wait_until(gone, 60, "the client over client_output_limit to be disconnected")
            assert c.request(b"PING") == b"PONG\r\n"
        # what it did receive is a prefix of the reply stream, then EOF
        s.settimeout(30)
        total = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(1 << 20)
            except ConnectionResetError:
                break
            if not chunk:
                break
            total += len(chunk)
        assert total < 4 * (len(val) + 20), total
    finally:
        s.close()
