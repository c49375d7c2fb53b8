"""Merkle anti-entropy, basic repairs (docs/anti-entropy.md).

Peers with anti-entropy on (interval 1 s) repair what events never delivered: writes made before
a peer ever subscribed, and records changed behind the server's back in its SQLite file.
"""
import os
import re
import signal
import sqlite3

from conftest import (converged, info, info_int, line_request, lww_winners, wait_info,
                      wait_info_int, wait_until)

AE_ON = {"anti_entropy": {"enabled": True, "interval_seconds": 1}}
REPAIR_TIMEOUT_S = 90


def roots_equal(peers):
    roots = {p.name: info(p)["merkle_root"] for p in peers}
    return len(set(roots.values())) == 1 and roots


def hashes_equal(peers):
    hashes = {p.name: line_request(p, b"HASH") for p in peers}
    return len(set(hashes.values())) == 1 and hashes


def test_writes_made_before_a_peer_existed_are_repaired(make_broker, make_cluster):
    broker = make_broker()
    first = make_cluster(1, broker, names=["a"], conf_overrides=AE_ON)
    a = first[0]
    with a.line() as c:
        pipeline = b"".join(b"SET k%d v%d\r\n" % (i, i) for i in range(500))
        c.send(pipeline + b"DEL k7\r\nDEL k8\r\n")
        replies = c.read_lines(502)
    assert replies.count(b"OK\r\n") == 500 and replies[-2:] == [b"DELETED\r\n"] * 2

    # b joins afterwards: no broker session existed for it, so no event will ever reach it.
    cluster = make_cluster(1, broker, names=["b"], prefix=first.prefix,
                           conf_overrides=AE_ON, wait=False)
    b = cluster[0]
    peers = [a, b]
    wait_until(lambda: roots_equal(peers), REPAIR_TIMEOUT_S, "equal Merkle roots")
    wait_until(lambda: hashes_equal(peers), REPAIR_TIMEOUT_S, "equal HASH")
    data = converged(peers)
    assert len(data) == 498 and b"k7" not in data and data[b"k499"] == b"v499"
    assert info_int(b, "events_applied") == 0  # it was anti-entropy, not events
    assert info_int(b, "ae_records_applied") >= 500  # tombstones travel too
    assert info_int(a, "ae_sessions_completed") >= 1
    assert info_int(a, "ae_malformed") == 0 and info_int(b, "ae_malformed") == 0


def test_silent_divergence_in_the_database_file_is_repaired(make_broker, make_cluster):
    broker = make_broker()
    a, b = make_cluster(2, broker, names=["a", "b"], conf_overrides=AE_ON)
    with a.line() as c:
        c.send(b"".join(b"SET s%d x%d\r\n" % (i, i) for i in range(200)))
        assert c.read_lines(200) == [b"OK\r\n"] * 200
    want = converged([a, b])
    assert len(want) == 200

    # Behind b's back: a value changed (same ts, same op_id) and two records removed. Events can
    # never bring these back: nothing was written anywhere. "evil" sorts below "x10", so the
    # tie rule for equal (ts, op_id) (replication.md §1: the larger value wins) picks a's.
    b.stop()
    db = sqlite3.connect(b.db_path)
    with db:
        db.execute("UPDATE records SET value = X'6576696c' WHERE key = X'733130'")  # s10 -> evil
        db.execute("DELETE FROM records WHERE key IN (X'733131', X'733132')")  # s11, s12
    db.close()
    b.start()
    assert line_request(b, b"GET s10") == b"VALUE evil"

    wait_until(lambda: roots_equal([a, b]), REPAIR_TIMEOUT_S, "equal Merkle roots")
    assert converged([a, b], expected=want) == want
    assert line_request(b, b"GET s10") == b"VALUE x10"
    assert line_request(a, b"GET s10") == b"VALUE x10"


