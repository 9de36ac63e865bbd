"""The `ccerx replay` contract (issue 2 item 7), exercised through the installed command.

Events out: one JSON object per line; trade and reject lines carry the contract's fields.
Book out: resting orders per instrument, levels best first, orders in time priority.
Summary: commands, trades, rejects, wall time, engine throughput, latency percentiles.
Hostile input: every malformed line becomes exactly one `rejected` line with a reason and
a text, and nothing crashes.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from ccerx.engine.core.types import RejectReason

REASONS = {r.value for r in RejectReason}
ROOT = Path(__file__).resolve().parents[2]


def ccerx(*args, cwd: Path, timeout=120) -> subprocess.CompletedProcess:
    exe = shutil.which("ccerx") or str(Path(sys.executable).with_name("ccerx"))
    assert os.path.exists(exe), "the ccerx console command is not installed (pip install -e .)"
    return subprocess.run([exe, *map(str, args)], capture_output=True, timeout=timeout, cwd=cwd)


def write_lines(path: Path, lines) -> Path:
    path.write_bytes(b"".join((l if isinstance(l, bytes) else orjson.dumps(l)) + b"\n" for l in lines))
    return path


def new(oid, account, side, price, qty, **extra):
    order = {"op": "new", "order_id": oid, "account": account, "instrument": "CCER-AFF",
             "side": side, "type": "limit", "price": price, "qty": qty}
    order.update(extra)
    return order


def replay_events(tmp_path, lines, *extra):
    flow = write_lines(tmp_path / "in.ndjson", lines)
    events_path, book_path = tmp_path / "events.ndjson", tmp_path / "book.json"
    done = ccerx("replay", flow, "--events-out", events_path, "--book-out", book_path, *extra,
                 cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert b"Traceback" not in done.stderr
    events = [json.loads(line) for line in events_path.read_bytes().splitlines()]
    return events, json.loads(book_path.read_bytes()), done


def test_events_and_book_follow_the_contract(tmp_path):
    lines = [
        {"op": "instrument", "symbol": "CCER-AFF", "tick": "0.01", "lot": 1, "max_qty": 99999,
         "ref_price": "62.00", "band_pct": 10},
        new("o1", "A1", "sell", "62.02", 300, ts=1706000000000000000),
        new("o2", "A2", "buy", "62.01", 1000),
        new("o3", "A3", "buy", "62.01", 40),
        new("o4", "A4", "buy", "61.50", 7),
        new("o5", "A5", "sell", "62.03", 9),
        new("o6", "A6", "buy", "62.02", 100),
        {"op": "cancel", "order_id": "nope"},
        {"op": "amend", "order_id": "o3", "qty": 30},
    ]
    events, book, _ = replay_events(tmp_path, lines)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    trades = [e for e in events if e["type"] == "trade"]
    assert len(trades) == 1
    trade = trades[0]
    for key, kind in (("seq", int), ("trade_id", int), ("instrument", str), ("price", str),
                      ("qty", int), ("buy_order_id", str), ("sell_order_id", str), ("aggressor", str)):
        assert type(trade[key]) is kind, key
    assert (trade["price"], trade["qty"], trade["buy_order_id"], trade["sell_order_id"],
            trade["aggressor"], trade["instrument"], trade["ts"]) == \
        ("62.02", 100, "o6", "o1", "buy", "CCER-AFF", 1706000000000000000)
    rejects = [e for e in events if e["type"] == "rejected"]
    assert rejects == [{"type": "rejected", "seq": rejects[0]["seq"], "ts": 1706000000000000000,
                        "op": "cancel", "order_id": "nope", "reason": "order_not_resting",
                        "text": rejects[0]["text"]}]
    assert isinstance(rejects[0]["text"], str) and rejects[0]["text"]
    assert {e["type"] for e in events} == {"instrument", "accepted", "trade", "rejected", "amended"}
    assert set(book) == {"CCER-AFF", "CCER-SOL", "CCER-OWF", "CCER-MGV"}
    assert book["CCER-AFF"] == {
        "buy": [["62.01", [["o2", 1000], ["o3", 30]]], ["61.50", [["o4", 7]]]],
        "sell": [["62.02", [["o1", 200]]], ["62.03", [["o5", 9]]]],
    }
    assert book["CCER-SOL"] == {"buy": [], "sell": []}


def test_summary_is_printed(tmp_path):
    lines = [new("s", "A", "sell", "62.00", 5), new("b", "B", "buy", "62.00", 5), b"oops"]
    _, _, done = replay_events(tmp_path, lines)
    out = done.stdout.decode()
    assert re.search(r"commands 3\b", out) and re.search(r"trades 1\b", out)
    assert re.search(r"rejects 1\b", out)
    assert re.search(r"wall \d+\.\d+ s", out) and re.search(r"engine-only \d+\.\d+ s \([\d,]+ cmd/s\)", out)
    for label in ("p50", "p99", "p99.9", "max"):
        assert re.search(rf"\b{re.escape(label)} \d+\.\d+", out), label
    flow = tmp_path / "in.ndjson"
    summary = json.loads(ccerx("replay", flow, "--json", cwd=tmp_path).stdout.splitlines()[-1])
    assert (summary["commands"], summary["trades"], summary["rejects"]) == (3, 1, 1)
    assert summary["wall_s"] >= 0 and summary["engine_commands_per_s"] > 0
    assert set(summary["latency_ns"]) == {"p50", "p99", "p99.9", "max"}
    lat = summary["latency_ns"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]


HOSTILE = [
    b"not json", b"[1, 2, 3]", b"42", b"null", b'"new"', b"true", b"{}", b'{"op": null}',
    b'{"op": "explode"}', b'{"op": 7}', b'{"op": ["new"]}', b'{"op": "NEW"}',
    b'{"op": "new"}', b'{"op": "cancel"}', b'{"op": "amend"}', b'{"op": "amend", "order_id": "zz"}',
    b"\xff\xfe\xfd", b'{"op": "new", "order_id": "\\u0000"}', b"{" * 3000, b"[" * 3000,
    b'{"op": "new", "ts": -1}', b'{"op": "new", "ts": "now"}', b'{"op": "new", "ts": 1.5}',
    b'{"op": "new", "ts": 18446744073709551615}', b'{"op": "eod", "ts": "x"}',
    b'{"op": "new", "order_id": "big1", "account": "A", "instrument": "CCER-AFF", "side": "buy", "price": "62.00", "qty": 1e400}',
    b'{"op": "new", "order_id": "big2", "account": "A", "instrument": "CCER-AFF", "side": "buy", "price": "62.00", "qty": 100000000000000000000000000000}',
    b'{"op": "new", "order_id": "big3", "account": "A", "instrument": "CCER-AFF", "side": "buy", "price": "62.00", "qty": 9223372036854775807}',
    b'{"op": "new", "order_id": "big4", "account": "A", "instrument": "CCER-AFF", "side": "buy", "price": "1e400", "qty": 1}',
    b'{"op": "new", "order_id": "big5", "account": "A", "instrument": "CCER-AFF", "side": "buy", "price": "' + b"9" * 40 + b'", "qty": 1}',
    b'{"op": "new", "order_id": "' + b"x" * 100_000 + b'", "account": "A", "instrument": "CCER-AFF", "side": "buy", "price": "62.00", "qty": 1}',
    b'{"op": "instrument", "symbol": "CCER-Q"}', b'{"op": "instrument", "symbol": 5, "ref_price": "1.00"}',
    b'{"op": "instrument", "symbol": "CCER-Q", "ref_price": 3.5}',
    b'{"op": "instrument", "symbol": "CCER-Q", "ref_price": "1.00", "lot": 1.5}',
    b'{"op": "instrument", "symbol": "CCER-Q", "ref_price": "1.00", "tick": "0"}',
    b'{"op": "instrument", "symbol": "CCER-Q", "ref_price": "1.00", "unknown_field": 1}',
    b'{"op": "instrument", "symbol": "CCER-Q", "ref_price": "1.00", "band_pct": 100}',
    b'{"op": "instrument", "symbol": "CCER-Q", "ref_price": "1.00", "band_pct": "1e9"}',
    b'{"op": "instrument", "symbol": "CCER-Q", "ref_price": "1.00", "band_pct": [10]}',
]
_BASE = {"op": "new", "account": "A", "instrument": "CCER-AFF", "side": "buy", "type": "limit",
         "price": "62.00", "qty": 1}
for _i, (_field, _value) in enumerate([
        ("order_id", 5), ("order_id", ["a"]), ("order_id", {"a": 1}), ("order_id", None), ("order_id", True),
        ("account", 5), ("account", ["a"]), ("account", {"a": 1}), ("account", None),
        ("instrument", ["CCER-AFF"]), ("instrument", {"a": 1}), ("instrument", 5), ("instrument", None),
        ("side", ["buy"]), ("side", {"a": 1}), ("side", 5), ("side", None),
        ("type", ["limit"]), ("type", {"a": 1}), ("type", 5), ("tif", ["day"]), ("tif", {"a": 1}), ("tif", 5),
        ("price", ["62.00"]), ("price", {"a": 1}), ("price", True), ("price", 62), ("price", 62.0),
        ("price", "62.00.0"), ("price", "Infinity"), ("price", "NaN"), ("price", "-0"),
        ("qty", [1]), ("qty", {"a": 1}), ("qty", "1"), ("qty", 1.0), ("qty", -1), ("qty", None)]):
    _order = dict(_BASE, order_id=f"w{_i}")
    _order[_field] = _value
    HOSTILE.append(orjson.dumps(_order))
for _value in (["a"], {"a": 1}, 5, None, True):
    HOSTILE.append(orjson.dumps({"op": "cancel", "order_id": _value}))
    HOSTILE.append(orjson.dumps({"op": "amend", "order_id": _value, "qty": 2}))


def test_hostile_lines_each_give_one_rejected_line(tmp_path):
    live = new("live", "A", "buy", "62.00", 5)
    amend_bad = [orjson.dumps({"op": "amend", "order_id": "live", field: value})
                 for field, values in (("qty", (["a"], {"a": 1}, "2", 1.5, True, 0, -3, 5.0)),
                                       ("price", (["a"], {"a": 1}, 62, True, "abc", "62.001", "0", "NaN")))
                 for value in values]
    lines = HOSTILE + amend_bad
    events, book, _ = replay_events(tmp_path, [live] + lines)
    assert events[0]["type"] == "accepted" and events[0]["order_id"] == "live"
    rejected = events[1:]
    assert len(rejected) == len(lines), "every hostile line gives exactly one event"
    for line, event in zip(lines, rejected):
        assert event["type"] == "rejected", (line[:200], event)
        assert event["reason"] in REASONS, (line[:200], event)
        assert isinstance(event["text"], str) and event["text"], (line[:200], event)
        assert event["op"] is None or isinstance(event["op"], str), (line[:200], event)
        assert event["order_id"] is None or isinstance(event["order_id"], str), (line[:200], event)
    # the live order is untouched by the bad amends, and nothing else rests
    assert book["CCER-AFF"] == {"buy": [["62.00", [["live", 5]]]], "sell": []}
    # spot checks of the reasons the issue names
    by_line = dict(zip(lines, rejected))
    assert by_line[b"not json"]["reason"] == "malformed" and by_line[b"not json"]["order_id"] is None
    assert by_line[b"[1, 2, 3]"]["reason"] == "malformed"
    assert by_line[b'{"op": "explode"}']["op"] == "explode"
    assert by_line[HOSTILE[HOSTILE.index(b'{"op": "cancel"}')]]["reason"] == "order_not_resting"
    qty_reasons = [e["reason"] for l, e in by_line.items() if b'"qty": 1e400' in l or b'"qty": "1"' in l
                   or b'"qty": 1.0' in l]
    assert qty_reasons and all(r in ("malformed", "invalid_qty") for r in qty_reasons)


def test_hostile_band_pct_is_rejected_not_a_crash(tmp_path):
    lines = [b'{"op": "instrument", "symbol": "CCER-Q", "ref_price": "1.00", "band_pct": "%s"}' % bad
             for bad in (b"abc", b"sNaN", b"Infinity")]
    events, _, _ = replay_events(tmp_path, lines)
    assert [(e["type"], e["op"], e["reason"]) for e in events] == [("rejected", "instrument", "malformed")] * 3


def test_blank_lines_are_skipped_and_crlf_is_accepted(tmp_path):
    flow = tmp_path / "in.ndjson"
    flow.write_bytes(b"\n" + orjson.dumps(new("a", "A", "buy", "62.00", 1)) + b"\r\n\n   \n"
                     + orjson.dumps(new("b", "B", "sell", "62.00", 1)) + b"\r\n")
    done = ccerx("replay", flow, "--events-out", tmp_path / "ev.ndjson", cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    events = [json.loads(l) for l in (tmp_path / "ev.ndjson").read_bytes().splitlines()]
    assert [e["type"] for e in events] == ["accepted", "accepted", "trade"]


def test_accounts_turn_on_pre_trade_checks(tmp_path):
    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps({"accounts": [
        {"account": "A", "type": "key_emission_unit", "cash": "100.00"},
        {"account": "B", "type": "project_owner", "credits": {"CCER-AFF": 3}}]}))
    lines = [new("b1", "A", "buy", "62.00", 2), new("s1", "B", "sell", "62.50", 4)]
    without, _, _ = replay_events(tmp_path, lines)
    assert [e["type"] for e in without] == ["accepted", "accepted"]
    (tmp_path / "in.ndjson").unlink()
    with_checks, _, _ = replay_events(tmp_path, lines, "--accounts", accounts)
    assert [(e["type"], e.get("reason")) for e in with_checks] == [
        ("rejected", "insufficient_funds"), ("rejected", "insufficient_credits")]


def test_instruments_file_overrides_the_defaults(tmp_path):
    config = tmp_path / "instruments.toml"
    config.write_text('[[instrument]]\nsymbol = "CCER-AFF"\nref_price = "70.00"\n')
    lines = [new("a", "A", "buy", "76.99", 1), new("b", "A", "buy", "62.00", 1)]
    events, _, _ = replay_events(tmp_path, lines, "--instruments", config)
    assert [(e["type"], e.get("reason")) for e in events] == [("accepted", None),
                                                              ("rejected", "price_out_of_band")]


def test_bad_invocations_fail_cleanly(tmp_path):
    missing = ccerx("replay", tmp_path / "nope.ndjson", cwd=tmp_path)
    assert missing.returncode == 2 and b"no such file" in missing.stderr
    assert b"Traceback" not in missing.stderr
    flow = write_lines(tmp_path / "in.ndjson", [new("a", "A", "buy", "62.00", 1)])
    bad_accounts = tmp_path / "accounts.json"
    bad_accounts.write_text("{not json")
    done = ccerx("replay", flow, "--accounts", bad_accounts, cwd=tmp_path)
    assert done.returncode == 2 and b"Traceback" not in done.stderr and done.stderr


def test_progress_is_shown_on_long_files(tmp_path):
    flow = tmp_path / "long.ndjson"
    flow.write_bytes(b'{"op":"cancel","order_id":"x"}\n' * 200_001)
    done = ccerx("replay", flow, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    assert re.search(rb"replay: [\d,]+/200,001", done.stderr), done.stderr[-500:]
    assert re.search(rb"commands 200,001\b", done.stdout) and re.search(rb"rejects 200,001\b", done.stdout)


@pytest.mark.parametrize("option", ["--events-out", "--book-out"])
def test_an_unwritable_output_is_a_clear_error_not_a_traceback(tmp_path, option):
    flow = tmp_path / "flow.ndjson"
    flow.write_bytes(b'{"op":"eod"}\n')
    done = ccerx("replay", str(flow), option, str(tmp_path / "missing-dir" / "out"), cwd=tmp_path)
    assert done.returncode == 2
    assert b"No such file or directory" in done.stderr and b"Traceback" not in done.stderr


def test_a_broken_pipe_other_than_stdout_is_an_error_not_silence(monkeypatch, capsys):
    import socket
    from ccerx.scripts import ccerx, cmd_replay

    def writes_to_a_closed_socket(args):
        a, b = socket.socketpair()
        b.close()
        a.sendall(b"x" * 1_000_000)
    monkeypatch.setattr(cmd_replay, "run", writes_to_a_closed_socket)
    assert ccerx.main(["replay", "whatever.ndjson"]) == 2
    assert "Broken pipe" in capsys.readouterr().err


def test_a_closed_stdout_pipe_ends_quietly(tmp_path):
    import subprocess
    import sys
    flow = tmp_path / "flow.ndjson"
    subprocess.run([sys.executable, "-m", "ccerx.scripts.ccerx", "gen-flow", "--seed", "1",
                    "--commands", "20000", "--out", str(flow)], check=True, capture_output=True,
                   cwd=ROOT)
    reader = subprocess.Popen([sys.executable, "-m", "ccerx.scripts.ccerx", "replay", str(flow),
                               "--events-out", "/dev/stdout"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, cwd=ROOT)
    reader.stdout.readline()
    reader.stdout.close()                       # like `| head -1`
    err = reader.stderr.read().decode()
    assert reader.wait(60) == 0 and "Broken pipe" not in err and "Traceback" not in err
