# SPDX-License-Identifier: MIT
"""RESP2 front end (protocol.md §5): exact reply bytes on a raw socket, protocol errors, and a
python3-redis session."""

import re

import pytest
import redis

from conftest import SEMVER_RE


def test_ping_echo(rc):
    assert rc.call_raw("PING") == b"+PONG\r\n"
    assert rc.call_raw("ping", "hello") == b"$5\r\nhello\r\n"
    assert rc.call_raw("ECHO", "hi there") == b"$8\r\nhi there\r\n"
    assert rc.call_raw("ECHO", "") == b"$0\r\n\r\n"


def test_get_set(rc):
    assert rc.call_raw("GET", "a") == b"$-1\r\n"
    assert rc.call_raw("SET", "a", "b") == b"+OK\r\n"
    assert rc.call_raw("GET", "a") == b"$1\r\nb\r\n"
    assert rc.call_raw("set", "a", "") == b"+OK\r\n"
    assert rc.call_raw("GET", "a") == b"$0\r\n\r\n"
    assert rc.call_raw("SET", "a", "x y  z ") == b"+OK\r\n"
    assert rc.call_raw("GET", "a") == b"$7\r\nx y  z \r\n"


def test_set_nx_xx(rc):
    assert rc.call_raw("SET", "k", "1", "NX") == b"+OK\r\n"
    assert rc.call_raw("SET", "k", "2", "NX") == b"$-1\r\n"
    assert rc.call_raw("GET", "k") == b"$1\r\n1\r\n"
    assert rc.call_raw("SET", "k", "3", "xx") == b"+OK\r\n"
    assert rc.call_raw("SET", "nope", "3", "XX") == b"$-1\r\n"
    assert rc.call_raw("GET", "k") == b"$1\r\n3\r\n"
    assert rc.call_raw("EXISTS", "nope") == b":0\r\n"
    assert rc.call_raw("SET", "k", "4", "NX", "XX").startswith(b"-ERR")


def test_set_with_ttl_rejected(rc):
    for opt in (["EX", "10"], ["PX", "100"]):
        got = rc.call_raw("SET", "t", "v", *opt)
        assert got.startswith(b"-ERR ") and got.endswith(b"\r\n"), got
    assert rc.call_raw("EXISTS", "t") == b":0\r\n"
    assert rc.call_raw("PING") == b"+PONG\r\n"


def test_del_exists_unlink(rc):
    assert rc.call_raw("MSET", "a", "1", "b", "2", "c", "3") == b"+OK\r\n"
    assert rc.call_raw("EXISTS", "a", "a", "zz", "b") == b":3\r\n"
    assert rc.call_raw("DEL", "a", "b", "zz") == b":2\r\n"
    assert rc.call_raw("DEL", "a") == b":0\r\n"
    assert rc.call_raw("UNLINK", "c", "a") == b":1\r\n"
    assert rc.call_raw("DBSIZE") == b":0\r\n"


def test_incr_decr(rc):
    assert rc.call_raw("INCR", "n") == b":1\r\n"
    assert rc.call_raw("INCRBY", "n", "10") == b":11\r\n"
    assert rc.call_raw("DECR", "n") == b":10\r\n"
    assert rc.call_raw("DECRBY", "n", "20") == b":-10\r\n"
    assert rc.call_raw("INCRBY", "n", "-5") == b":-15\r\n"
    assert rc.call_raw("GET", "n") == b"$3\r\n-15\r\n"
    assert rc.call_raw("DECR", "m") == b":-1\r\n"


def test_incr_errors(rc):
    assert rc.call_raw("SET", "s", "abc") == b"+OK\r\n"
    assert rc.call_raw("INCR", "s") == b"-ERR value is not an integer or out of range\r\n"
    assert rc.call_raw("INCRBY", "n", "x") == b"-ERR value is not an integer or out of range\r\n"
    assert rc.call_raw("SET", "max", "9223372036854775807") == b"+OK\r\n"
    assert rc.call_raw("INCR", "max") == b"-ERR increment or decrement would overflow\r\n"
    assert rc.call_raw("GET", "max") == b"$19\r\n9223372036854775807\r\n"
    assert rc.call_raw("GET", "s") == b"$3\r\nabc\r\n"