def test_repair_never_replaces_a_newer_record(make_broker, make_cluster):
    """Anti-entropy applies last-write-wins, never "the other side wins": the peer holding the
    newer record keeps it, and it spreads."""
    broker = make_broker()
    a, b = make_cluster(2, broker, names=["a", "b"], conf_overrides=AE_ON)
    with a.line() as c:
        assert c.request(b"SET k old") == b"OK\r\n"
        assert c.request(b"SET other x") == b"OK\r\n"
    converged([a, b], expected={"k": "old", "other": "x"})

    # b alone gets a newer version of k that no event announced (written behind its back, one
    # second after the one both hold).
    b.stop()
    db = sqlite3.connect(b.db_path)
    with db:
        (ts,) = db.execute("SELECT ts FROM records WHERE key = X'6b'").fetchone()
        db.execute("UPDATE records SET value = X'6e6577', ts = ? WHERE key = X'6b'",
                   (ts + 1_000_000_000,))
    db.close()
    b.start()

    wait_until(lambda: roots_equal([a, b]), REPAIR_TIMEOUT_S, "equal Merkle roots")
    assert converged([a, b], expected={"k": "new", "other": "x"})
    assert line_request(b, b"GET k") == b"VALUE new"
    assert info_int(a, "ae_records_applied") >= 1


def test_peers_with_another_tree_shape_refuse_to_compare(make_broker, make_cluster):
    broker = make_broker()
    a, b = make_cluster(2, broker, names=["a", "b"], conf_overrides=AE_ON,
                        per_peer={"b": {"conf": {"anti_entropy": {"fanout": 8}}}})
    # a (the smaller id) starts the sessions; b answers with its 8x4 shape.
    wait_info_int(a, "ae_sessions_failed", lambda v: v >= 1, timeout_s=REPAIR_TIMEOUT_S)
    assert "tree shapes differ" in a.log_text() or "has a 8x4 tree" in a.log_text()
    assert info_int(a, "ae_sessions_completed") == 0
    # Events still flow: the shapes only matter to anti-entropy.
    with a.line() as c:
        assert c.request(b"SET still works") == b"OK\r\n"
    converged([a, b], expected={"still": "works"})


def test_a_peer_that_stops_answering_fails_the_session_not_the_node(make_broker, make_cluster):
    """A session whose peer vanishes mid-way ends by timeout and counts as failed, never as
    completed; a later interval succeeds, and every session a started is counted exactly once."""
    broker = make_broker()
    # A long keep-alive: the broker must not drop the frozen b (a would stop starting sessions).
    a, b = make_cluster(2, broker, names=["a", "b"], conf_overrides=AE_ON,
                        repl={"keepalive_seconds": 600})
    wait_info_int(a, "ae_sessions_completed", lambda v: v >= 1, timeout_s=REPAIR_TIMEOUT_S)
    failed = info_int(a, "ae_sessions_failed")
    os.kill(b.pid, signal.SIGSTOP)  # b keeps its connections but answers nothing
    try:
        # b is a's only peer and a runs one session with it at a time: once one has failed, every
        # later session starts while b is frozen, so none completes until b resumes.
        first = wait_info(a, lambda d: int(d["ae_sessions_failed"]) > failed,
                          "a session with the frozen b failing", timeout_s=REPAIR_TIMEOUT_S)
        with a.line() as c:  # a keeps serving while its session waits and times out
            assert c.request(b"SET during freeze") == b"OK\r\n"
        wait_info_int(a, "ae_sessions_failed", lambda v: v > int(first["ae_sessions_failed"]),
                      timeout_s=REPAIR_TIMEOUT_S)
        assert info_int(a, "ae_sessions_completed") == int(first["ae_sessions_completed"])
    finally:
        os.kill(b.pid, signal.SIGCONT)
    assert re.search(r"ae: session with b failed after \d+ ms: no answer in time", a.log_text())
    done = info_int(a, "ae_sessions_completed")
    wait_info_int(a, "ae_sessions_completed", lambda v: v > done, timeout_s=REPAIR_TIMEOUT_S)
    # Each session ended once, as completed or failed (the failures stay counted after the
    # recovery), or is still running: one at most, with b.
    d = info(a)
    started, completed, failed_now, running = (
        int(d[f"ae_sessions_{k}"]) for k in ("started", "completed", "failed", "running"))
    assert started == completed + failed_now + running, d
    assert failed_now >= int(first["ae_sessions_failed"]) + 1 and running <= 1, d
    converged([a, b], expected={"during": "freeze"})
    wait_until(lambda: roots_equal([a, b]), REPAIR_TIMEOUT_S, "equal Merkle roots")


