"""Calibration: the observed statistics the default scenario aims at, measured on runs.

The targets are data (scenarios/calibration.toml: value, tolerance [low, high], source);
`measure(result)` computes the same statistics from one run's record, and `table(runs)`
compares them over one or several seeds: the mean, the range across seeds and whether the
mean is within tolerance. Floats are fine here: these are statistics, not prices.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HALF_HOUR_NS = 30 * 60 * 10**9
TARGETS_FILE = Path(__file__).resolve().parents[2] / "scenarios" / "calibration.toml"


@dataclass
class Target:
    key: str
    label: str
    value: float | None
    low: float | None
    high: float | None
    unit: str
    source: str
    tolerance: str


def load_targets(path: str | Path = TARGETS_FILE) -> list[Target]:
    raw = tomllib.loads(Path(path).read_text())
    out = []
    for row in raw.get("target", []):
        if not row["low"] <= row["high"]:
            raise ValueError(f"calibration target {row['key']}: low > high")
        out.append(Target(row["key"], row["label"], row["value"], row["low"], row["high"],
                          row["unit"], row["source"], row["tolerance"]))
    for row in raw.get("unobserved", []):
        out.append(Target(row["key"], row["label"], None, None, None, "", row["note"], ""))
    unknown = [t.key for t in out if t.key not in MEASURES]
    if unknown:
        raise ValueError(f"calibration targets nobody measures: {unknown}")
    return out


def _cny(result, ticks_qty: int, symbol: str) -> float:
    return ticks_qty * result.specs[symbol].tick_fen / 100


def measure(result) -> dict[str, float]:
    """Every statistic of the calibration file, from one run."""
    days = len(result.days)
    volume = sum(t[5] for t in result.trades)
    turnover = sum(_cny(result, t[4] * t[5], t[3]) for t in result.trades)
    daily = []
    for d in range(days):
        rows = [t for t in result.trades if t[1] == d]
        v = sum(t[5] for t in rows)
        if v:
            daily.append(sum(_cny(result, t[4] * t[5], t[3]) for t in rows) / v)
    ups = downs = 0         # over half-hours: trade-to-trade ticks mostly bounce bid/ask
    for s in result.scenario.symbols:
        last_of = {}
        for t in result.trades:
            if t[3] == s:
                last_of[(t[1], (t[2] - result.calendar.midnight_ns(t[1])) // HALF_HOUR_NS)] = t[4]
        prices = [last_of[k] for k in sorted(last_of)]
        for a, b in zip(prices, prices[1:]):
            ups, downs = ups + (b > a), downs + (b < a)
    changes = []
    for s in result.scenario.symbols:
        closes = [result.specs[s].ref_ticks] + [r.closes[s].close_ticks for r in result.days
                                                if s in r.closes]
        changes += [(b - a) / a * 100 for a, b in zip(closes, closes[1:])]
    # a credit type traded that day on its contract or on one of its lots' listings
    type_of = {spec.symbol: spec.credit_type or spec.symbol for spec in result.final_specs.values()}
    traded_pairs = {(t[1], type_of.get(t[3], t[3])) for t in result.trades}
    accounts = {t[6] for t in result.trades} | {t[7] for t in result.trades}
    return {
        "daily_volume_t": volume / days,
        "weekly_volume_t": volume * 5 / days,
        "weekly_turnover_cny": turnover * 5 / days,
        "vwap_cny": turnover / volume if volume else float("nan"),
        "daily_vwap_low_cny": min(daily) if daily else float("nan"),
        "daily_vwap_high_cny": max(daily) if daily else float("nan"),
        "uptick_share": ups / (ups + downs) if ups + downs else float("nan"),
        "max_daily_move_pct": max(map(abs, changes)) if changes else 0.0,
        "mean_daily_change_pct": float(np.mean(changes)) if changes else 0.0,
        "no_trade_day_share": 1 - len(traded_pairs) / (days * len(result.scenario.symbols)),
        "active_accounts": float(len(accounts)),
    }


MEASURES = {   # the keys measure() returns
    "daily_volume_t", "weekly_volume_t", "weekly_turnover_cny", "vwap_cny",
    "daily_vwap_low_cny", "daily_vwap_high_cny", "uptick_share", "max_daily_move_pct",
    "mean_daily_change_pct",
    "no_trade_day_share", "active_accounts"}


@dataclass
class Row:
    target: Target
    mean: float
    low: float          # across seeds
    high: float
    seeds: int

    @property
    def within(self) -> bool | None:
        if self.target.low is None:
            return None
        return bool(self.target.low <= self.mean <= self.target.high)


def table(per_seed: list[dict[str, float]], targets: list[Target] | None = None) -> list[Row]:
    """One row per target: mean and range over the seeds' measurements."""
    targets = load_targets() if targets is None else targets
    rows = []
    for t in targets:
        xs = np.array([m[t.key] for m in per_seed], dtype=float)
        rows.append(Row(t, float(xs.mean()), float(xs.min()), float(xs.max()), len(xs)))
    return rows


def fmt(x: float) -> str:
    if x != x:
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def text_table(rows: list[Row]) -> str:
    """The calibration table as plain text (terminal, benchmarks/README.md)."""
    lines = ["| target | observed | tolerance | simulated mean | across seeds | within |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        t = r.target
        observed = "not published" if t.value is None else f"{fmt(t.value)} {t.unit}"
        tol = "-" if t.low is None else f"{fmt(t.low)}-{fmt(t.high)}"
        within = {None: "(no target)", True: "yes", False: "NO"}[r.within]
        lines.append(f"| {t.label} | {observed} | {tol} | {fmt(r.mean)} | "
                     f"{fmt(r.low)}-{fmt(r.high)} | {within} |")
    return "\n".join(lines)
