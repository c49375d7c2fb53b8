# SPDX-License-Identifier: MIT
"""Line protocol (protocol.md §1-§4) over real sockets, byte for byte."""

import random
import re
import socket
import threading
import time

import pytest

from conftest import (IO_TIMEOUT_S, LOOPBACK, SEMVER_RE, ConnectionClosed, LineClient,
                      free_port, wait_until)

LINE_MAX = 1024 * 1024
ZERO_HASH = b"0" * 64


def settle(c, n=1):
    """Waits until the server counts exactly n active connections (earlier closes processed)."""
    wait_until(lambda: c.stats()[1]["active_connections"] == str(n), 30,
               f"active_connections == {n}")


def E(msg):
    """The exact bytes of an error response."""
    return b"ERROR " + msg.encode() + b"\r\n"


# --------------------------------------------------------------------------------------------
# §3 conformance examples, in the order the spec lists them


def test_conformance_examples(lc):
    steps = [
        (b"SET k v w", b"OK\r\n"),
        (b"GET k", b"VALUE v w\r\n"),
        (b"GET  k", E("GET command accepts only one argument")),
        (b"get", E("GET command requires arguments")),
        (b"foo bar", E("Unknown command: foo")),
        (b'SET e ""', b"OK\r\n"),
        (b"GET e", b'VALUE ""\r\n'),
        (b"INC n", b"VALUE 1\r\n"),
        (b"INC n 5", b"VALUE 6\r\n"),
        (b"APPEND n x", b"VALUE 6x\r\n"),
        (b"INC n", E("Value for key 'n' is not a valid number")),
        (b"EXISTS n n z", b"EXISTS 2\r\n"),
        (b"SET key a\tb", b"OK\r\n"),
        (b"GET key", b"VALUE a\tb\r\n"),
        (b"SET k\tx v", E("Invalid character: tab character not allowed in key")),
    ]
    for req, want in steps:
        assert lc.request(req) == want, req
    assert lc.request_lines(b"MGET n zz", 3) == [b"VALUES 1\r\n", b"n 6x\r\n", b"zz NOT_FOUND\r\n"]
    assert lc.request(b"MGET y z") == b"NOT_FOUND\r\n"
    lc.assert_no_data()


# --------------------------------------------------------------------------------------------
# §1 framing


def test_lf_and_crlf_terminators(lc):
    lc.send(b"SET a 1\nGET a\nGET a\r\n")
    assert lc.read_lines(3) == [b"OK\r\n", b"VALUE 1\r\n", b"VALUE 1\r\n"]


def test_bare_cr_is_data(lc):
    assert lc.request(b"SET cr a\rb") == b"OK\r\n"
    assert lc.request(b"GET cr") == b"VALUE a\rb\r\n"


def test_trimming(lc):
    assert lc.request(b"  \t SET t  x y \t ") == b"OK\r\n"
    # value is everything after the key's separating space: " x y" (leading space kept,
    # trailing whitespace trimmed with the line)
    assert lc.request(b"GET t") == b"VALUE  x y\r\n"
    assert lc.request(b"\v\fGET t\v\f") == b"VALUE  x y\r\n"
    assert lc.request(b"PREPEND t Hello ") == b"VALUE Hello x y\r\n"


def test_empty_command_keeps_connection(lc):
    assert lc.request(b"") == E("Empty command")
    assert lc.request(b"   \t  ") == E("Empty command")
    lc.send(b"\n")
    assert lc.read_line() == E("Empty command")
    assert lc.request(b"PING") == b"PONG\r\n"


def test_command_words_case_insensitive_keys_case_sensitive(lc):
    assert lc.request(b"sEt Key Val") == b"OK\r\n"
    assert lc.request(b"get Key") == b"VALUE Val\r\n"
    assert lc.request(b"GET key") == b"NOT_FOUND\r\n"
    assert lc.request(b"Get KEY") == b"NOT_FOUND\r\n"


def test_tab_in_command_word(lc):
    assert lc.request(b"GET\tk") == E("Invalid character: tab character not allowed in command")
    assert lc.request(b"SET\tk v") == E("Invalid character: tab character not allowed in command")


def test_unknown_commands_echo_word_as_typed(lc):
    assert lc.request(b"foo") == E("Unknown command: foo")
    assert lc.request(b"FooBar baz qux") == E("Unknown command: FooBar")
    assert lc.request(b"VERSION x") == E("Unknown command: VERSION")
    assert lc.request(b"SHUTDOWN x") == E("Unknown command: SHUTDOWN")
    assert lc.request(b"PING") == b"PONG\r\n"


