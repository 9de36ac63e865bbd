"""A replicated exchange (issue 15): three `ccerx serve --cluster` nodes on a three-server NATS
JetStream cluster started by the test (the `nats-server` binary, loopback ports), two brokers
trading over FIX, and things killed with kill -9: the leader at a seeded random point, or one
NATS server.

What must hold afterwards: a standby takes over (brokers reach it by trying each node's
address, as a FIX engine with a list of hosts does; standbys answer a Logon with a Logout
naming the leader) within LIVENESS_S; every order and every fill acknowledged to a broker is
in the replicated log exactly once (read back from a surviving node's journal, a prefix of the
stream) and every trade is in the shared ledger exactly once (a new leader re-sends
settlement from its own cursor, the ledger's idempotence absorbs it); surviving nodes end with
the same state hash (checked by the nodes themselves at checkpoints, and again here by
recovering their data directories).

The takeover time measured here is a figure (benchmarks/README.md, "Replication"), not an
assertion; LIVENESS_S only says "took over at all", well above the lease (2.5 s).
"""
from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from ccerx.engine.core.commands import NewOrder
from ccerx.engine.durable import journal as jr
from ccerx.engine.durable.exchange import DurableExchange
from ccerx.benchmarks.replication import NATS_SERVER, NatsCluster, free_port
from ccerx.engine.durable.replicated import STATUS_FILE
from tests.fixclient import Broker, now, s, sync
from tests.integration.durable_helpers import wait_until
from tests.serve_process import REPO, ServeProcess

pytestmark = pytest.mark.skipif(
    not os.path.exists(NATS_SERVER) and not os.environ.get("CCERX_REQUIRE_SERVICES"),
    reason="nats-server is not installed (.ci/run installs it)")

# Brokers must trade again by then: a leader's kill -9 costs the lease (2.5 s) and a poll; a
# NATS server's death can cost the Raft election of a stream it led (nats-server 2.9: several
# seconds), during which publishes wait, and maybe the lease.
LIVENESS_S = 30.0
# more kill points: CCERX_CLUSTER_SEEDS=15,16,17 pytest tests/integration/test_cluster.py
PASSWORDS = {"BROKER01": "demo01", "BROKER02": "demo02"}


class Cluster:
    """NATS + three exchange nodes sharing one SQLite ledger."""

    def __init__(self, root: Path):
        self.root = root
        self.nats = NatsCluster(root)
        self.ledger = root / "ledger.sqlite"
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
             "--control", "none", "--log-level", "info"],
            log_path=self.root / f"{name}{log_name}.log", start_timeout=30)

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

    def wait_same_state(self, names: list[str], timeout: float = 10) -> dict:
        """The nodes' own checkpoint checks agree: same command seq, same state hash, and it
        stays so for a while (the load is over: the leader's idle checkpoint is the last)."""
        deadline = time.monotonic() + timeout
        agreed, since = None, time.monotonic()
        while True:
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


@pytest.fixture
def cluster(tmp_path):
    started = Cluster(tmp_path)
    yield started
    started.stop()


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


def check_after(cluster: Cluster, traders: list[Trader], survivors: list[str]) -> dict:
    """Everything acknowledged is in the log once and settled once; the survivors agree."""
    statuses = cluster.wait_same_state(survivors)
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
    with sqlite3.connect(cluster.ledger) as db:
        rows = db.execute("SELECT id, trade_id FROM settlements WHERE kind = 'trade'").fetchall()
    ledger_trades = Counter(trade_id for _, trade_id in rows)
    assert len(rows) == trades and set(ledger_trades.values()) == {1}
    acked_trade_ids = {int(e[1:].split("-")[0]) for e in acked_fills}
    assert acked_trade_ids <= set(ledger_trades)
    return {"orders": len(acked_orders), "fills": len(acked_fills), "trades": trades,
            "journal_orders": orders}


