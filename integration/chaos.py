# SPDX-License-Identifier: MIT
"""A seeded chaos storm against a 3-node replicated cluster (issue 13).

    opts = cluster_options()                            # config every peer of the storm needs
    broker = make_broker(persistence=True)
    cluster = make_cluster(3, broker, **opts)
    storm = Storm(broker, list(cluster), seed=7)
    procs.on_teardown(storm.release)                    # SIGCONT + stop threads, before teardown
    res = storm.run(duration=40, deadline=120)          # -> ChaosResult
    print(format_result(res))

What a storm does, for `duration` seconds:

* one writer thread per node sends pipelined batches over the line protocol: SET and DEL of a
  shared key space (`k:0` .. `k:{SHARED_KEYS-1}`, written by every node, so there are real LWW
  conflicts) and keys written exactly once (`uniq:{node}:{n}`). Every value is unique
  (`{node}.{seq}`). A batch whose replies all came back is *acknowledged*; one that failed or timed
  out (node killed or stopped, connection reset) is *unknown*: it may or may not have been applied.
* a scheduler draws a fault every 0.3-1.5 s from random.Random(seed): kill -9 of a node and a
  restart 0.5-3 s later; SIGSTOP of a node and SIGCONT 0.5-8 s later (a quarter of them longer
  than 1.5x keepalive, so the broker drops the node); SIGKILL of mosquitto and a restart on the same
  port 0.2-3 s later (persistence on). At most one fault per target (node or broker) at a time.
  A draw that hits a busy target is skipped (the sequence of draws depends on the seed only).

Then it heals everything (every fault undone at once, every node running and continued, the broker
running), stops the writers, and measures the time from the heal to (a) every node's INFO
`outbox_depth` == 0 and (b) the same `HASH` on every node, and checks the data:

* every node holds, for every shared key, a value that was written for that key (acknowledged or
  unknown), and not an acknowledged value that the same node later superseded with another
  acknowledged SET or DEL of that key (the node's acknowledged writes of a key are ordered, so the
  later one has the larger timestamp and must win over the earlier one everywhere);
* a shared key may be absent only if some DEL of it was sent, or no SET of it was acknowledged;
* every acknowledged `uniq:` key is present with its value on every node (an unknown one may be
  absent, or present with its value);
* no node holds a key nobody wrote.

While waiting for convergence it reports a node whose outbox does not shrink for STALL_REPORT_S
while its INFO says `broker_state:connected` (the wedge of issue 13).
"""
import dataclasses
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from conftest import (  # noqa: E402 - after the sys.path set-up for tools/chaos
    Broker, ConnectionClosed, LineClient, Peer, info, merge_conf, repl_conf, snapshot,
    unique_prefix, wait_replicating)

NAMES = ("n1", "n2", "n3")
SHARED_KEYS = 3000
KEEPALIVE_S = 5
RECONNECT_MAX_S = 2
AE_INTERVAL_S = 10  # the default: the storm measures what a deployment gets
DEFAULT_DURATION_S = 40.0
DEFAULT_DEADLINE_S = 300.0
STALL_REPORT_S = 30.0       # outbox not shrinking this long while "connected": a wedge

BATCH = 100                 # operations per pipelined batch
UNIQ_FRACTION = 0.05        # of the operations of a batch: uniq:{node}:{n} SETs
DEL_FRACTION = 0.10         # DELs of shared keys; the rest are SETs of shared keys
WRITER_PAUSE_S = 0.005      # between acknowledged batches
BATCH_TIMEOUT_S = 5.0       # all replies of a batch, else the batch is "unknown"

# Fields of the final INFO of each node that the report shows (plus every broker_*/outbox_*).
INFO_FIELDS = ("broker_state", "broker_connects", "outbox_depth", "events_published",
               "events_applied", "ae_sessions_completed", "ae_sessions_failed")


