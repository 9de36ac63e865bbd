"""The trading calendar: when continuous trading is open, and when the day closes.

CCER trades on weekdays 09:30-11:30 and 13:00-15:00 China Standard Time (UTC+8, no
daylight saving), except on the public holidays the exchange announces each year (given as
dates; `load_holidays` reads them from a file). Pure integer arithmetic on nanosecond
timestamps: no clock is read here; the caller passes `now`.
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Iterable

NS_PER_MINUTE = 60 * 1_000_000_000
NS_PER_DAY = 24 * 60 * NS_PER_MINUTE
EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)
SEARCH_DAYS = 40   # the longest closure looked through (Golden Week plus weekends is ~10 days)
_EPOCH_DATE = _dt.date(1970, 1, 1)


def load_holidays(path) -> frozenset[_dt.date]:
    """Holiday dates from a text file: one ISO date (YYYY-MM-DD) per line, `#` comments.
    Raises ValueError naming the bad line."""
    dates = set()
    for n, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            dates.add(_dt.date.fromisoformat(line))
        except ValueError:
            raise ValueError(f"{path}:{n}: not a date (YYYY-MM-DD): {line!r}") from None
    return frozenset(dates)


class TradingCalendar:
    def __init__(self, sessions=((9 * 60 + 30, 11 * 60 + 30), (13 * 60, 15 * 60)),
                 utc_offset_minutes: int = 8 * 60, weekdays=(0, 1, 2, 3, 4),
                 holidays: Iterable[_dt.date] = ()):
        """sessions: (open, close) in minutes after local midnight, ascending, not overlapping;
        holidays: local dates without trading."""
        if not sessions or any(not 0 <= a < b <= 24 * 60 for a, b in sessions) or any(
                sessions[i][1] > sessions[i + 1][0] for i in range(len(sessions) - 1)):
            raise ValueError(f"bad trading sessions {sessions!r}")
        self.sessions = tuple(sessions)
        self.offset_ns = utc_offset_minutes * NS_PER_MINUTE
        self.weekdays = frozenset(weekdays)
        self.holidays = frozenset((d - _EPOCH_DATE).days for d in holidays)   # local day numbers

    def _local(self, ts: int) -> tuple[int, int]:
        """(local day number since the epoch, ns into that local day)."""
        return divmod(ts + self.offset_ns, NS_PER_DAY)

    def _is_trading_day(self, day: int) -> bool:
        return (day + EPOCH_WEEKDAY) % 7 in self.weekdays and day not in self.holidays

    def _at(self, day: int, minute: int) -> int:
        return day * NS_PER_DAY + minute * NS_PER_MINUTE - self.offset_ns

    def is_open(self, ts: int) -> bool:
        day, into = self._local(ts)
        return self._is_trading_day(day) and any(
            a * NS_PER_MINUTE <= into < b * NS_PER_MINUTE for a, b in self.sessions)

    def note(self, ts: int) -> str:
        """A human name for the phase at ts."""
        day, into = self._local(ts)
        if not self._is_trading_day(day):
            return "closed (holiday)" if day in self.holidays else "closed (weekend)"
        for i, (a, b) in enumerate(self.sessions):
            if a * NS_PER_MINUTE <= into < b * NS_PER_MINUTE:
                return ("morning session", "afternoon session")[i] if len(self.sessions) == 2 \
                    else f"session {i + 1}"
            if into < a * NS_PER_MINUTE:
                return "pre-open" if i == 0 else "break"
        return "closed"

    def next_change(self, ts: int) -> int:
        """The first session boundary (open or close) strictly after ts."""
        day, _ = self._local(ts)
        for d in range(day, day + SEARCH_DAYS):
            if not self._is_trading_day(d):
                continue
            for a, b in self.sessions:
                for minute in (a, b):
                    at = self._at(d, minute)
                    if at > ts:
                        return at
        raise ValueError(f"no trading day within {SEARCH_DAYS} days")

    # ------------------------------------------------------------------ dates
    def is_trading_date(self, day: _dt.date) -> bool:
        return self._is_trading_day((day - _EPOCH_DATE).days)

    def trading_dates(self, start: _dt.date, count: int) -> list[_dt.date]:
        """The first `count` trading dates on or after `start`."""
        dates, day = [], start
        while len(dates) < count:
            if self.is_trading_date(day):
                dates.append(day)
            day += _dt.timedelta(days=1)
        return dates

    def trading_days_after(self, day: _dt.date, days: int) -> _dt.date:
        """`day` + `days` trading days (weekends and holidays skipped): a settlement date."""
        while days > 0:
            day += _dt.timedelta(days=1)
            if self.is_trading_date(day):
                days -= 1
        return day

    def local_date(self, ts: int) -> _dt.date:
        return _EPOCH_DATE + _dt.timedelta(days=self._local(ts)[0])

    def at(self, day: _dt.date, minute: int) -> int:
        """The timestamp (ns) of local `minute` after midnight of `day`."""
        return self._at((day - _EPOCH_DATE).days, minute)

    def trading_minutes(self) -> list[int]:
        """Every minute of a trading day in session order, as minutes after local midnight."""
        return [m for a, b in self.sessions for m in range(a, b)]

    def first_open(self, ts: int) -> int:
        """When the first session of ts's local day opens (whether or not it is a trading day)."""
        day, _ = self._local(ts)
        return self._at(day, self.sessions[0][0])

    def last_close(self, ts: int) -> int:
        """The most recent end of a trading day at or before ts (0 if none in SEARCH_DAYS)."""
        day, _ = self._local(ts)
        close_minute = self.sessions[-1][1]
        for d in range(day, day - SEARCH_DAYS, -1):
            if self._is_trading_day(d) and self._at(d, close_minute) <= ts:
                return self._at(d, close_minute)
        return 0
