"""The standby's side of the replicated log (engine/durable/replicated.py) without NATS:
stream messages are handed to ClusterNode.apply_message as the subscription would, and the
checks a follower makes (terms, command sequence, a restarted node's prefix) are exercised.
The kill tests with a real NATS cluster are tests/integration/test_cluster.py."""
from __future__ import annotations

import orjson
import pytest

from ccerx.engine.core.commands import NewOrder
from ccerx.engine.core.risk import Account, Accounts
from ccerx.engine.core.types import DEFAULT_INSTRUMENTS
from ccerx.engine.durable import journal as jr
from ccerx.engine.durable.exchange import DurableExchange
from ccerx.engine.durable.replicated import (BATCH, CHECKPOINT, H_KIND, H_SEQ, H_TERM, TERM,
                                             ClusterNode, ClusterSettings, NotLeader,
                                             parse_servers)


def accounts() -> Accounts:
    table = Accounts()
    table.add(Account("EMIT01", member="BROKER01", cash=10**12))
    table.add(Account("HOLD01", member="BROKER01", credits={"CCER-AFF": 10**6}))
    return table


PRICE = next(s for s in DEFAULT_INSTRUMENTS if s.symbol == "CCER-AFF").tick_units * 6200


def order(n: int, side: str = "sell") -> NewOrder:
    return NewOrder(f"BROKER01:o{n}", "HOLD01" if side == "sell" else "EMIT01", "CCER-AFF",
                    side, "limit", "day", PRICE, 1, n, "BROKER01")


def open_node(path):
    settings = ClusterSettings(("nats://127.0.0.1:1",), "t1")
    return ClusterNode(settings, lambda hook: DurableExchange(
        path, accounts=accounts(), ledger=None, journal_hook=hook, start_relays=False))


def marker(node_or_hash, term: int, cmd_seq: int):
    return ({H_KIND: TERM, H_TERM: str(term)},
            orjson.dumps({"cmd_seq": cmd_seq, "hash": node_or_hash, "node": "n1",
                          "fix": "127.0.0.1:9878"}))


def batch(term: int, first: int, commands: list):
    return ({H_KIND: BATCH, H_TERM: str(term), H_SEQ: str(first)},
            orjson.dumps([jr.encode_command(c) for c in commands]))


@pytest.fixture
def node(tmp_path):
    opened = open_node(tmp_path / "node")
    yield opened
    opened.exchange.close(settle_timeout=0)


def test_a_standby_applies_batches_in_order_and_refuses_commands(node):
    node.apply_message(*marker(node.exchange.state_hash(), 5, 0))
    node.apply_message(*batch(5, 1, [order(1), order(2)]))
    node.apply_message(*batch(5, 3, [order(3, "buy")]))
    assert node.journal.next_seq == 4 and node.exchange.next_trade_id == 2
    assert node.leader_info == {"node": "n1", "fix": "127.0.0.1:9878"}
    with pytest.raises(NotLeader, match="standby; the leader is n1 at 127.0.0.1:9878"):
        node.engine.apply(order(4))
    node.engine.commit()          # a standby's commit (before a Logout is written) is a no-op


def test_a_batch_of_another_term_is_refused(node):
    node.apply_message(*marker(node.exchange.state_hash(), 5, 0))
    node.apply_message(*marker(node.exchange.state_hash(), 9, 0))     # a new leader
    with pytest.raises(RuntimeError, match="a batch of term 5 in term 9"):
        node.apply_message(*batch(5, 1, [order(1)]))                 # the deposed one's
    with pytest.raises(RuntimeError, match="term 7 after term 9"):
        node.apply_message(*marker(node.exchange.state_hash(), 7, 0))
    assert node.journal.next_seq == 1


def test_missing_commands_are_refused(node):
    node.apply_message(*marker(node.exchange.state_hash(), 5, 0))
    with pytest.raises(RuntimeError, match="commands 1..2 are missing"):
        node.apply_message(*batch(5, 3, [order(3)]))


def test_a_restarted_node_skips_what_its_journal_holds(tmp_path):
    first = open_node(tmp_path / "node")
    first.apply_message(*marker(first.exchange.state_hash(), 5, 0))
    first.apply_message(*batch(5, 1, [order(1), order(2)]))
    state = first.exchange.state_hash()
    first.exchange.close(settle_timeout=0)
    again = open_node(tmp_path / "node")          # replays the stream from its start
    try:
        again.apply_message(*marker("(not checked: behind the journal)", 5, 0))
        again.apply_message(*batch(5, 1, [order(1), order(2)]))           # held: skipped
        assert again.exchange.state_hash() == state
        again.apply_message(*batch(5, 2, [order(2), order(3)]))           # overlaps: 3 only
        again.apply_message(*({H_KIND: CHECKPOINT, H_TERM: "5"}, orjson.dumps(
            {"cmd_seq": 3, "hash": again.exchange.state_hash(), "node": "n1", "fix": "x"})))
        assert again.journal.next_seq == 4
        assert [c.order_id for c in jr.iter_commands(jr.scan(tmp_path / "node").records)] == [
            "BROKER01:o1", "BROKER01:o2", "BROKER01:o3"]
    finally:
        again.exchange.close(settle_timeout=0)


@pytest.mark.parametrize("text", ["", "nats://h", "http://h:1", "nats://h:x", ",,"])
def test_bad_server_lists(text):
    with pytest.raises(ValueError):
        parse_servers(text)


def test_server_lists():
    assert parse_servers("h1:4222, nats://h2:4223") == ("nats://h1:4222", "nats://h2:4223")


def test_retention_option():
    from ccerx.scripts.cmd_serve import parse_retain
    assert parse_retain("all") is None and parse_retain("3600") == 3600.0
    for bad in ("0", "-5", "soon", "inf", "nan"):
        with pytest.raises(ValueError, match="--cluster-retain"):
            parse_retain(bad)


def test_nats_urls_are_printed_without_their_secrets():
    from ccerx.engine.durable.replicated import shown_servers
    shown = shown_servers(parse_servers(
        "nats://ops:s3cret@10.0.0.1:4222,tls://tok3n@10.0.0.2:4222,10.0.0.3:4222"))
    assert shown == "nats://ops:***@10.0.0.1:4222, tls://***@10.0.0.2:4222, nats://10.0.0.3:4222"
    assert "s3cret" not in shown and "tok3n" not in shown


def test_serve_names_an_unreachable_cluster_without_its_password(tmp_path):
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-m", "ccerx.scripts.ccerx", "serve", "--port", "0",
                           "--data-dir", str(tmp_path / "n1"), "--control", "none",
                           "--cluster", "nats://ops:s3cret@127.0.0.1:1", "--node", "n1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "nats://ops:***@127.0.0.1:1" in done.stderr, done.stderr
    assert "s3cret" not in done.stderr + done.stdout
