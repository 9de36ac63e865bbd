"""Brokers trade through `ccerx serve` over real TCP, with simplefix as their FIX codec.

One gateway process (the built-in demo config, a temporary data directory, a free port) serves
the whole module; the tests run in file order and share its state, so each uses its own
credit type or cleans up after itself. The broker side is deliberately independent of our
codec: messages are built, framed, checksummed and parsed by simplefix over a plain socket.
"""
from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.fixclient import GATEWAY, Broker, group, now, s, sync
from tests.serve_process import REPO, ServeProcess


# ------------------------------------------------------------------ the gateway process
@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("gateway-data")
    # the continuous rules: these tests replace orders (OrderCancelReplaceRequest), which the
    # serve default cbeex-2023 refuses; test_gateway_rules.py trades under cbeex-2023
    with ServeProcess(["--data-dir", str(data_dir), "--fsync", "--log-level", "info",
                       "--rules", "continuous"],
                      log_path=data_dir.parent / "serve.log") as server:
        yield {"proc": server.proc, "port": server.port, "data_dir": data_dir}


@pytest.fixture(scope="module")
def b1(gateway):
    broker = Broker("BROKER01", gateway["port"])
    yield broker
    broker.close()


@pytest.fixture(scope="module")
def b2(gateway):
    broker = Broker("BROKER02", gateway["port"])
    yield broker
    broker.close()


# ------------------------------------------------------------------ the tests, in order
def test_bad_password_is_refused(gateway):
    intruder = Broker("BROKER01", gateway["port"])
    intruder.connect()
    intruder.logging_out = True  # no Logout back: the gateway hangs up after refusing
    intruder.send("A", (98, 0), (108, 30), (141, "Y"), (553, "BROKER01"), (554, "demo02"))
    reply = intruder.expect("5", "A")
    assert s(reply, 35) == "5", "a wrong password must not log on"
    assert "password" in (s(reply, 58) or "")
    assert intruder.read() is None  # the gateway hangs up
    intruder.close()


def test_brokers_log_on_with_their_passwords(b1, b2):
    for broker, password in ((b1, "demo01"), (b2, "demo02")):
        reply = broker.logon(password, reset=True)
        assert s(reply, 35) == "A", s(reply, 58)
        assert (s(reply, 49), s(reply, 56), s(reply, 108)) == (GATEWAY, broker.comp_id, "30")
        status = broker.read()                    # right after the Logon reply: the market's state
        assert (s(status, 35), s(status, 336), s(status, 340), s(status, 58)) == (
            "h", "CONTINUOUS", "2", "open")
        assert int(s(status, 34)) == int(s(reply, 34)) + 1 and s(status, 335) is None


def test_crossing_orders_fill_both_brokers(b1, b2):
    b2.new_order("s1", "HOLD02", "2", 100, "62.00")
    new = b2.expect("8")
    assert (s(new, 150), s(new, 39), s(new, 37), s(new, 11)) == ("0", "0", "BROKER02:s1", "s1")

    b1.new_order("b1", "EMIT01", "1", 60, "62.10")
    ack, fill = b1.reports(2)
    assert s(ack, 150) == "0"
    assert (s(fill, 150), s(fill, 39), s(fill, 32), s(fill, 31), s(fill, 14), s(fill, 151),
            s(fill, 6)) == ("F", "2", "60", "62.00", "60", "0", "62.00")
    maker = b2.expect("8")
    assert (s(maker, 150), s(maker, 39), s(maker, 11), s(maker, 1)) == ("F", "1", "s1", "HOLD02")
    assert (s(maker, 32), s(maker, 14), s(maker, 151)) == ("60", "60", "40")
    assert s(maker, 17) != s(fill, 17)

    # the rest of s1 is cancelled so the book is clean for later tests
    b2.send("F", (41, "s1"), (11, "s1c"), (55, "CCER-AFF"), (54, "2"), (60, now()), (38, 100))
    done = b2.expect("8")
    assert (s(done, 150), s(done, 39), s(done, 11), s(done, 41), s(done, 14)) == (
        "4", "4", "s1c", "s1", "60")


def test_amend_then_cancel(b1):
    b1.new_order("a1", "EMIT01", "1", 100, "75.00", symbol="CCER-SOL")
    assert s(b1.expect("8"), 150) == "0"
    b1.send("G", (41, "a1"), (11, "a2"), (55, "CCER-SOL"), (54, "1"), (60, now()), (38, 250),
            (40, "2"), (44, "75.10"))
    replaced = b1.expect("8")
    assert (s(replaced, 150), s(replaced, 39), s(replaced, 11), s(replaced, 41)) == ("5", "0", "a2", "a1")
    assert (s(replaced, 38), s(replaced, 44), s(replaced, 151)) == ("250", "75.10", "250")
    b1.send("H", (11, "a2"), (55, "CCER-SOL"), (54, "1"))
    status = b1.expect("8")
    assert (s(status, 150), s(status, 39), s(status, 44)) == ("I", "0", "75.10")
    b1.send("F", (41, "a2"), (11, "a3"), (55, "CCER-SOL"), (54, "1"), (60, now()), (38, 250))
    cancelled = b1.expect("8")
    assert (s(cancelled, 150), s(cancelled, 39), s(cancelled, 11), s(cancelled, 41)) == (
        "4", "4", "a3", "a2")
    b1.send("F", (41, "a3"), (11, "a4"), (55, "CCER-SOL"), (54, "1"), (60, now()), (38, 250))
    too_late = b1.expect("9")
    assert (s(too_late, 434), s(too_late, 102)) == ("1", "0")