def test_append_prepend_strlen(rc):
    assert rc.call_raw("APPEND", "a", "xy") == b":2\r\n"
    assert rc.call_raw("APPEND", "a", "z") == b":3\r\n"
    assert rc.call_raw("PREPEND", "a", "<<") == b":5\r\n"
    assert rc.call_raw("GET", "a") == b"$5\r\n<<xyz\r\n"
    assert rc.call_raw("STRLEN", "a") == b":5\r\n"
    assert rc.call_raw("STRLEN", "missing") == b":0\r\n"


def test_mget_mset(rc):
    assert rc.call_raw("MSET", "a", "1", "b", "two") == b"+OK\r\n"
    assert rc.call_raw("MGET", "a", "zz", "b") == b"*3\r\n$1\r\n1\r\n$-1\r\n$3\r\ntwo\r\n"
    assert rc.call_raw("MGET", "x") == b"*1\r\n$-1\r\n"
    assert rc.call_raw("MSET", "a", "1", "b") == \
        b"-ERR wrong number of arguments for 'mset' command\r\n"


def test_dbsize_flushdb(rc):
    assert rc.call_raw("DBSIZE") == b":0\r\n"
    assert rc.call_raw("MSET", "a", "1", "b", "2") == b"+OK\r\n"
    assert rc.call_raw("DBSIZE") == b":2\r\n"
    assert rc.call_raw("FLUSHDB") == b"+OK\r\n"
    assert rc.call_raw("DBSIZE") == b":0\r\n"
    assert rc.call_raw("GET", "a") == b"$-1\r\n"


def test_setnx_getset_getdel_type_ttl(rc):
    assert rc.call_raw("SETNX", "k", "1") == b":1\r\n"
    assert rc.call_raw("SETNX", "k", "2") == b":0\r\n"
    assert rc.call_raw("GETSET", "k", "3") == b"$1\r\n1\r\n"
    assert rc.call_raw("GETSET", "new", "x") == b"$-1\r\n"
    assert rc.call_raw("GETDEL", "k") == b"$1\r\n3\r\n"
    assert rc.call_raw("GETDEL", "k") == b"$-1\r\n"
    assert rc.call_raw("TYPE", "new") == b"+string\r\n"
    assert rc.call_raw("TYPE", "k") == b"+none\r\n"
    assert rc.call_raw("TTL", "new") == b":-1\r\n"
    assert rc.call_raw("PTTL", "new") == b":-1\r\n"
    assert rc.call_raw("TTL", "k") == b":-2\r\n"
    assert rc.call_raw("PTTL", "k") == b":-2\r\n"


def test_keys_and_scan(rc):
    keys = [b"user:1", b"user:2", b"user:10", b"hello", b"hallo", b"hxllo", b"other"]
    for k in keys:
        assert rc.call("SET", k, "v") == b"OK"
    assert sorted(rc.call("KEYS", "*")) == sorted(keys)
    assert sorted(rc.call("KEYS", "user:*")) == [b"user:1", b"user:10", b"user:2"]
    assert sorted(rc.call("KEYS", "h?llo")) == [b"hallo", b"hello", b"hxllo"]
    assert sorted(rc.call("KEYS", "h[ae]llo")) == [b"hallo", b"hello"]
    assert rc.call("KEYS", "nomatch*") == []

    def scan_all(*extra):
        seen, cursor, rounds = [], b"0", 0
        while True:
            reply = rc.call("SCAN", cursor, *extra)
            assert isinstance(reply, list) and len(reply) == 2, reply
            cursor, batch = reply
            assert isinstance(cursor, bytes) and re.fullmatch(rb"\d+", cursor), cursor
            seen += batch
            rounds += 1
            assert rounds < 1000, "SCAN does not terminate"
            if cursor == b"0":
                return seen

    assert sorted(set(scan_all())) == sorted(keys)
    assert sorted(set(scan_all("COUNT", "2"))) == sorted(keys)
    assert sorted(set(scan_all("MATCH", "user:*", "COUNT", "1"))) == [b"user:1", b"user:10",
                                                                    b"user:2"]
    raw = rc.call_raw("SCAN", "0", "MATCH", "nomatch*", "COUNT", "1000")
    assert raw == b"*2\r\n$1\r\n0\r\n*0\r\n", raw


