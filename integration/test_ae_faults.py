"""Merkle anti-entropy under faults (docs/anti-entropy.md, ../shared/spec/replication.md §4).

test_ae_basic.py covers the plain repairs; these tests break sessions themselves: a repair racing
newer writes made during a partition, a record from the far future edited into a database file, a
peer SIGKILLed mid-session, messages dropped (both ways, one way) or stalled by the fault-injecting
proxy (integration/faults.py). They check that the peers end with identical records (equal
`merkle_root`, `HASH`, SCAN and GET results) holding the last-write-wins winners, that a repair
never replaces a newer record by an older one, and that the INFO figures tell the story.

Every peer runs anti-entropy every second (interval_seconds = 1, so a step times out after 1 s).
The issue's target is "converged within 3 anti-entropy intervals"; on a slow shared machine the
tests wait up to REPAIR_DEADLINE_S instead and never assert durations. Sessions are initiated by
the peer whose node id sorts first, so the names a < b < c decide who starts which session.
"""
import re
import secrets
import sqlite3
import time

import pytest

from conftest import (converged, info, info_int, line_request, snapshot, wait_info,
                      wait_info_int, wait_until)

INTERVAL_S = 1
AE = {"anti_entropy": {"enabled": True, "interval_seconds": INTERVAL_S}}
# The issue says 3 intervals; the machine may be slow (sanitizer builds, 2 shared cores).
REPAIR_DEADLINE_S = max(3 * INTERVAL_S, 90)
ROOT_RE = re.compile(r"^[0-9a-f]{64}$")


# --------------------------------------------------------------------------------------------
# helpers


def requests(peer, reqs, timeout_s=120):
    """Pipelines line-protocol requests on one connection; the reply lines without CRLF."""
    reqs = [r.encode() if isinstance(r, str) else r for r in reqs]
    if not reqs:
        return []
    with peer.line(timeout_s=timeout_s) as c:
        out = []
        for i in range(0, len(reqs), 1000):
            chunk = reqs[i:i + 1000]
            c.send(b"".join(r + b"\r\n" for r in chunk))
            out += [ln[:-2] for ln in c.read_lines(len(chunk))]
        return out


def write_all(peer, reqs, expect=None):
    """Pipelines requests and checks every reply (OK for SET, DELETED for DEL unless `expect`).
    Returns the number of change events the writes produce (one per OK or DELETED)."""
    replies = requests(peer, reqs)
    for req, rep in zip(reqs, replies):
        req = req.encode() if isinstance(req, str) else req
        want = expect or (b"DELETED" if req.startswith(b"DEL ") else b"OK")
        assert rep == want, f"{peer.name}: {req!r} -> {rep!r}"
    return sum(1 for r in replies if r in (b"OK", b"DELETED"))


def line_scan(peer):
    """SCAN over the line protocol: every live key, in the server's order."""
    with peer.line(timeout_s=120) as c:
        head = c.request(b"SCAN")[:-2]
        assert head.startswith(b"KEYS "), f"{peer.name}: SCAN answered {head!r}"
        n = int(head[5:])
        return [ln[:-2] for ln in c.read_lines(n)] if n else []


def line_gets(peer, keys):
    """GET of every key over the line protocol: {key: value bytes or None}."""
    replies = requests(peer, [b"GET " + k for k in keys])
    out = {}
    for k, r in zip(keys, replies):
        if r == b"NOT_FOUND":
            out[k] = None
        else:
            assert r.startswith(b"VALUE "), f"{peer.name}: GET {k!r} -> {r!r}"
            out[k] = r[6:]
    return out


def roots(peers):
    return {p.name: info(p)["merkle_root"] for p in peers}


def wait_roots_equal(peers, timeout_s=REPAIR_DEADLINE_S):
    """Waits until every peer reports the same merkle_root; returns it."""
    def check():
        r = roots(peers)
        assert len(set(r.values())) == 1, f"merkle_root differs: {r}"
        return next(iter(r.values()))
    return wait_until(check, timeout_s, f"equal merkle_root on {[p.name for p in peers]}",
                      interval_s=0.1)


def wait_hash_equal(peers, timeout_s=REPAIR_DEADLINE_S):
    def check():
        h = {p.name: line_request(p, b"HASH") for p in peers}
        assert len(set(h.values())) == 1, f"HASH differs: {h}"
        return next(iter(h.values()))
    return wait_until(check, timeout_s, f"equal HASH on {[p.name for p in peers]}",
                      interval_s=0.1)


