"""Credits as lots (project, vintage), Art.10: deposits name a lot, a listing delivers exactly
its lot, a type contract delivers eligible lots in the documented allocation order (lots.py),
retirement takes free credits out of the market for good, and a new listing trades from the
next trading day (Art.17). Every scenario ends with the engine's own invariant check and a
per-lot reconciliation to the tonne."""
from __future__ import annotations

import pytest

from ccerx.engine.core.commands import (AmendOrder, CancelOrder, DefineInstrument, Deposit,
                                        EndOfDay, NewOrder, Retire)
from ccerx.engine.core.events import (Deposited, DepositRejected, InstrumentDefined,
                                      OrderRejected, Retired, TradeExecuted)
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.core.lots import lot_key
from ccerx.engine.core.risk import Account, Accounts
from ccerx.engine.core.rules import CBEEX_2023, CONTINUOUS
from ccerx.engine.core.types import (DEFAULT_INSTRUMENTS, InstrumentSpec, ParticipantType,
                                     RejectReason as R)
from ccerx.engine.durable.journal import decode_command, encode_command
from ccerx.engine.durable.snapshot import exchange_from_state, exchange_state
from ccerx.engine.formats.ndjson import event_to_dict, parse_command

TS = 1_706_252_400_000_000_000
P1, P2, P3 = "CCER-14-2024-0001", "CCER-14-2024-0002", "CCER-14-2024-0003"
LISTING = InstrumentSpec.from_fields("AFF-0001-2023", ref_price="62.00",
                                     credit_type="afforestation", project=P1, vintage=2023)
CNY = 100_000_000   # fen: 1,000,000.00 CNY


def exchange(rules=CONTINUOUS) -> Exchange:
    accounts = Accounts([Account("HOLD", ParticipantType.PROJECT_OWNER, "M1", 0),
                         Account("HOLD2", ParticipantType.PROJECT_OWNER, "M1", 0),
                         Account("EMIT", ParticipantType.KEY_EMISSION_UNIT, "M2", CNY),
                         Account("EMIT2", ParticipantType.KEY_EMISSION_UNIT, "M2", CNY)])
    return Exchange(DEFAULT_INSTRUMENTS, accounts, rules=rules)


def deposit(ex, deposit_id, account, project, vintage, qty, credit_type="afforestation", **kw):
    events = ex.apply(Deposit(deposit_id, account, None, qty, TS, None, credit_type, project,
                              vintage, *kw.get("listing", (None, None))))
    assert type(events[0]) is Deposited, events
    return events


def new(order_id, account, instrument, side, qty, price="62.00", **kw):
    units = None if price is None else int(price.replace(".", "")) * 10_000
    return NewOrder(order_id, account, instrument, side, kw.get("type", "limit"),
                    kw.get("tif"), units, qty, TS, None, kw.get("target"))


def kinds(events) -> list[str]:
    return [type(e).__name__ for e in events]


def reconciled(ex: Exchange, deposited: dict) -> None:
    """The engine's invariants hold and every holding key sums to what was moved in."""
    ex.check()
    _, credits = ex.accounts.totals()
    assert {k: v for k, v in credits.items() if v} == {k: v for k, v in deposited.items() if v}


def test_a_deposit_names_its_lot_and_holds_it_under_the_lot_key():
    ex = exchange()
    [event] = deposit(ex, "ISS-7", "HOLD", P1, 2023, 50_000)
    assert event == Deposited(event.seq, TS, "ISS-7", "HOLD", f"{P1}@2023", 50_000,
                              "afforestation", P1, 2023)
    assert ex.accounts.get("HOLD").credits == {lot_key(P1, 2023): 50_000}
    assert event_to_dict(event, ex.specs) == {
        "type": "deposited", "seq": event.seq, "ts": TS, "deposit_id": "ISS-7", "account": "HOLD",
        "asset": f"{P1}@2023", "amount": 50_000, "credit_type": "afforestation", "project": P1,
        "vintage": 2023}
    # a project keeps its credit type for ever; bad lots change nothing
    for bad in (Deposit("ISS-8", "HOLD", None, 5, TS, None, "mangrove", P1, 2023),
                Deposit("ISS-9", "HOLD", None, 5, TS, None, "afforestation", P1, 1990),
                Deposit("ISS-10", "HOLD", None, 5, TS, None, "forest", P2, 2023),
                Deposit("ISS-11", "HOLD", None, 5, TS, None, "afforestation", "a@b", 2023),
                Deposit("ISS-12", "HOLD", "CCER-AFF", 5, TS, None, "afforestation", P2, 2023)):
        before = ex.state_hash()
        [rejected] = ex.apply(bad)
        assert type(rejected) is DepositRejected and rejected.reason is R.MALFORMED, rejected
        assert ex.state_hash() != before   # the reject is sequenced ...
        assert ex.accounts.get("HOLD").credits == {lot_key(P1, 2023): 50_000}   # ... nothing else


