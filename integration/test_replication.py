# SPDX-License-Identifier: MIT
"""MQTT replication: docs/replication.md is the contract (spec ../shared/spec/replication.md
§1-§3). Every test has its own mosquitto and its own topic prefix (see conftest.py); nothing
sleeps to synchronize: tests wait for INFO counters, GET results or MQTT messages, with
deadlines."""

import json
import os
import random
import re
import select
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import cbor2
import pytest

from conftest import (IO_TIMEOUT_S, LOOPBACK, REPL_TIMEOUT_S, converged, encode_event,
                      eventually_equal, get_value, info, info_int, line_request, lww_winners,
                      repl_conf, snapshot, unique_prefix, wait_info, wait_info_int,
                      wait_replicating, wait_until)

ROOT = Path(__file__).resolve().parent.parent
WATCH = ROOT / "tools" / "arborkv-watch"

OPS = {"set", "del", "incr", "decr", "append", "prepend"}


@pytest.fixture
def trio(broker, make_cluster):
    """Three peers a, b, c replicating through one broker."""
    return make_cluster(3, broker, names=["a", "b", "c"])


def _kb(k):
    return k.encode() if isinstance(k, str) else bytes(k)


def _pipeline_sets(peer, items):
    """SETs every (key, value) over one line-protocol connection in one write; checks the OKs."""
    with peer.line(timeout_s=120) as c:
        c.send(b"".join(b"SET %s %s\r\n" % (_kb(k), _kb(v)) for k, v in items))
        got = c.read_lines(len(items), timeout_s=300)
    bad = [(i, g) for i, g in enumerate(got) if g != b"OK\r\n"]
    assert not bad, bad[:5]


def _counters(peers, name):
    return {p.name: info_int(p, name) for p in peers}


def _wait_outbox_empty(peers):
    return {p.name: int(wait_info(p, lambda d: d.get("outbox_depth") == "0",
                                  "outbox_depth:0")["events_published"])
            for p in peers}


# --------------------------------------------------------------------------------------------
# The harness itself, against a real mosquitto: the catch-up tests rely on these properties.


def test_harness_broker_subscriber_publisher(broker, make_subscriber, make_publisher):
    sub = make_subscriber(broker, "h/#")
    pub = make_publisher(broker)
    pub.publish("h/a", b"one")
    pub.publish("h/b/c", b"")
    pub.publish("h/r", b"kept", retain=True)
    msgs = sub.wait_count(3)
    assert msgs == [("h/a", b"one", False), ("h/b/c", b"", False), ("h/r", b"kept", False)]
    late = make_subscriber(broker, "h/#")
    assert late.wait_count(1) == [("h/r", b"kept", True)]


def test_harness_persistent_session_queue_survives_broker_kill(make_broker, make_subscriber,
                                                               make_publisher):
    """A persistent session saved before a kill -9 keeps its subscription, and the broker queues
    more than mosquitto's default 1,000 messages for it."""
    b = make_broker(persistence=True)
    s = make_subscriber(b, "q/#", client_id="harness-persistent", clean_session=False)
    s.stop()
    b.save()
    b.kill()
    b.restart()
    pub = make_publisher(b)
    pub.publish_many("q/x", [b"%d" % i for i in range(2000)])
    s2 = make_subscriber(b, "q/#", client_id="harness-persistent", clean_session=False)
    msgs = s2.wait_count(2000)
    assert [p for _, p, _ in msgs] == [b"%d" % i for i in range(2000)]


# --------------------------------------------------------------------------------------------
# Every write command replicates


def test_line_protocol_writes_replicate(trio):
    a, b, c = trio
    others = [b, c]
    with a.line() as lc:
        def req(line, want):
            got = lc.request(line)
            assert got == want, f"{line!r}: {got!r}"

        req(b"SET greeting hello  world\tx", b"OK\r\n")
        eventually_equal(others, "greeting", "hello  world\tx")
        req(b"SET greeting hello", b"OK\r\n")
        eventually_equal(others, "greeting", "hello")

        req(b"SET gone soon", b"OK\r\n")
        eventually_equal(others, "gone", "soon")
        req(b"DEL gone", b"DELETED\r\n")
        eventually_equal(others, "gone", None)
        req(b"SET gone2 soon", b"OK\r\n")
        eventually_equal(others, "gone2", "soon")
        req(b"DELETE gone2", b"DELETED\r\n")
        eventually_equal(others, "gone2", None)

        req(b"INC n", b"VALUE 1\r\n")
        eventually_equal(others, "n", "1")
        req(b"INC n 5", b"VALUE 6\r\n")
        eventually_equal(others, "n", "6")
        req(b"DEC n 2", b"VALUE 4\r\n")
        eventually_equal(others, "n", "4")
        req(b"DEC m", b"VALUE -1\r\n")
        eventually_equal(others, "m", "-1")
        req(b"INCR n", b"VALUE 5\r\n")
        req(b"DECR m", b"VALUE -2\r\n")
        eventually_equal(others, "n", "5")
        eventually_equal(others, "m", "-2")

        req(b"APPEND greeting , world", b"VALUE hello, world\r\n")
        eventually_equal(others, "greeting", "hello, world")
        req(b"PREPEND greeting >> ", b"VALUE >>hello, world\r\n")  # trailing space trimmed
        eventually_equal(others, "greeting", ">>hello, world")
        req(b"APPEND fresh new", b"VALUE new\r\n")
        req(b"PREPEND fresh2 new2", b"VALUE new2\r\n")
        eventually_equal(others, "fresh", "new")
        eventually_equal(others, "fresh2", "new2")

        req(b"MSET m1 one m2 two m3 three", b"OK\r\n")
        for k, v in (("m1", "one"), ("m2", "two"), ("m3", "three")):
            eventually_equal(others, k, v)

    data = converged(trio, expected=snapshot(a))
    assert len(data) == 8, data

    assert line_request(a, b"TRUNCATE") == b"OK"
    converged(trio, expected={})
    for p in trio:
        assert line_request(p, b"DBSIZE") == b"DBSIZE 0"
        assert line_request(p, b"SCAN") == b"KEYS 0"


