"""Chinese text end to end (issue 12 items 2 and 11): an operator's note in Chinese reaches
every broker as FIX 4.4 EncodedText (355, with EncodedTextLen 354 and MessageEncoding 347 in
the header; Text 58 an ASCII rendering), and brokers keep logging on and asking for the
trading session status. A real `ccerx serve` process, the real control socket, simplefix
brokers over real TCP.
"""
from __future__ import annotations

import orjson

from ccerx.gateway.control import operator_request_sync
from ccerx.scripts.ccerx import main as ccerx
from tests.fixclient import Broker, s

NOTE = "系统检查"


def encoded_text(message) -> str:
    """The EncodedText of a message as a broker reads it, after checking its framing fields."""
    assert s(message, 347) == "UTF-8"
    raw = message.get(355)
    assert int(s(message, 354)) == len(raw)
    text = s(message, 58)
    assert text is None or text.isascii()
    return raw.decode("utf-8")


def test_a_halt_note_in_chinese_reaches_every_broker_and_logons_keep_working(
        tmp_path, start_serve, capsys):
    server = start_serve("--data-dir", str(tmp_path / "data"), "--log-level", "info")
    b1 = Broker("BROKER01", server.port)
    b2 = Broker("BROKER02", server.port)
    try:
        assert s(b1.logon("demo01", reset=True), 35) == "A"
        assert s(b1.expect("h"), 340) == "2"

        # the operator's command line, over the real control socket
        assert ccerx(["operator", "--control", str(server.control), "halt", NOTE]) == 0
        [answer] = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert answer["ok"] is True
        assert (answer["events"][0]["note"], answer["events"][0]["halted"]) == (NOTE, True)

        told = b1.expect("h")                     # a logged-on broker is told at once
        assert s(told, 340) == "1" and encoded_text(told) == NOTE

        for attempt in range(2):                  # every later logon works, not just one
            assert s(b2.logon("demo02", reset=True), 35) == "A"
            status = b2.read()
            assert (s(status, 35), s(status, 340)) == ("h", "1")
            assert encoded_text(status) == NOTE
            b2.send("g", (335, f"q{attempt}"), (263, "0"))
            reply = b2.expect("h")
            assert s(reply, 335) == f"q{attempt}" and encoded_text(reply) == NOTE
            b2.logout()

        [resumed] = operator_request_sync(server.control, [
            {"op": "status", "open": True, "note": "恢复交易"}])
        assert resumed["ok"] is True
        assert encoded_text(b1.expect("h", where=lambda m: s(m, 340) == "2")) == "恢复交易"
        b1.new_order("c1", "EMIT01", "1", 1, "62.00")   # trading goes on
        assert s(b1.expect("8"), 150) == "0"
    finally:
        b1.close()
        b2.close()
    assert "Traceback" not in server.log_text()
