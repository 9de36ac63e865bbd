"""What every SQL ledger must do (run against SQLite in unit/, PostgreSQL in integration/).

A subclass provides the `ledger` fixture: a fresh, empty ledger."""
from __future__ import annotations

import pytest

from ccerx.engine.ledger.base import LedgerRejected
from ccerx.engine.durable.settlement import DepositInstruction, SettlementInstruction
from ccerx.engine.core.types import format_fen

OPENING = [("BUY1", 10_000_000, {}), ("SELL1", 0, {"CCER-AFF": 1000}),
           ("BOTH", 5_000_000, {"CCER-AFF": 50, "CCER-SOL": 10})]


def instruction(seq, buyer="BUY1", seller="SELL1", qty=100, price_units=62_010_000, fee=3720,
                trade_date="2024-01-26", instrument="CCER-AFF", stream_seq=None):
    gross = price_units * qty // 10_000
    return SettlementInstruction(f"CCERX-T{seq}", seq, stream_seq or seq, seq, instrument, qty,
                                 price_units, gross, fee, fee, buyer, seller, "M1", "M2",
                                 trade_date, trade_date, 1_706_252_400_000_000_000 + seq)


def deposit(seq, account="SELL1", asset="CCER-MGV", amount=500, trade_date="2024-01-26"):
    return DepositInstruction(f"CCERX-D{seq}", seq, seq, f"ISS-{seq}", account, "M2", asset,
                              amount, trade_date, 1_706_252_400_000_000_000 + seq)


P1, P2 = "CCER-14-2024-0001", "CCER-14-2024-0002"


def lot_deposit(seq, account, project, vintage, amount, trade_date="2024-01-26"):
    from ccerx.engine.durable.settlement import LotDepositInstruction
    return LotDepositInstruction(*deposit(seq, account, f"{project}@{vintage}", amount,
                                          trade_date), "afforestation", project, vintage)


def lot_trade(seq, lots, delivery="now", **kw):
    from ccerx.engine.durable.settlement import LotTradeInstruction
    return LotTradeInstruction(*instruction(seq, qty=sum(q for _, _, q in lots), **kw),
                               delivery, lots)


def retirement(seq, account, holding, qty, certificate, retire_id=None, project=None,
               vintage=None):
    from ccerx.engine.durable.settlement import RetireInstruction
    return RetireInstruction(f"CCERX-R{seq}", seq, seq, retire_id or f"R-{seq}", account, "M1",
                             holding, qty, "年度清缴抵销", certificate,
                             "afforestation" if project else None, project, vintage,
                             "2024-01-26", 1_706_252_400_000_000_000 + seq)


