"""Determinism: the same commands give the same events and book, byte for byte.

`ccerx replay` runs twice as a subprocess on the same file (with and without accounts) and
its --events-out and --book-out files must be identical; the NDJSON edge parses and encodes
every kind of line the same way each time, and an event line decodes back to its fields.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from ccerx.engine.core.commands import AmendOrder, CancelOrder, DefineInstrument, EndOfDay, Malformed, NewOrder
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.formats.ndjson import encode_event, event_to_dict, parse_command
from ccerx.engine.core.types import RejectReason

ROOT = Path(__file__).resolve().parents[2]


def ccerx() -> list[str]:
    exe = shutil.which("ccerx") or str(Path(sys.executable).with_name("ccerx"))
    assert os.path.exists(exe), "the ccerx console command is not installed (pip install -e .)"
    return [exe]


def write_flow(path: Path, n: int = 3000, seed: int = 7) -> None:
    """A mixed flow: crossing limit orders over two instruments, market/ioc/fok, cancels,
    amends, bad lines and an end of day, all with explicit timestamps on some lines only."""
    rng = random.Random(seed)
    lines = []
    ids = []
    refs = {"CCER-AFF": 6200, "CCER-MGV": 9500}
    for i in range(n):
        r = rng.random()
        ts = {"ts": 1_706_000_000_000_000_000 + i * 1000} if rng.random() < 0.7 else {}
        if r < 0.6 or not ids:
            symbol = rng.choice(list(refs))
            oid = f"o{i}"
            ids.append(oid)
            order = {"op": "new", **ts, "order_id": oid, "account": f"A{rng.randrange(6)}",
                     "instrument": symbol, "side": rng.choice(("buy", "sell")), "qty": rng.randint(1, 60)}
            kind = rng.random()
            if kind < 0.1:
                order["type"] = "market"
            else:
                ticks = refs[symbol] + rng.randint(-6, 6)
                order["price"] = f"{ticks // 100}.{ticks % 100:02d}"
                if kind < 0.25:
                    order["tif"] = rng.choice(("ioc", "fok"))
            lines.append(orjson.dumps(order))
        elif r < 0.75:
            lines.append(orjson.dumps({"op": "cancel", **ts, "order_id": rng.choice(ids)}))
        elif r < 0.93:
            amend = {"op": "amend", **ts, "order_id": rng.choice(ids)}
            if rng.random() < 0.6:
                amend["qty"] = rng.randint(1, 80)
            else:
                symbol = "CCER-AFF"
                ticks = refs[symbol] + rng.randint(-6, 6)
                amend["price"] = f"{ticks // 100}.{ticks % 100:02d}"
            lines.append(orjson.dumps(amend))
        elif r < 0.97:
            lines.append(rng.choice((b"not json", b"[1,2]", b'{"op":"zap"}', b'{"op":"new","qty":1.5}')))
        elif r < 0.975:
            lines.append(b'{"op":"eod"}')
        else:
            lines.append(orjson.dumps({"op": "new", **ts, "order_id": rng.choice(ids), "account": "A1",
                                       "instrument": "CCER-AFF", "side": "buy", "price": "62.00", "qty": 1}))
    path.write_bytes(b"\n".join(lines) + b"\n")


def write_accounts(path: Path) -> None:
    path.write_text(json.dumps({"fee_rate": "0.006", "accounts": [
        {"account": f"A{i}", "type": "investment_institution", "cash": "250000.00",
         "credits": {"CCER-AFF": 800, "CCER-MGV": 800}} for i in range(5)]}))


def replay(tmp: Path, flow: Path, tag: str, *extra: str) -> tuple[bytes, bytes, dict]:
    events, book = tmp / f"events-{tag}.ndjson", tmp / f"book-{tag}.json"
    done = subprocess.run(ccerx() + ["replay", str(flow), "--events-out", str(events),
                                     "--book-out", str(book), "--json", *extra],
                          capture_output=True, timeout=120, cwd=tmp)
    assert done.returncode == 0, done.stderr.decode()
    summary = orjson.loads(done.stdout.strip().splitlines()[-1])
    return events.read_bytes(), book.read_bytes(), summary


@pytest.mark.parametrize("with_accounts", [False, True], ids=["no-accounts", "accounts"])
def test_replay_twice_gives_identical_bytes(tmp_path, with_accounts):
    flow = tmp_path / "flow.ndjson"
    write_flow(flow)
    extra = []
    if with_accounts:
        write_accounts(tmp_path / "accounts.json")
        extra = ["--accounts", str(tmp_path / "accounts.json")]
    events1, book1, summary1 = replay(tmp_path, flow, "1", *extra)
    events2, book2, summary2 = replay(tmp_path, flow, "2", *extra)
    assert events1 == events2
    assert book1 == book2
    assert summary1["state_hash"] == summary2["state_hash"]
    for key in ("commands", "events", "trades", "rejects"):
        assert summary1[key] == summary2[key]
    # the run did something worth comparing
    assert summary1["commands"] == 3000
    assert summary1["trades"] > 50 and summary1["rejects"] > 50
    assert any(json.loads(book1)[s]["buy"] for s in ("CCER-AFF", "CCER-MGV"))
    # and the events file is exactly the in-process engine's events, encoded
    exchange = Exchange(accounts=None)
    if with_accounts:
        from ccerx.engine.formats.config import load_accounts
        exchange = Exchange(accounts=load_accounts(tmp_path / "accounts.json"))
    expected = []
    for line in flow.read_bytes().splitlines():
        for event in exchange.apply(parse_command(line)):
            expected.append(encode_event(event, exchange.specs) + b"\n")
    assert events1 == b"".join(expected)


def test_sample_flow_replays_identically(tmp_path):
    sample = ROOT / "samples" / "sample-flow.ndjson"
    assert sample.is_file()
    a = replay(tmp_path, sample, "a", "--accounts", str(ROOT / "samples" / "accounts.json"))
    b = replay(tmp_path, sample, "b", "--accounts", str(ROOT / "samples" / "accounts.json"))
    assert a[0] == b[0] and a[1] == b[1] and a[2]["state_hash"] == b[2]["state_hash"]


# --- NDJSON parse and encode ----------------------------------------------------------------

def test_parse_each_command_kind():
    new = parse_command(b'{"op":"new","ts":1706000000000000000,"order_id":"o1","account":"A1",'
                        b'"instrument":"CCER-AFF","side":"buy","type":"limit","tif":"day",'
                        b'"price":"62.01","qty":100}')
    assert new == NewOrder("o1", "A1", "CCER-AFF", "buy", "limit", "day", 62_010_000, 100,
                           1706000000000000000)
    market = parse_command('{"op":"new","order_id":"m","account":"A","instrument":"CCER-AFF",'
                           '"side":"sell","type":"market","qty":5}')
    assert market.order_type == "market" and market.price_units is None and market.tif is None
    assert parse_command(b'{"op":"new","order_id":"x","side":"buy","price":"1.00","qty":1}').order_type == "limit"
    assert parse_command(b'{"op":"cancel","order_id":"o1"}') == CancelOrder("o1", None)
    assert parse_command(b'{"op":"amend","order_id":"o1","price":"62.02","qty":80}') == \
        AmendOrder("o1", 62_020_000, 80, None)
    assert parse_command(b'{"op":"amend","order_id":"o1","qty":80}') == AmendOrder("o1", None, 80, None)
    assert parse_command(b'{"op":"eod","ts":5}') == EndOfDay(5)
    define = parse_command(b'{"op":"instrument","symbol":"CCER-AFF","tick":"0.01","lot":1,'
                           b'"max_qty":99999,"ref_price":"62.00","band_pct":10}')
    assert type(define) is DefineInstrument
    assert (define.spec.symbol, define.spec.ref_ticks, define.spec.min_ticks, define.spec.max_ticks) == \
        ("CCER-AFF", 6200, 5580, 6820)


@pytest.mark.parametrize("line", [
    b"", b"not json", b"[1,2]", b"null", b'"op"', b"{}", b'{"op":"zap"}', b'{"op":null}',
    b'{"op":"new","ts":-1}', b'{"op":"new","ts":1.5}', b'{"op":"new","ts":99999999999999999999}',
    b'{"op":"instrument","symbol":"CCER-Q","ref_price":3.5}', b'{"op":"instrument"}',
    b"\xff\xfe", b"{" * 5000,
])
def test_parse_never_raises_and_malformed_is_rejected_in_sequence(line):
    command = parse_command(line)
    assert type(command) is Malformed
    exchange = Exchange()
    events = exchange.apply(command)
    assert len(events) == 1 and events[0].reason is RejectReason.MALFORMED and events[0].seq == 1
    assert events[0].text


def test_parse_is_pure():
    line = b'{"op":"new","order_id":"o1","account":"A1","instrument":"CCER-AFF","side":"buy","price":"62.01","qty":100}'
    assert parse_command(line) == parse_command(line) == parse_command(line.decode())


def test_encoded_events_decode_to_their_fields():
    exchange = Exchange()
    lines = [b'{"op":"new","ts":7,"order_id":"s","account":"B","instrument":"CCER-AFF","side":"sell","price":"61.99","qty":3}',
             b'{"op":"new","order_id":"b","account":"A","instrument":"CCER-AFF","side":"buy","price":"62.01","qty":5}',
             b'{"op":"amend","order_id":"b","qty":4}',
             b'{"op":"cancel","order_id":"b"}', b'{"op":"cancel"}', b'{"op":"eod"}']
    decoded = []
    for line in lines:
        for event in exchange.apply(parse_command(line)):
            encoded = encode_event(event, exchange.specs)
            assert b"\n" not in encoded
            assert encoded == encode_event(event, exchange.specs)
            decoded.append(orjson.loads(encoded))
            assert decoded[-1] == event_to_dict(event, exchange.specs)
    types = [d["type"] for d in decoded]
    assert types[:3] == ["accepted", "accepted", "trade"]
    trade = decoded[2]
    assert (trade["price"], trade["qty"], trade["buy_order_id"], trade["sell_order_id"], trade["aggressor"],
            trade["ts"], trade["seq"], trade["trade_id"]) == ("61.99", 3, "b", "s", "buy", 7, 3, 1)
    assert "amended" in types and "cancelled" in types and "day_closed" in types
    rejected = [d for d in decoded if d["type"] == "rejected"]
    assert rejected == [{"type": "rejected", "seq": rejected[0]["seq"], "ts": 7, "op": "cancel",
                         "order_id": None, "reason": "order_not_resting", "text": rejected[0]["text"]}]
    assert [d["seq"] for d in decoded] == list(range(1, len(decoded) + 1))
