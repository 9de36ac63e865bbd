"""Front batches in the replicated log (issue 15 item 4, engine/durable/replicated.py,
"Fronts") without NATS: the leader applies a front's batch k only after k - 1 (a duplicate
or a gap is dropped: the front re-sends in order), and says in the stream which commands
were which front batch, so every node (and so the next leader) knows what is in; a message
cut never splits a front batch. The processes and NATS: tests/integration/test_cluster_fronts.py."""
from __future__ import annotations

import orjson
import pytest

from ccerx.engine.durable import journal as jr
from ccerx.engine.durable.replicated import (CHECKPOINT, H_FRONTS, H_KIND, H_TERM,
                                             STATUS_FILE, message_cuts)
from tests.unit.test_replicated import batch, marker, open_node, order


@pytest.fixture
def node(tmp_path):
    opened = open_node(tmp_path / "node")
    yield opened
    opened.exchange.close(settle_timeout=0)


def rows(*commands) -> bytes:
    return orjson.dumps([jr.encode_command(c) for c in commands])


def lead(node) -> None:
    """What _promote does, without NATS (the journal does not publish)."""
    node.leading = True
    node.applied_cmds = node.journal.next_seq - 1


def test_the_leader_applies_front_batches_in_order_once(node):
    lead(node)
    assert node.apply_front_batch("f1", 7, 2, rows(order(9))) is None         # a gap
    events = node.apply_front_batch("f1", 7, 1, rows(order(1), order(2)))
    assert [type(e[0]).__name__ for e in events] == ["OrderAccepted", "OrderAccepted"]
    assert node.apply_front_batch("f1", 7, 1, rows(order(1), order(2))) is None  # duplicate
    node.engine.apply_deferred(order(3))                        # the leader's own, between
    assert node.apply_front_batch("f1", 7, 2, rows(order(4, "buy"))) is not None
    assert node.apply_front_batch("f1", 6, 3, rows(order(5))) is None           # an old epoch
    assert node.apply_front_batch("f1", 8, 2, rows(order(5))) is None   # a new one starts at 1
    assert node.apply_front_batch("f2", 1, 1, rows(order(6))) is not None
    assert node.front_last == {"f1": [7, 2], "f2": [1, 1]}
    assert node.take_front_entries() == [["f1", 7, 1, 1, 2], ["f1", 7, 2, 4, 1],
                                         ["f2", 1, 1, 5, 1]]
    assert node.take_front_entries() == []
    assert node.exchange.seq > 0 and node.applied_cmds == 5


def test_a_standby_learns_the_front_batches_from_the_stream(tmp_path, node):
    node.apply_message(*marker(node.exchange.state_hash(), 5, 0))
    headers, data = batch(5, 1, [order(1), order(2), order(3)])
    headers[H_FRONTS] = orjson.dumps([["f1", 7, 1, 1, 2], ["f2", 3, 4, 3, 1]]).decode()
    node.apply_message(headers, data)
    assert node.front_last == {"f1": [7, 1], "f2": [3, 4]}
    # a restarted node reads the stream from its start: what its journal held counts too
    node.exchange.close(settle_timeout=0)
    again = open_node(tmp_path / "node")
    try:
        again.apply_message(*marker("(behind the journal)", 5, 0))
        again.apply_message(headers, data)
        assert again.front_last == {"f1": [7, 1], "f2": [3, 4]}
        lead(again)     # ... so as the next leader it drops a re-send of what is in
        assert again.apply_front_batch("f1", 7, 1, rows(order(1), order(2))) is None
        assert again.apply_front_batch("f1", 7, 2, rows(order(8))) is not None
    finally:
        again.exchange.close(settle_timeout=0)
    node.exchange = again.exchange       # (closed: the fixture's close is a no-op twice)


def test_a_front_gets_the_events_of_each_message_with_its_entries(node):
    seen = []
    node.on_applied = lambda first, events, fronts: seen.append((first, len(events), fronts))
    node.apply_message(*marker(node.exchange.state_hash(), 5, 0))
    headers, data = batch(5, 1, [order(1), order(2)])
    headers[H_FRONTS] = orjson.dumps([["f1", 7, 1, 2, 1]]).decode()
    node.apply_message(headers, data)
    assert seen == [(1, 2, [["f1", 7, 1, 2, 1]])]


