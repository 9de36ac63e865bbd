"""Credits as lots in settlement and the ledgers (issue 11 items 1, 2, 7, 8): trade
instructions carry the lots a trade delivered, deposits their lot, retirements become
instructions with their certificate; the ledger holds positions per holding key (lot), records
retirements once, and reconciles with the engine per lot to the tonne. Pooled flows keep
exactly the instructions (rows and JSON) they had."""
from __future__ import annotations

import orjson
import pytest

from ccerx.engine.core.commands import Deposit, EndOfDay, NewOrder, Retire
from ccerx.engine.core.events import Deposited, Retired, TradeExecuted
from ccerx.engine.core.lots import lot_key
from ccerx.engine.core.risk import Account, Accounts
from ccerx.engine.core.rules import CBEEX_2023, CONTINUOUS
from ccerx.engine.core.types import DEFAULT_INSTRUMENTS, ParticipantType
from ccerx.engine.durable.exchange import DurableExchange
from ccerx.engine.durable.settlement import (BatchTradeInstruction, ClearingBatch,
                                             DepositInstruction, InstructionMaker,
                                             LotClearingBatch, LotDepositInstruction,
                                             LotTradeInstruction, RetireInstruction,
                                             SettlementConfig, SettlementInstruction,
                                             instruction_from_json, instruction_from_row,
                                             trade_holdings)
from ccerx.engine.ledger.base import LedgerRejected
from ccerx.engine.ledger.sqlite import SqliteLedger
from ccerx.scripts.ccerx import main as ccerx

TS = 1_796_281_200_000_000_000      # 2026-12-03 15:00 Beijing, a Thursday
P1, P2 = "CCER-14-2024-0001", "CCER-14-2024-0002"
PRICE = 62_000_000
SPECS = {s.symbol: s for s in DEFAULT_INSTRUMENTS}
PURPOSE = "2026年度清缴抵销 (CEA offset)"


def table() -> Accounts:
    return Accounts([Account("HOLD", ParticipantType.PROJECT_OWNER, "M1", 0,
                             credits={"CCER-AFF": 5}),
                     Account("EMIT", ParticipantType.KEY_EMISSION_UNIT, "M2", 10_000_000),
                     Account("EMIT2", ParticipantType.KEY_EMISSION_UNIT, "M2", 10_000_000)])


def roundtrips(inst) -> None:
    """Exact through the journal row and through the edge JSON."""
    row = orjson.loads(orjson.dumps(tuple(inst)))
    assert instruction_from_row(row) == inst
    assert type(instruction_from_row(row)) is type(inst)
    edge = orjson.loads(inst.encode())
    assert instruction_from_json(edge) == inst and type(instruction_from_json(edge)) is type(inst)


def trade(lots=(), trade_id=1, qty=60):
    return TradeExecuted(10, TS, trade_id, "CCER-AFF", 6200, qty, "b1", "s1", "buy", "EMIT",
                         "HOLD", 100, 100, 0, 0, lots)


def test_a_trade_instruction_carries_its_lots_and_a_pooled_one_is_unchanged():
    accounts = table()
    maker = InstructionMaker(SettlementConfig())
    pooled = maker.make(trade(), SPECS["CCER-AFF"], accounts)
    assert type(pooled) is SettlementInstruction and len(tuple(pooled)) == 17
    assert "lots" not in pooled.to_json() and pooled.lots == () and pooled.delivery == "now"
    assert trade_holdings(pooled) == [("CCER-AFF", 60)]
    lots = ((None, None, 5), (P1, 2022, 30), (P2, 2023, 25))
    inst = maker.make(trade(lots, trade_id=2), SPECS["CCER-AFF"], accounts)
    assert type(inst) is LotTradeInstruction and inst.lots == lots
    assert inst.to_json()["lots"] == [{"project": None, "vintage": None, "qty": 5},
                                      {"project": P1, "vintage": 2022, "qty": 30},
                                      {"project": P2, "vintage": 2023, "qty": 25}]
    assert "delivery" not in inst.to_json()
    assert trade_holdings(inst) == [("CCER-AFF", 5), (lot_key(P1, 2022), 30),
                                    (lot_key(P2, 2023), 25)]
    roundtrips(pooled)
    roundtrips(inst)
    # lots that do not add up to the trade's quantity, or are malformed, are refused
    edge = inst.to_json()
    for bad in ([{"project": P1, "vintage": 2022, "qty": 59}],
                [{"project": P1, "vintage": 2022, "qty": 30}, {"project": P1, "vintage": "2022",
                                                               "qty": 30}],
                [{"project": P1, "vintage": None, "qty": 60}],
                [{"project": P1, "vintage": 2022, "qty": 60.0}], "P1"):
        with pytest.raises(ValueError):
            instruction_from_json({**edge, "lots": bad})