def test_resp_writes_replicate(trio):
    a, b, c = trio
    others = [b, c]
    bkey, bval = b"bin\xff\x00key\r\n", b"\x00\x01\r\nvalue\xfe"
    with a.resp() as r:
        assert r.call("SET", bkey, bval) == b"OK"
        eventually_equal(others, bkey, bval)

        assert r.call("MSET", "r1", "1", "r2", "2", "r3", "3", "r4", "x") == b"OK"
        for k, v in (("r1", "1"), ("r2", "2"), ("r3", "3"), ("r4", "x")):
            eventually_equal(others, k, v)
        assert r.call("DEL", "r1", "r2", "nosuch") == 2
        eventually_equal(others, "r1", None)
        eventually_equal(others, "r2", None)

        assert r.call("INCR", "r3") == 4
        assert r.call("INCRBY", "r3", 10) == 14
        eventually_equal(others, "r3", "14")
        assert r.call("DECR", "r3") == 13
        assert r.call("DECRBY", "r3", 3) == 10
        eventually_equal(others, "r3", "10")

        assert r.call("APPEND", "r4", "yz") == 3
        eventually_equal(others, "r4", "xyz")
        assert r.call("GETSET", "r4", "new") == b"xyz"
        eventually_equal(others, "r4", "new")
        assert r.call("GETDEL", "r4") == b"new"
        eventually_equal(others, "r4", None)
        assert r.call("SETNX", "r5", "first") == 1
        assert r.call("SETNX", "r5", "second") == 0
        eventually_equal(others, "r5", "first")

        # a transaction: several writes in one turn, one batch
        assert r.call("MULTI") == b"OK"
        assert r.call("SET", "t1", "one") == b"QUEUED"
        assert r.call("SET", "t2", "two") == b"QUEUED"
        assert r.call("DEL", "r5") == b"QUEUED"
        assert r.call("EXEC") == [b"OK", b"OK", 1]
        eventually_equal(others, "t2", "two")
        eventually_equal(others, "t1", "one")
        eventually_equal(others, "r5", None)

        converged(trio, expected={bkey: bval, "r3": "10", "t1": "one", "t2": "two"})
        assert r.call("FLUSHDB") == b"OK"
    converged(trio, expected={})


def test_writes_on_every_peer_reach_the_others(trio):
    for p in trio:
        with p.resp() as r:
            assert r.call("SET", f"from:{p.name}", p.name) == b"OK"
    converged(trio, expected={f"from:{p.name}": p.name for p in trio})


# --------------------------------------------------------------------------------------------
# LWW