# ------------------------------------------------------------------ tests
def test_standby_refuses_logon_naming_the_leader_and_follows(cluster):
    leader = cluster.leader
    standby = next(n for n in cluster.nodes if n != leader)
    # a standby closes the connection unanswered: a Logout's MsgSeqNum would count in the
    # broker's FIX engine (one ahead of the leader's next message); its log names the leader
    refused = Broker("BROKER01", cluster.nodes[standby].port)
    with pytest.raises(ConnectionError):
        refused.logon("demo01")
    assert refused.received == [] and refused.next_in == 1
    refused.close()
    naming = f"the leader is {leader} at 127.0.0.1:{cluster.nodes[leader].port}"
    wait_until(lambda: naming in cluster.nodes[standby].log_text(), 5, naming)
    one, two = Trader("BROKER01", cluster), Trader("BROKER02", cluster)
    assert one.connect(time.monotonic() + 5) == leader
    assert two.connect(time.monotonic() + 5) == leader
    for n in range(3):
        trade_round(one, two, 50, "62.00", n)
    one.broker.new_order("rest-1", "HOLD01", "2", 5, "68.00")    # nobody buys at 68: it rests
    one.settle_reads("rest")
    # a planned stop (SIGTERM) hands the lead over: the leader gives its lease up
    assert cluster.nodes[leader].terminate() == 0
    assert "gave up the lead" in cluster.nodes[leader].log_text()
    one.drain()
    two.drain()
    new = one.connect(time.monotonic() + LIVENESS_S)
    assert two.connect(time.monotonic() + LIVENESS_S) == new != leader
    # the new leader knows the resting order by its ClOrdID (status, cancel)
    one.broker.send("H", (11, "rest-1"), (55, "CCER-AFF"), (54, "2"))
    status = one.broker.expect("8", where=lambda m: s(m, 150) == "I")
    assert (s(status, 39), s(status, 37), s(status, 151)) == ("0", "BROKER01:rest-1", "5")
    one.broker.send("F", (41, "rest-1"), (11, "rest-1c"), (55, "CCER-AFF"), (54, "2"),
                    (60, now()))
    cancelled = one.broker.expect("8", "9")
    assert (s(cancelled, 35), s(cancelled, 150), s(cancelled, 41)) == ("8", "4", "rest-1")
    trade_round(one, two, 50, "62.00", 3)
    result = check_after(cluster, [one, two], cluster.alive())
    assert result["trades"] == 200 and result["orders"] == 401


def run_with_a_kill(cluster: Cluster, kill, seed: int, rounds: int = 12, per_round: int = 80):
    """Trade `rounds` rounds; at a seeded random round, send it without waiting and call
    kill() at once; every broker then fails over to whichever node leads (as it does when a
    connection drops at any other point: losing a NATS server can cost the leader its lease).
    Returns the traders, the time from the kill until both trade again, and the round."""
    rng = random.Random(seed)
    kill_round = rng.randrange(2, rounds - 2)
    traders = [Trader("BROKER01", cluster), Trader("BROKER02", cluster)]
    for trader in traders:
        trader.connect(time.monotonic() + 5)
    takeover = None
    for n in range(rounds):
        sellers, buyers = (traders if n % 2 else traders[::-1])
        price = f"{62 + rng.randrange(-50, 50) / 100:.2f}"
        started = time.monotonic()
        before = None
        try:
            if n != kill_round:
                trade_round(sellers, buyers, per_round, price, n)
                continue
            sellers.send("HOLD0" + sellers.comp_id[-1], "2", per_round, price)
            buyers.send("EMIT0" + buyers.comp_id[-1], "1", rng.randrange(1, per_round), price)
            time.sleep(rng.random() * 0.05)
            started = time.monotonic()
            before = kill()
        except OSError:              # ConnectionError, TimeoutError: the node went away
            pass
        for trader in traders:
            trader.drain()
        now_leading = {trader.connect(started + LIVENESS_S) for trader in traders}
        assert len(now_leading) == 1 and before not in now_leading
        if n == kill_round:
            takeover = time.monotonic() - started
    return traders, takeover

