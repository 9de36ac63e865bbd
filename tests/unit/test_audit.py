"""`ccerx audit export/verify`: one trade date's order events and operator actions from a data
directory, in sequence, as CSV and Parquet that read back to the same rows, with checksums
that catch a changed byte; the directory is only read."""
from __future__ import annotations

import csv
import hashlib
import os

import orjson
import pytest

from ccerx.engine.core.commands import (CancelOrder, Deposit, EndOfDay, NewOrder,
                                        SetTradingStatus)
from ccerx.engine.core.risk import Account, Accounts
from ccerx.engine.durable.exchange import DurableExchange
from ccerx.scripts.ccerx import main
from ccerx.scripts.cmd_audit import COLUMNS, read_csv_rows, read_parquet_rows

try:
    import pyarrow  # noqa: F401   the `audit` extra (in dev)
except ImportError:
    if os.environ.get("CCERX_REQUIRE_SERVICES") == "1":   # CI installs .[dev]: never skip there
        raise
    pytest.skip("pyarrow is not installed (pip install -e '.[audit]')", allow_module_level=True)

S = 1_000_000_000
DAY1 = 1_772_415_000 * S            # 2026-03-02 09:30 Beijing
DAY2 = DAY1 + 86_400 * S            # 2026-03-03


def accounts():
    return Accounts([Account("EMIT01", member="BRK-A", cash=100_000_000),
                     Account("PROJ01", member="BRK-B", credits={"CCER-AFF": 50_000}),
                     Account("NOIS01", member="BRK-B", cash=100_000_000,
                             credits={"CCER-AFF": 1_000})])


def order(order_id, account, side, qty, price, ts, owner):
    return NewOrder(order_id, account, "CCER-AFF", side, "limit", "day", price * 10_000, qty,
                    ts, owner)


def commands():
    return [
        SetTradingStatus(True, "早盘开市", DAY1),
        Deposit("F-1", "EMIT01", "CNY", 5_000_000, DAY1 + 1 * S, "ops-王"),
        order("s1", "PROJ01", "sell", 300, 6200, DAY1 + 2 * S, "BRK-B"),
        order("b1", "EMIT01", "buy", 200, 6200, DAY1 + 3 * S, "BRK-A"),
        CancelOrder("s1", DAY1 + 4 * S, "BRK-B"),
        order("b2", "EMIT01", "buy", 100, 9999, DAY1 + 5 * S, "BRK-A"),   # out of the band
        SetTradingStatus(False, "系统检查 halt", DAY1 + 6 * S, True),
        EndOfDay(DAY1 + 6 * 3600 * S),
        order("s2", "NOIS01", "sell", 50, 6200, DAY2, "BRK-B"),
        EndOfDay(DAY2 + 6 * 3600 * S),
    ]


@pytest.fixture
def data_dir(tmp_path):
    path = tmp_path / "data"
    exchange = DurableExchange(path, accounts=accounts(), ledger=None, log=lambda text: None)
    for command in commands():
        exchange.apply(command)
    exchange.close()
    return path


def _digest(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.iterdir()) if p.is_file()}


