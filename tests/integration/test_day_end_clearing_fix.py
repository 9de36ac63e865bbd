"""A cbeex-2023 day over FIX (the `ccerx serve` default): trades reach the SQLite ledger
pending, `ccerx operator eod` closes the day, one clearing batch delivers them, and the
statements show it per participant (Art.27-28, 32)."""
from __future__ import annotations

import subprocess
import sys
import time

import orjson

from ccerx.engine.durable.settlement import trade_date
from ccerx.engine.ledger.sqlite import SqliteLedger
from ccerx.gateway.control import operator_request_sync
from tests.fixclient import Broker, s


def ccerx(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ccerx.scripts.ccerx", *args],
                          capture_output=True, text=True, timeout=60)


def _logged_on(comp_id: str, password: str, port: int) -> Broker:
    broker = Broker(comp_id, port)
    broker.logon(password, reset=True)
    broker.expect("h")
    return broker


def _wait(predicate, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_day_over_fix_clears_as_one_batch_after_the_close(tmp_path, start_serve):
    data = tmp_path / "data"
    server = start_serve("--data-dir", str(data))
    assert "rules cbeex-2023" in server.start_line
    date = trade_date(time.time_ns())
    b1 = _logged_on("BROKER01", "demo01", server.port)
    b2 = _logged_on("BROKER02", "demo02", server.port)
    try:
        b2.new_order("s1", "HOLD02", "2", 100, "62.00")
        b2.reports(1)
        b1.new_order("b1", "EMIT01", "1", 60, "62.00")
        b1.new_order("b2", "EMIT01", "1", 40, "62.00")
        assert [s(m, 150) for m in b1.reports(4)].count("F") == 2
    finally:
        b1.close()
        b2.close()
    ledger = SqliteLedger(data / "ledger.sqlite")
    try:
        _wait(lambda: ledger.applied_seq() >= 2, "the trades in the ledger")
        opening_emit = ledger.balances("EMIT01")
        assert ledger.settlement_count() == 2
        statement = ledger.statement("HOLD02", date)
        assert [t["delivery"] for t in statement["trades"]] == ["pending", "pending"]
        assert statement["closing"] == statement["opening"]          # nothing moved yet

        closed = ccerx("operator", "--control", str(server.control), "eod")
        assert closed.returncode == 0, closed.stderr
        _wait(lambda: ledger.applied_seq() >= 3, "the clearing batch")
        [(batch_id, body)] = ledger._execute(
            "SELECT id, body FROM settlements WHERE kind = 'clearing'").fetchall()
        assert batch_id == f"CCERX-C{date.replace('-', '')}-1"
        batch = orjson.loads(body)
        assert batch["trades"] == 2 and batch["totals"]["gross"] == "6200.00"
        assert set(batch["participants"]) == {"EMIT01", "HOLD02"}
        assert batch["participants"]["HOLD02"]["sold"] == {"CCER-AFF": 100}
        ledger.check()
        emit = ledger.balances("EMIT01")["EMIT01"]
        assert emit["CCER-AFF"] == opening_emit["EMIT01"].get("CCER-AFF", 0) + 100
    finally:
        ledger.close()
    _wait(lambda: list((data / "statements").glob("*.json")), "the close's statements")
    [path] = (data / "statements").glob("*.json")
    statements = {st["account"]: st for st in orjson.loads(path.read_bytes())["statements"]}
    assert {"EMIT01", "HOLD02"} <= set(statements)
    for account in ("EMIT01", "HOLD02"):
        assert statements[account]["clearing"] == [
            {"batch_id": batch_id, "trades": 2, "delivered": 2, "pending": 0}]
    printed = ccerx("ledger", "statement", "--db", str(data / "ledger.sqlite"), "--date", date,
                    "--account", "HOLD02")
    assert printed.returncode == 0, printed.stderr
    assert f"clearing batch {batch_id}: 2 trades delivered" in printed.stdout
    assert printed.stdout.count("delivered") >= 3                 # the two trades' rows too

    # Art.32: the operator disputes a trade before the next trading day: a recorded flag
    [first, second] = [t["trade_id"] for t in statements["HOLD02"]["trades"]]
    note = "价格录入有误 (price keyed wrongly)"
    disputed = ccerx("operator", "--control", str(server.control), "dispute", str(first),
                     "--note", note)
    assert disputed.returncode == 0, disputed.stdout + disputed.stderr
    answer = orjson.loads(disputed.stdout)
    assert answer["dispute"] == {"trade_id": first, "settlement_id": f"CCERX-T{first}",
                                 "batch_id": batch_id, "delivery": "delivered", "note": note}
    again = ccerx("operator", "--control", str(server.control), "dispute", str(first),
                  "--note", "twice")
    assert again.returncode == 1 and "already disputed" in again.stdout
    refused = operator_request_sync(server.control, [
        {"op": "dispute", "trade_id": 999, "note": "no such trade"},
        {"op": "dispute", "trade_id": "1", "note": "x"},
        {"op": "dispute", "trade_id": second, "note": ""}])
    assert [r["ok"] for r in refused] == [False] * 3
    assert "no trade 999" in refused[0]["error"] and "trade_id" in refused[1]["error"]
    printed = ccerx("ledger", "statement", "--db", str(data / "ledger.sqlite"), "--date", date,
                    "--account", "HOLD02", "--json")
    [st] = orjson.loads(printed.stdout)
    assert [t.get("disputed") for t in st["trades"]] == [note, None]
    assert "Traceback" not in server.log_text()