def test_concurrent_writers_converge_to_lww_winner(trio, make_subscriber):
    sub = make_subscriber(trio.broker, trio.events_topic)
    keys = [f"cw:{i}" for i in range(100)]
    errors = []

    def writer(p, seed):
        rng = random.Random(seed)
        try:
            with p.resp() as r:
                for i in range(300):
                    k = rng.choice(keys)
                    if rng.random() < 0.1:
                        r.call("DEL", k)
                    else:
                        assert r.call("SET", k, f"{p.name}-{i}") == b"OK"
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append((p.name, repr(exc)))

    threads = [threading.Thread(target=writer, args=(p, n)) for n, p in enumerate(trio)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors

    published = _wait_outbox_empty(trio)
    assert all(n > 0 for n in published.values()), published
    events = [e for _, e in sub.wait_events(sum(published.values()))]
    # nothing but the writers' own events, each once
    assert Counter(e["src"] for e in events) == Counter(published), published
    winners = lww_winners(events)
    assert set(winners) <= {k.encode() for k in keys}
    expected = {k: e["val"] for k, e in winners.items() if e["op"] != "del"}
    data = converged(trio, keys=keys, expected=expected)
    srcs = Counter(v.split(b"-")[0] for v in data.values())
    assert len(srcs) >= 2, f"expected winners from several peers, got {srcs}"


@pytest.mark.parametrize("mqtt_version", [5, 3])
def test_each_write_is_published_exactly_once(broker, make_cluster, make_subscriber,
                                              mqtt_version):
    """No loops: a peer never republishes what it applied, and never applies its own events.
    With MQTT 5 the broker does not send a peer its own events at all (No Local subscription);
    with MQTT 3.1.1 it does, and the peer recognises them by src and drops them."""
    trio = make_cluster(3, broker, names=["a", "b", "c"], repl={"mqtt_version": mqtt_version})
    a, b, c = trio
    sub = make_subscriber(trio.broker, trio.events_topic)
    base = {p.name: info(p) for p in trio}
    echoed = mqtt_version == 3  # whether a receives its own events back

    def delta(p, name):
        return info_int(p, name) - int(base[p.name][name])

    n = 50
    with a.line() as lc:
        for i in range(n):
            assert lc.request(f"SET loop:{i} v{i}") == b"OK\r\n"
    wait_info(a, lambda d: d["outbox_depth"] == "0"
              and int(d["events_published"]) - int(base["a"]["events_published"]) == n,
              f"{n} events published")
    sub.wait_events(n)
    for p in (b, c):
        wait_info_int(p, "events_applied",
                      lambda v, p=p: v - int(base[p.name]["events_applied"]) == n)
    if echoed:
        wait_info_int(a, "events_own", lambda v: v - int(base["a"]["events_own"]) == n,
                      "a to receive its own events back and ignore them")

    # a sentinel written after everything else: when it has arrived, any echo would have too
    assert line_request(a, b"SET loop:sentinel done") == b"OK"
    sub.wait_events(n + 1)
    for p in (b, c):
        wait_info_int(p, "events_applied",
                      lambda v, p=p: v - int(base[p.name]["events_applied"]) == n + 1)
    # and a marker from b, published after b had the sentinel: once a has applied it, an echo
    # of the sentinel (routed by the broker before b could see it) would have reached a too
    assert line_request(b, b"SET loop:marker b") == b"OK"
    wait_info_int(a, "events_applied", lambda v: v - int(base["a"]["events_applied"]) == 1,
                  "a to apply b's marker")
    assert delta(a, "events_own") == (n + 1 if echoed else 0)
    for p in (b, c):
        wait_info(p, lambda d: d["outbox_depth"] == "0", "outbox_depth:0")

    sub.wait_events(n + 2)
    events = sub.events()
    assert len(events) == n + 2, f"{len(events)} events for {n + 2} writes"
    assert [t for t, _ in events].count(f"{trio.prefix}/events/a") == n + 1
    assert [e["src"] for _, e in events].count("a") == n + 1
    for p in (b, c):
        assert delta(p, "events_published") == (1 if p is b else 0), \
            f"{p.name} republished applied events"
    assert delta(a, "events_applied") == 1
    assert delta(a, "events_published") == n + 1
    converged(trio, expected={**{f"loop:{i}": f"v{i}" for i in range(n)},
                              "loop:sentinel": "done", "loop:marker": "b"})


def test_event_fields_and_topic(trio, make_subscriber):
    a = trio[0]
    sub = make_subscriber(trio.broker, trio.events_topic)
    with a.line() as lc:
        for line in (b"SET f:text some value", b"INC f:n 7", b"DEC f:n 2",
                     b"APPEND f:text  more", b"PREPEND f:text pre ", b"DEL f:text"):
            lc.request(line)
    with a.resp() as r:
        assert r.call("SET", b"f:\xff\xfe", b"\x00\xffbin") == b"OK"
    want = [  # (ops allowed, key, val) in write order
        ({"set"}, "f:text", b"some value"),
        ({"incr", "set"}, "f:n", b"7"),
        ({"decr", "set"}, "f:n", b"5"),
        ({"append", "set"}, "f:text", b"some value more"),
        ({"prepend", "set"}, "f:text", b"presome value more"),
        ({"del"}, "f:text", None),
        ({"set"}, b"f:\xff\xfe", b"\x00\xffbin"),
    ]
    events = sub.wait_events(len(want))
    assert len(events) == len(want)
    now = time.time_ns()
    for topic, ev in events:
        assert topic == f"{trio.prefix}/events/a"
        assert type(ev.get("v")) is int and ev["v"] == 1, ev
        assert type(ev["op"]) is str and ev["op"] in OPS, ev
        assert type(ev["key"]) in (str, bytes), ev
        if ev["op"] == "del":
            assert ev["val"] is None, ev
        else:
            assert type(ev["val"]) is bytes, ev
        assert type(ev["ts"]) is int and abs(ev["ts"] - now) < 86400 * 10**9, \
            f"ts should be nanoseconds since the epoch: {ev}"
        assert ev["src"] == "a", ev
        assert type(ev["op_id"]) is bytes and len(ev["op_id"]) == 16, ev
        assert ev.get("prev") is None and ev.get("ttl") is None, ev
    got = sorted((e for _, e in events), key=lambda e: e["ts"])
    assert [e["ts"] for e in got] == sorted({e["ts"] for e in got}), "ts must be unique"
    assert len({e["op_id"] for e in got}) == len(got), "op_ids must be unique"
    for (ops, key, val), ev in zip(want, got):
        assert ev["op"] in ops and ev["key"] == key and ev["val"] == val, (ops, key, val, ev)
    # a key that is valid UTF-8 is a text string; one that is not, a byte string
    assert type(got[0]["key"]) is str and type(got[-1]["key"]) is bytes


def test_merklekv_encoded_and_batched_events_are_applied(trio, make_publisher):
    pub = make_publisher(trio.broker)
    base = _counters(trio, "events_applied")
    ts = time.time_ns()
    # MerkleKV: val/op_id as integer arrays, no v, topic {prefix}/events, prev/ttl null
    pub.publish(f"{trio.prefix}/events",
                encode_event("set", "mkv:1", b"from merklekv", ts, src="merklekv-node",
                             merklekv=True, extra={"prev": None, "ttl": None}))
    eventually_equal(trio, "mkv:1", "from merklekv")
    # fields in another order, plus an unknown field
    pub.publish(f"{trio.prefix}/events", cbor2.dumps({
        "op_id": list(os.urandom(16)), "unknown": {"x": [1, 2]}, "ts": ts + 1,
        "key": "mkv:2", "src": "merklekv-node", "val": list(b"two"), "op": "set"}))
    eventually_equal(trio, "mkv:2", "two")
    pub.publish(f"{trio.prefix}/events",
                encode_event("del", "mkv:1", None, ts + 2, src="merklekv-node", merklekv=True))
    eventually_equal(trio, "mkv:1", None)

    # a batch (CBOR array) in arborkv's encoding, with a byte-string key
    batch = [cbor2.loads(encode_event(*e, src="batcher")) for e in (
        ("set", "bt:1", b"one", ts + 3),
        ("set", b"bt:\xff", b"two", ts + 4),
        ("del", "mkv:2", None, ts + 5),
        ("set", "bt:3", b"", ts + 6),
    )]
    pub.publish(f"{trio.prefix}/events/x", cbor2.dumps(batch))
    converged(trio, keys=["bt:1", b"bt:\xff", "mkv:2", "bt:3"],
              expected={"bt:1": "one", b"bt:\xff": "two", "bt:3": ""})
    for p in trio:
        wait_info_int(p, "events_applied", lambda v, p=p: v - base[p.name] == 7)
    converged(trio, expected={"bt:1": "one", b"bt:\xff": "two", "bt:3": ""})


# --------------------------------------------------------------------------------------------
# Malformed payloads


def _good_event(i=0):
    return {"v": 1, "op": "set", "key": f"mf:good{i}", "val": b"value", "ts": time.time_ns(),
            "src": "fuzz", "op_id": bytes(range(16))}


def _merklekv_event(i=0):
    return {"op": "set", "key": f"mf:mk{i}", "val": list(b"value"), "ts": time.time_ns(),
            "src": "fuzz", "op_id": list(range(16))}


WRONG_TYPES = {
    "op": [1, b"set", None, ["set"], {"a": 1}, 1.5, True],
    "key": [1, None, ["k"], {"k": 1}, 2.5, True],
    "ts": ["123", b"123", -1, 1.5, None, [1], True, 2 ** 64],
    "op_id": ["0123456789abcdef", 5, None, b"\x00" * 15, b"\x00" * 17, b"", [0] * 15,
              [0] * 17, [256] + [0] * 15, [-1] + [0] * 15, ["a"] * 16, {"a": 1}],
    "val": [5, "text", ["a"], [256], [-1], {"x": 1}, 1.5, True],
    "src": [5, ["s"], {"s": 1}, 1.5, True],
}


def _valid_event(e):
    def uint(x, hi):
        return type(x) is int and 0 <= x < hi

    def octets(x, n=None):
        return ((type(x) is bytes or (type(x) is list and all(uint(i, 256) for i in x)))
                and (n is None or len(x) == n))

    return (type(e) is dict and type(e.get("op")) is str and e["op"] in OPS
            and type(e.get("key")) in (str, bytes) and uint(e.get("ts"), 2 ** 64)
            and octets(e.get("op_id"), 16)
            and (e.get("val") is None or octets(e["val"]))
            and ("src" not in e or type(e["src"]) is str))


def _valid_message(obj):
    if type(obj) is list:
        return bool(obj) and all(_valid_event(e) for e in obj)
    return _valid_event(obj)


def _is_malformed_for_sure(payload):
    """Random bytes count only when no reading of them could be a valid message: the first CBOR
    item must fail to decode, or be something other than an empty array (an empty batch is a
    matter of taste) — random bytes never make a map with op, key, ts and op_id."""
    import io
    try:
        first = cbor2.CBORDecoder(io.BytesIO(payload)).decode()
    except Exception:  # noqa: BLE001 - undecodable: malformed
        return True
    return not (isinstance(first, list) and len(first) == 0)


def _malformed_payloads(rng):
    out = []
    # truncated valid messages: every strict prefix of a definite-length item is incomplete
    for whole in (_good_event(), _merklekv_event(), [_good_event(1), _good_event(2)]):
        enc = cbor2.dumps(whole)
        out += [enc[:i] for i in range(len(enc))]   # enc[:0] is the empty payload
    # missing required fields
    for make in (_good_event, _merklekv_event):
        for f in ("op", "key", "ts", "op_id"):
            ev = make()
            del ev[f]
            out.append(cbor2.dumps(ev))
    # wrong types
    wrong = []
    for make in (_good_event, _merklekv_event):
        for f, values in WRONG_TYPES.items():
            for v in values:
                ev = make()
                ev[f] = v
                wrong.append(ev)
    out += [cbor2.dumps(ev) for ev in wrong]
    # batches with exactly one bad event among good ones
    for i, bad in enumerate(rng.choice(wrong) for _ in range(100)):
        items = [_good_event(1000 + i), bad, _good_event(2000 + i)]
        rng.shuffle(items)
        out.append(cbor2.dumps(items))
    # not a map or an array of maps
    for obj in (0, 1, -1, "text", b"bytes", 1.5, True, None, [1, 2], ["a"],
                [[_good_event()]], [_good_event(), 5], {"nested": _good_event()}):
        out.append(cbor2.dumps(obj))
    # deep nesting, nested tags, indefinite lengths never closed, stray break
    out += [b"\x81" * 100000 + b"\x00", b"\xa1\x00" * 50000 + b"\x00", b"\x9f" * 100000,
            b"\xbf" * 50000, b"\xd8\x18" * 50000 + b"\x00", b"\x81" * 5000 + b"\xa0",
            b"\xff", b"\x1c", b"\x5f\x01\xff"]
    # huge declared lengths
    big8 = (2 ** 63).to_bytes(8, "big")
    out += [b"\x5b" + big8 + b"abc", b"\x7b" + big8 + b"abc", b"\x9b" + big8 + b"\x00",
            b"\xbb" + big8 + b"\x00\x00", b"\xba\xff\xff\xff\xff" + b"\x00\x00",
            b"\x9a\xff\xff\xff\xff" + b"\xa0",
            b"\xa1\x62op\x7a\xff\xff\xff\xff" + b"set",
            b"\xa4\x63key\x5b" + big8 + b"k"]
    # random bytes
    n_random = 0
    while n_random < 600:
        p = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200)))
        if _is_malformed_for_sure(p):
            out.append(p)
            n_random += 1
    # self-check of the generator: none of these is a valid message by cbor2's reading
    for p in out:
        try:
            obj = cbor2.loads(p)
        except Exception:  # noqa: BLE001 - not CBOR at all
            continue
        assert not _valid_message(obj), obj
    return out


