"""The sans-IO session, driven with bytes and a fake clock; no sockets anywhere.

The counterparty's messages are built and the session's output parsed with simplefix, so
the session is checked against an independent codec.
"""
from __future__ import annotations

import pytest
import simplefix

from ccerx.gateway.fix import codec
from ccerx.gateway.fix.application import FixMessage, SessionKey
from ccerx.gateway.fix.dictionary import Reason, SessionReject
from ccerx.gateway.fix.session import LocalProtocolError, Session, State
from ccerx.gateway.fix.store import FileStore, MemoryStore

KEY = SessionKey("FIX.4.4", "CCERX", "BROKER01")
OTHER = SessionKey("FIX.4.4", "CCERX", "BROKER02")
T0 = 1_800_000_000.0


class RecordingApp:
    """Acknowledges every order with an ExecutionReport; can be told to fail."""

    def __init__(self):
        self.events = []
        self.fail = False

    def on_logon(self, session):
        self.events.append(("logon", session))
        return []

    def on_logout(self, session):
        self.events.append(("logout", session))
        return []

    def on_message(self, session, message):
        self.events.append(("message", session, message.msg_type, message.get(11)))
        if self.fail:
            raise RuntimeError("boom")
        if message.get(1) == "BAD":
            raise SessionReject(Reason.VALUE_IS_INCORRECT, 1)
        return [(session, FixMessage.of("8", (11, message.get(11)), (150, "0")))]


class Peer:
    """The broker's side: builds messages with simplefix, parses the session's output."""

    def __init__(self, session: Session, clock: list):
        self.session = session
        self.clock = clock
        self.seq = 1
        self.parser = simplefix.FixParser()

    def build(self, msg_type, *fields, seq=None, sending_time=None, header=(), sender="BROKER01",
              target="CCERX", begin="FIX.4.4"):
        m = simplefix.FixMessage()
        m.append_pair(8, begin, header=True)
        m.append_pair(35, msg_type, header=True)
        if seq is None:
            seq = self.seq
            self.seq += 1
        m.append_pair(34, seq, header=True)
        m.append_pair(49, sender, header=True)
        m.append_pair(52, sending_time or codec.utc_timestamp(self.clock[0]), header=True)
        m.append_pair(56, target, header=True)
        for tag, value in header:
            m.append_pair(tag, value, header=True)
        for tag, value in fields:
            m.append_pair(tag, value)
        return m.encode()

    def send(self, msg_type, *fields, **kw):
        self.session.receive_data(self.build(msg_type, *fields, **kw), self.clock[0])
        return self.receive()

    def receive(self):
        self.parser.append_buffer(self.session.data_to_send())
        out = []
        while (m := self.parser.get_message()) is not None:
            out.append(m)
        return out

    def logon(self, *fields, heartbeat=30):
        self.session.connection_made(self.clock[0])
        return self.send("A", (98, 0), (108, heartbeat), *fields)


def t(m, tag):
    v = m.get(tag)
    return v.decode("latin-1") if v is not None else None


def types(msgs):
    return [t(m, 35) for m in msgs]


@pytest.fixture
def clock():
    return [T0]


def make(clock, store=None, app=None, **kw):
    app = app or RecordingApp()
    routed = []
    session = Session(KEY, app, store or MemoryStore(), router=routed.extend, **kw)
    return session, Peer(session, clock), app, routed


def test_logon_heartbeat_and_logout_with_standard_header_order(clock):
    session, peer, app, _ = make(clock)
    [reply] = peer.logon()
    assert session.state is State.LOGGED_ON and app.events == [("logon", KEY)]
    raw = reply.encode(raw=True)
    tags = [int(f.split(b"=")[0]) for f in raw.split(b"\x01")[:-1]]
    assert tags == [8, 9, 35, 34, 49, 52, 56, 98, 108, 10]
    assert len(t(reply, 52)) == len("20270115-08:00:00.000")
    [hb] = peer.send("1", (112, "ping"))
    assert (t(hb, 35), t(hb, 112), t(hb, 34)) == ("0", "ping", "2")
    [bye] = peer.send("5")
    assert t(bye, 35) == "5" and session.wants_close
    session.connection_lost(clock[0])
    assert session.state is State.DISCONNECTED and app.events[-1] == ("logout", KEY)
    assert (session.store.next_sender, session.store.next_target) == (4, 4)


