"""End-to-end benchmark: a flow sent as FIX 4.4 over loopback to a `ccerx serve` subprocess.

Several broker sessions (real TCP sockets, messages encoded and parsed with simplefix, the
independent FIX library, on the client side) replay a flow open loop: command i has the
planned send time t0 + i / rate, whichever session carries it. The latency of a command
is the time from its *planned* send time to the arrival of its acknowledgement: the first
ExecutionReport (35=8) or OrderCancelReject (35=9) carrying its ClOrdID. A late send (the
client or the server fell behind) is charged to the commands behind it, so coordinated
omission cannot hide a stall. The server is the real gateway with the real engine and its
pre-trade risk checks; the client shares the machine's cores with it.

Mapping of flow commands to FIX: new -> NewOrderSingle (D) on the session that owns the
flow account (accounts are spread over the sessions round robin), Account = the session's
buy account for buys and sell account for sells; cancel -> OrderCancelRequest (F) and amend
-> OrderCancelReplaceRequest (G) on the session that entered the order, OrigClOrdID = the
flow's order id. Lines that cannot be a FIX message (malformed JSON, instrument definitions)
are not sent; invalid field values (off-tick prices, bad quantities, unknown instruments)
are sent as they are and acknowledged by rejects.
"""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ccerx.engine.core.commands import AmendOrder, CancelOrder, NewOrder
from ccerx.engine.core.types import PriceError

from ccerx.benchmarks.bench import latency_summary, run_bench
from ccerx.engine.core.types import format_price_units
from ccerx.engine.formats.binary import is_journal_path, iter_flow_commands

GATEWAY_COMP_ID = "CCERX"
_FRAME = re.compile(rb"8=FIX\.4\.4\x019=(\d+)\x01")
_TAG35 = re.compile(rb"\x0135=([^\x01]*)\x01")
_TAG11 = re.compile(rb"\x0111=([^\x01]*)\x01")
FIX_SIDE = {"buy": "1", "sell": "2"}
FIX_TYPE = {"limit": "2", "market": "1"}
FIX_TIF = {"day": "0", "ioc": "3", "fok": "4"}


@dataclass(frozen=True)
class Broker:
    comp_id: str
    password: Optional[str]
    buy_account: str
    sell_account: str


DEMO_BROKERS = (Broker("BROKER01", "demo01", "EMIT01", "HOLD01"),
                Broker("BROKER02", "demo02", "EMIT02", "HOLD02"))


def load_config_text(n: int) -> str:
    """A gateway config with n password-less brokers (loopback load test only), each with a
    well-funded emitter (buys) and holder (sells) account."""
    parts = ['[gateway]\ncomp_id = "CCERX"\nmessage_rate = 0   # a load test: no per-session cap\n']
    for i in range(1, n + 1):
        parts.append(f'[[broker]]\ncomp_id = "BROKER{i:02d}"\n\n'
                     f'[[broker.account]]\naccount = "EMIT{i:02d}"\ntype = "key_emission_unit"\n'
                     f'cash = "1000000000000.00"\n\n'
                     f'[[broker.account]]\naccount = "HOLD{i:02d}"\ntype = "project_owner"\n'
                     'credits = { "CCER-AFF" = 1000000000, "CCER-SOL" = 1000000000, '
                     '"CCER-OWF" = 1000000000, "CCER-MGV" = 1000000000 }\n')
    return "\n".join(parts)


def load_brokers(n: int) -> tuple[Broker, ...]:
    return tuple(Broker(f"BROKER{i:02d}", None, f"EMIT{i:02d}", f"HOLD{i:02d}")
                 for i in range(1, n + 1))


def _utc_text(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, timezone.utc).strftime("%Y%m%d-%H:%M:%S.%f")[:-3]


def _utc_now() -> str:
    return _utc_text(time.time())