def test_message_cuts_never_split_a_front_batch():
    assert message_cuts(1, 5, [], 2) == [(0, 2), (2, 4), (4, 5)]
    # a front batch of commands 2..4 (offsets 1..3) straddles the cut at 2: the cut moves
    assert message_cuts(1, 5, [["f", 1, 1, 2, 3]], 2) == [(0, 4), (4, 5)]
    assert message_cuts(10, 3, [["f", 1, 1, 10, 3]], 2000) == [(0, 3)]
    assert message_cuts(1, 0, [], 2) == []


def test_a_front_applies_queued_messages_with_one_commit(tmp_path, node):
    """apply_handed(defer=True): the commands are applied at once but written to the local
    journal at commit_deferred(); the sequence checks (a repeated prefix, a checkpoint)
    count what is applied, not what is written."""
    node.front = True
    node.apply_handed(1, *marker(node.exchange.state_hash(), 5, 0), defer=True)
    node.apply_handed(2, *batch(5, 1, [order(1), order(2)]), defer=True)
    node.apply_handed(3, *batch(5, 1, [order(1), order(2), order(3, "buy")]),
                      defer=True)                       # (a repeated prefix: o3 only)
    assert node.journal.next_seq == 1 and node.exchange.next_trade_id == 2
    hash_now = node.exchange.state_hash()
    node.apply_handed(4, {H_KIND: CHECKPOINT, H_TERM: "5"}, orjson.dumps(
        {"cmd_seq": 3, "hash": hash_now, "node": "n1", "fix": "x"}), defer=True)
    assert node.front_applied_seq == 4
    status = orjson.loads((tmp_path / "node" / STATUS_FILE).read_bytes())
    assert (status["cmd_seq"], status["state_hash"]) == (3, hash_now)    # it was checked
    node.commit_deferred()
    assert node.journal.next_seq == 4
    node.exchange.close(settle_timeout=0)
    assert [c.order_id for c in jr.iter_commands(jr.scan(tmp_path / "node").records)] == [
        "BROKER01:o1", "BROKER01:o2", "BROKER01:o3"]


def test_a_front_batch_is_checked_whole_before_any_of_it_is_applied(node):
    """One bad row (a float qty) refuses the whole batch: the good orders before it are not
    applied, the front's (epoch, k) is not noted, and its next batch 1 is still taken."""
    lead(node)
    good = jr.encode_command(order(1))
    bad = list(good)
    bad[8] = 1.5
    assert node.apply_front_batch("f1", 7, 1, orjson.dumps([good, bad])) is None
    assert node.front_last == {} and node.fronts_refused == 1
    assert node.apply_front_batch("f1", 7, 1, orjson.dumps([good])) is not None


def test_the_leader_refuses_front_commands_for_the_brokers_it_serves(node):
    """The leader's own gateway's brokers (FrontIntake sets them) never come from a front."""
    lead(node)
    node.front_refused_owners = frozenset({order(1).owner})
    assert node.apply_front_batch("f1", 7, 1, rows(order(1))) is None
    node.front_refused_owners = frozenset({"BROKER99"})
    assert node.apply_front_batch("f1", 7, 1, rows(order(1))) is not None


def test_a_front_forwards_no_command_the_leader_would_refuse(node):
    """An over-long Symbol would make the leader refuse the front's batch, and every batch
    re-sent after it, for ever: the front drops that command (logged) and sends the rest."""
    from ccerx.gateway.front import FrontLink
    sent = []
    node.send_front_batch = lambda epoch, k, data: sent.append(orjson.loads(data))
    link = FrontLink(node)
    link._loop = type("Loop", (), {"call_soon": lambda self, f: None})()
    link.forward(order(1)._replace(instrument="X" * 1000), None)
    link.forward(order(2), None)
    link._send()
    assert [[row[1] for row in batch] for batch in sent] == [[order(2).order_id]]