def test_heartbeats_test_request_and_timeout_follow_the_clock(clock):
    session, peer, _, _ = make(clock)
    peer.logon(heartbeat=10)
    clock[0] += 9.9
    session.tick(clock[0])
    assert peer.receive() == []
    clock[0] += 0.2
    session.tick(clock[0])
    assert types(peer.receive()) == ["0"]
    clock[0] += 2.0                       # 12.1 s without hearing from the broker
    session.tick(clock[0])
    [tr] = peer.receive()
    assert (t(tr, 35), t(tr, 112)) == ("1", "TEST")
    clock[0] += 12.0                      # 24.1 s of silence: give up
    session.tick(clock[0])
    assert session.wants_close


def test_a_gap_asks_for_a_resend_and_queued_messages_run_in_order(clock):
    session, peer, app, _ = make(clock)
    peer.logon()
    [rr] = peer.send("D", (11, "o4"), (54, 1), (60, "20270115-08:00:00"), (40, 1), seq=4)
    assert (t(rr, 35), t(rr, 7), t(rr, 16)) == ("2", "2", "0")
    assert peer.send("D", (11, "o2"), (54, 1), (60, "20270115-08:00:00"), (40, 1), seq=2)
    acks = peer.send("D", (11, "o3"), (54, 1), (60, "20270115-08:00:00"), (40, 1), seq=3)
    assert [t(m, 11) for m in acks] == ["o3", "o4"]            # o4 ran from the queue after o3
    assert [e[3] for e in app.events if e[0] == "message"] == ["o2", "o3", "o4"]
    assert session.store.next_target == 5


def test_seq_too_low_without_possdup_logs_out_with_quickfix_text(clock):
    session, peer, _, _ = make(clock)
    peer.logon()
    peer.send("0")
    [bye] = peer.send("0", seq=2)
    assert t(bye, 58) == "MsgSeqNum too low, expecting 3 but received 2"
    assert session.wants_close


def test_resend_replays_application_messages_and_gap_fills_admin(clock):
    session, peer, _, _ = make(clock)
    peer.logon()                                                          # out 1: Logon
    peer.send("D", (11, "a"), (54, 1), (60, "20270115-08:00:00"), (40, 1))  # out 2: ack a
    peer.send("1", (112, "x"))                                            # out 3: Heartbeat
    peer.send("D", (11, "b"), (54, 1), (60, "20270115-08:00:00"), (40, 1))  # out 4: ack b
    clock[0] += 1
    out = peer.send("2", (7, 1), (16, 0))
    assert [(t(m, 35), t(m, 34), t(m, 36), t(m, 11), t(m, 43)) for m in out] == [
        ("4", "1", "2", None, "Y"), ("8", "2", None, "a", "Y"), ("4", "3", "4", None, "Y"),
        ("8", "4", None, "b", "Y")]
    original = codec.parse_utc_timestamp(t(out[1], 122))
    assert original == pytest.approx(T0) and codec.parse_utc_timestamp(t(out[1], 52)) == pytest.approx(T0 + 1)


