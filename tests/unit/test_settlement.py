"""Settlement instructions, the outbox and the relay (cursor only after confirmation)."""
from __future__ import annotations

import datetime as dt

import pytest

from ccerx.benchmarks.durability import accounts_table, flow
from ccerx.engine.durable.exchange import DurableExchange
from ccerx.engine.core.events import TradeExecuted
from ccerx.engine.ledger.sqlite import SqliteLedger
from ccerx.engine.core.risk import Account, Accounts
from ccerx.engine.durable.settlement import (InstructionMaker, Outbox, Relay, SettlementConfig,
                               SettlementInstruction)
from ccerx.engine.core.types import DEFAULT_INSTRUMENTS, Side

AFF = DEFAULT_INSTRUMENTS[0]
# 2024-01-26 is a Friday; 15:00 Beijing == 07:00 UTC
FRIDAY_15H = int(dt.datetime(2024, 1, 26, 7, 0, tzinfo=dt.timezone.utc).timestamp()) * 10 ** 9


def trade(trade_id=7, price=6201, qty=100, ts=FRIDAY_15H, instrument="CCER-AFF"):
    gross = price * AFF.tick_fen * qty
    fee = gross * 6000 // 1_000_000
    return TradeExecuted(3, ts, trade_id, instrument, price, qty, "b1", "s1", Side.BUY, "BUYER",
                         "SELLER", fee, fee)


def test_instruction_fields_are_exact():
    accounts = Accounts([Account("BUYER", member="M1"), Account("SELLER", member="M2")])
    inst = InstructionMaker().make(trade(), AFF, accounts)
    assert inst.id == "CCERX-T7" and inst.seq == 1 and inst.stream_seq == 1
    assert (inst.qty, inst.price_units, inst.gross_fen) == (100, 62_010_000, 620_100)
    assert inst.buy_fee == inst.sell_fee == 3720
    assert (inst.buyer, inst.seller, inst.buyer_member, inst.seller_member) == (
        "BUYER", "SELLER", "M1", "M2")
    assert inst.trade_date == inst.settle_date == "2024-01-26"     # T+0 default
    edge = inst.to_json()
    assert edge["price"] == "62.01" and edge["gross"] == "6201.00" and edge["buy_fee"] == "37.20"
    assert SettlementInstruction.from_json(edge) == inst


def test_trade_date_is_beijing_and_cycle_skips_weekends():
    late = FRIDAY_15H + 10 * 3600 * 10 ** 9          # Saturday 01:00 Beijing
    maker = InstructionMaker(SettlementConfig("X", cycle_days=1))
    inst = maker.make(trade(ts=FRIDAY_15H), AFF, None)
    assert (inst.trade_date, inst.settle_date) == ("2024-01-26", "2024-01-29")   # Fri -> Mon
    assert maker.make(trade(8, ts=late), AFF, None).trade_date == "2024-01-27"
    # one calendar: T+n skips the exchange's holidays as well as weekends
    cal = SettlementConfig("X", cycle_days=2).calendar()
    assert cal.trading_days_after(dt.date(2024, 1, 26), 2) == dt.date(2024, 1, 30)
    holiday = InstructionMaker(SettlementConfig("X", cycle_days=1, holidays=("2024-01-29",)))
    assert holiday.make(trade(ts=FRIDAY_15H), AFF, None).settle_date == "2024-01-30"


def test_a_settlement_config_with_holidays_reopens_unchanged(tmp_path):
    from ccerx.engine.durable.exchange import DurableExchange
    config = SettlementConfig("X", cycle_days=1, holidays=("2024-01-29",))
    DurableExchange(tmp_path, settlement=config, ledger=None).close()
    again = DurableExchange(tmp_path, settlement=config, ledger=None)
    assert again.settlement == config and not again.recovery.config_ignored
    again.close()


def test_stream_numbers_have_no_gaps_per_instrument():
    maker = InstructionMaker()
    made = [maker.make(trade(i, instrument=s), AFF, None)
            for i, s in enumerate(["CCER-AFF", "CCER-SOL", "CCER-AFF", "CCER-AFF", "CCER-SOL"], 1)]
    assert [m.seq for m in made] == [1, 2, 3, 4, 5]
    assert [m.stream_seq for m in made] == [1, 1, 2, 3, 2]


@pytest.mark.parametrize("field,value", [("gross", "6201.01"), ("qty", 0), ("seller", "BUYER"),
                                         ("price", 62.01), ("seq", "1")])
