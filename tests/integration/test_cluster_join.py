"""A node joins a replicated exchange from a snapshot, not from the stream's start (issue 15
item 2): standbys put join bundles (engine snapshot, FIX stores, stream position) into the
JetStream object store CCERX_SNAPSHOTS; a node started on an empty data directory loads the
newest one and applies the stream after it (engine/durable/replicated.py, "Snapshots").

Also the journal mode it rests on: a data directory whose journal starts after its snapshot
(journal.write_base) recovers, and keeps recovering after more commands.
"""
from __future__ import annotations

import os
import re
import shutil
import time

import pytest

from ccerx.engine.core.commands import NewOrder
from ccerx.engine.durable import journal as jr
from ccerx.engine.durable.exchange import OPENING, DurableExchange
from ccerx.engine.durable.recovery import RecoveryRefused
from ccerx.engine.durable.replicated import decode_bundle, encode_bundle, is_empty_data_dir
from ccerx.gateway.cluster import stores_blob
from ccerx.gateway.fix.store import FileStore, SessionReplicator
from ccerx.benchmarks.replication import NATS_SERVER
from tests.integration.durable_helpers import wait_until
from tests.integration.cluster_helpers import (LIVENESS_S, Cluster, FixTrader,
                                              assert_resumed_without_gaps, trade_round)

SNAPSHOT_EVERY = 200


# ------------------------------------------------------------------ the journal's base
def orders(first: int, count: int) -> list:
    """Sells and buys of two accounts crossing at one price: trades, hence settlement
    instructions."""
    out = []
    for n in range(first, first + count):
        side, account = ("buy", "B1") if n % 2 else ("sell", "S1")
        out.append(NewOrder(f"o{n}", account, "CCER-AFF", side, "limit", "day", 62_000_000, 1, n))
    return out


def test_a_journal_that_starts_after_its_snapshot_recovers(tmp_path):
    """The new node's directory: a snapshot, the opening, and no journal before it. Refused
    as it is (the journal misses the snapshot); with a journal base it opens to the
    snapshot's state, takes more commands, and reopens to them."""
    source, joined = tmp_path / "source", tmp_path / "joined"
    with DurableExchange(source, ledger=None) as ex:
        ex.apply_many(orders(1, 40))
        path = ex.snapshot()
        at_snapshot = ex.state_hash()
        base = ex.journal.next_seq - 1, ex.journal.next_instruction - 1
        ex.apply_many(orders(41, 20))
        after = ex.state_hash()
    assert base[1] > 0, "the orders must trade (instructions after the base)"
    joined.mkdir()
    shutil.copy(path, joined / path.name)
    shutil.copy(source / OPENING, joined / OPENING)
    assert not is_empty_data_dir(joined) and is_empty_data_dir(tmp_path / "new")
    with pytest.raises(RecoveryRefused):
        DurableExchange(joined, ledger=None)
    jr.write_base(joined, *base)
    with DurableExchange(joined, ledger=None) as ex:
        assert ex.state_hash() == at_snapshot
        assert (ex.journal.next_seq - 1, ex.journal.next_instruction - 1) == base
        ex.apply_many(orders(41, 20))
        assert ex.state_hash() == after
    with DurableExchange(joined, ledger=None) as ex:      # a restart of the joined node
        assert ex.state_hash() == after
        assert ex.recovery.replayed == 20


class Collected:
    """A ledger adapter that keeps what it is given (delivery is confirmed at once)."""

    def __init__(self):
        self.ids: list = []

    def deliver(self, batch) -> None:
        self.ids += [inst.id for inst in batch]

    def close(self) -> None:
        pass


def test_a_journal_base_carries_what_the_ledger_had_not_confirmed(tmp_path):
    """A joined node's directory holds no journal before its snapshot; the instructions
    before it that the ledger lacked come in the base (write_base's `pending`): its relay,
    whose cursor is where the ledger was, delivers them and then the journal's, in order."""
    source, joined = tmp_path / "source", tmp_path / "joined"
    with DurableExchange(source, ledger=None) as ex:
        ex.apply_many(orders(1, 40))
        path = ex.snapshot()
        last = ex.journal.next_instruction - 1
        made = [row for record in jr.scan(source).records for row in record.instructions]
        ex.apply_many(orders(41, 20))
        every = [row[0] for record in jr.scan(source).records for row in record.instructions]
    confirmed = 3
    joined.mkdir()
    shutil.copy(path, joined / path.name)
    shutil.copy(source / OPENING, joined / OPENING)
    jr.write_base(joined, int(path.stem.split("-")[1]), last, made[confirmed:])
    (joined / "cursor-probe.json").write_bytes(b'{"confirmed": %d}' % confirmed)
    ledger = Collected()
    with DurableExchange(joined, ledger=None, adapters={"probe": ledger},
                         start_relays=False) as ex:
        ex.apply_many(orders(41, 20))
        ex.relays["probe"].drain()
    assert ledger.ids == every[confirmed:]