def test_batch_trades_with_lots_and_the_batch_lists_each_trades_lots_and_totals_per_lot():
    accounts = table()
    maker = InstructionMaker(SettlementConfig(), batch_clearing=True)
    pooled = maker.make(trade(trade_id=1, qty=5), SPECS["CCER-AFF"], accounts)
    assert type(pooled) is BatchTradeInstruction
    lots = ((P1, 2022, 30), (P2, 2023, 30))
    inst = maker.make(trade(lots, trade_id=2), SPECS["CCER-AFF"], accounts)
    assert type(inst) is LotTradeInstruction and inst.delivery == "batch"
    assert inst.to_json()["delivery"] == "batch"
    roundtrips(inst)
    state = orjson.loads(orjson.dumps(maker.state()))      # a snapshot in between
    again = InstructionMaker(SettlementConfig(), maker.next_seq, maker.stream_seqs,
                             batch_clearing=True, clearing=state["clearing"])
    batch = maker.make_batch(TS + 10)
    assert again.make_batch(TS + 10) == batch
    assert type(batch) is LotClearingBatch and batch.trades == 2
    assert batch.lots == {"CCER-AFF": 5, lot_key(P1, 2022): 30, lot_key(P2, 2023): 30}
    assert batch.deliveries == [[inst.id, "CCER-AFF", [[P1, 2022, 30], [P2, 2023, 30]]]]
    edge = batch.to_json()
    assert edge["deliveries"] == [{"id": inst.id, "instrument": "CCER-AFF",
                                   "lots": [{"project": P1, "vintage": 2022, "qty": 30},
                                            {"project": P2, "vintage": 2023, "qty": 30}]}]
    assert edge["lots"] == {"CCER-AFF": 5, lot_key(P1, 2022): 30, lot_key(P2, 2023): 30}
    roundtrips(batch)
    # a batch of pooled trades only is the batch it always was
    pooled_batch = InstructionMaker(SettlementConfig(), batch_clearing=True)
    pooled_batch.make(trade(), SPECS["CCER-AFF"], accounts)
    plain = pooled_batch.make_batch(TS + 10)
    assert type(plain) is ClearingBatch and "lots" not in plain.to_json()
    assert "lots" not in orjson.dumps(pooled_batch.state()).decode()


def test_a_lot_deposit_and_a_retirement_become_instructions():
    accounts = table()
    maker = InstructionMaker(SettlementConfig())
    cash = maker.make_deposit(Deposited(3, TS, "F-1", "EMIT", "CNY", 500), accounts)
    assert type(cash) is DepositInstruction and len(tuple(cash)) == 10
    lot = maker.make_deposit(Deposited(4, TS, "ISS-7", "HOLD", lot_key(P1, 2023), 50_000,
                                       "afforestation", P1, 2023), accounts)
    assert type(lot) is LotDepositInstruction and lot.asset == lot_key(P1, 2023)
    assert {k: lot.to_json()[k] for k in ("credit_type", "project", "vintage", "amount")} == {
        "credit_type": "afforestation", "project": P1, "vintage": 2023, "amount": 50_000}
    retired = maker.make_retirement(Retired(5, TS, "R-1", "HOLD", lot_key(P1, 2023), 40, PURPOSE,
                                            "CCERX-RC-00000001", "afforestation", P1, 2023),
                                    accounts)
    assert type(retired) is RetireInstruction and retired.instrument == "RETIRE"
    assert retired.id == "CCERX-R5" and retired.member == "M1"
    assert retired.to_json()["purpose"] == PURPOSE
    assert retired.to_json()["certificate"] == "CCERX-RC-00000001"
    for inst in (cash, lot, retired):
        roundtrips(inst)
    with pytest.raises(ValueError):
        instruction_from_json({**retired.to_json(), "qty": 0})
    with pytest.raises(ValueError):
        instruction_from_json({**retired.to_json(), "certificate": ""})


