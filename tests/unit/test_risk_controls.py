"""Issue 14 item 2 in the engine: position limits (Art.37), large-holder reports (Art.38),
operator restrictions and the kill switch (Art.39/46); journaled, snapshotted, hashed."""
import orjson
import pytest

from ccerx.engine.core.exchange import Exchange
from ccerx.engine.core.risk import Account, Accounts
from ccerx.engine.core.types import DEFAULT_INSTRUMENTS, ParticipantType
from ccerx.engine.durable import snapshot as snap
from ccerx.engine.durable.journal import decode_command, encode_command
from ccerx.engine.formats.ndjson import event_to_dict, parse_command

KEU = ParticipantType.KEY_EMISSION_UNIT
REF = {spec.symbol: spec.ticks_to_text(spec.ref_ticks) for spec in DEFAULT_INSTRUMENTS}


def market():
    accounts = Accounts([Account("EM01", KEU, "B1", cash=10 ** 12, credits={"CCER-AFF": 300}),
                         Account("EM02", KEU, "B2", cash=10 ** 12, credits={"CCER-AFF": 5000,
                                                                            "CCER-SOL": 5000}),
                         Account("PO01", ParticipantType.PROJECT_OWNER, "B2", cash=10 ** 12)])
    return Exchange(DEFAULT_INSTRUMENTS, accounts)


def run(ex, *lines):
    """Apply NDJSON lines (through the journal codec, as serve would) -> event dicts."""
    out = []
    for line in lines:
        command = decode_command(orjson.loads(orjson.dumps(encode_command(parse_command(
            orjson.dumps(line))))))
        for event in ex.apply(command):
            out.append(event_to_dict(event, ex.specs))
        ex.check()
    return out


def order(oid, account, side, qty, price="62.00", instrument="CCER-AFF", **extra):
    if instrument != "CCER-AFF":
        price = REF[instrument]
    return {"op": "new", "order_id": oid, "account": account, "instrument": instrument,
            "side": side, "type": "limit", "price": price, "qty": qty, **extra}


LIMITS = {"op": "limits", "limits": {"key_emission_unit": {"per_instrument": 500, "total": 800}},
          "report_pct": "80"}


def test_a_buy_that_could_pass_the_limit_is_rejected_counting_open_buys():
    ex = market()
    assert run(ex, LIMITS)[0]["type"] == "limits"
    first = run(ex, order("b1", "EM01", "buy", 150))          # 300 owned + 150 open = 450
    assert first[0]["type"] == "accepted"
    over = run(ex, order("b2", "EM01", "buy", 60))             # 450 + 60 > 500
    assert over[0]["type"] == "rejected" and over[0]["reason"] == "position_limit"
    assert run(ex, order("b3", "EM01", "buy", 50))[0]["type"] == "accepted"   # exactly 500
    # a cancel frees the room; an amend up is checked too
    run(ex, {"op": "cancel", "order_id": "b3"})
    amended = run(ex, {"op": "amend", "order_id": "b1", "qty": 260})
    assert amended[0]["reason"] == "position_limit"
    # the total: 300 AFF + 150 open; 400 SOL would make 850 > 800
    total = run(ex, order("s1", "EM01", "buy", 400, instrument="CCER-SOL"))
    assert total[0]["reason"] == "position_limit" and "total" in total[0]["text"]
    # another participant type has no limit
    assert run(ex, order("p1", "PO01", "buy", 9000))[0]["type"] == "accepted"
    # sells are never limited
    assert run(ex, order("e1", "EM02", "sell", 1000, price="63.00"))[0]["type"] == "accepted"


def test_fills_keep_the_holding_and_report_a_large_holder_once_at_the_threshold():
    ex = market()
    run(ex, LIMITS)
    run(ex, order("s", "EM02", "sell", 1000))
    events = run(ex, order("b1", "EM01", "buy", 90))           # 300 -> 390 < 400 (80 %)
    assert [e["type"] for e in events] == ["accepted", "trade"]
    events = run(ex, order("b2", "EM01", "buy", 20))           # 390 -> 410: reported
    assert events[-1] == {"type": "large_holder", "seq": events[-1]["seq"], "ts": 0,
                          "account": "EM01", "instrument": "CCER-AFF", "holding": 410,
                          "limit": 500}
    assert [e["type"] for e in run(ex, order("b3", "EM01", "buy", 20))] == ["accepted", "trade"]
    # the owned 430 now counts: 430 + 80 > 500
    assert run(ex, order("b4", "EM01", "buy", 80))[0]["reason"] == "position_limit"
    # a deposit that reaches the total's threshold (640 of 800) is reported too
    events = run(ex, {"op": "deposit", "deposit_id": "D1", "account": "EM01",
                      "instrument": "CCER-SOL", "qty": 250})
    assert [(e["type"], e.get("instrument")) for e in events] == [("deposited", None),
                                                                   ("large_holder", None)]


