"""The trading calendar: when continuous trading is open, and when the day closes.

CCER trades on weekdays 09:30-11:30 and 13:00-15:00 China Standard Time (UTC+8, no
daylight saving). Pure integer arithmetic on nanosecond timestamps: no clock is read here;
the caller passes `now`. Public holidays are not modelled (an operator runs the gateway with
`--hours always` or stops it on those days).
"""
from __future__ import annotations

NS_PER_MINUTE = 60 * 1_000_000_000
NS_PER_DAY = 24 * 60 * NS_PER_MINUTE
EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)


class TradingCalendar:
    def __init__(self, sessions=((9 * 60 + 30, 11 * 60 + 30), (13 * 60, 15 * 60)),
                 utc_offset_minutes: int = 8 * 60, weekdays=(0, 1, 2, 3, 4)):
        """sessions: (open, close) in minutes after local midnight, ascending, not overlapping."""
        if not sessions or any(not 0 <= a < b <= 24 * 60 for a, b in sessions) or any(
                sessions[i][1] > sessions[i + 1][0] for i in range(len(sessions) - 1)):
            raise ValueError(f"bad trading sessions {sessions!r}")
        self.sessions = tuple(sessions)
        self.offset_ns = utc_offset_minutes * NS_PER_MINUTE
        self.weekdays = frozenset(weekdays)

    def _local(self, ts: int) -> tuple[int, int]:
        """(local day number since the epoch, ns into that local day)."""
        return divmod(ts + self.offset_ns, NS_PER_DAY)

    def _is_trading_day(self, day: int) -> bool:
        return (day + EPOCH_WEEKDAY) % 7 in self.weekdays

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
            return "closed (weekend)"
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
        for d in range(day, day + 8):
            if not self._is_trading_day(d):
                continue
            for a, b in self.sessions:
                for minute in (a, b):
                    at = self._at(d, minute)
                    if at > ts:
                        return at
        raise ValueError("no trading day within a week")

    def day_start(self, ts: int) -> int:
        """Local midnight at the start of ts's local day."""
        day, _ = self._local(ts)
        return self._at(day, 0)

    def last_close(self, ts: int) -> int:
        """The most recent end of a trading day at or before ts (0 if none in the last week)."""
        day, _ = self._local(ts)
        close_minute = self.sessions[-1][1]
        for d in range(day, day - 8, -1):
            if self._is_trading_day(d) and self._at(d, close_minute) <= ts:
                return self._at(d, close_minute)
        return 0