@pytest.mark.parametrize("word", ["GET", "SET", "DEL", "DELETE", "INC", "DEC", "INCR", "DECR",
                                  "APPEND", "PREPEND", "MGET", "MSET", "ECHO", "EXISTS", "SYNC",
                                  "REPLICATE"])
def test_command_requires_arguments(lc, word):
    assert lc.request(word.lower().encode()) == E(f"{word} command requires arguments")
    assert lc.request(word.encode() + b"   ") == E(f"{word} command requires arguments")


def test_non_utf8_bytes(lc):
    assert lc.request(b"SET \xff\xfe \x80\xc3(") == b"OK\r\n"
    assert lc.request(b"GET \xff\xfe") == b"VALUE \x80\xc3(\r\n"
    assert lc.request(b"EXISTS \xff\xfe") == b"EXISTS 1\r\n"


def test_pipelining_1000_requests_in_one_write(lc):
    reqs, want = [], []
    for i in range(250):
        reqs += [b"SET p%d v%d" % (i, i), b"GET p%d" % i, b"INC c", b"GET nope%d" % i]
        want += [b"OK\r\n", b"VALUE v%d\r\n" % i, b"VALUE %d\r\n" % (i + 1), b"NOT_FOUND\r\n"]
    assert len(reqs) == 1000
    lc.send(b"".join(r + b"\r\n" for r in reqs))
    got = lc.read_lines(1000, timeout_s=120)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"response {i} to {reqs[i]!r}"
    lc.assert_no_data()


def test_line_of_exactly_1_mib_accepted(lc):
    # "SET big " + value + "\n" == 1048576 bytes
    value = b"v" * (LINE_MAX - len(b"SET big ") - 1)
    line = b"SET big " + value + b"\n"
    assert len(line) == LINE_MAX
    lc.send(line)
    assert lc.read_line(timeout_s=60) == b"OK\r\n"
    assert lc.request(b"GET big", timeout_s=60) == b"VALUE " + value + b"\r\n"
    # same limit with a CRLF terminator (both bytes count)
    value2 = b"w" * (LINE_MAX - len(b"SET big2 ") - 2)
    line2 = b"SET big2 " + value2 + b"\r\n"
    assert len(line2) == LINE_MAX
    lc.send(line2)
    assert lc.read_line(timeout_s=60) == b"OK\r\n"
    assert lc.request(b"EXISTS big big2") == b"EXISTS 2\r\n"


def _expect_line_too_long_and_close(c):
    try:
        got = c.read_line(timeout_s=60)
    except ConnectionClosed as exc:
        pytest.fail(f"connection closed without 'ERROR line too long': {exc}")
    assert got == E("line too long")
    rest = c.read_until_closed(timeout_s=60)
    assert rest == b"", f"bytes after 'ERROR line too long': {rest[:200]!r}"


def test_line_of_1_mib_plus_1_rejected_and_closed(peer):
    with peer.line() as c:
        assert c.request(b"SET before 1") == b"OK\r\n"
        value = b"v" * (LINE_MAX - len(b"SET big ") - 1 + 1)
        line = b"SET big " + value + b"\n"
        assert len(line) == LINE_MAX + 1
        try:
            c.send(line)
        except (BrokenPipeError, ConnectionResetError):
            pass
        _expect_line_too_long_and_close(c)
    with peer.line() as c:
        assert c.request(b"EXISTS before big") == b"EXISTS 1\r\n"


def test_unterminated_flood_rejected_at_limit(peer):
    """10 MiB without a newline: the server stops at 1 MiB, answers, closes."""
    with peer.line() as c:
        chunk = b"x" * 65536
        try:
            for _ in range(160):
                c.send(chunk)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass
        _expect_line_too_long_and_close(c)
    with peer.line() as c:
        assert c.request(b"PING") == b"PONG\r\n"


def test_data_after_last_newline_at_eof(lc):
    lc.send(b"SET a 1\nGET a")
    lc.shutdown_write()
    assert lc.read_lines(2) == [b"OK\r\n", b"VALUE 1\r\n"]
    lc.assert_closed()


def test_eof_after_complete_lines_closes(lc):
    lc.send(b"PING\r\n")
    lc.shutdown_write()
    assert lc.read_line() == b"PONG\r\n"
    lc.assert_closed()


