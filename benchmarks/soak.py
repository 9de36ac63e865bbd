"""Soak under attack (issue 12): a well-behaved broker's order round trip while another
client attacks `ccerx serve`.

    python -m ccerx.benchmarks.soak [--quick] [--orders N] [--flood N] [--stored N] [--out FILE]

One `ccerx serve` subprocess (default config: the gateway's documented message rate and
logon back-off) with four brokers: BROKER01 is the well-behaved broker whose round trip is
measured; the attackers use BROKER02 (resends), BROKER03 (guessed) and BROKER04 (flood). BROKER01 sends one NewOrderSingle
at a time (a resting limit buy of 1 t), paced 2 ms apart, and times it from the send to its
ExecutionReport; each run is one attack, running in a process of its own:

    none              baseline (measured first and again last: the spread is the noise)
    password guess    connects from 127.0.0.2 and logs on as BROKER03 with wrong passwords,
                      as fast as it can
    order flood       BROKER04 writes --flood NewOrderSingles as fast as it can (and reads
                      what comes back)
    huge resend       BROKER02 asks for everything stored for it (--stored execution reports,
                      made beforehand) again and again, reading as fast as it can
    slow reader       BROKER02 asks for the same resend and sends ten orders a second, and
                      never reads

Prints, per run: orders sent / acknowledged / lost (never acknowledged) / duplicated, p50 and
p99 of the round trip, and the ratios to the first baseline. The target (issue 12): p99
under each attack within 2x of the baseline. The attackers share the machine's cores with
the server and the measured broker, which a remote attacker would not.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

GATEWAY = "CCERX"
PASSWORDS = {"BROKER01": "soak01", "BROKER02": "soak02", "BROKER03": "soak03",
             "BROKER04": "soak04"}
START_LINE = re.compile(r"listening on ([\d.]+):(\d+)")
PACE_S = 0.002
SOH = b"\x01"


# ---------------------------------------------------------------------------- FIX, minimal
def utc_now() -> str:
    t = time.time()
    return time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(t)) + ".%03d" % (int(t * 1000) % 1000)


def frame(msg_type: str, sender: str, seq: int, *fields) -> bytes:
    body = "35=%s\x0134=%d\x0149=%s\x0152=%s\x0156=%s\x01" % (msg_type, seq, sender, utc_now(), GATEWAY)
    body += "".join("%d=%s\x01" % (tag, value) for tag, value in fields)
    raw = body.encode()
    head = b"8=FIX.4.4\x019=%d\x01" % len(raw)
    return b"%s%s10=%03d\x01" % (head, raw, (sum(head) + sum(raw)) % 256)


def fields_of(raw: bytes) -> dict[int, str]:
    out = {}
    for part in raw.split(SOH):
        tag, _, value = part.partition(b"=")
        if tag.isdigit() and int(tag) not in out:
            out[int(tag)] = value.decode("latin-1")
    return out


class Client:
    """A blocking FIX client: logon, send, read whole frames."""

    def __init__(self, port: int, comp_id: str, source: str = "127.0.0.1", seq: int = 1):
        self.comp_id = comp_id
        self.seq = seq
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30,
                                             source_address=(source, 0))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()

    def send(self, msg_type: str, *fields) -> None:
        self.sock.sendall(self.build(msg_type, *fields))

    def build(self, msg_type: str, *fields) -> bytes:
        raw = frame(msg_type, self.comp_id, self.seq, *fields)
        self.seq += 1
        return raw

    def logon(self, password: str, reset: bool = True) -> dict:
        fields = [(98, 0), (108, 30), (553, self.comp_id), (554, password)]
        if reset:
            fields.append((141, "Y"))
        self.send("A", *fields)
        return self.next_message()

    def frames(self):
        """Every whole frame in the buffer (raw bytes), consumed."""
        buf = self.buffer
        while True:
            at = buf.find(b"\x0110=")
            if at < 0:
                return
            end = buf.find(SOH, at + 4)
            if end < 0:
                return
            raw = bytes(buf[:end + 1])
            del buf[:end + 1]
            yield raw

    def next_message(self) -> Optional[dict]:
        while True:
            for raw in self.frames():
                return fields_of(raw)
            data = self.sock.recv(1 << 16)
            if not data:
                return None
            self.buffer += data

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------- the server
def config_text(stored_rate_free: bool, message_rate: Optional[int] = None) -> str:
    from ccerx.gateway.config import hash_password
    lines = ['[gateway]', f'comp_id = "{GATEWAY}"']
    if stored_rate_free:
        lines.append("message_rate = 0")            # only for making the stored messages
    elif message_rate is not None:
        lines += [f"message_rate = {message_rate}", f"message_burst = {max(2 * message_rate, 1)}"]
    for n, (broker, password) in enumerate(PASSWORDS.items(), 1):
        lines += ["", "[[broker]]", f'comp_id = "{broker}"', f'password = "{hash_password(password)}"',
                  "", "[[broker.account]]", f'account = "EMIT{n:02d}"', 'type = "key_emission_unit"',
                  'cash = "100000000.00"']
    return "\n".join(lines) + "\n"


class Serve:
    def __init__(self, workdir: Path, config: str):
        self.config_path = workdir / "gateway.toml"
        self.config_path.write_text(config)
        self.log = open(workdir / "serve.log", "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ccerx.scripts.ccerx", "serve", "--port", "0",
             "--data-dir", str(workdir / "data"), "--config", str(self.config_path),
             "--control", "none"],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        found = START_LINE.search(line)
        if not found:
            self.stop()
            raise RuntimeError(f"ccerx serve did not start: {line!r}; see {workdir / 'serve.log'}")
        self.port = int(found.group(2))

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait_idle(self, timeout: float = 60) -> None:
        """Until the server uses under 5% of a core for half a second."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            before = self.cpu_seconds()
            time.sleep(0.5)
            if self.cpu_seconds() - before < 0.025:
                return

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def make_stored(port: int, count: int) -> int:
    """`count` execution reports stored for BROKER02 (answers to OrderStatusRequests), then a
    Logout; returns BROKER02's next MsgSeqNum."""
    client = Client(port, "BROKER02")
    client.logon(PASSWORDS["BROKER02"])
    batch, answered = [], 0
    for i in range(count + 1):
        if len(batch) == 500 or i == count:
            client.sock.sendall(b"".join(batch))
            batch.clear()
            while answered < (i - 2_000 if i < count else count):    # a window, not a pile
                m = client.next_message()
                if m is None:
                    raise RuntimeError("the gateway hung up while storing messages")
                answered += m.get(35) == "8"
        if i < count:
            batch.append(client.build("H", (11, f"unknown{i}"), (55, "CCER-AFF"), (54, 1)))
    client.send("5")
    while (m := client.next_message()) is not None and m.get(35) != "5":
        pass
    client.close()
    return client.seq