def test_messages_for_a_logged_out_session_survive_a_restart_and_come_back_by_resend(clock, tmp_path):
    store = FileStore(tmp_path, "s")
    session, peer, _, _ = make(clock, store=store)
    peer.logon()
    peer.send("5")
    session.connection_lost(clock[0])
    session.send(FixMessage.of("8", (11, "late"), (150, "F")), clock[0])   # stored, not sent
    session.data_to_send()
    store.close()

    store = FileStore(tmp_path, "s")                                          # gateway restart
    assert (store.next_sender, store.next_target) == (4, 3)
    session, peer, _, _ = make(clock, store=store)
    peer.seq = 3
    [logon] = peer.logon()
    assert t(logon, 34) == "4"                          # the broker sees a gap: 3 is missing
    [replayed] = peer.send("2", (7, 3), (16, 3))
    assert (t(replayed, 35), t(replayed, 11), t(replayed, 43), t(replayed, 34)) == ("8", "late", "Y", "3")
    store.close()


class StatusAtLogonApp(RecordingApp):
    """Sends an application message at logon, as the exchange application does (35=h)."""

    def on_logon(self, session):
        super().on_logon(session)
        return [(session, FixMessage.of("h", (336, "CONTINUOUS"), (340, "3")))]


def test_what_the_app_sends_at_logon_follows_the_logon_reply_and_is_resent_like_any_message(clock):
    session, peer, _, _ = make(clock, app=StatusAtLogonApp())
    out = peer.logon()                                     # out 1: Logon, out 2: h
    assert [(t(m, 35), t(m, 34)) for m in out] == [("A", "1"), ("h", "2")]
    peer.send("5")                                         # out 3: Logout
    session.connection_lost(clock[0])
    session.send(FixMessage.of("8", (11, "late"), (150, "F")), clock[0])   # out 4, stored
    session.data_to_send()

    # The broker comes back without a reset, ahead of us (its 3 and 4 never arrived) and behind
    # us (it saw our 3 last): the Logon reply, then our ResendRequest, then the new h.
    peer.seq = 5
    out = peer.logon()
    assert [(t(m, 35), t(m, 34)) for m in out] == [("A", "5"), ("2", "6"), ("h", "7")]
    assert (t(out[1], 7), t(out[1], 16)) == ("3", "0")
    assert peer.send("4", (123, "Y"), (36, 6), seq=3) == []
    out = peer.send("2", (7, 4), (16, 0))
    assert [(t(m, 35), t(m, 34), t(m, 36), t(m, 43)) for m in out] == [
        ("8", "4", None, "Y"), ("4", "5", "7", "Y"), ("h", "7", None, "Y")]
    assert (session.store.next_sender, session.store.next_target) == (8, 7)


def test_reset_seq_num_flag_starts_both_sides_at_one(clock):
    session, peer, _, _ = make(clock)
    peer.logon()
    peer.send("0")
    session.connection_lost(clock[0])
    peer.seq = 1
    [logon] = peer.logon((141, "Y"))
    assert (t(logon, 34), t(logon, 141)) == ("1", "Y")
    assert session.store.next_target == 2


def test_refused_logon_gets_a_logout_with_the_reason(clock):
    session, peer, app, _ = make(clock, authenticate=lambda key, msg: None if msg.get(554) == "pw" else
                                 "Invalid username or password")
    [bye] = peer.logon((553, "BROKER01"), (554, "nope"))
    assert (t(bye, 35), t(bye, 58)) == ("5", "Invalid username or password")
    assert session.wants_close and app.events == []


def _password(key, msg):
    return None if msg.get(554) == "pw" else "Invalid username or password"


@pytest.mark.parametrize("reset_on_logon", [False, True])
@pytest.mark.parametrize("seq", [1, 2, 40])
def test_a_refused_logon_changes_nothing_in_the_session_even_with_reset_seq_num_flag(
        clock, tmp_path, reset_on_logon, seq):
    store = FileStore(tmp_path, "s")
    session, peer, _, _ = make(clock, store=store, authenticate=_password,
                               reset_on_logon=reset_on_logon)
    peer.logon((554, "pw"))
    peer.send("5")
    session.connection_lost(clock[0])
    session.send(FixMessage.of("8", (11, "fill while away"), (150, "F")), clock[0])
    session.data_to_send()
    before = (store.next_sender, store.next_target, store.get(1, 100))
    peer.seq = seq
    [bye] = peer.logon((141, "Y"), (554, "guess"))           # a stranger, asking for a reset
    assert (t(bye, 35), t(bye, 58)) == ("5", "Invalid username or password")
    assert session.wants_close
    session.connection_lost(clock[0])
    assert (store.next_sender, store.next_target, store.get(1, 100)) == before
    store.close()
    reopened = FileStore(tmp_path, "s")
    assert (reopened.next_sender, reopened.next_target, reopened.get(1, 100)) == before
    reopened.close()