def test_rejects_are_values_never_executions(b1, b2):
    b1.new_order("r1", "HOLD02", "2", 10, "62.00")          # another broker's account
    wrong_account = b1.expect("8")
    assert (s(wrong_account, 150), s(wrong_account, 103)) == ("8", "15")
    assert "not registered to broker BROKER01" in s(wrong_account, 58)

    b1.new_order("r2", "EMIT01", "1", 10, "62.005")         # off the 0.01 tick
    assert (s(b1.expect("8"), 150)) == "8"
    b1.new_order("r3", "EMIT01", "1", 10, "99.00")          # outside the daily band
    out_of_band = b1.expect("8")
    assert s(out_of_band, 150) == "8" and "band" in s(out_of_band, 58)
    b1.new_order("r4", "HOLD01", "1", 10, "62.00")          # no cash on a holder account
    funds = b1.expect("8")
    assert (s(funds, 150), s(funds, 103)) == ("8", "3") and "insufficient_funds" in s(funds, 58)

    b2.new_order("o1", "HOLD02", "2", 5, "63.00")           # BROKER02's resting order...
    assert s(b2.expect("8"), 150) == "0"
    b1.send("F", (41, "o1"), (37, "BROKER02:o1"), (11, "r5"), (55, "CCER-AFF"), (54, "2"),
            (60, now()), (38, 5))
    theirs = b1.expect("9")                                 # ...cannot be cancelled by BROKER01
    assert (s(theirs, 102), s(theirs, 434)) == ("2", "1") and "own orders" in s(theirs, 58)
    b1.send("G", (41, "o1"), (37, "BROKER02:o1"), (11, "r6"), (55, "CCER-AFF"), (54, "2"),
            (60, now()), (38, 1), (40, "2"), (44, "63.00"))
    assert s(b1.expect("9"), 434) == "2"
    b2.send("H", (11, "o1"), (55, "CCER-AFF"), (54, "2"))
    still = b2.expect("8")
    assert (s(still, 150), s(still, 39), s(still, 151)) == ("I", "0", "5")
    b2.send("F", (41, "o1"), (11, "o1c"), (55, "CCER-AFF"), (54, "2"), (60, now()), (38, 5))
    assert s(b2.expect("8"), 150) == "4"

    seq = b1.send("R", (131, "q1"), (146, 1), (55, "CCER-AFF"))   # QuoteRequest: not offered
    reject = b1.expect("j")
    assert (s(reject, 372), s(reject, 380), s(reject, 45)) == ("R", "3", str(seq))


def test_market_data_snapshot_then_increments(b1, b2):
    b2.new_order("m1", "HOLD02", "2", 30, "81.30", symbol="CCER-OWF")
    assert s(b2.expect("8"), 150) == "0"
    b1.send("V", (262, "md1"), (263, "1"), (264, 5), (265, "1"), (267, 3), (269, "0"), (269, "1"),
            (269, "2"), (146, 1), (55, "CCER-OWF"))
    snapshot = b1.expect("W")
    assert (s(snapshot, 262), s(snapshot, 55)) == ("md1", "CCER-OWF")
    assert group(snapshot, 269) == [{269: "1", 270: "81.30", 271: "30", 346: "1", 290: "1"}]

    b2.new_order("m2", "EMIT02", "1", 12, "81.30", symbol="CCER-OWF")   # EMIT02 buys from HOLD02
    assert [s(r, 150) for r in b2.reports(2)] == ["0", "F"]
    update = b1.expect("X")
    assert s(update, 262) == "md1"
    assert group(update, 279) == [
        {279: "1", 269: "1", 55: "CCER-OWF", 270: "81.30", 271: "18", 346: "1"},
        {279: "0", 269: "2", 55: "CCER-OWF", 270: "81.30", 271: "12"},
    ]
    assert s(b2.expect("8"), 150) == "F"   # the maker side's fill

    b1.send("V", (262, "md1"), (263, "2"), (264, 5), (267, 1), (269, "0"), (146, 1), (55, "CCER-OWF"))
    sync(b1, "unsubscribed")  # the gateway has processed the unsubscribe
    mark = len(b1.received)
    b2.send("F", (41, "m1"), (11, "m1c"), (55, "CCER-OWF"), (54, "2"), (60, now()), (38, 30))
    assert s(b2.expect("8"), 150) == "4"
    sync(b1, "after-cancel")  # had an X been sent for the cancel, it arrived before this
    assert not [m for m in b1.received[mark:] if s(m, 35) == "X"]


