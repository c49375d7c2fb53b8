# SPDX-License-Identifier: MIT
"""Durability: restarts, kill -9 after acknowledged writes, SHUTDOWN, signals, bad data files."""

import random
import signal
import time

import pytest


def _fill(c, n, prefix=b"key"):
    """Pipelines n SETs in one write and reads all n acknowledgements."""
    blob = b"".join(b"SET %s:%d value-%d-%s\r\n" % (prefix, i, i, b"x" * (i % 50))
                    for i in range(n))
    c.send(blob)
    got = c.read_lines(n, timeout_s=300)
    bad = [(i, g) for i, g in enumerate(got) if g != b"OK\r\n"]
    assert not bad, bad[:5]


def _check(c, n, prefix=b"key"):
    batch = 200
    for start in range(0, n, batch):
        ids = range(start, min(n, start + batch))
        c.send(b"MGET " + b" ".join(b"%s:%d" % (prefix, i) for i in ids) + b"\r\n")
        lines = c.read_lines(1 + len(ids), timeout_s=120)
        assert lines[0] == b"VALUES %d\r\n" % len(ids), lines[:3]
        for i, ln in zip(ids, lines[1:]):
            assert ln == b"%s:%d value-%d-%s\r\n" % (prefix, i, i, b"x" * (i % 50))


def test_data_survives_sigterm_and_restart(make_peer):
    p = make_peer()
    with p.line() as c:
        assert c.request(b"SET a hello world") == b"OK\r\n"
        assert c.request(b"MSET b 2 c 3") == b"OK\r\n"
        assert c.request(b"INC n 41") == b"VALUE 41\r\n"
        assert c.request(b"APPEND c x") == b"VALUE 3x\r\n"
        assert c.request(b"DEL b") == b"DELETED\r\n"
        h = c.request(b"HASH")
    p.stop()
    assert p.db_path.is_file()
    p.start()
    with p.line() as c:
        assert c.request(b"GET a") == b"VALUE hello world\r\n"
        assert c.request(b"GET b") == b"NOT_FOUND\r\n"
        assert c.request(b"GET c") == b"VALUE 3x\r\n"
        assert c.request(b"INC n") == b"VALUE 42\r\n"
        assert c.request(b"DBSIZE") == b"DBSIZE 3\r\n"
        assert c.request(b"DEC n") == b"VALUE 41\r\n"
        assert c.request(b"HASH") == h
    with p.resp() as r:
        assert r.call_raw("GET", "a") == b"$11\r\nhello world\r\n"


@pytest.mark.parametrize("fsync", ["normal", "always"])
def test_acknowledged_writes_survive_kill_9(make_peer, fsync):
    n = 10000
    p = make_peer(conf={"fsync": fsync})
    with p.line() as c:
        _fill(c, n)
    p.kill()
    p.start()
    with p.line() as c:
        assert c.request(b"DBSIZE") == b"DBSIZE %d\r\n" % n
        _check(c, n)


def test_resp_acknowledged_writes_survive_kill_9(make_peer):
    p = make_peer()
    n = 2000
    with p.resp() as r:
        r.send(b"".join(r.encode("SET", f"r{i}", f"v{i}") for i in range(n)))
        for _ in range(n):
            assert r.read_reply_raw(timeout_s=120) == b"+OK\r\n"
        assert r.call_raw("DEL", "r0") == b":1\r\n"
        assert r.call_raw("INCRBY", "ctr", "7") == b":7\r\n"
    p.kill()
    p.start()
    with p.resp() as r:
        assert r.call("DBSIZE") == n
        assert r.call("GET", "r0") is None
        assert r.call("GET", f"r{n - 1}") == f"v{n - 1}".encode()
        assert r.call("GET", "ctr") == b"7"


def test_flush_survives_restart(make_peer):
    p = make_peer()
    with p.line() as c:
        assert c.request(b"MSET a 1 b 2") == b"OK\r\n"
        assert c.request(b"FLUSHDB") == b"OK\r\n"
        assert c.request(b"SET c 3") == b"OK\r\n"
    p.kill()
    p.start()
    with p.line() as c:
        assert c.request_lines(b"SCAN", 2) == [b"KEYS 1\r\n", b"c\r\n"]


@pytest.mark.parametrize("engine", ["memory", "rwlock", "kv"])
def test_memory_engine_starts_empty(make_peer, engine):
    p = make_peer(conf={"engine": engine})
    with p.line() as c:
        assert c.request(b"SET a 1") == b"OK\r\n"
        assert c.request(b"DBSIZE") == b"DBSIZE 1\r\n"
    p.stop()
    p.start()
    with p.line() as c:
        assert c.request(b"DBSIZE") == b"DBSIZE 0\r\n"
        assert c.request(b"GET a") == b"NOT_FOUND\r\n"
    assert not p.db_path.exists()


