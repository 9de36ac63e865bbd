"""Replaying a command stream through an exchange, timing only the engine.

`replay()` applies commands in batches (4,096 by default): the engine-only time is the sum of
the batches' apply loops, read with a monotonic nanosecond clock once per batch, so the
figure carries no per-command clock or counting. Latency per command is measured by
sampling: one command in `sample_every` (32 by default: every 32nd command, the first of each
stride of 32) is timed on its own, and the percentiles describe those samples (31,250 of them
for a million commands; `sample_every=1` times every command). Events are counted per batch
(trades, rejects) and handed to an optional sink: `sink(events)` per command, or
`batch_sink(list of per-command event lists)` per batch. The summary separates engine-only
time from the wall time of the whole run (parsing and writing included).

Garbage collection: the engine leaves no reference cycles behind (a removed order is
unlinked from its neighbours and level; events are flat tuples), so everything it drops is
freed by reference counting. CPython's cyclic collector would only re-traverse the live books
(millions of objects) again and again, so the replay pauses it; tests/unit/test_engine_gc.py
checks that a replay leaves nothing for the collector to find.
"""
from __future__ import annotations

import gc
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import chain, islice
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
    latency_every: int = 1     # latencies_ns holds one command in this many (sampling)

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
                "latency_ns": self.percentiles(), "latency_sampled_1_in": self.latency_every}


BATCH = 4_096
SAMPLE_EVERY = 32


def replay(exchange: Exchange, commands: Iterable, *, total: Optional[int] = None,
           sink: Optional[Callable[[list], None]] = None,
           progress: Optional[Callable[[int], None]] = None,
           progress_every: int = 100_000, pause_gc: bool = True,
           batch_sink: Optional[Callable[[list], None]] = None,
           sample_every: int = SAMPLE_EVERY) -> ReplayStats:
    """Apply every command; `sink(events)` gets each command's events in order."""
    iterator = iter(commands)
    batches = iter(lambda: list(islice(iterator, BATCH)), [])
    return replay_batches(exchange, batches, total=total, sink=sink, batch_sink=batch_sink,
                          progress=progress, progress_every=progress_every, pause_gc=pause_gc,
                          sample_every=sample_every)


def replay_batches(exchange: Exchange, batches: Iterable[list], *, total: Optional[int] = None,
                   sink: Optional[Callable[[list], None]] = None,
                   batch_sink: Optional[Callable[[list], None]] = None,
                   progress: Optional[Callable[[int], None]] = None,
                   progress_every: int = 100_000, pause_gc: bool = True,
                   sample_every: int = SAMPLE_EVERY) -> ReplayStats:
    """`replay()` for commands that arrive in lists (an edge that decodes a chunk at a time)."""
    collecting = gc.isenabled()
    if pause_gc:
        gc.disable()
    try:
        return _replay(exchange, batches, total, sink, batch_sink, progress, progress_every,
                       max(1, sample_every))
    finally:
        if collecting:
            gc.enable()


def _replay(exchange, batches, total, sink, batch_sink, progress, progress_every,
            every) -> ReplayStats:
    capacity = total // every + 1 if total is not None else 1 << 12
    lat = np.empty(capacity, dtype=np.int64)
    n_lat = 0
    clock = time.perf_counter_ns
    apply = exchange.apply
    counts: Counter = Counter()
    n = engine_ns = 0
    next_progress = progress_every
    wall_start = clock()
    for batch in batches:
        size = len(batch)
        outs = []
        extend = outs.extend
        samples = []
        sample = samples.append
        t_batch = clock()
        for start in range(0, size, every):
            t0 = clock()
            first = apply(batch[start])
            sample(clock() - t0)
            outs.append(first)
            if every > 1:
                extend(map(apply, batch[start + 1:start + every]))
        engine_ns += clock() - t_batch
        if n_lat + len(samples) > capacity:
            capacity = 2 * capacity + len(samples)
            lat = np.resize(lat, capacity)
        lat[n_lat:n_lat + len(samples)] = samples
        n_lat += len(samples)
        n += size
        counts.update(map(type, chain.from_iterable(outs)))
        if sink is not None:
            for events in outs:
                sink(events)
        if batch_sink is not None:
            batch_sink(outs)
        if progress is not None and n >= next_progress:
            progress(n)
            next_progress = (n // progress_every + 1) * progress_every
    wall = clock() - wall_start
    trades = counts[TradeExecuted]
    rejects = counts[OrderRejected] + counts[DepositRejected]
    return ReplayStats(n, sum(counts.values()), trades, rejects, engine_ns, wall, lat[:n_lat],
                       every)