@pytest.mark.parametrize("heartbeat", [0, 301, 10**15])
def test_a_logon_outside_the_heartbeat_bounds_is_refused_with_the_bounds_and_changes_nothing(
        clock, heartbeat):
    session, peer, app, _ = make(clock)
    [bye] = peer.logon((141, "Y"), heartbeat=heartbeat)
    assert (t(bye, 35), t(bye, 58)) == ("5", "HeartBtInt (108) must be 1 to 300 seconds")
    assert session.wants_close and app.events == []
    assert (session.store.next_sender, session.store.next_target, session.store.get(1, 10)) == (1, 1, [])


def test_heartbeat_bounds_are_configurable_and_checked_on_a_reset_while_logged_on(clock):
    session, peer, _, _ = make(clock, heartbeat_bounds=(5, 60))
    [bye] = peer.logon(heartbeat=2)
    assert t(bye, 58) == "HeartBtInt (108) must be 5 to 60 seconds"
    session.connection_lost(clock[0])
    peer.seq = 1
    [logon] = peer.logon(heartbeat=60)
    assert (t(logon, 35), t(logon, 108)) == ("A", "60")
    peer.seq = 1
    [rej] = peer.send("A", (98, 0), (108, 0), (141, "Y"))        # a reset asking for no heartbeats
    assert (t(rej, 35), t(rej, 371), t(rej, 373)) == ("3", "108", "5")
    assert session.logged_on


@pytest.mark.parametrize("heartbeat", [0, 1, 300])
def test_a_silent_connection_is_always_tested_then_timed_out(clock, heartbeat):
    # even when the bounds let a broker ask for no heartbeats (0): silence is still timed out,
    # on the session's configured interval (here 30 s)
    session, peer, _, _ = make(clock, heartbeat_bounds=(0, 300))
    peer.logon(heartbeat=heartbeat)
    interval = heartbeat or 30
    sent = []
    for _ in range(int(3 * interval) + 2):
        clock[0] += 1
        session.tick(clock[0])
        sent += types(peer.receive())
        if session.wants_close:
            break
    assert session.wants_close and session.close_reason == "timed out waiting for heartbeat"
    assert "1" in sent                                   # a TestRequest first, as FIX wants
    session.connection_lost(clock[0])
    peer.seq = 1
    [logon] = peer.logon((141, "Y"))                     # the broker's own reconnect is served
    assert t(logon, 35) == "A"


HUGE = "1" + "0" * 24                                       # 10^24: 25 digits


@pytest.mark.parametrize("msg_type, fields, tag, gap_fill", [
    ("4", [(36, HUGE)], "36", False),                         # SequenceReset-Reset
    ("4", [(123, "Y"), (36, HUGE)], "36", True),              # SequenceReset-GapFill
    ("2", [(7, HUGE), (16, "0")], "7", False),                # ResendRequest
    ("2", [(7, "1"), (16, HUGE)], "16", False),
])
def test_a_sequence_number_above_the_maximum_is_rejected_and_changes_nothing(
        clock, tmp_path, msg_type, fields, tag, gap_fill):
    store = FileStore(tmp_path, "s")
    session, peer, _, _ = make(clock, store=store)
    peer.logon()
    before = (store.next_sender, store.next_target)
    [rej] = peer.send(msg_type, *fields, seq=None if msg_type == "2" or gap_fill else 2)
    assert (t(rej, 35), t(rej, 371), t(rej, 373)) == ("3", tag, "5")
    assert store.next_target in (before[1], before[1] + 1)     # (a rejected message is used up)
    assert session.logged_on
    store.close()
    reopened = FileStore(tmp_path, "s")
    assert reopened.next_target == store.next_target
    reopened.close()


