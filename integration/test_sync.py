# SPDX-License-Identifier: MIT
"""SYNC host port [--full] [--verify] (replication.md §4, docs/anti-entropy.md "SYNC").

Against an arborkv peer SYNC descends the two Merkle trees and fetches only the records of the
differing buckets (or every record with --full); against a server that only speaks the line
protocol (a small fake MerkleKV below) it falls back to SCAN + GET. Either way, after OK the
local node holds exactly the remote's live data. Errors (refused, silent or closing remotes,
resolver failures) end in ERROR without wedging the client, and the event loop keeps serving
other clients while a SYNC waits. A relay in front of an arborkv peer (RespRelay below) cuts the
RESP replies SYNC reads at every place, or replaces one with a malformed, oversized or partial
reply: SYNC keeps the limits of mirror.h and answers the errors of docs/anti-entropy.md.
"""

import hashlib
import socket
import struct
import select
import threading
import time

import pytest

from conftest import (LOOPBACK, RespError, free_port, info, info_int, line_request, snapshot,
                      wait_until)

E = b"ERROR "


# --------------------------------------------------------------------------------------------
# A fake MerkleKV: line protocol only (SCAN, GET, SET, DEL, VERSION, HASH), MerkleKV's replies.


def live_hash(data):
    """HASH as arborkv computes it (docs/protocol.md): BLAKE2b-256 over len64le(key) key
    len64le(value) value in key order; 64 zeros when empty."""
    if not data:
        return "0" * 64
    h = hashlib.blake2b(digest_size=32)
    for k in sorted(data):
        v = data[k]
        h.update(struct.pack("<Q", len(k)) + k + struct.pack("<Q", len(v)) + v)
    return h.hexdigest()



def _listening_socket():
    """A loopback listening socket on a free port that polls accept() every 0.1 s: (sock, port)."""
    port = free_port()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, port))
    sock.listen(16)
    sock.settimeout(0.1)
    return sock, port

