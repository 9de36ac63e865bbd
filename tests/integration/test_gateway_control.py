"""The operator's control socket of `ccerx serve`, end to end: a real server process, brokers
over real TCP with simplefix, operator requests over the real Unix-domain socket (the
library client and the `ccerx operator` command).

One server serves the module; the tests run in file order and share its state.
"""
from __future__ import annotations

import os
import signal
import stat

import orjson
import pytest

from ccerx.gateway.control import operator_request_sync
from ccerx.scripts.ccerx import main as ccerx
from tests.fixclient import Broker, s
from tests.serve_process import ServeProcess


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    base = tmp_path_factory.mktemp("control")
    control = base / "ops.sock"
    with ServeProcess(["--data-dir", str(base / "data"), "--control", str(control),
                       "--log-level", "info"], log_path=base / "serve.log") as server:
        yield {"proc": server.proc, "port": server.port, "control": control, "base": base}


@pytest.fixture(scope="module")
def b1(serve):
    broker = Broker("BROKER01", serve["port"])
    assert s(broker.logon("demo01", reset=True), 35) == "A"
    status = broker.read()                        # told the market's state at logon
    assert (s(status, 35), s(status, 340)) == ("h", "2")
    yield broker
    broker.close()


def operator(serve, *requests):
    return operator_request_sync(serve["control"], list(requests))


def test_the_socket_is_private_to_the_operator(serve):
    mode = os.stat(serve["control"]).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


def test_eod_expires_the_day_order_and_closes_every_credit_type(serve, b1):
    b1.new_order("day1", "EMIT01", "1", 10, "74.00", symbol="CCER-SOL")
    assert s(b1.expect("8"), 150) == "0"
    [answer] = operator(serve, {"op": "eod"})
    assert answer["ok"] is True
    events = answer["events"]
    assert sorted(e["instrument"] for e in events if e["type"] == "day_closed") == \
        ["CCER-AFF", "CCER-MGV", "CCER-OWF", "CCER-SOL"]
    [cancelled] = [e for e in events if e["type"] == "cancelled"]
    assert (cancelled["order_id"], cancelled["reason"], cancelled["cancelled_qty"]) == \
        ("BROKER01:day1", "eod", 10)
    expired = b1.expect("8")
    assert (s(expired, 11), s(expired, 150), s(expired, 39), s(expired, 151)) == \
        ("day1", "C", "C", "0")


def test_halt_closes_the_market_and_resume_reopens_it(serve, b1):
    [halted] = operator(serve, {"op": "status", "open": False, "note": "halt"})
    assert halted["ok"] is True and halted["events"][0]["open"] is False
    status = b1.expect("h")
    assert (s(status, 340), s(status, 58)) == ("3", "halt")
    b1.new_order("h1", "EMIT01", "1", 10, "74.00", symbol="CCER-SOL")
    refused = b1.expect("8")
    assert (s(refused, 150), s(refused, 103)) == ("8", "2") and "market_closed" in s(refused, 58)

    [resumed] = operator(serve, {"op": "status", "open": True, "note": "resume"})
    assert resumed["ok"] is True
    assert s(b1.expect("h"), 340) == "2"
    b1.new_order("h2", "EMIT01", "1", 10, "74.00", symbol="CCER-SOL")
    assert s(b1.expect("8"), 150) == "0"
    b1.send("F", (41, "h2"), (11, "h2c"), (55, "CCER-SOL"), (54, "1"), (60, "20260101-00:00:00"),
            (38, 10))
    assert s(b1.expect("8"), 150) == "4"


def test_a_broker_logging_on_during_a_halt_is_told_at_once(serve, b1):
    [halted] = operator(serve, {"op": "status", "open": False, "halt": True, "note": "halt"})
    assert halted["ok"] is True and halted["events"][0]["halted"] is True
    assert s(b1.expect("h"), 340) == "1"             # halted, not closed by the schedule
    b2 = Broker("BROKER02", serve["port"])
    try:
        assert s(b2.logon("demo02", reset=True), 35) == "A"
        status = b2.read()                        # the very next message, before any order
        assert (s(status, 35), s(status, 336), s(status, 340), s(status, 58)) == (
            "h", "CONTINUOUS", "1", "halt")
        b2.send("g", (335, "st1"), (263, "0"))
        answer = b2.expect("h")
        assert (s(answer, 335), s(answer, 340)) == ("st1", "1")
        [resumed] = operator(serve, {"op": "status", "open": True, "note": "resume"})
        assert resumed["ok"] is True
        assert (s(b2.expect("h"), 340), s(b1.expect("h"), 340)) == ("2", "2")
        b2.logout()
    finally:
        b2.close()