def test_info(rc):
    info = rc.call("INFO")
    assert isinstance(info, bytes)
    text = info.decode()
    assert text.startswith("# Server\r\n")
    for ln in text.split("\r\n"):
        assert ln == "" or ln.startswith("# ") or re.fullmatch(r"[a-z0-9_]+:.*", ln), ln
    srv = rc.call("INFO", "server").decode()
    assert "# Server\r\n" in srv
    assert "redis_version:" in srv or "arborkv_version:" in srv or "version:" in srv


def test_command_and_config(rc):
    n = rc.call("COMMAND", "COUNT")
    assert isinstance(n, int) and n > 10
    cmds = rc.call("COMMAND")
    assert isinstance(cmds, list) and len(cmds) == n
    names = {c[0].lower() for c in cmds}
    assert {b"get", b"set", b"del", b"mget", b"mset", b"incr", b"ping", b"scan"} <= names
    docs = rc.call("COMMAND", "DOCS")
    assert isinstance(docs, list)
    for args in (("save",), ("appendonly",), ("*",)):
        v = rc.call("CONFIG", "GET", *args)
        assert isinstance(v, list) and len(v) % 2 == 0, (args, v)


def test_select(rc):
    assert rc.call_raw("SELECT", "0") == b"+OK\r\n"
    got = rc.call_raw("SELECT", "1")
    assert got.startswith(b"-ERR") and got.endswith(b"\r\n"), got
    assert rc.call_raw("PING") == b"+PONG\r\n"


def test_hello(rc):
    v = rc.call("HELLO", "2")
    assert isinstance(v, list) and len(v) % 2 == 0
    d = dict(zip(v[::2], v[1::2]))
    assert d.get(b"proto") == 2
    got = rc.call_raw("HELLO", "3")
    assert got.startswith(b"-NOPROTO") and got.endswith(b"\r\n"), got
    assert rc.call_raw("PING") == b"+PONG\r\n"


def test_store_commands(rc):
    h = rc.call("HASH")
    assert re.search(rb"\b0{64}\b", h if isinstance(h, bytes) else b" ".join(h)), h
    assert rc.call("SET", "a", "1") == b"OK"
    h2 = rc.call("HASH")
    assert re.search(rb"\b[0-9a-f]{64}\b", h2) and b"0" * 64 not in h2, h2
    v = rc.call("VERSION")
    assert SEMVER_RE.search(v), v
    st = rc.call("STATS")
    blob = st if isinstance(st, bytes) else b"\n".join(st)
    assert b"total_commands" in blob
    assert rc.call("REPLICATE", "status") == b"REPLICATION disabled"


def test_client_commands(rc):
    cid = rc.call("CLIENT", "ID")
    assert isinstance(cid, int) and cid > 0
    assert rc.call_raw("CLIENT", "GETNAME") == b"$-1\r\n"
    assert rc.call_raw("CLIENT", "SETNAME", "worker1") == b"+OK\r\n"
    assert rc.call_raw("CLIENT", "GETNAME") == b"$7\r\nworker1\r\n"
    assert rc.call_raw("CLIENT", "SETINFO", "lib-name", "pytest") == b"+OK\r\n"
    assert rc.call_raw("CLIENT", "SETINFO", "lib-ver", "1.0") == b"+OK\r\n"
    lst = rc.call("CLIENT", "LIST").decode()
    mine = "%s:%d" % rc.sock.getsockname()
    line = [ln for ln in lst.splitlines() if f"addr={mine}" in ln]
    assert len(line) == 1, lst
    assert f"id={cid} " in line[0] and "name=worker1" in line[0], line[0]


