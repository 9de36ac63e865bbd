"""The hostile-input suite (issue 12): attacks on `ccerx serve` that must fail, as tests that stay.

Each test starts its own `ccerx serve` (the built-in demo config: BROKER01/demo01,
BROKER02/demo02) on a temporary data directory and attacks it over real TCP with the
simplefix-based broker client; what the attack must not do is checked from the honest
broker's side (the messages it gets, the fills it can recover) and from the files it leaves.
"""
from __future__ import annotations

import time

import pytest

from tests.fixclient import Broker, ResendingBroker, now, s, sync
from tests.serve_process import ServeProcess


def _log_on(broker: Broker, password: str, **kw):
    reply = _log_on_after_backoff(broker, password, **kw)
    assert s(reply, 35) == "A", s(reply, 58)
    broker.expect("h")                       # the trading session status after the Logon
    return reply


def _log_on_after_backoff(broker: Broker, password: str, patience: float = 20, **kw):
    """A broker's reconnect loop: after a stranger's failed logons the gateway may make the
    CompID wait (back-off, issue 12 item 4); the broker retries once a second, as FIX engines
    do, until it is logged on. Returns the Logon reply."""
    deadline = time.monotonic() + patience
    while True:
        next_out, next_in = broker.next_out, broker.next_in
        reply = broker.logon(password, **kw)
        if s(reply, 35) == "A" or time.monotonic() > deadline:
            return reply
        assert "try again" in (s(reply, 58) or ""), s(reply, 58)
        broker.close()
        broker.next_out, broker.next_in = next_out, next_in    # a refused Logon is not counted
        time.sleep(1)


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

    reply = _log_on_after_backoff(b1, "demo01")   # the real broker returns, no reset
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


# ------------------------------------------------------------------ 9: sequence games and the seqnums file
def test_a_huge_sequence_reset_is_rejected_and_the_session_survives_a_restart(start_serve, tmp_path):
    data = tmp_path / "data"
    server = start_serve("--data-dir", str(data))
    b1 = Broker("BROKER01", server.port)
    _log_on(b1, "demo01", reset=True)
    b1.new_order("s1", "HOLD01", "2", 10, "62.00")
    assert s(b1.expect("8"), 150) == "0"
    b1.send("4", (36, "1" + "0" * 24))                        # SequenceReset-Reset to 10^24
    reject = b1.expect("3")
    assert (s(reject, 371), s(reject, 373)) == ("36", "5")
    b1.logout()
    assert server.terminate() == 0

    seqnums = (data / "fix" / "FIX.4.4_CCERX_BROKER01.seqnums").read_bytes()
    next_sender, next_target = (int(n) for n in seqnums.split())   # (the refused reset's
    assert seqnums == b"%020d %020d\n" % (b1.next_in, next_target)  # number is not used up)
    assert next_target in (b1.next_out - 1, b1.next_out)
    server = start_serve("--data-dir", str(data), log_name="serve2.log")
    b1.port = server.port
    reply = b1.logon("demo01")                                 # no reset: the numbers go on
    assert s(reply, 35) == "A" and int(s(reply, 34)) == b1.next_in - 1 and not b1.gaps
    b1.send("2", (7, 1), (16, 0))                              # the acknowledgement, resent
    ack = b1.expect("8")
    assert (s(ack, 43), s(ack, 11), s(ack, 150)) == ("Y", "s1", "0")
    b1.logout()


def test_a_corrupt_seqnums_file_stops_serve_with_the_file_named(start_serve, tmp_path):
    data = tmp_path / "data"
    server = start_serve("--data-dir", str(data))
    _log_on(Broker("BROKER01", server.port), "demo01", reset=True)
    assert server.terminate() == 0
    path = data / "fix" / "FIX.4.4_CCERX_BROKER01.seqnums"
    path.write_bytes(path.read_bytes().rstrip(b"\n") + b"00000\n")      # trailing bytes
    with pytest.raises(RuntimeError) as refused:
        start_serve("--data-dir", str(data), log_name="serve2.log")
    assert "FIX.4.4_CCERX_BROKER01.seqnums" in str(refused.value)
    assert "refusing to start the session at 1/1" in str(refused.value)
    assert "exited 2" in str(refused.value) and "Traceback" not in str(refused.value)