def test_a_listing_sells_exactly_its_lot():
    ex = exchange()
    ex.apply(DefineInstrument(LISTING, TS))
    deposit(ex, "ISS-1", "HOLD", P2, 2023, 1_000)        # same vintage, other project
    [rejected] = ex.apply(new("s1", "HOLD", "AFF-0001-2023", "sell", 10))
    assert rejected.reason is R.INSUFFICIENT_CREDITS
    deposit(ex, "ISS-2", "HOLD", P1, 2023, 300)
    ex.apply(new("s2", "HOLD", "AFF-0001-2023", "sell", 300))
    assert ex.accounts.get("HOLD").credits_reserved == {lot_key(P1, 2023): 300}
    events = ex.apply(new("b1", "EMIT", "AFF-0001-2023", "buy", 120))
    [trade] = [e for e in events if type(e) is TradeExecuted]
    assert trade.lots == ((P1, 2023, 120),)
    assert event_to_dict(trade, ex.specs)["lots"] == [{"project": P1, "vintage": 2023, "qty": 120}]
    assert ex.accounts.get("EMIT").credits == {lot_key(P1, 2023): 120}
    reconciled(ex, {lot_key(P1, 2023): 300, lot_key(P2, 2023): 1_000})


def test_a_contract_sell_delivers_eligible_lots_oldest_vintage_then_project_first():
    ex = exchange()
    deposit(ex, "A", "HOLD", P2, 2022, 40)
    deposit(ex, "B", "HOLD", P1, 2023, 50)
    deposit(ex, "C", "HOLD", P1, 2022, 30)
    deposit(ex, "D", "HOLD", P3, 2021, 20, credit_type="mangrove")     # not afforestation
    ex.apply(Deposit("E", "HOLD", "CCER-AFF", 10, TS))                  # the default lot
    [rejected] = ex.apply(new("big", "HOLD", "CCER-AFF", "sell", 131))
    assert rejected.reason is R.INSUFFICIENT_CREDITS and "130 t sellable" in rejected.text
    ex.apply(new("s1", "HOLD", "CCER-AFF", "sell", 125))
    assert ex.books["CCER-AFF"].orders["s1"].lots == [
        ["CCER-AFF", 10], [lot_key(P1, 2022), 30], [lot_key(P2, 2022), 40],
        [lot_key(P1, 2023), 45]]
    trades = [e for e in ex.apply(new("b1", "EMIT", "CCER-AFF", "buy", 60)) if type(e) is TradeExecuted]
    assert [t.lots for t in trades] == [((None, None, 10), (P1, 2022, 30), (P2, 2022, 20))]
    trades = [e for e in ex.apply(new("b2", "EMIT2", "CCER-AFF", "buy", 50)) if type(e) is TradeExecuted]
    assert [t.lots for t in trades] == [((P2, 2022, 20), (P1, 2023, 30))]
    assert ex.accounts.get("EMIT").credits == {"CCER-AFF": 10, lot_key(P1, 2022): 30,
                                               lot_key(P2, 2022): 20}
    assert ex.accounts.get("HOLD").credits_reserved[lot_key(P1, 2023)] == 15
    ex.apply(CancelOrder("s1", TS))
    assert not any(ex.accounts.get("HOLD").credits_reserved.values())
    reconciled(ex, {"CCER-AFF": 10, lot_key(P2, 2022): 40, lot_key(P1, 2023): 50,
                    lot_key(P1, 2022): 30, lot_key(P3, 2021): 20})