def test_garbage_data_file_refused_and_untouched(make_peer):
    p = make_peer(start=False)
    p.storage_path.mkdir(parents=True)
    rng = random.Random(7)
    garbage = bytes(rng.getrandbits(8) for _ in range(65536))
    p.db_path.write_bytes(garbage)
    status, log = p.start_expect_failure()
    assert status != 0, log
    assert "arborkv.db" in log, f"the error should name the data file:\n{log}"
    assert p.db_path.read_bytes() == garbage


def test_second_server_on_the_same_data_directory_is_refused(make_peer):
    """The data directory's lock file keeps a second server off, while the first one keeps
    serving; once the first has stopped the directory can be used again."""
    p = make_peer()
    with p.line() as c:
        assert c.request(b"SET a 1") == b"OK\r\n"
    q = make_peer(start=False, conf={"storage_path": str(p.storage_path)})
    status, log = q.start_expect_failure()
    assert status != 0, log
    assert "locked by another process" in log, log
    assert "arborkv.db" in log, f"the error should name the data file:\n{log}"
    with p.line() as c:
        assert c.request(b"SET b 2") == b"OK\r\n"
        assert c.request(b"GET a") == b"VALUE 1\r\n"
    p.stop()
    q.start()
    with q.line() as c:
        assert c.request(b"GET b") == b"VALUE 2\r\n"
        assert c.request(b"DBSIZE") == b"DBSIZE 2\r\n"


def test_shutdown_command(make_peer):
    p = make_peer()
    with p.line() as c, p.line() as other:
        assert c.request(b"SET durable yes") == b"OK\r\n"
        assert c.request(b"SHUTDOWN") == b"OK\r\n"
        c.assert_closed(timeout_s=30)
        assert other.read_until_closed(timeout_s=30) == b""
    assert p.wait_exit() == 0
    p.check_log()
    p.start()
    with p.line() as c:
        assert c.request(b"GET durable") == b"VALUE yes\r\n"


def test_shutdown_over_resp(make_peer):
    p = make_peer()
    with p.resp() as r:
        assert r.call_raw("SET", "k", "v") == b"+OK\r\n"
        r.send(r.encode("SHUTDOWN"))
        got = r.read_until_closed(timeout_s=30)
        assert got in (b"", b"+OK\r\n"), got
    assert p.wait_exit() == 0
    p.start()
    with p.resp() as r:
        assert r.call_raw("GET", "k") == b"$1\r\nv\r\n"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_exits_0_within_1s(make_peer, sig):
    p = make_peer()
    idle = [p.line() for _ in range(10)]
    try:
        with p.line() as c:
            _fill(c, 1000)
        t0 = time.monotonic()
        p.proc.send_signal(sig)
        try:
            status = p.proc.wait(timeout=30)
        except Exception:  # noqa: BLE001
            pytest.fail("server ignored the signal for 30 s")
        elapsed = time.monotonic() - t0
        p._record(status)
        assert status == 0
        assert elapsed <= 1.0, f"exit took {elapsed:.2f} s"
        for c in idle:
            assert c.read_until_closed(timeout_s=10) == b""
    finally:
        for c in idle:
            c.close()
    p.check_log()
    p.start()
    with p.line() as c:
        assert c.request(b"DBSIZE") == b"DBSIZE 1000\r\n"
        _check(c, 1000)


def test_restart_on_same_port_with_clients_connected(make_peer):
    p = make_peer()
    held = p.line()
    assert held.request(b"SET a 1") == b"OK\r\n"
    p.stop()
    held.close()
    p.start()  # must be able to bind the same port again right away
    with p.line() as c:
        assert c.request(b"GET a") == b"VALUE 1\r\n"


def test_storage_path_created(make_peer, tmp_path):
    deep = tmp_path / "deep" / "er" / "store"
    p = make_peer(conf={"storage_path": str(deep)})
    with p.line() as c:
        assert c.request(b"SET a 1") == b"OK\r\n"
    p.stop()
    assert (deep / "arborkv.db").is_file()


def test_kill_9_during_write_load_keeps_acknowledged(make_peer):
    """Writes acknowledged before a SIGKILL that lands mid-stream are all there afterwards."""
    p = make_peer()
    acked = []
    with p.line() as c:
        for i in range(3000):
            c.send(b"SET w%d %d\r\n" % (i, i))
            if i % 10 == 9:
                for j in range(i - 9, i + 1):
                    assert c.read_line() == b"OK\r\n"
                    acked.append(j)
            if i == 1500:
                p.kill()
                break
    p.start()
    with p.line() as c:
        for i in acked:
            assert c.request(b"GET w%d" % i) == b"VALUE %d\r\n" % i