def test_quit(peer):
    with peer.line() as c:
        c.send(b"QUIT\r\nPING\r\n")
        assert c.read_line() == b"OK\r\n"
        c.assert_closed()
    with peer.line() as c:
        assert c.request(b"quit") == b"OK\r\n"
        c.assert_closed()


# --------------------------------------------------------------------------------------------
# §3 commands


def test_get(lc):
    assert lc.request(b"GET missing") == b"NOT_FOUND\r\n"
    assert lc.request(b"SET g hello world") == b"OK\r\n"
    assert lc.request(b"GET g") == b"VALUE hello world\r\n"
    assert lc.request(b"GET g extra") == E("GET command accepts only one argument")
    assert lc.request(b"GET  g") == E("GET command accepts only one argument")
    assert lc.request(b"GET g\tx") == E("Invalid character: tab character not allowed in key")


def test_set(lc):
    assert lc.request(b"SET k") == E("SET command requires a key and value")
    assert lc.request(b"SET  v") == E("SET command key cannot be empty")
    assert lc.request(b"SET k\tx v") == E("Invalid character: tab character not allowed in key")
    assert lc.request(b"SET k  two  spaces\tand tab") == b"OK\r\n"
    assert lc.request(b"GET k") == b"VALUE  two  spaces\tand tab\r\n"
    assert lc.request(b"SET k new") == b"OK\r\n"
    assert lc.request(b"GET k") == b"VALUE new\r\n"
    assert lc.request(b"SET k *") == b"OK\r\n"
    assert lc.request(b"GET k") == b"VALUE *\r\n"


def test_del_and_delete(lc):
    assert lc.request(b"DEL d") == b"NOT_FOUND\r\n"
    assert lc.request(b"SET d 1") == b"OK\r\n"
    assert lc.request(b"DEL d") == b"DELETED\r\n"
    assert lc.request(b"DEL d") == b"NOT_FOUND\r\n"
    assert lc.request(b"SET d 2") == b"OK\r\n"
    assert lc.request(b"delete d") == b"DELETED\r\n"
    assert lc.request(b"DELETE d") == b"NOT_FOUND\r\n"
    assert lc.request(b"GET d") == b"NOT_FOUND\r\n"
    assert lc.request(b"DEL a b") == E("DELETE command accepts only one argument")
    assert lc.request(b"DELETE a b") == E("DELETE command accepts only one argument")
    assert lc.request(b"DEL  a") == E("DELETE command accepts only one argument")
    assert lc.request(b"DEL a\tb") == E("Invalid character: tab character not allowed in key")


def test_inc_dec(lc):
    assert lc.request(b"INC n") == b"VALUE 1\r\n"
    assert lc.request(b"INC n 5") == b"VALUE 6\r\n"
    assert lc.request(b"DEC n 2") == b"VALUE 4\r\n"
    assert lc.request(b"DEC n") == b"VALUE 3\r\n"
    assert lc.request(b"INCR n -10") == b"VALUE -7\r\n"
    assert lc.request(b"DECR n -7") == b"VALUE 0\r\n"
    assert lc.request(b"DEC fresh") == b"VALUE -1\r\n"
    assert lc.request(b"INCR fresh2") == b"VALUE 1\r\n"
    assert lc.request(b"INC n 3 junk more") == b"VALUE 3\r\n"
    assert lc.request(b"INC n\t4") == b"VALUE 7\r\n"
    assert lc.request(b"GET n") == b"VALUE 7\r\n"
    assert lc.request(b"INC 5") == E("INC command requires a key")
    assert lc.request(b"DEC 5") == E("DEC command requires a key")
    assert lc.request(b"INC n abc") == E("INC command amount must be a valid number")
    assert lc.request(b"DEC n 1.5") == E("DEC command amount must be a valid number")
    assert lc.request(b"INC n 9223372036854775808") == E("INC command amount must be a valid number")
    assert lc.request(b"GET n") == b"VALUE 7\r\n"