@pytest.mark.slow
@pytest.mark.parametrize("seed", [int(seed) for seed in
                                  os.environ.get("CCERX_CLUSTER_SEEDS", "15").split(",")])
def test_leader_killed_at_a_random_point(cluster, seed):
    old = cluster.leader

    def kill():
        cluster.nodes[old].kill()
        return old
    traders, takeover = run_with_a_kill(cluster, kill, seed)
    new = cluster.wait_leader(set(cluster.alive()))
    assert new != old and cluster.status(new)["term"] > cluster.status(old)["term"]
    # the dead leader comes back on its own journal (a prefix of the stream), catches up as a
    # standby and must agree with the others
    cluster.start(old, log_name="-restarted")
    trade_round(*traders, 20, "62.00", 99)
    assert cluster.wait_leader(set(cluster.alive())) == new
    assert cluster.status(old)["role"] == "standby"
    result = check_after(cluster, traders, cluster.alive())
    del result["journal_orders"]
    print(f"\ntakeover after kill -9 of the leader: {takeover:.2f} s; {result}")


@pytest.mark.slow
def test_a_nats_server_killed(cluster):
    victim = random.Random(15).randrange(3)

    def kill():
        cluster.nats.kill(victim)
        return None
    traders, takeover = run_with_a_kill(cluster, kill, 16)
    result = check_after(cluster, traders, cluster.alive())
    del result["journal_orders"]
    print(f"\nNATS server s{victim} killed: brokers trading again after {takeover:.2f} s; "
          f"{result}")