# ------------------------------------------------------------------ 10: order status after a crash
def test_order_status_after_a_kill_9_tells_the_true_state_of_finished_orders(tmp_path):
    data = tmp_path / "data"
    with ServeProcess(["--data-dir", str(data)], log_path=tmp_path / "serve.log") as server:
        b1, b2 = Broker("BROKER01", server.port), Broker("BROKER02", server.port)
        _log_on(b1, "demo01", reset=True)
        _log_on(b2, "demo02", reset=True)
        b2.new_order("s1", "HOLD02", "2", 10, "62.00")
        b2.expect("8")
        b1.new_order("b1", "EMIT01", "1", 10, "62.00")
        assert [s(m, 39) for m in b1.reports(2)] == ["0", "2"]         # filled
        b1.new_order("c1", "EMIT01", "1", 5, "61.00")
        b1.expect("8")
        b1.send("F", (41, "c1"), (11, "c2"), (55, "CCER-AFF"), (54, "1"), (60, now()), (38, 5))
        assert s(b1.expect("8"), 39) == "4"                              # cancelled
        sync(b1, "before the crash")
        server.kill()                                                    # kill -9
    b1.close()
    with ServeProcess(["--data-dir", str(data)], log_path=tmp_path / "serve2.log") as server:
        b1.port = server.port
        _log_on(b1, "demo01")
        for cl, status, cum in (("b1", "2", "10"), ("c1", "4", "0"), ("c2", "4", "0")):
            b1.send("H", (11, cl), (55, "CCER-AFF"), (54, "1"), (790, cl))
            report = b1.expect("8", where=lambda m, cl=cl: s(m, 790) == cl)
            assert (s(report, 150), s(report, 39), s(report, 14)) == ("I", status, cum), cl
        assert s(report, 37) == "BROKER01:c1"
        b1.send("H", (11, "never"), (55, "CCER-AFF"), (54, "1"), (790, "never"))
        unknown = b1.expect("8", where=lambda m: s(m, 790) == "never")
        assert (s(unknown, 39), s(unknown, 58)) == ("8", "unknown order")


def test_the_heartbeat_bounds_come_from_the_gateway_config(start_serve, tmp_path):
    from ccerx.gateway.config import DEMO_CONFIG
    config = tmp_path / "gateway.toml"
    config.write_text(DEMO_CONFIG.replace('comp_id = "CCERX"\n',
                                          'comp_id = "CCERX"\nheartbeat_bounds = [5, 60]\n', 1))
    server = start_serve("--data-dir", str(tmp_path / "data"), "--config", str(config))
    answer, text, _ = _intrude(server.port, "BROKER01", (98, 0), (108, 2), (141, "Y"),
                               (553, "BROKER01"), (554, "demo01"))
    assert (answer, text) == ("5", "HeartBtInt (108) must be 5 to 60 seconds")
    reply = _log_on(Broker("BROKER01", server.port), "demo01", reset=True, heartbeat=60)
    assert s(reply, 108) == "60"

    config.write_text(DEMO_CONFIG.replace('comp_id = "CCERX"\n',
                                          'comp_id = "CCERX"\nheartbeat_bounds = [0]\n', 1))
    with pytest.raises(RuntimeError) as refused:
        start_serve("--data-dir", str(tmp_path / "data2"), "--config", str(config),
                    log_name="serve2.log")
    assert "gateway.heartbeat_bounds must be [lowest, highest]" in str(refused.value)


