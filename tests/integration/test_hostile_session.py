"""The hostile-input suite (issue 12): attacks on `ccerx serve` that must fail, as tests that stay.

Each test starts its own `ccerx serve` (the built-in demo config: BROKER01/demo01,
BROKER02/demo02) on a temporary data directory and attacks it over real TCP with the
simplefix-based broker client; what the attack must not do is checked from the honest
broker's side (the messages it gets, the fills it can recover) and from the files it leaves.
"""
from __future__ import annotations

import pytest

from tests.fixclient import Broker, s, sync


def _log_on(broker: Broker, password: str, **kw):
    reply = broker.logon(password, **kw)
    assert s(reply, 35) == "A", s(reply, 58)
    broker.expect("h")                       # the trading session status after the Logon
    return reply


def _intrude(port: int, comp_id: str, *fields) -> tuple:
    """A Logon from a stranger; returns (its answer's MsgType, Text, MsgSeqNum) and checks the
    gateway hangs up."""
    intruder = Broker(comp_id, port)
    intruder.connect()
    intruder.logging_out = True              # no Logout back: the gateway hangs up
    intruder.send("A", *fields)
    try:
        reply = intruder.expect("5", "A")
        assert intruder.read() is None, "the gateway must hang up on a refused logon"
    finally:
        intruder.close()
    return s(reply, 35), s(reply, 58), s(reply, 34)


# ------------------------------------------------------------------ 1: a wrong password resets nothing
def test_a_reset_logon_with_a_wrong_password_leaves_the_brokers_session_and_fills_alone(start_serve, tmp_path):
    server = start_serve("--data-dir", str(tmp_path / "data"))
    b1, b2 = Broker("BROKER01", server.port), Broker("BROKER02", server.port)
    _log_on(b1, "demo01", reset=True)
    b1.new_order("s1", "HOLD01", "2", 10, "62.00")
    assert s(b1.expect("8"), 150) == "0"
    b1.logout()                                   # away, with an order resting
    missed_from = b1.next_in

    _log_on(b2, "demo02", reset=True)
    b2.new_order("b1", "EMIT02", "1", 10, "62.00")
    assert [s(m, 150) for m in b2.reports(2)] == ["0", "F"]    # BROKER01's fill is stored for it

    answer, text, _ = _intrude(server.port, "BROKER01", (98, 0), (108, 30), (141, "Y"),
                               (553, "BROKER01"), (554, "not-the-password"))
    assert answer == "5" and "password" in text

    reply = b1.logon("demo01")                    # the real broker returns, no reset
    assert s(reply, 35) == "A", s(reply, 58)
    assert int(s(reply, 34)) > missed_from, "the gateway's sequence numbers were reset"
    b1.send("2", (7, missed_from), (16, 0))
    fill = b1.expect("8", where=lambda m: s(m, 150) == "F")
    assert (s(fill, 43), s(fill, 11), s(fill, 14), s(fill, 39)) == ("Y", "s1", "10", "2")
    sync(b1, "after-resend")
    b1.logout()
    b2.logout()


# ------------------------------------------------------------------ 6: no lockout by heartbeat
@pytest.mark.parametrize("heartbeat", [0, 10**15])
def test_a_logon_asking_for_no_or_endless_heartbeats_is_refused_with_the_bounds(start_serve, tmp_path,
                                                                              heartbeat):
    server = start_serve("--data-dir", str(tmp_path / "data"))
    answer, text, _ = _intrude(server.port, "BROKER01", (98, 0), (108, heartbeat), (141, "Y"),
                               (553, "BROKER01"), (554, "demo01"))
    assert (answer, text) == ("5", "HeartBtInt (108) must be 1 to 300 seconds")
    _log_on(Broker("BROKER01", server.port), "demo01", reset=True)


def test_a_dead_connection_is_timed_out_and_the_broker_gets_back_in(start_serve, tmp_path):
    server = start_serve("--data-dir", str(tmp_path / "data"))
    dead = Broker("BROKER01", server.port)
    _log_on(dead, "demo01", reset=True, heartbeat=1)     # then silence: a half-open connection
    again = Broker("BROKER01", server.port)
    again.connect()
    again.send("A", (98, 0), (108, 30), (141, "Y"), (553, "BROKER01"), (554, "demo01"))
    assert again.read() is None, "refused while the first connection holds the session"
    again.close()
    # the gateway tests the silent connection (TestRequest after 1.2 x HeartBtInt), then
    # hangs up (2.4 x); the dead side never answers
    test_request = dead.parser.get_message() or _read_raw(dead)
    assert s(test_request, 35) in ("0", "1")
    while _read_raw(dead) is not None:
        pass
    _log_on(Broker("BROKER01", server.port), "demo01", reset=True)


def _read_raw(broker: Broker, timeout: float = 10):
    """The next message without answering it (a dead broker), None when the gateway hangs up."""
    import select
    while True:
        message = broker.parser.get_message()
        if message is not None:
            return message
        ready, _, _ = select.select([broker.sock], [], [], timeout)
        assert ready, "the gateway neither sent anything nor hung up"
        data = broker.sock.recv(65536)
        if not data:
            return None
        broker.parser.append_buffer(data)