def test_inc_dec_not_a_number_and_overflow(lc):
    assert lc.request(b"SET s abc") == b"OK\r\n"
    assert lc.request(b"INC s") == E("Value for key 's' is not a valid number")
    assert lc.request(b"DEC s 2") == E("Value for key 's' is not a valid number")
    assert lc.request(b"GET s") == b"VALUE abc\r\n"
    assert lc.request(b"SET max 9223372036854775807") == b"OK\r\n"
    assert lc.request(b"INC max") == E("increment or decrement would overflow")
    assert lc.request(b"GET max") == b"VALUE 9223372036854775807\r\n"
    assert lc.request(b"DEC max 9223372036854775807") == b"VALUE 0\r\n"
    assert lc.request(b"SET min -9223372036854775808") == b"OK\r\n"
    assert lc.request(b"DEC min") == E("increment or decrement would overflow")
    assert lc.request(b"INC min -1") == E("increment or decrement would overflow")
    assert lc.request(b"GET min") == b"VALUE -9223372036854775808\r\n"
    assert lc.request(b"INC min 9223372036854775807") == b"VALUE -1\r\n"


def test_append_prepend(lc):
    assert lc.request(b"APPEND a x") == b"VALUE x\r\n"
    assert lc.request(b"APPEND a y z") == b"VALUE xy z\r\n"
    assert lc.request(b"PREPEND a <") == b"VALUE <xy z\r\n"
    assert lc.request(b"PREPEND new Hello ") == b"VALUE Hello\r\n"
    assert lc.request(b"GET a") == b"VALUE <xy z\r\n"
    for w in ("APPEND", "PREPEND"):
        assert lc.request(f"{w} k".encode()) == E(f"{w} command requires a key and value")
        assert lc.request(f"{w}  v".encode()) == E(f"{w} command key cannot be empty")
        assert lc.request(f"{w} k\tx v".encode()) == E(
            "Invalid character: tab character not allowed in key")


def test_mget_mset(lc):
    assert lc.request(b"MSET a 1 b 2 c 3") == b"OK\r\n"
    assert lc.request_lines(b"MGET a b c", 4) == [b"VALUES 3\r\n", b"a 1\r\n", b"b 2\r\n",
                                                  b"c 3\r\n"]
    assert lc.request_lines(b"MGET x\tb  y", 4) == [b"VALUES 1\r\n", b"x NOT_FOUND\r\n",
                                                   b"b 2\r\n", b"y NOT_FOUND\r\n"]
    assert lc.request(b"MGET x y") == b"NOT_FOUND\r\n"
    assert lc.request(b"MSET a 1 b") == E(
        "MSET command requires an even number of arguments (key-value pairs)")
    assert lc.request(b"MSET a\t9") == b"OK\r\n"
    assert lc.request(b"GET a") == b"VALUE 9\r\n"
    lc.assert_no_data()


def test_scan(lc):
    assert lc.request(b"SCAN") == b"KEYS 0\r\n"
    keys = [b"b", b"a", b"ab", b"aa", b"B", b"\xc3\xa9", b"a*", b"*x", b"zz"]
    for k in keys:
        assert lc.request(b"SET " + k + b" 1") == b"OK\r\n"
    srt = sorted(keys)
    assert lc.request_lines(b"SCAN", 1 + len(keys)) == [b"KEYS %d\r\n" % len(keys)] + [
        k + b"\r\n" for k in srt]
    assert lc.request_lines(b"SCAN a", 5) == [b"KEYS 4\r\n", b"a\r\n", b"a*\r\n", b"aa\r\n",
                                             b"ab\r\n"]
    assert lc.request_lines(b"SCAN *", 2) == [b"KEYS 1\r\n", b"*x\r\n"]
    assert lc.request(b"SCAN q") == b"KEYS 0\r\n"
    assert lc.request(b"SCAN a b") == E("SCAN command accepts only one argument")
    assert lc.request(b"SCAN a\tb") == E("Invalid character: tab character not allowed in prefix")
    lc.assert_no_data()


def test_exists(lc):
    assert lc.request(b"MSET a 1 b 2") == b"OK\r\n"
    assert lc.request(b"EXISTS a") == b"EXISTS 1\r\n"
    assert lc.request(b"EXISTS a b c") == b"EXISTS 2\r\n"
    assert lc.request(b"EXISTS a\ta  a") == b"EXISTS 3\r\n"
    assert lc.request(b"EXISTS zz") == b"EXISTS 0\r\n"


def test_dbsize(lc):
    assert lc.request(b"DBSIZE") == b"DBSIZE 0\r\n"
    assert lc.request(b"MSET a 1 b 2") == b"OK\r\n"
    assert lc.request(b"dbsize") == b"DBSIZE 2\r\n"
    assert lc.request(b"DEL a") == b"DELETED\r\n"
    assert lc.request(b"DBSIZE") == b"DBSIZE 1\r\n"
    assert lc.request(b"DBSIZE x") == E("DBSIZE command does not accept any arguments")