def test_deposits_fund_orders_over_fix(serve, b1):
    # EMIT01 holds no CCER-SOL and HOLD01 no cash: neither can trade until the deposits
    b1.new_order("d1", "EMIT01", "2", 500, "75.00", symbol="CCER-SOL")
    assert "insufficient_credits" in s(b1.expect("8"), 58)
    assert ccerx(["operator", "--control", str(serve["control"]), "deposit", "EMIT01",
                  "CCER-SOL", "500", "--id", "ISS-SOL-1"]) == 0
    [cash] = operator(serve, {"op": "deposit", "deposit_id": "F-HOLD01-1", "account": "HOLD01",
                              "cash": "40000.00"})
    assert cash["ok"] is True and cash["events"][0]["amount"] == "40000.00"

    b1.new_order("d2", "EMIT01", "2", 500, "75.00", symbol="CCER-SOL")
    assert s(b1.expect("8"), 150) == "0"
    b1.new_order("d3", "HOLD01", "1", 500, "75.00", symbol="CCER-SOL")  # 37,500 + 225 fee
    reports = {(s(r, 11), s(r, 150)): r for r in b1.reports(3)}
    assert set(reports) == {("d3", "0"), ("d3", "F"), ("d2", "F")}
    assert (s(reports["d2", "F"], 39), s(reports["d2", "F"], 32)) == ("2", "500")

    [again] = operator(serve, {"op": "deposit", "deposit_id": "F-HOLD01-1", "account": "HOLD01",
                               "cash": "40000.00"})     # a retry never credits twice
    assert again["ok"] is False and again["events"][0]["reason"] == "duplicate_deposit_id"


def test_orders_and_garbage_are_refused_and_the_server_keeps_serving(serve, b1):
    new = {"op": "new", "order_id": "x", "account": "EMIT01", "instrument": "CCER-AFF",
           "side": "buy", "type": "limit", "price": "62.00", "qty": 1}
    answers = operator(serve, new, b"not json", b"[1]", b"x" * 70_000, {"op": "cancel"},
                       {"op": "status", "open": True})
    assert [a["ok"] for a in answers] == [False] * 5 + [True]
    assert "not an operator command" in answers[0]["error"]
    assert "longer than" in answers[3]["error"]
    b1.new_order("g1", "EMIT01", "1", 1, "62.00")          # FIX is unaffected
    assert s(b1.expect("8"), 150) == "0"


def test_the_operator_command_line(serve, tmp_path, capsys):
    control = str(serve["control"])
    assert ccerx(["operator", "--control", control, "halt", "lunch"]) == 0
    assert ccerx(["operator", "--control", control, "resume"]) == 0
    lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(a["ok"], a["events"][0]["open"], a["events"][0]["note"]) for a in lines] == \
        [(True, False, "lunch"), (True, True, "resumed by the operator")]
    assert lines[0]["events"][0]["halted"] is True and "halted" not in lines[1]["events"][0]

    requests = tmp_path / "requests.ndjson"
    requests.write_text('{"op":"status","open":true}\n\n{"op":"new"}\n')
    assert ccerx(["operator", "--control", control, "send", str(requests)]) == 1
    assert [orjson.loads(line)["ok"] for line in capsys.readouterr().out.splitlines()] == \
        [True, False]

    assert ccerx(["operator", "--control", control, "deposit", "EMIT01", "CCER-SOL", "1.5"]) == 2
    assert "whole tonnes" in capsys.readouterr().err
    assert ccerx(["operator", "--control", control, "deposit", "HOLD02", "CNY", "1.001"]) == 1
    [refused] = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert refused["ok"] is False and "cash must be" in refused["error"]

    assert ccerx(["operator", "--data-dir", str(tmp_path), "eod"]) == 2   # nothing listens there
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert "cannot reach the control socket" in captured.err


def test_sigterm_removes_the_socket(serve, b1):
    proc = serve["proc"]
    proc.send_signal(signal.SIGTERM)
    assert s(b1.expect("5", timeout=10), 35) == "5"
    assert proc.wait(15) == 0
    assert not serve["control"].exists()


def test_default_socket_in_the_data_dir_and_none(tmp_path, start_serve):
    for extra, expected in (([], tmp_path / "d1" / "control.sock"), (["--control", "none"], None)):
        data = tmp_path / ("d1" if not extra else "d2")
        server = start_serve("--data-dir", str(data), *extra)
        line = server.start_line
        if expected is None:
            assert "control none" in line and not (data / "control.sock").exists()
        else:
            assert f"control {expected}" in line and expected.exists()
            [answer] = operator_request_sync(expected, [{"op": "status", "open": True}])
            assert answer["ok"] is True
        assert server.terminate() == 0


def test_an_answered_deposit_survives_a_crash(tmp_path):
    """The answer is written only once the deposit is journaled: after kill -9 and a restart
    (which also replaces the socket file the dead server left) it is still there."""
    data, control = tmp_path / "data", tmp_path / "ops.sock"
    deposit = {"op": "deposit", "deposit_id": "ISS-CRASH-1", "account": "EMIT01",
               "instrument": "CCER-AFF", "qty": 10}
    for attempt in ("first", "after the crash"):
        with ServeProcess(["--data-dir", str(data), "--control", str(control)],
                          log_path=tmp_path / "serve.log") as server:
            [answer] = operator_request_sync(control, [deposit])
            if attempt == "first":
                assert answer["ok"] is True
                server.kill()                     # no shutdown, no flush: only what was fsynced
                assert control.exists()
            else:
                assert answer["ok"] is False
                assert answer["events"][0]["reason"] == "duplicate_deposit_id"