# ---------------------------------------------------------------------------- attacks
def attack_guess(port: int, _args, ready) -> None:
    n = 0
    ready.set()
    while True:
        try:
            client = Client(port, "BROKER03", source="127.0.0.2")
            client.logon(f"guess{n}", reset=False)
            client.close()
        except OSError:
            pass
        n += 1


def attack_flood(port: int, args, ready) -> None:
    client = Client(port, "BROKER04")
    client.logon(PASSWORDS["BROKER04"])
    sending = utc_now()                    # built beforehand: the attacker spends little CPU
    pending = bytearray(b"".join(client.build("D", (11, f"f{i}"), (1, "EMIT04"), (55, "CCER-AFF"),
                                              (54, 1), (60, sending), (38, 1), (40, 2), (44, "60.00"))
                                 for i in range(args.flood)))
    client.sock.setblocking(False)
    ready.set()
    while True:
        try:
            if pending:
                n = client.sock.send(pending[:1 << 20])
                del pending[:n]
        except BlockingIOError:
            pass
        readable, _, _ = select.select([client.sock], [client.sock] if pending else [], [], 1.0)
        if readable:
            try:
                if not client.sock.recv(1 << 20):
                    return
            except BlockingIOError:
                pass


def attack_resend(port: int, args, ready) -> None:
    client = Client(port, "BROKER02", seq=args.broker02_seq)
    client.logon(PASSWORDS["BROKER02"], reset=False)
    ready.set()
    while True:
        client.send("2", (7, 1), (16, 0))
        # read (counting, not parsing: the attacker spends little CPU) until the resend's
        # application messages are all in, then ask again
        resent, tail = 0, b""
        while resent < args.stored:
            data = client.sock.recv(1 << 20)
            if not data:
                return
            chunk = tail + data
            resent += chunk.count(b"\x0143=Y\x01")
            tail = chunk[-8:]
            resent -= tail.count(b"\x0143=Y\x01")


def attack_slow_reader(port: int, args, ready) -> None:
    client = Client(port, "BROKER02", seq=args.broker02_seq)
    client.send("A", (98, 0), (108, 30), (553, "BROKER02"), (554, PASSWORDS["BROKER02"]))
    client.send("2", (7, 1), (16, 0))
    ready.set()
    n = 0
    while True:       # never reads; a few orders a second (blocks once the gateway stops reading)
        client.send("D", (11, f"s{n}"), (1, "EMIT02"), (55, "CCER-AFF"), (54, 1),
                    (60, utc_now()), (38, 1), (40, 2), (44, "60.00"))
        n += 1
        time.sleep(0.1)


ATTACKS = {"none": None, "password guess": attack_guess, "order flood": attack_flood,
           "huge resend": attack_resend, "slow reader": attack_slow_reader}


