"""Attacks on credits as lots (issue 11): each test is a minimal reproduction of a bug found by
running the engine. A test that fails today is marked xfail(strict=True) with the reason, so
the suite stays green until the bug is fixed (then the xfail turns into an XPASS failure:
remove the mark)."""
from __future__ import annotations

import orjson
import pytest

from ccerx.engine.core.commands import (DefineInstrument, Deposit, EndOfDay, NewOrder,
                                        SetLimits)
from ccerx.engine.core.events import InstrumentDefined, OrderAccepted, OrderRejected
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.core.lots import lot_key
from ccerx.engine.core.risk import Account, Accounts
from ccerx.engine.core.rules import CBEEX_2023, CONTINUOUS
from ccerx.engine.core.types import (DEFAULT_INSTRUMENTS, InstrumentSpec, ParticipantType,
                                     RejectReason as R)
from ccerx.engine.durable import snapshot as snap
from ccerx.engine.durable.snapshot import exchange_from_state, exchange_state
from ccerx.engine.formats.ndjson import parse_command

TS = 1_706_252_400_000_000_000
P1 = "CCER-14-2024-0001"
LISTING = InstrumentSpec.from_fields("AFF-0001-2023", ref_price="62.00",
                                     credit_type="afforestation", project=P1, vintage=2023)
CNY = 100_000_000   # fen


def exchange(rules=CONTINUOUS, **credits) -> Exchange:
    accounts = Accounts([Account("HOLD", ParticipantType.PROJECT_OWNER, "M1", 0,
                                 credits=dict(credits)),
                         Account("EMIT", ParticipantType.KEY_EMISSION_UNIT, "M2", CNY)])
    return Exchange(DEFAULT_INSTRUMENTS, accounts, rules=rules)


def lot_deposit(deposit_id, account, project, vintage, qty, credit_type="afforestation",
                listing=(None, None)):
    return Deposit(deposit_id, account, None, qty, TS, None, credit_type, project, vintage,
                   *listing)


def new(order_id, account, instrument, side, qty, price_units=62_000_000):
    return NewOrder(order_id, account, instrument, side, "limit", None, price_units, qty, TS)


def round_trip(ex: Exchange) -> Exchange:
    state = orjson.loads(orjson.dumps(exchange_state(ex), option=orjson.OPT_NON_STR_KEYS))
    return exchange_from_state(state)


def test_a_standard_contract_keeps_its_credit_type():
    ex = exchange()
    ex.apply(Deposit("D-1", "HOLD", "CCER-AFF", 10, TS))        # afforestation default lot
    ex.apply(lot_deposit("D-2", "HOLD", "MGV-1", 2023, 5, "mangrove"))
    [event] = ex.apply(parse_command(b'{"op":"instrument","symbol":"CCER-AFF",'
                                     b'"credit_type":"mangrove","ref_price":"62.00"}'))
    assert type(event) is OrderRejected and event.reason is R.MALFORMED, event


def test_a_listing_cannot_be_redefined_as_a_pooled_instrument():
    ex = exchange()
    ex.apply(DefineInstrument(LISTING, TS))
    ex.apply(lot_deposit("D-1", "HOLD", P1, 2023, 10))
    [event] = ex.apply(parse_command(b'{"op":"instrument","symbol":"AFF-0001-2023",'
                                     b'"ref_price":"62.00"}'))
    assert type(event) is OrderRejected, event
    assert ex.specs["AFF-0001-2023"].holding == lot_key(P1, 2023)


def test_a_listing_declared_at_a_huge_price_is_refused_or_snapshots(tmp_path):
    ex = exchange()
    cmd = parse_command(b'{"op":"deposit","deposit_id":"D-1","account":"HOLD",'
                        b'"credit_type":"afforestation","project":"P-1","vintage":2023,"qty":5,'
                        b'"list":{"symbol":"BIG","ref_price":"999999999999999999.00"}}')
    events = ex.apply(cmd)
    if any(type(e) is InstrumentDefined for e in events):
        path = snap.write(tmp_path, 1, ex, {})          # raises TypeError today
        assert snap.restore(path)[1].state_hash() == ex.state_hash()


