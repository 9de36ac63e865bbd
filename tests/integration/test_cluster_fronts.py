"""Front gateways (issue 15 item 4): `ccerx serve --cluster URLS --front f1` beside three
`--node` processes on a three-server NATS cluster started by the test. BROKER01 trades on the
leader, BROKER02 on the front: the front forwards BROKER02's orders to the leader (core NATS),
answers once they are in the stream, and reports fills of BROKER02's orders however they came
about; the leader reports BROKER01's. Each side of each trade is reported exactly once, by the
process its broker is logged on to, and every replica (nodes and front) ends with the same
state hash. When the leader dies (kill -9) under a stream of the front's orders, BROKER02's
session is never dropped: it sees a pause, and each order is entered exactly once (the front
re-sends its unconfirmed batches to the new leader, which knows from the stream which it has).
A front killed and restarted on its own directory catches up before it takes a logon, and its
broker recovers the fills it missed meanwhile, once each."""
from __future__ import annotations

import os
import time
from collections import Counter

import pytest

from ccerx.benchmarks.replication import NATS_SERVER
from ccerx.engine.core.commands import NewOrder
from ccerx.engine.durable import journal as jr
from ccerx.engine.durable.exchange import DurableExchange
from tests.fixclient import s, sync
from tests.integration.cluster_helpers import (LIVENESS_S, PASSWORDS, Cluster, FixTrader,
                                              assert_resumed_without_gaps)
from tests.serve_process import ServeProcess

pytestmark = pytest.mark.skipif(
    not os.path.exists(NATS_SERVER) and not os.environ.get("CCERX_REQUIRE_SERVICES"),
    reason="nats-server is not installed (.ci/run installs it)")


class WithFront:
    """The cluster, its nodes serving BROKER01 only, and one front, f1, serving BROKER02 only
    (its data in ROOT/f1; among the cluster's processes: BROKER01's failover never lands
    there, the front knows no such session)."""

    def __init__(self, root):
        self.cluster = Cluster(root, options=("--brokers", "BROKER01"))
        try:
            self.front = self.cluster.nodes["f1"] = ServeProcess(
                ["--cluster", self.cluster.nats.urls, "--front", "f1", "--brokers", "BROKER02",
                 "--data-dir", str(root / "f1"), "--log-level", "info"],
                log_path=root / "f1.log", start_timeout=30)
        except BaseException:
            self.cluster.stop()
            raise

    def stop(self) -> None:
        self.cluster.stop()


class FrontTrader(FixTrader):
    """BROKER02's FIX engine, logged on to the front (retrying while it catches up)."""

    def __init__(self, setup: WithFront):
        super().__init__("BROKER02", setup.cluster)
        self.setup = setup
        self.acks: Counter = Counter()          # ClOrdID of 150=0 -> times received as new

    def connect(self, deadline: float) -> str:
        broker = self.broker
        broker.port = self.setup.front.port
        while time.monotonic() < deadline:
            expected = broker.next_in
            try:
                answer = broker.logon(PASSWORDS[self.comp_id], reset=self.logons == 0)
            except (OSError, ConnectionError, TimeoutError):   # catching up: closed unanswered
                broker.close()
                time.sleep(0.1)
                continue
            assert s(answer, 35) == "A", s(answer, 58)
            self.logons += 1
            broker.expect("h")
            seq = int(s(answer, 34))
            if seq > expected:                 # it sent what we never got: ask for it
                broker.send("2", (7, expected), (16, 0))
                broker.asked.append((expected, seq))
            return "f1"
        raise AssertionError(f"the front took no logon:\n"
                             f"{self.setup.front.log_text()[-1500:]}")

    def wait_acks(self, count: int, timeout: float = 10) -> None:
        """Read until `count` orders are acknowledged (a front answers a TestRequest at once,
        before the acknowledgements that wait for the stream: no barrier for them)."""
        deadline = time.monotonic() + timeout
        while len(self.acks) < count and time.monotonic() < deadline:
            try:
                self.broker.read(timeout=0.2)
            except TimeoutError:
                pass
            self._collect()
        assert len(self.acks) >= count, f"{len(self.acks)} of {count} acknowledged"

    def _collect(self) -> None:
        for message in self.broker.received:
            if s(message, 35) == "8" and s(message, 150) == "0" and s(message, 43) != "Y":
                self.acks[s(message, 11)] += 1
        super()._collect()