def test_malformed_payloads_are_counted_and_dropped(trio, make_publisher):
    rng = random.Random(20261122)
    payloads = _malformed_payloads(rng)
    assert len(payloads) >= 1000
    pub = make_publisher(trio.broker)
    base = _counters(trio, "events_malformed")
    stop = threading.Event()
    pings, errors = [], []

    def pinger():
        try:
            with trio[0].line() as c:
                while not stop.is_set():
                    assert c.request(b"PING during") == b"PONG during\r\n"
                    pings.append(1)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    t = threading.Thread(target=pinger)
    t.start()
    started = time.monotonic()
    try:
        pub.publish_many(f"{trio.prefix}/events/x", payloads)
        for p in trio:
            wait_info_int(p, "events_malformed", lambda v, p=p: v - base[p.name] >= len(payloads),
                          f"events_malformed to grow by {len(payloads)}")
        # a valid event after all of them is applied everywhere
        pub.publish(f"{trio.prefix}/events/x",
                    encode_event("set", "mf:after", "fine", time.time_ns(), src="fuzz"))
        eventually_equal(trio, "mf:after", "fine")
    finally:
        stop.set()
        t.join()
    elapsed = time.monotonic() - started
    assert not errors, errors
    assert pings, "the PING client never got an answer"
    for p in trio:
        assert line_request(p, b"PING after") == b"PONG after"
        assert info_int(p, "events_malformed") - base[p.name] == len(payloads)
        # logged at most once per second
        lines = [ln for ln in p.log_text().replace(trio.prefix, "<prefix>").splitlines()
                 if "malformed" in ln.lower() and not ln.startswith("=== ")]
        assert len(lines) <= elapsed + 2, f"{p.name} logged {len(lines)} malformed lines " \
                                          f"in {elapsed:.1f} s"