def test_art29_a_lot_bought_by_listing_cannot_be_resold_through_the_contract_next_day():
    ex = exchange(CBEEX_2023)
    ex.apply(DefineInstrument(LISTING, TS))
    ex.apply(lot_deposit("D-1", "HOLD", P1, 2023, 10))
    ex.apply(EndOfDay(TS))                               # the listing trades from day 1
    ex.apply(new("s1", "HOLD", "AFF-0001-2023", "sell", 10))
    ex.apply(new("b1", "EMIT", "AFF-0001-2023", "buy", 10))
    assert ex.accounts.get("EMIT").credits == {lot_key(P1, 2023): 10}
    ex.apply(EndOfDay(TS))
    [rejected] = ex.apply(new("s2", "EMIT", "AFF-0001-2023", "sell", 10))
    assert rejected.reason is R.HOLDING_PERIOD          # the listing: refused, as it should be
    [event] = ex.apply(new("s3", "EMIT", "CCER-AFF", "sell", 10))   # the same lot: accepted
    assert type(event) is OrderRejected and event.reason is R.HOLDING_PERIOD, event


P2 = "CCER-14-2019-0002"


def bought_via_contract(ex: Exchange) -> None:
    """EMIT buys 10 t of lot P1@2023 through CCER-AFF on trading day 1 (HOLD's only lot)."""
    ex.apply(DefineInstrument(LISTING, TS))
    ex.apply(lot_deposit("D-1", "HOLD", P1, 2023, 10))
    ex.apply(EndOfDay(TS))
    ex.apply(new("s1", "HOLD", "CCER-AFF", "sell", 10))
    [*_, trade] = ex.apply(new("b1", "EMIT", "CCER-AFF", "buy", 10))
    assert trade.lots == ((P1, 2023, 10),)


def test_art29_a_lot_bought_through_the_contract_cannot_be_resold_by_its_listing_next_day():
    ex = exchange(CBEEX_2023)
    bought_via_contract(ex)
    for day in range(2, 6):                                  # days 2-5: 1-4 days later
        ex.apply(EndOfDay(TS))
        [event] = ex.apply(new(f"s{day}", "EMIT", "AFF-0001-2023", "sell", 10))
        assert type(event) is OrderRejected and event.reason is R.HOLDING_PERIOD, event
        assert "sellable from trading day 6" in event.text, event.text
        ex.check()
    ex.apply(EndOfDay(TS))                                   # day 6: 5 trading days later
    [event] = ex.apply(new("s6", "EMIT", "AFF-0001-2023", "sell", 10))
    assert type(event) is OrderAccepted, event
    assert not ex.accounts.get("EMIT").lot_bought and not ex.accounts.get("HOLD").lot_sold
    ex.check()