# ------------------------------------------------------------------ engine -> ledger
def lot_day(ex) -> list:
    """Lots in, a contract trade that delivers two of them (and the default lot), the close,
    a retirement with a Chinese purpose."""
    events = []
    for command in (
            Deposit("ISS-1", "HOLD", None, 30, TS, None, "afforestation", P1, 2022),
            Deposit("ISS-2", "HOLD", None, 50, TS + 1, None, "afforestation", P2, 2023),
            NewOrder("s1", "HOLD", "CCER-AFF", "sell", "limit", "day", PRICE, 60, TS + 2),
            NewOrder("b1", "EMIT", "CCER-AFF", "buy", "limit", "day", PRICE, 60, TS + 3),
            EndOfDay(TS + 3_600_000_000_000),
            Retire("R-1", "EMIT", P1, 2022, 20, PURPOSE, None, TS + 7_200_000_000_000)):
        events += ex.apply(command)
    return events


@pytest.mark.parametrize("rules", [CONTINUOUS, CBEEX_2023], ids=lambda r: r.name)
def test_a_contract_trade_of_two_lots_and_a_retirement_reconcile_per_lot(tmp_path, rules):
    ex = DurableExchange(tmp_path / "d", accounts=table(), rules=rules)
    try:
        events = lot_day(ex)
        [t] = [e for e in events if type(e) is TradeExecuted]
        assert t.lots == ((None, None, 5), (P1, 2022, 30), (P2, 2023, 25))
        [r] = [e for e in events if type(e) is Retired]
        assert ex.wait_settled(10)
        ledger = ex.ledger
        assert ledger.reconcile(ex.accounts) == []
        assert ledger.balances("EMIT")["EMIT"] == {
            "CNY": ex.accounts.get("EMIT").cash, "CCER-AFF": 5, lot_key(P1, 2022): 10,
            lot_key(P2, 2023): 25}
        assert ledger.balance("HOLD", lot_key(P2, 2023)) == 25
        assert ledger.retirements("EMIT") == [{
            "certificate": r.certificate, "retire_id": "R-1", "settlement_id": f"CCERX-R{r.seq}",
            "account": "EMIT", "holding": lot_key(P1, 2022), "credit_type": "afforestation",
            "project": P1, "vintage": 2022, "qty": 20, "purpose": PURPOSE,
            "trade_date": "2026-12-03"}]
        # the same instructions again (a relay that lost its cursor): nothing changes
        before = ledger.balances()
        bodies = ledger._execute("SELECT body FROM settlements WHERE seq IS NOT NULL "
                                 "ORDER BY seq").fetchall()
        ledger.deliver([instruction_from_json(orjson.loads(b[0])) for b in bodies])
        assert ledger.balances() == before and len(ledger.retirements()) == 1
        statement = ledger.statement("EMIT", "2026-12-03")
        assert statement["closing"]["credits"] == {"CCER-AFF": 5, lot_key(P1, 2022): 10,
                                                   lot_key(P2, 2023): 25}
        assert statement["retirements"][0]["certificate"] == r.certificate
        assert statement["retired"] == {lot_key(P1, 2022): 20}
        [bought] = statement["trades"]
        assert bought["lots"] == [{"project": None, "vintage": None, "qty": 5},
                                  {"project": P1, "vintage": 2022, "qty": 30},
                                  {"project": P2, "vintage": 2023, "qty": 25}]
        holdings = {h["holding"]: h for h in statement["holdings"]}
        assert holdings[lot_key(P1, 2022)] == {
            "holding": lot_key(P1, 2022), "credit_type": "afforestation", "project": P1,
            "vintage": 2022, "qty": 10, "pending_in": 0, "pending_out": 0, "retired": 20}
        assert holdings["CCER-AFF"]["project"] is None
        if rules is CBEEX_2023:
            assert bought["delivery"] == "delivered"
        hash_before = ex.state_hash()
    finally:
        ex.close()
    # recovery: the same state, the same ledger, still reconciled
    again_ex = DurableExchange(tmp_path / "d", accounts=table(), rules=rules)
    try:
        assert again_ex.state_hash() == hash_before
        assert again_ex.wait_settled(10)
        assert again_ex.ledger.reconcile(again_ex.accounts) == []
        assert len(again_ex.ledger.retirements()) == 1
    finally:
        again_ex.close()