def test_ping_echo(lc):
    assert lc.request(b"PING") == b"PONG\r\n"
    assert lc.request(b"ping hi") == b"PONG hi\r\n"
    assert lc.request(b"PING hello  world") == b"PONG hello  world\r\n"
    assert lc.request(b"PING  two") == b"PONG  two\r\n"
    assert lc.request(b"PING a\tb") == E("Invalid character: tab character not allowed in message")
    assert lc.request(b"ECHO hi there") == b"ECHO hi there\r\n"
    assert lc.request(b"echo  x") == b"ECHO  x\r\n"
    assert lc.request(b"ECHO a\tb") == E("Invalid character: tab character not allowed in message")


def test_memory(lc):
    got = lc.request(b"MEMORY")
    assert re.fullmatch(rb"MEMORY \d+\r\n", got), got
    assert lc.request(b"MEMORY x") == E("MEMORY command does not accept any arguments")


def test_truncate_and_flushdb(lc):
    assert lc.request(b"MSET a 1 b 2 c 3") == b"OK\r\n"
    assert lc.request(b"TRUNCATE") == b"OK\r\n"
    assert lc.request(b"DBSIZE") == b"DBSIZE 0\r\n"
    assert lc.request(b"MSET a 1 b 2") == b"OK\r\n"
    assert lc.request(b"flushdb all of it please") == b"OK\r\n"
    assert lc.request(b"DBSIZE") == b"DBSIZE 0\r\n"
    assert lc.request(b"GET a") == b"NOT_FOUND\r\n"
    assert lc.request(b"SET a 3") == b"OK\r\n"
    assert lc.request(b"truncate x") == b"OK\r\n"
    assert lc.request(b"SCAN") == b"KEYS 0\r\n"


def test_version(lc):
    got = lc.request(b"VERSION")
    assert got.startswith(b"VERSION ") and got.endswith(b"\r\n")
    assert SEMVER_RE.fullmatch(got[8:-2]), got


def test_hash(lc):
    assert lc.request(b"HASH") == b"HASH " + ZERO_HASH + b"\r\n"
    assert lc.request(b"HASH *") == b"HASH * " + ZERO_HASH + b"\r\n"
    assert lc.request(b"MSET user:1 a user:2 b other c") == b"OK\r\n"
    full = lc.request(b"HASH")
    m = re.fullmatch(rb"HASH ([0-9a-f]{64})\r\n", full)
    assert m and m.group(1) != ZERO_HASH, full
    assert lc.request(b"HASH *") == b"HASH * " + m.group(1) + b"\r\n"
    assert lc.request(b"HASH") == full  # deterministic
    pre = lc.request(b"HASH user:")
    m2 = re.fullmatch(rb"HASH user: ([0-9a-f]{64})\r\n", pre)
    assert m2 and m2.group(1) not in (ZERO_HASH, m.group(1)), pre
    assert lc.request(b"HASH nomatch") == b"HASH nomatch " + ZERO_HASH + b"\r\n"
    assert lc.request(b"SET user:3 c") == b"OK\r\n"
    assert lc.request(b"HASH user:") != pre
    assert lc.request(b"HASH a b") == E("HASH command accepts only one argument")
    assert lc.request(b"HASH a\tb") == E("Invalid character: tab character not allowed in key")


def test_sync_argument_errors(lc):
    closed = 1  # nothing listens on port 1 of the loopback address
    assert lc.request(b"SYNC 127.0.0.1") == E("SYNC requires <port> as the second argument")
    assert lc.request(b"SYNC 127.0.0.1 70000") == E(
        "Invalid port: must be an integer in 0..=65535")
    assert lc.request(b"SYNC 127.0.0.1 abc") == E("Invalid port: must be an integer in 0..=65535")
    assert lc.request(b"SYNC 127.0.0.1 %d --bogus" % closed) == E("Unknown option: --bogus")
    assert lc.request(b"SYNC 127.0.0.1 %d --full --full" % closed) == E(
        "Duplicate option: --full")
    assert lc.request(b"SYNC 127.0.0.1 %d --verify --full --verify" % closed) == E(
        "Duplicate option: --verify")
    assert lc.request(b"PING") == b"PONG\r\n"