def test_art29_a_lot_bought_on_day_d_holds_back_the_whole_lot_older_tonnes_too():
    """Art.29 is about the product: after buying 5 t of P1@2023 the account may sell none of
    P1@2023 (its 10 older tonnes neither) until the period is over; a contract sell skips the
    lot entirely and is holding_period when only such lots would cover it."""
    from ccerx.engine.core.events import TradeExecuted
    ex = exchange(CBEEX_2023)
    ex.apply(DefineInstrument(LISTING, TS))
    ex.apply(lot_deposit("D-1", "HOLD", P1, 2023, 10))
    ex.apply(lot_deposit("D-2", "EMIT", P1, 2023, 10))        # EMIT's own, older tonnes
    ex.apply(lot_deposit("D-3", "EMIT", P2, 2019, 4))         # an older vintage: first
    ex.apply(EndOfDay(TS))                                    # day 1
    ex.apply(new("s1", "HOLD", "AFF-0001-2023", "sell", 5))
    ex.apply(new("b1", "EMIT", "AFF-0001-2023", "buy", 5))    # 5 t more of P1@2023
    ex.apply(EndOfDay(TS))                                    # day 2
    emit = ex.accounts.get("EMIT")
    assert emit.credits == {lot_key(P1, 2023): 15, lot_key(P2, 2019): 4}
    assert emit.lot_bought == {lot_key(P1, 2023): 1}
    assert emit.credits_sellable(lot_key(P1, 2023)) == 0
    assert emit.credits_retirable(lot_key(P1, 2023)) == 15
    [accepted] = ex.apply(new("s2", "EMIT", "CCER-AFF", "sell", 4))    # P2 only
    assert type(accepted) is OrderAccepted, accepted
    assert ex.books["CCER-AFF"].orders["s2"].lots == [[lot_key(P2, 2019), 4]]
    [refused] = ex.apply(new("s3", "EMIT", "CCER-AFF", "sell", 1))     # only P1@2023 left
    assert refused.reason is R.HOLDING_PERIOD, refused
    assert "sellable from trading day 6" in refused.text, refused.text
    [refused] = ex.apply(new("s4", "EMIT", "CCER-AFF", "sell", 15))    # all of P1@2023
    assert refused.reason is R.HOLDING_PERIOD, refused
    [short] = ex.apply(new("s5", "EMIT", "CCER-AFF", "sell", 16))      # more than it owns
    assert short.reason is R.INSUFFICIENT_CREDITS, short
    ex.apply(Deposit("F-1", "HOLD", "CNY", CNY, TS))
    [*_, trade] = ex.apply(new("b2", "HOLD", "CCER-AFF", "buy", 14))
    assert type(trade) is TradeExecuted and trade.lots == ((P2, 2019, 4),), trade
    assert emit.credits[lot_key(P1, 2023)] == 15 and emit.lot_bought == {lot_key(P1, 2023): 1}
    ex.check()
    for _ in range(4):                                        # day 6: 5 trading days later
        ex.apply(EndOfDay(TS))
    [accepted] = ex.apply(new("s6", "EMIT", "CCER-AFF", "sell", 15))
    assert type(accepted) is OrderAccepted, accepted
    assert not emit.lot_bought
    ex.check()


def sold_via_contract(ex: Exchange) -> None:
    """EMIT sells 10 t of its lot P1@2023 through CCER-AFF to HOLD on trading day 1."""
    ex.apply(DefineInstrument(LISTING, TS))
    ex.apply(lot_deposit("D-1", "EMIT", P1, 2023, 10))
    ex.apply(Deposit("F-1", "HOLD", "CNY", CNY, TS))
    ex.apply(EndOfDay(TS))
    ex.apply(new("s1", "EMIT", "CCER-AFF", "sell", 5))
    [*_, trade] = ex.apply(new("b1", "HOLD", "CCER-AFF", "buy", 5))
    assert trade.lots == ((P1, 2023, 5),)


def test_art29_a_lot_sold_through_the_contract_cannot_be_bought_back_by_its_listing():
    ex = exchange(CBEEX_2023)
    sold_via_contract(ex)
    assert ex.accounts.get("EMIT").lot_sold == {lot_key(P1, 2023): 1}
    for day in range(1, 6):                                  # days 1-5: 0-4 days later
        [event] = ex.apply(new(f"r{day}", "EMIT", "AFF-0001-2023", "buy", 5))
        assert type(event) is OrderRejected and event.reason is R.HOLDING_PERIOD, event
        assert "from trading day 6" in event.text, event.text
        ex.check()
        ex.apply(EndOfDay(TS))
    [event] = ex.apply(new("r6", "EMIT", "AFF-0001-2023", "buy", 5))  # day 6: 5 days later
    assert type(event) is OrderAccepted, event
    assert not ex.accounts.get("EMIT").lot_sold
    ex.check()