def test_the_fix_stores_blob_mirrors_into_empty_stores(tmp_path):
    """What a join bundle carries of the FIX stores makes a new node's (empty) stores what
    the standby's are: every message, both sequence numbers; a store with old content is
    replaced (the blob resets it)."""
    source = SessionReplicator()
    stores = {name: source.wrap(FileStore(tmp_path / "standby", name)) for name in ("A", "B")}
    for n in range(1, 6):
        stores["A"].inner.set(n, f"message {n} 中文".encode())
    stores["A"].inner.next_sender, stores["A"].inner.next_target = 6, 9
    stores["B"].inner.next_target = 3
    for store in stores.values():
        store.inner.flush()
    blob = stores_blob(source)
    joined = SessionReplicator()
    fresh = {name: joined.wrap(FileStore(tmp_path / "new", name)) for name in ("A", "B")}
    fresh["B"].inner.set(1, b"stale")
    joined.mirror(blob)
    for name in ("A", "B"):
        a, b = stores[name].inner, fresh[name].inner
        assert (b.next_sender, b.next_target) == (a.next_sender, a.next_target)
        assert b.get(1, 100) == a.get(1, 100)
    assert fresh["A"].inner.get(5, 5) == [(5, "message 5 中文".encode())]


def test_a_damaged_join_bundle_is_refused():
    bundle = encode_bundle({"stream_seq": 7}, b"snap", b"{}", b"")
    assert decode_bundle(bundle) == ({"stream_seq": 7}, b"snap", b"{}", b"")
    for bad in (bundle[:-3], b"x" + bundle[1:], bundle[:20] + b"\xff" * 8 + bundle[28:]):
        with pytest.raises(ValueError):
            decode_bundle(bad)


# ------------------------------------------------------------------ a node joins by snapshot
needs_nats = pytest.mark.skipif(
    not os.path.exists(NATS_SERVER) and not os.environ.get("CCERX_REQUIRE_SERVICES"),
    reason="nats-server is not installed (.ci/run installs it)")
JOINED = re.compile(r"joined from snapshot at stream seq (\d+) \(command (\d+)")


@needs_nats
def test_a_new_node_joins_from_a_snapshot_and_takes_over(tmp_path):
    """Three nodes trade; standbys put join bundles; a fourth node with an empty data
    directory joins from the newest one (its first stream message is the one after the
    bundle's, never seq 1), reaches the others' state hash, and once it is the only node left
    it leads and the brokers' FIX sessions continue on it (same sequence numbers, no reset)."""
    # nodes that put a join bundle every SNAPSHOT_EVERY commands
    cluster = Cluster(tmp_path, options=("--cluster-snapshot-every", str(SNAPSHOT_EVERY)))
    try:
        one, two = FixTrader("BROKER01", cluster), FixTrader("BROKER02", cluster)
        for trader in (one, two):
            trader.connect(time.monotonic() + 5)
        for n in range(3):
            trade_round(one, two, 60, "62.00", n)
        standbys = sorted(set(cluster.nodes) - {cluster.leader})
        wait_until(lambda: any("put a join bundle" in cluster.log(n) for n in standbys),
                   timeout=15, what="a standby puts a join bundle")
        trade_round(one, two, 30, "62.00", 3)       # the stream goes on after the bundle
        started = time.monotonic()
        cluster.start("n4")
        statuses = cluster.wait_same_state(["n1", "n2", "n3", "n4"], timeout=30)
        joined_s = time.monotonic() - started
        found = JOINED.search(cluster.log("n4"))
        assert found, cluster.log("n4")
        joined_at = int(found.group(1))
        assert joined_at > 1
        status = cluster.status("n4")
        assert status["joined_at"] == joined_at
        assert status["first_stream_seq"] == joined_at + 1, status
        assert not jr.segment_paths(cluster.data_dir("n4")) or \
            jr.scan(cluster.data_dir("n4")).records[0].first_seq == int(found.group(2)) + 1
        # the others go: n4 leads and serves the brokers' sessions where they were
        old = cluster.leader
        for name in standbys:
            cluster.nodes[name].terminate(timeout=20)
        cluster.nodes[old].kill()
        for trader in (one, two):
            trader.drain()
        deadline = time.monotonic() + LIVENESS_S
        assert cluster.wait_leader({"n4"}) == "n4"
        assert one.connect(deadline) == two.connect(deadline) == "n4"
        for trader, token in ((one, "one back"), (two, "two back")):
            trader.settle_reads(token)
        trade_round(one, two, 30, "62.00", 4)
        for trader in (one, two):
            trader.settle_reads("end")
            assert_resumed_without_gaps(trader)
        print(f"\njoin from the snapshot at stream seq {joined_at}: in step with the others "
              f"{joined_s:.2f} s after its start ({statuses['n4']['cmd_seq']} commands)")
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop()