def test_unknown_command_and_arity(rc):
    assert rc.call_raw("FOO", "a", "b") == \
        b"-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n"
    assert rc.call_raw("nosuch") == b"-ERR unknown command 'nosuch', with args beginning with: \r\n"
    assert rc.call_raw("get") == b"-ERR wrong number of arguments for 'get' command\r\n"
    assert rc.call_raw("get", "a", "b") == b"-ERR wrong number of arguments for 'get' command\r\n"
    assert rc.call_raw("set", "a") == b"-ERR wrong number of arguments for 'set' command\r\n"
    assert rc.call_raw("PING") == b"+PONG\r\n"


def test_quit(peer):
    with peer.resp() as c:
        c.send(c.encode("QUIT") + c.encode("PING"))
        assert c.read_reply_raw() == b"+OK\r\n"
        c.assert_closed()


def test_binary_safe_values(rc, peer):
    key = b"bin\r\nkey\x00 \t"
    val = b"\x00\r\n\xff\xfe" * 1000 + b"\r\n"
    assert rc.call_raw("SET", key, val) == b"+OK\r\n"
    assert rc.call_raw("GET", key) == b"$%d\r\n%s\r\n" % (len(val), val)
    assert rc.call("EXISTS", key) == 1
    assert key in rc.call("KEYS", "bin*")
    assert rc.call("STRLEN", key) == len(val)


def test_large_value_roundtrip(rc):
    val = bytes(range(256)) * (4 * 4096)  # 4 MiB
    assert rc.call("SET", "big", val, timeout_s=120) == b"OK"
    assert rc.call("GET", "big", timeout_s=120) == val


def test_both_protocols_see_the_same_data(peer, rc):
    with peer.line() as lc:
        assert lc.request(b"SET fromline hello world") == b"OK\r\n"
        assert rc.call_raw("GET", "fromline") == b"$11\r\nhello world\r\n"
        assert rc.call_raw("SET", "fromresp", "x\ty") == b"+OK\r\n"
        assert lc.request(b"GET fromresp") == b"VALUE x\ty\r\n"
        assert rc.call_raw("INCR", "cnt") == b":1\r\n"
        assert lc.request(b"INC cnt") == b"VALUE 2\r\n"


def test_pipelined_requests(rc):
    blob = b"".join(rc.encode("SET", f"k{i}", f"v{i}") + rc.encode("GET", f"k{i}")
                    for i in range(500))
    rc.send(blob)
    for i in range(500):
        assert rc.read_reply_raw(timeout_s=60) == b"+OK\r\n"
        v = b"v%d" % i
        assert rc.read_reply_raw(timeout_s=60) == b"$%d\r\n%s\r\n" % (len(v), v)
    rc.assert_no_data()


def test_frames_split_at_every_byte(rc):
    frame = rc.encode("SET", "split", "value") + rc.encode("GET", "split")
    for b in frame:
        rc.send(bytes([b]))
    assert rc.read_reply_raw() == b"+OK\r\n"
    assert rc.read_reply_raw() == b"$5\r\nvalue\r\n"


PROTOCOL_GARBAGE = [
    b"*abc\r\n",
    b"*1\r\n$abc\r\n",
    b"*1\r\n$-5\r\n",
    b"*1\r\n$\r\n",
    b"*1\r\n*1\r\n$1\r\na\r\n",          # nested array
    b"*2\r\n*2\r\n*2\r\n$1\r\na\r\n",     # deeper nesting
    b"*2\r\n:1\r\n:2\r\n",                # integers instead of bulk strings
    b"*1\r\n+OK\r\n",
    b"*1\r\n\r\n",
    b"*99999999999\r\n",                  # more arguments than any limit
    b"*" + b"9" * 40 + b"\r\n",           # length overflows 64 bits
    b"*1\r\n$99999999999\r\n",            # bulk longer than any limit
    b"*1\r\n$" + b"9" * 40 + b"\r\n",
    b"*1\r\n$1x\r\n",
    b"*1x\r\n$1\r\na\r\n",
]