def assert_identical(peers, want):
    """Waits for identical merkle_root and HASH, then checks that SCAN (line protocol) and the
    data (KEYS + MGET over RESP) are the same on every peer and equal to want; returns it."""
    root = wait_roots_equal(peers)
    wait_hash_equal(peers)
    assert ROOT_RE.match(root), root
    data = converged(peers, expected=want)
    scans = {p.name: line_scan(p) for p in peers}
    for name, keys in scans.items():
        assert keys == sorted(want), f"SCAN on {name}: {len(keys)} keys, want {len(want)}"
    return data


def wait_connected(peers, timeout_s=REPAIR_DEADLINE_S):
    """Waits until every peer is connected to its broker (whoever it believes online)."""
    for p in peers:
        wait_info(p, lambda d: d.get("broker_state") == "connected", "connected to the broker",
                  timeout_s)


def assert_sessions_accounted(d, peers):
    """Checks the session counters of one INFO dict: every session the node started has ended
    once, completed or failed, or is still running, and it runs at most one per peer it may
    start sessions with (`peers`)."""
    started, completed, failed, running = (
        int(d[f"ae_sessions_{k}"]) for k in ("started", "completed", "failed", "running"))
    assert started == completed + failed + running, d
    assert running <= peers, d


def db_edit(peer, fn):
    """Runs fn(sqlite3 connection) on the stopped peer's database file, in one transaction."""
    assert not peer.running(), f"{peer.name} must be stopped to edit its database"
    db = sqlite3.connect(peer.db_path)
    try:
        with db:
            fn(db)
    finally:
        db.close()




# --------------------------------------------------------------------------------------------
# 1. a repair never regresses newer data


def test_repair_never_regresses_newer_writes_made_during_a_partition(make_broker, make_cluster,
                                                                      make_proxy):
    """C is partitioned and the broker restarts without persistence, so A's and B's writes of
    the partition reach C only through anti-entropy. C holds newer versions of some keys; A and
    B push their older ones at every session: C must reject them, never show them, and its
    newer records must win everywhere."""
    broker = make_broker(persistence=False)
    proxy = make_proxy(broker.port)
    cluster = make_cluster(3, broker, names=["a", "b", "c"], conf_overrides=AE,
                           per_peer={"c": {"conf": {"replication": {"mqtt_port": proxy.port}}}})
    a, b, c = cluster
    write_all(a, [b"SET k%d v0" % i for i in range(1, 6)])
    converged(cluster)
    wait_roots_equal(cluster)

    proxy.partition()
    wait_info(c, lambda d: d["broker_state"] != "connected", "c cut off",
              timeout_s=REPAIR_DEADLINE_S)
    write_all(a, [b"SET k1 a-older", b"SET k5 a-older"])
    write_all(b, [b"SET k2 b-older", b"DEL k4"])
    write_all(c, [b"SET k1 c-newer", b"SET k2 c-newer", b"SET k3 c-older", b"SET k4 c-newer",
                  b"DEL k5"])
    write_all(a, [b"SET k3 a-newer"])
    newer_on_c = {b"k1": b"c-newer", b"k2": b"c-newer", b"k4": b"c-newer", b"k5": None}
    assert line_gets(c, list(newer_on_c)) == newer_on_c
    broker.restart()  # A's and B's partition-time events for C are gone with the broker
    wait_connected([a, b])

    seen_on_c = {k: set() for k in newer_on_c}
    seen_k3_on_a = set()
    want = {b"k1": b"c-newer", b"k2": b"c-newer", b"k3": b"a-newer", b"k4": b"c-newer"}

    def healed():
        for k, v in line_gets(c, list(newer_on_c)).items():
            seen_on_c[k].add(v)
        seen_k3_on_a.add(line_gets(a, [b"k3"])[b"k3"])
        snaps = {p.name: snapshot(p) for p in cluster}
        assert all(s == want for s in snaps.values()), snaps
        r = roots(cluster)
        assert len(set(r.values())) == 1, r
        return True

    proxy.heal()
    wait_until(healed, REPAIR_DEADLINE_S, "every peer holding the newest versions",
               interval_s=0.05)
    # C never showed an older version while it was being repaired, nor A its newer k3.
    assert seen_on_c == {k: {v} for k, v in newer_on_c.items()}, seen_on_c
    assert seen_k3_on_a == {b"a-newer"}
    # k3's newer version reached C only through anti-entropy (its event died with the broker);
    # C also received A's and B's older records and kept its own.
    assert info_int(c, "ae_records_applied") >= 1
    assert line_request(c, b"GET k3") == b"VALUE a-newer"
    assert_identical(cluster, want)