# --------------------------------------------------------------------------------------------
# Ordering, duplicates, tombstones


def test_out_of_order_and_duplicate_events(trio, make_publisher):
    pub = make_publisher(trio.broker)
    topic = f"{trio.prefix}/events/fake"
    t0 = time.time_ns()
    newer = encode_event("set", "ooo", "newer", t0 + 2000, src="fake", op_id=b"\x11" * 16)
    older = encode_event("set", "ooo", "older", t0 + 1000, src="fake", op_id=b"\x22" * 16)
    base = {p.name: info(p) for p in trio}

    def delta_is(name, n):
        for p in trio:
            wait_info_int(p, name, lambda v, p=p: v - int(base[p.name][name]) == n,
                          f"{name} to grow by {n}")

    pub.publish(topic, newer)
    eventually_equal(trio, "ooo", "newer")
    pub.publish(topic, older)
    delta_is("events_rejected", 1)
    for p in trio:
        assert get_value(p, "ooo") == b"newer"
    for _ in range(3):
        pub.publish(topic, newer)
    delta_is("events_duplicate", 3)
    delta_is("events_applied", 1)
    for p in trio:
        assert get_value(p, "ooo") == b"newer"

    # equal ts, different op_id: the larger op_id wins, whatever the arrival order
    tt = t0 + 3000
    for key, order in (("tie1", ("lo", "hi")), ("tie2", ("hi", "lo"))):
        evs = {"lo": encode_event("set", key, "low", tt, src="fake", op_id=b"\x00" * 15 + b"\x01"),
               "hi": encode_event("set", key, "high", tt, src="fake",
                                  op_id=b"\x80" + b"\x00" * 15)}
        for which in order:
            pub.publish(topic, evs[which])
    # tie1: lo then hi (applied twice); tie2: hi then lo (rejected)
    delta_is("events_applied", 4)
    delta_is("events_rejected", 2)
    eventually_equal(trio, "tie1", "high")
    eventually_equal(trio, "tie2", "high")


def test_delete_tombstone_blocks_late_older_set(trio, make_subscriber, make_publisher):
    a = trio[0]
    sub = make_subscriber(trio.broker, trio.events_topic)
    assert line_request(a, b"SET ghost alive") == b"OK"
    eventually_equal(trio, "ghost", "alive")
    assert line_request(a, b"DEL ghost") == b"DELETED"
    eventually_equal(trio, "ghost", None)
    set_ev, del_ev = sorted((e for _, e in sub.wait_events(2)), key=lambda e: e["ts"])
    assert set_ev["op"] == "set" and del_ev["op"] == "del" and del_ev["val"] is None
    late_ts = del_ev["ts"] - 1
    assert late_ts > set_ev["ts"], "the late SET must be newer than the original SET"
    base = _counters(trio, "events_rejected")
    make_publisher(trio.broker).publish(
        f"{trio.prefix}/events/fake",
        encode_event("set", "ghost", "zombie", late_ts, src="fake", op_id=b"\xff" * 16))
    for p in trio:
        wait_info_int(p, "events_rejected", lambda v, p=p: v - base[p.name] == 1,
                      "the late SET to be rejected")
    for p in trio:
        assert get_value(p, "ghost") is None
        assert line_request(p, b"EXISTS ghost") == b"EXISTS 0"
        assert line_request(p, b"DBSIZE") == b"DBSIZE 0"
        assert line_request(p, b"SCAN") == b"KEYS 0"


