"""Chinese text end to end, operator input and passwords in logs (issue 12 items 2, 11, 8).

An operator's note in Chinese reaches every broker as FIX 4.4 EncodedText (355, with
EncodedTextLen 354 and MessageEncoding 347 in the header; Text 58 an ASCII rendering), and
brokers keep logging on and asking for the trading session status; instrument names travel as
EncodedSecurityDesc. Bad operator input is refused whole; passwords never reach the log. A real
`ccerx serve` process, the real control socket, simplefix brokers over real TCP.
"""
from __future__ import annotations

import socket
import subprocess
import sys

import orjson
import simplefix

from ccerx.gateway.control import operator_request_sync
from ccerx.scripts.ccerx import main as ccerx
from tests.fixclient import Broker, s
from tests.serve_process import REPO

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
        b1.send("2", (7, s(told, 34)), (16, s(told, 34)))     # and it can be resent
        resent = b1.expect("h", where=lambda m: s(m, 43) == "Y")
        assert s(resent, 34) == s(told, 34) and encoded_text(resent) == NOTE

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

        # a broker's own order may carry EncodedText (347 in its header): it is accepted
        order = simplefix.FixMessage()
        for tag, value in ((8, "FIX.4.4"), (35, "D"), (49, "BROKER01"), (56, "CCERX"),
                           (34, b1.next_out), (347, "UTF-8")):
            order.append_pair(tag, value, header=True)
        order.append_utc_timestamp(52, precision=3, header=True)
        data = "测试订单".encode("utf-8")
        for tag, value in ((11, "c2"), (1, "EMIT01"), (55, "CCER-AFF"), (54, "1"),
                           (60, "20260101-00:00:00"), (38, 1), (40, "2"), (44, "62.00"),
                           (58, "test order"), (354, len(data)), (355, data)):
            order.append_pair(tag, value)
        b1.sock.sendall(order.encode())
        b1.next_out += 1
        assert s(b1.expect("8", where=lambda m: s(m, 11) == "c2"), 150) == "0"
    finally:
        b1.close()
        b2.close()
    assert "Traceback" not in server.log_text()


def test_bad_operator_input_through_the_socket_is_refused_and_changes_nothing(
        tmp_path, start_serve, capsys):
    """Item 11 through the real control socket: a SOH in a note, full-width and Arabic-Indic
    digits as cash, CNY given as instrument + qty. Each gets a clear refusal, nothing is applied
    and no broker is told anything."""
    server = start_serve("--data-dir", str(tmp_path / "data"))
    b1 = Broker("BROKER01", server.port)
    try:
        assert s(b1.logon("demo01", reset=True), 35) == "A"
        assert s(b1.expect("h"), 340) == "2"
        [before] = operator_request_sync(server.control, [{"op": "accounts"}])
        answers = operator_request_sync(server.control, [
            {"op": "status", "open": False, "halt": True, "note": "halt\x0158=injected\x01"},
            {"op": "deposit", "deposit_id": "F-1", "account": "EMIT01", "cash": "１００"},
            {"op": "deposit", "deposit_id": "F-2", "account": "EMIT01", "cash": "١٠٠.٠٠"},
            {"op": "deposit", "deposit_id": "F-3", "account": "EMIT01", "instrument": "CNY",
             "qty": 1000000},
            {"op": "state"}, {"op": "accounts"}])
        assert [a["ok"] for a in answers] == [False] * 4 + [True, True]
        assert "control character" in answers[0]["error"]
        assert "cash must be" in answers[1]["error"] and "cash must be" in answers[2]["error"]
        assert '"cash"' in answers[3]["error"]
        assert answers[4]["state"]["trading_open"] is True
        assert answers[5]["accounts"] == before["accounts"]
        assert ccerx(["operator", "--control", str(server.control), "deposit", "EMIT01", "CNY",
                      "１０００.００"]) == 1
        assert "cash must be" in capsys.readouterr().out

        b1.send("1", (112, "sync"))                       # nothing reached the broker
        b1.expect("0", where=lambda m: s(m, 112) == "sync")
        assert [s(m, 35) for m in b1.received[-1:]] == ["0"]
        assert not [m for m in b1.received if s(m, 35) == "h" and s(m, 340) != "2"]
    finally:
        b1.close()


def test_chinese_instrument_names_reach_brokers_as_encoded_security_desc(tmp_path, start_serve):
    instruments = tmp_path / "instruments.json"
    instruments.write_text(orjson.dumps({"instruments": [
        {"symbol": "CCER-AFF", "name": "林业碳汇"}]}).decode(), encoding="utf-8")
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\ncomp_id = "CCERX"\ninstruments = "{instruments}"\n\n'
                      '[[broker]]\ncomp_id = "BROKER01"\n', encoding="utf-8")
    server = start_serve("--data-dir", str(tmp_path / "data"), "--config", str(config))
    b1 = Broker("BROKER01", server.port)
    try:
        assert s(b1.logon("any", reset=True), 35) == "A"      # no password configured
        b1.send("x", (320, "sl1"), (559, "0"), (55, "CCER-AFF"))
        listing = b1.expect("y")
        assert s(listing, 347) == "UTF-8" and s(listing, 107).isascii()
        assert int(s(listing, 350)) == len(listing.get(351))
        assert listing.get(351).decode("utf-8") == "林业碳汇"
    finally:
        b1.close()


# ------------------------------------------------------------------ passwords in logs (item 8)
SECRET = "hunter2-Secret"


def _logon_bytes(password: str, msg_type: str = "A") -> bytes:
    message = simplefix.FixMessage()
    for tag, value in ((8, "FIX.4.4"), (35, msg_type), (49, "BROKER01"), (56, "CCERX"),
                       (34, 1)):
        message.append_pair(tag, value, header=True)
    message.append_utc_timestamp(52, precision=3, header=True)
    for tag, value in ((98, 0), (108, 30), (553, "BROKER01"), (554, password),
                       (925, password + "-new")):
        message.append_pair(tag, value)
    return message.encode()


def _send_until_closed(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        while sock.recv(65536):       # the server logs, then closes the connection
            pass


def test_logons_with_framing_errors_are_logged_without_their_password(tmp_path, start_serve):
    server = start_serve("--data-dir", str(tmp_path / "data"), "--log-level", "info")
    good = _logon_bytes(SECRET)
    bad_checksum = good[:-4] + b"%03d\x01" % ((int(good[-4:-1]) + 1) % 256)
    missing_soh = good.replace(b"\x01554=", b"X554=")         # garbled around the password
    not_a_logon = _logon_bytes(SECRET, msg_type="D")
    for data in (bad_checksum, missing_soh, not_a_logon):
        _send_until_closed(server.port, data)
    log = server.log_text()
    assert log.count("garbled message") >= 2 and "first message is not a Logon" in log
    assert "554=***" in log
    assert SECRET not in log


def test_a_plaintext_password_in_a_config_is_not_echoed_at_startup(tmp_path):
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\ncomp_id = "CCERX"\n\n[[broker]]\ncomp_id = "BROKER01"\n'
                      f'password = "pa$${SECRET}"\n', encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "ccerx.scripts.ccerx", "serve", "--port", "0",
                           "--data-dir", str(tmp_path / "data"), "--config", str(config)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "password" in done.stderr
    assert SECRET not in done.stderr + done.stdout