def test_art29_a_contract_buy_is_governed_by_the_instrument_rule_only():
    """A buy of a contract cannot name the lots it will receive: after selling P1@2023
    through its listing, the account may buy through the contract (lots.py, HOLDING PERIOD)."""
    ex = exchange(CBEEX_2023)
    ex.apply(DefineInstrument(LISTING, TS))
    ex.apply(lot_deposit("D-1", "EMIT", P1, 2023, 10))
    ex.apply(Deposit("F-1", "HOLD", "CNY", CNY, TS))
    ex.apply(EndOfDay(TS))
    ex.apply(new("s1", "EMIT", "AFF-0001-2023", "sell", 5))
    ex.apply(new("b1", "HOLD", "AFF-0001-2023", "buy", 5))
    assert ex.accounts.get("EMIT").lot_sold == {lot_key(P1, 2023): 1}
    [event] = ex.apply(new("b2", "EMIT", "CCER-AFF", "buy", 5))
    assert type(event) is OrderAccepted, event
    ex.check()


def test_art29_retiring_is_not_selling_it_may_retire_a_held_back_lot():
    from ccerx.engine.core.commands import Retire
    from ccerx.engine.core.events import Retired
    ex = exchange(CBEEX_2023)
    bought_via_contract(ex)                                   # 10 t bought on day 1
    ex.apply(lot_deposit("D-2", "EMIT", P1, 2023, 3))         # 3 t more, deposited
    ex.apply(EndOfDay(TS))
    [retired] = ex.apply(Retire("R-1", "EMIT", P1, 2023, 12, "offset", None, TS))
    assert type(retired) is Retired, retired
    emit = ex.accounts.get("EMIT")
    assert emit.credits[lot_key(P1, 2023)] == 1 and emit.lot_bought == {lot_key(P1, 2023): 1}
    [refused] = ex.apply(new("s2", "EMIT", "CCER-AFF", "sell", 1))    # still not sellable
    assert refused.reason is R.HOLDING_PERIOD, refused
    ex.check()


def test_art29_the_lot_trading_days_are_in_the_snapshot_and_the_state_hash(tmp_path):
    ex = exchange(CBEEX_2023)
    bought_via_contract(ex)
    before_close = ex.state_hash()
    ex.apply(EndOfDay(TS))
    assert ex.accounts.get("EMIT").lot_bought == {lot_key(P1, 2023): 1}
    assert ex.accounts.get("HOLD").lot_sold == {lot_key(P1, 2023): 1}
    restored = round_trip(ex)
    assert restored.accounts.get("EMIT").lot_bought == {lot_key(P1, 2023): 1}
    assert restored.accounts.get("HOLD").lot_sold == {lot_key(P1, 2023): 1}
    assert restored.state_hash() == ex.state_hash() != before_close
    path = snap.write(tmp_path, ex.seq, ex, {})
    assert snap.restore(path)[1].state_hash() == ex.state_hash()
    for name, which in (("EMIT", "lot_bought"), ("HOLD", "lot_sold")):
        forgetful = round_trip(ex)
        getattr(forgetful.accounts.get(name), which).clear()
        assert forgetful.state_hash() != ex.state_hash()      # the hash covers it
    sell = new("s2", "EMIT", "AFF-0001-2023", "sell", 10)
    assert restored.apply(sell) == ex.apply(sell)
    assert ex.apply(new("s3", "EMIT", "AFF-0001-2023", "sell", 1))[0].reason is R.HOLDING_PERIOD