class LedgerContract:
    def funded(self, ledger):
        assert ledger.open_accounts(OPENING) == 3
        return ledger

    def test_lots_settle_per_holding_and_retirements_are_recorded_once(self, ledger):
        self.funded(ledger)
        lots = ((None, None, 10), (P1, 2022, 30), (P2, 2023, 5))
        ledger.deliver([lot_deposit(1, "SELL1", P1, 2022, 30), lot_deposit(2, "SELL1", P2, 2023, 50),
                        lot_trade(3, lots),
                        retirement(4, "BUY1", f"{P1}@2022", 20, "CCERX-RC-00000001", "R-1",
                                   P1, 2022)])
        ledger.deliver([retirement(4, "BUY1", f"{P1}@2022", 20, "CCERX-RC-00000001", "R-1",
                                   P1, 2022)])                       # again: applied once
        ledger.check()
        assert ledger.balances("BUY1")["BUY1"] == {
            "CNY": 10_000_000 - 45 * 620_100 // 100 - 3720, "CCER-AFF": 10,
            f"{P1}@2022": 10, f"{P2}@2023": 5}
        assert ledger.balance("SELL1", "CCER-AFF") == 990
        assert ledger.balance("SELL1", f"{P2}@2023") == 45
        assert ledger.balance("@retired", f"{P1}@2022") == 20
        [r] = ledger.retirements()
        assert (r["certificate"], r["retire_id"], r["holding"], r["qty"], r["purpose"],
                r["project"], r["vintage"]) == ("CCERX-RC-00000001", "R-1", f"{P1}@2022", 20,
                                                "年度清缴抵销", P1, 2022)
        with pytest.raises(LedgerRejected, match="certificate"):   # the same certificate
            ledger.deliver([retirement(5, "BUY1", "CCER-AFF", 1, "CCERX-RC-00000001")])
        with pytest.raises(LedgerRejected, match="cannot pay"):    # more than held
            ledger.deliver([retirement(5, "BUY1", "CCER-AFF", 11, "CCERX-RC-00000002")])
        assert ledger.applied_seq() == 4 and len(ledger.retirements()) == 1
        st = ledger.statement("BUY1", "2024-01-26")
        assert st["trades"][0]["lots"][1] == {"project": P1, "vintage": 2022, "qty": 30}
        assert st["retired"] == {f"{P1}@2022": 20}
        assert [r["certificate"] for r in st["retirements"]] == ["CCERX-RC-00000001"]
        assert {h["holding"]: (h["project"], h["vintage"], h["qty"], h["retired"])
                for h in st["holdings"]} == {"CCER-AFF": (None, None, 10, 0),
                                             f"{P1}@2022": (P1, 2022, 10, 20),
                                             f"{P2}@2023": (P2, 2023, 5, 0)}

    def test_a_batch_delivers_lots_only_as_its_trades_delivered_them(self, ledger):
        from ccerx.engine.durable.settlement import InstructionMaker, SettlementConfig
        self.funded(ledger)
        ledger.deliver([lot_deposit(1, "SELL1", P1, 2022, 30)])
        maker = InstructionMaker(SettlementConfig(), 2, batch_clearing=True)
        trade = lot_trade(2, ((None, None, 10), (P1, 2022, 30)), "batch")
        maker._number(trade.instrument)
        maker._clear_later(trade)
        batch = maker.make_batch(trade.ts)
        ledger.deliver([trade])
        st = ledger.statement("BUY1", "2024-01-26")
        assert {h["holding"]: (h["qty"], h["pending_in"]) for h in st["holdings"]} == {
            "CCER-AFF": (0, 10), f"{P1}@2022": (0, 30)}
        wrong = batch._replace(deliveries=[[trade.id, "CCER-AFF", [[None, None, 40]]]])
        with pytest.raises(LedgerRejected, match="not confirmed"):
            ledger.deliver([wrong])
        assert ledger.balance("BUY1", f"{P1}@2022") == 0
        ledger.deliver([batch])
        ledger.check()
        assert ledger.balance("BUY1", f"{P1}@2022") == 30 and ledger.balance("BUY1",
                                                                             "CCER-AFF") == 10
        st = ledger.statement("BUY1", "2024-01-26")
        assert {h["holding"]: (h["qty"], h["pending_in"]) for h in st["holdings"]} == {
            "CCER-AFF": (10, 0), f"{P1}@2022": (30, 0)}

    def test_day_end_clearing_pending_then_one_batch_delivers_and_disputes(self, ledger):
        from ccerx.engine.durable.settlement import (BatchTradeInstruction, InstructionMaker,
                                                     SettlementConfig)
        self.funded(ledger)
        maker = InstructionMaker(SettlementConfig(), batch_clearing=True)
        trades = [BatchTradeInstruction(*instruction(1), "batch"),
                  BatchTradeInstruction(*instruction(2, buyer="BOTH", qty=10), "batch")]
        for t in trades:
            maker._number(t.instrument)
            maker._clear_later(t)
        batch = maker.make_batch(trades[-1].ts)
        assert batch.seq == 3 and batch.trades == 2
        ledger.deliver(trades)
        assert ledger.balance("SELL1", "CCER-AFF") == 1000 and ledger.balance("BUY1", "CCER-AFF") == 0
        assert ledger.record_dispute(1, "数量", 5)["delivery"] == "pending"
        ledger.deliver([batch])
        ledger.deliver([batch])                     # confirmed once, by its id
        ledger.check()
        assert ledger.balance("SELL1", "CCER-AFF") == 890 and ledger.balance("BOTH", "CCER-AFF") == 60
        st = ledger.statement("SELL1", "2024-01-26")
        assert [(t["delivery"], t["batch_id"], t.get("disputed")) for t in st["trades"]] == [
            ("delivered", batch.id, "数量"), ("delivered", batch.id, None)]
        assert st["clearing"] == [{"batch_id": batch.id, "trades": 2, "delivered": 2,
                                   "pending": 0}]

    def test_opening_balances_once(self, ledger):
        self.funded(ledger)
        assert ledger.open_accounts(OPENING) == 0
        assert ledger.balances("BOTH") == {"BOTH": {"CNY": 5_000_000, "CCER-AFF": 50,
                                                    "CCER-SOL": 10}}
        assert ledger.balance("@bank", "CNY") == -15_000_000
        ledger.check()

    def test_check_finds_tampered_balances(self, ledger):
        self.funded(ledger)
        ledger.deliver([instruction(1)])
        assert ledger.problems() == []
        with ledger._tx():   # tamper behind the ledger's back: one side of a transfer only
            ledger._execute(ledger.q("UPDATE {p}accounts SET balance = balance + 7 "
                                     "WHERE owner = ? AND asset = ?"), ("SELL1", "CNY"))
        problems = ledger.problems()
        assert any(p.startswith("SELL1/CNY: balance") for p in problems), problems
        assert any(p.startswith("CNY: balances sum to 7") for p in problems), problems
        with pytest.raises(AssertionError, match="SELL1/CNY"):
            ledger.check()

    def test_deposits_share_the_stream_with_trades_and_post_once(self, ledger):
        self.funded(ledger)
        batch = [deposit(1), instruction(2), deposit(3, "BUY1", "CNY", 123_456)]
        ledger.deliver(batch)
        ledger.deliver(batch)                       # delivered twice: applied once
        assert ledger.applied_seq() == 3
        assert ledger.balance("SELL1", "CCER-MGV") == 500
        assert ledger.balance("@registry", "CCER-MGV") == -500
        assert ledger.balance("BUY1", "CNY") == 10_000_000 - 620_100 - 3720 + 123_456
        assert ledger.balance("@bank", "CNY") == -15_000_000 - 123_456
        assert ledger.settlement_count() == 1       # trades only
        ledger.check()
        statement = ledger.statement("BUY1", "2024-01-26")
        assert statement["deposits"] == [{"settlement_id": "CCERX-D3", "deposit_id": "ISS-3",
                                          "asset": "CNY", "amount": "1234.56"}]
        assert statement["closing"]["cash"] == "94996.36"   # 9,499,636 fen
        with pytest.raises(LedgerRejected, match="gap"):
            ledger.deliver([deposit(5)])
        with pytest.raises(LedgerRejected):          # same id, other content
            ledger.deliver([deposit(3, "BUY1", "CNY", 1)])
        assert ledger.balance("BUY1", "CNY") == 10_000_000 - 620_100 - 3720 + 123_456

    def test_close_statements_cover_everything_since_the_previous_close(self, ledger):
        self.funded(ledger)
        ledger.deliver([deposit(1, trade_date="2024-01-26"),
                        instruction(2, trade_date="2024-01-26")])
        friday = {st["account"]: st for st in ledger.close_statements("2024-01-26", 2)}
        # after Friday's close: a deposit the same evening, one on Saturday, Monday's trade
        ledger.deliver([deposit(3, "BUY1", "CNY", 500, trade_date="2024-01-26"),
                        deposit(4, "SELL1", "CCER-AFF", 7, trade_date="2024-01-27"),
                        instruction(5, trade_date="2024-01-29")])
        monday = {st["account"]: st for st in ledger.close_statements("2024-01-29", 5)}
        assert sorted(friday) == ["BUY1", "SELL1"] and sorted(monday) == ["BUY1", "SELL1"]
        assert [d["deposit_id"] for d in friday["SELL1"]["deposits"]] == ["ISS-1"]
        assert [d["deposit_id"] for d in monday["BUY1"]["deposits"]] == ["ISS-3"]
        assert [d["deposit_id"] for d in monday["SELL1"]["deposits"]] == ["ISS-4"]
        assert [t["trade_id"] for t in monday["BUY1"]["trades"]] == [5]
        for name in ("BUY1", "SELL1"):
            assert monday[name]["opening"] == friday[name]["closing"]     # nothing falls between
            assert monday[name]["instructions"] == [3, 5]
        assert friday["SELL1"]["closing"]["credits"] == {"CCER-AFF": 900, "CCER-MGV": 500}
        assert monday["SELL1"]["closing"]["credits"] == {"CCER-AFF": 807, "CCER-MGV": 500}
        assert monday["BUY1"]["closing"]["cash"] == format_fen(
            10_000_000 - 2 * (620_100 + 3720) + 500)
        # asked again (a recovery redoing a close): the same statements
        assert {st["account"]: st for st in ledger.close_statements("2024-01-26", 2)} == friday
        assert {st["account"]: st for st in ledger.close_statements("2024-01-29", 5)} == monday

    def test_settlement_posts_balanced_transfers(self, ledger):
        self.funded(ledger)
        ledger.deliver([instruction(1)])
        assert ledger.balance("BUY1", "CNY") == 10_000_000 - 620_100 - 3720
        assert ledger.balance("SELL1", "CNY") == 620_100 - 3720
        assert ledger.balance("@fees", "CNY") == 7440
        assert ledger.balance("BUY1", "CCER-AFF") == 100
        assert ledger.balance("SELL1", "CCER-AFF") == 900
        assert ledger.applied_seq() == 1 and ledger.settlement_count() == 1
        ledger.check()

    def test_delivering_twice_changes_nothing(self, ledger):
        self.funded(ledger)
        batch = [instruction(1), instruction(2, qty=50)]
        ledger.deliver(batch)
        before = ledger.balances()
        ledger.deliver(batch)
        ledger.deliver(batch[1:])
        assert ledger.balances() == before and ledger.settlement_count() == 2
        ledger.check()

    def test_same_id_other_content_is_refused(self, ledger):
        self.funded(ledger)
        ledger.deliver([instruction(1)])
        with pytest.raises(LedgerRejected, match="other content"):
            ledger.deliver([instruction(1, qty=99)])
        ledger.check()

    def test_gap_is_refused(self, ledger):
        self.funded(ledger)
        ledger.deliver([instruction(1)])
        with pytest.raises(LedgerRejected, match="gap"):
            ledger.deliver([instruction(3)])
        assert ledger.applied_seq() == 1

    def test_overdraft_rolls_back_the_whole_batch(self, ledger):
        self.funded(ledger)
        before = ledger.balances()
        too_many = instruction(2, qty=10_000)          # seller holds only 1000 t
        with pytest.raises(LedgerRejected, match="cannot pay"):
            ledger.deliver([instruction(1), too_many])
        assert ledger.balances() == before and ledger.settlement_count() == 0
        poor = instruction(1, buyer="BOTH", seller="SELL1", qty=900)   # needs 55,809 CNY
        with pytest.raises(LedgerRejected):
            ledger.deliver([poor])
        assert ledger.balances() == before
        ledger.check()

    def test_negative_balance_is_impossible_even_in_raw_sql(self, ledger):
        self.funded(ledger)
        with pytest.raises(Exception) as err:
            with ledger._tx():
                ledger._execute(ledger.q("UPDATE {p}accounts SET balance = -1 "
                                         "WHERE owner = ? AND asset = ?"), ("BUY1", "CNY"))
        assert "check" in str(err.value).lower() or "constraint" in str(err.value).lower()
        assert ledger.balance("BUY1", "CNY") == 10_000_000

    def test_end_of_day_statement(self, ledger):
        self.funded(ledger)
        ledger.deliver([instruction(1), instruction(2, qty=10, price_units=62_000_000, fee=37),
                        instruction(3, buyer="BOTH", qty=5, trade_date="2024-01-29")])
        st = ledger.statement("BUY1", "2024-01-26")
        assert st["trade_count"] == 2 and st["fees"] == "37.57"
        assert [t["side"] for t in st["trades"]] == ["buy", "buy"]
        assert st["trades"][0]["price"] == "62.01" and st["trades"][0]["gross"] == "6201.00"
        assert st["opening"] == {"cash": "100000.00", "credits": {}}
        assert st["closing"]["credits"] == {"CCER-AFF": 110}
        assert st["closing"]["cash"] == "93141.43"       # 100000 - 6201 - 37.20 - 620 - 0.37
        seller = ledger.statement("SELL1", "2024-01-29")
        assert seller["trade_count"] == 1 and seller["trades"][0]["counterparty"] == "BOTH"
        assert seller["opening"]["credits"] == {"CCER-AFF": 890}
        assert ledger.accounts_with_activity("2024-01-26") == ["BUY1", "SELL1"]
        assert ledger.trade_dates() == ["2024-01-26", "2024-01-29"]