# --------------------------------------------------------------------------------------------
# Clock skew


def test_clock_skew(broker, make_cluster, make_subscriber):
    cl = make_cluster(3, broker, names=["normal", "ahead", "behind"],
                      per_peer={"ahead": {"faketime": "+1h"}, "behind": {"faketime": "-10m"}})
    normal, ahead, behind = cl
    now = time.time()
    assert int(info(ahead)["server_time_unix"]) - now > 3000, "faketime +1h did not take"
    assert now - int(info(behind)["server_time_unix"]) > 500, "faketime -10m did not take"
    sub = make_subscriber(broker, cl.events_topic)

    keys = [f"sk:{i}" for i in range(30)]
    errors = []

    def writer(p, seed):
        rng = random.Random(seed)
        try:
            with p.resp() as r:
                for i in range(150):
                    assert r.call("SET", rng.choice(keys), f"{p.name}-{i}") == b"OK"
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append((p.name, repr(exc)))

    threads = [threading.Thread(target=writer, args=(p, n)) for n, p in enumerate(cl)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    published = _wait_outbox_empty(cl)
    events = [e for _, e in sub.wait_events(sum(published.values()))]
    winners = lww_winners(events)
    converged(cl, keys=keys, expected={k: e["val"] for k, e in winners.items()})

    # a causally later write on the peer whose clock is behind wins everywhere
    assert line_request(ahead, b"SET ck from-ahead") == b"OK"
    eventually_equal([behind, normal], "ck", "from-ahead")
    assert line_request(behind, b"SET ck from-behind") == b"OK"
    eventually_equal(cl, "ck", "from-behind")

    # the normal peer saw ts an hour ahead: counted, and its clock was not dragged forward
    d = info(normal)
    assert int(d["clock_skew_rejections"]) > 0, d
    assert int(d["clock_skew_max_ns"]) >= 3.5e12, d
    ahead_ts = max(e["ts"] for _, e in sub.events() if e["src"] == "ahead")
    assert line_request(normal, b"SET after-skew x") == b"OK"
    mine = sub.wait_for(lambda m: [e for _, e in sub.events()
                                   if e["src"] == "normal" and e["key"] == "after-skew"],
                        what="normal's after-skew event")
    assert mine[0]["ts"] < ahead_ts - 3 * 10**12, \
        f"normal's clock followed the skewed peer: {mine[0]['ts']} vs {ahead_ts}"


# --------------------------------------------------------------------------------------------
# Broker outages, restarts, catching up


def test_broker_outage_loses_nothing(make_broker, make_cluster):
    br = make_broker(persistence=True)
    cl = make_cluster(3, br, names=["a", "b", "c"])
    a = cl[0]
    br.save()  # the peers' persistent sessions are on disk before the kill
    br.kill()
    for p in cl:
        wait_info(p, lambda d: d["broker_state"] != "connected", "to notice the broker is gone")
    items = [(f"out:{i}", f"value-{i}") for i in range(1000)]
    _pipeline_sets(a, items)
    assert info_int(a, "outbox_depth") == 1000
    br.restart()
    wait_replicating(cl)
    wait_info_int(a, "outbox_depth", lambda v: v == 0, "the outbox to drain")
    converged(cl, expected=dict(items))
    for p in cl:
        assert line_request(p, b"DBSIZE") == b"DBSIZE 1000"
        with p.line() as c:
            assert c.request_lines(b"SCAN out:", 1)[0] == b"KEYS 1000\r\n"


def test_outbox_survives_writer_restart_during_outage(make_broker, make_cluster):
    br = make_broker(persistence=True)
    cl = make_cluster(2, br, names=["a", "b"])
    a, b = cl
    br.save()
    br.kill()
    wait_info(a, lambda d: d["broker_state"] != "connected", "to notice the broker is gone")
    items = [(f"rs:{i}", f"v{i}") for i in range(300)]
    _pipeline_sets(a, items)
    a.stop()   # SIGTERM while the broker is down: exits 0, promptly
    a.start()
    d = info(a)
    assert d["outbox_depth"] == "300" and d["broker_state"] != "connected", d
    br.restart()
    wait_info_int(a, "outbox_depth", lambda v: v == 0, "the outbox to drain after restarts")
    converged(cl, expected=dict(items))


def test_stopped_peer_catches_up_from_its_queue(make_broker, make_cluster):
    br = make_broker(persistence=True)
    cl = make_cluster(3, br, names=["a", "b", "c"])
    a, b, c = cl
    pre = [(f"cu:pre:{i}", "old") for i in range(200)]
    _pipeline_sets(a, pre)
    converged(cl, expected=dict(pre))
    c.stop()
    # 2,000 writes while c is away: pipelined on a, one request at a time on b
    _pipeline_sets(a, [(f"cu:a:{i}", f"a{i}") for i in range(1500)])
    with b.resp() as r:
        for i in range(0, 200):
            assert r.call("SET", f"cu:pre:{i}", f"new{i}") == b"OK"
        for i in range(0, 200, 4):
            assert r.call("DEL", f"cu:pre:{i}") == 1
        for i in range(250):
            assert r.call("INCR", "cu:counter") == i + 1
    _wait_outbox_empty([a, b])
    c.start()
    expected = snapshot(a)
    assert len(expected) == 1500 + 150 + 1
    converged(cl, expected=expected)
    wait_replicating(cl)


# --------------------------------------------------------------------------------------------
# Presence and REPLICATE


def _presence(sub):
    """Latest presence per node: {node topic suffix: (parsed JSON, retain flag)}."""
    out = {}
    for topic, payload, retain in sub.messages():
        if payload:
            out[topic.rsplit("/", 1)[1]] = (json.loads(payload), retain)
    return out


def test_presence_and_last_will(broker, make_cluster, make_subscriber):
    cl = make_cluster(3, broker, names=["a", "b", "c"], repl={"keepalive_seconds": 2})
    a, b, c = cl
    for p in cl:
        assert line_request(p, b"REPLICATE status") == b"REPLICATION enabled 2 nodes"
    sub = make_subscriber(broker, f"{cl.prefix}/nodes/#")
    pres = sub.wait_for(lambda m: (lambda d: d if len(d) == 3 else None)(_presence(sub)),
                        what="three presence messages")
    version = line_request(a, b"VERSION").split()[1].decode()
    for p in cl:
        doc, retained = pres[p.name]
        assert retained, "presence must be retained"
        assert doc["node"] == p.name and doc["status"] == "online", doc
        assert doc["addr"] == f"127.0.0.1:{p.port}", doc
        assert type(doc["keys"]) is int and type(doc["root"]) is str, doc
        assert doc["version"] == version and type(doc["ts"]) is int, doc
    assert {t for t, _, _ in sub.messages()} == {f"{cl.prefix}/nodes/{n}" for n in "abc"}

    # SIGKILL: the broker publishes the last will after 1.5 keep-alives
    c.kill()
    sub.wait_for(lambda m: _presence(sub)["c"][0]["status"] == "offline",
                 what="c's last will (status offline)")
    will = _presence(sub)["c"][0]
    assert will["node"] == "c", will
    for p in (a, b):
        wait_info(p, lambda d: d["peers_online"] == "1", "peers_online:1 after c died")
        assert line_request(p, b"REPLICATE status") == b"REPLICATION enabled 1 nodes"

    # back: online again, and it catches up with what it missed
    assert line_request(a, b"SET while-c-was-dead yes") == b"OK"
    c.start()
    sub.wait_for(lambda m: _presence(sub)["c"][0]["status"] == "online",
                 what="c's presence online again")
    wait_replicating(cl)
    eventually_equal([c], "while-c-was-dead", "yes")
    for p in cl:
        assert line_request(p, b"REPLICATE status") == b"REPLICATION enabled 2 nodes"


def test_replicate_disable_enable_at_run_time(broker, make_cluster, make_subscriber):
    cl = make_cluster(3, broker, names=["a", "b", "c"])
    a, b, c = cl
    sub = make_subscriber(broker, f"{cl.prefix}/nodes/#")
    sub.wait_for(lambda m: len(_presence(sub)) == 3, what="three presence messages")

    assert line_request(a, b"REPLICATE disable") == b"OK"
    assert line_request(a, b"REPLICATE status") == b"REPLICATION disabled"
    d = wait_info(a, lambda d: d["broker_state"] == "disabled", "broker_state:disabled")
    assert d["replication_enabled"] == "0", d
    sub.wait_for(lambda m: _presence(sub)["a"][0]["status"] == "offline",
                 what="a's presence to go offline after REPLICATE disable")
    for p in (b, c):
        wait_info(p, lambda d: d["peers_online"] == "1", f"{p.name} to see a go offline")
        assert line_request(p, b"REPLICATE status") == b"REPLICATION enabled 1 nodes"
    # local writes go on, into the outbox
    assert line_request(a, b"SET while-disabled yes") == b"OK"
    assert info_int(a, "outbox_depth") == 1
    # and a applies nothing while disabled: b's write waits for it in the broker
    assert line_request(b, b"SET from-b-meanwhile 1") == b"OK"
    eventually_equal([c], "from-b-meanwhile", "1")
    assert get_value(b, "while-disabled") is None

    assert line_request(a, b"replicate ENABLE") == b"OK"
    wait_info(a, lambda d: d["broker_state"] == "connected" and d["replication_enabled"] == "1",
              "reconnected after REPLICATE enable")
    eventually_equal([b, c], "while-disabled", "yes")
    eventually_equal([a], "from-b-meanwhile", "1")
    wait_info_int(a, "outbox_depth", lambda v: v == 0)
    wait_replicating(cl)
    sub.wait_for(lambda m: _presence(sub)["a"][0]["status"] == "online",
                 what="a's presence online again")
    for p in cl:
        assert line_request(p, b"REPLICATE status") == b"REPLICATION enabled 2 nodes"


def test_replicate_enable_on_a_node_started_disabled(broker, make_cluster, make_peer):
    cl = make_cluster(1, broker, names=["a"])
    late = make_peer("late", conf={"replication": repl_conf(broker, cl.prefix, enabled=False)})
    assert line_request(late, b"REPLICATE status") == b"REPLICATION disabled"
    assert info(late)["broker_state"] == "disabled"
    assert line_request(late, b"SET early-write 1") == b"OK"
    assert line_request(late, b"REPLICATE enable") == b"OK"
    wait_replicating([cl[0], late])
    assert line_request(late, b"SET later-write 2") == b"OK"
    eventually_equal([cl[0]], "later-write", "2")


# --------------------------------------------------------------------------------------------
# Credentials, start-up without a broker


def test_broker_credentials(make_broker, make_cluster, make_peer):
    br = make_broker(username="arbor", password="s3cret")
    cl = make_cluster(2, br, names=["a", "b"])
    a, b = cl
    assert line_request(a, b"SET secured yes") == b"OK"
    eventually_equal([b], "secured", "yes")
    refused_before = br.log_count("not authorised")
    bad = make_peer("bad", conf={"replication": repl_conf(br, cl.prefix,
                                                          client_password="wrong")})
    wait_until(lambda: br.log_count("not authorised") >= refused_before + 2, REPL_TIMEOUT_S,
               "the broker to refuse the wrong password twice (bad keeps retrying)")
    d = info(bad)
    assert d["broker_state"] == "connecting" and d["broker_connects"] == "0", d
    assert line_request(bad, b"PING") == b"PONG"
    assert line_request(bad, b"SET local still-works") == b"OK"
    assert line_request(bad, b"GET local") == b"VALUE still-works"
    for p in cl:
        d = info(p)
        assert d["peers_online"] == "1" and d["broker_state"] == "connected", d


def test_listener_answers_before_the_broker_is_reachable(make_broker, make_peer, request):
    br = make_broker(start=False)
    prefix = unique_prefix(request)
    p = make_peer("early", conf={"replication": repl_conf(br, prefix)})  # waits for PONG only
    d = info(p)
    assert d["replication_enabled"] == "1" and d["broker_state"] == "connecting", d
    assert line_request(p, b"SET before-broker 1") == b"OK"
    assert line_request(p, b"GET before-broker") == b"VALUE 1"
    assert info_int(p, "outbox_depth") == 1
    br.start()
    wait_info(p, lambda d: d["broker_state"] == "connected" and d["outbox_depth"] == "0"
              and d["events_published"] == "1" and d["broker_connects"] == "1",
              "connected, outbox drained")


# --------------------------------------------------------------------------------------------
# tools/arborkv-watch


def _read_line(proc, deadline, stream):
    buf = b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no line from arborkv-watch; have {buf!r}")
        r, _, _ = select.select([stream], [], [], left)
        if r:
            ch = os.read(stream.fileno(), 1)
            if not ch:
                raise EOFError(f"arborkv-watch closed its output; have {buf!r}")
            buf += ch
    return buf.decode()


def test_arborkv_watch_prints_events_as_json(broker, make_cluster, make_publisher):
    cl = make_cluster(1, broker, names=["w"])
    w = cl[0]
    cmd = ["/usr/bin/python3", str(WATCH), "--host", LOOPBACK, "--port", str(broker.port),
           "--prefix", cl.prefix, "--presence", "--count", "6"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = _read_line(proc, time.monotonic() + IO_TIMEOUT_S, proc.stderr)
        assert "subscribed" in first, first
        assert line_request(w, b"SET watch:text hello world") == b"OK"
        with w.resp() as r:
            assert r.call("SET", b"watch:\xfe", b"\x00\xff") == b"OK"
            assert r.call("INCR", "watch:n") == 1
        assert line_request(w, b"DEL watch:text") == b"DELETED"
        # w's four events are with the broker before the crafted ones: they print first
        wait_info(w, lambda d: d["outbox_depth"] == "0" and d["events_published"] == "4",
                  "w's 4 events published")
        pub = make_publisher(broker)
        pub.publish(f"{cl.prefix}/events/x", b"\xff\xfe not cbor")
        pub.publish(f"{cl.prefix}/events",
                    encode_event("set", "watch:mkv", b"mk", time.time_ns(), src="mkv",
                                 op_id=bytes(range(16)), merklekv=True))
        out, err = proc.communicate(timeout=IO_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    docs = [json.loads(ln) for ln in out.decode().splitlines()]
    presence = [d for d in docs if "presence" in d]
    events = [d for d in docs if "op" in d]
    errors = [d for d in docs if "error" in d]
    assert len(events) == 5 and len(errors) == 1, docs
    assert presence and presence[0]["topic"] == f"{cl.prefix}/nodes/w"
    assert presence[0]["presence"]["status"] == "online"
    for e in events[:4]:
        assert e["topic"] == f"{cl.prefix}/events/w" and e["src"] == "w", e
        assert set(e) == {"topic", "op", "key", "value", "ts", "src", "op_id"}, e
        assert re.fullmatch(r"[0-9a-f]{32}", e["op_id"]), e
        assert type(e["ts"]) is int, e
    assert events[0]["op"] == "set" and events[0]["key"] == "watch:text"
    assert events[0]["value"] == "hello world"
    assert events[1]["key"] == {"hex": b"watch:\xfe".hex()}
    assert events[1]["value"] == {"hex": "00ff"}
    assert events[2]["key"] == "watch:n" and events[2]["value"] == "1"
    assert events[3]["op"] == "del" and events[3]["value"] is None
    assert errors[0]["topic"] == f"{cl.prefix}/events/x"
    assert events[4]["topic"] == f"{cl.prefix}/events" and events[4]["value"] == "mk"
    assert events[4]["op_id"] == bytes(range(16)).hex()