class FakeMerkleKV:
    """A threaded loopback server speaking MerkleKV's line protocol.

    hash: answer HASH (else it is an unknown command). stall: accept connections, read and
    discard, never answer, until release() (which closes them).
    """

    def __init__(self, data=None, *, hash=True, stall=False):
        self.data = {bytes(k): bytes(v) for k, v in (data or {}).items()}
        self.hash = hash
        self.stall = stall
        self.lines = []          # every request line received
        self.accepted = threading.Event()
        self.lock = threading.Lock()
        self.conns = []
        self.stopping = False
        self.released = False
        self.sock, self.port = _listening_socket()
        self.threads = [threading.Thread(target=self._accept_loop, daemon=True)]
        self.threads[0].start()

    def _accept_loop(self):
        while not self.stopping:
            try:
                s, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if self.released:  # gone: take the request (so the close is a clean FIN), close
                s.settimeout(2)
                try:
                    s.recv(65536)
                except OSError:
                    pass
                s.close()
                continue
            s.settimeout(0.1)
            with self.lock:
                self.conns.append(s)
            self.accepted.set()
            t = threading.Thread(target=self._serve, args=(s,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, s):
        buf = b""
        while not self.stopping:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not chunk:
                break
            if self.stall:
                continue
            buf += chunk
            out = []
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                with self.lock:
                    self.lines.append(line.rstrip(b"\r"))
                out.append(self.handle(line.rstrip(b"\r")))
            try:
                s.sendall(b"".join(out))
            except OSError:
                return
        try:
            s.close()
        except OSError:
            pass

    def handle(self, line):
        line = line.strip(b" \t\r\v\f")
        if not line:
            return b"ERROR Empty command\r\n"
        word, sp, rest = line.partition(b" ")
        w = word.upper()
        with self.lock:
            if w == b"SCAN":
                keys = sorted(k for k in self.data if k.startswith(rest))
                return b"KEYS %d\r\n" % len(keys) + b"".join(k + b"\r\n" for k in keys)
            if w == b"GET" and sp:
                v = self.data.get(rest)
                return b"NOT_FOUND\r\n" if v is None else b"VALUE " + v + b"\r\n"
            if w == b"SET" and b" " in rest:
                k, _, v = rest.partition(b" ")
                self.data[k] = v
                return b"OK\r\n"
            if w in (b"DEL", b"DELETE") and sp:
                return b"DELETED\r\n" if self.data.pop(rest, None) is not None else b"NOT_FOUND\r\n"
            if w == b"VERSION":
                return b"VERSION 0.0.0-fake\r\n"
            if w == b"HASH" and self.hash:
                return b"HASH " + live_hash(self.data).encode() + b"\r\n"
        return b"ERROR Unknown command: " + word + b"\r\n"

    def release(self):
        """Closes every accepted connection, and those accepted later (the remote goes away)."""
        self.released = True
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.stopping = True
        self.release()
        self.sock.close()
        for t in self.threads:
            t.join(timeout=5)


@pytest.fixture
def fake_kv():
    fakes = []

    def make(data=None, **kw):
        f = FakeMerkleKV(data, **kw)
        fakes.append(f)
        return f

    yield make
    for f in fakes:
        f.close()


# --------------------------------------------------------------------------------------------
# A relay in front of an arborkv peer, for SYNC's RESP path.

MIRROR_MAX_BULK = 64 * 1024 * 1024 + 512 * 1024  # include/arborkv/mirror.h
RESP_MAX_LINE_BYTES = 64 * 1024                  # include/arborkv/resp.h


def _resp_request(buf):
    """(arguments, rest) of the RESP request (an array of bulk strings) at the start of buf, or
    (None, buf) while incomplete."""
    end = buf.find(b"\r\n")
    if end < 0:
        return None, buf
    assert buf[:1] == b"*", buf[:40]
    pos, args = end + 2, []
    for _ in range(int(buf[1:end])):
        end = buf.find(b"\r\n", pos)
        if end < 0:
            return None, buf
        n = int(buf[pos + 1:end])
        if len(buf) < end + 2 + n + 2:
            return None, buf
        args.append(buf[end + 2:end + 2 + n])
        pos = end + 2 + n + 2
    return args, buf[pos:]


def _resp_encode(args):
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


SEND_TIMEOUT_S = 120  # RespRelay: how long one reply may take to leave

class RespRelay:
    """A loopback relay in front of the client port of an arborkv peer.

    Each RESP request goes to the peer and the peer's reply comes back, unless answer(args)
    returns bytes: those are sent instead, as they are, and the connection stays open until SYNC
    closes it (b"" answers nothing). A connection that does not start with RESP (SYNC's line
    fallback) is relayed byte for byte. chunk: replies are sent in pieces of 1..chunk bytes with
    a pause between them, so that SYNC reads them cut at every place.
    """

    def __init__(self, upstream_port, answer=None, chunk=None):
        self.upstream_port = upstream_port
        self.answer = answer
        self.chunk = chunk
        self.commands = []       # first argument of every RESP request, in order
        self.line_conns = 0      # connections relayed byte for byte
        self.lock = threading.Lock()
        self.stopping = False
        self.sock, self.port = _listening_socket()
        self.threads = [threading.Thread(target=self._accept_loop, daemon=True)]
        self.threads[0].start()

    def _accept_loop(self):
        while not self.stopping:
            try:
                s, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(s,), daemon=True)
            self.threads.append(t)
            t.start()

    def _recv(self, s):
        """Bytes from s; b"" when it closed or the relay stops."""
        while not self.stopping:
            try:
                return s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return b""
        return b""

    def _reply(self, up, buf):
        """Reads one reply of the peer (a bulk string, or one line); (reply bytes, rest)."""
        while True:
            end = buf.find(b"\r\n")
            if end >= 0:
                size = end + 2
                if buf[:1] == b"$" and int(buf[1:end]) >= 0:
                    size += int(buf[1:end]) + 2
                if len(buf) >= size:
                    return buf[:size], buf[size:]
            chunk = self._recv(up)
            if not chunk:
                raise ConnectionError("the peer closed the connection")
            buf += chunk

    def _send(self, s, data):
        # The socket polls with a 0.1 s timeout; a sendall under it gives up as soon as the
        # reader pauses that long (an ASan build reading a 64 MiB reply does), which would look
        # like the relay closing the connection. Sends wait as long as a test may.
        s.settimeout(SEND_TIMEOUT_S)
        try:
            if not self.chunk:
                s.sendall(data)
                return
            pos, i = 0, 0
            while pos < len(data):
                n = 1 + i % self.chunk
                s.sendall(data[pos:pos + n])
                pos, i = pos + n, i + 1
                time.sleep(0.0002)
        finally:
            s.settimeout(0.1)

    def _pipe(self, s, up, first):
        up.sendall(first)
        while not self.stopping:
            ready, _, _ = select.select([s, up], [], [], 0.1)
            for src in ready:
                data = self._recv(src)
                if not data:
                    return
                (up if src is s else s).sendall(data)

    def _serve(self, s):
        s.settimeout(0.1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            up = socket.create_connection((LOOPBACK, self.upstream_port), timeout=30)
        except OSError:
            s.close()
            return
        up.settimeout(0.1)
        try:
            buf = self._recv(s)
            if buf[:1] != b"*":
                with self.lock:
                    self.line_conns += 1
                if buf:
                    self._pipe(s, up, buf)
                return
            upbuf = b""
            while not self.stopping:
                args, buf = _resp_request(buf)
                if args is None:
                    more = self._recv(s)
                    if not more:
                        return
                    buf += more
                    continue
                with self.lock:
                    self.commands.append(args[0])
                out = self.answer(args) if self.answer else None
                if out is not None:
                    self._send(s, out)
                    while self._recv(s):  # hold the connection open until SYNC closes it
                        pass
                    return
                up.sendall(_resp_encode(args))
                out, upbuf = self._reply(up, upbuf)
                self._send(s, out)
        except OSError:
            return
        finally:
            s.close()
            up.close()

    def close(self):
        self.stopping = True
        self.sock.close()
        for t in self.threads:
            t.join(timeout=10)


@pytest.fixture
def resp_relay():
    relays = []

    def make(upstream_port, **kw):
        r = RespRelay(upstream_port, **kw)
        relays.append(r)
        return r

    yield make
    for r in relays:
        r.close()


# --------------------------------------------------------------------------------------------
# helpers


def sync_conf(timeout_s=10):
    return {"anti_entropy": {"enabled": False, "sync_timeout_seconds": timeout_s}}


def sync_line(peer, target_port, *flags, host=LOOPBACK, timeout_s=120):
    """SYNC over the line protocol on a fresh connection; the reply line without CRLF."""
    req = b" ".join([b"SYNC", host.encode(), b"%d" % target_port] + [f.encode() for f in flags])
    with peer.line(timeout_s=timeout_s) as c:
        return c.request(req)[:-2]


def hash_of(peer):
    return line_request(peer, b"HASH")


def mset(peer, pairs):
    items = list(pairs.items())
    with peer.resp() as c:
        for i in range(0, len(items), 500):
            args = []
            for k, v in items[i:i + 500]:
                args += [k, v]
            assert c.call("MSET", *args) == b"OK"


def divergent_pair(make_peer):
    """Two peers a (the remote) and b (the local node) whose data differ in every way SYNC must
    handle; returns (a, b)."""
    a = make_peer("a", conf=sync_conf())
    b = make_peer("b", conf=sync_conf())
    with a.resp() as ra, b.resp() as rb:
        assert ra.call("MSET", "same", "1", "remote_only", "r", "diff", "from a",
                       "gone", "x", "spaced", "a b  c") == b"OK"
        assert rb.call("MSET", "same", "1", "local_only", "l", "diff", "from b",
                       "gone", "live on b", "only b 2", "y") == b"OK"
        # a deletes `gone` after b wrote it: a's tombstone is the newer record.
        assert ra.call("DEL", "gone") == 1
        # b writes `newer_here` after a did: b's record wins LWW, yet SYNC wants a's value.
        assert ra.call("SET", "newer_here", "a's value") == b"OK"
        assert rb.call("SET", "newer_here", "b's value") == b"OK"
        # b deletes a key a still has, after a wrote it: b's tombstone is newer.
        assert ra.call("SET", "deleted_here", "a keeps it") == b"OK"
        assert rb.call("SET", "deleted_here", "tmp") == b"OK"
        assert rb.call("DEL", "deleted_here") == 1
    return a, b


EXPECTED_A = {b"same": b"1", b"remote_only": b"r", b"diff": b"from a", b"spaced": b"a b  c",
              b"newer_here": b"a's value", b"deleted_here": b"a keeps it"}


# --------------------------------------------------------------------------------------------
# against arborkv


@pytest.mark.parametrize("flags", [(), ("--verify",), ("--full",), ("--full", "--verify")])
def test_sync_from_arborkv_peer(make_peer, flags):
    a, b = divergent_pair(make_peer)
    assert snapshot(a) == EXPECTED_A
    assert sync_line(b, a.port, *flags) == b"OK"
    assert snapshot(b) == EXPECTED_A
    assert snapshot(a) == EXPECTED_A  # the remote is only read
    assert hash_of(b) == hash_of(a)
    with b.line() as c:
        assert c.request_lines(b"SCAN", 7) == [b"KEYS 6\r\n"] + [
            k + b"\r\n" for k in sorted(EXPECTED_A)]
    d = info(b)
    assert int(d["sync_runs"]) == 1 and int(d["sync_completed"]) == 1
    assert int(d["sync_failures"]) == 0 and int(d["sync_running"]) == 0
    # diff, gone, local_only, only b 2, remote_only, spaced, newer_here, deleted_here
    assert int(d["sync_keys_changed"]) == 8
    # A second SYNC finds nothing to change.
    assert sync_line(b, a.port, *flags) == b"OK"
    assert info_int(b, "sync_keys_changed") == 8


def test_sync_survives_restart_and_keeps_the_remote_records(make_peer):
    """Keys taken as the remote's records (LWW winners) carry the remote's ts and op_id, so a
    later SYNC of an unchanged remote fetches only the buckets where the local record is still
    its own; what SYNC wrote is durable."""
    a, b = divergent_pair(make_peer)
    assert sync_line(b, a.port) == b"OK"
    b.restart()
    assert snapshot(b) == EXPECTED_A
    before = info_int(b, "sync_records_fetched")
    assert sync_line(b, a.port) == b"OK"
    # Only the buckets where b's record is its own (same, diff, newer_here, deleted_here: b's
    # records won LWW there) still differ; everything else is a's records, bit for bit.
    assert info_int(b, "sync_records_fetched") - before == 4
    assert info_int(b, "sync_keys_changed") == 0  # (counters restarted with the process)


def test_sync_moves_only_differing_buckets(make_peer):
    n = 5000
    a = make_peer("a", conf=sync_conf())
    b = make_peer("b", conf=sync_conf())
    data = {f"key:{i:05d}": f"value {i}" for i in range(n)}
    mset(a, data)
    # First SYNC into an empty node: everything moves, as the remote's own records.
    assert sync_line(b, a.port, "--verify") == b"OK"
    assert info_int(b, "sync_records_fetched") == n
    assert info(b)["merkle_root"] == info(a)["merkle_root"]
    # Ten differences: 5 changed, 3 deleted, 2 new.
    with a.resp() as c:
        for i in range(5):
            assert c.call("SET", f"key:{i * 997:05d}", "changed") == b"OK"
        for i in range(3):
            assert c.call("DEL", f"key:{i * 991 + 1:05d}") == 1
        assert c.call("MSET", "new:1", "n1", "new:2", "n2") == b"OK"
    before = info_int(b, "sync_records_fetched")
    changed_before = info_int(b, "sync_keys_changed")
    assert sync_line(b, a.port, "--verify") == b"OK"
    fetched = info_int(b, "sync_records_fetched") - before
    assert 10 <= fetched <= 100, fetched  # the records of ~10 buckets, not 5,000
    assert info_int(b, "sync_keys_changed") - changed_before == 10
    assert hash_of(b) == hash_of(a)
    assert info(b)["merkle_root"] == info(a)["merkle_root"]


def test_sync_with_another_tree_shape_transfers_everything(make_peer):
    a = make_peer("a", conf={"anti_entropy": {"enabled": False, "fanout": 4, "depth": 3}})
    b = make_peer("b", conf=sync_conf())
    mset(a, {"k1": "v1", "k2": "v2"})
    mset(b, {"k2": "old", "k3": "v3"})
    assert sync_line(b, a.port, "--verify") == b"OK"
    assert snapshot(b) == {b"k1": b"v1", b"k2": b"v2"}
    assert "tree, this node" in b.log_text()


def test_sync_over_resp(make_peer):
    a, b = divergent_pair(make_peer)
    with b.resp(timeout_s=120) as c:
        assert c.call("SYNC", LOOPBACK, str(a.port), "--verify") == b"OK"
        assert c.call("PING") == b"PONG"
        with pytest.raises(RespError, match="Invalid port: must be an integer in 0..=65535"):
            c.call("SYNC", LOOPBACK, "70000")
        with pytest.raises(RespError, match="Unknown option: --bogus"):
            c.call("SYNC", LOOPBACK, str(a.port), "--bogus")
        with pytest.raises(RespError, match="Duplicate option: --full"):
            c.call("SYNC", LOOPBACK, str(a.port), "--full", "--verify", "--full")
        with pytest.raises(RespError, match="wrong number of arguments"):
            c.call("SYNC", LOOPBACK)
        closed = free_port()
        with pytest.raises(RespError, match="^ERR cannot connect to"):
            c.call("SYNC", LOOPBACK, str(closed))
        # Inside MULTI the reply cannot wait.
        assert c.call("MULTI") == b"OK"
        assert c.call("SYNC", LOOPBACK, str(a.port)) == b"QUEUED"
        reply = c.call("EXEC")
        assert isinstance(reply[0], RespError) and "MULTI" in str(reply[0])
    assert snapshot(b) == EXPECTED_A


def test_sync_to_itself(make_peer):
    a = make_peer("a", conf=sync_conf())
    mset(a, {"k": "v", "k2": "v2"})
    root = info(a)["merkle_root"]
    assert sync_line(a, a.port) == b"OK"
    assert sync_line(a, a.port, "--full", "--verify") == b"OK"
    assert snapshot(a) == {b"k": b"v", b"k2": b"v2"}
    assert info(a)["merkle_root"] == root
    assert info_int(a, "sync_keys_changed") == 0


def test_sync_by_host_name_and_pipelined_requests(make_peer):
    a = make_peer("a", conf=sync_conf())
    b = make_peer("b", conf=sync_conf())
    mset(a, {"k": "from a"})
    with b.line(timeout_s=120) as c:
        # The request after SYNC waits for it, then sees its result.
        c.send(b"SYNC localhost %d\r\nGET k\r\n" % a.port)
        assert c.read_line() == b"OK\r\n"
        assert c.read_line() == b"VALUE from a\r\n"
        reply = c.request(b"SYNC no-such-host.invalid %d" % a.port)
        assert reply.startswith(b"ERROR cannot resolve no-such-host.invalid"), reply
        assert c.request(b"PING") == b"PONG\r\n"


# --------------------------------------------------------------------------------------------
# against a line-protocol server (the fallback)


FAKE_DATA = {b"k1": b"v1", b"both": b"remote value", b"sp": b"a b  c", b"same": b"s",
             b"num": b"42"}


@pytest.mark.parametrize("flags", [(), ("--verify",), ("--full",)])
def test_sync_from_line_protocol_server(make_peer, fake_kv, flags):
    fake = fake_kv(FAKE_DATA)
    b = make_peer("b", conf=sync_conf())
    mset(b, {"both": "local value", "local_only": "x", "same": "s", "zz": "last"})
    assert sync_line(b, fake.port, *flags) == b"OK"
    assert snapshot(b) == FAKE_DATA
    assert hash_of(b) == b"HASH " + live_hash(FAKE_DATA).encode()
    # The fake was asked in the line protocol after refusing the probe.
    assert b"SCAN" in fake.lines
    assert sum(1 for ln in fake.lines if ln.startswith(b"GET ")) == len(FAKE_DATA)
    d = info(b)
    assert int(d["sync_completed"]) == 1
    assert int(d["sync_keys_changed"]) == 6  # k1, both, sp, num set; local_only, zz deleted
    assert int(d["sync_records_fetched"]) == len(FAKE_DATA)


def test_sync_fallback_many_keys_and_empty_remote(make_peer, fake_kv):
    many = {b"key%05d" % i: b"v %d" % i for i in range(3000)}
    fake = fake_kv(many)
    b = make_peer("b", conf=sync_conf())
    mset(b, {f"local{i}": "x" for i in range(2500)})  # more than one batch of deletions
    assert sync_line(b, fake.port, "--verify") == b"OK"
    assert snapshot(b) == many
    empty = fake_kv({})
    assert sync_line(b, empty.port, "--verify") == b"OK"
    assert line_request(b, b"DBSIZE") == b"DBSIZE 0"


def test_sync_verify_needs_the_remote_hash(make_peer, fake_kv):
    fake = fake_kv(FAKE_DATA, hash=False)
    b = make_peer("b", conf=sync_conf())
    reply = sync_line(b, fake.port, "--verify")
    assert reply.startswith(b"ERROR --verify: 127.0.0.1:%d cannot HASH" % fake.port), reply
    assert snapshot(b) == FAKE_DATA  # the data was synchronized all the same


def test_sync_verify_reports_both_digests(make_peer, fake_kv):
    """A remote whose HASH disagrees with its data (here: a lying fake) fails --verify."""
    fake = fake_kv(FAKE_DATA)
    fake.handle_orig = fake.handle
    fake.handle = lambda line: (b"HASH " + b"f" * 64 + b"\r\n" if line.startswith(b"HASH")
                                else fake.handle_orig(line))
    b = make_peer("b", conf=sync_conf())
    reply = sync_line(b, fake.port, "--verify")
    mine = live_hash(FAKE_DATA).encode()
    assert reply == b"ERROR --verify failed: local HASH " + mine + b", remote HASH " + b"f" * 64


# --------------------------------------------------------------------------------------------
# the RESP replies SYNC reads: cut anywhere, malformed, oversized, partial


def hash_hex(peer):
    return hash_of(peer)[len(b"HASH "):]


@pytest.mark.parametrize("flags", [("--verify",), ("--full", "--verify")])
def test_sync_reads_replies_cut_anywhere(make_peer, resp_relay, flags):
    a = make_peer("a", conf=sync_conf())
    b = make_peer("b", conf=sync_conf())
    mset(a, {f"key:{i:03d}": f"value {i} " * (i % 7) for i in range(120)})
    mset(b, {"key:005": "old", "local only": "x"})
    relay = resp_relay(a.port, chunk=13)
    assert sync_line(b, relay.port, *flags) == b"OK"
    assert hash_of(b) == hash_of(a)
    assert relay.line_conns == 0 and relay.commands[-1] == b"HASH"


def _answer_hash(reply):
    return lambda args: reply if args[0] == b"HASH" else None


# (the remote's answer to HASH, SYNC's answer after "ERROR ")
MALFORMED = [
    (b"!1\r\n", b"malformed reply from"),                      # no RESP type
    (b"*1\r\n$64\r\n" + b"0" * 64 + b"\r\n", b"malformed reply from"),  # SYNC takes no array
    (b"*2147483647\r\n", b"malformed reply from"),             # refused at its header
    (b"$64\r\n" + b"0" * 64 + b"XY", b"malformed reply from"),  # payload without CRLF
    (b"$-2\r\n", b"malformed reply from"),
    (b"$6x\r\n", b"malformed reply from"),
    (b"\r\n", b"malformed reply from"),
    (b"-" + b"e" * RESP_MAX_LINE_BYTES, b"malformed reply from"),  # a line too long, no CRLF
    (b"$%d\r\n" % (MIRROR_MAX_BULK + 1), b"malformed reply from"),  # oversized: at its header
    (b"$99999999999999999999\r\n", b"malformed reply from"),
    (b"-ERR not today\r\n", b"remote error: ERR not today"),
    (b"+OK\r\n", b"unexpected reply from"),
    (b":1\r\n", b"unexpected reply from"),
    (b"$-1\r\n", b"unexpected reply from"),
    (b"$3\r\nabc\r\n", b"--verify: unexpected HASH reply from"),
]


@pytest.mark.parametrize("reply,error", MALFORMED,
                         ids=[f"{i}-{r[:12]!r}" for i, (r, _) in enumerate(MALFORMED)])
def test_sync_refuses_a_bad_reply(make_peer, resp_relay, reply, error):
    """The relay answers HASH (after a descent that found equal trees) with `reply` and keeps
    the connection open: SYNC fails at once with the error of docs/anti-entropy.md, not by its
    step timeout."""
    a = make_peer("a", conf=sync_conf())
    b = make_peer("b", conf=sync_conf(timeout_s=600))
    mset(a, {"k": "v"})
    mset(b, {"k": "v"})
    relay = resp_relay(a.port, answer=_answer_hash(reply))
    got = sync_line(b, relay.port, "--verify")
    assert got.startswith(E + error), got
    if b"from" in error:
        assert got.endswith(b"from 127.0.0.1:%d" % relay.port), got
    assert relay.line_conns == 0
    assert info_int(b, "sync_failures") == 1 and info_int(b, "sync_running") == 0
    assert line_request(b, b"PING") == b"PONG"


def test_sync_reads_the_largest_bulk(make_peer, resp_relay):
    """A bulk of exactly MIRROR_MAX_BULK bytes is read (here it is no HASH)."""
    a = make_peer("a", conf=sync_conf())
    b = make_peer("b", conf=sync_conf(timeout_s=600))
    big = b"$%d\r\n" % MIRROR_MAX_BULK + b"0" * MIRROR_MAX_BULK + b"\r\n"
    relay = resp_relay(a.port, answer=_answer_hash(big))
    got = sync_line(b, relay.port, "--verify")
    assert got == E + b"--verify: unexpected HASH reply from 127.0.0.1:%d" % relay.port


@pytest.mark.parametrize("reply", [b"$%d\r\n" % (MIRROR_MAX_BULK + 1), b"!x\r\n", b"*0\r\n",
                                   b"-ERR unknown command 'ARBORKV.AE'\r\n"])
def test_sync_falls_back_when_the_probe_answer_is_not_arborkv(make_peer, resp_relay, reply):
    """A bad or error answer to the first ARBORKV.AE is a remote without arborkv's
    anti-entropy: SYNC goes on with the line protocol on a fresh connection."""
    a = make_peer("a", conf=sync_conf())
    b = make_peer("b", conf=sync_conf(timeout_s=600))
    mset(a, {"k1": "v1", "k2": "v2"})
    mset(b, {"k3": "v3"})
    relay = resp_relay(a.port, answer=lambda args: reply)
    assert sync_line(b, relay.port, "--verify") == b"OK"
    assert snapshot(b) == {b"k1": b"v1", b"k2": b"v2"}
    assert relay.commands == [b"ARBORKV.AE"] and relay.line_conns == 1
    assert "does not speak arborkv's anti-entropy" in b.log_text()


PARTIAL = b"$64\r\n" + b"0" * 10  # a HASH reply cut short; the remote then says nothing


def test_sync_times_out_in_the_middle_of_a_reply(make_peer, resp_relay):
    a = make_peer("a", conf=sync_conf())
    b = make_peer("b", conf=sync_conf(timeout_s=1))
    relay = resp_relay(a.port, answer=_answer_hash(PARTIAL))
    got = sync_line(b, relay.port, "--verify")
    assert got == E + b"no reply from 127.0.0.1:%d within 1 s" % relay.port


def test_sync_cancelled_in_the_middle_of_a_reply(make_peer, resp_relay):
    """The client goes away, then the server stops, while SYNC holds half a reply: a clean exit
    (teardown checks the sanitizer's report, leaks included, in the ASan build)."""
    a = make_peer("a", conf=sync_conf())
    b = make_peer("b", conf=sync_conf(timeout_s=600))
    relay = resp_relay(a.port, answer=_answer_hash(PARTIAL))
    c = b.line()
    c.send(b"SYNC 127.0.0.1 %d --verify\r\n" % relay.port)
    wait_until(lambda: b"HASH" in relay.commands, 30, "SYNC to ask for HASH")
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    wait_until(lambda: int(info(b)["connected_clients"]) == 1, 30, "the client to be gone")
    assert info_int(b, "sync_running") == 1
    b.stop()


# --------------------------------------------------------------------------------------------
# errors, and the event loop keeps going


def test_sync_connection_refused(make_peer):
    b = make_peer("b", conf=sync_conf())
    closed = free_port()
    with b.line() as c:
        assert c.request(b"SET k v") == b"OK\r\n"
        reply = c.request(b"SYNC 127.0.0.1 %d" % closed)
        assert reply == E + b"cannot connect to 127.0.0.1:%d: Connection refused\r\n" % closed
        assert c.request(b"GET k") == b"VALUE v\r\n"
    assert info_int(b, "sync_failures") == 1


def test_sync_times_out_on_a_silent_remote(make_peer, fake_kv):
    fake = fake_kv(stall=True)
    b = make_peer("b", conf=sync_conf(timeout_s=1))
    with b.line() as c:
        reply = c.request(b"SYNC 127.0.0.1 %d" % fake.port)
        assert reply == E + b"no reply from 127.0.0.1:%d within 1 s\r\n" % fake.port
        assert c.request(b"PING") == b"PONG\r\n"
    assert info_int(b, "sync_running") == 0


def test_other_clients_are_served_while_sync_waits(make_peer, fake_kv):
    fake = fake_kv(stall=True)
    b = make_peer("b", conf=sync_conf(timeout_s=600))
    mset(b, {"k": "v"})
    with b.line() as c1, b.line() as c2:
        c1.send(b"SYNC 127.0.0.1 %d\r\nGET k\r\n" % fake.port)
        assert fake.accepted.wait(30), "SYNC never connected to the fake remote"
        wait_until(lambda: info_int(b, "sync_running") == 1, 30, "the SYNC to be running")
        assert c2.request(b"GET k") == b"VALUE v\r\n"
        assert c2.request(b"SET k2 v2") == b"OK\r\n"
        assert c2.request(b"SYNC 127.0.0.1 %d" % fake.port) == E + b"SYNC already in progress\r\n"
        c1.assert_no_data(0.1)
        # The remote goes away: the SYNC fails, c1 gets its answers in order.
        fake.release()
        reply = c1.read_line()
        assert reply.startswith(E) and b"127.0.0.1:%d" % fake.port in reply, reply
        assert c1.read_line() == b"VALUE v\r\n"
        assert c1.request(b"GET k2") == b"VALUE v2\r\n"


def test_client_gone_during_sync(make_peer, fake_kv):
    fake = fake_kv(stall=True)
    b = make_peer("b", conf=sync_conf(timeout_s=600))
    c1 = b.line()
    c1.send(b"SYNC 127.0.0.1 %d\r\n" % fake.port)
    assert fake.accepted.wait(30)
    wait_until(lambda: info_int(b, "sync_running") == 1, 30, "the SYNC to be running")
    # A reset connection is gone at once (a mere FIN could be a half-close: that client still
    # gets its answer, below); the SYNC goes on without it.
    c1.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c1.close()
    wait_until(lambda: int(info(b)["connected_clients"]) == 1, 30, "the client to be gone")
    assert info_int(b, "sync_running") == 1
    fake.release()
    wait_until(lambda: info_int(b, "sync_failures") == 1, 30, "the SYNC to fail")
    # A client that half-closes after SYNC still gets its answer.
    a = make_peer("a", conf=sync_conf())
    mset(a, {"x": "1"})
    with b.line() as c:
        c.send(b"SYNC 127.0.0.1 %d\r\n" % a.port)
        c.shutdown_write()
        assert c.read_until_closed() == b"OK\r\n"
    assert snapshot(b) == {b"x": b"1"}


def test_shutdown_during_sync(make_peer, fake_kv):
    fake = fake_kv(stall=True)
    b = make_peer("b", conf=sync_conf(timeout_s=600))
    with b.line() as c:
        c.send(b"SYNC 127.0.0.1 %d\r\n" % fake.port)
        assert fake.accepted.wait(30)
        b.stop()  # asserts a clean exit (and no sanitizer report)