def test_a_snapshot_written_before_lot_trading_days_existed_still_restores():
    ex = exchange(CONTINUOUS)          # no holding period: the state has no lot days
    ex.apply(Deposit("D-1", "HOLD", "CCER-AFF", 10, TS))
    ex.apply(new("s1", "HOLD", "CCER-AFF", "sell", 10))
    ex.apply(new("b1", "EMIT", "CCER-AFF", "buy", 10))
    state = orjson.loads(orjson.dumps(exchange_state(ex), option=orjson.OPT_NON_STR_KEYS))
    assert "lot_bought" not in state["accounts"] and "lot_sold" not in state["accounts"]
    old = exchange_from_state(state)
    assert old.state_hash() == ex.state_hash()
    old.apply(EndOfDay(TS))
    ex.apply(EndOfDay(TS))
    assert old.state_hash() == ex.state_hash()


def test_a_snapshot_of_tonne_level_held_back_credits_restores_as_a_held_back_lot():
    ex = exchange(CBEEX_2023)
    bought_via_contract(ex)
    ex.apply(EndOfDay(TS))
    ex.apply(EndOfDay(TS))                                   # day 3
    state = orjson.loads(orjson.dumps(exchange_state(ex), option=orjson.OPT_NON_STR_KEYS))
    del state["accounts"]["lot_bought"], state["accounts"]["lot_sold"]
    # (the format of 2b79891: per account, key -> [[day bought, t], ...] of earlier days)
    state["accounts"]["held_back"] = {"EMIT": {lot_key(P1, 2023): [[1, 10]]}}
    old = exchange_from_state(state)
    assert old.accounts.get("EMIT").lot_bought == {lot_key(P1, 2023): 1}
    [refused] = old.apply(new("s2", "EMIT", "CCER-AFF", "sell", 10))
    assert refused.reason is R.HOLDING_PERIOD, refused
    old.check()


def test_art37_open_buys_of_a_listing_count_toward_the_contract_limit():
    ex = exchange()
    ex.apply(DefineInstrument(LISTING, TS))
    ex.apply(SetLimits((("key_emission_unit", 10, None),), 0, TS))
    assert type(ex.apply(new("b1", "EMIT", "AFF-0001-2023", "buy", 10))[0]) is OrderAccepted
    [event] = ex.apply(new("b2", "EMIT", "CCER-AFF", "buy", 10))
    assert type(event) is OrderRejected and event.reason is R.POSITION_LIMIT, event


def test_a_snapshot_restores_credits_held_under_a_later_listing_symbol():
    ex = exchange(FOO=7)
    ex.apply(DefineInstrument(InstrumentSpec.from_fields(
        "FOO", ref_price="62.00", credit_type="afforestation", project=P1, vintage=2023), TS))
    assert round_trip(ex).state_hash() == ex.state_hash()


def test_an_old_journal_defining_a_symbol_with_an_at_sign_still_replays():
    from ccerx.engine.durable.journal import decode_command
    old_row = [3, ["AFF@OLD", 10_000, 1, 99_999, 6200, 100_000, ""], TS]   # _DEFINE, pre-lots
    [event] = exchange().apply(decode_command(old_row))
    assert type(event) is InstrumentDefined


def test_the_state_hash_covers_which_lots_a_resting_contract_sell_delivers():
    from ccerx.engine.core.events import TradeExecuted

    def build(first, second):
        ex = exchange()
        ex.apply(first)
        ex.apply(new("s1", "HOLD", "CCER-AFF", "sell", 5))
        ex.apply(second)
        ex.apply(new("s2", "HOLD", "CCER-AFF", "sell", 5))
        return ex

    old, recent = lot_deposit("D-X", "HOLD", "PX", 2019, 5), lot_deposit("D-Y", "HOLD", "PY", 2023, 5)
    a, b = build(old, recent), build(recent, old)
    hashes = a.state_hash(), b.state_hash()
    lots = [[e.lots for e in ex.apply(new("b1", "EMIT", "CCER-AFF", "buy", 5))
             if type(e) is TradeExecuted] for ex in (a, b)]
    assert lots[0] != lots[1]                      # s1 delivers PX in a, PY in b
    assert hashes[0] != hashes[1]