# ---------------------------------------------------------------------------- flow -> FIX
def fix_requests(flow_path, n_sessions: int, limit: int) -> list[tuple[int, str, str, list]]:
    """[(session index, msg type, ClOrdID, body fields)] for the first `limit` commands."""
    out = []
    owner: dict[str, int] = {}        # flow account -> session
    order_session: dict[str, int] = {}
    order_info: dict[str, list] = {}   # order id -> Symbol and Side (required on F and G)
    unknown = [(55, "CCER-AFF"), (54, "1")]
    n = 0
    for command in iter_flow_commands(flow_path):
        if n >= limit:
            break
        n += 1
        kind = type(command)
        if kind is NewOrder:
            c = command
            if (type(c.order_id) is not str or type(c.account) is not str
                    or type(c.instrument) is not str or c.side not in FIX_SIDE
                    or c.order_type not in FIX_TYPE or type(c.qty) is not int
                    or isinstance(c.price_units, PriceError)):
                continue
            if c.order_id in order_session:
                continue          # a duplicate ClOrdID would be acknowledged by a reject too,
                                  # but two acks for one key cannot be told apart
            s = owner.setdefault(c.account, len(owner) % n_sessions)
            order_session[c.order_id] = s
            order_info[c.order_id] = [(55, c.instrument), (54, FIX_SIDE[c.side])]
            body = [(55, c.instrument), (54, FIX_SIDE[c.side]), (40, FIX_TYPE[c.order_type]),
                    (38, str(c.qty))]
            if c.tif is not None:
                if c.tif not in FIX_TIF:
                    continue
                body.append((59, FIX_TIF[c.tif]))
            if c.price_units is not None:
                body.append((44, format_price_units(c.price_units)))
            out.append((s, "D", c.order_id, body, c.side))
        elif kind is CancelOrder and type(command.order_id) is str:
            s = order_session.get(command.order_id, 0)
            out.append((s, "F", f"c{n}", [(41, command.order_id)]
                        + order_info.get(command.order_id, unknown), None))
        elif kind is AmendOrder and type(command.order_id) is str:
            if isinstance(command.price_units, PriceError) or (
                    command.qty is not None and type(command.qty) is not int):
                continue
            s = order_session.get(command.order_id, 0)
            body = [(41, command.order_id), (40, "2")] + order_info.get(command.order_id, unknown)
            if command.qty is not None:
                body.append((38, str(command.qty)))
            if command.price_units is not None:
                body.append((44, format_price_units(command.price_units)))
            out.append((s, "G", f"a{n}", body, None))
    return out


# ---------------------------------------------------------------------------- the client
class Session:
    def __init__(self, broker: Broker, reader, writer, acks: dict, recv: dict):
        import simplefix
        self.broker = broker
        self.reader, self.writer = reader, writer
        self.seq = 0
        self.parser = simplefix.FixParser()
        self.simplefix = simplefix
        self.acks, self.recv = acks, recv
        self.logged_on = asyncio.Event()
        self.logged_out = asyncio.Event()
        self.messages_in = 0
        self.rejects: list[str] = []
        self.fast_parse = False
        self.fills = 0               # ExecutionReports with ExecType F (one per side of a trade)
        self._buf = b""

    def _scan(self, data: bytes, now: int) -> None:
        """Cheap framing (BodyLength + checksum) and a look at 35 and 11 only: keeps the
        client's own parsing cost from pacing the run (simplefix parses ~76 us/message)."""
        buf = self._buf + data
        pos = 0
        while True:
            m = _FRAME.match(buf, pos)
            if m is None:
                break
            end = m.end() + int(m.group(1)) + 7          # body, then "10=ddd" SOH
            if end > len(buf):
                break
            frame = buf[pos:end]
            pos = end
            self.messages_in += 1
            t = _TAG35.search(frame)
            mtype = t.group(1) if t else b""
            if mtype == b"8" and b"\x01150=F\x01" in frame:
                self.fills += 1
            if mtype in (b"8", b"9"):
                c = _TAG11.search(frame)
                if c is not None:
                    key = c.group(1).decode()
                    if key in self.acks and key not in self.recv:
                        self.recv[key] = now
            elif mtype in (b"3", b"j"):
                self.rejects.append(frame.replace(b"\x01", b"|").decode(errors="replace"))
            elif mtype == b"A":
                self.logged_on.set()
            elif mtype == b"5":
                self.logged_out.set()
            elif mtype == b"1":
                req = re.search(rb"\x01112=([^\x01]*)\x01", frame)
                self.writer.write(self.encode("0", [(112, req.group(1).decode() if req else "")]))
        self._buf = buf[pos:]

    def encode(self, msg_type: str, body: list, sending_time: Optional[str] = None) -> bytes:
        m = self.simplefix.FixMessage()
        self.seq += 1
        m.append_pair(8, "FIX.4.4", header=True)
        m.append_pair(35, msg_type, header=True)
        m.append_pair(49, self.broker.comp_id, header=True)
        m.append_pair(56, GATEWAY_COMP_ID, header=True)
        m.append_pair(34, self.seq, header=True)
        m.append_pair(52, sending_time or _utc_now(), header=True)
        for tag, value in body:
            m.append_pair(tag, value)
        return m.encode()

    async def logon(self) -> None:
        body = [(98, "0"), (108, "30"), (141, "Y"), (553, self.broker.comp_id)]
        if self.broker.password:
            body.append((554, self.broker.password))
        self.writer.write(self.encode("A", body))
        await self.writer.drain()

    async def read_loop(self) -> None:
        clock = time.perf_counter_ns
        while True:
            data = await self.reader.read(1 << 16)
            if not data:
                return
            now = clock()
            if self.fast_parse:
                self._scan(data, now)
                continue
            self.parser.append_buffer(data)
            while (msg := self.parser.get_message()) is not None:
                self.messages_in += 1
                mtype = msg.get(35)
                if mtype == b"8" and msg.get(150) == b"F":
                    self.fills += 1
                if mtype in (b"8", b"9"):
                    cl = msg.get(11)
                    if cl is not None:
                        key = cl.decode()
                        if key in self.acks and key not in self.recv:
                            self.recv[key] = now
                elif mtype in (b"3", b"j"):    # session / business reject: keyed by seq num
                    self.rejects.append(msg.encode().replace(b"\x01", b"|").decode(errors="replace"))
                elif mtype == b"A":
                    self.logged_on.set()
                elif mtype == b"5":
                    self.logged_out.set()
                elif mtype == b"1":    # TestRequest: answer with a Heartbeat
                    self.writer.write(self.encode("0", [(112, msg.get(112).decode())]))


