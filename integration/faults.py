"""Fault injection for the integration suite: a TCP proxy that can cut a peer off its broker.

    proxy = TcpProxy(target_port)      # listens on a free loopback port, forwards to target
    proxy.set_mode("blackhole")        # see MODES
    proxy.partition()                  # = set_mode("reset"): drop every connection, refuse new ones
    proxy.heal()                       # = set_mode("pass"): accept and forward again
    proxy.close()                      # stop everything (idempotent; use a fixture/finalizer)

Modes ("up" = client -> target, e.g. a peer's packets to its broker; "down" = target -> client):

    pass        forward both ways.
    blackhole   connections stay open and new ones are accepted, but every byte is read and
                thrown away, both ways; a close by either side is not passed on. Neither end
                notices anything but silence (like a network that drops every packet).
    drop_up     like blackhole, for the client -> target direction only (down still flows).
    drop_down   like blackhole, for the target -> client direction only (up still flows).
    stall       nothing is read any more (TCP flow control holds the data; nothing is lost);
                new connections are accepted but not connected to the target yet. Going back to
                "pass" resumes every stream intact.
    reset       every connection is closed (target side first) and new ones are closed at once.

A connection that lost bytes (blackhole, drop_up, drop_down) carries a corrupt stream: when the
mode goes back to "pass" it is closed (target side first, so the broker sees its client leave
before the client reconnects), as a real connection would die of its keep-alive.
"""
import select
import socket
import threading
import time

from conftest import LOOPBACK, free_port

MODES = ("pass", "blackhole", "drop_up", "drop_down", "stall", "reset")
_DROPPING = {"blackhole": (True, True), "drop_up": (True, False), "drop_down": (False, True)}


class _Pair:
    def __init__(self, client):
        self.client = client
        self.upstream = None      # None: not connected to the target (yet, or any more)
        self.tainted = False      # bytes were dropped: the stream is corrupt
        self.killed = False
        self.thread = None


class TcpProxy:
    def __init__(self, target_port, target_host=LOOPBACK, mode="pass"):
        assert mode in MODES, mode
        self.target = (target_host, target_port)
        self.port = free_port()
        self.closed = False
        self.lock = threading.Lock()
        self._mode = mode
        self.pairs = []
        self.accepted = 0
        self.bytes_up = self.bytes_down = 0              # forwarded
        self.dropped_up = self.dropped_down = 0          # thrown away
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((LOOPBACK, self.port))
        self.listener.listen(64)
        self.listener.settimeout(0.05)
        self.thread = threading.Thread(target=self._accept_loop, daemon=True,
                                       name=f"proxy-{self.port}-accept")
        self.thread.start()

    # -- control

    @property
    def mode(self):
        return self._mode

    def set_mode(self, mode):
        assert mode in MODES, mode
        assert not self.closed, "proxy closed"
        with self.lock:
            self._mode = mode
            if mode == "reset":
                doomed = list(self.pairs)
            elif mode == "pass":
                doomed = [p for p in self.pairs if p.tainted]
            else:
                doomed = []
        for p in doomed:
            self._kill(p)

    def partition(self):
        """Cuts every proxied connection and refuses new ones until heal()."""
        self.set_mode("reset")

    def blackhole(self):
        self.set_mode("blackhole")

    def heal(self):
        self.set_mode("pass")

    def connections(self):
        with self.lock:
            return sum(1 for p in self.pairs if not p.killed)

    def close(self):
        if self.closed:
            return
        self.closed = True
        with self.lock:
            pairs = list(self.pairs)
        for p in pairs:
            self._kill(p)
        try:
            self.listener.close()
        except OSError:
            pass
        self.thread.join(5)
        for p in pairs:
            if p.thread is not None:
                p.thread.join(5)

    # -- internals

    @staticmethod
    def _shut(s):
        if s is None:
            return
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _kill(self, p):
        """Closes both sides, the target's first; the pair's thread exits and releases them."""
        p.killed = True
        self._shut(p.upstream)
        self._shut(p.client)

    def _accept_loop(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                mode = self._mode
                if mode == "reset" or self.closed:
                    client.close()
                    continue
                self.accepted += 1
                p = _Pair(client)
                p.tainted = mode in _DROPPING
                self.pairs.append(p)
            p.thread = threading.Thread(target=self._pump, args=(p,), daemon=True,
                                        name=f"proxy-{self.port}-pair")
            p.thread.start()

    def _connect_upstream(self, p):
        try:
            p.upstream = socket.create_connection(self.target, timeout=5)
            p.upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return True
        except OSError:
            return False

    def _pump(self, p):
        try:
            p.client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._mode == "pass" and not self._connect_upstream(p):
                return
            while not self.closed and not p.killed:
                mode = self._mode
                if mode == "reset":
                    return
                if mode == "stall":
                    time.sleep(0.02)
                    continue
                if mode == "pass":
                    if p.tainted:
                        return  # set_mode is killing it
                    if p.upstream is None and not self._connect_upstream(p):
                        return  # accepted while stalled: connect now
                drop_up, drop_down = _DROPPING.get(mode, (False, False))
                if drop_up or drop_down:
                    p.tainted = True
                socks = [p.client] + ([p.upstream] if p.upstream is not None else [])
                ready, _, _ = select.select(socks, [], [], 0.05)
                for s in ready:
                    data = s.recv(65536)
                    up = s is p.client
                    if not data:
                        if up or not p.tainted:
                            return  # the client left, or a clean close in pass mode
                        # the target closed while we are dropping: the client must not learn it
                        p.upstream.close()
                        p.upstream = None
                        continue
                    if up:
                        if drop_up or p.upstream is None:
                            self.dropped_up += len(data)
                        else:
                            p.upstream.sendall(data)
                            self.bytes_up += len(data)
                    else:
                        if drop_down:
                            self.dropped_down += len(data)
                        else:
                            p.client.sendall(data)
                            self.bytes_down += len(data)
        except OSError:
            pass
        finally:
            p.killed = True
            for s in (p.upstream, p.client):  # the target's side first
                if s is not None:
                    self._shut(s)
                    try:
                        s.close()
                    except OSError:
                        pass
            with self.lock:
                if p in self.pairs:
                    self.pairs.remove(p)