def test_a_far_future_record_survives_repair_and_spreads(make_broker, make_cluster,
                                                          make_subscriber):
    """C's file gets a record one hour in the future (beyond the 60 s skew guard) behind its back,
    plus a changed version of a key every peer holds. Anti-entropy must keep them on C and spread
    them; A's clock must not be dragged an hour ahead; a later write on A still wins (a local
    write always supersedes the version this node holds)."""
    broker = make_broker()
    cluster = make_cluster(3, broker, names=["a", "b", "c"], conf_overrides=AE)
    a, b, c = cluster
    sub = make_subscriber(broker, cluster.events_topic)
    write_all(a, [b"SET f%d v0" % i for i in range(5)])
    converged(cluster)
    wait_roots_equal(cluster)

    future_ts = time.time_ns() + 3600 * 10**9
    c.stop()

    def edit(db):
        db.execute("UPDATE records SET value = ?, ts = ? WHERE key = ?",
                   (b"from-the-future", future_ts, b"f1"))
        db.execute("INSERT INTO records (key, tombstone, ts, op_id, value) "
                   "VALUES (?, 0, ?, ?, ?)",
                   (b"f-new", future_ts, secrets.token_bytes(16), b"new-from-the-future"))
    db_edit(c, edit)
    skew = info_int(a, "clock_skew_rejections")
    c.start()
    want = {b"f0": b"v0", b"f1": b"from-the-future", b"f2": b"v0", b"f3": b"v0", b"f4": b"v0",
            b"f-new": b"new-from-the-future"}
    assert_identical(cluster, want)
    assert line_request(c, b"GET f1") == b"VALUE from-the-future"  # survived on c
    assert info_int(a, "ae_records_applied") >= 2
    # A applied them (convergence must not depend on clocks) but its clock stayed on time.
    assert info_int(a, "clock_skew_rejections") > skew
    assert info_int(a, "hlc_last_ns") < future_ts
    n = len(sub.events())
    write_all(a, [b"SET fresh now"])
    fresh = [e for _, e in sub.wait_events(n + 1) if e["key"] in ("fresh", b"fresh")]
    assert len(fresh) == 1 and fresh[0]["src"] == "a" and fresh[0]["ts"] < future_ts
    # A causally later write of f1 on A beats the future record everywhere.
    write_all(a, [b"SET f1 a-later"])
    want.update({b"f1": b"a-later", b"fresh": b"now"})
    assert_identical(cluster, want)


# --------------------------------------------------------------------------------------------
# 2. a peer killed mid-session


def test_a_session_whose_peer_is_killed_midway_fails_then_a_later_one_succeeds(make_broker,
                                                                               make_cluster):
    """A holds 20,000 records that B, a newcomer, never got as events (it had no broker session
    when they were published), so A's session with B carries them all. B is SIGKILLed while that
    session runs, about half-way: A's session ends failed (by timeout, A keeps serving); B comes
    back with what it had committed and a later session completes the repair."""
    n = 20000
    broker = make_broker()
    first = make_cluster(1, broker, names=["a"], conf_overrides=AE)
    a = first[0]
    value = b"x" * 200
    write_all(a, [b"SET big%05d %s" % (i, value) for i in range(n)])
    want_root = info(a)["merkle_root"]

    b = make_cluster(1, broker, names=["b"], prefix=first.prefix, conf_overrides=AE,
                     wait=False)[0]

    def midway():
        ia = info(a)
        if int(ia["ae_sessions_running"]) < 1:
            return False
        got = info_int(b, "merkle_records")
        return 0 < got < n // 2 and (ia, got)

    ia, got = wait_until(midway, REPAIR_DEADLINE_S, "a's session with b half-way",
                         interval_s=0.01)
    b.kill()
    failed, completed = int(ia["ae_sessions_failed"]), int(ia["ae_sessions_completed"])
    wait_info_int(a, "ae_sessions_failed", lambda v: v > failed, timeout_s=REPAIR_DEADLINE_S)
    assert re.search(r"ae: session with b failed after \d+ ms: no answer in time", a.log_text())
    write_all(a, [b"SET alive yes"])  # a kept serving
    assert info_int(a, "ae_sessions_completed") == completed  # nothing completed with b meanwhile

    b.start()
    partial = info_int(b, "merkle_records")
    assert partial < n, "b had everything already: it was not killed mid-session"
    wait_info_int(a, "ae_sessions_completed", lambda v: v > completed,
                  timeout_s=REPAIR_DEADLINE_S)
    root = wait_roots_equal([a, b])
    assert root != want_root  # 'alive' joined since
    assert info_int(b, "merkle_records") == n + 1
    data = converged([a, b])
    assert len(data) == n + 1 and data[b"big%05d" % (n - 1)] == value
    assert info_int(b, "ae_records_applied") >= n - partial


