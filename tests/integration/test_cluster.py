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
import uuid
from collections import Counter

import orjson
import pytest

from ccerx.benchmarks.replication import NATS_SERVER, free_port
from tests.fixclient import Broker, now, s
from tests.integration.cluster_helpers import (LIVENESS_S, Cluster, FixTrader, Trader,
                                              assert_resumed_without_gaps, check_after,
                                              trade_round)
from tests.integration.durable_helpers import wait_until
from tests.integration.test_ledger_postgres import postgres_ledger
from tests.serve_process import REPO, ServeProcess

pytestmark = pytest.mark.skipif(
    not os.path.exists(NATS_SERVER) and not os.environ.get("CCERX_REQUIRE_SERVICES"),
    reason="nats-server is not installed (.ci/run installs it)")


def cluster_status(cluster: Cluster, *nodes: str) -> tuple[int, dict]:
    """`ccerx cluster status --json` as an operator runs it: exit code and what it printed."""
    done = subprocess.run([sys.executable, "-m", "ccerx.scripts.ccerx", "cluster", "status",
                           "--cluster", cluster.nats.urls, "--json",
                           *(str(cluster.data_dir(n)) for n in nodes)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, orjson.loads(done.stdout)


@pytest.fixture
def cluster(tmp_path):
    started = Cluster(tmp_path)
    yield started
    started.stop()


@pytest.fixture
def pg_cluster(tmp_path):
    """The same cluster settling into PostgreSQL (what nodes on several machines share): a
    schema of its own in database `test`, dropped afterwards."""
    schema = f"t_cluster_{uuid.uuid4().hex[:10]}"
    cleaner = postgres_ledger(schema)          # fails (CI) or skips without the server
    started = Cluster(tmp_path, ledger=f"postgresql://postgres@127.0.0.1:5432/test"
                                       f"?schema={schema}&connect_timeout=3")
    yield started
    started.stop()
    cleaner.drop()
    cleaner.close()


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
    # what the operator sees: the new leader holds the lease, three current stream copies;
    # the two running nodes agree (the stopped one is not asked about)
    running = [n for n in cluster.nodes if n != leader]
    code, status = cluster_status(cluster, *running)
    assert status["lease"]["node"] == new and status["lease"]["fix"].endswith(
        f":{cluster.nodes[new].port}")
    assert status["stream"]["replicas"] == 3 and len(status["stream"]["peers"]) == 3
    assert {n["node"]: n["role"] for n in status["nodes"]} == {
        new: "leader", next(n for n in running if n != new): "standby"}
    # healthy but for the stopped node, which stops reporting after a few seconds
    assert all(p.startswith(f"node {leader} has not reported") for p in status["problems"])
    assert code == (1 if status["problems"] else 0), status
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
def test_leader_killed_at_a_random_point(pg_cluster, seed):
    """(On the PostgreSQL ledger: a new leader's re-sends land in the database once.)"""
    cluster = pg_cluster
    old = cluster.leader

    def kill():
        cluster.nodes[old].kill()
        return old
    traders, takeover = run_with_a_kill(cluster, kill, seed)
    new = cluster.wait_leader(set(cluster.alive()))
    assert new != old and cluster.status(new)["term"] > cluster.status(old)["term"]
    # the operator's view names the dead leader's stale status, and is not healthy
    code, status = cluster_status(cluster, *cluster.nodes)
    assert status["lease"]["node"] == new and code == 1
    assert any(p.startswith(f"node {old} says it leads but does not hold the lease")
               for p in status["problems"]), status["problems"]
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
    # the operator's view names the copy of the stream on the dead server
    dead = f"s{victim}"
    code, status = cluster_status(cluster)
    copies = {p["server"]: p for p in status["stream"]["peers"]}
    assert set(copies) == {"s0", "s1", "s2"} and copies[dead]["role"] == "follower"
    assert code == 1 and any(f"NATS server {dead} " in p for p in status["problems"]), status
    result = check_after(cluster, traders, cluster.alive())
    del result["journal_orders"]
    print(f"\nNATS server s{victim} killed: brokers trading again after {takeover:.2f} s; "
          f"{result}")


@pytest.mark.parametrize("args, text", [
    (["--node", "n1"], "--cluster and --node go together"),
    (["--cluster", "nats://127.0.0.1:x", "--node", "n1"], "is not nats://HOST:PORT"),
    (["--cluster", "nats://127.0.0.1:4222", "--node", "n/1"], "letters, digits, - and _ only"),
    (["--cluster", "nats://127.0.0.1:4222", "--node", "n1", "--replicas", "7"], "1-5"),
    # front gateways (issue 15 item 4)
    (["--front", "f1"], "--front needs --cluster"),
    (["--cluster", "nats://127.0.0.1:4222", "--front", "f1", "--node", "n1"],
     "one or the other"),
    (["--cluster", "nats://127.0.0.1:4222", "--front", "f/1"], "--front 'f/1': letters"),
    (["--brokers", "BROKER09"], "--brokers: BROKER09 not among the config's brokers"),
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
        assert_resumed_without_gaps(trader)
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