async def _client(host: str, port: int, brokers, requests, rate: float, drain_timeout: float,
                  fast_parse: bool = False):
    acks: dict[str, int] = {}   # ClOrdID -> planned send time (ns)
    recv: dict[str, int] = {}   # ClOrdID -> ack arrival (ns)
    sessions = []
    for broker in brokers:
        reader, writer = await asyncio.open_connection(host, port)
        sessions.append(Session(broker, reader, writer, acks, recv))
        sessions[-1].fast_parse = fast_parse
    readers = [asyncio.create_task(s.read_loop()) for s in sessions]
    for s in sessions:
        await s.logon()
    await asyncio.wait_for(asyncio.gather(*(s.logged_on.wait() for s in sessions)), 30)
    # Encode every request before the clock starts (SendingTime = its planned send time), so
    # the client's own encoding cost does not pace the run; acks are parsed as they arrive.
    clock = time.perf_counter_ns
    interval = 1e9 / rate
    lead_s = 0.05 + 40e-6 * len(requests)
    start_wall = time.time() + lead_s
    frames = []
    for i, (s, mtype, cl, body, side) in enumerate(requests):
        session = sessions[s]
        fields = [(11, cl)]
        if mtype == "D":
            fields.append((1, session.broker.buy_account if side == "buy"
                           else session.broker.sell_account))
        fields += body
        when = _utc_text(start_wall + i * interval / 1e9)
        fields.append((60, when))
        frames.append((session, cl, session.encode(mtype, fields, when)))
    start = clock() + max(int((start_wall - time.time()) * 1e9), 1_000_000)
    planned = (start + np.round(np.arange(len(requests)) * interval)).astype(np.int64).tolist()
    late_sends = 0
    for i, ((session, cl, frame), when) in enumerate(zip(frames, planned)):
        now = clock()
        if when - now > 1_000_000:
            await asyncio.sleep((when - now - 500_000) / 1e9)
            now = clock()
        while now < when:            # wait by yielding, so acks are read as they arrive
            await asyncio.sleep(0)
            now = clock()
        if now - when > 1_000_000:
            late_sends += 1
        acks[cl] = when
        session.writer.write(frame)
        if i % 8 == 7:
            await asyncio.sleep(0)     # let the readers run even when we are behind
    deadline = time.monotonic() + drain_timeout
    while len(recv) < len(acks) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    end = clock()
    for s in sessions:
        s.writer.write(s.encode("5", []))
    try:
        await asyncio.wait_for(asyncio.gather(*(s.logged_out.wait() for s in sessions)), 5)
    except asyncio.TimeoutError:
        pass
    for s in sessions:
        s.writer.close()
    for t in readers:
        t.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    unacked = [k for k in acks if k not in recv]
    got = [recv[k] - acks[k] for k in acks if k in recv]
    lat = np.asarray(got, dtype=np.int64)
    acked_times = np.asarray([recv[k] for k in acks if k in recv], dtype=np.int64)
    span = (acked_times.max() - start) / 1e9 if len(acked_times) else 0.0
    return {"sent": len(acks), "acked": len(recv), "unacked": len(acks) - len(recv),
            "late_sends_over_1ms": late_sends, "unacked_examples": unacked[:5], "offered_per_s": rate,
            "achieved_per_s": round(len(recv) / span) if span else 0,
            "send_span_s": round((planned[-1] - start) / 1e9, 3) if planned else 0.0,
            "latency_ns": latency_summary(lat),
            "messages_in": sum(s.messages_in for s in sessions),
            "trade_reports": sum(s.fills for s in sessions),
            "session_or_business_rejects": sum(len(s.rejects) for s in sessions),
            "reject_examples": [r for s in sessions for r in s.rejects][:3],
            "wall_s": round((end - start) / 1e9, 3)}


