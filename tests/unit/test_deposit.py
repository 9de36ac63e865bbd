"""Deposits: issuance batches and cash paid into accounts, from the edge to the ledger.

A deposit is an engine command like any other: validated (rejects are values and change
nothing), sequenced, journaled, recovered, snapshotted, and settled to the ledger on the same
numbered instruction stream as the trades, so the ledger reconciles with the engine to the
tonne and the fen."""
from __future__ import annotations

import pytest

from ccerx.engine.core.commands import Deposit, EndOfDay, NewOrder
from ccerx.engine.durable.exchange import DurableExchange
from ccerx.engine.core.events import Deposited, DepositRejected, OrderRejected, TradeExecuted
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.durable.journal import decode_command, encode_command
from ccerx.engine.ledger.sqlite import SqliteLedger
from ccerx.engine.formats.ndjson import event_to_dict, parse_command
from ccerx.engine.core.risk import Account, Accounts
from ccerx.engine.durable.settlement import (DepositInstruction, instruction_from_json, instruction_from_row)
from ccerx.engine.core.types import DEFAULT_INSTRUMENTS, ParticipantType, RejectReason as R

TS = 1_706_252_400_000_000_000     # 2024-01-26 15:00 Beijing


def table() -> Accounts:
    return Accounts([Account("PO1", ParticipantType.PROJECT_OWNER, "M1", 0),
                     Account("EM1", ParticipantType.KEY_EMISSION_UNIT, "M2", 1_000_000)])


def test_credit_and_cash_deposits_fund_orders_at_once():
    ex = Exchange(DEFAULT_INSTRUMENTS, table())
    sell = NewOrder("s1", "PO1", "CCER-SOL", "sell", "limit", "day", 75_500_000, 100, TS)
    assert type(ex.apply(sell)[0]) is OrderRejected              # nothing to sell yet
    [event] = ex.apply(Deposit("ISS-1", "PO1", "CCER-SOL", 100, TS + 1))
    assert event == Deposited(event.seq, TS + 1, "ISS-1", "PO1", "CCER-SOL", 100)
    # deposited credits are not "bought today": sellable at once
    assert [type(e).__name__ for e in ex.apply(sell._replace(order_id="s2"))] == ["OrderAccepted"]
    ex.apply(Deposit("F-1", "EM1", "CNY", 10_000_000, TS + 2))
    assert ex.accounts.get("EM1").cash == 11_000_000
    buy = NewOrder("b1", "EM1", "CCER-SOL", "buy", "limit", "day", 75_500_000, 100, TS + 3)
    events = ex.apply(buy)
    assert [type(e) for e in events][-1] is TradeExecuted
    ex.check()


@pytest.mark.parametrize("command, reason", [
    (Deposit("", "PO1", "CCER-SOL", 5), R.MALFORMED),
    (Deposit(7, "PO1", "CCER-SOL", 5), R.MALFORMED),
    (Deposit("D", "PO1", "CCER-NOPE", 5), R.UNKNOWN_INSTRUMENT),
    (Deposit("D", "PO1", None, 5), R.UNKNOWN_INSTRUMENT),
    (Deposit("D", "PO1", "CCER-SOL", 0), R.INVALID_AMOUNT),
    (Deposit("D", "PO1", "CCER-SOL", -5), R.INVALID_AMOUNT),
    (Deposit("D", "PO1", "CCER-SOL", 2.5), R.INVALID_AMOUNT),
    (Deposit("D", "PO1", "CCER-SOL", True), R.INVALID_AMOUNT),
    (Deposit("D", "PO1", "CNY", 10 ** 15 + 1), R.INVALID_AMOUNT),
    (Deposit("D", "NOBODY", "CNY", 5), R.UNKNOWN_ACCOUNT),
    (Deposit("D", None, "CNY", 5), R.MALFORMED),
])
def test_bad_deposits_are_rejected_and_change_nothing(command, reason):
    ex = Exchange(DEFAULT_INSTRUMENTS, table())
    [event] = ex.apply(command)
    assert type(event) is DepositRejected and event.reason is reason and event.text
    assert ex.deposit_ids == set()
    assert ex.accounts.get("PO1").credits == {} and ex.accounts.get("PO1").cash == 0


def test_a_deposit_id_is_used_once_even_across_days():
    ex = Exchange(DEFAULT_INSTRUMENTS, table())
    ex.apply(Deposit("ISS-1", "PO1", "CCER-SOL", 100))
    ex.apply(EndOfDay(TS))
    [event] = ex.apply(Deposit("ISS-1", "PO1", "CCER-SOL", 100))
    assert type(event) is DepositRejected and event.reason is R.DUPLICATE_DEPOSIT_ID
    assert event.deposit_id == "ISS-1"
    assert ex.accounts.get("PO1").credits == {"CCER-SOL": 100}


