"""The embedded SQLite ledger: the shared contract, plus durability settings and end to end."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest
from tests.unit.ledger_contract import OPENING, LedgerContract, instruction

from ccerx.benchmarks.durability import OPEN_TS, accounts_table, flow
from ccerx.engine.core.commands import EndOfDay
from ccerx.engine.durable.exchange import DurableExchange
from ccerx.engine.core.events import TradeExecuted
from ccerx.engine.ledger.sqlite import SqliteLedger
from ccerx.engine.core.types import format_fen
from ccerx.scripts.ccerx import main as ccerx


class TestSqliteLedger(LedgerContract):
    @pytest.fixture
    def ledger(self, tmp_path):
        ledger = SqliteLedger(tmp_path / "ledger.sqlite")
        yield ledger
        ledger.close()


def test_wal_full_sync_and_survives_reopen(tmp_path):
    ledger = SqliteLedger(tmp_path / "l.sqlite")
    assert ledger.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ledger.conn.execute("PRAGMA synchronous").fetchone()[0] == 2      # FULL
    ledger.open_accounts(OPENING)
    ledger.deliver([instruction(1)])
    ledger.close()
    again = SqliteLedger(tmp_path / "l.sqlite")
    assert again.applied_seq() == 1 and again.balance("BUY1", "CCER-AFF") == 100
    raw = sqlite3.connect(tmp_path / "l.sqlite")
    with pytest.raises(sqlite3.IntegrityError):
        raw.execute("INSERT INTO postings VALUES ('CCERX-T1', 9, 'CNY', 'BUY1', 'SELL1', 0)")
    raw.close()
    again.close()


def test_engine_to_ledger_end_to_end_with_end_of_day(tmp_path, capsys):
    commands = list(flow(3000, seed=21, n_accounts=30))
    ex = DurableExchange(tmp_path, accounts=accounts_table(30))
    trades = {}
    for i in range(0, 3000, 300):
        for events in ex.apply_many(commands[i:i + 300]):
            for e in events:
                if type(e) is TradeExecuted:
                    trades[e.trade_id] = e
    ex.apply(EndOfDay(OPEN_TS + 10 ** 13))
    assert ex.wait_settled(30)
    ledger = ex.ledger
    ledger.check()
    assert ledger.settlement_count() == len(trades) > 100
    for account in ex.accounts.by_id.values():
        assert ledger.balance(account.account, "CNY") == account.cash
        for symbol, qty in account.credits.items():
            assert ledger.balance(account.account, symbol) == qty
    # the end-of-day statement of one account agrees with the engine's trades and fees
    date = ledger.trade_dates()[-1]
    name = "A0007"
    st = ledger.statement(name, date)
    mine = [t for t in trades.values() if name in (t.buy_account, t.sell_account)]
    assert st["trade_count"] == len(mine)
    fees = sum(t.buy_fee if t.buy_account == name else t.sell_fee for t in mine)
    assert st["fees"] == format_fen(fees)
    assert st["closing"]["cash"] == format_fen(ex.accounts.get(name).cash)
    ex.close()
    # and the command line shows the same
    db = str(tmp_path / "ledger.sqlite")
    assert ccerx(["ledger", "check", "--db", db]) == 0
    assert ccerx(["ledger", "statement", "--db", db, "--account", name]) == 0
    out = capsys.readouterr().out
    assert f"== {name}" in out and f"fees {format_fen(fees)} CNY" in out
    assert ccerx(["ledger", "balances", "--db", db, "--account", name]) == 0
    assert format_fen(ex.accounts.get(name).cash) in capsys.readouterr().out
    assert ccerx(["ledger", "statement", "--db", db, "--date", "1999-01-01"]) == 1
    assert "no trades or deposits dated 1999-01-01" in capsys.readouterr().err


def test_end_of_day_writes_statements_from_the_ledger(tmp_path):
    commands = list(flow(1300, seed=23, n_accounts=10, day_length=600))   # EOD at 600, 1200
    ex = DurableExchange(tmp_path, accounts=accounts_table(10))
    ex.apply_many(commands[:700])
    assert ex.wait_settled(30)
    (path,) = (tmp_path / "statements").glob("*.json")
    doc = orjson.loads(path.read_bytes())
    date = doc["trade_date"]
    assert path.name == f"{date}.json"
    by_account = {st["account"]: st for st in doc["statements"]}
    upto = doc["upto_seq"]
    # asking again gives the same statements: the close covers instructions 1..upto
    assert by_account and by_account == {st["account"]: st for st in
                                         ex.ledger.close_statements(date, upto)}
    # the closing balances are those at the close, not after it: the flow's trades after the
    # EOD carry the same date, so they are in the date's statement but not the close's
    trades_after_close = ex.outbox.last_seq - upto
    assert trades_after_close > 0
    for name, st in by_account.items():
        assert st["instructions"] == [1, upto]
        by_date = ex.ledger.statement(name, date)
        assert st["opening"] == by_date["opening"]
        assert [t["trade_id"] for t in st["trades"]] == [
            t["trade_id"] for t in by_date["trades"] if int(t["settlement_id"][7:]) <= upto]
    replay = DurableExchange(tmp_path / "again", accounts=accounts_table(10))
    replay.apply_many(commands[:600])             # the day only, up to the close
    for name, st in by_account.items():
        account = replay.accounts.get(name)
        assert st["closing"]["cash"] == format_fen(account.cash)
        assert st["closing"]["credits"] == dict(sorted(account.credits.items()))
    replay.close()
    ex.close()
    # an end of day whose statements were not written before a crash is redone on recovery,
    # the same: the replay puts the close at its exact place in the instruction stream, not
    # at the end of the journal record that holds it (trades after the close share it)
    written = path.read_bytes()
    path.unlink()
    ex = DurableExchange(tmp_path, snapshot_every=10 ** 9)
    assert ex.wait_settled(30)
    assert path.read_bytes() == written
    # ... and the next close covers exactly what followed the first
    ex.apply_many(commands[700:1250])
    assert ex.wait_settled(30)
    spans = {}
    for doc in (orjson.loads(p.read_bytes()) for p in (tmp_path / "statements").glob("*.json")):
        spans[doc["upto_seq"]] = {tuple(st["instructions"]) for st in doc["statements"]}
    closes = sorted(spans)
    assert len(closes) == 2 and closes[0] == upto
    assert spans[upto] == {(1, upto)} and spans[closes[1]] == {(upto + 1, closes[1])}
    ex.close()


def test_a_close_before_a_snapshot_still_gets_its_statements_after_a_crash(tmp_path):
    """The statements of a close are written once the ledger confirmed up to it; a snapshot
    taken before that must carry the pending close, or recovery from it forgets the day."""
    commands = list(flow(1200, seed=23, n_accounts=10, day_length=600))   # EOD at 600
    ex = DurableExchange(tmp_path, accounts=accounts_table(10), start_relays=False,
                         snapshot_every=650)
    ex.apply_many(commands[:700])          # the close, then a snapshot; the ledger lags
    assert len(list(tmp_path.glob("snapshot-*.snap"))) == 2
    ex.close(settle_timeout=0)             # as a crash: the ledger confirmed nothing
    assert not (tmp_path / "statements").exists()
    ex = DurableExchange(tmp_path)
    assert ex.recovery.snapshot_seq > 600
    assert ex.wait_settled(30)
    [path] = (tmp_path / "statements").glob("*.json")
    doc = orjson.loads(path.read_bytes())
    assert doc["statements"] and all(st["instructions"] == [1, doc["upto_seq"]]
                                     for st in doc["statements"])
    ex.close()


def test_ledger_queries_refuse_files_that_are_not_ledgers_and_leave_them_alone(tmp_path):
    import subprocess
    import sys
    empty, garbage = tmp_path / "empty.db", tmp_path / "garbage.db"
    empty.write_bytes(b"")
    garbage.write_bytes(bytes(range(256)) * 8)
    for path, why in ((empty, "not a ccerx ledger"), (garbage, "not a SQLite database"),
                      (tmp_path / "missing.db", "no such ledger file")):
        for command in ("balances", "check", "statement"):
            done = subprocess.run([sys.executable, "-m", "ccerx.scripts.ccerx", "ledger", command,
                                   "--db", str(path)], capture_output=True, text=True,
                                  timeout=60, cwd=Path(__file__).resolve().parents[2])
            assert done.returncode == 2 and why in done.stderr, (command, done.stderr)
    assert empty.read_bytes() == b"" and not (tmp_path / "missing.db").exists()


class _SlowStatementsLedger(SqliteLedger):
    """A real SQLite ledger whose statement query takes a while (as on a loaded machine) and
    can be told to fail once, so the race between the relay thread and wait_settled() shows
    every time instead of now and then."""

    def __init__(self, path, delay: float, fail_first: bool = False):
        super().__init__(path)
        self.delay, self.fail_first = delay, fail_first

    def close_statements(self, trade_date, upto_seq):
        import time
        time.sleep(self.delay)
        if self.fail_first:
            self.fail_first = False
            raise OSError("disk full (injected)")
        return super().close_statements(trade_date, upto_seq)


def test_wait_settled_returns_only_after_the_statements_are_written(tmp_path):
    """wait_settled() promises the statements of every close before the confirmed point are
    on disk; the relay thread may be writing them at that moment: it must wait for it."""
    commands = list(flow(700, seed=23, n_accounts=10, day_length=600))   # EOD at 600
    ledger = _SlowStatementsLedger(tmp_path / "ledger.sqlite", delay=0.5)
    ex = DurableExchange(tmp_path, accounts=accounts_table(10), ledger=ledger)
    ex.apply_many(commands)
    assert ex.wait_settled(30)
    assert len(list((tmp_path / "statements").glob("*.json"))) == 1
    ex.close()


def test_a_failed_statement_write_is_retried_not_lost(tmp_path):
    commands = list(flow(700, seed=23, n_accounts=10, day_length=600))   # EOD at 600
    ledger = _SlowStatementsLedger(tmp_path / "ledger.sqlite", delay=0.0, fail_first=True)
    ex = DurableExchange(tmp_path, accounts=accounts_table(10), ledger=ledger)
    ex.apply_many(commands)
    assert ex.wait_settled(30)
    assert ledger.fail_first is False                      # the injected failure happened
    [path] = (tmp_path / "statements").glob("*.json")
    assert orjson.loads(path.read_bytes())["statements"]
    ex.close()
