# SPDX-License-Identifier: MIT
"""Unmodified Redis tools against arborkv: redis-cli (one-shot and piped interactive) and
redis-benchmark."""

import shutil
import subprocess

import pytest

TOOL_TIMEOUT_S = 300


def _tool(name):
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install Debian's redis-tools")
    return path


def cli(peer, *args, stdin=None):
    cp = subprocess.run([_tool("redis-cli"), "-h", "127.0.0.1", "-p", str(peer.port)]
                        + [str(a) for a in args],
                        input=stdin if stdin is not None else b"", capture_output=True,
                        timeout=TOOL_TIMEOUT_S)
    return cp


def test_redis_cli_one_shot(peer):
    def out(*args):
        cp = cli(peer, *args)
        assert cp.returncode == 0, (args, cp.stdout, cp.stderr)
        return cp.stdout

    assert out("PING") == b"PONG\n"
    assert out("SET", "a", "b") == b"OK\n"
    assert out("GET", "a") == b"b\n"
    assert out("GET", "missing") == b"\n"
    assert out("INCR", "n") == b"1\n"
    assert out("INCRBY", "n", "41") == b"42\n"
    assert out("MSET", "x", "1", "y", "2") == b"OK\n"
    assert out("MGET", "x", "nope", "y") == b"1\n\n2\n"
    assert out("EXISTS", "a", "x", "nope") == b"2\n"
    assert out("DBSIZE") == b"4\n"
    assert out("SET", "sp", "hello world") == b"OK\n"
    assert out("GET", "sp") == b"hello world\n"
    assert out("DEL", "sp", "nope") == b"1\n"
    assert sorted(out("KEYS", "*").split()) == [b"a", b"n", b"x", b"y"]
    assert sorted(out("--scan", "--pattern", "*").split()) == [b"a", b"n", b"x", b"y"]
    assert b"# Server" in out("INFO")
    assert out("ECHO", "hi") == b"hi\n"
    assert out("FLUSHDB") == b"OK\n"
    assert out("DBSIZE") == b"0\n"


def test_redis_cli_reports_errors(peer):
    cp = cli(peer, "NOSUCHCMD", "x")
    assert b"ERR unknown command 'NOSUCHCMD'" in cp.stdout + cp.stderr
    cp = cli(peer, "GET")
    assert b"ERR wrong number of arguments for 'get' command" in cp.stdout + cp.stderr
    assert cli(peer, "PING").stdout == b"PONG\n"


def test_redis_cli_interactive_via_stdin(peer):
    script = b"SET a b\nGET a\nINCR c\nINCR c\nMGET a zz c\nGET zz\nPING\nDBSIZE\nDEL a\nEXISTS a\n"
    cp = cli(peer, stdin=script)
    assert cp.returncode == 0, (cp.stdout, cp.stderr)
    assert cp.stdout == b"OK\nb\n1\n2\nb\n\n2\n\nPONG\n2\n1\n0\n", cp.stdout


def test_redis_cli_pipe_mode(peer):
    """redis-cli --pipe sends raw RESP in bulk and checks the reply count."""
    n = 2000
    payload = b"".join(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$1\r\nv\r\n"
                       % (len(b"pk%d" % i), b"pk%d" % i) for i in range(n))
    cp = cli(peer, "--pipe", stdin=payload)
    assert cp.returncode == 0, (cp.stdout, cp.stderr)
    assert b"errors: 0, replies: %d" % n in cp.stdout + cp.stderr, cp.stdout + cp.stderr
    assert cli(peer, "DBSIZE").stdout == b"%d\n" % n


def test_redis_benchmark(peer):
    cp = subprocess.run([_tool("redis-benchmark"), "-h", "127.0.0.1", "-p", str(peer.port),
                         "-c", "50", "-n", "20000", "-t", "set,get,incr,mset,ping_mbulk", "-q"],
                        stdin=subprocess.DEVNULL, capture_output=True, timeout=900)
    text = (cp.stdout + cp.stderr).decode(errors="replace")
    assert cp.returncode == 0, text
    assert "error" not in text.lower(), text
    for name in ("SET", "GET", "INCR", "MSET", "PING_MBULK"):
        assert f"{name}:" in text or f"{name} " in text, (name, text)
    assert peer.running()
    with peer.line() as c:
        assert c.request(b"PING") == b"PONG\r\n"
        assert c.request(b"EXISTS key:__rand_int__ counter:__rand_int__") == b"EXISTS 2\r\n"