def test_events_lost_with_a_broker_restarted_without_persistence(make_broker, make_cluster):
    """The issue's scenario: C is stopped, the broker restarts without persistence (C's queue is
    gone), A and B take 1,000 writes and 100 deletes; C comes back and anti-entropy brings it to
    the same HASH, root and data as A and B, deletes included."""
    broker = make_broker(persistence=False)
    cluster = make_cluster(3, broker, names=["a", "b", "c"], conf_overrides=AE_ON)
    a, b, c = cluster
    c.stop()
    broker.restart()
    wait_until(lambda: all(info(p)["broker_state"] == "connected" for p in (a, b)), 60,
               "a and b reconnected")
    for peer, lo in ((a, 0), (b, 500)):
        with peer.line() as cl:
            cl.send(b"".join(b"SET key%d val%d\r\n" % (i, i) for i in range(lo, lo + 500)))
            assert cl.read_lines(500) == [b"OK\r\n"] * 500
    for peer, lo in ((a, 0), (b, 500)):
        with peer.line() as cl:
            cl.send(b"".join(b"DEL key%d\r\n" % i for i in range(lo, lo + 50)))
            assert cl.read_lines(50) == [b"DELETED\r\n"] * 50
    want = converged([a, b])
    assert len(want) == 900 and b"key0" not in want and b"key999" in want

    c.start()
    wait_until(lambda: roots_equal([a, b, c]), REPAIR_TIMEOUT_S, "equal Merkle roots")
    wait_until(lambda: hashes_equal([a, b, c]), REPAIR_TIMEOUT_S, "equal HASH")
    assert converged([a, b, c], expected=want) == want
    assert info_int(c, "ae_records_applied") >= 1000  # 900 values and 100 tombstones


def test_partition_heals_to_the_lww_winners(make_broker, make_cluster, make_subscriber,
                                            make_proxy):
    """C is cut off its broker (through a proxy) while all three take writes, conflicting ones on
    both sides and deletes; after healing, every peer holds the same records and every key its
    last-write-wins winner."""
    broker = make_broker()
    proxy = make_proxy(broker.port)
    cluster = make_cluster(3, broker, names=["a", "b", "c"], conf_overrides=AE_ON,
                           per_peer={"c": {"conf": {"replication": {"mqtt_port": proxy.port}}}})
    a, b, c = cluster
    sub = make_subscriber(broker, cluster.events_topic)
    for p in cluster:  # common starting point
        line_request(p, b"SET base%s x" % p.name.encode())
    converged(cluster)

    proxy.partition()
    wait_until(lambda: info(c)["broker_state"] != "connected", 60, "c cut off")
    for round_ in range(3):
        for p in cluster:
            with p.line() as cl:
                reqs = [b"SET shared%d %s-%d" % (i, p.name.encode(), round_) for i in range(20)]
                reqs += [b"SET only-%s-%d v" % (p.name.encode(), i) for i in range(10)]
                reqs.append(b"DEL base%s" % p.name.encode())
                cl.send(b"".join(r + b"\r\n" for r in reqs))
                cl.read_lines(len(reqs))
    proxy.heal()

    wait_until(lambda: roots_equal(cluster), REPAIR_TIMEOUT_S, "equal Merkle roots")
    data = converged(cluster)
    # Every write, C's too (drained from its outbox after the heal), went through the broker.
    wait_until(lambda: info_int(c, "outbox_depth") == 0, 60, "c's outbox drained")
    # Per peer: its base SET, 3 rounds of 30 SETs, one DEL (the later DELs find nothing).
    sub.wait_events(3 * (1 + 3 * 30 + 1))
    winners = lww_winners(e for _, e in sub.events())
    for key, ev in winners.items():
        want = None if ev["val"] is None else bytes(ev["val"])
        assert data.get(key) == want, (key, ev, data.get(key))
    assert len([k for k in data if k.startswith(b"shared")]) == 20
