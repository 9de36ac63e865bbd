"""The simulated trading clock: days, sessions and integer nanosecond timestamps.

Continuous trading runs 09:30-11:30 and 13:00-15:00 Beijing time (UTC+8); weekends are not
trading days. Time is simulated, never read from the machine, so a run is reproducible.
The day is cut into one-minute steps; `ts(day, minute, k, n)` spreads the k-th of n
decisions of a step evenly over that minute.
"""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

BEIJING = timezone(timedelta(hours=8))
NS_PER_S = 1_000_000_000
NS_PER_MIN = 60 * NS_PER_S
SESSIONS = ((9 * 60 + 30, 11 * 60 + 30), (13 * 60, 15 * 60))  # minutes after midnight
CLOSE_MINUTE = SESSIONS[-1][1]
MINUTES_PER_DAY = sum(end - start for start, end in SESSIONS)   # 240


class TradingCalendar:
    def __init__(self, start: date, days: int):
        self.dates: list[date] = []
        day = start
        while len(self.dates) < days:
            if day.weekday() < 5:
                self.dates.append(day)
            day += timedelta(days=1)
        # minute index of the trading day -> minute after midnight
        self.clock_minutes = [m for start_m, end_m in SESSIONS for m in range(start_m, end_m)]

    def midnight_ns(self, day: int) -> int:
        d = self.dates[day]
        return int(datetime(d.year, d.month, d.day, tzinfo=BEIJING).timestamp()) * NS_PER_S

    def minute_ns(self, day: int, minute: int) -> int:
        """Start of trading minute `minute` (0..239) of day `day` (0-based)."""
        return self.midnight_ns(day) + self.clock_minutes[minute] * NS_PER_MIN

    def close_ns(self, day: int) -> int:
        return self.midnight_ns(day) + CLOSE_MINUTE * NS_PER_MIN

    def open_ns(self, day: int) -> int:
        return self.midnight_ns(day) + SESSIONS[0][0] * NS_PER_MIN

    @staticmethod
    def in_session(ts: int) -> bool:
        local = datetime.fromtimestamp(ts // NS_PER_S, BEIJING)
        minute = local.hour * 60 + local.minute
        return any(start <= minute < end for start, end in SESSIONS)

    @staticmethod
    def format_ts(ts: int) -> str:
        """'2026-03-02 09:30:00.000000' in Beijing time."""
        seconds, ns = divmod(ts, NS_PER_S)
        local = datetime.fromtimestamp(seconds, BEIJING)
        return f"{local:%Y-%m-%d %H:%M:%S}.{ns // 1000:06d}"
