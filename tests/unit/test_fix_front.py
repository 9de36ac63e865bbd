"""A front gateway's application (issue 15 item 4): it validates FIX as always but forwards
each command (the `forward` hook) instead of applying it; its replica applies the commands in
stream order, and the events are translated with the request the command came from (its own
commands) or with a neutral request (everyone else's). Two replicas of one engine stand in
for the leader's and the front's, the stream is a list: each broker must get each report
exactly once, from the process it is logged on to. The processes and NATS:
tests/integration/test_cluster_fronts.py."""
from __future__ import annotations

import itertools

import pytest

from ccerx.engine.core.commands import NewOrder, SetTradingStatus
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.formats.config import load_instruments
from ccerx.gateway.config import GatewayConfig
from ccerx.gateway.fix.application import FixMessage, SessionKey
from ccerx.gateway.fix.translate import ExchangeApplication

B1 = SessionKey("FIX.4.4", "CCERX", "BROKER01")
B2 = SessionKey("FIX.4.4", "CCERX", "BROKER02")
T0 = 1_767_225_600_000_000_000
_seq = itertools.count(1)


def msg(msg_type, *fields):
    return FixMessage.of(msg_type, (34, next(_seq)), *fields)


def new_order(cl, account, side, qty, price):
    return msg("D", (11, cl), (1, account), (55, "CCER-AFF"), (54, side),
               (60, "20260101-00:00:00.000"), (38, qty), (40, "2"), (44, price))


def cancel(cl, orig, side):
    return msg("F", (41, orig), (11, cl), (55, "CCER-AFF"), (54, side),
               (60, "20260101-00:00:00.000"), (38, 1))


class Recording:
    """The leader's engine, keeping the commands its own application applied (the stream)."""

    def __init__(self, exchange):
        self.exchange, self.applied = exchange, []

    def apply(self, command):
        self.applied.append(command)
        return self.exchange.apply(command)

    def __getattr__(self, name):
        return getattr(self.exchange, name)


class LeaderAndFront:
    """The leader's application (BROKER01's process) applies its own commands to its
    engine; the front's (BROKER02's) forwards them."""

    def __init__(self):
        config = GatewayConfig.demo()
        clock = itertools.count(T0, 1_000_000)
        self.leader_engine = Exchange(load_instruments(None), config.build_accounts())
        self.front_engine = Exchange(load_instruments(None), config.build_accounts())
        self.recording = Recording(self.leader_engine)
        self.forwarded: list = []            # (command, request) the front handed over
        self.leader = ExchangeApplication(self.recording, "CCERX", ["BROKER01"],
                                          clock=lambda: next(clock))
        self.front = ExchangeApplication(self.front_engine, "CCERX", ["BROKER02"],
                                         clock=lambda: next(clock),
                                         forward=lambda c, r: self.forwarded.append((c, r)))

    def leader_order(self, message) -> tuple[list, list]:
        """BROKER01's message on the leader, then the front's replica applies what it made."""
        out = self.leader.on_message(B1, message)
        front_out = []
        for command in self.recording.applied:
            front_out += self.front.translate_applied(self.front_engine.apply(command))
        self.recording.applied = []
        return out, front_out

    def deliver_front_batch(self) -> tuple[list, list]:
        """The leader applies what the front forwarded (translated neutrally there), then the
        front's replica applies the same commands and translates them with its requests."""
        batch, self.forwarded = self.forwarded, []
        leader_out, front_out = [], []
        for command, request in batch:
            leader_out += self.leader.translate_applied(self.leader_engine.apply(command))
            front_out += self.front.translate_applied(self.front_engine.apply(command), request)
        return leader_out, front_out


def reports(out, session):
    return [m for k, m in out if k == session and m.msg_type == "8"]


@pytest.fixture
def pair():
    return LeaderAndFront()


def test_a_front_forwards_instead_of_applying(pair):
    out = pair.front.on_message(B2, new_order("s1", "HOLD02", "2", 10, "62.00"))
    assert out == []                                  # no acknowledgement before the stream
    assert pair.front_engine.seq == 0                 # nothing applied by the front itself
    [(command, request)] = pair.forwarded
    assert (command.order_id, command.owner) == ("BROKER02:s1", "BROKER02")
    # a duplicate ClOrdID in flight is refused at once (the gateway knows it)
    dup = pair.front.on_message(B2, new_order("s1", "HOLD02", "2", 10, "62.00"))
    assert [m.get(150) for _, m in dup] == ["8"]
    # gateway rejects need no stream: answered at once
    bad = pair.front.on_message(B2, new_order("s2", "EMIT01", "2", 10, "62.00"))
    assert [(k, m.get(150), m.get(103)) for k, m in bad] == [(B2, "8", "15")]
    assert len(pair.forwarded) == 1