def test_sync_failure_touches_nothing(make_peer):
    """A well-formed SYNC that cannot reach its remote answers ERROR and leaves the data as it
    was (SYNC itself is tested in test_sync.py)."""
    b = make_peer("b")
    closed = free_port()
    with b.line() as cb:
        assert cb.request(b"MSET k1 old onlyb x") == b"OK\r\n"
        reply = cb.request(b"SYNC 127.0.0.1 %d" % closed)
        assert reply == E("cannot connect to 127.0.0.1:%d: Connection refused" % closed), reply
        assert cb.request_lines(b"MGET k1 onlyb k2", 4) == [b"VALUES 2\r\n", b"k1 old\r\n",
                                                           b"onlyb x\r\n", b"k2 NOT_FOUND\r\n"]
        assert cb.request(b"PING") == b"PONG\r\n"


def test_replicate_when_disabled(lc):
    assert lc.request(b"REPLICATE status") == b"REPLICATION disabled\r\n"
    assert lc.request(b"replicate STATUS") == b"REPLICATION disabled\r\n"
    assert lc.request(b"REPLICATE bogus") == E("Unknown REPLICATE action: bogus")


def test_client_list_format(peer):
    others = [peer.line() for _ in range(3)]
    try:
        for o in others:
            assert o.request(b"PING") == b"PONG\r\n"
        with peer.line() as c:
            settle(c, 4)
            mine = "%s:%d" % c.sock.getsockname()
            for req in (b"CLIENT LIST", b"CLIENT", b"client list"):
                c.send(req + b"\r\n")
                assert c.read_line() == b"CLIENT LIST\r\n"
                lines = []
                while True:
                    ln = c.read_line()
                    if ln == b"END\r\n":
                        break
                    lines.append(ln)
                assert len(lines) == 4, lines
                addrs = set()
                for ln in lines:
                    m = re.fullmatch(rb"id=(\d+) addr=(127\.0\.0\.1:\d+) age=(\d+) idle=(\d+)\r\n",
                                     ln)
                    assert m, ln
                    addrs.add(m.group(2).decode())
                assert mine in addrs
                assert {"%s:%d" % o.sock.getsockname() for o in others} <= addrs
            assert c.request(b"CLIENT KILL x") == E("Unknown CLIENT subcommand")
    finally:
        for o in others:
            o.close()


# --------------------------------------------------------------------------------------------
# §4 STATS and INFO

STATS_NAMES = ["uptime_seconds", "uptime", "total_connections", "active_connections",
               "total_commands", "get_commands", "scan_commands", "ping_commands", "echo_commands",
               "flushdb_commands", "memory_commands", "clientlist_commands", "exists_commands",
               "dbsize_commands", "set_commands", "delete_commands", "numeric_commands",
               "string_commands", "bulk_commands", "stat_commands", "sync_commands",
               "hash_commands", "replicate_commands", "management_commands", "used_memory_kb"]


def test_stats_names_in_order(lc):
    pairs, d = lc.stats()
    names = [n for n, _ in pairs]
    assert names[:len(STATS_NAMES)] == STATS_NAMES
    for n, v in pairs:
        assert re.fullmatch(r"[a-z0-9_]+", n), n
        if n != "uptime":
            assert re.fullmatch(r"-?\d+(\.\d+)?", v), (n, v)
    assert re.fullmatch(r"\d+d \d+h \d+m \d+s", d["uptime"]), d["uptime"]


def test_stats_counting(peer):
    with peer.line() as c:
        _, s1 = c.stats()  # then the sentinel PING runs: ping +1, total +1
        reqs = [b"GET a", b"GET b", b"SCAN", b"PING", b"ECHO x", b"FLUSHDB", b"MEMORY",
                b"CLIENT LIST", b"EXISTS a", b"DBSIZE", b"SET a 1", b"SET b 2", b"MSET c 1 d 2",
                b"DEL a", b"DELETE b", b"INC n", b"DEC n", b"APPEND s x", b"PREPEND s y",
                b"MGET c d", b"TRUNCATE", b"HASH", b"INFO"]
        # CLIENT LIST ends with END; MGET answers 3 lines; INFO is open-ended: use the sentinel
        for r in reqs[:-1]:
            c.send(r + b"\r\n")
            first = c.read_line()
            if r == b"CLIENT LIST":
                while first != b"END\r\n":
                    first = c.read_line()
            elif r == b"MGET c d":
                c.read_lines(2)
            elif r == b"SCAN":
                n = int(first.split()[1])
                c.read_lines(n)
        c.request_open_ended(b"INFO")  # INFO, then the sentinel PING
        _, s2 = c.stats()
    delta = {k: int(s2[k]) - int(s1[k]) for k in s1 if k.endswith("_commands")}
    # commands between the two STATS snapshots: sentinel PING after STATS #1, the list above,
    # the sentinel PING after INFO, and STATS #2 itself
    assert delta["total_commands"] == 1 + len(reqs) + 1 + 1, delta
    want = {"get_commands": 2, "scan_commands": 1, "ping_commands": 3, "echo_commands": 1,
            "flushdb_commands": 1, "memory_commands": 1, "clientlist_commands": 1,
            "exists_commands": 1, "dbsize_commands": 1, "set_commands": 2,
            "delete_commands": 2, "numeric_commands": 2, "string_commands": 2,
            "bulk_commands": 3, "stat_commands": 2, "sync_commands": 0, "hash_commands": 1,
            "replicate_commands": 0}
    got = {k: delta[k] for k in want}
    assert got == want