def test_a_msg_seq_num_above_the_maximum_is_rejected_not_queued(clock):
    session, peer, _, _ = make(clock)
    peer.logon()
    [rej] = peer.send("0", seq=HUGE)
    assert (t(rej, 35), t(rej, 371), t(rej, 373)) == ("3", "34", "5")
    assert session.store.next_target == 2 and session._queue == {}


def test_a_probe_tests_the_connection_now_and_a_dead_one_is_dropped_within_the_probe_timeout(clock):
    from ccerx.gateway.fix.session import PROBE_TIMEOUT
    session, peer, _, _ = make(clock)
    peer.logon(heartbeat=300)
    clock[0] += 1
    session.probe(clock[0])                      # heard from a second ago: alive, no probe
    assert peer.receive() == []
    clock[0] += 1
    session.probe(clock[0])                      # another connection asked for the session
    session.probe(clock[0])                      # (one TestRequest at a time)
    [test_request] = peer.receive()
    assert (t(test_request, 35), t(test_request, 112)) == ("1", "PROBE")
    peer.send("0", (112, "PROBE"))               # alive: it answers
    clock[0] += PROBE_TIMEOUT + 1
    session.tick(clock[0])
    assert session.logged_on
    session.probe(clock[0])                      # asked again; this time nothing comes back
    assert types(peer.receive()) == ["1"]
    clock[0] += PROBE_TIMEOUT - 0.5
    session.tick(clock[0])
    assert session.logged_on
    clock[0] += 0.5
    session.tick(clock[0])
    assert session.wants_close and "TestRequest" in session.close_reason


# (fields of a NewOrderSingle after the required ones, Text, RefTagID, SessionRejectReason)
REJECT_CASES = [
    ([(38, "+1")], "Incorrect data format for value", "38", "6"),
    ([(59, "Q")], "Value is incorrect (out of range) for this tag", "59", "5"),
    ([(9999, "x")], "Invalid tag number", "9999", "0"),
    ([(1, "BAD")], "Value is incorrect (out of range) for this tag", "1", "5"),   # raised by the app
]


@pytest.mark.parametrize("extra, text, tag, reason", REJECT_CASES)
def test_problems_become_one_reject_and_the_sequence_moves_on(clock, extra, text, tag, reason):
    session, peer, _, _ = make(clock)
    peer.logon()
    [rej] = peer.send("D", (11, "o"), (40, 1), (54, 1), (60, "20270115-08:00:00"), *extra)
    assert (t(rej, 35), t(rej, 45), t(rej, 58), t(rej, 371), t(rej, 372), t(rej, 373)) == \
        ("3", "2", text, tag, "D", reason)
    assert session.store.next_target == 3 and session.logged_on


def test_an_application_bug_is_answered_by_business_reject_and_the_session_survives(clock):
    session, peer, app, _ = make(clock)
    peer.logon()
    app.fail = True
    [bmr] = peer.send("D", (11, "o"), (40, 1), (54, 1), (60, "20270115-08:00:00"))
    assert (t(bmr, 35), t(bmr, 380), t(bmr, 45)) == ("j", "4", "2")
    app.fail = False
    [ack] = peer.send("D", (11, "p"), (40, 1), (54, 1), (60, "20270115-08:00:00"))
    assert t(ack, 11) == "p"


def test_messages_to_other_sessions_go_to_the_router(clock):
    class Forward(RecordingApp):
        def on_message(self, session, message):
            return [(OTHER, FixMessage.of("8", (11, message.get(11))))]
    session, peer, _, routed = make(clock, app=Forward())
    peer.logon()
    assert peer.send("D", (11, "o"), (40, 1), (54, 1), (60, "20270115-08:00:00")) == []
    assert [(k, m.get(11)) for k, m in routed] == [(OTHER, "o")]


