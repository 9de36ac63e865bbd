"""The trading calendar driving the exchange behind the gateway: operator commands, the
TradingSessionStatus (h) broadcast, expiry at the close, and the serve-side schedule."""
from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pytest

from ccerx.engine.core.calendar import TradingCalendar
from ccerx.engine.core.commands import EndOfDay, NewOrder, SetTradingStatus
from ccerx.engine.formats.config import load_instruments
from ccerx.engine.core.exchange import Exchange
from ccerx.gateway.config import GatewayConfig
from ccerx.gateway.fix.application import FixMessage, SessionKey
from ccerx.gateway.fix.translate import ExchangeApplication
from ccerx.scripts.cmd_serve import calendar_commands

B1 = SessionKey("FIX.4.4", "CCERX", "BROKER01")
B2 = SessionKey("FIX.4.4", "CCERX", "BROKER02")
CST = timezone(timedelta(hours=8))


def ns(y, mo, d, h, mi):
    return int(datetime(y, mo, d, h, mi, tzinfo=CST).timestamp()) * 1_000_000_000


@pytest.fixture
def app():
    config = GatewayConfig.demo()
    exchange = Exchange(load_instruments(None), config.build_accounts())
    clock = itertools.count(ns(2026, 11, 27, 10, 0), 1_000_000)
    return ExchangeApplication(exchange, config.comp_id, config.brokers, clock=lambda: next(clock))


def order(cl, account="EMIT01", qty=10, price="62.00"):
    return FixMessage.of("D", (34, 2), (11, cl), (1, account), (55, "CCER-AFF"), (54, "1"),
                         (60, "20261127-02:00:00.000"), (38, qty), (40, "2"), (44, price))


def test_closing_the_market_tells_every_broker_and_refuses_orders(app):
    out = app.run_operator_command(SetTradingStatus(False, "lunch break", ns(2026, 11, 27, 11, 30)))
    assert sorted(key.their_comp_id for key, _ in out) == ["BROKER01", "BROKER02"]
    for _, message in out:
        assert (message.msg_type, message.get(336), message.get(340), message.get(58)) == \
            ("h", "CONTINUOUS", "3", "lunch break")
    [(_, report)] = app.on_message(B1, order("c1"))
    assert (report.get(150), report.get(39)) == ("8", "8")
    assert "market_closed" in report.get(58)
    out = app.run_operator_command(SetTradingStatus(True, "afternoon session"))
    assert {m.get(340) for _, m in out} == {"2"}
    [(_, report)] = app.on_message(B1, order("c2"))
    assert report.get(150) == "0"


def test_a_broker_is_told_the_trading_status_at_logon(app):
    [(key, status)] = app.on_logon(B1)
    assert key == B1
    assert status.fields == [(35, "h"), (336, "CONTINUOUS"), (340, "2"), (58, "open")]
    app.run_operator_command(SetTradingStatus(False, "lunch break", ns(2026, 11, 27, 11, 30)))
    [(key, status)] = app.on_logon(B2)
    assert key == B2
    assert status.fields == [(35, "h"), (336, "CONTINUOUS"), (340, "3"), (58, "lunch break")]
    stranger = SessionKey("FIX.4.4", "CCERX", "BROKER99")
    assert app.on_logon(stranger) == []


def status_request(req_id, subscription="0", *more):
    fields = [(34, 3)] + ([(335, req_id)] if req_id is not None else [])
    return FixMessage.of("g", *fields, *more, (263, subscription))


def test_trading_session_status_request_is_answered_with_its_id(app):
    [(key, status)] = app.on_message(B1, status_request("q1"))
    assert key == B1
    assert status.fields == [(35, "h"), (335, "q1"), (336, "CONTINUOUS"), (340, "2"), (58, "open")]
    app.run_operator_command(SetTradingStatus(False, "halt"))
    [(_, status)] = app.on_message(B1, status_request("q2", "1", (336, "CONTINUOUS")))
    assert status.fields == [(35, "h"), (335, "q2"), (336, "CONTINUOUS"), (340, "3"), (58, "halt")]
    [(_, status)] = app.on_message(B1, status_request("q3", "2"))    # unsubscribe
    assert (status.get(335), status.get(340)) == ("q3", "3")
    assert status.get(58).startswith("halt; every broker is sent every change")


def test_an_unknown_trading_session_is_a_rejected_request(app):
    [(_, status)] = app.on_message(B1, status_request("q1", "0", (336, "AUCTION")))
    assert [(t, v) for t, v in status.fields if t != 58] == [
        (35, "h"), (335, "q1"), (336, "AUCTION"), (340, "6"), (567, "1")]
    assert "unknown TradingSessionID 'AUCTION'" in status.get(58)


