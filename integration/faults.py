"""Fault injection for the integration suite: a TCP proxy that can cut a peer off its broker.

    proxy = TcpProxy(target_port)      # listens on a free loopback port, forwards to target
    proxy.partition()                  # drop every connection and refuse new ones
    proxy.heal()                       # accept and forward again
    proxy.close()                      # stop everything (idempotent; use a fixture/finalizer)
"""
import select
import socket
import threading

from conftest import LOOPBACK, free_port


class TcpProxy:
    def __init__(self, target_port, target_host=LOOPBACK):
        self.target = (target_host, target_port)
        self.port = free_port()
        self.cut = False
        self.closed = False
        self.lock = threading.Lock()
        self.pairs = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((LOOPBACK, self.port))
        self.listener.listen(64)
        self.listener.settimeout(0.1)
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if self.cut:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a, b):
        socks = [a, b]
        try:
            while not self.closed and not self.cut:
                ready, _, _ = select.select(socks, [], [], 0.1)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except OSError:
            pass
        finally:
            for s in socks:
                try:
                    s.close()
                except OSError:
                    pass

    def partition(self):
        """Cuts every proxied connection and refuses new ones until heal()."""
        self.cut = True
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for pair in pairs:
            for s in pair:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def heal(self):
        self.cut = False

    def close(self):
        self.closed = True
        self.partition()
        try:
            self.listener.close()
        except OSError:
            pass
        self.thread.join(5)
