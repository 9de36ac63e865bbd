"""The simulated trading clock: days, sessions and integer nanosecond timestamps.

The hours, weekends and holidays are the engine's (`ccerx.engine.core.calendar`): the
simulator picks its days from that calendar and never restates the rules. Time is simulated,
never read from the machine, so a run is reproducible. The day is cut into one-minute steps;
the k-th of n decisions of a step is spread evenly over that minute.
"""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Iterable

from ccerx.engine.core.calendar import TradingCalendar

NS_PER_S = 1_000_000_000
NS_PER_MIN = 60 * NS_PER_S
EXCHANGE_CALENDAR = TradingCalendar()
MINUTES_PER_DAY = len(EXCHANGE_CALENDAR.trading_minutes())   # 240
_LOCAL = timezone(timedelta(minutes=EXCHANGE_CALENDAR.offset_ns // NS_PER_MIN))


class SimulatedDays:
    """`days` trading days from `start` on the exchange's calendar (holidays skipped)."""

    def __init__(self, start: date, days: int, holidays: Iterable[date] = ()):
        self.calendar = TradingCalendar(holidays=holidays) if holidays else EXCHANGE_CALENDAR
        self.dates: list[date] = self.calendar.trading_dates(start, days)
        # minute index of the trading day -> minute after midnight
        self.clock_minutes = self.calendar.trading_minutes()

    def midnight_ns(self, day: int) -> int:
        return self.calendar.at(self.dates[day], 0)

    def minute_ns(self, day: int, minute: int) -> int:
        """Start of trading minute `minute` (0..239) of day `day` (0-based)."""
        return self.calendar.at(self.dates[day], self.clock_minutes[minute])

    def close_ns(self, day: int) -> int:
        return self.calendar.at(self.dates[day], self.calendar.sessions[-1][1])

    def open_ns(self, day: int) -> int:
        return self.calendar.at(self.dates[day], self.calendar.sessions[0][0])

    @staticmethod
    def in_session(ts: int) -> bool:
        return EXCHANGE_CALENDAR.is_open(ts)

    @staticmethod
    def format_ts(ts: int) -> str:
        """'2026-03-02 09:30:00.000000' in exchange-local (Beijing) time."""
        seconds, ns = divmod(ts, NS_PER_S)
        local = datetime.fromtimestamp(seconds, _LOCAL)
        return f"{local:%Y-%m-%d %H:%M:%S}.{ns // 1000:06d}"