def test_a_contract_with_a_vintage_range_never_delivers_other_vintages():
    ex = exchange()
    recent = InstrumentSpec.from_fields("AFF-2023+", ref_price="62.00",
                                        credit_type="afforestation", vintage_from=2023)
    [defined] = ex.apply(DefineInstrument(recent, TS))
    assert event_to_dict(defined, ex.specs)["vintage_from"] == 2023
    deposit(ex, "A", "HOLD", P1, 2022, 100)
    deposit(ex, "B", "HOLD", P2, 2024, 10)
    [rejected] = ex.apply(new("s1", "HOLD", "AFF-2023+", "sell", 11))
    assert rejected.reason is R.INSUFFICIENT_CREDITS
    ex.apply(new("s2", "HOLD", "AFF-2023+", "sell", 10))
    assert ex.accounts.get("HOLD").credits_reserved == {lot_key(P2, 2024): 10}
    reconciled(ex, {lot_key(P1, 2022): 100, lot_key(P2, 2024): 10})


def test_a_pooled_contract_without_lots_trades_exactly_as_before():
    """No lot ever moved in: a contract delivers its pooled holding and trades carry no lots."""
    ex = exchange()
    ex.apply(Deposit("E", "HOLD", "CCER-AFF", 100, TS))
    ex.apply(new("s1", "HOLD", "CCER-AFF", "sell", 100))
    assert ex.books["CCER-AFF"].orders["s1"].lots is None
    [trade] = [e for e in ex.apply(new("b1", "EMIT", "CCER-AFF", "buy", 40)) if type(e) is TradeExecuted]
    assert trade.lots == () and "lots" not in event_to_dict(trade, ex.specs)


def test_amending_a_contract_sell_moves_its_lot_reservation():
    ex = exchange()
    deposit(ex, "A", "HOLD", P1, 2021, 10)
    deposit(ex, "B", "HOLD", P2, 2022, 30)
    ex.apply(new("s1", "HOLD", "CCER-AFF", "sell", 5))
    ex.apply(AmendOrder("s1", None, 25, TS))
    assert ex.books["CCER-AFF"].orders["s1"].lots == [[lot_key(P1, 2021), 10], [lot_key(P2, 2022), 15]]
    ex.apply(AmendOrder("s1", None, 8, TS))          # gives back the last allocated first
    assert ex.books["CCER-AFF"].orders["s1"].lots == [[lot_key(P1, 2021), 8]]
    [rejected] = ex.apply(AmendOrder("s1", None, 41, TS))
    assert rejected.reason is R.INSUFFICIENT_CREDITS
    assert ex.books["CCER-AFF"].orders["s1"].lots == [[lot_key(P1, 2021), 8]]
    reconciled(ex, {lot_key(P1, 2021): 10, lot_key(P2, 2022): 30})


def test_retirement_takes_only_free_credits_and_they_never_trade_again():
    ex = exchange()
    deposit(ex, "A", "HOLD", P1, 2023, 100)
    ex.apply(DefineInstrument(LISTING, TS))
    ex.apply(new("s1", "HOLD", "AFF-0001-2023", "sell", 60))
    ex.apply(new("b1", "EMIT", "AFF-0001-2023", "buy", 60))
    [short] = ex.apply(Retire("R-1", "HOLD", P1, 2023, 41, "自愿注销", None, TS))
    assert short.reason is R.INSUFFICIENT_CREDITS and "40 t free" in short.text
    # bought today: pending delivery, not free until the close
    [pending] = ex.apply(Retire("R-2", "EMIT", P1, 2023, 1, "抵销", None, TS))
    assert pending.reason is R.INSUFFICIENT_CREDITS
    [done] = ex.apply(Retire("R-3", "HOLD", P1, 2023, 40, "2024年度清缴抵销", None, TS, "OPS"))
    assert done == Retired(done.seq, TS, "R-3", "HOLD", lot_key(P1, 2023), 40, "2024年度清缴抵销",
                           "CCERX-RC-00000001", "afforestation", P1, 2023, "OPS")
    assert ex.accounts.get("HOLD").retired == {lot_key(P1, 2023): 40}
    [again] = ex.apply(Retire("R-3", "HOLD", P1, 2023, 1, "x", None, TS))
    assert again.reason is R.DUPLICATE_RETIRE_ID
    [gone] = ex.apply(new("s2", "HOLD", "AFF-0001-2023", "sell", 1))
    assert gone.reason is R.INSUFFICIENT_CREDITS
    ex.apply(EndOfDay(TS))
    [second] = ex.apply(Retire("R-4", "EMIT", P1, 2023, 60, "offset", None, TS))
    assert second.certificate == "CCERX-RC-00000002"
    for bad, reason in ((Retire("R-5", "HOLD", P2, 2023, 1, "x", None, TS), R.UNKNOWN_LOT),
                        (Retire("R-6", "NOBODY", P1, 2023, 1, "x", None, TS), R.UNKNOWN_ACCOUNT),
                        (Retire("R-7", "HOLD", P1, 2023, 0, "x", None, TS), R.INVALID_QTY),
                        (Retire("R-8", "HOLD", P1, 2023, 1, "a\nb", None, TS), R.MALFORMED),
                        (Retire("R-9", "HOLD", P1, 2023, 1, "", None, TS), R.MALFORMED)):
        [rejected] = ex.apply(bad)
        assert type(rejected) is OrderRejected and rejected.op == "retire"
        assert rejected.reason is reason, (bad, rejected)
    reconciled(ex, {lot_key(P1, 2023): 100})
    assert ex.accounts.get("EMIT").credits[lot_key(P1, 2023)] == 0


