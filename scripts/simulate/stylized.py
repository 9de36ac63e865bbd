"""Market realism checks: the stylized facts of order-driven markets, measured on a run.

Each check returns a `Fact` with the figure, the threshold it is judged by and whether it
holds, so a scenario's realism is measured, not assumed. Floats are fine here: these are
statistics about prices, not prices.

- spread distribution: positive, mostly a few ticks, right-skewed (mean > median, skew > 0);
- heavy tails: excess kurtosis of trade-to-trade log returns > 1 (Gaussian: 0);
- volatility clustering: mean autocorrelation of |trade-to-trade returns| over lags 1-5
  above the 95% noise band 2/sqrt(N), while returns themselves are nearly uncorrelated;
- order-sign autocorrelation: signs of successive aggressive orders are positively
  correlated (mean ACF over lags 1-10 above 2/sqrt(N)): order splitting shows;
- concave price impact: mean mid-price impact of an aggressive order grows with its size
  with an exponent 0.1 < beta < 1 (rising, but less than linearly) in a log-log fit over size bins (square-root-like).
Returns are taken between successive trades (the fills of one aggressive order, which share
its timestamp, count as one trade at its last price), not on a one-minute clock: in this
market most one-minute mid returns are exactly zero, and a kurtosis of mostly zeros measures
the zeros, not the tails. Returns never span the overnight gap or the lunch break.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Fact:
    name: str
    measure: str
    value: float | None
    threshold: str
    holds: bool
    detail: str = ""

    def __post_init__(self):
        self.holds = bool(self.holds)
        self.value = None if self.value is None else float(self.value)


@dataclass
class InstrumentFacts:
    instrument: str
    facts: list[Fact]
    spreads: np.ndarray = field(repr=False, default=None)
    returns: np.ndarray = field(repr=False, default=None)
    abs_acf: np.ndarray = field(repr=False, default=None)
    sign_acf: np.ndarray = field(repr=False, default=None)
    impact_bins: list = field(repr=False, default_factory=list)   # (mean qty, mean impact ticks)


def acf(x: np.ndarray, lags: int) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if len(x) <= lags + 2 or x.std() == 0:
        return np.zeros(lags)
    x = x - x.mean()
    denom = float(x @ x)
    return np.array([float(x[:-k] @ x[k:]) / denom for k in range(1, lags + 1)])


def trade_returns(trades) -> tuple[np.ndarray, int]:
    """Log returns between successive trades of one credit type within a session, and how
    many trades they are between. `trades` is [(session, ts, price)] in time order; the fills
    of one aggressive order (same ts) count as one trade at its last price."""
    prices: list[tuple] = []                       # (session, price) per distinct trade
    last_ts = None
    for session, ts, price in trades:
        if ts == last_ts and prices:
            prices[-1] = (session, price)
        else:
            prices.append((session, price))
        last_ts = ts
    out = [np.log(b / a) for (s1, a), (s2, b) in zip(prices, prices[1:]) if s1 == s2]
    return np.array(out, dtype=float), len(prices)


def _minute_returns(samples) -> np.ndarray:
    """Log returns of the one-minute mid, within each session only."""
    out, prev_key, prev_mid = [], None, None
    for day, minute, bid, ask, _, _ in samples:
        session = (day, minute >= 120)
        if bid is None or ask is None:
            prev_key = None
            continue
        mid = (bid + ask) / 2
        if prev_key == session:
            out.append(np.log(mid / prev_mid))
        prev_key, prev_mid = session, mid
    return np.array(out)


def measure(instrument: str, samples, impacts, trades=None) -> InstrumentFacts:
    """The facts of one credit type; `trades` [(session, ts, price)] for the returns (None:
    one-minute mid returns, for callers with book samples only)."""
    facts = []
    spreads = np.array([a - b for _, _, b, a, _, _ in samples if b is not None and a is not None],
                       dtype=float)
    if len(spreads) > 10:
        mean, median = spreads.mean(), float(np.median(spreads))
        sd = spreads.std()
        skew = float(((spreads - mean) ** 3).mean() / sd ** 3) if sd else 0.0
        facts.append(Fact("spread distribution", "skewness of the quoted spread", skew,
                          "> 0 and mean > median", skew > 0 and mean > median,
                          f"mean {mean:.2f}, median {median:.0f}, p90 {np.percentile(spreads, 90):.0f} "
                          f"ticks; {100 * (spreads == 1).mean():.0f}% at one tick"))
    else:
        facts.append(Fact("spread distribution", "skewness of the quoted spread", None,
                          "> 0", False, "too few two-sided samples"))
    if trades is None:
        returns, counted = _minute_returns(samples), None
        kind = "1-minute mid returns"
    else:
        returns, counted = trade_returns(trades)
        kind = "trade-to-trade log returns"
    n = len(returns)
    noise = 2 / np.sqrt(n) if n else 1.0
    if n > 30 and returns.std() > 0:
        z = (returns - returns.mean()) / returns.std()
        kurt = float((z ** 4).mean() - 3)
        between = f" between {counted:,} trades" if counted is not None else ""
        facts.append(Fact("heavy-tailed returns", f"excess kurtosis of {kind}", kurt,
                          "> 1", kurt > 1, f"{n:,} returns{between}, "
                          f"{100 * (returns == 0).mean():.0f}% of them zero"))
        abs_acf, raw_acf = acf(np.abs(returns), 20), acf(returns, 5)
        clustering = float(abs_acf[:5].mean())
        facts.append(Fact("volatility clustering", f"mean ACF of |{kind}|, lags 1-5", clustering,
                          f"> {noise:.3f} (2/sqrt N)", clustering > noise,
                          f"ACF of returns at lag 1: {raw_acf[0]:+.3f}"))
    else:
        abs_acf = np.zeros(20)
        for name in ("heavy-tailed returns", "volatility clustering"):
            facts.append(Fact(name, "", None, "", False, "too few returns"))
    signs = np.array([s for s, _, _, _ in impacts], dtype=float)
    sign_acf = acf(signs, 20)
    band = 2 / np.sqrt(len(signs)) if len(signs) else 1.0
    persistence = float(sign_acf[:10].mean()) if len(signs) > 30 else None
    facts.append(Fact("order-sign autocorrelation", "mean ACF of aggressive order signs, lags 1-10",
                      persistence, f"> {band:.3f} (2/sqrt N)",
                      persistence is not None and persistence > band,
                      f"{len(signs)} aggressive orders; lag 1: {sign_acf[0]:+.3f}"))
    bins, beta = _impact_curve(impacts)
    facts.append(Fact("concave price impact", "beta in impact ~ size^beta", beta, "0.1 < beta < 1",
                      beta is not None and 0.1 < beta < 1,
                      "; ".join(f"{q:.0f} t: {i:.2f} ticks" for q, i in bins)))
    return InstrumentFacts(instrument, facts, spreads, returns, abs_acf, sign_acf, bins)


def _impact_curve(impacts, nbins: int = 8):
    """Mean mid-price move (ticks, in the order's direction) per size bin, and the
    log-log slope over the bins with a positive mean impact."""
    if len(impacts) < 50:
        return [], None
    data = np.array([(q, s * (after - before) / 2) for s, q, before, after in impacts], dtype=float)
    edges = np.unique(np.quantile(data[:, 0], np.linspace(0, 1, nbins + 1)))
    if len(edges) < 3:
        return [], None
    which = np.clip(np.searchsorted(edges, data[:, 0], side="right") - 1, 0, len(edges) - 2)
    bins = []
    for b in range(len(edges) - 1):
        chunk = data[which == b]
        if len(chunk):
            bins.append((float(chunk[:, 0].mean()), float(chunk[:, 1].mean())))
    good = [(q, i) for q, i in bins if q > 0 and i > 0]
    if len(good) < 3:
        return bins, None
    x, y = np.log([q for q, _ in good]), np.log([i for _, i in good])
    return bins, float(np.polyfit(x, y, 1)[0])


def measure_all(result) -> list[InstrumentFacts]:
    return [measure(s, result.samples[s], result.impacts[s], session_trades(result, s))
            for s in result.scenario.symbols]


def session_trades(result, symbol: str) -> list[tuple]:
    """[(session, ts, price)] of one credit type's trades in time order; a session is
    (day, afternoon), so that no return spans the night or the lunch break."""
    days = result.calendar
    morning_end = days.calendar.sessions[0][1] * 60 * 10**9      # ns after midnight
    return [((day, ts - days.midnight_ns(day) >= morning_end), ts, price)
            for _, day, ts, s, price, *_ in sorted(result.trades, key=lambda t: (t[2], t[0]))
            if s == symbol]