def test_stats_connections(peer):
    with peer.line() as c:
        settle(c)
        _, s1 = c.stats()
        extra = [peer.line() for _ in range(5)]
        for e in extra:
            assert e.request(b"PING") == b"PONG\r\n"
        _, s2 = c.stats()
        assert int(s2["total_connections"]) - int(s1["total_connections"]) == 5
        assert int(s2["active_connections"]) - int(s1["active_connections"]) == 5
        for e in extra:
            e.close()
        wait_until(lambda: c.stats()[1]["active_connections"] == s1["active_connections"],
                   30, "active_connections to drop back after closing 5 clients")


def test_info_required_lines(peer):
    with peer.line() as c:
        assert c.request(b"MSET a 1 b 2 c 3") == b"OK\r\n"
        version = c.request(b"VERSION")[8:-2].decode()
        before = int(time.time())
        lines = c.request_open_ended(b"INFO")
        after = int(time.time())
    assert lines[0] == b"INFO"
    pairs = [ln.decode().split(":", 1) for ln in lines[1:]]
    for p in pairs:
        assert len(p) == 2 and re.fullmatch(r"[a-z0-9_]+", p[0]), p
    names = [n for n, _ in pairs]
    assert names[:5] == ["version", "uptime_seconds", "uptime", "server_time_unix", "db_keys"]
    d = dict(pairs)
    assert d["version"] == version
    assert re.fullmatch(r"\d+", d["uptime_seconds"])
    assert re.fullmatch(r"\d+d \d+h \d+m \d+s", d["uptime"])
    assert before - 2 <= int(d["server_time_unix"]) <= after + 2
    assert d["db_keys"] == "3"
    assert peer.name in d.values(), "INFO should report the node id"
    assert len(names) == len(set(names)), "duplicate INFO names"


# --------------------------------------------------------------------------------------------
# Robustness