def test_a_status_request_without_its_id_is_refused(app):
    # (over FIX the session layer's dictionary refuses it first: Reject 373=1, 371=335)
    [(_, reject)] = app.on_message(B1, status_request(None))
    assert (reject.msg_type, reject.get(372), reject.get(380), reject.get(45)) == (
        "j", "g", "5", "3")
    assert "TradSesReqID (335)" in reject.get(58)
    [(_, reject)] = app.on_message(B1, status_request("q1", "9"))
    assert (reject.msg_type, reject.get(379), reject.get(380)) == ("j", "q1", "0")


def test_end_of_day_expires_day_orders_to_their_brokers(app):
    app.on_message(B2, FixMessage.of("D", (34, 2), (11, "s1"), (1, "HOLD02"), (55, "CCER-AFF"),
                                     (54, "2"), (60, "20261127-02:00:00.000"), (38, 5),
                                     (40, "2"), (44, "63.00")))
    out = app.run_operator_command(EndOfDay(ns(2026, 11, 27, 15, 0)))
    expiries = [(key, m) for key, m in out if m.msg_type == "8"]
    assert [(key, m.get(150), m.get(39), m.get(151)) for key, m in expiries] == \
        [(B2, "C", "C", "0")]
    assert app.exchange.books["CCER-AFF"].orders == {}


def test_orders_are_not_operator_commands(app):
    with pytest.raises(TypeError):
        app.run_operator_command(NewOrder("x", "EMIT01", "CCER-AFF", "buy", "limit", None, 1, 1))


CAL = TradingCalendar()


def test_schedule_opens_breaks_and_closes_the_day_once():
    ex = Exchange()
    friday_close = ns(2026, 11, 27, 15, 0)
    # a brand-new exchange started at 10:00 on Friday has no missed close (run_calendar's
    # floor: the latest scheduled close when it starts), then or on any later pass
    morning = ns(2026, 11, 27, 10, 0)
    thursday = CAL.last_close(morning)
    fresh = Exchange()
    assert calendar_commands(CAL, fresh, morning, floor=thursday) == []
    fresh.apply(SetTradingStatus(False, "halt", morning + 1))
    assert calendar_commands(CAL, fresh, morning + 60_000_000_000, morning, thursday) == []
    # one that traded on Thursday and was down at Thursday's close catches it up first
    ex.apply(NewOrder("t1", "A", "CCER-AFF", "buy", "limit", None, 62_000_000, 1,
                      ns(2026, 11, 26, 14, 0)))
    commands = calendar_commands(CAL, ex, morning)
    thursday_close = ns(2026, 11, 26, 15, 0)
    assert [(type(c).__name__, getattr(c, "open", None), c.ts) for c in commands] == [
        ("SetTradingStatus", False, thursday_close), ("EndOfDay", None, thursday_close),
        ("SetTradingStatus", True, morning)]
    for c in commands:
        ex.apply(c)
    assert ex.trading_open is True and ex.last_close_ts == thursday_close
    assert calendar_commands(CAL, ex, morning + 1) == []          # nothing more to do
    lunch = calendar_commands(CAL, ex, ns(2026, 11, 27, 11, 30))
    assert lunch == [SetTradingStatus(False, "break", ns(2026, 11, 27, 11, 30))]
    ex.apply(lunch[0])
    ex.apply(calendar_commands(CAL, ex, ns(2026, 11, 27, 13, 0))[0])
    assert ex.trading_open
    close = calendar_commands(CAL, ex, friday_close + 5_000_000_000)   # woke up 5 s late
    assert [type(c).__name__ for c in close] == ["SetTradingStatus", "EndOfDay"]
    assert close[0].open is False and close[1].ts == friday_close
    for c in close:
        ex.apply(c)
    # the weekend: closed, and Friday's close is not run twice
    assert calendar_commands(CAL, ex, ns(2026, 11, 28, 12, 0)) == []
    monday = calendar_commands(CAL, ex, ns(2026, 11, 30, 9, 30))
    assert monday == [SetTradingStatus(True, "morning session", ns(2026, 11, 30, 9, 30))]


def test_round_the_clock_reopens_a_market_left_closed():
    ex = Exchange()
    ex.apply(SetTradingStatus(False, "close", 1))
    [reopen] = calendar_commands(None, ex, 2)
    assert reopen.open is True
    ex.apply(reopen)
    assert calendar_commands(None, ex, 3) == []