@pytest.mark.parametrize("garbage", PROTOCOL_GARBAGE, ids=[repr(g)[2:30] for g in PROTOCOL_GARBAGE])
def test_protocol_error_closes_and_spares_others(peer, garbage):
    with peer.resp() as good, peer.resp() as bad:
        assert good.call_raw("SET", "safe", "1") == b"+OK\r\n"
        bad.send(garbage)
        reply = bad.read_until_closed(timeout_s=60)
        assert reply.startswith(b"-ERR Protocol error: ") and reply.endswith(b"\r\n"), reply
        assert reply.count(b"\r\n") == 1, reply
        assert good.call_raw("GET", "safe") == b"$1\r\n1\r\n"
        assert good.call_raw("PING") == b"+PONG\r\n"


@pytest.mark.parametrize("truncated", [b"*2\r\n$3\r\nGET\r\n$5\r\nab", b"*3\r\n$3\r\nSET\r\n",
                                       b"*1\r\n$4\r\nPI", b"*2", b"*1\r\n$"])
def test_truncated_frame_at_eof(peer, truncated):
    with peer.resp() as good, peer.resp() as bad:
        bad.send(truncated)
        bad.shutdown_write()
        reply = bad.read_until_closed(timeout_s=60)
        assert reply == b"" or (reply.startswith(b"-ERR Protocol error: ")
                                and reply.count(b"\r\n") == 1), reply
        assert good.call_raw("PING") == b"+PONG\r\n"


def test_incomplete_frame_waits_for_the_rest(rc):
    rc.send(b"*2\r\n$4\r\nECHO\r\n$5\r\nhel")
    rc.assert_no_data(0.3)
    rc.send(b"lo\r\n")
    assert rc.read_reply_raw() == b"$5\r\nhello\r\n"


def test_python_redis_session(peer):
    r = redis.Redis(host="127.0.0.1", port=peer.port, socket_timeout=60)
    try:
        assert r.ping() is True
        assert r.set("a", "1") is True
        assert r.get("a") == b"1"
        assert r.get("missing") is None
        assert r.mset({"b": "2", "c": "3", "user:1": "x", "user:2": "y"}) is True
        assert r.mget(["a", "b", "zz", "c"]) == [b"1", b"2", None, b"3"]
        assert r.incr("n") == 1
        assert r.incr("n", 5) == 6
        assert r.decr("n") == 5
        assert r.exists("a", "b", "zz") == 2
        assert r.delete("a", "zz") == 1
        assert r.exists("a") == 0
        assert sorted(r.scan_iter(match="user:*", count=1)) == [b"user:1", b"user:2"]
        assert sorted(r.keys("user:*")) == [b"user:1", b"user:2"]
        assert r.dbsize() == 5
        pipe = r.pipeline(transaction=False)
        for i in range(100):
            pipe.set(f"p{i}", i)
            pipe.get(f"p{i}")
        res = pipe.execute()
        assert res == [x for i in range(100) for x in (True, str(i).encode())]
        info = r.info()
        assert isinstance(info, dict) and info
        assert r.info("server")
        assert r.dbsize() == 105
        assert r.append("b", "x") == 2
        assert r.getset("b", "z") == b"2x"
        assert r.flushdb() is True
        assert r.dbsize() == 0
    finally:
        r.close()


def test_python_redis_transaction_pipeline(peer):
    r = redis.Redis(host="127.0.0.1", port=peer.port, socket_timeout=60)
    try:
        pipe = r.pipeline()  # MULTI/EXEC
        pipe.set("t1", "a").incr("t2").get("t1")
        assert pipe.execute() == [True, 1, b"a"]
    finally:
        r.close()


def test_python_redis_binary_values(peer):
    r = redis.Redis(host="127.0.0.1", port=peer.port, socket_timeout=60)
    try:
        val = b"line1\r\nline2\x00\xff\n"
        assert r.set(b"k\x00\r\n", val)
        assert r.get(b"k\x00\r\n") == val
    finally:
        r.close()
