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
from pathlib import Path

import pytest

from ccerx.engine.core.commands import NewOrder
from ccerx.engine.durable import journal as jr
from ccerx.engine.durable import snapshot as snap
from ccerx.engine.durable.exchange import OPENING, DurableExchange
from ccerx.engine.durable.recovery import RecoveryRefused
from ccerx.engine.durable.replicated import is_empty_data_dir
from ccerx.benchmarks.replication import NATS_SERVER
from tests.integration.durable_helpers import wait_until
from tests.integration.test_cluster import (LIVENESS_S, Cluster, FixTrader, check_after,
                                            trade_round)
from tests.serve_process import ServeProcess

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
