"""Day-end DvP clearing (cbeex-2023, Art.27-28): the day's trades reach the ledger pending and
are delivered by one clearing batch after the close; `continuous` settles each trade at once."""
from __future__ import annotations

import orjson
import pytest

from ccerx.engine.core.commands import EndOfDay, NewOrder
from ccerx.engine.core.events import TradeExecuted
from ccerx.engine.core.risk import Account, Accounts
from ccerx.engine.core.rules import CBEEX_2023, CONTINUOUS
from ccerx.engine.core.types import ParticipantType
from ccerx.engine.durable.exchange import DurableExchange
from ccerx.engine.durable.settlement import (BatchTradeInstruction, ClearingBatch,
                                             SettlementInstruction, instruction_from_json,
                                             instruction_from_row)
from ccerx.engine.ledger.base import LedgerRejected
from ccerx.engine.ledger.sql import exchange_of
from ccerx.engine.ledger.sqlite import SqliteLedger

TS = 1_796_281_200_000_000_000      # 2026-12-03 15:00 Beijing, a Thursday
PRICE = 62_000_000                   # 62.00 CNY/t in 1e-6 CNY


def table() -> Accounts:
    return Accounts([
        Account("PO1", ParticipantType.PROJECT_OWNER, "M1", 0, credits={"CCER-AFF": 1_000}),
        Account("PO2", ParticipantType.PROJECT_OWNER, "M1", 0, credits={"CCER-SOL": 500}),
        Account("EM1", ParticipantType.KEY_EMISSION_UNIT, "M2", 10_000_000),
        Account("EM2", ParticipantType.KEY_EMISSION_UNIT, "M2", 10_000_000)])


def day(ts: int = TS) -> list:
    """Three trades: EM1 buys 100 AFF from PO1 and 50 SOL from PO2, EM2 30 AFF from PO1."""
    return [NewOrder("s1", "PO1", "CCER-AFF", "sell", "limit", "day", PRICE, 300, ts),
            NewOrder("b1", "EM1", "CCER-AFF", "buy", "limit", "day", PRICE, 100, ts + 1),
            NewOrder("b2", "EM2", "CCER-AFF", "buy", "limit", "day", PRICE, 30, ts + 2),
            NewOrder("s2", "PO2", "CCER-SOL", "sell", "limit", "day", 75_000_000, 50, ts + 3),
            NewOrder("b3", "EM1", "CCER-SOL", "buy", "limit", "day", 75_000_000, 50, ts + 4)]


def ledger_of(ex: DurableExchange) -> SqliteLedger:
    return ex.ledger


class Held:
    """An adapter that never delivers (its relay is not started): the outbox keeps all."""
    name, keeps_accounts = "held", False

    def deliver(self, instructions) -> None:
        raise AssertionError("not started")

    def close(self) -> None:
        pass


def assert_ledger_is_the_engine(ledger, accounts) -> None:
    ledger.check()
    for account in accounts.by_id.values():
        assert ledger.balance(account.account, "CNY") == account.cash, account.account
        for symbol, qty in account.credits.items():
            assert ledger.balance(account.account, symbol) == qty, (account.account, symbol)


def batches(ledger) -> list:
    return ledger._execute("SELECT id, qty FROM settlements WHERE kind = 'clearing' "
                           "ORDER BY seq").fetchall()


def test_cbeex_day_is_pending_until_the_close_then_one_confirmed_batch_delivers_it(tmp_path):
    ex = DurableExchange(tmp_path / "d", accounts=table(), rules=CBEEX_2023)
    try:
        events = [e for c in day() for e in ex.apply(c)]
        assert sum(type(e) is TradeExecuted for e in events) == 3
        assert ex.wait_settled(10)
        ledger = ledger_of(ex)
        # the trades are in the ledger, pending; nothing moved there yet
        assert ledger.settlement_count() == 3 and ledger.applied_seq() == 3
        assert ledger.balance("PO1", "CCER-AFF") == 1_000 and ledger.balance("EM1", "CNY") == \
            10_000_000
        assert ledger.balance("EM1", "CCER-AFF") == 0
        assert batches(ledger) == []
        assert [t["delivery"] for t in ledger.statement("EM1", "2026-12-03")["trades"]] == \
            ["pending", "pending"]
        ledger.check()
        # the close: one batch, confirmed, balances now the engine's
        ex.apply(EndOfDay(TS + 3_600_000_000_000))
        assert ex.wait_settled(10)
        assert batches(ledger) == [("CCERX-C20261203-1", 3)]
        assert ledger.applied_seq() == 4
        assert_ledger_is_the_engine(ledger, ex.accounts)
        assert ledger.balance("EM1", "CCER-AFF") == 100 and ledger.balance("PO1", "CCER-AFF") == 870
        statement = ledger.statement("EM1", "2026-12-03")
        assert [(t["delivery"], t["batch_id"]) for t in statement["trades"]] == \
            [("delivered", "CCERX-C20261203-1")] * 2
        [close] = [orjson.loads(p.read_bytes()) for p in (tmp_path / "d" / "statements").iterdir()]
        by_account = {s["account"]: s for s in close["statements"]}
        assert set(by_account) == {"PO1", "PO2", "EM1", "EM2"}
        assert by_account["PO1"]["clearing"] == [{"batch_id": "CCERX-C20261203-1",
                                                  "trades": 2, "delivered": 2, "pending": 0}]
        assert by_account["EM2"]["closing"]["credits"] == {"CCER-AFF": 30}
    finally:
        ex.close()