def test_art38_a_lot_deposit_reports_the_contract_holding_it_makes_large():
    from ccerx.engine.core.events import LargeHolderReported
    ex = exchange()
    ex.apply(SetLimits((("key_emission_unit", 100, None),), 500_000, TS))   # report at 50 t
    events = ex.apply(lot_deposit("D-1", "EMIT", P1, 2023, 60))
    assert ex.accounts.held(ex.accounts.get("EMIT"), ex.specs["CCER-AFF"]) == 60
    assert [(e.instrument, e.holding) for e in events
            if type(e) is LargeHolderReported] == [("CCER-AFF", 60)]


def test_art17_a_lot_listed_after_the_close_trades_on_the_next_trading_day():
    from ccerx.engine.core.commands import SetTradingStatus
    ex = exchange(CBEEX_2023)
    ex.apply(SetTradingStatus(False, "close", TS))
    ex.apply(EndOfDay(TS))                                     # day 0 is over
    ex.apply(lot_deposit("D-1", "HOLD", P1, 2023, 10, listing=("AFF-0001-2023", 62_000_000)))
    ex.apply(SetTradingStatus(True, "morning session", TS))    # day 1: the next trading day
    [event] = ex.apply(new("s1", "HOLD", "AFF-0001-2023", "sell", 5))
    assert type(event) is OrderAccepted, event


def test_art29_reject_is_the_same_after_a_snapshot_restore():
    ex = exchange(CBEEX_2023)
    ex.apply(Deposit("D-1", "HOLD", "CCER-AFF", 10, TS))
    ex.apply(new("b1", "EMIT", "CCER-AFF", "buy", 1, 61_000_000))
    ex.apply(new("b2", "EMIT", "CCER-AFF", "buy", 1, 62_000_000))   # a better level
    restored = round_trip(ex)
    assert restored.state_hash() == ex.state_hash()
    order = new("s1", "EMIT", "CCER-AFF", "sell", 1, 63_000_000)   # crosses nothing
    assert restored.apply(order) == ex.apply(order)


def test_a_contract_with_a_vintage_floor_does_not_deliver_its_default_lot():
    ex = exchange(**{"CCER-AFF": 10})                          # pooled, vintage unknown
    ex.apply(DefineInstrument(InstrumentSpec.from_fields(
        "CCER-AFF", ref_price="62.00", vintage_from=2024), TS))
    [event] = ex.apply(new("s1", "HOLD", "CCER-AFF", "sell", 10))
    assert type(event) is OrderRejected and event.reason is R.INSUFFICIENT_CREDITS, event


def test_a_deposit_that_relists_with_a_malformed_price_is_refused():
    from ccerx.engine.core.events import DepositRejected
    ex = exchange()
    ex.apply(DefineInstrument(LISTING, TS))
    [event] = ex.apply(parse_command(
        b'{"op":"deposit","deposit_id":"D-1","account":"HOLD","credit_type":"afforestation",'
        b'"project":"CCER-14-2024-0001","vintage":2023,"qty":5,'
        b'"list":{"symbol":"AFF-0001-2023","ref_price":"abc"}}'))
    assert type(event) is DepositRejected, event


def test_a_default_lot_delivery_is_named_the_same_way_whatever_else_the_sell_reserved():
    from ccerx.engine.core.events import TradeExecuted

    def first_trade_lots(extra_lot: bool):
        ex = exchange(**{"CCER-AFF": 10})
        ex.apply(lot_deposit("D-1", "HOLD", P1, 2023, 5))     # lots exist in both cases
        ex.apply(new("s1", "HOLD", "CCER-AFF", "sell", 12 if extra_lot else 10))
        events = ex.apply(new("b1", "EMIT", "CCER-AFF", "buy", 10))
        return next(e.lots for e in events if type(e) is TradeExecuted)

    assert first_trade_lots(False) == first_trade_lots(True) == ((None, None, 10),)