# --------------------------------------------------------------------------------------------
# 3. messages dropped or held by the proxy


@pytest.mark.parametrize("mode", ["blackhole", "drop_up", "drop_down", "stall"])
def test_sessions_fail_while_the_proxy_drops_and_succeed_after(make_broker, make_cluster,
                                                               make_proxy, mode):
    """While the proxy between C and the broker drops (both ways, only C's packets, only the
    broker's) or stalls C's traffic, sessions with C fail by timeout; the broker then restarts
    without persistence (C's queue is lost) while A and B keep writing; once the proxy heals,
    a later session completes and repairs C."""
    broker = make_broker(persistence=False)
    proxy = make_proxy(broker.port)
    cluster = make_cluster(3, broker, names=["a", "b", "c"], conf_overrides=AE,
                           per_peer={"c": {"conf": {"replication": {"mqtt_port": proxy.port}}}})
    a, b, c = cluster
    write_all(a, [b"SET d%03d v" % i for i in range(50)])
    converged(cluster)
    wait_roots_equal(cluster)

    failed = info_int(a, "ae_sessions_failed")
    proxy.set_mode(mode)
    wait_info_int(a, "ae_sessions_failed", lambda v: v > failed, timeout_s=REPAIR_DEADLINE_S)
    assert re.search(r"ae: session with c failed after \d+ ms: no answer in time", a.log_text())

    broker.restart()
    wait_connected([a, b])
    write_all(a, [b"SET d%03d a-new" % i for i in range(0, 100, 2)])
    write_all(b, [b"SET d%03d b-new" % i for i in range(1, 100, 2)])
    write_all(b, [b"DEL d%03d" % i for i in range(0, 10)])
    want = converged([a, b])
    assert len(want) == 90
    if mode == "stall":
        assert proxy.dropped_up == proxy.dropped_down == 0
    else:
        assert proxy.dropped_up + proxy.dropped_down > 0
    completed = info_int(a, "ae_sessions_completed")
    applied = info_int(c, "ae_records_applied")

    proxy.heal()
    wait_info_int(a, "ae_sessions_completed", lambda v: v > completed,
                  timeout_s=REPAIR_DEADLINE_S)
    assert_identical(cluster, want)
    # C missed the events of 100 records (50 updated keys, 50 new ones, 10 of them deleted
    # since): the broker that queued them for it restarted. Anti-entropy brought them.
    assert info_int(c, "ae_records_applied") >= applied + 100
    assert all(info_int(p, "ae_malformed") == 0 for p in cluster)


# --------------------------------------------------------------------------------------------
# 4. the INFO figures