def cluster_options(mqtt_version=None, trace_dir=None, trace_level="MINIMUM", names=NAMES,
                    extra_repl=None):
    """Keyword arguments for conftest's make_cluster(3, broker, **opts): anti-entropy on (every
    10 s, the default), keep-alive 5 s, reconnect backoff capped at 2 s. trace_dir: paho traces
    (MQTT_C_CLIENT_TRACE) to trace_dir/{name}.paho.trace at trace_level."""
    repl = {"keepalive_seconds": KEEPALIVE_S, "reconnect_max_seconds": RECONNECT_MAX_S}
    if mqtt_version is not None:
        repl["mqtt_version"] = int(mqtt_version)
    repl.update(extra_repl or {})
    opts = {"names": list(names),
            "conf_overrides": {"anti_entropy": {"enabled": True,
                                                "interval_seconds": AE_INTERVAL_S}},
            "repl": repl}
    if trace_dir is not None:
        Path(trace_dir).mkdir(parents=True, exist_ok=True)
        # One file per process: Storm renames it at each restart (paho opens it with "w").
        opts["per_peer"] = {n: {"env": {"MQTT_C_CLIENT_TRACE": str(Path(trace_dir) /
                                                                   f"{n}.paho.trace"),
                                        "MQTT_C_CLIENT_TRACE_LEVEL": trace_level,
                                        "MQTT_C_CLIENT_TRACE_MAX_LINES": "100000000"}}
                            for n in names}
    return opts


def start_cluster(registry, workdir, **opts_kw):
    """Outside pytest (tools/chaos): a persistent mosquitto and three peers configured as
    make_cluster(3, broker, **cluster_options(**opts_kw)) would, registered in `registry` (a
    conftest.ProcessRegistry). Returns (broker, peers). Raises pytest's Failed on trouble."""
    workdir = Path(workdir)
    opts = cluster_options(**opts_kw)
    broker = registry.add(Broker("mosquitto", workdir / "mosquitto", persistence=True))
    broker.start()
    prefix = unique_prefix()
    peers = []
    for name in opts["names"]:
        kw = dict((opts.get("per_peer") or {}).get(name, {}))
        conf = merge_conf({"replication": repl_conf(broker, prefix, **opts["repl"])},
                          opts["conf_overrides"], kw.pop("conf", None))
        p = registry.add(Peer(name, workdir / name, conf=conf, **kw))
        p.start()
        peers.append(p)
    wait_replicating(peers)
    return broker, peers


# --------------------------------------------------------------------------------------------
# What was written


class Ledger:
    """Every operation sent, with its outcome. Values are derived: `{node}.{seq}`."""

    def __init__(self):
        self.lock = threading.Lock()
        self.shared = {}   # key bytes -> list of (node, seq, is_del, acked)
        self.uniq = {}     # key bytes -> (value bytes, acked)
        self.acked_ops = 0
        self.unknown_ops = 0
        self.acked_batches = 0
        self.unknown_batches = 0

    def record(self, node, ops, acked):
        with self.lock:
            for kind, key, seq, value in ops:
                if kind == "uniq":
                    self.uniq[key] = (value, acked)
                else:
                    self.shared.setdefault(key, []).append((node, seq, kind == "del", acked))
            if acked:
                self.acked_ops += len(ops)
                self.acked_batches += 1
            else:
                self.unknown_ops += len(ops)
                self.unknown_batches += 1

    def check_snapshot(self, node_name, snap, limit=10):
        """Violations of the rules in the module docstring for one node's data ({key: value})."""
        bad = []

        def note(msg):
            if len(bad) < limit:
                bad.append(f"{node_name}: {msg}")
            else:
                bad.append(None)

        with self.lock:
            for key, ops in self.shared.items():
                v = snap.get(key)
                if v is None:
                    if any(a and not d for _, _, d, a in ops) and not any(d for _, _, d, _ in ops):
                        note(f"{key.decode()} absent; it was SET (acknowledged) and never DELeted")
                    continue
                try:
                    vnode, vseq = v.decode().rsplit(".", 1)
                    vseq = int(vseq)
                except ValueError:
                    note(f"{key.decode()} = {v!r}: not a value this storm writes")
                    continue
                match = [o for o in ops if o[0] == vnode and o[1] == vseq and not o[2]]
                if not match:
                    note(f"{key.decode()} = {v!r}: never written to this key")
                    continue
                if match[0][3]:
                    later = [o for o in ops if o[0] == vnode and o[3] and o[1] > vseq]
                    if later:
                        o = later[0]
                        note(f"{key.decode()} = {v!r}: acknowledged {'DEL' if o[2] else 'SET'} "
                             f"{vnode}.{o[1]} on the same node came later and was lost")
            for key, (val, acked) in self.uniq.items():
                v = snap.get(key)
                if v is None:
                    if acked:
                        note(f"{key.decode()} absent; acknowledged SET {val.decode()} lost")
                elif v != val:
                    note(f"{key.decode()} = {v!r}, written once as {val!r}")
            for key in snap:
                if key not in self.shared and key not in self.uniq:
                    note(f"{key!r} present; nobody wrote it")
        n_more = bad.count(None)
        bad = [b for b in bad if b is not None]
        if n_more:
            bad.append(f"{node_name}: ... and {n_more} more")
        return bad


