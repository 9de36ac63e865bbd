"""Micro-benchmarks of the engine's four basic operations, and a 1,000,000-command replay
(pytest-benchmark).

Not part of the test suite (testpaths = tests). Run on demand:
    python -m pytest benchmarks/test_micro.py
Each benchmark applies pre-built commands to an Exchange already holding a realistic
resting book (10,000 orders per side over 100 price levels, four credit types), times
rounds of 100 calls, and checks the end state so a fast wrong answer fails.
"""
from __future__ import annotations

import random

from ccerx.engine.core.commands import AmendOrder, CancelOrder, NewOrder
from ccerx.engine.core.events import OrderAccepted, OrderAmended, OrderCancelled, TradeExecuted
from ccerx.engine.core.exchange import Exchange

ROUNDS, ITERATIONS = 300, 100
N = ROUNDS * ITERATIONS + 2 * ITERATIONS   # pytest-benchmark may make a calibration call
TICK = 10_000          # price units per 0.01 CNY tick
REF = 62 * 1_000_000   # CCER-AFF reference price, in price units
ACCOUNTS = [f"ACC{i:04d}" for i in range(200)]


def resting_book(per_side: int = 10_000, prefix: str = "r") -> Exchange:
    """Bids 61.00-61.99 and asks 62.01-63.00 on CCER-AFF, `per_side` orders each."""
    ex = Exchange()
    rng = random.Random(1)
    for i in range(per_side):
        for side, price in (("buy", REF - TICK * rng.randint(1, 100)),
                            ("sell", REF + TICK * rng.randint(1, 100))):
            ex.apply(NewOrder(f"{prefix}{side[0]}{i}", rng.choice(ACCOUNTS), "CCER-AFF", side,
                              "limit", None, price, rng.randint(1, 50) * 10))
    return ex


def _bench(benchmark, ex: Exchange, commands: list) -> list:
    it = iter(commands)
    apply = ex.apply
    events = []

    def run():
        events.append(apply(next(it)))

    benchmark.pedantic(run, rounds=ROUNDS, iterations=ITERATIONS, warmup_rounds=0)
    assert ROUNDS * ITERATIONS <= len(events) <= len(commands)
    ex.check()
    return events


def test_add_resting_order(benchmark):
    ex = resting_book()
    rng = random.Random(2)
    commands = [NewOrder(f"a{i}", rng.choice(ACCOUNTS), "CCER-AFF", "buy", "limit", None,
                         REF - TICK * rng.randint(1, 100), 100) for i in range(N)]
    events = _bench(benchmark, ex, commands)
    assert all(len(e) == 1 and type(e[0]) is OrderAccepted for e in events)
    assert len(ex.books["CCER-AFF"].orders) == 20_000 + len(events)


def test_cancel_resting_order(benchmark):
    ex = resting_book(per_side=N // 2 + 1, prefix="c")
    ids = [f"c{s}{i}" for i in range(N // 2) for s in "bs"]
    random.Random(3).shuffle(ids)
    events = _bench(benchmark, ex, [CancelOrder(oid) for oid in ids])
    assert all(type(e[0]) is OrderCancelled for e in events)
    assert len(ex.books["CCER-AFF"].orders) == 2 * (N // 2 + 1) - len(events)


def test_aggressive_match(benchmark):
    ex = resting_book()
    # N more asks of 10 t at 62.01 (behind the book's own 62.01 orders), then N buys that
    # each take exactly 10 t at the best ask
    for i in range(N):
        ex.apply(NewOrder(f"m{i}", "MAKER", "CCER-AFF", "sell", "limit", None, REF + TICK, 10))
    commands = [NewOrder(f"t{i}", "TAKER", "CCER-AFF", "buy", "limit", "ioc", REF + TICK, 10)
                for i in range(N)]
    events = _bench(benchmark, ex, commands)
    for batch in events:   # every taker fills 10 t at 62.01, nothing rests
        trades = [e for e in batch if type(e) is TradeExecuted]
        assert sum(t.qty for t in trades) == 10 and all(t.price == 62_01 for t in trades)


def test_amend_order(benchmark):
    """Alternately: quantity down (keeps priority) and a price move (back of a new level)."""
    ex = resting_book(per_side=N + 1, prefix="x")
    rng = random.Random(4)
    commands = []
    for i in range(N):
        oid = f"xb{i}"
        if i % 2:
            commands.append(AmendOrder(oid, None, 5))
        else:
            commands.append(AmendOrder(oid, REF - TICK * rng.randint(1, 100), None))
    events = _bench(benchmark, ex, commands)
    assert all(type(e[0]) is OrderAmended for e in events)
    assert all(e[0].priority_kept for e in events[1::2])       # quantity down keeps priority


def test_replay_realistic_flow(benchmark, tmp_path_factory):
    """Engine-only replay of a generated 1,000,000-command flow (commands decoded beforehand);
    the end state must equal a plain replay of the same flow's NDJSON text."""
    from ccerx.benchmarks.bench import EndState, reference_commands
    from ccerx.engine.formats.binary import iter_flow_commands
    from ccerx.benchmarks.flows import write_flow
    from ccerx.engine.replay import replay

    flow = tmp_path_factory.mktemp("replay") / "flow1m.npz"
    write_flow(flow, 1, 1_000_000)
    commands = list(iter_flow_commands(flow))
    exchanges = []

    def run():
        ex = Exchange()
        apply = ex.apply
        for command in commands:
            apply(command)
        exchanges.append(ex)

    benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    seconds = benchmark.stats.stats.max
    benchmark.extra_info["commands"] = len(commands)
    benchmark.extra_info["commands_per_s"] = round(len(commands) / seconds)
    reference = Exchange()
    replay(reference, reference_commands(flow))
    assert EndState.of(exchanges[-1]) == EndState.of(reference)