def test_restrict_refuses_that_side_and_unrestrict_lifts_it():
    ex = market()
    run(ex, order("s1", "EM02", "sell", 10, price="63.00"))
    assert run(ex, {"op": "restrict", "account": "EM02", "side": "sell"})[0]["type"] == "restriction"
    refused = run(ex, order("s2", "EM02", "sell", 10, price="63.00"))
    assert refused[0]["reason"] == "restricted"
    assert run(ex, {"op": "amend", "order_id": "s1", "qty": 20})[0]["reason"] == "restricted"
    assert run(ex, order("b1", "EM02", "buy", 10, price="61.00"))[0]["type"] == "accepted"
    assert run(ex, {"op": "cancel", "order_id": "s1"})[0]["type"] == "cancelled"
    run(ex, {"op": "unrestrict", "account": "EM02"})
    assert run(ex, order("s3", "EM02", "sell", 10, price="63.00"))[0]["type"] == "accepted"
    # a member: its entered orders (owner) and its registered accounts
    run(ex, {"op": "restrict", "member": "B2", "side": "buy"})
    assert run(ex, order("p1", "PO01", "buy", 10))[0]["reason"] == "restricted"
    assert run(ex, order("m1", "EM01", "buy", 10))[0]["type"] == "accepted"
    assert run(ex, {"op": "restrict", "account": "NOBODY"})[0]["reason"] == "unknown_account"


def test_kill_cancels_every_open_order_of_the_member_and_blocks_new_ones():
    ex = market()
    run(ex, order("a", "EM02", "sell", 10, price="63.00"), order("b", "PO01", "buy", 10,
                                                                  price="61.00"),
        order("c", "EM01", "buy", 10, price="61.50"), order("d", "EM02", "sell", 5,
                                                             price="63.00", instrument="CCER-SOL"))
    events = run(ex, {"op": "kill", "member": "B2"})
    assert events[0]["type"] == "restriction" and events[0]["kill"] is True
    assert sorted((e["order_id"], e["reason"]) for e in events[1:]) == [
        ("a", "kill"), ("b", "kill"), ("d", "kill")]
    assert set(ex.books["CCER-AFF"].orders) == {"c"}
    assert run(ex, order("e", "EM02", "buy", 1))[0]["reason"] == "restricted"


def test_state_survives_a_snapshot_and_is_hashed_only_when_used(tmp_path):
    plain = market()
    before = plain.state_hash()
    ex = market()
    assert ex.state_hash() == before
    run(ex, LIMITS, order("b1", "EM01", "buy", 150), {"op": "restrict", "member": "B9",
                                                      "side": "sell"})
    snap.write(tmp_path, ex.seq, ex, {})
    _, restored, _ = snap.restore(snap.list_snapshots(tmp_path)[-1][1])
    assert restored.state_hash() == ex.state_hash()
    assert restored.accounts.by_id["EM01"].open_buy_qty == {"CCER-AFF": 150}
    assert run(restored, order("b2", "EM01", "buy", 60))[0]["reason"] == "position_limit"
    lifted = market()
    run(lifted, {"op": "limits", "limits": {}}, {"op": "restrict", "member": "B9"},
        {"op": "unrestrict", "member": "B9"})
    # limits lifted, restriction lifted: only seq and last_ts differ from a plain market
    assert lifted.restrictions == {} and lifted.accounts.limits == {}


@pytest.mark.parametrize("line", [
    {"op": "limits", "limits": {"nobody": {"total": 5}}},
    {"op": "limits", "limits": {"key_emission_unit": {"total": -5}}},
    {"op": "limits", "limits": {"key_emission_unit": {"total": 5}}, "report_pct": "101"},
    {"op": "restrict", "account": "EM01", "side": "sideways"},
    {"op": "kill", "account": "EM01", "member": "B1"},
])
def test_bad_operator_commands_are_rejected_and_change_nothing(line):
    ex = market()
    before = ex.state_hash()
    events = run(ex, line)
    assert [e["type"] for e in events] == ["rejected"]
    assert ex.restrictions == {} and ex.accounts.limits == {}
    assert ex.seq == 1 and before != ex.state_hash()   # (only the reject's seq moved)


def test_a_durable_exchange_replays_limits_restrictions_and_kills_from_its_journal(tmp_path):
    from ccerx.engine.durable.exchange import DurableExchange

    def accounts():
        return market().accounts

    lines = [LIMITS, order("b1", "EM01", "buy", 150), order("s1", "EM02", "sell", 10,
                                                          price="63.00"),
             {"op": "restrict", "account": "EM01", "side": "sell"},
             {"op": "kill", "member": "B2"}]
    with DurableExchange(tmp_path / "d", accounts=accounts(), ledger=None,
                         log=lambda text: None) as ex:
        for line in lines:
            ex.apply(parse_command(orjson.dumps(line)))
        expected = ex.state_hash()
        assert ex.exchange.restrictions == {("account", "EM01"): "sell", ("member", "B2"): "both"}
    with DurableExchange(tmp_path / "d", accounts=accounts(), ledger=None,
                         log=lambda text: None) as again:
        assert again.state_hash() == expected
        assert again.exchange.accounts.by_id["EM01"].open_buy_qty == {"CCER-AFF": 150}
        events = again.apply(parse_command(orjson.dumps(order("b2", "EM01", "buy", 60))))
        assert events[0].reason.value == "position_limit"
