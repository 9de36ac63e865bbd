"""The trading calendar (CST sessions, weekends) and the engine's open/closed status."""
from datetime import datetime, timedelta, timezone

import pytest

from ccerx.engine.core.calendar import TradingCalendar
from ccerx.engine.core.commands import AmendOrder, CancelOrder, EndOfDay, NewOrder, SetTradingStatus
from ccerx.engine.core.events import OrderCancelled, OrderRejected, TradingStatusChanged
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.durable.journal import decode_command, encode_command
from ccerx.engine.formats.ndjson import encode_event, parse_command
from ccerx.engine.durable.snapshot import exchange_from_state, exchange_state
from ccerx.engine.core.types import RejectReason

CST = timezone(timedelta(hours=8))


def ns(y, mo, d, h, mi, s=0):
    return int(datetime(y, mo, d, h, mi, s, tzinfo=CST).timestamp()) * 1_000_000_000


CAL = TradingCalendar()


@pytest.mark.parametrize("when, is_open, note", [
    ((2026, 11, 27, 9, 29, 59), False, "pre-open"),       # Friday
    ((2026, 11, 27, 9, 30), True, "morning session"),
    ((2026, 11, 27, 11, 29, 59), True, "morning session"),
    ((2026, 11, 27, 11, 30), False, "break"),
    ((2026, 11, 27, 13, 0), True, "afternoon session"),
    ((2026, 11, 27, 15, 0), False, "closed"),
    ((2026, 11, 28, 10, 0), False, "closed (weekend)"),   # Saturday
    ((2026, 11, 30, 10, 0), True, "morning session"),     # Monday
])
def test_sessions_in_china_standard_time(when, is_open, note):
    assert CAL.is_open(ns(*when)) is is_open
    assert CAL.note(ns(*when)) == note


def test_next_change_and_last_close_cross_the_weekend():
    friday_close = ns(2026, 11, 27, 15, 0)
    assert CAL.next_change(ns(2026, 11, 27, 14, 0)) == friday_close
    assert CAL.next_change(friday_close) == ns(2026, 11, 30, 9, 30)
    assert CAL.last_close(ns(2026, 11, 30, 10, 0)) == friday_close
    assert CAL.last_close(friday_close) == friday_close
    assert CAL.last_close(friday_close - 1) == ns(2026, 11, 26, 15, 0)


def test_bad_sessions_are_refused():
    with pytest.raises(ValueError):
        TradingCalendar(sessions=((600, 500),))
    with pytest.raises(ValueError):
        TradingCalendar(sessions=((500, 700), (600, 800)))


def order(oid, side="buy", price=62_000_000, qty=10, account="A"):
    return NewOrder(oid, account, "CCER-AFF", side, "limit", None, price, qty)


def test_closed_market_rejects_orders_and_amends_but_takes_cancels():
    ex = Exchange()
    ex.apply(order("o1"))
    [changed] = ex.apply(SetTradingStatus(False, "lunch break", 5))
    assert changed == TradingStatusChanged(2, 5, False, "lunch break")
    [rej] = ex.apply(order("o2"))
    assert type(rej) is OrderRejected and rej.reason is RejectReason.MARKET_CLOSED
    [rej] = ex.apply(AmendOrder("o1", qty=5))
    assert rej.reason is RejectReason.MARKET_CLOSED
    [cancelled] = ex.apply(CancelOrder("o1"))
    assert type(cancelled) is OrderCancelled
    # the id of an order refused while closed stays used for the day
    ex.apply(SetTradingStatus(True, "afternoon session"))
    assert ex.apply(order("o2"))[0].reason is RejectReason.DUPLICATE_ORDER_ID
    assert ex.apply(order("o3"))[0].order_id == "o3"


def test_status_survives_journal_snapshot_and_ndjson():
    command = SetTradingStatus(False, "close", 42)
    assert decode_command(encode_command(command)) == command
    assert parse_command(b'{"op":"status","open":false,"note":"close","ts":42}') == command
    assert parse_command(b'{"op":"status","open":"no"}').text.startswith("status needs")
    ex = Exchange()
    events = ex.apply(command) + ex.apply(EndOfDay(43))
    assert encode_event(events[0], ex.specs) == \
        b'{"type":"status","seq":1,"ts":42,"open":false,"note":"close"}'
    copy = exchange_from_state(exchange_state(ex))
    assert (copy.trading_open, copy.last_close_ts) == (False, 43)
    assert copy.state_hash() == ex.state_hash()


def test_a_halt_is_a_close_marked_halted_through_every_edge():
    halt = SetTradingStatus(False, "system check", 42, True)
    assert decode_command(encode_command(halt)) == halt
    assert decode_command([7, False, "close", 41]) == SetTradingStatus(False, "close", 41)  # old row
    assert parse_command(b'{"op":"status","open":false,"halt":true,"note":"system check",'
                         b'"ts":42}') == halt
    for bad in (b'{"op":"status","open":true,"halt":true}',      # a halt is never open
                b'{"op":"status","open":false,"halt":"yes"}'):
        assert parse_command(bad).text.startswith("status needs"), bad
    ex = Exchange()
    plain = Exchange()
    [event] = ex.apply(halt)
    plain.apply(SetTradingStatus(False, "system check", 42))
    assert event.halted and encode_event(event, ex.specs).endswith(b',"halted":true}')
    assert ex.state_hash() != plain.state_hash()                 # a halt is state
    copy = exchange_from_state(exchange_state(ex))
    assert copy.halted and copy.state_hash() == ex.state_hash()
    ex.apply(SetTradingStatus(True, "resume", 43))
    assert not ex.halted and not ex.apply(SetTradingStatus(False, "close", 44))[0].halted
    with pytest.raises(TypeError):
        ex.apply(SetTradingStatus(True, "nonsense", 45, True))


def test_holidays_are_closed_and_the_schedule_looks_past_them(tmp_path):
    from ccerx.engine.core.calendar import load_holidays
    path = tmp_path / "holidays.txt"
    # National Day 2026: Thursday 1 October to Wednesday 7 October (a made-up list)
    path.write_text("# PRC National Day\n" + "".join(f"2026-10-0{d}\n" for d in range(1, 8)))
    cal = TradingCalendar(holidays=load_holidays(path))
    assert not cal.is_open(ns(2026, 10, 5, 10, 0)) and cal.note(ns(2026, 10, 5, 10, 0)) == \
        "closed (holiday)"
    assert CAL.is_open(ns(2026, 10, 5, 10, 0))                # no holidays: a Monday session
    # after Wednesday 30 September's close the next opening is Thursday 8 October
    assert cal.next_change(ns(2026, 9, 30, 15, 0)) == ns(2026, 10, 8, 9, 30)
    assert cal.last_close(ns(2026, 10, 8, 9, 0)) == ns(2026, 9, 30, 15, 0)
    # a closure longer than a week is looked through
    long = TradingCalendar(holidays=[datetime(2026, 10, d).date() for d in range(1, 31)])
    assert long.next_change(ns(2026, 9, 30, 16, 0)) == ns(2026, 11, 2, 9, 30)   # Monday 2 Nov
    path.write_text("2026-10-01\n2026-13-01\n")
    with pytest.raises(ValueError, match=r"holidays.txt:2"):
        load_holidays(path)
