"""Memory per resting order: `python -m ccerx.benchmarks.memory [--orders 1000000]`.

Rests N non-crossing limit orders (bids below, asks above each reference price, spread over
the four credit types' band levels, 200 accounts) and divides the memory the exchange
gained by N, measured two ways:
  * tracemalloc: Python allocations still alive after the orders rest (the order id strings
    are created inside the loop, as a decoder would, so they are counted);
  * RSS: resident set growth of the process, without tracemalloc (includes allocator
    overhead and fragmentation), in a separate run.
Both include everything the engine keeps per order: the Order object, its id string, the
book's id index entry, the seen-order-ids set entry and the share of price levels.
The end state is checked: N orders resting, book invariants hold.
"""
from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tracemalloc

from ccerx.engine.core.commands import NewOrder
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.core.types import DEFAULT_INSTRUMENTS


def _rss() -> int:
    import os
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rest_orders(ex: Exchange, n: int) -> None:
    specs = DEFAULT_INSTRUMENTS
    accounts = [f"ACC{i:04d}" for i in range(1, 201)]
    apply = ex.apply
    for i in range(n):
        spec = specs[i % 4]
        k = i // 8
        span_bid = spec.ref_ticks - spec.min_ticks
        span_ask = spec.max_ticks - spec.ref_ticks
        if i % 8 < 4:
            side, ticks = "buy", spec.ref_ticks - 1 - (k * 7919) % span_bid
        else:
            side, ticks = "sell", spec.ref_ticks + 1 + (k * 7919) % (span_ask - 1)
        apply(NewOrder(f"o{i}", accounts[i % 200], spec.symbol, side, "limit", None,
                       ticks * spec.tick_units, 10 + i % 90))


def measure(n: int, method: str) -> dict:
    gc.collect()
    if method == "tracemalloc":
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
    else:
        before = _rss()
    ex = Exchange()
    rest_orders(ex, n)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] if method == "tracemalloc" else _rss()
    if method == "tracemalloc":
        tracemalloc.stop()
    resting = sum(len(b.orders) for b in ex.books.values())
    if resting != n:
        raise SystemExit(f"expected {n} resting orders, found {resting}")
    levels = sum(len(b.bids) + len(b.asks) for b in ex.books.values())
    if n <= 200_000:
        ex.check()
    return {"method": method, "orders": n, "price_levels": levels, "bytes": after - before,
            "bytes_per_order": round((after - before) / n, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ccerx.benchmarks.memory", description=__doc__.split("\n")[0])
    p.add_argument("--orders", type=int, default=1_000_000)
    p.add_argument("--method", choices=("tracemalloc", "rss", "both"), default="both")
    args = p.parse_args(argv)
    if args.method == "both":
        results = [measure(args.orders, "tracemalloc")]
        out = subprocess.run([sys.executable, "-m", "ccerx.benchmarks.memory", "--orders",
                              str(args.orders), "--method", "rss"], capture_output=True,
                             text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        for r in results:
            print(f"{r['method']:>11}: {r['bytes_per_order']:,.1f} bytes per resting order "
                  f"({r['orders']:,} orders over {r['price_levels']:,} price levels, "
                  f"{r['bytes'] / 2**20:,.1f} MiB)")
        print("target <= 300 bytes per resting order")
        return 0
    print(json.dumps(measure(args.orders, args.method)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