def test_a_pooled_holding_is_retired_by_instrument():
    ex = exchange()
    ex.apply(Deposit("E", "HOLD", "CCER-SOL", 50, TS))
    [done] = ex.apply(Retire("R-1", "HOLD", None, None, 20, "offset", "CCER-SOL", TS))
    assert type(done) is Retired and done.asset == "CCER-SOL" and done.project is None
    assert ex.accounts.get("HOLD").credits == {"CCER-SOL": 30}


def test_under_cbeex_2023_a_new_listing_trades_from_the_next_trading_day():
    ex = exchange(CBEEX_2023)
    events = deposit(ex, "ISS-1", "HOLD", P1, 2023, 500,
                     listing=("AFF-0001-2023", 62_000_000))
    assert kinds(events) == ["Deposited", "InstrumentDefined"]
    assert events[1].spec.tradable_from == 1 and events[1].spec.ref_ticks == 6200
    [early] = ex.apply(new("s1", "HOLD", "AFF-0001-2023", "sell", 100))
    assert early.reason is R.NOT_YET_TRADABLE and "trading day 1" in early.text
    ex.apply(EndOfDay(TS))
    assert kinds(ex.apply(new("s2", "HOLD", "AFF-0001-2023", "sell", 100))) == ["OrderAccepted"]
    # band around the declared benchmark: 62.00 +-10%
    [band] = ex.apply(new("b1", "EMIT", "AFF-0001-2023", "buy", 10, price="68.30"))
    assert band.reason is R.PRICE_OUT_OF_BAND
    # one lot, one listing
    [twice] = ex.apply(DefineInstrument(InstrumentSpec.from_fields(
        "AFF-1-23", ref_price="62.00", credit_type="afforestation", project=P1, vintage=2023), TS))
    assert twice.reason is R.MALFORMED and "already listed as AFF-0001-2023" in twice.text
    ex.check()


def test_lots_survive_snapshot_journal_and_the_ndjson_edge():
    ex = exchange(CBEEX_2023)
    deposit(ex, "A", "HOLD", P1, 2022, 30)
    deposit(ex, "B", "HOLD", P2, 2023, 30)
    ex.apply(EndOfDay(TS))
    ex.apply(new("s1", "HOLD", "CCER-AFF", "sell", 50))
    ex.apply(Retire("R-1", "HOLD", P2, 2023, 5, "offset", None, TS))
    restored = exchange_from_state(exchange_state(ex))
    assert restored.state_hash() == ex.state_hash()
    assert restored.books["CCER-AFF"].orders["s1"].lots == ex.books["CCER-AFF"].orders["s1"].lots
    assert restored.accounts.lots == ex.accounts.lots
    restored.check()
    for cmd in (Deposit("A", "HOLD", None, 30, TS, None, "afforestation", P1, 2022,
                        "AFF-1", 62_000_000),
                Retire("R-1", "HOLD", P2, 2023, 5, "抵销", None, TS),
                DefineInstrument(LISTING.with_tradable_from(3), TS),
                Deposit("F", "EMIT", "CNY", 100, TS)):
        assert decode_command(encode_command(cmd)) == cmd
    assert len(encode_command(Deposit("F", "EMIT", "CNY", 100, TS))) == 7   # rows of before
    line = ('{"op":"deposit","deposit_id":"ISS-7","account":"HOLD","credit_type":"afforestation",'
            f'"project":"{P1}","vintage":2023,"qty":50000,'
            '"list":{"symbol":"AFF-0001-2023","ref_price":"62.00"}}')
    assert parse_command(line) == Deposit("ISS-7", "HOLD", None, 50000, None, None,
                                          "afforestation", P1, 2023, "AFF-0001-2023", 62_000_000)
    line = (f'{{"op":"retire","retire_id":"R-1","account":"EMIT","project":"{P1}",'
            '"vintage":2023,"qty":10,"purpose":"抵销"}')
    assert parse_command(line) == Retire("R-1", "EMIT", P1, 2023, 10, "抵销", None, None)
    line = ('{"op":"instrument","symbol":"AFF-0001-2023","credit_type":"afforestation",'
            f'"project":"{P1}","vintage":2023,"ref_price":"62.00"}}')
    [defined] = exchange().apply(parse_command(line))
    assert type(defined) is InstrumentDefined and defined.spec.holding == lot_key(P1, 2023)


