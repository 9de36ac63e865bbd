"""A cluster standby learns the day's orders from the FIX records it mirrors, as they come
(ExchangeApplication.learn_sent), and takes over with the engine's resting orders
(take_learned_over): every order must then answer exactly as after a restart, which reads the
whole stores at once (on_session_restored) — issue 15."""
from __future__ import annotations

import itertools

from ccerx.engine.core.commands import EndOfDay
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.formats.config import load_instruments
from ccerx.gateway.config import GatewayConfig
from ccerx.gateway.fix.application import FixMessage, SessionKey
from ccerx.gateway.fix.session import Session
from ccerx.gateway.fix.store import MemoryStore
from ccerx.gateway.fix.translate import ExchangeApplication

B1 = SessionKey("FIX.4.4", "CCERX", "BROKER01")
B2 = SessionKey("FIX.4.4", "CCERX", "BROKER02")
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
STATUS_FIELDS = (37, 11, 39, 14, 151, 6, 38, 44, 1, 55, 54, 40, 59, 103)
_seq = itertools.count(1)


def application(exchange, start=T0):
    clock = itertools.count(start, 1_000_000)
    return ExchangeApplication(exchange, "CCERX", ["BROKER01", "BROKER02"],
                               clock=lambda: next(clock))


def msg(msg_type, *fields):
    return FixMessage.of(msg_type, (34, next(_seq)), *fields)


def new_order(cl, account, side, qty, price, tif=None):
    fields = [(11, cl), (1, account), (55, "CCER-AFF"), (54, side), (60, "20260101-00:00:00.000"),
              (38, qty), (40, "2"), (44, price)]
    return msg("D", *fields, *([(59, tif)] if tif else []))


def cancel(cl, orig):
    return msg("F", (41, orig), (11, cl), (55, "CCER-AFF"), (54, "1"),
               (60, "20260101-00:00:00.000"), (38, 1))


def replace(cl, orig, qty, price):
    return msg("G", (41, orig), (11, cl), (55, "CCER-AFF"), (54, "1"),
               (60, "20260101-00:00:00.000"), (38, qty), (40, "2"), (44, price))


class LeaderAndStandby:
    """The leader's application and stores; a standby's application fed what each store
    took after every message, as gateway/cluster.py feeds it what it mirrors."""

    def __init__(self):
        config = GatewayConfig.demo()
        self.exchange = Exchange(load_instruments(None), config.build_accounts())
        self.leader = application(self.exchange)
        self.standby = application(self.exchange, T0 + 10**12)
        self.sessions = {key: Session(key, None, MemoryStore()) for key in (B1, B2)}
        self.mirrored = {key: 1 for key in self.sessions}

    def _stored(self, out):
        for to, message in out:
            self.sessions[to].send(message, T0 / 1e9)
        for key, session in self.sessions.items():
            store = session.store
            fresh = store.get(self.mirrored[key], store.next_sender - 1)
            self.mirrored[key] = store.next_sender
            if fresh:
                self.standby.learn_sent(key, fresh)

    def run(self, key, message):
        self._stored(self.leader.on_message(key, message))

    def operator(self, command):
        self._stored(self.leader.run_operator_command(command))

    def restarted(self):
        again = application(self.exchange, T0 + 2 * 10**12)
        for key, session in self.sessions.items():
            again.on_session_restored(key, session.store.each(1, session.store.next_sender - 1))
        return again


def status_of(app, key, cl):
    out = app.on_message(key, msg("H", (11, cl), (55, "CCER-AFF"), (54, "1")))
    assert len(out) == 1
    return [(tag, out[0][1].get(tag)) for tag in STATUS_FIELDS]


def trading_day(cluster):
    cluster.run(B2, new_order("s1", "HOLD02", "2", 10, "62.00"))
    cluster.run(B1, new_order("b1", "EMIT01", "1", 10, "62.10"))          # both filled
    cluster.run(B1, new_order("c1", "EMIT01", "1", 5, "61.00"))
    cluster.run(B1, cancel("c2", "c1"))                                     # cancelled
    cluster.run(B1, new_order("p1", "EMIT01", "1", 20, "61.50"))
    cluster.run(B2, new_order("s2", "HOLD02", "2", 5, "61.50"))             # p1 partly filled
    cluster.run(B1, replace("p2", "p1", 30, "61.60"))                       # and replaced
    cluster.run(B2, new_order("s3", "HOLD02", "2", 3, "61.60"))             # AvgPx 61.5375
    cluster.run(B1, new_order("x1", "HOLD02", "1", 1, "61.00"))             # not its account
    cluster.run(B1, new_order("i1", "EMIT01", "1", 4, "60.00", tif="3"))    # expired (IOC)
    cluster.run(B2, new_order("r1", "HOLD02", "2", 6, "63.00"))             # rests untouched


ORDERS = {B1: ("b1", "c1", "c2", "p1", "p2", "x1", "i1"), B2: ("s1", "s2", "s3", "r1")}


def test_a_standby_that_learnt_as_it_went_answers_as_a_restart_would():
    cluster = LeaderAndStandby()
    trading_day(cluster)
    cluster.standby.take_learned_over()
    restarted = cluster.restarted()
    for key, names in ORDERS.items():
        for cl in names:
            expected = status_of(restarted, key, cl)
            assert status_of(cluster.standby, key, cl) == expected, cl
            assert dict(expected)[39] != "8" or cl == "x1"
    # and the resting order is the engine's: it trades on the new leader under its ClOrdID
    out = cluster.standby.on_message(B1, new_order("t1", "EMIT01", "1", 6, "63.00"))
    assert [(m.get(11), m.get(39)) for k, m in out if k == B2 and m.msg_type == "8"] == [
        ("r1", "2")]


def test_a_close_while_standing_by_forgets_the_finished_orders():
    cluster = LeaderAndStandby()
    trading_day(cluster)
    cluster.operator(EndOfDay(cluster.leader.clock()))                      # the close
    cluster.run(B1, new_order("n1", "EMIT01", "1", 2, "61.00"))             # the next day
    cluster.standby.take_learned_over()
    restarted = cluster.restarted()
    for key, names in {**ORDERS, B1: ORDERS[B1] + ("n1",)}.items():
        for cl in names:
            assert status_of(cluster.standby, key, cl) == status_of(restarted, key, cl), cl
    assert dict(status_of(cluster.standby, B1, "b1"))[39] == "8"             # unknown now
    assert dict(status_of(cluster.standby, B1, "n1"))[39] == "0"