def test_export_round_trips_and_verifies(tmp_path, data_dir, capsys):
    before = _digest(data_dir)
    out = tmp_path / "audit"
    assert main(["audit", "export", "--date", "2026-03-02", "--data-dir", str(data_dir),
                 "--out", str(out)]) == 0
    assert _digest(data_dir) == before
    names = sorted(p.name for p in out.iterdir())
    assert names == ["audit-2026-03-02.csv", "audit-2026-03-02.json",
                     "audit-2026-03-02.parquet", "audit-2026-03-02.sha256"]
    assert all(os.stat(out / n).st_mode & 0o777 == 0o600 for n in names)
    with (out / "audit-2026-03-02.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    # every event of the day, in sequence, none of the next day
    assert [int(r["event_seq"]) for r in rows] == sorted(int(r["event_seq"]) for r in rows)
    assert len({r["event_seq"] for r in rows}) == len(rows)
    assert all(r["time"].startswith("2026-03-02T") and r["time"].endswith("+08:00") for r in rows)
    assert "s2" not in {r["order_id"] for r in rows}
    events = [(r["command"], r["event"]) for r in rows]
    assert events[:5] == [("status", "status"), ("deposit", "deposited"), ("new", "accepted"),
                          ("new", "accepted"), ("new", "trade")]
    assert ("cancel", "cancelled") in events and ("new", "rejected") in events
    assert ("eod", "day_closed") in events
    by_event = {(r["command"], r["event"], r["order_id"]): r for r in rows}
    trade = by_event[("new", "trade", "")]
    assert (trade["buy_account"], trade["buy_member"], trade["sell_account"],
            trade["sell_member"], trade["price"], trade["qty"]) == (
        "EMIT01", "BRK-A", "PROJ01", "BRK-B", "62.00", "200")
    cancel = by_event[("cancel", "cancelled", "s1")]
    assert (cancel["member"], cancel["account"], cancel["qty"], cancel["filled_qty"]) == (
        "BRK-B", "PROJ01", "100", "200")
    deposit = by_event[("deposit", "deposited", "")]
    assert (deposit["source"], deposit["operator"], deposit["amount"]) == ("operator", "ops-王", "50000.00")
    halt = [r for r in rows if r["event"] == "status" and r["reason"] == "halt"]
    assert halt[0]["text"] == "系统检查 halt" and halt[0]["operator"] == ""
    # the Parquet file holds the same rows, typed
    assert read_parquet_rows(out / "audit-2026-03-02.parquet") == read_csv_rows(out / "audit-2026-03-02.csv")
    import pyarrow.parquet as pq
    schema = pq.read_schema(out / "audit-2026-03-02.parquet")
    assert str(schema.field("event_seq").type) == "int64" and schema.names == list(COLUMNS)
    manifest = orjson.loads((out / "audit-2026-03-02.json").read_bytes())
    assert manifest["rows"] == len(rows) and "journal records no operator name" in manifest["not_recorded"]
    capsys.readouterr()
    assert main(["audit", "verify", str(out)]) == 0
    assert "3 files match" in capsys.readouterr().out


@pytest.mark.parametrize("victim", ["csv", "parquet", "json"])
def test_a_tampered_file_fails_verification(tmp_path, data_dir, capsys, victim):
    out = tmp_path / "audit"
    assert main(["audit", "export", "--date", "2026-03-02", "--data-dir", str(data_dir),
                 "--out", str(out)]) == 0
    path = out / f"audit-2026-03-02.{victim}"
    data = bytearray(path.read_bytes())
    if victim == "csv":
        data = data.replace(b"62.00", b"61.00", 1)
    else:
        data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["audit", "verify", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"audit-2026-03-02.{victim}: checksum mismatch" in err


def test_a_rewritten_checksum_still_fails_when_csv_and_parquet_differ(tmp_path, data_dir, capsys):
    out = tmp_path / "audit"
    assert main(["audit", "export", "--date", "2026-03-02", "--data-dir", str(data_dir),
                 "--out", str(out)]) == 0
    csv_path = out / "audit-2026-03-02.csv"
    csv_path.write_bytes(csv_path.read_bytes().replace(b"EMIT01", b"EMIT99", 1))
    sums = out / "audit-2026-03-02.sha256"
    lines = [line if not line.endswith(".csv") else
             f"{hashlib.sha256(csv_path.read_bytes()).hexdigest()}  audit-2026-03-02.csv"
             for line in sums.read_text().splitlines()]
    sums.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert main(["audit", "verify", str(out)]) == 1
    assert "hold different rows" in capsys.readouterr().err


def test_bad_input_is_refused_and_writes_nothing(tmp_path, data_dir, capsys):
    never = tmp_path / "never"
    assert main(["audit", "export", "--date", "2026-3-2x", "--data-dir", str(data_dir),
                 "--out", str(never)]) == 2
    assert main(["audit", "export", "--date", "2026-03-02", "--data-dir", str(tmp_path),
                 "--out", str(never)]) == 2
    assert "not a ccerx data directory" in capsys.readouterr().err
    assert not never.exists()
    assert main(["audit", "verify", str(tmp_path)]) == 2
    # a day without events: an empty, still verifiable export
    assert main(["audit", "export", "--date", "2026-03-04", "--data-dir", str(data_dir),
                 "--out", str(tmp_path / "empty")]) == 0
    assert main(["audit", "verify", str(tmp_path / "empty")]) == 0


def test_risk_controls_are_operator_actions_in_the_audit_trail(tmp_path):
    """A restriction, a kill (with its cancels) and a release are operator actions with their
    target, named as such (issue 14 item 2), not an engine class name."""
    from ccerx.engine.core.commands import Restrict
    path = tmp_path / "data"
    exchange = DurableExchange(path, accounts=accounts(), ledger=None, log=lambda text: None)
    for command in [SetTradingStatus(True, "open", DAY1),
                    order("s1", "PROJ01", "sell", 300, 6200, DAY1 + 1 * S, "BRK-B"),
                    Restrict("account", "EMIT01", "buy", False, DAY1 + 2 * S, "ops-李"),
                    Restrict("member", "BRK-B", "both", True, DAY1 + 3 * S),
                    Restrict("account", "EMIT01", "none", False, DAY1 + 4 * S)]:
        exchange.apply(command)
    exchange.close()
    assert main(["audit", "export", "--date", "2026-03-02", "--data-dir", str(path),
                 "--out", str(tmp_path / "out")]) == 0
    [csv_path] = (tmp_path / "out").glob("*.csv")
    rows = list(csv.DictReader(csv_path.open(encoding="utf-8")))
    controls = [(r["command"], r["event"], r["source"], r["operator"], r["account"], r["member"],
                 r["reason"]) for r in rows if r["event"] == "restriction"]
    assert controls == [("restrict", "restriction", "operator", "ops-李", "EMIT01", "BRK-A", "buy"),
                        ("kill", "restriction", "operator", "", "", "BRK-B", "both"),
                        ("restrict", "restriction", "operator", "", "EMIT01", "BRK-A", "none")]
    [cancel] = [r for r in rows if r["event"] == "cancelled"]
    assert (cancel["command"], cancel["order_id"], cancel["reason"]) == ("kill", "s1", "kill")