def test_the_batch_message_carries_count_and_gross_figures_per_participant(tmp_path):
    ex = DurableExchange(tmp_path / "d", accounts=table(), rules=CBEEX_2023, ledger=None,
                         adapters={"held": Held()}, start_relays=False)
    try:
        for c in day():
            ex.apply(c)
        ex.apply(EndOfDay(TS + 10))
        made = ex.outbox.read(0, 100)
        assert [type(i) for i in made] == [BatchTradeInstruction] * 3 + [ClearingBatch]
        batch = made[-1]
        assert batch.id == "CCERX-C20261203-1" and batch.trades == 3 and batch.after_seq == 0
        assert exchange_of(batch.id) == "CCERX"
        assert batch.participants["EM1"] == {"member": "M2", "trades": 2,
                                             "bought": {"CCER-AFF": 100, "CCER-SOL": 50},
                                             "sold": {}, "paid": 620_000 + 375_000,
                                             "received": 0,
                                             "fees": made[0].buy_fee + made[2].buy_fee}
        assert batch.totals["qty"] == {"CCER-AFF": 130, "CCER-SOL": 50}
        assert batch.totals["gross"] == 620_000 + 186_000 + 375_000
        edge = orjson.loads(batch.encode())
        assert edge["kind"] == "clearing" and edge["totals"]["gross"] == "11810.00"
        assert instruction_from_json(edge) == batch
        assert instruction_from_row(orjson.loads(orjson.dumps(tuple(batch)))) == batch
        assert instruction_from_json(orjson.loads(made[0].encode())) == made[0]
        # a second close the same date is batch 2, covering nothing
        ex.apply(EndOfDay(TS + 20))
        second = ex.outbox.read(4, 10)[0]
        assert second.id == "CCERX-C20261203-2" and second.trades == 0 and second.after_seq == 4
    finally:
        ex.close()


def test_a_crash_between_the_close_and_the_confirmation_delivers_the_batch_exactly_once(
        tmp_path):
    data = tmp_path / "d"
    ex = DurableExchange(data, accounts=table(), rules=CBEEX_2023)
    for c in day():
        ex.apply(c)
    assert ex.wait_settled(10)
    ex.snapshot()            # the batch's contents must come back from snapshot + journal
    ex.apply(NewOrder("b4", "EM2", "CCER-AFF", "buy", "limit", "day", PRICE, 20, TS + 50))
    for relay in ex.relays.values():
        relay.stop()         # the ledger relay is gone: the close is journaled, not delivered
    ex.apply(EndOfDay(TS + 100))
    hash_before = ex.state_hash()
    ex.close(settle_timeout=0)   # "killed" before the batch reached the ledger
    ledger = SqliteLedger(data / "ledger.sqlite")
    assert batches(ledger) == [] and ledger.applied_seq() == 4    # the trades, pending
    assert ledger.balance("EM2", "CCER-AFF") == 0
    ledger.close()

    again = DurableExchange(data, accounts=table(), rules=CBEEX_2023)
    try:
        assert again.state_hash() == hash_before
        assert again.wait_settled(10)
        ledger = again.ledger
        assert batches(ledger) == [("CCERX-C20261203-1", 4)]
        assert_ledger_is_the_engine(ledger, again.accounts)
        # delivered twice (the relay's cursor lost): nothing changes
        batch = instruction_from_json(orjson.loads(ledger._execute(
            "SELECT body FROM settlements WHERE kind = 'clearing'").fetchone()[0]))
        ledger.deliver([batch])
        assert batches(ledger) == [("CCERX-C20261203-1", 4)]
        assert_ledger_is_the_engine(ledger, again.accounts)
    finally:
        again.close()


