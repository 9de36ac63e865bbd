"""Load test of the FIX gateway on loopback: N broker sessions, open-loop order entry.

    python -m ccerx.benchmarks.gateway_load [--sessions 10] [--rates 5000,10000,20000]
                                      [--seconds 5] [--closed-loop-orders 100000] [--out DIR]
    (or `ccerx bench-gateway ...`, the same options)

What it does, per run (every run gets a fresh `ccerx serve` subprocess: fresh engine, fresh
--data-dir in a temporary directory, a free port; or --connect HOST:PORT for a running one):

  * writes a gateway config (the format of gateway/config.py) with brokers BROKER01..BROKERnn,
    each with a password (stored as a salted scrypt hash, like any real config), an emitter
    account EMITnn (cash) and a holder account HOLDnn (credits of the four credit types);
  * opens N TCP sessions, logs each on (Username/Password), then forks two processes that
    share the sockets: a *sender* that only writes and a *receiver* that only reads, so the
    client's two halves run on their own interpreters (the gateway is the third process);
  * open loop at a fixed offered rate R: order i has the planned send time t0 + i / R, orders
    go to the sessions round robin; the sender sleeps until an order is due and then writes
    every order that is due (one write per session per wake-up). Latency is measured from the
    *planned* send time, so a sender or server that falls behind is charged for every order
    behind the stall (no coordinated omission);
  * closed loop ("max rate"): every session keeps up to --window orders unacknowledged and
    sends as fast as acknowledgements come back; its latency is from the actual send time;
  * the acknowledgement of order i is the first ExecutionReport (35=8) with ClOrdID i and
    ExecType (150) 0 (new) or 8 (rejected); latencies go into HDR histograms (hdrhistogram
    package) and are reported as p50/p90/p99/p99.9/max;
  * the run checks its end state: every order acknowledged, no session-level Reject (3) or
    BusinessMessageReject (j), the sessions log out cleanly; a run that misses an
    acknowledgement is reported as failed, never as fast.

The order mix (seeded): four credit types; 70% resting day limit orders 1-30 ticks away from
the reference price on the passive side, 30% marketable immediate-or-cancel limit orders that
take liquidity (30 ticks through the reference price, inside the band); quantities 1-500 t,
heavy-tailed (Pareto). Buys are for EMITnn, sells for HOLDnn, so self-trade prevention never
fires. The gateway also reports the server's own CPU time per order (from /proc: the `ccerx
serve` process and its child processes, e.g. the ledger's), which holds up better than
wall-clock rates when other work shares the machine.

Writes result.json and latency_spectrum.png (matplotlib Agg) into --out.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

GATEWAY_COMP_ID = "CCERX"
INSTRUMENTS = (("CCER-AFF", 6200), ("CCER-SOL", 7550), ("CCER-OWF", 8120), ("CCER-MGV", 9500))
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
HEARTBEAT = 30
SOH = b"\x01"


# ---------------------------------------------------------------------------- config
def broker_ids(n: int) -> list[str]:
    return [f"BROKER{i:02d}" for i in range(1, n + 1)]


def password_of(broker: str) -> str:
    return "load" + broker[-2:]


def config_text(n: int) -> str:
    """A gateway config with n brokers, hashed passwords, an emitter and a holder each."""
    from ccerx.gateway.config import hash_password  # the gateway's own hashing (scrypt)
    parts = [f'[gateway]\ncomp_id = "{GATEWAY_COMP_ID}"\nmessage_rate = 0   # a load test: no per-session cap\n']
    credits = ", ".join(f'"{symbol}" = 1000000000' for symbol, _ in INSTRUMENTS)
    for broker in broker_ids(n):
        nn = broker[-2:]
        parts.append(
            f'[[broker]]\ncomp_id = "{broker}"\n'
            f'# password "{password_of(broker)}"\n'
            f'password = "{hash_password(password_of(broker))}"\n\n'
            f'[[broker.account]]\naccount = "EMIT{nn}"\ntype = "key_emission_unit"\n'
            f'cash = "1000000000000.00"\n\n'
            f'[[broker.account]]\naccount = "HOLD{nn}"\ntype = "project_owner"\n'
            f'credits = {{ {credits} }}\n')
    return "\n".join(parts)


# ---------------------------------------------------------------------------- wire format
def fix_frame(fields: list[tuple[int, str]]) -> bytes:
    """8, 9, the given fields (35 first), 10: a FIX 4.4 frame."""
    body = "".join(f"{t}={v}\x01" for t, v in fields).encode("ascii")
    head = b"8=FIX.4.4\x019=%d\x01" % len(body)
    return b"%s%s10=%03d\x01" % (head, body, (sum(head) + sum(body)) % 256)


def utc_text(unix_s: float) -> str:
    ms = int(unix_s * 1000)
    return time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(ms // 1000)) + ".%03d" % (ms % 1000)


def make_orders(n: int, seed: int) -> list[tuple[str, str, str, int, Optional[str]]]:
    """[(symbol, side '1'/'2', price text, qty, TimeInForce or None)] for n orders."""
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        symbol, ref = INSTRUMENTS[rnd.randrange(len(INSTRUMENTS))]
        side = "1" if rnd.random() < 0.5 else "2"
        sign = 1 if side == "1" else -1          # a buy rests below the reference
        qty = min(500, int(rnd.paretovariate(1.2)))
        if rnd.random() < 0.30:
            ticks, tif = ref + sign * 30, "3"    # marketable IOC: takes what rests
        else:
            ticks, tif = ref - sign * rnd.randint(1, 30), None
        out.append((symbol, side, f"{ticks // 100}.{ticks % 100:02d}", qty, tif))
    return out


def encode_orders(orders, n_sessions: int, sending_time: str) -> list[list[tuple[int, bytes]]]:
    """Per session, [(global order index, frame)]; order i goes to session i % n_sessions
    with MsgSeqNum 2, 3, ... (1 is the Logon) and ClOrdID str(i)."""
    brokers = broker_ids(n_sessions)
    per_session: list[list[tuple[int, bytes]]] = [[] for _ in range(n_sessions)]
    for i, (symbol, side, price, qty, tif) in enumerate(orders):
        s = i % n_sessions
        broker = brokers[s]
        account = ("EMIT" if side == "1" else "HOLD") + broker[-2:]
        fields = [(35, "D"), (34, str(len(per_session[s]) + 2)), (49, broker),
                  (52, sending_time), (56, GATEWAY_COMP_ID), (11, str(i)), (1, account),
                  (55, symbol), (54, side), (60, sending_time), (38, str(qty)), (40, "2"),
                  (44, price)]
        if tif is not None:
            fields.append((59, tif))
        per_session[s].append((i, fix_frame(fields)))
    return per_session


# ---------------------------------------------------------------------------- the server
def _children(pid: int) -> list[int]:
    """The live child processes of `pid` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except OSError:
                continue
    return found