@pytest.fixture
def setup(tmp_path):
    started = WithFront(tmp_path)
    yield started
    started.stop()


def journal_orders(data_dir) -> Counter:
    return Counter(cmd.order_id for cmd in jr.iter_commands(jr.scan(data_dir).records)
                   if type(cmd) is NewOrder)


def check_replicas(setup: WithFront, names: list[str]) -> dict:
    """The nodes and the front agree (their own checkpoint checks), and again once stopped
    (each data directory recovered); returns the first one's journal's order ids."""
    cluster = setup.cluster
    statuses = cluster.wait_same_state(names)
    assert statuses["f1"]["role"] == "front"
    setup.stop()
    hashes = set()
    for name in names:
        with DurableExchange(cluster.data_dir(name), ledger=None, start_relays=False) as ex:
            hashes.add(ex.state_hash())
    assert hashes == {st["state_hash"] for st in statuses.values()}
    assert len(hashes) == 1
    return journal_orders(cluster.data_dir(names[0]))


def test_orders_cross_between_the_leader_and_a_front(setup):
    cluster = setup.cluster
    one, two = FixTrader("BROKER01", cluster), FrontTrader(setup)
    assert one.connect(time.monotonic() + 5) == cluster.leader
    two.connect(time.monotonic() + LIVENESS_S)
    # the front refuses operator commands: it has no control socket
    assert setup.front.control is None
    for n in range(4):
        sellers, buyers = (one, two) if n % 2 else (two, one)
        sellers.send("HOLD0" + sellers.comp_id[-1], "2", 40, "62.00")
        sellers.settle_reads(f"s{n}")
        buyers.send("EMIT0" + buyers.comp_id[-1], "1", 40, "62.00")
        buyers.settle_reads(f"b{n}")
        sellers.settle_reads(f"f{n}")
    for trader in (one, two):
        trader.settle_reads("end")
    assert two.logons == 1 and one.logons == 1
    assert len(two.acks) == 160 and set(two.acks.values()) == {1}
    # every trade's two sides reported once each, by the process of the broker concerned
    assert len(one.fills) == len(two.fills) == 160
    assert {n: c for n, c in {**one.fills, **two.fills}.items() if c != 1} == {}
    assert {e[-1] for e in one.fills} == {e[-1] for e in two.fills} == {"B", "S"}
    trade_ids = {e[1:-2] for e in one.fills}
    assert trade_ids == {e[1:-2] for e in two.fills}
    orders = check_replicas(setup, ["n1", "n2", "n3", "f1"])
    assert len(orders) == 320 and set(orders.values()) == {1}


@pytest.mark.slow
def test_a_front_rides_through_the_death_of_the_leader(setup):
    cluster = setup.cluster
    one, two = FixTrader("BROKER01", cluster), FrontTrader(setup)
    one.connect(time.monotonic() + 5)
    two.connect(time.monotonic() + LIVENESS_S)
    # BROKER01 (on the leader) rests sells; BROKER02 (on the front) streams buys into them,
    # and the leader dies a third of the way through
    one.send("HOLD01", "2", 300, "62.00")
    one.settle_reads("rested")
    old = cluster.leader
    for n in range(300):
        two.send("EMIT02", "1", 1, "62.00")
        if n == 100:
            cluster.nodes[old].kill()
            killed = time.monotonic()
        time.sleep(0.002)
    started = time.monotonic()
    # BROKER02's session carries on: every order is answered, none refused, none twice
    while len(two.acks) < 300 and time.monotonic() < started + LIVENESS_S:
        try:
            two.broker.read(timeout=0.5)
        except TimeoutError:
            pass
        two._collect()
    answered = time.monotonic()
    two.settle_reads("after")
    assert len(two.acks) == 300, f"{len(two.acks)} of 300 acknowledged:\n" + \
        setup.front.log_text()[-1500:]
    assert set(two.acks.values()) == {1} and two.logons == 1
    assert two.broker.too_low == [] and two.broker.gaps == []
    # BROKER01 fails over to the new leader and recovers its fills by ResendRequest
    one.drain()
    new = one.connect(time.monotonic() + LIVENESS_S)
    assert new != old
    one.settle_reads("one back")
    assert_resumed_without_gaps(one)
    assert sum(1 for e in two.fills if e.endswith("-B")) == 300
    assert {n: c for n, c in two.fills.items() if c != 1} == {}
    # BROKER01's side of each trade: reported once (new, or resent by the new leader)
    reported = [s(m, 17) for m in one.broker.delivered.values()
                if m != "gap fill" and s(m, 35) == "8" and s(m, 150) == "F"]
    assert sorted(reported) == sorted(e[:-2] + "-S" for e in two.fills)
    survivors = [n for n in cluster.alive()] + ["f1"]
    orders = check_replicas(setup, survivors)
    mine = {o: c for o, c in orders.items() if o.startswith("BROKER02:")}
    assert len(mine) == 300 and set(mine.values()) == {1}
    print(f"\nfront f1 through the leader's kill -9: 300 orders acknowledged once each, "
          f"the last acknowledged {answered - killed:.2f} s after the kill "
          f"({answered - started:.2f} s after the last was sent)")