# ---------------------------------------------------------------------------- measuring
def measure(port: int, orders: int, tag: str) -> dict:
    client = Client(port, "BROKER01")
    reply = client.logon(PASSWORDS["BROKER01"])
    if reply is None or reply.get(35) != "A":
        raise RuntimeError(f"BROKER01 could not log on: {reply}")
    latencies, acked, duplicated = [], set(), 0
    for i in range(orders):
        cl = f"{tag}{i}"
        t0 = time.perf_counter_ns()
        client.send("D", (11, cl), (1, "EMIT01"), (55, "CCER-AFF"), (54, 1), (60, utc_now()),
                    (38, 1), (40, 2), (44, "61.00"))
        while True:
            m = client.next_message()
            if m is None:
                raise RuntimeError("the gateway hung up on the measured broker")
            if m.get(35) == "1":
                client.send("0", (112, m.get(112)))
            elif m.get(35) in ("8", "j") and m.get(11, m.get(379)) is not None:
                ref = m.get(11, m.get(379))
                if ref in acked:
                    duplicated += 1
                elif ref == cl:
                    latencies.append(time.perf_counter_ns() - t0)
                    acked.add(cl)
                    break
        time.sleep(PACE_S)
    client.send("5")
    client.close()
    us = np.array(latencies) / 1000
    return {"sent": orders, "acked": len(acked), "lost": orders - len(acked), "duplicated": duplicated,
            "p50_us": float(np.percentile(us, 50)), "p99_us": float(np.percentile(us, 99)),
            "max_us": float(us.max())}


def run(args) -> list[tuple[str, dict]]:
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    try:
        serve = Serve(workdir, config_text(stored_rate_free=True))
        try:
            args.broker02_seq = make_stored(serve.port, args.stored)
        finally:
            serve.stop()
        serve = Serve(workdir, config_text(stored_rate_free=False, message_rate=args.message_rate))
        results = []
        try:
            # A baseline before and after every attack: the machine's other load drifts, so
            # each attack is compared with the baselines measured next to it.
            runs = ["none"]
            chosen = args.attacks.split(",") if args.attacks else list(ATTACKS)[1:]
            for name in chosen:
                runs += [name, "none"]
            for n, name in enumerate(runs):
                attacker = None
                if ATTACKS[name] is not None:
                    ready = multiprocessing.Event()
                    attacker = multiprocessing.Process(target=ATTACKS[name],
                                                       args=(serve.port, args, ready), daemon=True)
                    attacker.start()
                    ready.wait(120)
                    time.sleep(0.5)            # the attack is under way
                result = measure(serve.port, args.orders, f"r{n}-")
                if attacker is not None:
                    result["attacker_alive"] = attacker.is_alive()
                    attacker.terminate()
                    attacker.join(10)
                    serve.wait_idle()          # the gateway has finished with what it sent
                results.append((name, result))
                if name in ("huge resend", "slow reader"):
                    args.broker02_seq = broker02_next_seq(workdir)
            print(HEADER)
            for i, (name, result) in enumerate(results):
                base = result if name == "none" else {
                    key: (results[i - 1][1][key] + results[i + 1][1][key]) / 2
                    for key in ("p50_us", "p99_us")}
                result["base"] = base
                print_row(name, result, base, flush=True)
        finally:
            serve.stop()
        return results
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def broker02_next_seq(workdir: Path) -> int:
    """The MsgSeqNum the gateway expects next from BROKER02 (its store's .seqnums)."""
    for path in (workdir / "data" / "fix").glob("*BROKER02*.seqnums"):
        return int(path.read_text().split()[1])
    raise RuntimeError("no BROKER02 store")


HEADER = "%-16s %6s %6s %5s %5s %10s %10s %8s %8s" % (
    "attack", "sent", "acked", "lost", "dup", "p50 us", "p99 us", "p50 x", "p99 x")
# (p50 x, p99 x: the ratio to the mean of the baselines measured just before and just after)


def print_row(name: str, r: dict, base: dict, flush: bool = False) -> None:
    print("%-16s %6d %6d %5d %5d %10.0f %10.0f %8.2f %8.2f" % (
        name, r["sent"], r["acked"], r["lost"], r["duplicated"], r["p50_us"], r["p99_us"],
        r["p50_us"] / base["p50_us"], r["p99_us"] / base["p99_us"]), flush=flush)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    ap.add_argument("--orders", type=int, help="measured orders per run (default 1000; quick 300)")
    ap.add_argument("--flood", type=int, help="orders in the flood (default 100000; quick 20000)")
    ap.add_argument("--stored", type=int,
                    help="messages stored for the resend attacks (default 100000; quick 20000)")
    ap.add_argument("--message-rate", type=int,
                    help="the gateway's message_rate (burst twice it); default: the config default")
    ap.add_argument("--attacks", help="comma-separated subset of: " + ", ".join(list(ATTACKS)[1:]))
    args = ap.parse_args(argv)
    args.orders = args.orders or (300 if args.quick else 1000)
    args.flood = args.flood or (20_000 if args.quick else 100_000)
    args.stored = args.stored or (20_000 if args.quick else 100_000)
    print(f"soak: {args.orders} measured orders per run (paced {PACE_S * 1000:.0f} ms), flood "
          f"{args.flood:,} orders, {args.stored:,} stored messages; cpus {os.cpu_count()}", flush=True)
    results = run(args)
    worst = max(r["p99_us"] / r["base"]["p99_us"] for name, r in results if name != "none")
    lost = sum(r["lost"] + r["duplicated"] for _, r in results)
    print(f"worst p99 ratio under attack: {worst:.2f}x (target <= 2x); "
          f"orders lost or duplicated: {lost}", flush=True)
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