def test_under_cbeex_the_lots_are_pending_until_the_batch_and_reconcile_meanwhile(tmp_path):
    ex = DurableExchange(tmp_path / "d", accounts=table(), rules=CBEEX_2023)
    try:
        for command in (
                Deposit("ISS-1", "HOLD", None, 30, TS, None, "afforestation", P1, 2022),
                Deposit("ISS-2", "HOLD", None, 50, TS + 1, None, "afforestation", P2, 2023),
                NewOrder("s1", "HOLD", "CCER-AFF", "sell", "limit", "day", PRICE, 60, TS + 2),
                NewOrder("b1", "EMIT", "CCER-AFF", "buy", "limit", "day", PRICE, 60, TS + 3)):
            ex.apply(command)
        assert ex.wait_settled(10)
        ledger = ex.ledger
        assert ledger.balance("EMIT", lot_key(P1, 2022)) == 0       # nothing delivered yet
        assert ledger.reconcile(ex.accounts) == []                 # ... but pending
        st = ledger.statement("EMIT", "2026-12-03")
        holdings = {h["holding"]: h for h in st["holdings"]}
        assert holdings[lot_key(P1, 2022)]["pending_in"] == 30
        assert holdings[lot_key(P1, 2022)]["qty"] == 0
        seller = {h["holding"]: h for h in ledger.statement("HOLD", "2026-12-03")["holdings"]}
        assert seller[lot_key(P2, 2023)] == {
            "holding": lot_key(P2, 2023), "credit_type": "afforestation", "project": P2,
            "vintage": 2023, "qty": 50, "pending_in": 0, "pending_out": 25, "retired": 0}
        ex.apply(EndOfDay(TS + 3_600_000_000_000))
        assert ex.wait_settled(10)
        assert ledger.balance("EMIT", lot_key(P1, 2022)) == 30
        assert ledger.reconcile(ex.accounts) == []
        [close] = [orjson.loads(p.read_bytes())
                   for p in (tmp_path / "d" / "statements").iterdir()]
        emit = {s["account"]: s for s in close["statements"]}["EMIT"]
        assert {h["holding"]: h["qty"] for h in emit["holdings"]} == {
            "CCER-AFF": 5, lot_key(P1, 2022): 30, lot_key(P2, 2023): 25}
    finally:
        ex.close()


def test_reconcile_finds_a_lot_that_differs_by_one_tonne(tmp_path):
    ex = DurableExchange(tmp_path / "d", accounts=table(), rules=CONTINUOUS)
    try:
        lot_day(ex)
        assert ex.wait_settled(10)
        ledger = ex.ledger
        with ledger._tx():     # move one tonne between two lots behind the ledger's back
            ledger._execute("UPDATE accounts SET balance = balance - 1 WHERE owner = 'EMIT' "
                            "AND asset = ?", (lot_key(P2, 2023),))
            ledger._execute("UPDATE accounts SET balance = balance + 1 WHERE owner = 'EMIT' "
                            "AND asset = ?", (lot_key(P1, 2022),))
        problems = ledger.reconcile(ex.accounts)
        assert any(lot_key(P2, 2023) in p and "EMIT" in p for p in problems), problems
    finally:
        ex.close()


def test_a_retirement_certificate_is_recorded_once(tmp_path):
    ledger = SqliteLedger(tmp_path / "l.sqlite")
    try:
        ledger.open_accounts([("HOLD", 0, {"CCER-AFF": 100})])
        maker = InstructionMaker(SettlementConfig())
        first = maker.make_retirement(Retired(1, TS, "R-1", "HOLD", "CCER-AFF", 40, PURPOSE,
                                              "CCERX-RC-00000001"), Accounts([]))
        ledger.deliver([first])
        ledger.deliver([first])
        assert ledger.balance("HOLD", "CCER-AFF") == 60 and ledger.balance("@retired",
                                                                           "CCER-AFF") == 40
        ledger.check()
        # another instruction with the same certificate: refused, nothing moves
        other = maker.make_retirement(Retired(2, TS, "R-2", "HOLD", "CCER-AFF", 1, "x",
                                              "CCERX-RC-00000001"), Accounts([]))
        with pytest.raises(LedgerRejected, match="certificate"):
            ledger.deliver([other])
        assert ledger.balance("HOLD", "CCER-AFF") == 60 and len(ledger.retirements()) == 1
        too_much = maker.make_retirement(Retired(3, TS, "R-3", "HOLD", "CCER-AFF", 61, "x",
                                                 "CCERX-RC-00000003"), Accounts([]))
        with pytest.raises(LedgerRejected, match="cannot pay"):
            ledger.deliver([other._replace(seq=2, certificate="CCERX-RC-00000002"), too_much])
        assert ledger.balance("HOLD", "CCER-AFF") == 60 and ledger.applied_seq() == 1
    finally:
        ledger.close()


