"""Plumbing of the cluster tests (test_cluster.py, test_cluster_join.py): a three-server NATS
JetStream cluster and `ccerx serve --cluster` nodes started by the test, brokers that fail over
by trying every node, and the checks that every acknowledged order and fill is in the
replicated log exactly once."""
from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import orjson

from ccerx.benchmarks.replication import NatsCluster
from ccerx.engine.core.commands import NewOrder
from ccerx.engine.durable import journal as jr
from ccerx.engine.durable.exchange import DurableExchange
from ccerx.engine.durable.replicated import EXIT_DIVERGED, STATUS_FILE, STREAM
from tests.fixclient import Broker, s, sync
from tests.serve_process import ServeProcess

# Brokers must trade again by then: a leader's kill -9 costs the lease (2.5 s) and a poll; a
# NATS server's death can cost the Raft election of a stream it led (nats-server 2.9: several
# seconds), during which publishes wait, and maybe the lease.
LIVENESS_S = 30.0
# more kill points: CCERX_CLUSTER_SEEDS=15,16,17 pytest tests/integration/test_cluster.py
PASSWORDS = {"BROKER01": "demo01", "BROKER02": "demo02"}


class Cluster:
    """NATS + three exchange nodes sharing one ledger: a SQLite file, or the PostgreSQL
    database `ledger` names (a postgresql:// URL, as `ccerx serve --ledger` takes it).
    `options` go to every node's `ccerx serve` (e.g. ("--brokers", "BROKER01") or
    ("--cluster-snapshot-every", "200"))."""

    def __init__(self, root: Path, ledger: str | None = None, options: tuple = ()):
        self.root = root
        self.options = tuple(options)
        self.nats = NatsCluster(root)
        self.ledger = ledger or root / "ledger.sqlite"
        self.nodes: dict[str, ServeProcess] = {}
        try:
            for name in ("n1", "n2", "n3"):
                self.start(name)
            self.leader = self.wait_leader(set(self.nodes))
        except BaseException:
            self.stop()
            raise

    def start(self, name: str, log_name: str = "") -> None:
        """(Re)start a node on its data directory."""
        self.nodes[name] = ServeProcess(
            ["--cluster", self.nats.urls, "--node", name, "--data-dir",
             str(self.data_dir(name)), "--ledger", str(self.ledger),
             "--control", "none", "--log-level", "info", *self.options],
            log_path=self.root / f"{name}{log_name}.log", start_timeout=30)

    def log(self, name: str) -> str:
        return self.nodes[name].log_text()

    def stream_state(self) -> tuple[int, int]:
        """(first, last) sequence of the command stream CCERX_CMDS, read from NATS."""
        import nats

        async def read():
            nc = await nats.connect(self.nats.urls.split(","), connect_timeout=2)
            try:
                info = await nc.jetstream(timeout=5).stream_info(STREAM)
                return info.state.first_seq, info.state.last_seq
            finally:
                await nc.close()
        return asyncio.run(read())

    def data_dir(self, name: str) -> Path:
        return self.root / name

    def status(self, name: str) -> dict:
        try:
            return orjson.loads((self.data_dir(name) / STATUS_FILE).read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return {}

    def alive(self) -> list[str]:
        return [n for n, p in self.nodes.items() if p.proc.poll() is None]

    def wait_leader(self, among: set, timeout: float = LIVENESS_S) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leaders = [n for n in among if self.status(n).get("role") == "leader"
                       and self.nodes[n].proc.poll() is None]
            if leaders:
                assert len(leaders) == 1, leaders
                return leaders[0]
            time.sleep(0.05)
        raise AssertionError(f"no leader among {among} within {timeout} s:\n" + self.logs())

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{p.log_text()[-1500:]}" for n, p in self.nodes.items())

    def survivors(self, names: list[str], timeout: float = 10) -> list[str]:
        """`names` without the nodes on their way out: a deposed leader logs STOPPING and
        exits (EXIT_FENCED) when it learns of the new term, and until it has exited its status
        file still says what it was. A node that says STOPPING must be gone within `timeout`,
        and never because its state diverged (EXIT_DIVERGED)."""
        deadline = time.monotonic() + timeout
        alive = []
        for name in names:
            proc = self.nodes[name].proc
            if "STOPPING" in self.nodes[name].log_text():
                try:
                    proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    raise AssertionError(f"{name} said STOPPING but is still running:\n"
                                         + self.logs()) from None
            if proc.poll() is None:
                alive.append(name)
            else:
                assert proc.returncode != EXIT_DIVERGED, f"{name} diverged:\n{self.logs()}"
        return alive

    def wait_same_state(self, names: list[str], timeout: float = 10) -> dict:
        """The nodes' own checkpoint checks agree: same command seq, same state hash, and it
        stays so for a while (the load is over: the leader's idle checkpoint is the last).
        A node of `names` that stops meanwhile is left out (see `survivors`); at least two
        must remain, the leader among them."""
        deadline = time.monotonic() + timeout
        agreed, since = None, time.monotonic()
        while True:
            names = self.survivors(names)
            assert len(names) >= 2, f"fewer than two nodes left: {names}\n{self.logs()}"
            statuses = {n: self.status(n) for n in names}
            seqs = {(st.get("cmd_seq"), st.get("state_hash")) for st in statuses.values()}
            now = time.monotonic()
            if len(seqs) != 1 or seqs != agreed:
                agreed, since = (seqs if len(seqs) == 1 else None), now
            elif now - since > 1.5:
                return statuses
            if time.monotonic() > deadline:
                raise AssertionError(f"nodes did not converge: {statuses}\n{self.logs()}")
            time.sleep(0.1)

    def stop(self) -> None:
        for proc in self.nodes.values():
            if proc.proc.poll() is None:
                try:
                    proc.terminate(timeout=20)
                except Exception:
                    proc.kill()
        self.nats.stop()


# ------------------------------------------------------------------ brokers
class Trader:
    """One broker's FIX client that remembers what was acknowledged to it and fails over
    by trying every node in turn."""

    def __init__(self, comp_id: str, cluster: Cluster):
        self.comp_id, self.cluster = comp_id, cluster
        self.broker: Broker | None = None
        self.acked_orders: set[str] = set()     # OrderID (37) of 150=0 reports
        self.acked_fills: set[str] = set()      # ExecID (17) of 150=F reports
        self.next_cl = 0

    def connect(self, deadline: float) -> str:
        """Log on to whichever node leads (the others answer with a Logout naming it)."""
        refusals = []
        while time.monotonic() < deadline:
            for name in self.cluster.alive():
                broker = Broker(self.comp_id, self.cluster.nodes[name].port)
                try:
                    answer = broker.logon(PASSWORDS[self.comp_id], reset=True)
                except (OSError, ConnectionError, TimeoutError):
                    broker.close()
                    continue
                if s(answer, 35) == "A":
                    self.broker = broker
                    return name
                refusals.append(s(answer, 58))
                broker.close()
            time.sleep(0.1)
        raise AssertionError(f"{self.comp_id}: no node accepted a logon; refusals: "
                             f"{refusals[-3:]}")

    def send(self, account: str, side: str, count: int, price: str) -> None:
        for _ in range(count):
            self.next_cl += 1
            self.broker.new_order(f"{self.comp_id[-2:]}-{self.next_cl}", account, side, 1, price)

    def settle_reads(self, token: str) -> None:
        sync(self.broker, token)
        self._collect()

    def drain(self) -> None:
        """After a kill: read what the dead node had written (acknowledged) until EOF."""
        try:
            while self.broker.read(timeout=0.5) is not None:
                pass
        except (OSError, TimeoutError, ConnectionError):
            pass
        self._collect()
        self.broker.close()
        self.broker = None

    def _collect(self) -> None:
        for message in self.broker.received:
            if s(message, 35) != "8":
                continue
            if s(message, 150) == "0":
                self.acked_orders.add(s(message, 37))
            elif s(message, 150) == "F":
                self.acked_fills.add(s(message, 17))
        self.broker.received.clear()


def trade_round(sellers: Trader, buyers: Trader, count: int, price: str, n: int) -> None:
    """`count` sells rest, then `count` buys take them: every order acknowledged and filled."""
    sellers.send("HOLD0" + sellers.comp_id[-1], "2", count, price)
    sellers.settle_reads(f"s{n}")
    buyers.send("EMIT0" + buyers.comp_id[-1], "1", count, price)
    buyers.settle_reads(f"b{n}")
    sellers.settle_reads(f"f{n}")


def ledger_rows(ledger, sql: str) -> list:
    """Rows of the shared ledger, read as a separate client ({p}: the ledger's schema)."""
    from ccerx.engine.ledger import where
    if not where.is_database_url(str(ledger)):
        with sqlite3.connect(ledger) as db:
            return db.execute(sql.replace("{p}", "")).fetchall()
    import psycopg
    conninfo, schema = where.split_database_url(ledger)
    with psycopg.connect(conninfo) as db:
        return db.execute(sql.replace("{p}", f'"{schema}".')).fetchall()


def check_after(cluster: Cluster, traders: list[Trader], survivors: list[str]) -> dict:
    """Everything acknowledged is in the log once and settled once; the survivors agree."""
    statuses = cluster.wait_same_state(survivors)
    survivors = list(statuses)
    assert sum(st.get("role") == "leader" for st in statuses.values()) == 1, statuses
    hashes = {st["state_hash"] for st in statuses.values()}
    assert len(hashes) == 1, statuses
    cluster.stop()                      # SIGTERM: the leader settles, every journal is closed
    states = {}
    for name in survivors:
        with DurableExchange(cluster.data_dir(name), ledger=None, start_relays=False) as ex:
            states[name] = (ex.state_hash(), ex.next_trade_id - 1)
            if len(states) == 1:
                orders = Counter(cmd.order_id for cmd in jr.iter_commands(
                    jr.scan(cluster.data_dir(name)).records) if type(cmd) is NewOrder)
    assert len(set(states.values())) == 1, states
    assert {h for h, _ in states.values()} == hashes
    trades = next(iter(states.values()))[1]
    acked_orders = set().union(*(t.acked_orders for t in traders))
    acked_fills = set().union(*(t.acked_fills for t in traders))
    assert acked_orders and acked_fills
    assert {o: orders[o] for o in acked_orders if orders[o] != 1} == {}, "lost or duplicated"
    rows = ledger_rows(cluster.ledger, "SELECT id, trade_id FROM {p}settlements "
                                       "WHERE kind = 'trade'")
    ledger_trades = Counter(trade_id for _, trade_id in rows)
    assert len(rows) == trades and set(ledger_trades.values()) == {1}
    acked_trade_ids = {int(e[1:].split("-")[0]) for e in acked_fills}
    assert acked_trade_ids <= set(ledger_trades)
    return {"orders": len(acked_orders), "fills": len(acked_fills), "trades": trades,
            "journal_orders": orders}


# ------------------------------------------------------------------ FIX sessions across failover
class StockBroker(Broker):
    """A broker's FIX engine as a stock one (QuickFIX) behaves across a failover: it keeps its
    sequence numbers (no ResetSeqNumFlag after the first logon of the day), answers a
    ResendRequest by resending its orders with PossDupFlag (admin messages as a gap fill),
    asks for what it missed when a message comes in ahead of the number it expects, and
    counts a message below that number (not PossDup) as the fatal 'MsgSeqNum too low'.

    `delivered` maps every MsgSeqNum received to its message (a resend fills its place) or to
    "gap fill"; `too_low` lists the numbers that came in too low."""

    def __init__(self, comp_id: str):
        super().__init__(comp_id, 0)
        self.sent_orders: dict[int, tuple] = {}
        self.delivered: dict[int, object] = {}
        self.too_low: list[int] = []
        self.asked: list[tuple[int, int]] = []    # ResendRequests we sent: (begin, end)
        self.resent = 0                           # orders resent on the gateway's request

    def send(self, msg_type, *fields, seq=None, poss_dup=False):
        number = super().send(msg_type, *fields, seq=seq, poss_dup=poss_dup)
        if msg_type in "DFG" and seq is None:
            self.sent_orders[number] = (msg_type, fields)
        return number

    def _on_message(self, message) -> None:
        msg_type, seq = s(message, 35), int(s(message, 34))
        poss_dup = s(message, 43) == "Y"
        if msg_type == "4" and s(message, 123) == "Y":
            for n in range(seq, int(s(message, 36))):
                self.delivered.setdefault(n, "gap fill")
        elif poss_dup:
            self.delivered.setdefault(seq, message)
        else:
            if seq < self.next_in and msg_type != "5":
                self.too_low.append(seq)
            self.delivered[seq] = message
        if msg_type == "2":                      # resend our orders, gap-fill the rest
            self.received.append(message)
            self.next_in = max(self.next_in, seq + 1)
            begin, end = int(s(message, 7)), int(s(message, 16)) or self.next_out - 1
            n = begin
            while n <= end:
                if n in self.sent_orders:
                    kind, fields = self.sent_orders[n]
                    super().send(kind, *fields, seq=n, poss_dup=True)
                    self.resent += 1
                    n += 1
                    continue
                upto = next((m for m in range(n, end + 1) if m in self.sent_orders), end + 1)
                super().send("4", (123, "Y"), (36, upto), seq=n, poss_dup=True)
                n = upto
            return
        super()._on_message(message)


class FixTrader(Trader):
    """Trader whose broker keeps one FIX session for the whole test (see StockBroker)."""

    def __init__(self, comp_id: str, cluster: Cluster):
        super().__init__(comp_id, cluster)
        self.broker = StockBroker(comp_id)
        self.logons = 0
        self.fills: Counter = Counter()       # ExecID of 150=F -> times received as new

    def connect(self, deadline: float) -> str:
        broker = self.broker
        while time.monotonic() < deadline:
            for name in self.cluster.alive():
                broker.port = self.cluster.nodes[name].port
                expected = broker.next_in
                try:
                    answer = broker.logon(PASSWORDS[self.comp_id], reset=self.logons == 0)
                except (OSError, ConnectionError, TimeoutError):
                    broker.close()             # a standby (or a dying node): the next host
                    continue
                assert s(answer, 35) == "A", s(answer, 58)
                self.logons += 1
                seq = int(s(answer, 34))
                # the gateway's own ResendRequest, if any, comes before the trading status:
                # answered (our logons to standbys used numbers) before anything is sent
                broker.expect("h")
                if seq > expected:             # it sent what we never got: ask for it
                    broker.send("2", (7, expected), (16, 0))
                    broker.asked.append((expected, seq))
                return name
            time.sleep(0.1)
        raise AssertionError(f"{self.comp_id}: no node accepted a logon")

    def drain(self) -> None:
        broker = self.broker
        super().drain()                        # reads to EOF and closes the connection
        self.broker = broker                   # the FIX engine (and its numbers) stay

    def _collect(self) -> None:
        for message in self.broker.received:
            if s(message, 35) == "8" and s(message, 150) == "F" and s(message, 43) != "Y":
                self.fills[s(message, 17)] += 1
        super()._collect()



def assert_resumed_without_gaps(trader) -> None:
    """A broker's session after a failover: never told its sequence number was too low, every
    MsgSeqNum delivered, logged on twice, every fill reported exactly once."""
    broker = trader.broker
    assert broker.too_low == []
    missing = [n for n in range(1, broker.next_in) if n not in broker.delivered]
    assert missing == [], f"{trader.comp_id} never got MsgSeqNums {missing[:10]}"
    assert trader.logons == 2
    assert {n: c for n, c in trader.fills.items() if c != 1} == {}