class Writer:
    """Pipelined batches of SET/DEL to one peer until stopped; reconnects after any failure."""

    def __init__(self, peer, ledger, seed, batch=BATCH, pause_s=WRITER_PAUSE_S):
        self.peer, self.ledger, self.batch, self.pause_s = peer, ledger, batch, pause_s
        self.rng = random.Random(f"{seed}/{peer.name}")
        self.seq = 0
        self.uniq_n = 0
        self.connects = 0
        self.failures = 0
        self.last_error = None
        self.crash = None
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True, name=f"writer-{peer.name}")

    def start(self):
        self._t.start()
        return self

    def _ops(self):
        node = self.peer.name
        ops = []
        for _ in range(self.batch):
            self.seq += 1
            r = self.rng.random()
            value = f"{node}.{self.seq}".encode()
            if r < UNIQ_FRACTION:
                self.uniq_n += 1
                ops.append(("uniq", f"uniq:{node}:{self.uniq_n}".encode(), self.seq, value))
            elif r < UNIQ_FRACTION + DEL_FRACTION:
                ops.append(("del", f"k:{self.rng.randrange(SHARED_KEYS)}".encode(), self.seq,
                            None))
            else:
                ops.append(("set", f"k:{self.rng.randrange(SHARED_KEYS)}".encode(), self.seq,
                            value))
        return ops

    def _run(self):
        c = None
        try:
            while not self._stop.is_set():
                if c is None:
                    try:
                        c = LineClient(self.peer.port, timeout_s=BATCH_TIMEOUT_S)
                        self.connects += 1
                    except OSError as exc:
                        self.last_error = exc
                        self._stop.wait(0.05)
                        continue
                ops = self._ops()
                req = b"".join((b"DEL %s\r\n" % k) if kind == "del" else (b"SET %s %s\r\n" % (k, v))
                               for kind, k, _, v in ops)
                try:
                    c.send(req)
                    got = c.read_lines(len(ops), timeout_s=BATCH_TIMEOUT_S)
                except (OSError, ConnectionClosed, TimeoutError) as exc:
                    self.ledger.record(self.peer.name, ops, acked=False)
                    self.failures += 1
                    self.last_error = exc
                    c.close()
                    c = None
                    continue
                ok = all((g in (b"DELETED\r\n", b"NOT_FOUND\r\n")) if kind == "del"
                         else g == b"OK\r\n" for (kind, _, _, _), g in zip(ops, got))
                self.ledger.record(self.peer.name, ops, acked=ok)
                if not ok:
                    self.failures += 1
                    self.last_error = RuntimeError(f"unexpected replies, e.g. {got[:3]!r}")
                    c.close()
                    c = None
                if self.pause_s:
                    self._stop.wait(self.pause_s)
        except BaseException as exc:  # noqa: BLE001 - reported by the storm
            self.crash = exc
        finally:
            if c is not None:
                c.close()

    def stop(self, timeout_s=BATCH_TIMEOUT_S * 4):
        self._stop.set()
        self._t.join(timeout_s)
        return not self._t.is_alive()


# --------------------------------------------------------------------------------------------
# The storm


@dataclasses.dataclass
class ChaosResult:
    seed: int
    duration_s: float
    timeline: list
    faults: dict                     # kind -> number applied
    heal_to_outbox_empty_s: object   # float, or None if never within the deadline
    heal_to_same_hash_s: object
    converged: bool                  # outboxes empty and HASHes equal at the same moment
    final_info: dict                 # node -> {field: value}
    violations: list                 # lost/corrupt data (Ledger.check_snapshot)
    problems: list                   # anything else that went wrong (crashes, errors)
    wedges: list                     # nodes whose outbox did not shrink while "connected"
    writes: dict                     # counts of operations
    deadline_s: float = DEFAULT_DEADLINE_S

    @property
    def ok(self):
        return self.converged and not self.violations and not self.problems