@pytest.mark.parametrize("fields", [
    dict(credit_type="afforestation", project=P1, vintage=2023, vintage_from=2020),
    dict(credit_type="wind", project=P1, vintage=2023),
    dict(credit_type="afforestation", vintage=2023),
    dict(vintage_from=2020),
    dict(credit_type="afforestation", vintage_from=2024, vintage_to=2020)])
def test_bad_lot_attributes_of_an_instrument_are_refused(fields):
    with pytest.raises(ValueError):
        InstrumentSpec.from_fields("X-1", ref_price="62.00", **fields)


def test_art29_sees_a_resting_contract_sell_that_reserved_lots():
    """Found by the differential test: the holding-period check counted open sells by the
    instrument's own holding key, so a contract sell reserving lots went unseen (a buy of the
    contract was accepted) and a buy of a listing of one of those lots found a count but no
    order (AssertionError: a crash)."""
    ex = exchange(CBEEX_2023)
    ex.apply(DefineInstrument(LISTING, TS))
    deposit(ex, "A", "HOLD", P1, 2023, 50)
    ex.apply(Deposit("F", "HOLD", "CNY", CNY, TS))
    ex.apply(EndOfDay(TS))
    assert kinds(ex.apply(new("s1", "HOLD", "CCER-AFF", "sell", 20))) == ["OrderAccepted"]
    [refused] = ex.apply(new("b1", "HOLD", "CCER-AFF", "buy", 5, price="61.00"))
    assert refused.reason is R.HOLDING_PERIOD and "s1" in refused.text
    assert kinds(ex.apply(new("b2", "HOLD", "AFF-0001-2023", "buy", 5, price="61.00"))) == [
        "OrderAccepted"]
    ex.check()


def test_an_accounts_table_names_a_listings_credits_by_its_symbol_and_lots_need_a_type():
    accounts = Accounts([Account("HOLD", credits={"AFF-0001-2023": 70, "CCER-AFF": 5})])
    ex = Exchange((*DEFAULT_INSTRUMENTS, LISTING), accounts)
    assert ex.accounts.get("HOLD").credits == {lot_key(P1, 2023): 70, "CCER-AFF": 5}
    assert kinds(ex.apply(new("s1", "HOLD", "CCER-AFF", "sell", 75))) == ["OrderAccepted"]
    ex.check()
    with pytest.raises(ValueError, match="move in by deposit"):
        Exchange(DEFAULT_INSTRUMENTS, Accounts([Account("X", credits={f"{P2}@2023": 1})]))


def test_art17_a_listing_made_while_the_market_is_open_trades_the_next_day_not_sooner():
    from ccerx.engine.core.commands import SetTradingStatus
    ex = exchange(CBEEX_2023)
    ex.apply(SetTradingStatus(True, "morning session", TS))
    ex.apply(EndOfDay(TS))                      # (a flow without status lines: still open)
    deposit(ex, "ISS-1", "HOLD", P1, 2023, 10, listing=("AFF-0001-2023", 62_000_000))
    assert ex.specs["AFF-0001-2023"].tradable_from == 2
    ex.apply(SetTradingStatus(False, "close", TS))
    ex.apply(EndOfDay(TS))
    restored = exchange_from_state(exchange_state(ex))
    assert restored.state_hash() == ex.state_hash() and restored.after_close
    deposit(ex, "ISS-2", "HOLD", P2, 2023, 10, listing=("AFF-0002-2023", 62_000_000))
    assert ex.specs["AFF-0002-2023"].tradable_from == 2      # listed on day 2's eve
    ex.apply(SetTradingStatus(True, "morning session", TS))
    assert kinds(ex.apply(new("s1", "HOLD", "AFF-0002-2023", "sell", 5))) == ["OrderAccepted"]