class Server:
    """`ccerx serve` as a subprocess on a free loopback port, with a fresh data directory."""

    def __init__(self, config: str, workdir: Path):
        self.dir = Path(tempfile.mkdtemp(prefix="serve-", dir=workdir))
        (self.dir / "gateway.toml").write_text(config)
        self.log = open(self.dir / "serve.log", "w")
        cmd = [sys.executable, "-m", "ccerx.scripts.ccerx", "serve", "--port", "0",
               "--config", str(self.dir / "gateway.toml"), "--data-dir", str(self.dir / "data"),
               "--rules", "continuous"]     # its flows send IOC/market orders and amends
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        match = re.search(r"listening on ([\d.]+):(\d+)", line)
        if match is None:
            self.stop()
            raise RuntimeError(f"ccerx serve did not start: {line!r}; see {self.dir / 'serve.log'}")
        self.host, self.port = match.group(1), int(match.group(2))

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process and its child processes (the ledger's,
        engine/ledger/process.py) so far."""
        total = 0
        parents = {self.proc.pid}
        for pid in [self.proc.pid] + _children(self.proc.pid):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue                 # gone meanwhile
            if pid in parents or int(fields[1]) in parents:
                total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.log.close()
        return self.proc.returncode


# ---------------------------------------------------------------------------- client halves
def _logon(sock: socket.socket, broker: str) -> None:
    sock.sendall(fix_frame([(35, "A"), (34, "1"), (49, broker), (52, utc_text(time.time())),
                            (56, GATEWAY_COMP_ID), (98, "0"), (108, str(HEARTBEAT)),
                            (141, "Y"), (553, broker), (554, password_of(broker))]))
    data = b""
    deadline = time.monotonic() + 30
    while b"\x0135=A\x01" not in data:
        if b"\x0135=5\x01" in data or time.monotonic() > deadline:
            raise RuntimeError(f"{broker}: logon refused or timed out: {data[:300]!r}")
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError(f"{broker}: connection closed during logon")
        data += chunk


def _sender(socks, per_session, start_ns: int, interval_ns: float, window: int,
            sent_ns, acked_per_session, done) -> None:
    """Write the orders: open loop when interval_ns > 0, else closed loop with a window."""
    clock = time.monotonic_ns
    n_sessions = len(socks)
    sent = np.frombuffer(sent_ns, dtype=np.int64)
    if interval_ns > 0:
        # One merged schedule: order i is due at start + i * interval.
        schedule = sorted((i, s, frame) for s, frames in enumerate(per_session)
                          for i, frame in frames)
        n = len(schedule)
        k = 0
        while k < n:
            now = clock()
            due_until = int((now - start_ns) // interval_ns) + 1  # orders 0..due_until-1 are due
            if due_until <= k:
                wait = start_ns + k * interval_ns - now
                time.sleep(wait / 1e9 if wait > 0 else 0)
                continue
            batch: list[list[bytes]] = [[] for _ in range(n_sessions)]
            stop = min(due_until, n)
            while k < stop:
                i, s, frame = schedule[k]
                batch[s].append(frame)
                sent[i] = now
                k += 1
            for s, frames in enumerate(batch):
                if frames:
                    socks[s].sendall(b"".join(frames))
    else:
        acked = acked_per_session
        position = [0] * n_sessions
        remaining = sum(len(f) for f in per_session)
        while remaining:
            progressed = False
            now = clock()
            for s in range(n_sessions):
                frames = per_session[s]
                p = position[s]
                room = window - (p - acked[s])
                if room <= 0 or p >= len(frames):
                    continue
                chunk = frames[p:p + room]
                for i, _ in chunk:
                    sent[i] = now
                socks[s].sendall(b"".join(frame for _, frame in chunk))
                position[s] = p + len(chunk)
                remaining -= len(chunk)
                progressed = True
            if not progressed:
                time.sleep(0.0001)
    done.set()


def _receiver(socks, n_orders: int, recv_ns, acked_per_session, timeout_s: float, results) -> None:
    """Read everything the gateway sends; note the first ack (ER 150=0/8) of every order."""
    clock = time.monotonic_ns
    recv = np.frombuffer(recv_ns, dtype=np.int64)
    index = {s.fileno(): k for k, s in enumerate(socks)}
    buffers = {s.fileno(): b"" for s in socks}
    counts: dict[str, int] = {}
    exec_types: dict[str, int] = {}
    reject_examples: list[str] = []
    acked = 0
    messages = 0
    deadline = time.monotonic() + timeout_s
    closed = set()
    while acked < n_orders and time.monotonic() < deadline and len(closed) < len(socks):
        readable, _, _ = select.select([s for s in socks if s.fileno() not in closed], [], [], 0.1)
        for sock in readable:
            fd = sock.fileno()
            data = sock.recv(1 << 18)
            now = clock()
            if not data:
                closed.add(fd)
                continue
            buf = buffers[fd] + data
            pos = 0
            while True:
                j = buf.find(b"\x0110=", pos)
                if j < 0 or j + 8 > len(buf):
                    break
                msg = buf[pos:j + 8]
                pos = j + 8
                messages += 1
                t = msg.find(b"\x0135=")
                mtype = msg[t + 4:msg.find(SOH, t + 4)].decode()
                counts[mtype] = counts.get(mtype, 0) + 1
                if mtype == "8":
                    e = msg.find(b"\x01150=")
                    exec_type = msg[e + 5:e + 6].decode()
                    exec_types[exec_type] = exec_types.get(exec_type, 0) + 1
                    if exec_type in ("0", "8"):
                        c = msg.find(b"\x0111=")
                        i = int(msg[c + 4:msg.find(SOH, c + 4)])
                        if recv[i] == 0:
                            recv[i] = now
                            acked += 1
                            acked_per_session[index[fd]] += 1
                elif mtype in ("3", "j", "5") and len(reject_examples) < 5:
                    reject_examples.append(msg.replace(SOH, b"|").decode("latin-1"))
            buffers[fd] = buf[pos:]
    results.put({"acked": acked, "messages_in": messages, "msg_types": counts,
                 "exec_types": exec_types, "reject_examples": reject_examples})


# ---------------------------------------------------------------------------- one run
@dataclass
class RunSpec:
    label: str
    orders: int
    rate: float = 0.0          # offered orders/s (0 = closed loop)
    window: int = 0            # closed loop: unacknowledged orders per session


@dataclass
class Harness:
    sessions: int = 10
    seed: int = 1
    connect: Optional[tuple[str, int]] = None
    workdir: Optional[Path] = None
    drain_timeout: float = 60.0
    log: object = field(default=None)
    # session k connects to spread[k % len(spread)] instead (several gateway processes of one
    # exchange: benchmarks/fronts.py)
    spread: Optional[list] = None

    def run(self, spec: RunSpec) -> dict:
        config = config_text(self.sessions)
        tmp = Path(tempfile.mkdtemp(prefix="ccerx-gateway-load-", dir=self.workdir))
        server = None if self.connect else Server(config, tmp)
        host, port = self.connect or (server.host, server.port)
        try:
            return self._run(spec, host, port, server)
        finally:
            if server is not None:
                code = server.stop()
                if code not in (0, None):
                    raise RuntimeError(f"ccerx serve exited with {code}; log in {server.dir}")
            shutil.rmtree(tmp, ignore_errors=True)

    def _run(self, spec: RunSpec, host: str, port: int, server: Optional[Server]) -> dict:
        orders = make_orders(spec.orders, self.seed)
        per_session = encode_orders(orders, self.sessions, utc_text(time.time()))
        socks = []
        addresses = self.spread or [(host, port)]
        for k, broker in enumerate(broker_ids(self.sessions)):
            sock = socket.create_connection(addresses[k % len(addresses)])
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            socks.append(sock)
        for sock, broker in zip(socks, broker_ids(self.sessions)):
            _logon(sock, broker)
        ctx = multiprocessing.get_context("fork")
        sent_ns = ctx.RawArray("q", spec.orders)
        recv_ns = ctx.RawArray("q", spec.orders)
        acked_per_session = ctx.RawArray("q", self.sessions)
        results = ctx.Queue()
        done = ctx.Event()
        lead_ns = 200_000_000
        start_ns = time.monotonic_ns() + lead_ns
        interval_ns = 1e9 / spec.rate if spec.rate else 0.0
        send_seconds = spec.orders / spec.rate if spec.rate else 0.0
        timeout = send_seconds + lead_ns / 1e9 + self.drain_timeout
        load_at_start = os.getloadavg()[0]
        cpu_before = server.cpu_seconds() if server else None
        receiver = ctx.Process(target=_receiver, args=(socks, spec.orders, recv_ns,
                                                       acked_per_session, timeout, results))
        sender = ctx.Process(target=_sender, args=(socks, per_session, start_ns, interval_ns,
                                                   spec.window, sent_ns, acked_per_session, done))
        receiver.start()
        sender.start()
        got = results.get(timeout=timeout + 30)
        receiver.join()
        sender.join(timeout=30)
        if sender.is_alive():
            sender.kill()
            sender.join()
        end_ns = time.monotonic_ns()
        cpu_after = server.cpu_seconds() if server else None
        # Log out: the client sent len(frames) + 1 messages on each session so far.
        for s, sock in enumerate(socks):
            broker = broker_ids(self.sessions)[s]
            try:
                sock.sendall(fix_frame([(35, "5"), (34, str(len(per_session[s]) + 2)),
                                        (49, broker), (52, utc_text(time.time())),
                                        (56, GATEWAY_COMP_ID)]))
            except OSError:
                pass
        logged_out = 0
        for sock in socks:
            sock.settimeout(5)
            data = b""
            try:
                while True:
                    chunk = sock.recv(1 << 16)
                    if not chunk:
                        break
                    data += chunk
                    if b"\x0135=5\x01" in data:
                        logged_out += 1
                        break
            except OSError:
                pass
            sock.close()

        sent = np.frombuffer(sent_ns, dtype=np.int64).copy()
        recv = np.frombuffer(recv_ns, dtype=np.int64).copy()
        ok = recv > 0
        n_acked = int(ok.sum())
        if spec.rate:
            planned = start_ns + np.round(np.arange(spec.orders) * interval_ns).astype(np.int64)
            base = planned
        else:
            base = sent
        latency = recv[ok] - base[ok]
        first = int(base.min()) if spec.orders else start_ns
        last_ack = int(recv[ok].max()) if n_acked else end_ns
        span = (last_ack - first) / 1e9
        late = int(((sent - base) > 1_000_000).sum()) if spec.rate else 0
        result = {
            "label": spec.label,
            "mode": "open loop" if spec.rate else "closed loop",
            "offered_per_s": spec.rate or None,
            "window_per_session": spec.window or None,
            "orders": spec.orders, "acked": n_acked, "unacked": spec.orders - n_acked,
            "sustained_per_s": round(n_acked / span) if span > 0 else 0,
            "span_s": round(span, 3),
            "late_sends_over_1ms": late,
            "latency_us": latency_summary(latency),
            "messages_in": got["messages_in"], "msg_types": got["msg_types"],
            "exec_types": got["exec_types"],
            "session_or_business_rejects": got["msg_types"].get("3", 0) + got["msg_types"].get("j", 0),
            "reject_examples": got["reject_examples"],
            "logged_out_sessions": logged_out,
            "server_cpu_s": round(cpu_after - cpu_before, 3) if server else None,
            "server_cpu_us_per_order": (round((cpu_after - cpu_before) / spec.orders * 1e6, 1)
                                        if server and spec.orders else None),
            "loadavg_1min_at_start": round(load_at_start, 2),
            "ok": n_acked == spec.orders and logged_out == self.sessions and not (
                got["msg_types"].get("3", 0) + got["msg_types"].get("j", 0)),
        }
        result["_latency_ns"] = latency           # for the plot; dropped from result.json
        return result


def latency_summary(latency_ns: np.ndarray) -> dict:
    """p50/p90/p99/p99.9/max in microseconds (1 us resolution), from the benchmarks' one
    summary, `benchmarks.bench.latency_summary`: HDR histogram, 3 significant digits, every
    percentile clamped to the recorded min and max, exact max and mean."""
    from ccerx.benchmarks.bench import latency_summary as summary
    if len(latency_ns) == 0:
        return {"count": 0}
    whole = summary(np.maximum(np.asarray(latency_ns) // 1000, 1))
    return ({"count": whole["count"], "mean": whole["mean"]}
            | {f"p{p:g}": whole[f"p{p:g}"] for p in PERCENTILES} | {"max": whole["max"]})


# ---------------------------------------------------------------------------- report
def run_all(sessions: int = 10, rates=(5000.0, 10000.0, 20000.0), seconds: float = 5.0,
            closed_loop_orders: int = 100_000, window: int = 50, seed: int = 1,
            connect: Optional[tuple[str, int]] = None, workdir: Optional[Path] = None,
            drain_timeout: float = 60.0, progress=None) -> dict:
    harness = Harness(sessions, seed, connect, workdir, drain_timeout)
    specs = []
    if closed_loop_orders:
        specs.append(RunSpec("closed loop", closed_loop_orders, 0.0, window))
    for rate in rates:
        specs.append(RunSpec(f"open loop {rate:g}/s", max(1, int(rate * seconds)), float(rate)))
    runs = []
    for spec in specs:
        if progress:
            progress(f"{spec.label}: {spec.orders:,} orders over {sessions} sessions")
        runs.append(harness.run(spec))
    return {
        "benchmark": "FIX gateway load (loopback)",
        "sessions": sessions, "seed": seed,
        "server": f"{connect[0]}:{connect[1]}" if connect else "ccerx serve subprocess per run",
        "order_mix": "70% resting day limits 1-30 ticks passive, 30% marketable IOC limits; "
                     "qty 1-500 t Pareto(1.2); four credit types",
        "ack": "first ExecutionReport with ExecType 0 (new) or 8 (rejected)",
        "processes": "gateway (ccerx serve), client sender, client receiver: 3 processes",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "loadavg_at_end": os.getloadavg()},
        "runs": runs,
        "ok": all(r["ok"] for r in runs),
    }


def format_table(result: dict) -> str:
    head = ["run", "orders", "acked", "sustained/s", "p50", "p90", "p99", "p99.9", "max",
            "srv us/order"]
    rows = []
    for r in result["runs"]:
        lat = r["latency_us"]
        rows.append([r["label"], f"{r['orders']:,}", f"{r['acked']:,}",
                     f"{r['sustained_per_s']:,}"]
                    + [f"{lat.get(k, 0):,}" for k in ("p50", "p90", "p99", "p99.9", "max")]
                    + [str(r["server_cpu_us_per_order"])])
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    lines = [f"FIX gateway load: {result['sessions']} broker sessions on loopback; "
             "order-to-acknowledgement latency in microseconds"]
    for row in [head] + rows:
        lines.append("  " + "  ".join(x.rjust(w) for x, w in zip(row, widths)))
    for r in result["runs"]:
        if not r["ok"]:
            lines.append(f"  FAILED {r['label']}: {r['unacked']} unacknowledged, "
                         f"{r['session_or_business_rejects']} session/business rejects, "
                         f"{r['logged_out_sessions']}/{result['sessions']} logged out; "
                         f"{r['reject_examples'][:2]}")
    return "\n".join(lines)


def write_outputs(result: dict, out: Path, plots: bool = True) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    latencies = {r["label"]: r.pop("_latency_ns", None) for r in result["runs"]}
    written = [out / "result.json"]
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    if plots:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(8, 5))
        for label, lat in latencies.items():
            if lat is None or not len(lat):
                continue
            values = np.sort(lat) / 1000.0
            q = (np.arange(1, len(values) + 1) - 0.5) / len(values)
            ax.plot(1.0 / (1.0 - q), values, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = [1, 2, 10, 100, 1000, 10000, 100000]
        ax.set_xticks(ticks)
        ax.set_xticklabels(["0%", "50%", "90%", "99%", "99.9%", "99.99%", "99.999%"])
        ax.axhline(2000, color="grey", linestyle=":", label="2 ms")
        ax.set_xlabel("percentile")
        ax.set_ylabel("order-to-acknowledgement latency, us")
        ax.set_title(f"FIX gateway, {result['sessions']} sessions on loopback")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "latency_spectrum.png", dpi=110)
        plt.close(fig)
        written.append(out / "latency_spectrum.png")
    return written


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sessions", type=int, default=10, help="broker sessions (default 10)")
    p.add_argument("--rates", default="5000,10000,20000", metavar="R1,R2,...",
                   help="offered rates, orders/s over all sessions (default 5000,10000,20000)")
    p.add_argument("--seconds", type=float, default=5.0,
                   help="length of each open-loop run (default 5)")
    p.add_argument("--closed-loop-orders", type=int, default=100_000, metavar="N",
                   help="orders in the closed-loop max-rate run (default 100000; 0 = skip)")
    p.add_argument("--window", type=int, default=50,
                   help="closed loop: unacknowledged orders per session (default 50)")
    p.add_argument("--seed", type=int, default=1, help="order mix seed (default 1)")
    p.add_argument("--connect", metavar="HOST:PORT",
                   help="use a running gateway (its config must be the generated one: "
                        "--print-config) instead of a `ccerx serve` subprocess per run")
    p.add_argument("--print-config", action="store_true",
                   help="print the generated gateway config for --sessions and exit")
    p.add_argument("--out", default="bench-gateway-out", metavar="DIR",
                   help="output directory (default bench-gateway-out)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG")


def run_cli(args) -> int:
    if args.print_config:
        print(config_text(args.sessions), end="")
        return 0
    try:
        rates = [float(r) for r in args.rates.split(",") if r.strip()] if args.rates else []
        if (any(r <= 0 for r in rates) or args.sessions < 1 or args.sessions > 99
                or args.seconds <= 0 or args.closed_loop_orders < 0 or args.window < 1):
            raise ValueError
        connect = None
        if args.connect:
            host, _, port = args.connect.rpartition(":")
            connect = (host, int(port))
    except ValueError:
        print("gateway load: --rates, --seconds, --window must be positive, --sessions 1-99, "
              "--connect HOST:PORT", file=sys.stderr)
        return 2
    result = run_all(args.sessions, rates, args.seconds, args.closed_loop_orders, args.window,
                     args.seed, connect,
                     progress=lambda text: print(text, file=sys.stderr, flush=True))
    written = write_outputs(result, Path(args.out), plots=not args.no_plots)
    print(format_table(result))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0 if result["ok"] else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p)
    return run_cli(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
