"""Replaying a command stream through an exchange, timing only the engine.

`replay()` applies commands one by one, measures each `apply` with a monotonic
nanosecond clock into a preallocated buffer (no allocation on the hot path), and hands the
events to an optional sink. The summary separates engine-only time from the wall time of
the whole run (parsing and writing included).

Garbage collection: the engine leaves no reference cycles behind (a removed order is
unlinked from its neighbours and level; events are flat tuples), so everything it drops is
freed by reference counting. CPython's cyclic collector would only re-traverse the live books
(millions of objects) again and again, so the replay pauses it; tests/unit/test_engine_gc.py
checks that a replay leaves nothing for the collector to find.
"""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import numpy as np

from ccerx.engine.core.events import DepositRejected, OrderRejected, TradeExecuted
from ccerx.engine.core.exchange import Exchange


@dataclass
class ReplayStats:
    commands: int = 0
    events: int = 0
    trades: int = 0
    rejects: int = 0
    engine_ns: int = 0
    wall_ns: int = 0
    latencies_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def engine_throughput(self) -> float:
        return self.commands / (self.engine_ns / 1e9) if self.engine_ns else 0.0

    def percentiles(self, points=(50, 99, 99.9)) -> dict[str, int]:
        lat = self.latencies_ns
        if not len(lat):
            return {f"p{p:g}": 0 for p in points} | {"max": 0}
        values = np.percentile(lat, points, method="higher")
        return {f"p{p:g}": int(v) for p, v in zip(points, values)} | {"max": int(lat.max())}

    def summary(self) -> dict:
        return {"commands": self.commands, "events": self.events, "trades": self.trades,
                "rejects": self.rejects, "wall_s": round(self.wall_ns / 1e9, 3),
                "engine_s": round(self.engine_ns / 1e9, 3),
                "engine_commands_per_s": round(self.engine_throughput),
                "latency_ns": self.percentiles()}


def replay(exchange: Exchange, commands: Iterable, *, total: Optional[int] = None,
           sink: Optional[Callable[[list], None]] = None,
           progress: Optional[Callable[[int], None]] = None,
           progress_every: int = 100_000, pause_gc: bool = True) -> ReplayStats:
    """Apply every command; `sink(events)` gets each command's events in order."""
    collecting = gc.isenabled()
    if pause_gc:
        gc.disable()
    try:
        return _replay(exchange, commands, total, sink, progress, progress_every)
    finally:
        if collecting:
            gc.enable()


def _replay(exchange, commands, total, sink, progress, progress_every) -> ReplayStats:
    capacity = total if total is not None else 1 << 16
    lat = np.empty(capacity, dtype=np.int64)
    clock = time.perf_counter_ns
    apply = exchange.apply
    trades = rejects = n_events = 0
    n = 0
    wall_start = clock()
    for command in commands:
        t0 = clock()
        events = apply(command)
        t1 = clock()
        if n == capacity:
            capacity *= 2
            lat = np.resize(lat, capacity)
        lat[n] = t1 - t0
        n += 1
        n_events += len(events)
        for event in events:
            kind = type(event)
            if kind is TradeExecuted:
                trades += 1
            elif kind is OrderRejected or kind is DepositRejected:
                rejects += 1
        if sink is not None:
            sink(events)
        if progress is not None and n % progress_every == 0:
            progress(n)
    wall = clock() - wall_start
    lat = lat[:n]
    return ReplayStats(n, n_events, trades, rejects, int(lat.sum()), wall, lat)
