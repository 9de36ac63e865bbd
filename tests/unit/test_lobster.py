"""LOBSTER import: the documented mapping, checked by replaying the converted commands."""
from __future__ import annotations

import orjson
import pytest

from ccerx.engine.formats.binary import iter_flow_commands
from ccerx.engine.formats.lobster import LobsterError, convert_lobster, parse_time_ns, read_messages
from ccerx.engine.core.events import TradeExecuted
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.formats.ndjson import books_to_json
from ccerx.scripts.ccerx import main

MIDNIGHT_NS = 1_705_852_800 * 10**9      # 2024-01-22 00:00 Beijing time

# Time, Type, OrderID, Size, Price ($ x 10000), Direction
MESSAGES = """\
34200.000000001,1,100,50,5000100,-1
34200.5,1,101,30,4999900,1
34201,2,100,20,5000100,-1
34202,4,100,10,5000100,-1
34203,3,999,100,4999800,1
34204,2,998,50,5000200,-1
34205,5,0,20,5000150,1
34206,4,997,200,4999900,1
34207,3,101,30,4999900,1
34208,6,0,500,5000000,-1
34208.5,7,0,0,-1,-1
34209,3,100,20,5000100,-1
"""
# ask price, ask size, bid price, bid size per level; row 1 is the book AFTER message 1
ORDERBOOK = """\
5000100,50,4999900,200,5000200,300,4999800,100,9999999999,0,-9999999999,0
5000100,50,4999900,230,5000200,300,4999800,100,9999999999,0,-9999999999,0
"""


@pytest.fixture
def files(tmp_path):
    msg, ob = tmp_path / "AAPL_message_10.csv", tmp_path / "AAPL_orderbook_10.csv"
    msg.write_text(MESSAGES)
    ob.write_text(ORDERBOOK)
    return msg, ob


def _replay(path):
    ex = Exchange()
    trades = []
    for command in iter_flow_commands(path):
        trades += [e for e in ex.apply(command) if type(e) is TradeExecuted]
    ex.check()
    return ex, trades


def test_mapping_with_opening_book(tmp_path, files):
    msg, ob = files
    out = tmp_path / "aff.ndjson"
    summary = convert_lobster(msg, out, "CCER-AFF", orderbook=ob)
    assert summary["counts"] == {"seed": 3, "new": 2, "cancel": 3, "amend": 2, "taker": 2}
    assert summary["skipped"] == {"hidden_execution": 1, "cross_trade": 1, "halt": 1}
    lines = [orjson.loads(l) for l in out.read_bytes().splitlines()]
    # seeds: the first snapshot minus message 1 (the new sell at 500.01), anchored at 62.00
    seeds = [(c["order_id"], c["side"], c["price"], c["qty"]) for c in lines[:3]]
    assert seeds == [("SEED-B1", "buy", "61.99", 200), ("SEED-B2", "buy", "61.98", 100),
                     ("SEED-A1", "sell", "62.02", 300)]
    assert lines[3] == {"op": "new", "ts": MIDNIGHT_NS + 34200 * 10**9 + 1, "order_id": "L100",
                        "account": "LOBSTER-SELL", "instrument": "CCER-AFF", "side": "sell",
                        "type": "limit", "price": "62.01", "qty": 50}
    assert {"op": "amend", "ts": MIDNIGHT_NS + 34201 * 10**9, "order_id": "L100",
            "qty": 30} in lines
    ex, trades = _replay(out)
    assert [(t.price, t.qty, t.buy_order_id, t.sell_order_id, t.aggressor.value)
            for t in trades] == [(6201, 10, "T1", "L100", "buy"),
                                 (6199, 200, "SEED-B1", "T2", "sell")]
    book = books_to_json(ex)["CCER-AFF"]
    assert book == {"buy": [], "sell": [["62.02", [["SEED-A1", 250]]]]}


def test_without_orderbook_unknown_orders_are_skipped_and_direct_prices(tmp_path, files):
    msg, _ = files
    out = tmp_path / "direct.ndjson"
    summary = convert_lobster(msg, out, "CCER-MGV", price_map="direct")
    assert summary["counts"]["seed"] == 0
    assert summary["skipped"]["unknown_order"] == 2          # messages 5 and 6
    first = orjson.loads(out.read_bytes().splitlines()[0])
    assert (first["instrument"], first["price"]) == ("CCER-MGV", "500.01")
    ex, trades = _replay(out)   # 500 CNY is far outside the MGV band: all rejected, no crash
    assert trades == []


def test_binary_output_and_cli(tmp_path, files, capsys):
    msg, ob = files
    out = tmp_path / "aff.npz"
    assert main(["convert", "--from-lobster", str(msg), "--orderbook", str(ob),
                 "--instrument", "CCER-AFF", str(out)]) == 0
    assert "hidden_execution 1" in capsys.readouterr().out
    _, trades = _replay(out)
    assert len(trades) == 2
    assert main(["convert", "--from-lobster", str(msg), "--instrument", "CCER-NOPE",
                 str(out)]) == 2


def test_exact_times_and_bad_rows(tmp_path):
    assert parse_time_ns("34200.004241176") == 34_200_004_241_176
    assert parse_time_ns("57599") == 57_599 * 10**9
    with pytest.raises(LobsterError):
        parse_time_ns("1e5")
    bad = tmp_path / "bad.csv"
    bad.write_text("34200.1,1,5,10\n")
    with pytest.raises(LobsterError, match="6 columns"):
        read_messages(bad)