@pytest.mark.parametrize("args, text", [
    (["--node", "n1"], "--cluster and --node go together"),
    (["--cluster", "nats://127.0.0.1:x", "--node", "n1"], "is not nats://HOST:PORT"),
    (["--cluster", "nats://127.0.0.1:4222", "--node", "n/1"], "letters, digits, - and _ only"),
    (["--cluster", "nats://127.0.0.1:4222", "--node", "n1", "--replicas", "7"], "1-5"),
])
def test_bad_cluster_options_are_refused_and_change_nothing(tmp_path, args, text):
    run = subprocess.run([sys.executable, "-m", "ccerx.scripts.ccerx", "serve", "--port", "0",
                          "--data-dir", str(tmp_path / "d"), *args], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and text in run.stderr, run.stderr
    assert not list((tmp_path / "d").glob("journal-*"))


def test_unreachable_nats_is_a_clear_error(tmp_path):
    port = free_port()            # nothing listens there
    run = subprocess.run([sys.executable, "-m", "ccerx.scripts.ccerx", "serve", "--port", "0",
                          "--data-dir", str(tmp_path / "d"), "--cluster",
                          f"nats://127.0.0.1:{port}", "--node", "n1"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert f"cannot join the cluster at nats://127.0.0.1:{port}" in run.stderr
    assert "listening on" not in run.stdout


def test_a_node_whose_state_differs_stops_loudly(cluster, tmp_path):
    """A fourth node configured with other opening balances replays the same stream to a
    different state: the leader's first checkpoint (its term marker) stops it."""
    demo = subprocess.run([sys.executable, "-m", "ccerx.scripts.ccerx", "serve",
                           "--print-demo-config"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout
    assert demo.count('cash = "100000000.00"') == 2
    config = tmp_path / "other.toml"
    config.write_text(demo.replace('cash = "100000000.00"', 'cash = "100000001.00"', 1))
    try:
        odd = ServeProcess(["--cluster", cluster.nats.urls, "--node", "n4", "--data-dir",
                            str(tmp_path / "n4"), "--config", str(config), "--control", "none"],
                           log_path=tmp_path / "n4.log", start_timeout=30)
    except RuntimeError as err:                # it may stop before its start line is out
        assert "exited 4" in str(err)          # EXIT_DIVERGED
    else:
        try:
            assert odd.proc.wait(20) == 4      # EXIT_DIVERGED
        finally:
            odd.kill()
    assert "STATE DIVERGED at command 0" in (tmp_path / "n4.log").read_text()
    assert {cluster.status(n).get("role") for n in cluster.nodes} == {"leader", "standby"}


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


def test_fix_sessions_continue_on_the_new_leader_without_reset(cluster):
    """kill -9 of the leader in the middle of the flow. The brokers reconnect to the new
    leader with their own sequence numbers (no ResetSeqNumFlag), never get 'MsgSeqNum too
    low', recover by ResendRequest every message they missed (the execution reports of a
    broker logged out at the time included), and resend what the old leader never
    acknowledged: afterwards each broker has every MsgSeqNum, every order it sent is in the
    log exactly once, and each side of every trade was reported to its broker exactly once.
    An order resent as a possible duplicate after it was filled is told its status."""
    one, two = FixTrader("BROKER01", cluster), FixTrader("BROKER02", cluster)
    for trader in (one, two):
        trader.connect(time.monotonic() + 5)
    for n in range(2):
        trade_round(one, two, 40, "62.00", n)
    # BROKER02 rests sells and logs out; BROKER01 fills them while it is away
    two.send("HOLD02", "2", 30, "61.50")
    two.settle_reads("rested")
    two.broker.logout()
    two.broker.close()
    one.send("EMIT01", "1", 30, "61.50")
    one.settle_reads("filled away")
    # then BROKER01 keeps sending and the leader dies under it
    old = cluster.leader
    one.send("HOLD01", "2", 150, "63.00")
    one.send("EMIT01", "1", 60, "63.00")
    cluster.nodes[old].kill()                  # with orders still in flight
    one.drain()
    started = time.monotonic()
    new = one.connect(started + LIVENESS_S)
    assert two.connect(started + LIVENESS_S) == new != old
    for trader, token in ((one, "one back"), (two, "two back")):
        trader.settle_reads(token)
    resumed = time.monotonic() - started       # both logged on, resends received
    assert two.broker.asked, "BROKER02 missed its fills while away: it must have asked"
    # a filled order resent as a possible duplicate: its status, not a rejection
    filled = next(iter(one.broker.sent_orders))
    kind, fields = one.broker.sent_orders[filled]
    one.broker.send(kind, *fields, poss_dup=True)
    status = one.broker.expect("8", where=lambda m: s(m, 150) == "I")
    assert (s(status, 39), s(status, 11)) == ("2", "01-1")
    for n in range(2, 4):
        trade_round(one, two, 40, "62.00", n)
    for trader in (one, two):
        trader.settle_reads("end")
        broker = trader.broker
        assert broker.too_low == []
        missing = [n for n in range(1, broker.next_in) if n not in broker.delivered]
        assert missing == [], f"{trader.comp_id} never got MsgSeqNums {missing[:10]}"
        assert trader.logons == 2
        assert {n: c for n, c in trader.fills.items() if c != 1} == {}
    result = check_after(cluster, [one, two], cluster.alive())
    with sqlite3.connect(cluster.ledger) as db:
        trades = [t for (t,) in db.execute(
            "SELECT trade_id FROM settlements WHERE kind = 'trade'")]
    reported = {s(m, 17) for t in (one, two) for m in t.broker.delivered.values()
                if m != "gap fill" and s(m, 35) == "8" and s(m, 150) == "F"}
    assert reported == {f"T{t}-{side}" for t in trades for side in "BS"}
    sent = Counter(f"{t.comp_id}:{t.comp_id[-2:]}-{n}" for t in (one, two)
                   for n in range(1, t.next_cl + 1))
    assert result["journal_orders"] == sent
    print(f"\nfailover with FIX sessions kept: both brokers resumed (no reset, resends "
          f"done) {resumed:.2f} s after the kill; {one.broker.resent} orders resent on the new "
          f"leader's request; {result['trades']} trades, {result['orders']} orders acknowledged")
