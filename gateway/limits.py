"""What one broker may cost the others: a per-session message rate and a back-off on logons.

Both are plain state machines over a clock the caller passes in (seconds, monotonic), so
they are tested without waiting; the asyncio server (server.py) owns the clock and applies
them:

    MessageRate   a token bucket per session: `rate` application messages a second, `burst`
                  at once. A message over the rate is rejected (the server answers it with a
                  BusinessMessageReject, it is not processed); a session that stays over the
                  rate for `logout_after` seconds in a row is logged out.
    LogonBackoff  after failed logons, the pair (CompID, source address) waits before its next
                  password check: nothing after one failure (a mistyped password is retried
                  at once), `initial` seconds after the second in a row, doubled per further
                  failure, at most `maximum`. A logon during the wait is refused without checking
                  the password (no scrypt run for a guesser); a good logon clears its pair. An
                  address that fails ADDRESS_FREE_FAILURES logons in a row, whatever the CompIDs
                  (a sprayer), waits the same way, except for the CompIDs that logged on from it
                  (brokers behind the same NAT or proxy). There is no wait per CompID across
                  addresses: it would let a guesser anywhere lock a broker out of its own
                  address or a new site; a guesser spread over many addresses still pays one
                  scrypt per address per wait, on the gateway's single check thread.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

# Documented defaults (gateway config [gateway]: message_rate, message_burst,
# rate_logout_after_s, logon_backoff_ms, logon_backoff_max_ms).
# 500 a second is far above what a CCER broker sends, and low enough that one session's flood
# leaves the others' round trip p99 within 2x (at 2,000 it was 41x: benchmarks/README.md,
# "Under attack"); a load test that needs more sets message_rate = 0.
DEFAULT_MESSAGE_RATE = 500            # application messages per second per session
DEFAULT_MESSAGE_BURST = 1_000
DEFAULT_RATE_LOGOUT_AFTER_S = 10      # seconds of continuous excess before a Logout
DEFAULT_LOGON_BACKOFF_MS = 1_000
DEFAULT_LOGON_BACKOFF_MAX_MS = 60_000

REJECT_EPISODE_GAP = 1.0     # a second without an over-rate message ends an excess episode
FREE_FAILURES = 1            # failed logons in a row of one CompID from one address before a wait
ADDRESS_FREE_FAILURES = 10   # ... of one address, whatever the CompIDs, before it waits
MAX_TRACKED = 4_096          # back-off entries kept before expired ones are swept


@dataclass(frozen=True)
class SessionLimits:
    """The gateway's limits; message_rate 0 means unlimited."""
    message_rate: int = DEFAULT_MESSAGE_RATE
    message_burst: int = DEFAULT_MESSAGE_BURST
    rate_logout_after_s: int = DEFAULT_RATE_LOGOUT_AFTER_S
    logon_backoff_ms: int = DEFAULT_LOGON_BACKOFF_MS
    logon_backoff_max_ms: int = DEFAULT_LOGON_BACKOFF_MAX_MS


class MessageRate:
    """Token bucket: take() is True for a message within the rate, False for one over it."""
    __slots__ = ("rate", "burst", "logout_after", "_tokens", "_at", "_excess_since",
                 "_last_excess", "rejected")

    def __init__(self, rate: int, burst: int, logout_after: float):
        self.rate = rate
        self.burst = max(burst, 1)
        self.logout_after = logout_after
        self._tokens = float(self.burst)
        self._at: Optional[float] = None
        self._excess_since: Optional[float] = None
        self._last_excess = 0.0
        self.rejected = 0

    def take(self, now: float) -> bool:
        if self.rate <= 0:
            return True
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.rejected += 1
        if self._excess_since is None or now - self._last_excess >= REJECT_EPISODE_GAP:
            self._excess_since = now
        self._last_excess = now
        return False

    def exceeded(self, now: float) -> bool:
        """Over the rate within the last second (the server then reads this session slower)."""
        return self._excess_since is not None and now - self._last_excess < REJECT_EPISODE_GAP

    def sustained(self, now: float) -> bool:
        """Over the rate without a second's pause for logout_after seconds."""
        return (self._excess_since is not None and now - self._last_excess < REJECT_EPISODE_GAP
                and now - self._excess_since >= self.logout_after)

    def reset(self) -> None:
        """A new logon starts a new excess episode (the tokens carry over: logging on again
        does not buy a fresh burst)."""
        self._excess_since = None