def test_each_side_of_a_cross_is_reported_once_by_its_own_process(pair):
    pair.front.on_message(B2, new_order("s1", "HOLD02", "2", 10, "62.00"))
    leader_out, front_out = pair.deliver_front_batch()
    assert reports(leader_out, B1) == []              # the leader's brokers own nothing of it
    [ack] = reports(front_out, B2)
    assert (ack.get(150), ack.get(37), ack.get(11)) == ("0", "BROKER02:s1", "s1")
    # BROKER01 on the leader takes it: its fill from the leader, BROKER02's from the front
    out, front_out = pair.leader_order(new_order("b1", "EMIT01", "1", 4, "62.00"))
    assert [m.get(150) for m in reports(out, B1)] == ["0", "F"]
    assert reports(out, B2) == []                     # not the leader's to tell
    assert reports(front_out, B1) == []
    [fill] = reports(front_out, B2)
    assert (fill.get(150), fill.get(37), fill.get(14), fill.get(151)) == ("F", "BROKER02:s1",
                                                                         "4", "6")
    assert pair.front_engine.state_hash() == pair.leader_engine.state_hash()


def test_cancels_and_status_of_a_front_order_go_through_the_stream(pair):
    pair.front.on_message(B2, new_order("s1", "HOLD02", "2", 10, "62.00"))
    pair.deliver_front_batch()
    assert pair.front.on_message(B2, cancel("s1c", "s1", "2")) == []
    leader_out, front_out = pair.deliver_front_batch()
    assert reports(leader_out, B1) == []
    [done] = reports(front_out, B2)
    assert (done.get(150), done.get(11), done.get(41)) == ("4", "s1c", "s1")
    assert pair.front_engine.state_hash() == pair.leader_engine.state_hash()


def test_an_engine_reject_of_a_forwarded_order_reaches_its_broker(pair):
    pair.front.on_message(B2, new_order("big", "HOLD02", "2", 10**9, "62.00"))
    leader_out, front_out = pair.deliver_front_batch()
    assert reports(leader_out, B1) == []
    [reject] = reports(front_out, B2)
    assert (reject.get(150), reject.get(11)) == ("8", "big")


def test_a_front_takes_no_operator_commands(pair):
    with pytest.raises(RuntimeError, match="front"):
        pair.front.run_operator_command(SetTradingStatus(False, "halt", T0))
    # ... but tells its brokers of the leader's (through the stream)
    events = pair.front_engine.apply(SetTradingStatus(False, "halt", T0, halted=True))
    out = pair.front.translate_applied(events)
    assert [(k, m.msg_type) for k, m in out] == [(B2, "h")]


def test_a_restarted_front_acknowledges_what_its_earlier_run_sent(pair):
    """An order the front forwarded before it stopped, in the stream only after: its new run
    (same brokers) learns it from the stream, acknowledges it and reports its fills."""
    pair.front.on_message(B2, new_order("s1", "HOLD02", "2", 10, "62.00"))
    [(command, _)] = pair.forwarded
    clock = itertools.count(T0 + 10**12, 1_000_000)
    again = ExchangeApplication(pair.front_engine, "CCERX", ["BROKER02"],
                                clock=lambda: next(clock), forward=lambda c, r: None)
    out = again.translate_applied(pair.front_engine.apply(command))   # no request: foreign
    [ack] = reports(out, B2)
    assert (ack.get(150), ack.get(37), ack.get(11), ack.get(44)) == ("0", "BROKER02:s1", "s1",
                                                                     "62.00")
    # a BROKER01 order from the stream takes 4 t of it: the new run reports the fill
    taker = NewOrder("BROKER01:b1", "EMIT01", "CCER-AFF", "buy", "limit", "day",
                     command.price_units, 4, T0 + 5, "BROKER01")
    out = again.translate_applied(pair.front_engine.apply(taker))
    [fill] = reports(out, B2)
    assert (fill.get(150), fill.get(11), fill.get(14), fill.get(151)) == ("F", "s1", "4", "6")


def test_a_mass_cancel_on_a_front_is_answered_once_its_cancels_are_in(pair):
    for cl in ("s1", "s2"):
        pair.front.on_message(B2, new_order(cl, "HOLD02", "2", 10, "63.00"))
    pair.deliver_front_batch()
    out = pair.front.on_message(B2, msg("q", (11, "mc1"), (530, "7"),
                                        (60, "20260101-00:00:00.000")))
    assert out == [] and len(pair.forwarded) == 2
    _, front_out = pair.deliver_front_batch()
    assert [(m.msg_type, m.get(150)) for _, m in front_out if m.msg_type in "r8"] == [
        ("r", None), ("8", "4"), ("8", "4")]
    report = front_out[0][1]
    assert (report.get(11), report.get(531), report.get(533)) == ("mc1", "7", "2")
    assert pair.front_engine.state_hash() == pair.leader_engine.state_hash()