def test_info_fields_exist_and_move(make_broker, make_cluster, make_peer):
    """merkle_root is equal on converged peers and moves with a local-only write; merkle_records
    counts tombstones; HASH covers live data only; the ae_* counters count sessions (including
    on a peer that only answers) and stay flat on a healthy cluster."""
    t0 = int(time.time())
    broker = make_broker()
    cluster = make_cluster(3, broker, names=["a", "b", "c"], conf_overrides=AE,
                           per_peer={"c": {"conf": {"anti_entropy": {"enabled": False}}}})
    a, b, c = cluster
    write_all(a, [b"SET m%d v%d" % (i, i) for i in range(5)] + [b"DEL m3", b"DEL m4"])
    converged(cluster, expected={b"m0": b"v0", b"m1": b"v1", b"m2": b"v2"})
    root = wait_roots_equal(cluster)
    assert ROOT_RE.match(root)
    for p in cluster:
        d = info(p)
        assert d["merkle_records"] == "5", (p.name, d["merkle_records"])  # 3 values, 2 tombstones
        # The tree's arrays: fixed by the shape (16 x 4 here), whatever the records.
        assert 1_000_000 < int(d["merkle_memory_bytes"]) < 16_000_000
        assert line_request(p, b"DBSIZE") == b"DBSIZE 3"
    hash_ = wait_hash_equal(cluster)

    # A lone node holding the same 3 live keys: same HASH (live data), another root (the root
    # covers ts, op_id and the tombstones too).
    x = make_peer("x")
    write_all(x, [b"SET m%d v%d" % (i, i) for i in range(3)])
    assert line_request(x, b"HASH") == hash_
    dx = info(x)
    assert dx["merkle_records"] == "3" and ROOT_RE.match(dx["merkle_root"])
    assert dx["merkle_memory_bytes"] == info(a)["merkle_memory_bytes"]
    assert dx["merkle_root"] != root

    # Sessions: a starts them with b and c, b with c; c (enabled = false) only answers.
    da = wait_info(a, lambda d: int(d["ae_sessions_completed"]) >= 2, "a completing sessions")
    wait_info(b, lambda d: int(d["ae_sessions_completed"]) >= 1, "b completing sessions")
    assert da["ae_enabled"] == "1"
    assert int(da["ae_sessions_started"]) >= int(da["ae_sessions_completed"]) >= 2
    assert int(da["ae_bytes_sent"]) > 0 and int(da["ae_bytes_received"]) > 0
    assert t0 - 1 <= int(da["ae_last_repair_unix"]) <= int(time.time()) + 1
    assert_sessions_accounted(da, peers=2)
    # ae_last_session_ms is how long the session that completed at ae_last_repair_unix took: it
    # began after t0 (a did not exist before). No lower bound: with equal roots a session is one
    # round trip, often under 1 ms, which INFO shows as 0.
    assert int(da["ae_last_session_ms"]) < (int(da["ae_last_repair_unix"]) + 1 - t0) * 1000, da
    dc = info(c)
    assert dc["ae_enabled"] == "0" and dc["ae_sessions_started"] == "0"
    # c only answers: it counts no session of its own.
    assert_sessions_accounted(dc, peers=0)
    assert int(dc["ae_bytes_received"]) > 0 and int(dc["ae_bytes_sent"]) > 0  # it answered
    # A healthy cluster: sessions keep completing, nothing needs repairing.
    applied = {p.name: info_int(p, "ae_records_applied") for p in cluster}
    done = int(da["ae_sessions_completed"])
    wait_info_int(a, "ae_sessions_completed", lambda v: v >= done + 2,
                  timeout_s=REPAIR_DEADLINE_S)
    assert {p.name: info_int(p, "ae_records_applied") for p in cluster} == applied
    assert info(a)["merkle_root"] == root
    # Sessions end: between two of them a runs none (a session takes a round trip or a few, the
    # interval is 1 s).
    idle = wait_info(a, lambda d: d["ae_sessions_running"] == "0", "a between sessions",
                     timeout_s=REPAIR_DEADLINE_S)
    assert_sessions_accounted(idle, peers=2)
    assert int(idle["ae_sessions_completed"]) >= done + 2

    # A local-only write moves the writer's root and nobody else's.
    assert line_request(b, b"REPLICATE disable") == b"OK"
    wait_info(b, lambda d: d["broker_state"] == "disabled", "b disconnected")
    write_all(b, [b"SET local only"])
    db = info(b)
    assert db["merkle_root"] != root and db["merkle_records"] == "6"
    write_all(b, [b"DEL m0"])  # a value becomes a tombstone: same count, another root
    db2 = info(b)
    assert db2["merkle_records"] == "6" and db2["merkle_root"] not in (root, db["merkle_root"])
    assert info(a)["merkle_root"] == root and info(c)["merkle_root"] == root
    assert info(a)["merkle_records"] == "5"

    assert line_request(b, b"REPLICATE enable") == b"OK"
    new_root = wait_roots_equal(cluster)
    assert new_root == db2["merkle_root"]
    converged(cluster, expected={b"m1": b"v1", b"m2": b"v2", b"local": b"only"})
    assert all(info(p)["merkle_records"] == "6" for p in cluster)