def test_a_restarted_front_reports_what_happened_while_it_was_down(setup, tmp_path):
    """kill -9 of the front with BROKER02's sells resting; BROKER01 (on the leader) buys half
    of them meanwhile. The front restarted on its own directory catches up with the stream
    before it takes a logon, and BROKER02, logging on with its own sequence numbers, gets the
    fills it missed (by ResendRequest) exactly once, then trades on through the front."""
    cluster = setup.cluster
    one, two = FixTrader("BROKER01", cluster), FrontTrader(setup)
    one.connect(time.monotonic() + 5)
    two.connect(time.monotonic() + LIVENESS_S)
    two.send("HOLD02", "2", 20, "62.00")
    two.wait_acks(20)
    setup.front.kill()
    two.drain()
    one.send("EMIT01", "1", 10, "62.00")
    one.settle_reads("bought while the front is down")
    assert len(one.fills) == 10
    setup.front = cluster.nodes["f1"] = ServeProcess(
        ["--cluster", cluster.nats.urls, "--front", "f1", "--brokers", "BROKER02",
         "--data-dir", str(cluster.data_dir("f1")), "--log-level", "info"],
        log_path=tmp_path / "f1-restarted.log", start_timeout=30)
    two.connect(time.monotonic() + LIVENESS_S)
    two.settle_reads("back")
    assert two.broker.asked, "BROKER02 missed its fills while the front was down"
    # the rest of its sells, bought through the leader; a buy of its own through the front
    one.send("EMIT01", "1", 10, "62.00")
    one.settle_reads("the rest")
    two.send("EMIT02", "1", 1, "61.00")
    two.wait_acks(21)
    two.settle_reads("front again")
    assert two.acks["02-21"] == 1
    broker = two.broker
    assert broker.too_low == [] and two.logons == 2
    assert [n for n in range(1, broker.next_in) if n not in broker.delivered] == []
    reported = Counter(s(m, 17) for m in broker.delivered.values()
                       if m != "gap fill" and s(m, 35) == "8" and s(m, 150) == "F")
    assert len(reported) == 20 and set(reported.values()) == {1}
    assert {e[:-2] for e in reported} == {e[:-2] for e in one.fills}
    check_replicas(setup, ["n1", "n2", "n3", "f1"])


def test_a_node_restarted_on_its_directory_knows_the_fronts_batches_when_it_leads(setup):
    """A restarted node resumes after its position file, not from stream seq 1, so it cannot
    learn a front's last batch from the stream's earlier messages: the file carries it. Here
    n2 restarts after the front's batches and before any other, and then leads alone: the
    front's next batch must be its next, not refused as a gap for ever."""
    cluster = setup.cluster
    two = FrontTrader(setup)
    two.connect(time.monotonic() + LIVENESS_S)
    two.send("HOLD02", "2", 20, "62.00")
    two.wait_acks(20)
    leader = cluster.leader
    cluster.wait_same_state(["n1", "n2", "n3"])     # n2 has noted its position past them
    assert cluster.nodes["n2"].terminate() == 0
    cluster.start("n2", log_name="-restarted")
    wait_for = "resumes from its data directory"
    deadline = time.monotonic() + LIVENESS_S
    while wait_for not in cluster.log("n2") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert wait_for in cluster.log("n2"), cluster.log("n2")
    for name in sorted({"n1", "n3"} - {leader}) + [leader]:    # the leader last: n2 leads
        assert cluster.nodes[name].terminate() == 0
    assert cluster.wait_leader({"n2"}) == "n2"
    two.send("EMIT02", "1", 1, "61.00")
    two.wait_acks(21, timeout=LIVENESS_S)
    assert set(two.acks.values()) == {1} and two.logons == 1
