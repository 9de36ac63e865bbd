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

Lockstep mode (`--b-pythonpath DIR` and/or `--b-flow`, `--b-accounts`, `--b-rules`): two
worker processes, A (this environment, or `--a-pythonpath`) and B, each parse their flow and
replay it chunk by chunk *in turn* — A's chunk i, then B's chunk i (the order swapped every
chunk) — so both see the same moments of a busy machine; per chunk the fastest of the
repeats counts, as above, and the ratio B/A comes from one run. Run this file by path
(`python benchmarks/engine_ab.py ...`) or as a module: the workers run this file, importing
whichever engine their PYTHONPATH selects.
"""
from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import time
from pathlib import Path

from ccerx.engine.core.exchange import Exchange
from ccerx.engine.formats.config import load_accounts, load_instruments
from ccerx.engine.formats.ndjson import parse_command

CHUNK = 2_000


def load(flow: str, accounts, rules):
    """(commands in chunks, a function making a fresh exchange)."""
    commands = [parse_command(line) for line in Path(flow).read_bytes().splitlines()
                if line.strip()]
    chunks = [commands[i:i + CHUNK] for i in range(0, len(commands), CHUNK)]
    extra = {}
    if rules:
        from ccerx.engine.core.rules import profile
        extra["rules"] = profile(rules)

    def fresh():
        return Exchange(load_instruments(None), load_accounts(accounts) if accounts else None,
                        **extra)
    return commands, chunks, fresh


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("flow")
    p.add_argument("--accounts")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--rules", help="rule profile (omitted: the engine's default, so that a "
                                   "build without profiles runs too)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="lockstep mode: time chunks by wall clock (default) or by the worker "
                        "thread's CPU time (time.thread_time_ns: the time a busy machine keeps "
                        "it off the CPU does not count)")
    p.add_argument("--b-pure-python", action="store_true",
                   help="lockstep mode: B runs the engine's .py sources (CCERX_PURE_PYTHON=1), "
                        "A the compiled core: the same build, compiled against pure Python")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for name, text in (("pythonpath", "PYTHONPATH of its engine build"),
                       ("flow", "flow"), ("accounts", "accounts file"), ("rules", "rule profile")):
        if name == "pythonpath":
            p.add_argument("--a-pythonpath", metavar="DIR",
                           help="lockstep mode: PYTHONPATH of A's engine build (default: this one)")
        p.add_argument(f"--b-{name}", metavar=name.upper(),
                       help=f"lockstep mode: B's {text} (default: A's)")
    args = p.parse_args()
    if args.worker:
        return worker(args)
    if any(getattr(args, f"b_{n}") for n in ("pythonpath", "flow", "accounts", "rules")) \
            or args.a_pythonpath or args.b_pure_python:
        return lockstep(args)
    commands, chunks, fresh = load(args.flow, args.accounts, args.rules)
    fastest = [float("inf")] * len(chunks)
    digest = None
    clock = time.perf_counter
    gc.disable()
    for _ in range(args.repeat):
        exchange = fresh()
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


def worker(args) -> None:
    """Replays chunks on request: 'reset', 'chunk I' (answers the ns it took), 'hash',
    'size'; one answer line each."""
    commands, chunks, fresh = load(args.flow, args.accounts, args.rules)
    exchange = None
    clock = time.thread_time_ns if args.clock == "cpu" else time.perf_counter_ns
    gc.disable()
    for line in sys.stdin:
        word, _, arg = line.strip().partition(" ")
        if word == "reset":
            exchange = None
            gc.collect()
            exchange = fresh()
            answer = "ok"
        elif word == "chunk":
            apply = exchange.apply
            chunk = chunks[int(arg)] if int(arg) < len(chunks) else ()
            started = clock()
            for command in chunk:
                apply(command)
            answer = str(clock() - started)
        elif word == "hash":
            answer = exchange.state_hash()
        elif word == "size":
            answer = f"{len(commands)} {len(chunks)}"
        else:
            return
        sys.stdout.write(answer + "\n")
        sys.stdout.flush()


def lockstep(args) -> None:
    sides = {}
    for side in ("a", "b"):
        flow = (args.b_flow if side == "b" else None) or args.flow
        accounts = (args.b_accounts if side == "b" else None) or args.accounts
        rules = (args.b_rules if side == "b" else None) or args.rules
        path = getattr(args, f"{side}_pythonpath")
        env = dict(os.environ)
        if path:
            env["PYTHONPATH"] = path
        if args.b_pure_python:
            env["CCERX_PURE_PYTHON"] = "1" if side == "b" else ""
        cmd = [sys.executable, str(Path(__file__).resolve()), flow, "--worker"]
        cmd += ["--accounts", accounts] if accounts else []
        cmd += ["--rules", rules] if rules else []
        cmd += ["--clock", args.clock]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                env=env)
        build = (path or "this") + (", pure Python" if args.b_pure_python and side == "b" else "")
        sides[side] = (proc, f"{flow} rules={rules or 'default'} build={build}")

    def ask(side, text):
        proc = sides[side][0]
        proc.stdin.write(text + "\n")
        proc.stdin.flush()
        return proc.stdout.readline().strip()

    sizes = {side: tuple(map(int, ask(side, "size").split())) for side in sides}
    n_chunks = max(n for _, n in sizes.values())
    fastest = {side: [float("inf")] * n_chunks for side in sides}
    hashes = {}
    for r in range(args.repeat):
        for side in sides:
            ask(side, "reset")
        for i in range(n_chunks):
            for side in (("a", "b") if (i + r) % 2 == 0 else ("b", "a")):
                took = int(ask(side, f"chunk {i}"))
                fastest[side][i] = min(fastest[side][i], took)
        hashes = {side: ask(side, "hash") for side in sides}
    rate = {}
    for side in sides:
        ask(side, "quit")
        sides[side][0].wait()
        rate[side] = sizes[side][0] / (sum(fastest[side]) / 1e9)
        print(f"{side.upper()}: {rate[side]:,.0f} cmd/s engine-only  state hash {hashes[side]}  "
              f"({sides[side][1]})")
    print(f"B/A {rate['b'] / rate['a']:.3f}  ({args.clock} clock, fastest of {args.repeat} "
          f"per chunk)")


if __name__ == "__main__":
    main()