def test_garbage_is_ignored_after_logon_and_disconnects_before(clock):
    session, peer, _, _ = make(clock)
    session.connection_made(clock[0])
    session.receive_data(b"8=FIX.4.4\x019=5\x0135=0\x01garbage\x0110=000\x01", clock[0])
    assert session.wants_close
    session.connection_lost(clock[0])
    peer.logon()
    session.receive_data(b"8=FIX.4.4\x019=5\x0135=0\x01garbage\x0110=000\x01", clock[0])
    assert session.logged_on and peer.receive() == []
    assert types(peer.send("1", (112, "still here"))) == ["0"]


def test_the_transition_table_refuses_misuse_by_the_driver(clock):
    session, _, _, _ = make(clock)
    session.connection_made(clock[0])
    with pytest.raises(LocalProtocolError):
        session.connection_made(clock[0])


def test_mutated_and_random_bytes_never_raise_out_of_the_session(clock):
    """Fuzz: valid messages with random byte edits, and pure noise; the session must answer,
    ignore or disconnect, never raise (a raise would drop the connection in the server)."""
    import random
    rng = random.Random(20240501)
    alphabet = b"0123456789=\x01-+.AZaz\xb2\xff 8910"
    for round_ in range(300):
        session, peer, _, _ = make(clock)
        peer.logon()
        templates = [
            peer.build("D", (11, "o"), (40, 2), (44, "1.5"), (54, 1), (60, "20270115-08:00:00"), (38, 10)),
            peer.build("1", (112, "ping")),
            peer.build("2", (7, 1), (16, 0)),
            peer.build("4", (36, 9), (123, "Y")),
            peer.build("A", (98, 0), (108, 30), (141, "Y")),
        ]
        data = bytearray(rng.choice(templates))
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(len(data))
            action = rng.random()
            if action < 0.4:
                data[i] = rng.choice(alphabet)
            elif action < 0.7:
                data.insert(i, rng.choice(alphabet))
            else:
                del data[i]
        if round_ % 10 == 0:
            data = bytearray(rng.randbytes(200))
        session.receive_data(bytes(data), clock[0])
        session.tick(clock[0] + 1)
        peer.receive()
        assert session.state in (State.LOGGED_ON, State.LOGOUT_SENT, State.CLOSING)


@pytest.mark.parametrize("tag, value", [(34, "\xb2"), (108, "\xb9"), (34, "-"), (52, "2027\xb2115-08:00:00"),
                                        (34, "99999999999999999999999")])
def test_well_framed_nonsense_in_numeric_fields_is_rejected_or_ignored(clock, tag, value):
    session, peer, _, _ = make(clock)
    peer.logon()
    header = {34: "2", 49: "BROKER01", 52: codec.utc_timestamp(clock[0]), 56: "CCERX"}
    body = [(112, "x")]
    if tag in header:
        header[tag] = value
    else:
        body.append((tag, value))
    session.receive_data(codec.encode(sorted(header.items()), body, "1"), clock[0])
    out = peer.receive()
    assert session.wants_close or [t(m, 35) for m in out] in (["3"], ["2"], [])


@pytest.mark.parametrize("heartbeat", ["abc", "", "-5", "３０"])
def test_a_logon_with_a_heartbeat_that_is_not_a_number_is_refused_saying_so(clock, heartbeat):
    """A review found HeartBtInt=abc just closed the connection, the broker told nothing."""
    session, peer, app, _ = make(clock)
    [bye] = peer.logon((141, "Y"), heartbeat=heartbeat)
    assert (t(bye, 35), t(bye, 58)) == ("5", "HeartBtInt (108) must be 1 to 300 seconds")
    assert session.wants_close and app.events == []
