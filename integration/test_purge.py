"""Tombstone purge (docs/anti-entropy.md, "Tombstone purge").

Peers run with tombstone_ttl_seconds = 3 and anti-entropy every second. A purged delete must
never come back: not from a peer that slept through it holding the old live value (anti-entropy
offers that value; the others refuse it and ask the sleeper to drop it), and not from a late event
carrying a write older than the purge horizon. A peer that joins later still receives every live
record, however old.
"""
import time

from conftest import (converged, encode_event, info, info_int, line_request, publish,
                      wait_info_int, wait_until)

TTL_S = 3
CONF = {"tombstone_ttl_seconds": TTL_S, "anti_entropy": {"enabled": True, "interval_seconds": 1}}
DEADLINE_S = 90


def roots_equal(peers):
    roots = {p.name: info(p)["merkle_root"] for p in peers}
    return len(set(roots.values())) == 1 and roots


def get(peer, key):
    return line_request(peer, b"GET " + key)


def test_a_purged_delete_never_comes_back(make_broker, make_cluster, make_peer):
    broker = make_broker(persistence=False)
    cluster = make_cluster(3, broker, names=["a", "b", "c"], conf_overrides=CONF)
    a, b, c = cluster
    assert info_int(a, "tombstone_ttl_seconds") == TTL_S
    for line in (b"SET doomed old-value", b"SET kept forever", b"SET gone-too x"):
        assert line_request(a, line) == b"OK"
    converged(cluster, expected={b"doomed": b"old-value", b"kept": b"forever", b"gone-too": b"x"})

    # c sleeps through the deletes, and the broker forgets c's queue.
    c.stop()
    broker.restart()
    wait_until(lambda: all(info(p)["broker_state"] == "connected" for p in (a, b)), DEADLINE_S,
               "a and b reconnected")
    assert line_request(a, b"DEL doomed") == b"DELETED"
    assert line_request(b, b"DEL gone-too") == b"DELETED"
    converged([a, b], expected={b"kept": b"forever"})
    records = info_int(a, "merkle_records")
    assert records == 3  # two tombstones and one value
    # Past the TTL both tombstones are gone on a and b: rows and tree entries. Each node purges
    # them, unless the other purged first and, refusing the tombstone it still offered, asked it
    # to drop it.
    for p in (a, b):
        wait_info_int(p, "merkle_records", lambda v: v == 1, timeout_s=DEADLINE_S)
        d = info(p)
        assert int(d["tombstones_purged"]) + int(d["ae_records_dropped"]) == 2, d
        assert int(d["purge_horizon_ns"]) > 0
    assert roots_equal([a, b])
    refused = info_int(a, "ae_records_refused") + info_int(b, "ae_records_refused")

    # c returns with the live old values. Anti-entropy offers them; a and b refuse them (their
    # tombstones were purged) and c drops them. They never show on a or b meanwhile.
    c.start()
    seen = set()

    def healed():
        for p in (a, b):
            seen.update((p.name, get(p, k)) for k in (b"doomed", b"gone-too"))
        if get(c, b"doomed") != b"NOT_FOUND" or get(c, b"gone-too") != b"NOT_FOUND":
            return False
        return roots_equal([a, b, c])

    wait_until(healed, DEADLINE_S, "c dropping the values whose deletes were purged",
               interval_s=0.05)
    assert seen == {(n, b"NOT_FOUND") for n in ("a", "b")}, seen
    assert info_int(a, "ae_records_refused") + info_int(b, "ae_records_refused") > refused
    assert info_int(c, "ae_records_dropped") == 2
    for p in cluster:
        assert info_int(p, "merkle_records") == 1
        assert line_request(p, b"DBSIZE") == b"DBSIZE 1"
        assert get(p, b"kept") == b"VALUE forever"
    # Later sessions keep them gone.
    done = info_int(a, "ae_sessions_completed")
    wait_info_int(a, "ae_sessions_completed", lambda v: v >= done + 2, timeout_s=DEADLINE_S)
    assert all(get(p, b"doomed") == b"NOT_FOUND" for p in cluster)
    assert roots_equal(cluster)

    # A late event for the purged key, older than the horizon: refused, counted.
    rejected = info_int(a, "events_rejected")
    old_ts = time.time_ns() - 3600 * 10**9
    publish(broker, f"{cluster.prefix}/events/ghost",
            encode_event("set", b"doomed", b"from-the-past", old_ts, src="ghost"))
    wait_info_int(a, "events_rejected", lambda v: v > rejected, timeout_s=DEADLINE_S)
    assert get(a, b"doomed") == b"NOT_FOUND"

    # A new peer still receives the old live record (its own horizon is empty).
    d = make_cluster(1, broker, names=["d"], prefix=cluster.prefix, conf_overrides=CONF,
                     wait=False)[0]
    wait_until(lambda: roots_equal([a, b, c, d]), DEADLINE_S, "d repaired")
    assert get(d, b"kept") == b"VALUE forever"
    assert get(d, b"doomed") == b"NOT_FOUND"
    assert info_int(d, "ae_records_refused") == 0


def test_a_young_tombstone_is_kept_and_purge_can_be_disabled(make_peer):
    """tombstone_ttl_seconds = 0 keeps tombstones for ever; a TTL longer than the test keeps
    them too; INFO reports the setting."""
    never = make_peer("never", conf={"tombstone_ttl_seconds": 0})
    week = make_peer("week")
    for p in (never, week):
        assert line_request(p, b"SET k v") == b"OK"
        assert line_request(p, b"DEL k") == b"DELETED"
        assert info_int(p, "merkle_records") == 1
    assert info_int(never, "tombstone_ttl_seconds") == 0
    assert info_int(week, "tombstone_ttl_seconds") == 7 * 86400
    short = make_peer("short", conf={"tombstone_ttl_seconds": 1})
    assert line_request(short, b"SET k v") == b"OK"
    assert line_request(short, b"DEL k") == b"DELETED"
    wait_info_int(short, "tombstones_purged", lambda v: v == 1, timeout_s=DEADLINE_S)
    # The purge pass has run on the short-TTL peer; the others still hold their tombstones.
    for p in (never, week):
        assert info_int(p, "tombstones_purged") == 0
        assert info_int(p, "merkle_records") == 1
    assert info_int(short, "merkle_records") == 0