def test_a_day_traded_round_the_clock_is_not_cut_by_switching_to_cn_hours():
    ex = Exchange()
    # the server ran with --hours always and took an order after Friday's 15:00
    ex.apply(NewOrder("o1", "A", "CCER-AFF", "buy", "limit", None, 62_000_000, 1,
                      ns(2026, 11, 27, 16, 0)))
    commands = calendar_commands(CAL, ex, ns(2026, 11, 27, 17, 0))
    assert commands == [SetTradingStatus(False, "closed", ns(2026, 11, 27, 17, 0))]
    assert ex.books["CCER-AFF"].orders   # nothing expired


def test_a_day_the_operator_closed_early_is_not_closed_again_nor_reopened():
    ex = Exchange()
    for c in calendar_commands(CAL, ex, ns(2026, 11, 27, 10, 0)):
        ex.apply(c)
    assert ex.trading_open
    # the operator's desk: halt, then end the day at 10:30 (ccerx operator halt; ... eod)
    ex.apply(SetTradingStatus(False, "halt", ns(2026, 11, 27, 10, 30)))
    ex.apply(EndOfDay(ns(2026, 11, 27, 10, 30)))
    assert calendar_commands(CAL, ex, ns(2026, 11, 27, 11, 30)) == []
    assert calendar_commands(CAL, ex, ns(2026, 11, 27, 13, 0)) == []    # no reopening
    assert calendar_commands(CAL, ex, ns(2026, 11, 27, 15, 0)) == []    # no second close
    # an early close that forgot the halt: the next boundary closes the market for the day
    ex.apply(SetTradingStatus(True, "resume", ns(2026, 11, 27, 13, 30)))
    shut = calendar_commands(CAL, ex, ns(2026, 11, 27, 15, 0))
    assert shut == [SetTradingStatus(False, "closed", ns(2026, 11, 27, 15, 0))]
    ex.apply(shut[0])
    assert ex.last_close_ts == ns(2026, 11, 27, 10, 30)          # still the one close
    monday = calendar_commands(CAL, ex, ns(2026, 11, 30, 9, 30))
    assert monday == [SetTradingStatus(True, "morning session", ns(2026, 11, 30, 9, 30))]


def test_an_early_close_in_the_afternoon_session_keeps_the_market_shut_until_tomorrow():
    ex = Exchange()
    for c in calendar_commands(CAL, ex, ns(2026, 11, 26, 13, 0)):
        ex.apply(c)
    ex.apply(EndOfDay(ns(2026, 11, 26, 14, 0)))                 # eod without a halt
    [shut] = calendar_commands(CAL, ex, ns(2026, 11, 26, 14, 0) + 1)
    assert shut.open is False and "closed early" in shut.note
    ex.apply(shut)
    friday = calendar_commands(CAL, ex, ns(2026, 11, 27, 9, 30))
    assert friday == [SetTradingStatus(True, "morning session", ns(2026, 11, 27, 9, 30))]


def test_serve_refuses_a_bad_holiday_file(tmp_path, capsys):
    from ccerx.scripts.ccerx import main
    bad = tmp_path / "holidays.txt"
    bad.write_text("2026-10-01\nOctober 2nd\n")
    assert main(["serve", "--hours", "cn", "--holidays", str(bad),
                 "--data-dir", str(tmp_path / "d")]) == 2
    assert "holidays.txt:2" in capsys.readouterr().err
    bad.write_text("2026-10-01\n")
    assert main(["serve", "--holidays", str(bad), "--data-dir", str(tmp_path / "d")]) == 2
    assert "needs --hours cn" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()          # refused before anything was created