def test_a_dead_connection_with_the_longest_heartbeat_is_probed_when_the_broker_comes_back(start_serve, tmp_path):
    server = start_serve("--data-dir", str(tmp_path / "data"))
    dead = Broker("BROKER01", server.port)
    _log_on(dead, "demo01", reset=True, heartbeat=300)   # then silence: 12 minutes to time out
    started = time.monotonic()
    while True:                                           # the broker's reconnect loop
        again = Broker("BROKER01", server.port)
        again.connect()
        again.send("A", (98, 0), (108, 30), (141, "Y"), (553, "BROKER01"), (554, "demo01"))
        reply = again.read(timeout=10)
        if reply is not None and s(reply, 35) == "A":
            break
        again.close()
        assert time.monotonic() - started < 30, "still locked out by a dead connection"
        time.sleep(1)
    assert s(_read_raw(dead), 35) == "1"                  # the dead side was tested first
    assert _read_raw(dead) is None                        # and dropped


# ------------------------------------------------------------------ 11: orders resent after a crash


def test_orders_resent_after_a_crash_lost_their_seqnums_answer_with_their_live_state(tmp_path):
    """kill -9 between the engine's journal commit and the FIX store's flush: the engine holds
    the orders, the store neither counted their MsgSeqNums nor kept their acknowledgements.
    The broker resends them (43=Y); they are live, so each is answered with its status
    (150=I, its true OrdStatus), never as a duplicate ClOrdID rejected (39=8)."""
    data = tmp_path / "data"
    orders = [(11, "c%d" % i) for i in (1, 2, 3)]
    b1 = ResendingBroker("BROKER01", 0)
    with ServeProcess(["--data-dir", str(data)], log_path=tmp_path / "serve.log") as server:
        b1.port = server.port
        b2 = Broker("BROKER02", server.port)
        _log_on(b1, "demo01", reset=True)
        _log_on(b2, "demo02", reset=True)
        first_seq = b1.next_out
        for name in orders:
            b1.new_order(name[1], "HOLD01", "2", 10, "62.00")
        assert [s(m, 150) for m in b1.reports(3)] == ["0", "0", "0"]
        b2.new_order("b1", "EMIT02", "1", 4, "62.00")                 # c1 partly filled
        assert s(b1.expect("8"), 14) == "4"
        server.kill()                                                  # kill -9
    b1.close()
    # what the crash leaves when the store's last flush did not happen: the 3 orders' numbers
    # not counted in, their 3 acknowledgements and c1's fill never written out (nor sent)
    path = data / "fix" / "FIX.4.4_CCERX_BROKER01.seqnums"
    next_sender, next_target = (int(n) for n in path.read_bytes().split())
    assert (next_sender, next_target) == (b1.next_in, b1.next_out)
    path.write_bytes(b"%020d %020d\n" % (next_sender - 4, next_target - 3))
    b1.next_in = next_sender - 4
    with ServeProcess(["--data-dir", str(data)], log_path=tmp_path / "serve2.log") as server:
        b1.port = server.port
        assert s(b1.logon("demo01"), 35) == "A"
        b1.expect("h")
        assert b1.resend_from == first_seq
        for seq, name in enumerate(orders, first_seq):
            b1.send("D", name, (1, "HOLD01"), (55, "CCER-AFF"), (54, "2"), (60, now()),
                    (38, 10), (40, "2"), (44, "62.00"), seq=seq, poss_dup=True)
        answers = b1.reports(3)
        assert [(s(m, 11), s(m, 150), s(m, 39), s(m, 14), s(m, 151)) for m in answers] == [
            ("c1", "I", "1", "4", "6"), ("c2", "I", "0", "0", "10"), ("c3", "I", "0", "0", "10")]
        assert all("already received" in s(m, 58) for m in answers)
        assert s(answers[1], 37) == "BROKER01:c2"
        b1.send("H", (11, "c2"), (55, "CCER-AFF"), (54, "2"), (790, "q"))
        status = b1.expect("8", where=lambda m: s(m, 790) == "q")
        assert (s(status, 39), s(status, 151)) == ("0", "10")
        sync(b1, "after the resend")
        assert not any(s(m, 39) == "8" for m in b1.received if s(m, 35) == "8")