def test_malformed_edge_instruction_is_refused(field, value):
    edge = InstructionMaker().make(trade(), AFF, None).to_json()
    edge[field] = value
    with pytest.raises(ValueError):
        SettlementInstruction.from_json(edge)


def test_outbox_reads_after_cursor_and_refuses_gaps():
    maker = InstructionMaker()
    made = [maker.make(trade(i), AFF, None) for i in range(1, 6)]
    box = Outbox()
    box.publish(made[:3])
    with pytest.raises(AssertionError):
        box.publish(made[4:])
    box.publish(made[3:])
    assert [i.seq for i in box.read(2, 2)] == [3, 4]
    box.trim(3)
    assert [i.seq for i in box.read(3, 10)] == [4, 5]
    with pytest.raises(AssertionError):
        box.read(1, 10)


class FlakyLedger:
    """The real SQLite ledger behind a connection that fails every other delivery, some of them
    AFTER the commit (the confirmation is lost, so the batch comes again)."""

    name = "flaky"
    keeps_accounts = True

    def __init__(self, path):
        self.inner = SqliteLedger(path)
        self.open_accounts = self.inner.open_accounts
        self.close_statements = self.inner.close_statements
        self.calls = 0

    def deliver(self, batch):
        self.calls += 1
        if self.calls % 4 == 1:
            raise ConnectionError("down before applying")
        self.inner.deliver(batch)
        if self.calls % 4 == 2:
            raise ConnectionError("confirmation lost after commit")

    def close(self):
        self.inner.close()


def test_every_trade_settles_once_despite_failures_and_restarts(tmp_path):
    commands = list(flow(4000, seed=11, n_accounts=20))
    adapter = FlakyLedger(tmp_path / "ledger.sqlite")
    ex = DurableExchange(tmp_path / "data", accounts=accounts_table(20), ledger=adapter,
                         start_relays=False, relay_batch=200)
    trades = 0
    for i in range(0, 2000, 100):
        for events in ex.apply_many(commands[i:i + 100]):
            trades += sum(type(e) is TradeExecuted for e in events)
    relay = ex.relays["ledger"]
    for _ in range(6):
        try:
            relay.pump()
        except ConnectionError:
            pass
    confirmed = relay.cursor.value
    assert 0 < confirmed < trades
    ex.close(settle_timeout=0)          # "crash" with instructions still in the outbox
    adapter = FlakyLedger(tmp_path / "ledger.sqlite")
    ex = DurableExchange(tmp_path / "data", ledger=adapter, start_relays=False, relay_batch=200)
    assert ex.recovery.pending["ledger"] == trades - confirmed
    for i in range(2000, 4000, 100):
        for events in ex.apply_many(commands[i:i + 100]):
            trades += sum(type(e) is TradeExecuted for e in events)
    relay = ex.relays["ledger"]
    while relay.cursor.value < ex.outbox.last_seq:
        try:
            relay.pump()
        except ConnectionError:
            pass
    ledger = adapter.inner
    assert ex.outbox.last_seq == trades
    assert ledger.settlement_count() == trades == ledger.applied_seq()
    ledger.check()
    for account in ex.accounts.by_id.values():
        assert ledger.balance(account.account, "CNY") == account.cash
        for symbol, qty in account.credits.items():
            assert ledger.balance(account.account, symbol) == qty
    ex.close()


def test_relay_thread_settles_in_background(tmp_path):
    ex = DurableExchange(tmp_path, accounts=accounts_table(20))
    ex.apply_many(list(flow(1500, seed=4, n_accounts=20)))
    assert ex.wait_settled(30)
    assert ex.ledger.applied_seq() == ex.outbox.last_seq > 0
    assert len(ex.outbox) == 0          # confirmed instructions leave memory
    ex.close()


def test_relay_cursor_is_durable(tmp_path):
    maker = InstructionMaker()
    box = Outbox()
    box.publish([maker.make(trade(i), AFF, None) for i in range(1, 4)])

    class Recorder:
        name = "rec"
        keeps_accounts = False
        got = []

        def deliver(self, batch):
            self.got.extend(i.seq for i in batch)

        def close(self):
            pass

    relay = Relay("rec", box, Recorder(), tmp_path / "cursor-rec.json", batch=2)
    assert relay.pump() == 2 and relay.pump() == 1 and relay.pump() == 0
    assert Relay("rec", box, Recorder(), tmp_path / "cursor-rec.json").cursor.value == 3