def test_a_batch_that_does_not_match_the_pending_trades_is_refused(tmp_path):
    ex = DurableExchange(tmp_path / "d", accounts=table(), rules=CBEEX_2023, ledger=None,
                         adapters={"held": Held()}, start_relays=False)
    for c in day():
        ex.apply(c)
    ex.apply(EndOfDay(TS + 10))
    made = ex.outbox.read(0, 100)
    ex.close()
    ledger = SqliteLedger(tmp_path / "ledger.sqlite")
    ledger.open_accounts([("PO1", 0, {"CCER-AFF": 1_000}), ("PO2", 0, {"CCER-SOL": 500}),
                          ("EM1", 10_000_000, {}), ("EM2", 10_000_000, {})])
    ledger.deliver(made[:3])
    wrong = made[3]._replace(totals={**made[3].totals, "gross": made[3].totals["gross"] + 1})
    with pytest.raises(LedgerRejected, match="not confirmed"):
        ledger.deliver([wrong])
    assert batches(ledger) == [] and ledger.balance("EM1", "CCER-AFF") == 0
    ledger.deliver([made[3]])
    ledger.check()
    assert ledger.balance("EM1", "CCER-AFF") == 100


def test_continuous_settles_each_trade_at_once_as_before(tmp_path):
    ex = DurableExchange(tmp_path / "d", accounts=table(), rules=CONTINUOUS)
    try:
        for c in day():
            ex.apply(c)
        assert ex.wait_settled(10)
        made_types = {type(i) for i in ex.outbox.read(0, 100)}
        assert made_types <= {SettlementInstruction}
        assert ex.ledger.balance("EM1", "CCER-AFF") == 100
        ex.apply(EndOfDay(TS + 10))
        assert ex.wait_settled(10)
        assert batches(ex.ledger) == [] and ex.ledger.applied_seq() == 3
        assert "delivery" not in ex.ledger.statement("EM1", "2026-12-03")["trades"][0]
        assert_ledger_is_the_engine(ex.ledger, ex.accounts)
    finally:
        ex.close()


def test_a_dispute_is_recorded_until_the_next_trading_day_begins(tmp_path):
    ex = DurableExchange(tmp_path / "d", accounts=table(), rules=CBEEX_2023)
    try:
        for c in day():
            ex.apply(c)
        assert ex.wait_settled(10)
        ledger = ex.ledger
        assert ledger.record_dispute(1, "数量不符", TS)["delivery"] == "pending"
        ex.apply(EndOfDay(TS + 10))
        assert ex.wait_settled(10)
        assert ledger.record_dispute(2, "late but in time", TS + 20)["batch_id"] == \
            "CCERX-C20261203-1"
        with pytest.raises(LedgerRejected, match="already disputed"):
            ledger.record_dispute(2, "again", TS + 21)
        with pytest.raises(LedgerRejected, match="no trade 99"):
            ledger.record_dispute(99, "none", TS + 21)
        trades = ledger.statement("EM1", "2026-12-03")["trades"]
        assert [t.get("disputed") for t in trades] == ["数量不符", None]
        assert [t["delivery"] for t in trades] == ["delivered"] * 2   # flagged, not held back
        # the next day trades: the window of the first day's trades is over
        next_day = TS + 86_400 * 10 ** 9
        ex.apply(NewOrder("s9", "PO1", "CCER-AFF", "sell", "limit", "day", PRICE, 5, next_day))
        ex.apply(NewOrder("b9", "EM2", "CCER-SOL", "buy", "limit", "day", 75_000_000, 1,
                          next_day))
        ex.apply(NewOrder("s8", "PO2", "CCER-SOL", "sell", "limit", "day", 75_000_000, 1,
                          next_day + 1))
        assert ex.wait_settled(10)
        with pytest.raises(LedgerRejected, match="window"):
            ledger.record_dispute(3, "too late", next_day + 2)
        ledger.check()
    finally:
        ex.close()


def test_a_trade_settled_at_once_cannot_be_disputed(tmp_path):
    ex = DurableExchange(tmp_path / "d", accounts=table(), rules=CONTINUOUS)
    try:
        for c in day():
            ex.apply(c)
        assert ex.wait_settled(10)
        with pytest.raises(LedgerRejected, match="settled at once"):
            ex.ledger.record_dispute(1, "no", TS)
    finally:
        ex.close()
