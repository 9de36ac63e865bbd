"""A replicated exchange over a long day (issue 15): the command stream is trimmed below the
oldest kept join bundle once every live node has passed it, a node restarted on its own data
directory resumes where it was (not from stream seq 1, which is gone), a node down longer than
the retention rejoins from the newest bundle, and settlement instructions a joined node never
journaled still reach the ledger when every older node is gone
(engine/durable/replicated.py, "Retention" and "Settlement").
"""
from __future__ import annotations

import os
import re
import sqlite3
import time
from collections import Counter

import pytest

from ccerx.benchmarks.replication import NATS_SERVER
from ccerx.engine.durable.exchange import DurableExchange
from ccerx.engine.durable.replicated import read_position
from ccerx.scripts.ccerx import main as ccerx
from tests.integration.cluster_helpers import Cluster, Trader, check_after, trade_round
from tests.integration.durable_helpers import wait_until

pytestmark = pytest.mark.skipif(
    not os.path.exists(NATS_SERVER) and not os.environ.get("CCERX_REQUIRE_SERVICES"),
    reason="nats-server is not installed (.ci/run installs it)")

SNAPSHOT_EVERY = 100
RETAIN_S = 3                # a node silent this long no longer holds the stream's trimming back
RESUMED = re.compile(r"resumes from its data directory at stream seq (\d+)")
JOINED = re.compile(r"joined from snapshot at stream seq (\d+)")


def traders(cluster: Cluster) -> tuple[Trader, Trader]:
    one, two = Trader("BROKER01", cluster), Trader("BROKER02", cluster)
    for trader in (one, two):
        trader.connect(time.monotonic() + 5)
    return one, two


def trade_until(cluster, one, two, done, what: str, rounds: int = 12) -> int:
    """Trade rounds of 50 trades (a pause after each: the leader's idle checkpoint, where
    standbys put bundles) until done(); returns the rounds traded."""
    for n in range(rounds):
        trade_round(one, two, 50, "62.00", n)
        time.sleep(1.0)
        if done():
            return n + 1
    raise AssertionError(f"{what}: not after {rounds} rounds; stream {cluster.stream_state()}\n"
                         + cluster.logs())


@pytest.mark.slow
def test_the_stream_is_trimmed_and_restarted_nodes_catch_up(tmp_path):
    """Three nodes trade; the stream's first seq rises as standbys put join bundles while
    every node keeps running. A standby killed and restarted at once resumes from its own
    directory past the trimmed start; one down longer than the retention is left behind by
    the trimming and rejoins from the newest bundle (its old files set aside). All end with
    the same state hash, every acknowledged order once in the log, every trade once in the
    ledger."""
    cluster = Cluster(tmp_path, options=("--cluster-snapshot-every", str(SNAPSHOT_EVERY),
                                 "--cluster-retain", str(RETAIN_S)))
    try:
        one, two = traders(cluster)
        trade_until(cluster, one, two, lambda: cluster.stream_state()[0] > 1,
                    "the stream trimmed while every node runs")
        assert len(cluster.alive()) == 3
        quick, late = sorted(set(cluster.nodes) - {cluster.leader})

        # at once: a quick restart of one standby, a long absence of the other
        first, _ = cluster.stream_state()
        cluster.nodes[late].terminate(timeout=20)
        gone_at = read_position(cluster.data_dir(late))["stream_seq"]   # where it resumes
        cluster.nodes[quick].kill()
        cluster.start(quick, "-restarted")
        # the quick one resumes from its own journal (the stream's start is gone)
        resumed = RESUMED.search(cluster.log(quick))
        assert resumed and int(resumed.group(1)) + 1 >= first, cluster.log(quick)
        # the trimming passes the absent one's position (its report is older than RETAIN_S)
        trade_until(cluster, one, two, lambda: cluster.stream_state()[0] > gone_at + 1,
                    "the stream trimmed past a node that is down")
        assert cluster.status(quick)["first_stream_seq"] > 1
        cluster.start(late, "-restarted")
        log = cluster.log(late)
        assert "behind the stream" in log and JOINED.search(log), log
        assert list(cluster.data_dir(late).glob("set-aside-*/journal-*"))
        trade_round(one, two, 20, "62.00", 30)     # a checkpoint after its bundle
        cluster.wait_same_state(list(cluster.nodes), timeout=30)
        check_after(cluster, [one, two], [cluster.leader, quick, late])
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop()


def test_a_joined_leader_delivers_what_the_older_nodes_never_did(tmp_path):
    """The ledger is locked (its writes wait) while the nodes trade, so the leader's relay
    confirms nothing; standbys put join bundles meanwhile. Every node is then killed and the
    ledger freed; a new node joins from the newest bundle and leads alone. It must deliver
    every instruction, those before its bundle included, each exactly once, and the ledger
    must reconcile with its state."""
    cluster = Cluster(tmp_path, options=("--cluster-snapshot-every", str(SNAPSHOT_EVERY)))
    lock = sqlite3.connect(cluster.ledger, isolation_level=None, timeout=30)
    try:
        one, two = traders(cluster)
        trade_round(one, two, 10, "62.00", 0)
        wait_until(lambda: ledger_trades(cluster) == 10, 10, "the first trades settle")
        lock.execute("BEGIN IMMEDIATE")          # the shared ledger takes no more writes
        standbys = set(cluster.nodes) - {cluster.leader}
        trade_until(cluster, one, two,
                    lambda: any("put a join bundle" in cluster.log(n) for n in standbys),
                    "a standby puts a join bundle")
        trade_round(one, two, 30, "62.00", 40)    # and more after the bundle
        traded = len(one.acked_fills)             # it sold in every trade: one fill each
        for name in list(cluster.nodes):
            cluster.nodes[name].kill()
        lock.execute("ROLLBACK")
        assert ledger_trades(cluster) == 10
        cluster.start("n4")
        assert cluster.wait_leader({"n4"}) == "n4"
        assert JOINED.search(cluster.log("n4")), cluster.log("n4")
        wait_until(lambda: ledger_trades(cluster) >= traded, 20,
                   lambda: f"the ledger holds {ledger_trades(cluster)} of {traded} trades")
        cluster.stop()
        with DurableExchange(cluster.data_dir("n4"), ledger=None, start_relays=False) as ex:
            assert ex.next_trade_id - 1 == traded
        with sqlite3.connect(cluster.ledger) as db:
            rows = db.execute("SELECT trade_id FROM settlements WHERE kind = 'trade'").fetchall()
        assert Counter(Counter(r[0] for r in rows).values()) == {1: traded}
        assert ccerx(["ledger", "reconcile", "--db", str(cluster.ledger),
                      "--data", str(cluster.data_dir("n4"))]) == 0
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        lock.close()
        cluster.stop()


def ledger_trades(cluster: Cluster) -> int:
    with sqlite3.connect(cluster.ledger, timeout=30) as db:
        return db.execute("SELECT count(*) FROM settlements WHERE kind = 'trade'").fetchone()[0]