def test_security_list(b1):
    b1.send("x", (320, "sl1"), (559, "4"))
    reply = b1.expect("y")
    assert (s(reply, 320), s(reply, 560), s(reply, 146)) == ("sl1", "0", "4")
    listed = {e[55]: e for e in group(reply, 55)}
    assert set(listed) == {"CCER-AFF", "CCER-SOL", "CCER-OWF", "CCER-MGV"}
    mgv = listed["CCER-MGV"]
    assert (mgv[561], mgv[15], mgv[233], mgv[234]) == ("1", "CNY", "PRICE", "85.50-104.50")
    assert "tick 0.01 CNY" in mgv[58]


def test_trading_session_status_request(b1):
    b1.send("g", (335, "ts1"), (263, "1"))
    status = b1.expect("h")
    assert (s(status, 335), s(status, 336), s(status, 340)) == ("ts1", "CONTINUOUS", "2")
    b1.send("g", (335, "ts2"), (336, "AUCTION"), (263, "0"))
    unknown = b1.expect("h")                      # FIX 4.4: 340=6 request rejected, 567=1
    assert (s(unknown, 335), s(unknown, 336), s(unknown, 340), s(unknown, 567)) == (
        "ts2", "AUCTION", "6", "1")
    assert "CONTINUOUS" in s(unknown, 58)
    seq = b1.send("g", (263, "0"))                # no TradSesReqID
    reject = b1.expect("3", "h", "j")
    assert (s(reject, 35), s(reject, 45), s(reject, 371), s(reject, 372), s(reject, 373),
            s(reject, 58)) == ("3", str(seq), "335", "g", "1", "Required tag missing")
    sync(b1, "after-g")                           # the session carries on


def test_logged_out_broker_recovers_its_execution_by_resend(b1, b2):
    b2.new_order("rest1", "HOLD02", "2", 40, "95.00", symbol="CCER-MGV")
    assert s(b2.expect("8"), 150) == "0"
    b2.logout()
    expected_next = b2.next_in

    b1.new_order("hit1", "EMIT01", "1", 40, "95.00", symbol="CCER-MGV")
    assert [s(r, 150) for r in b1.reports(2)] == ["0", "F"]

    reply = b2.logon("demo02")                    # the next sequence numbers, no reset
    assert s(reply, 35) == "A"
    assert int(s(reply, 34)) > expected_next      # the gateway sent more while we were away
    status = b2.read()                            # a new message after the Logon reply
    assert (s(status, 35), s(status, 340), s(status, 43)) == ("h", "2", None)
    assert int(s(status, 34)) == int(s(reply, 34)) + 1
    b2.send("2", (7, expected_next), (16, 0))
    resent = b2.expect("8", where=lambda m: s(m, 11) == "rest1")
    assert (s(resent, 43), s(resent, 150), s(resent, 39), s(resent, 32), s(resent, 31)) == (
        "Y", "F", "2", "40", "95.00")
    assert int(s(resent, 34)) == expected_next
    assert s(resent, 122) is not None             # OrigSendingTime on a possible duplicate


def test_sigterm_logs_sessions_out_and_exits_cleanly(gateway, b1, b2):
    proc = gateway["proc"]
    proc.send_signal(signal.SIGTERM)
    for broker in (b1, b2):
        logout = broker.expect("5", timeout=10)
        assert s(logout, 49) == GATEWAY
    assert proc.wait(15) == 0
    assert "stopped" in proc.stdout.read()
    assert (gateway["data_dir"] / "fix").is_dir()


SUITE = REPO.parent / "shared" / "fix-acceptance"
CONFORMANCE_SAMPLE = ("1a_ValidLogonWithCorrectMsgSeqNum.def", "2a_MsgSeqNumCorrect.def",
                      "8_AdminAndApplicationMessages.def", "14b_RequiredFieldMissing.def")


def test_conformance_session_runs_beside_the_brokers(tmp_path, start_serve):
    """`ccerx serve --conformance`: the ISLD/TW44 echo session next to a logged-on broker
    (a sample of the acceptance scripts; the whole suite runs in test_fix_acceptance.py)."""
    if not (SUITE / "atrun.py").exists():
        pytest.fail(f"acceptance suite not found at {SUITE}")
    server = start_serve("--data-dir", str(tmp_path / "data"), "--conformance")
    proc, port = server.proc, server.port
    try:
        broker = Broker("BROKER01", port)
        assert s(broker.logon("demo01", reset=True), 35) == "A"
        run = subprocess.run([sys.executable, str(SUITE / "atrun.py"), "-p", str(port)]
                             + [str(SUITE / "defs" / name) for name in CONFORMANCE_SAMPLE],
                             capture_output=True, text=True, timeout=120)
        assert f"{len(CONFORMANCE_SAMPLE)} passed, 0 failed" in run.stdout, run.stdout + run.stderr
        broker.new_order("c1", "EMIT01", "1", 1, "75.00", symbol="CCER-SOL")  # still trading
        assert s(broker.expect("8"), 150) == "0"
        proc.send_signal(signal.SIGTERM)
        assert s(broker.expect("5", timeout=10), 35) == "5"
        assert proc.wait(15) == 0
    finally:
        server.kill()