def test_ledger_statement_and_reconcile_commands_show_lots_and_retirements(tmp_path, capsys):
    data = tmp_path / "d"
    ex = DurableExchange(data, accounts=table(), rules=CONTINUOUS)
    try:
        lot_day(ex)
        assert ex.wait_settled(10)
    finally:
        ex.close()
    db = str(data / "ledger.sqlite")
    capsys.readouterr()
    assert ccerx(["ledger", "statement", "--db", db, "--date", "2026-12-03",
                  "--account", "EMIT"]) == 0
    out = capsys.readouterr().out
    assert f"{P1} 2022" in out and "CCERX-RC-00000001" in out and PURPOSE in out
    assert f"{P1}@2022 30" in out or f"{P1} 2022  30" in out   # the trade's lots
    assert ccerx(["ledger", "reconcile", "--db", db, "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "reconciled" in out and f"{P1}@2022" in out
    # tamper: reconcile says which lot differs, exit 1
    ledger = SqliteLedger(db)
    with ledger._tx():
        ledger._execute("UPDATE accounts SET balance = balance - 1 WHERE owner = 'EMIT' AND "
                        "asset = ?", (lot_key(P2, 2023),))
        ledger._execute("UPDATE accounts SET balance = balance + 1 WHERE owner = 'EMIT' AND "
                        "asset = ?", (lot_key(P1, 2022),))
    ledger.close()
    assert ccerx(["ledger", "reconcile", "--db", db, "--data", str(data)]) == 1
    err = capsys.readouterr()
    assert lot_key(P2, 2023) in err.out + err.err


def test_a_malformed_batch_or_lot_instruction_is_a_clear_value_error():
    """What a consumer reads off the wire: anything malformed is a ValueError (it counts it
    as malformed and goes on), never a KeyError or TypeError from deep inside."""
    accounts = table()
    maker = InstructionMaker(SettlementConfig(), batch_clearing=True)
    maker.make(trade(((P1, 2022, 30), (P2, 2023, 30))), SPECS["CCER-AFF"], accounts)
    edge = maker.make_batch(TS + 10).to_json()
    for bad in ({**edge, "participants": {"EMIT": {}}},
                {**edge, "participants": {"EMIT": {**edge["participants"]["EMIT"],
                                                   "trades": None}}},
                {**edge, "totals": {"gross": "1.00", "fees": "0.00"}},
                {**edge, "totals": {**edge["totals"], "qty": None}},
                {**edge, "deliveries": [{"id": [], "instrument": [], "lots": []}]},
                {**edge, "deliveries": [{"id": "x", "instrument": "CCER-AFF", "lots": [
                    {"project": P1, "vintage": 2022, "qty": 1}]}], "lots": {"CCER-AFF": 60}}):
        with pytest.raises(ValueError):
            instruction_from_json(orjson.loads(orjson.dumps(bad)))


def test_reconcile_says_when_the_ledger_has_not_got_everything_yet(tmp_path, capsys):
    data = tmp_path / "d"
    ex = DurableExchange(data, accounts=table(), rules=CONTINUOUS, start_relays=False)
    lot_day(ex)
    ex.close(settle_timeout=0)            # nothing reached the ledger
    capsys.readouterr()
    assert ccerx(["ledger", "reconcile", "--db", str(data / "ledger.sqlite"),
                  "--data", str(data)]) == 1
    err = capsys.readouterr().err
    assert "applied instruction 0 of the journal's 4" in err and "NOT reconciled" in err