class LogonBackoff:
    """Failed-logon back-off per (CompID, address) and per address (see the module doc)."""

    def __init__(self, initial: float, maximum: float):
        self.initial = initial
        self.maximum = max(maximum, initial)
        # key -> (consecutive failures, time the wait ends); keys ("pair", comp_id, address)
        # and ("address", address)
        self._failures: dict[tuple, tuple[int, float]] = {}
        self._good_pairs: set[tuple[str, str]] = set()   # (comp_id, address) that logged on

    def wait(self, comp_id: str, address: str, now: float) -> float:
        """Seconds this logon must still wait; 0 when its password may be checked."""
        if self.initial <= 0:
            return 0.0
        wait = self._remaining(("pair", comp_id, address), now)
        if (comp_id, address) not in self._good_pairs:
            wait = max(wait, self._remaining(("address", address), now))
        return wait

    def failed(self, comp_id: str, address: str, now: float) -> float:
        """Record a failed logon; returns the wait it starts for this CompID and address."""
        if self.initial <= 0:
            return 0.0
        if len(self._failures) >= MAX_TRACKED:
            self._sweep(now)
        wait = 0.0
        for key, free in ((("pair", comp_id, address), FREE_FAILURES),
                          (("address", address), ADDRESS_FREE_FAILURES)):
            count, until = self._failures.get(key, (0, now))
            if now - until > self.maximum:
                count = 0                      # quiet for a whole maximum: start again
            delay = (0.0 if count < free else
                     min(self.initial * (2 ** min(count - free, 32)), self.maximum))
            self._failures[key] = (count + 1, now + delay)
            if key[0] == "pair" or (comp_id, address) not in self._good_pairs:
                wait = max(wait, delay)
        return wait

    def succeeded(self, comp_id: str, address: str) -> None:
        """A good logon clears its pair's failures (not the address's: a sprayer there keeps
        its count) and exempts the pair from the address's wait."""
        self._failures.pop(("pair", comp_id, address), None)
        if len(self._good_pairs) >= MAX_TRACKED:
            self._good_pairs.clear()               # forgetting only costs an exemption
        self._good_pairs.add((comp_id, address))

    def _remaining(self, key, now: float) -> float:
        entry = self._failures.get(key)
        return max(0.0, entry[1] - now) if entry else 0.0

    def _sweep(self, now: float) -> None:
        for key, (_, until) in list(self._failures.items()):
            if now - until > self.maximum:
                del self._failures[key]
        if len(self._failures) >= MAX_TRACKED:       # still full: forget the oldest waits
            for key, _ in sorted(self._failures.items(), key=lambda kv: kv[1][1])[:MAX_TRACKED // 2]:
                del self._failures[key]


class ServiceRefusal(str):
    """A logon refused for a reason that is not its credentials (a cluster standby naming the
    leader, a node shutting down): the broker is told the text, and the back-off neither counts
    it as a failed password nor clears earlier failures."""
    __slots__ = ()


class QuietRefusal(ServiceRefusal):
    """A ServiceRefusal answered by closing the connection, without a Logout: a cluster
    standby's (gateway/cluster.py). A FIX engine counts a Logout's MsgSeqNum (QuickFIX adds
    one to the number it expects next, whatever the Logout carried), so a Logout from a
    node that does not hold the session would put the broker one ahead of the leader, whose
    next message would then be 'MsgSeqNum too low'. The text is logged, not sent."""
    __slots__ = ()