def test_random_garbage_never_disturbs_a_good_client(peer):
    rng = random.Random(20240611)
    tokens = [b"GET", b"SET", b"DEL", b"INC", b"DEC", b"MGET", b"MSET", b"APPEND", b"SCAN",
              b"PING", b"ECHO", b"EXISTS", b"HASH", b"CLIENT", b"STATS", b"INFO", b"DBSIZE",
              b"*", b"$", b"*3", b"$5", b"*-1", b"$-1", b"*99999999999", b"$2147483648", b":",
              b"+OK", b"-ERR", b"\r\n", b"\n", b"\r", b"\t", b" ", b"  ", b"\x00", b"\xff",
              b"9223372036854775807", b"-9223372036854775809", b"k", b"v"]
    payloads = []
    for i in range(300):
        parts = []
        for _ in range(rng.randint(1, 60)):
            if rng.random() < 0.5:
                parts.append(rng.choice(tokens))
            else:
                parts.append(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64))))
        data = b"".join(parts)
        if i % 3 == 0:
            data = b"*" + data
        payloads.append(data)

    errors = []
    stop = threading.Event()

    def good_client():
        try:
            with peer.line() as c:
                i = 0
                while not stop.is_set() or i < 50:
                    assert c.request(b"SET good:%d val%d" % (i, i)) == b"OK\r\n"
                    assert c.request(b"GET good:%d" % i) == b"VALUE val%d\r\n" % i
                    i += 1
        except Exception as exc:  # noqa: BLE001
            errors.append(f"good client: {exc!r}")

    def garbage(chunk):
        held = []
        for j, data in enumerate(chunk):
            try:
                s = socket.create_connection((LOOPBACK, peer.port), timeout=IO_TIMEOUT_S)
                s.settimeout(5)
                try:
                    s.sendall(data)
                    if j % 4 == 0:
                        s.shutdown(socket.SHUT_WR)
                    s.setblocking(False)
                    try:
                        s.recv(65536)
                    except (BlockingIOError, OSError):
                        pass
                except OSError:
                    pass
                if j % 5 == 0:
                    held.append(s)  # leave some half-parsed connections open until the end
                elif j % 5 == 1:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00"
                                 b"\x00\x00\x00\x00")
                    s.close()  # abortive close (RST)
                else:
                    s.close()
            except OSError as exc:
                errors.append(f"garbage connect: {exc!r}")
        for s in held:
            s.close()

    good = threading.Thread(target=good_client)
    good.start()
    workers = [threading.Thread(target=garbage, args=(payloads[k::4],)) for k in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(300)
    stop.set()
    good.join(300)
    assert not good.is_alive() and not any(w.is_alive() for w in workers)
    assert not errors, errors
    assert peer.running()
    with peer.line() as c:
        assert c.request(b"PING") == b"PONG\r\n"
        assert c.request(b"GET good:0") == b"VALUE val0\r\n"


def test_1000_concurrent_connections(peer):
    n = 1000
    conns = []
    try:
        for i in range(n):
            conns.append(LineClient(peer.port, timeout_s=60))
        for i, c in enumerate(conns):
            c.send(b"SET conn:%d value-%d\r\n" % (i, i))
        for c in conns:
            assert c.read_line() == b"OK\r\n"
        for i, c in enumerate(conns):
            c.send(b"GET conn:%d\r\n" % i)
        for i, c in enumerate(conns):
            assert c.read_line() == b"VALUE value-%d\r\n" % i
        _, st = conns[0].stats()
        assert int(st["active_connections"]) >= n
        assert conns[-1].request(b"DBSIZE") == b"DBSIZE %d\r\n" % n
    finally:
        for c in conns:
            c.close()
    with peer.line() as c:
        wait_until(lambda: int(c.stats()[1]["active_connections"]) == 1, 60,
                   "all 1000 connections to be gone")


def test_client_that_never_reads_is_bounded(peer):
    """A client pipelining big replies without reading them must not stall others nor make the
    server's memory grow without bound: it is paused (not read) or disconnected."""
    big = b"b" * (1024 * 1024 - 64)
    with peer.line() as c:
        assert c.request(b"SET big " + big, timeout_s=60) == b"OK\r\n"
    rss0 = peer.rss_kb()

    slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    slow.connect((LOOPBACK, peer.port))
    slow.settimeout(3)
    state = {"sent": 0, "ended": None}
    large_set = b"SET slow " + b"s" * (256 * 1024) + b"\r\n"

    def writer():
        try:
            for i in range(1000):
                slow.sendall(b"GET big\r\n")
                if i % 10 == 0:
                    slow.sendall(large_set)
                state["sent"] = i + 1
            state["ended"] = "sent everything"
        except socket.timeout:
            state["ended"] = "blocked (server stopped reading)"
        except OSError as exc:
            state["ended"] = f"disconnected ({exc!r})"

    t = threading.Thread(target=writer)
    t.start()
    peak = [rss0]
    try:
        with peer.line() as other:
            i = 0
            while t.is_alive() or i < 20:
                assert other.request(b"SET other:%d x" % i) == b"OK\r\n"
                assert other.request(b"GET other:%d" % i) == b"VALUE x\r\n"
                peak[0] = max(peak[0], peer.rss_kb())
                i += 1
            t.join(60)
            assert not t.is_alive()

            # The unread backlog must stay bounded for a while, with no client reading it.
            def sample():
                peak[0] = max(peak[0], peer.rss_kb())
                return False
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                sample()
                assert other.request(b"PING") == b"PONG\r\n"
            assert peak[0] < 512 * 1024, f"server RSS peaked at {peak[0]} KiB (start {rss0} KiB)"
            assert other.request(b"GET other:0") == b"VALUE x\r\n"
    finally:
        slow.close()
    assert state["ended"] is not None
    with peer.line() as c:
        wait_until(lambda: int(c.stats()[1]["active_connections"]) == 1, 60,
                   "the slow client to be gone after it closed")
