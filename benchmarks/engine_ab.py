"""Engine-only throughput of one flow, robust to a busy machine: for A/B comparisons of two
builds of the engine on the same flow in the same run.

    python -m ccerx.benchmarks.engine_ab FLOW.ndjson --accounts ACCOUNTS.json [--repeat 5]
        [--rules continuous]

The flow is parsed once; the engine replays it `--repeat` times, each time from a fresh
exchange. The commands are timed in chunks of 2,000 and, per chunk, the fastest of the
replays counts (every replay does the same work chunk for chunk, so the fastest is the one
least disturbed by other processes); the figure is commands / the sum of those fastest
times. It prints that figure and the state hash, which must be the same for both builds.
To compare a base commit with the working tree, alternate runs of the two builds (see
benchmarks/README.md, "Rule profiles"): PYTHONPATH pointing at a directory holding
ccerx/{engine,gateway,benchmarks,scripts} of the base worktree wins over the editable
install.
"""
from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

from ccerx.engine.core.exchange import Exchange
from ccerx.engine.formats.config import load_accounts, load_instruments
from ccerx.engine.formats.ndjson import parse_command

CHUNK = 2_000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("flow")
    p.add_argument("--accounts")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--rules", help="rule profile (omitted: the engine's default, so that a "
                                   "build without profiles runs too)")
    args = p.parse_args()
    commands = [parse_command(line) for line in Path(args.flow).read_bytes().splitlines()
                if line.strip()]
    chunks = [commands[i:i + CHUNK] for i in range(0, len(commands), CHUNK)]
    extra = {}
    if args.rules:
        from ccerx.engine.core.rules import profile
        extra["rules"] = profile(args.rules)
    fastest = [float("inf")] * len(chunks)
    digest = None
    clock = time.perf_counter
    gc.disable()
    for _ in range(args.repeat):
        exchange = Exchange(load_instruments(None),
                            load_accounts(args.accounts) if args.accounts else None, **extra)
        apply = exchange.apply
        for i, chunk in enumerate(chunks):
            started = clock()
            for command in chunk:
                apply(command)
            took = clock() - started
            if took < fastest[i]:
                fastest[i] = took
        digest = exchange.state_hash()
        del exchange, apply
        gc.collect()
    print(f"{len(commands) / sum(fastest):,.0f} cmd/s engine-only  state hash {digest}")


if __name__ == "__main__":
    main()