class Server:
    """`ccerx serve` as a subprocess on a free loopback port."""

    def __init__(self, config_text: Optional[str]):
        self.dir = tempfile.TemporaryDirectory(prefix="ccerx-e2e-")
        # the flows are continuous-market flows (IOC, market orders, amends): the serve
        # default (cbeex-2023) would refuse them
        cmd = [sys.executable, "-m", "ccerx.scripts.ccerx", "serve", "--port", "0",
               "--data-dir", os.path.join(self.dir.name, "data"), "--rules", "continuous"]
        if config_text is not None:
            cfg = Path(self.dir.name) / "gateway.toml"
            cfg.write_text(config_text)
            cmd += ["--config", str(cfg)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        line = self.proc.stdout.readline()
        match = re.search(r"listening on ([\d.]+):(\d+)", line)
        if match is None:
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            self.stop()
            raise RuntimeError(f"ccerx serve did not start: {line!r} {err}")
        self.host, self.port = match.group(1), int(match.group(2))

    @property
    def data_dir(self) -> Path:
        return Path(self.dir.name) / "data"

    def stop(self, cleanup: bool = True) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if cleanup:
            self.dir.cleanup()


def _recovered_hash(data_dir: Path, make_exchange: Callable) -> str:
    """The state the durable engine itself recovers from the data directory (snapshot +
    journal), as an independent check of the bench's replay."""
    from ccerx.engine.durable.exchange import DurableExchange
    template = make_exchange()
    try:
        with DurableExchange(data_dir, list(template.specs.values()), template.accounts,
                             start_relays=False, log=lambda text: None) as recovered:
            return recovered.state_hash()
    except Exception as err:    # reported, not fatal: the check is extra evidence
        return f"recovery failed: {type(err).__name__}: {err}"[:200]


def run_e2e(flow_path, *, sessions: int = 2, rates=(1000.0,), commands: int = 20_000,
            drain_timeout: float = 30.0, client_parser: str = "simplefix",
            replay_exchange: Optional[Callable] = None) -> dict:
    """One server per offered rate (fresh engine each run); returns the result dict.

    With `replay_exchange` (a factory of an Exchange set up like the server's: same
    instruments and accounts), the journal the server wrote during each run (the recorded
    day) is replayed and benchmarked afterwards with `bench.run_bench`, and its trade count
    is checked against the trade reports the brokers received over FIX."""
    brokers = DEMO_BROKERS if sessions == 2 else load_brokers(sessions)
    config = None if sessions == 2 else load_config_text(sessions)
    requests = fix_requests(flow_path, len(brokers), commands)
    runs = []
    for rate in rates:
        server = Server(config)
        try:
            run = asyncio.run(_client(server.host, server.port, brokers, requests, float(rate),
                                      drain_timeout, client_parser == "scan"))
            server.stop(cleanup=False)
            if replay_exchange is not None and is_journal_path(server.data_dir):
                day = run_bench(server.data_dir, make_exchange=replay_exchange, open_loop=False)
                run["journal_replay"] = {
                    "commands": day["flow"]["commands"], "trades": day["end_state"]["trades"],
                    "state_hash": day["end_state"]["state_hash"],
                    "engine_commands_per_s": day["closed_loop"]["commands_per_s"],
                    "trades_match_fix_reports": 2 * day["end_state"]["trades"] == run["trade_reports"],
                    "recovered_state_hash": _recovered_hash(server.data_dir, replay_exchange)}
                recovered = run["journal_replay"]["recovered_state_hash"]
                run["journal_replay"]["state_hash_matches_recovery"] = (
                    None if recovered.startswith("recovery failed")
                    else recovered == day["end_state"]["state_hash"])
            runs.append(run)
        finally:
            server.stop()
    return {"mode": "e2e", "flow": str(flow_path), "sessions": len(brokers),
            "config": "demo" if config is None else f"{len(brokers)} password-less brokers",
            "client_parser": client_parser,
            "requests": len(requests), "runs": runs}