class Storm:
    def __init__(self, broker, peers, seed, out=print, batch=BATCH,
                 writer_pause_s=WRITER_PAUSE_S, broker_kills=None):
        """broker_kills=N: the only faults are N broker SIGKILLs (and restarts); the heal
        follows the last restart after writes went on for 2 s more, whatever the duration."""
        self.broker = broker
        self.broker_kills = broker_kills
        self.batch, self.writer_pause_s = batch, writer_pause_s
        self.peers = list(peers)
        self.seed = seed
        self.out = out
        self.rng = random.Random(seed)
        self.ledger = Ledger()
        self.writers = []
        self.timeline = []
        self.problems = []
        self.faults = {}
        self._busy = {}                 # target name -> fault thread
        self._heal = threading.Event()
        self._stopped_pids = set()      # pids we SIGSTOPped and not yet continued
        self._lock = threading.Lock()
        self._t0 = None
        self._trace_base, self._restarts = {}, {}

    # -- output

    def _say(self, msg):
        t = time.monotonic() - self._t0 if self._t0 is not None else 0.0
        line = f"[{t:+8.2f}s] {msg}"
        with self._lock:
            self.timeline.append(line)
        self.out(line)

    # -- faults

    def _fault_thread(self, target, kind, dur):
        try:
            if target == "broker":
                self._say(f"broker: SIGKILL (restart in {dur:.2f} s)")
                self.broker.kill()
                self._heal.wait(dur)
                self.broker.start()
                self._say(f"broker: restarted on port {self.broker.port}")
                return
            peer = next(p for p in self.peers if p.name == target)
            if kind == "kill":
                self._say(f"{target}: kill -9 (restart in {dur:.2f} s)")
                peer.kill()
                self._heal.wait(dur)
                self._next_trace_file(peer)
                peer.start()
                self._say(f"{target}: restarted (pid {peer.pid}, port {peer.port})")
            else:
                pid = peer.pid
                long = " (> 1.5x keepalive)" if dur > 1.5 * KEEPALIVE_S else ""
                self._say(f"{target}: SIGSTOP (SIGCONT in {dur:.2f} s{long})")
                with self._lock:
                    self._stopped_pids.add(pid)
                os.kill(pid, signal.SIGSTOP)
                self._heal.wait(dur)
                os.kill(pid, signal.SIGCONT)
                with self._lock:
                    self._stopped_pids.discard(pid)
                self._say(f"{target}: SIGCONT")
        except BaseException as exc:  # noqa: BLE001 - pytest.fail raises a BaseException
            self.problems.append(f"fault {kind} on {target}: {exc!r}")
            self._say(f"{target}: fault {kind} FAILED: {exc!r}")

    def _next_trace_file(self, peer):
        """A paho trace (cluster_options(trace_dir=...)) goes to a new file for each process."""
        env = getattr(peer, "extra_env", {})
        if "MQTT_C_CLIENT_TRACE" not in env:
            return
        base = self._trace_base.setdefault(peer.name, env["MQTT_C_CLIENT_TRACE"])
        n = self._restarts[peer.name] = self._restarts.get(peer.name, 0) + 1
        env["MQTT_C_CLIENT_TRACE"] = f"{base}.restart{n}"

    def _draw(self):
        """One fault draw; every draw consumes the same random numbers whatever happens."""
        target = self.rng.choice([p.name for p in self.peers] + ["broker"])
        if self.broker_kills:
            target = "broker"
        if target == "broker":
            kind, dur = "broker-kill", self.rng.uniform(0.2, 3.0)
        elif self.rng.random() < 0.5:
            kind, dur = "kill", self.rng.uniform(0.5, 3.0)
        else:
            kind = "stop"
            dur = (self.rng.uniform(1.5 * KEEPALIVE_S + 0.05, 8.0) if self.rng.random() < 0.25
                   else self.rng.uniform(0.5, 8.0))
        return target, kind, dur

    def release(self):
        """Undoes what must not outlive the storm: continues every stopped process and stops the
        threads. Safe to call any time, more than once (register it as a teardown closer)."""
        self._heal.set()
        with self._lock:
            pids = list(self._stopped_pids)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        for p in self.peers + [self.broker]:
            if p.running():
                try:
                    os.kill(p.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        for t in list(self._busy.values()):
            t.join(90)
        for w in self.writers:
            w.stop()

    # -- measurement

    def _poll(self, p):
        d = info(p)
        with p.line(timeout_s=30) as c:
            h = c.request("HASH")[:-2].decode()
        return d, h

    def run(self, duration=DEFAULT_DURATION_S, deadline=DEFAULT_DEADLINE_S,
            stall_report_s=STALL_REPORT_S):
        self._t0 = time.monotonic()
        self._say(f"storm: seed {self.seed}, {duration:.0f} s, nodes "
                  + ", ".join(f"{p.name}=:{p.port}" for p in self.peers)
                  + f", broker :{self.broker.port}")
        self.writers = [Writer(p, self.ledger, self.seed, self.batch,
                               self.writer_pause_s).start() for p in self.peers]
        end = self._t0 + duration
        nxt = self._t0 + self.rng.uniform(0.3, 1.5)
        while True:
            now = time.monotonic()
            if nxt >= end:
                break
            if self.broker_kills and self.faults.get("broker-kill", 0) >= self.broker_kills:
                for t in list(self._busy.values()):
                    t.join(120)
                time.sleep(2.0)  # writes go on after the last restart
                end = time.monotonic()
                break
            if nxt > now:
                time.sleep(nxt - now)
            target, kind, dur = self._draw()
            t = self._busy.get(target)
            if t is not None and t.is_alive():
                self._say(f"{target}: busy, {kind} skipped")
            else:
                self.faults[kind] = self.faults.get(kind, 0) + 1
                t = threading.Thread(target=self._fault_thread, args=(target, kind, dur),
                                     daemon=True, name=f"fault-{target}")
                self._busy[target] = t
                t.start()
            nxt += self.rng.uniform(0.3, 1.5)
        if end > time.monotonic():
            time.sleep(end - time.monotonic())

        # -- heal: undo every fault now
        self._say("heal: undoing every active fault")
        self._heal.set()
        for t in list(self._busy.values()):
            t.join(120)
            if t.is_alive():
                self.problems.append(f"{t.name} still running 120 s after the heal")
        if not self.broker.running():
            self.problems.append(f"broker not running at the heal (exit {self.broker.proc.poll()})")
            self.broker.start()
        for p in self.peers:
            if not p.running():
                self.problems.append(f"{p.name} had exited by itself "
                                     f"(status {p.proc.poll()}); restarted at the heal")
                self._next_trace_file(p)
                p.start()
        t_heal = time.monotonic()
        self._say("heal: every node running and continued, broker running")
        for w in self.writers:
            if not w.stop():
                self.problems.append(f"writer of {w.peer.name} did not stop")
            if w.crash is not None:
                self.problems.append(f"writer of {w.peer.name} crashed: {w.crash!r}")
        lg = self.ledger
        self._say(f"writers stopped: {lg.acked_ops} operations acknowledged in "
                  f"{lg.acked_batches} batches, {lg.unknown_ops} unknown in "
                  f"{lg.unknown_batches}; {sum(1 for v in lg.uniq.values() if v[1])} uniq keys "
                  f"acknowledged")

        # -- wait for the outboxes to empty and the HASHes to agree
        t_outbox = t_hash = None
        converged = False
        last = {}
        progress = {p.name: (None, t_heal) for p in self.peers}   # (depth, since)
        wedges = {}
        next_report = t_heal + 10
        while True:
            now = time.monotonic()
            polls, hashes = {}, {}
            for p in self.peers:
                try:
                    polls[p.name], hashes[p.name] = self._poll(p)
                except BaseException as exc:  # noqa: BLE001 - not yet
                    polls[p.name], hashes[p.name] = None, f"error {exc!r}"
            now = time.monotonic()
            last.update({n: d for n, d in polls.items() if d is not None})
            depths = {n: (int(d.get("outbox_depth", -1)) if d else None)
                      for n, d in polls.items()}
            empty = all(v == 0 for v in depths.values())
            same = len(set(hashes.values())) == 1 and not any(
                h.startswith("error") for h in hashes.values())
            if empty and t_outbox is None:
                t_outbox = now - t_heal
                self._say(f"every outbox empty {t_outbox:.2f} s after the heal")
            if same and t_hash is None:
                t_hash = now - t_heal
                self._say(f"identical HASH on every node {t_hash:.2f} s after the heal")
            for n, dep in depths.items():
                if dep is None:
                    continue
                prev, since = progress[n]
                if prev is None or dep < prev or dep == 0:
                    progress[n] = (dep, now)
                elif (now - since >= stall_report_s and n not in wedges
                      and polls[n].get("broker_state") == "connected"):
                    wedges[n] = {"node": n, "outbox_depth": dep,
                                 "stalled_since_heal_s": round(since - t_heal, 1),
                                 "info": {k: v for k, v in polls[n].items()
                                          if k.startswith(("broker_", "outbox_", "events_"))}}
                    self._say(f"WEDGE? {n}: outbox_depth {dep} has not shrunk for "
                              f"{now - since:.0f} s while broker_state:connected "
                              f"(broker_connects {polls[n].get('broker_connects')})")
            if empty and same:
                converged = True
                break
            if now - t_heal >= deadline:
                self._say(f"NOT CONVERGED {deadline:.0f} s after the heal: outbox_depth "
                          + ", ".join(f"{n}={v}" for n, v in depths.items())
                          + "; HASH " + ("equal" if same else "different"))
                break
            if now >= next_report:
                next_report = now + 10
                self._say("waiting: outbox_depth " + ", ".join(f"{n}={v}" for n, v in
                                                               depths.items())
                          + "; broker_state " + ", ".join(
                              f"{n}={(d or {}).get('broker_state')}" for n, d in polls.items())
                          + "; HASH " + ("equal" if same else "different"))
            time.sleep(0.25)

        # -- the data
        violations = []
        for p in self.peers:
            try:
                violations += self.ledger.check_snapshot(p.name, snapshot(p))
            except BaseException as exc:  # noqa: BLE001
                self.problems.append(f"snapshot of {p.name}: {exc!r}")
        final = {}
        for p in self.peers:
            d = last.get(p.name, {})
            final[p.name] = {k: d[k] for k in d
                             if k in INFO_FIELDS or k.startswith(("broker_", "outbox_"))}
        return ChaosResult(
            seed=self.seed, duration_s=duration, timeline=list(self.timeline),
            faults=dict(self.faults), heal_to_outbox_empty_s=t_outbox,
            heal_to_same_hash_s=t_hash, converged=converged, final_info=final,
            violations=violations, problems=list(self.problems), wedges=list(wedges.values()),
            writes={"acked_ops": lg.acked_ops, "unknown_ops": lg.unknown_ops,
                    "acked_batches": lg.acked_batches, "unknown_batches": lg.unknown_batches,
                    "shared_keys_written": len(lg.shared),
                    "uniq_acked": sum(1 for v in lg.uniq.values() if v[1]),
                    "uniq_unknown": sum(1 for v in lg.uniq.values() if not v[1])},
            deadline_s=deadline)


def _fmt_s(v):
    return "never" if v is None else f"{v:.2f} s"


def format_result(res):
    """The figures of a ChaosResult as text (no timeline)."""
    out = [f"seed {res.seed}: {res.duration_s:.0f} s storm, faults "
           + ", ".join(f"{k} x{v}" for k, v in sorted(res.faults.items())),
           f"  writes: {res.writes}",
           f"  heal -> every outbox empty:   {_fmt_s(res.heal_to_outbox_empty_s)}",
           f"  heal -> identical HASH:       {_fmt_s(res.heal_to_same_hash_s)}",
           f"  converged within {res.deadline_s:.0f} s: {'yes' if res.converged else 'NO'}"]
    for n, d in res.final_info.items():
        first = [f"{k}:{d[k]}" for k in INFO_FIELDS if k in d]
        rest = [f"{k}:{v}" for k, v in d.items() if k not in INFO_FIELDS]
        out.append(f"  {n}: " + " ".join(first + rest))
    for w in res.wedges:
        out.append(f"  wedge: {w}")
    for v in res.violations:
        out.append(f"  LOST/CORRUPT: {v}")
    for p in res.problems:
        out.append(f"  problem: {p}")
    return "\n".join(out)