def test_ndjson_edge_parses_credit_and_cash_deposits():
    assert parse_command(b'{"op":"deposit","deposit_id":"I","account":"PO1",'
                         b'"instrument":"CCER-SOL","qty":50000,"ts":5}') == \
        Deposit("I", "PO1", "CCER-SOL", 50_000, 5)
    assert parse_command(b'{"op":"deposit","deposit_id":"F","account":"EM1",'
                         b'"cash":"1000000.05"}') == Deposit("F", "EM1", "CNY", 100_000_005)
    for bad in (b'{"op":"deposit","deposit_id":"F","account":"EM1","cash":1000}',
                b'{"op":"deposit","deposit_id":"F","account":"EM1","cash":"1.001"}',
                b'{"op":"deposit","deposit_id":"F","account":"EM1","cash":"1e3"}',
                b'{"op":"deposit","deposit_id":"F","account":"EM1"}',
                b'{"op":"deposit","deposit_id":"F","account":"EM1","cash":"1.00",'
                b'"instrument":"CCER-SOL","qty":1}'):
        command = parse_command(bad)
        assert type(command).__name__ == "Malformed" and command.op == "deposit", bad
    ex = Exchange(DEFAULT_INSTRUMENTS, table())
    [event] = ex.apply(Deposit("F", "EM1", "CNY", 100_000_005, 9))
    assert event_to_dict(event, ex.specs) == {
        "type": "deposited", "seq": 1, "ts": 9, "deposit_id": "F", "account": "EM1",
        "asset": "CNY", "amount": "1000000.05"}
    [event] = ex.apply(Deposit("F", "EM1", "CNY", 5, 10))
    assert event_to_dict(event, ex.specs) == {
        "type": "deposit_rejected", "seq": 2, "ts": 10, "deposit_id": "F",
        "reason": "duplicate_deposit_id", "text": "deposit id already applied"}


def test_journal_row_and_instruction_forms_are_exact():
    for command in (Deposit("I", "PO1", "CCER-SOL", 5, TS, "ops"), Deposit("I", "PO1", "CNY", 7),
                    Deposit(3.5, ["x"], "CNY", 2 ** 80)):
        assert decode_command(encode_command(command)) == command
    inst = DepositInstruction("CCERX-D4", 9, 2, "F-1", "EM1", "M2", "CNY", 12_345, "2024-01-26",
                              TS)
    assert instruction_from_json(inst.to_json()) == inst
    assert inst.to_json()["amount"] == "123.45"
    assert instruction_from_row(tuple(inst)) == inst
    with pytest.raises(ValueError):
        instruction_from_json({**inst.to_json(), "amount": "-1.00"})
    with pytest.raises(ValueError):
        instruction_from_json({**inst.to_json(), "kind": "withdrawal"})


def test_deposits_are_durable_and_settle_with_trades(tmp_path, capsys):
    ledger_path = tmp_path / "ledger.sqlite"
    ex = DurableExchange(tmp_path / "data", DEFAULT_INSTRUMENTS, table(),
                         ledger=SqliteLedger(ledger_path), start_relays=False)
    ex.apply_many([
        Deposit("ISS-1", "PO1", "CCER-SOL", 300, TS),
        NewOrder("s1", "PO1", "CCER-SOL", "sell", "limit", "day", 75_500_000, 300, TS + 1),
        Deposit("F-1", "EM1", "CNY", 50_000_000, TS + 2),
        NewOrder("b1", "EM1", "CCER-SOL", "buy", "limit", "day", 75_500_000, 200, TS + 3),
        Deposit("ISS-1", "PO1", "CCER-SOL", 300, TS + 4),     # repeat: rejected, no instruction
    ])
    state = ex.state_hash()
    ex.close(settle_timeout=0)                                 # nothing delivered yet
    ex = DurableExchange(tmp_path / "data", ledger=SqliteLedger(ledger_path), start_relays=False)
    assert ex.state_hash() == state
    assert ex.recovery.pending["ledger"] == 3                  # deposit, trade, deposit
    [event] = ex.apply(Deposit("ISS-1", "PO1", "CCER-SOL", 1, TS + 5))
    assert event.reason is R.DUPLICATE_DEPOSIT_ID              # remembered across recovery
    ex.snapshot()
    state = ex.state_hash()
    ex.relays["ledger"].drain()
    ledger = ex.relays["ledger"].adapter
    ledger.check()
    for account in ex.accounts.by_id.values():
        assert ledger.balance(account.account, "CNY") == account.cash
        for symbol, qty in account.credits.items():
            assert ledger.balance(account.account, symbol) == qty
    assert ledger.balance("PO1", "CCER-SOL") == 100 and ledger.balance("EM1", "CCER-SOL") == 200
    assert ledger.balance("@registry", "CCER-SOL") == -300
    ex.close()
    ex = DurableExchange(tmp_path / "data", ledger=SqliteLedger(ledger_path), start_relays=False)
    assert ex.recovery.snapshot_seq > 0 and ex.state_hash() == state
    assert "ISS-1" in ex.exchange.deposit_ids                 # restored from the snapshot
    ex.close()
    from ccerx.scripts.ccerx import main
    assert main(["ledger", "statement", "--db", str(ledger_path), "--account", "EM1"]) == 0
    out = capsys.readouterr().out
    assert "deposit 500000.00 CNY  (F-1)" in out and "closing cash 494809.40" in out   # 10,000 + 500,000 - 15,100 - 90.60