def test_an_operator_halt_stands_between_session_boundaries():
    ex = Exchange()
    ex.apply(EndOfDay(ns(2026, 11, 26, 15, 0)))          # Thursday closed as scheduled
    for c in calendar_commands(CAL, ex, ns(2026, 11, 27, 9, 30)):
        ex.apply(c)
    ex.apply(SetTradingStatus(False, "halt", ns(2026, 11, 27, 10, 0)))
    # the loop looks at least once a minute: no boundary passed, the halt stands
    last = ns(2026, 11, 27, 10, 0)
    for minute in range(1, 90):
        now = last + 60_000_000_000
        assert calendar_commands(CAL, ex, now, last) == [], minute
        last = now
    # the 11:30 boundary passes: the schedule speaks again (the break), and so at 13:00
    assert calendar_commands(CAL, ex, ns(2026, 11, 27, 11, 30), last) == [] \
        and not ex.trading_open                                    # already closed: nothing
    [reopen] = calendar_commands(CAL, ex, ns(2026, 11, 27, 13, 0), ns(2026, 11, 27, 12, 59))
    assert reopen.open is True
    ex.apply(reopen)
    for c in calendar_commands(CAL, ex, ns(2026, 11, 27, 15, 0), ns(2026, 11, 27, 14, 59)):
        ex.apply(c)
    assert not ex.trading_open and ex.last_close_ts == ns(2026, 11, 27, 15, 0)
    # a resume outside the hours stands until the next boundary too (Monday's opening)
    ex.apply(SetTradingStatus(True, "resume", ns(2026, 11, 27, 16, 0)))
    assert calendar_commands(CAL, ex, ns(2026, 11, 27, 16, 1), ns(2026, 11, 27, 16, 0)) == []
    assert calendar_commands(CAL, ex, ns(2026, 11, 30, 9, 30), ns(2026, 11, 30, 9, 29)) == []


def test_a_deposit_after_the_close_time_does_not_skip_the_close():
    from ccerx.engine.core.commands import Deposit
    ex = Exchange()
    for c in calendar_commands(CAL, ex, ns(2026, 11, 27, 14, 0)):
        ex.apply(c)
    ex.apply(Deposit("D1", "A", "CNY", 100, ns(2026, 11, 27, 15, 0) + 1_000_000))
    close = calendar_commands(CAL, ex, ns(2026, 11, 27, 15, 0) + 2_000_000,
                              ns(2026, 11, 27, 14, 59))
    assert [type(c).__name__ for c in close] == ["SetTradingStatus", "EndOfDay"]


def test_an_eod_before_the_opening_does_not_cancel_the_trading_day():
    ex = Exchange()
    ex.apply(SetTradingStatus(False, "pre-open", ns(2026, 11, 27, 8, 0)))
    ex.apply(EndOfDay(ns(2026, 11, 27, 9, 0)))          # the operator, before 09:30
    [opening] = calendar_commands(CAL, ex, ns(2026, 11, 27, 9, 30), ns(2026, 11, 27, 9, 0))
    assert opening.open is True
    ex.apply(opening)
    close = calendar_commands(CAL, ex, ns(2026, 11, 27, 15, 0), ns(2026, 11, 27, 14, 59))
    assert close[-1] == EndOfDay(ns(2026, 11, 27, 15, 0))


def test_a_halt_ends_at_the_next_boundary_or_the_close():
    ex = Exchange()
    ex.apply(EndOfDay(ns(2026, 11, 26, 15, 0)))
    for c in calendar_commands(CAL, ex, ns(2026, 11, 27, 9, 30)):
        ex.apply(c)
    ex.apply(SetTradingStatus(False, "system check", ns(2026, 11, 27, 10, 0), True))
    # the lunch boundary: still closed, but as the schedule's break, no longer halted
    [lunch] = calendar_commands(CAL, ex, ns(2026, 11, 27, 11, 30), ns(2026, 11, 27, 11, 29))
    assert lunch == SetTradingStatus(False, "break", ns(2026, 11, 27, 11, 30))
    ex.apply(lunch)
    assert not ex.halted
    [reopen] = calendar_commands(CAL, ex, ns(2026, 11, 27, 13, 0), ns(2026, 11, 27, 12, 59))
    ex.apply(reopen)
    # halted at 14:00 and still halted at 15:00: the close ends the halt with the day
    ex.apply(SetTradingStatus(False, "system check", ns(2026, 11, 27, 14, 0), True))
    close = calendar_commands(CAL, ex, ns(2026, 11, 27, 15, 0), ns(2026, 11, 27, 14, 59))
    assert close == [SetTradingStatus(False, "close", ns(2026, 11, 27, 15, 0)),
                     EndOfDay(ns(2026, 11, 27, 15, 0))]
    for c in close:
        ex.apply(c)
    assert not ex.halted and not ex.trading_open
    assert calendar_commands(CAL, ex, ns(2026, 11, 28, 12, 0), ns(2026, 11, 27, 15, 0)) == []


def test_a_broker_logging_on_after_a_restart_during_a_halt_is_told_halted(app):
    # the application is new (as after a restart): it never saw the halt's note
    app.exchange.apply(SetTradingStatus(False, "system check", ns(2026, 11, 27, 10, 0), True))
    [(key, status)] = app.on_logon(B1)
    assert (status.msg_type, status.get(340), status.get(58)) == ("h", "1", "halted")
