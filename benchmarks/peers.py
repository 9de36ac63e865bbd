"""ccerx next to the matching engines a Python user can install (issue 13, item 5).

    python -m ccerx.benchmarks.peers [--commands 1000000] [--rounds 3] [--python PYTHON3.12]

1. Generates `ccerx gen-flow --seed 7 --commands N` (out/peers/flow-N.ndjson) and cleans it
   so every engine can express it (`clean_flow`): limit orders resting until cancelled (day),
   market orders whose unfilled rest is dropped (IOC), cancels; dropped are amends and
   replaces, IOC/FOK limits, FOK markets, status/end-of-day lines, malformed lines, cancels
   of unknown orders, and every command ccerx rejects (a reject changes no state, so ccerx's
   trades are the same with or without them). Every order gets its own account, so ccerx's
   self-trade prevention never acts (the peers have none, or a different one).
2. Creates a separate virtual environment (~/.cache/ccerx/peers-venv, --venv; never the
   project's, and not under the repository, whose tests read every .py file in it) on demand and
   pip-installs the PyPI peers: matching-engine (pure Python; needs Python >= 3.12, so the
   venv is made with a python3.12 when one is found), cython-orderbook (Cython),
   limit-order-book (C++ through ctypes), plus sortedcontainers and orjson for the lean book
   and the drivers. A peer that does not install or import is reported in its row.
3. Runs benchmarks/peers/driver.py per engine: once to check that trades and traded volume
   agree with ccerx's, then in alternating rounds (the engine order rotates each round)
   engine-only (flow parsed to tuples first; CPU time of the engine calls) and whole-process
   (read + parse + apply line by line; the child process's CPU time, start-up included).
   Figures are medians over the rounds, with the ratio to ccerx measured in the same rounds.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import venv
from pathlib import Path

import orjson

from ccerx.engine.core.events import OrderRejected, TradeExecuted
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.core.rules import PROFILES
from ccerx.engine.core.types import price_field
from ccerx.engine.formats.config import load_instruments
from ccerx.engine.formats.ndjson import parse_command

DRIVER = Path(__file__).resolve().parent / "peers" / "driver.py"
PEERS = {   # engine -> (pip requirement, what it is)
    "matching-engine": ("matching-engine", "PyPI, pure Python (msgspec structs)"),
    "cython-orderbook": ("cython-orderbook", "PyPI, Cython"),
    "limit-order-book": ("limit-order-book", "PyPI, C++ via ctypes"),
}
IMPORTS = {"matching-engine": "matching_engine.engine", "cython-orderbook": "cython_orderbook",
           "limit-order-book": "limit_order_book"}
HELPERS = ["sortedcontainers", "orjson"]
DEFAULT_VENV = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ccerx" / "peers-venv"


def clean_flow(lines) -> tuple[list[bytes], collections.Counter]:
    """A gen-flow command stream -> the lines every engine can express, and what was dropped
    (reason -> count). Each kept line is a ccerx command line with, for the peers, "n" (a
    numeric order id), "px" (the price in ticks) and, on a cancel, the order's instrument and
    side."""
    specs = {spec.symbol: spec for spec in load_instruments(None)}
    dropped: collections.Counter = collections.Counter()
    candidates = []
    orders = {}            # original order id -> (n, instrument, side)
    for line in lines:
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            dropped["malformed line"] += 1
            continue
        op = obj.get("op") if type(obj) is dict else None
        if op == "new":
            kind, tif = obj.get("type", "limit"), obj.get("tif")
            if kind == "limit" and tif in (None, "day"):
                out = {"op": "new", "type": "limit", "tif": "day"}
            elif kind == "market" and tif in (None, "ioc"):
                out = {"op": "new", "type": "market", "tif": "ioc"}
            else:
                dropped[f"{kind} {tif}"] += 1
                continue
            spec = specs.get(obj.get("instrument"))
            price, side = obj.get("price"), obj.get("side")
            if (spec is None or side not in ("buy", "sell") or type(obj.get("qty")) is not int
                    or type(obj.get("order_id")) is not str or obj["order_id"] in orders
                    or (kind == "limit" and type(price) is not str)):
                dropped["invalid order"] += 1
                continue
            units = price_field(price) if kind == "limit" else 0
            if type(units) is not int or units % spec.tick_units:
                dropped["invalid order"] += 1
                continue
            px = units // spec.tick_units
            n = len(orders) + 1
            orders[obj["order_id"]] = (n, spec.symbol, side)
            out.update({"ts": obj.get("ts"), "order_id": f"o{n}", "n": n, "account": f"A{n}",
                        "instrument": spec.symbol, "side": side, "qty": obj["qty"]})
            if kind == "limit":
                out["price"], out["px"] = price, px
            candidates.append(out)
        elif op == "cancel":
            known = orders.get(obj.get("order_id"))
            if known is None:
                dropped["cancel of an unknown order"] += 1
                continue
            n, instrument, side = known
            candidates.append({"op": "cancel", "ts": obj.get("ts"), "order_id": f"o{n}", "n": n,
                               "instrument": instrument, "side": side})
        else:
            dropped[f"op {op}"] += 1
    exchange = Exchange(load_instruments(None), None, rules=PROFILES["continuous"])
    kept = []
    for obj in candidates:
        line = orjson.dumps(obj)
        if any(type(e) is OrderRejected for e in exchange.apply(parse_command(line))):
            dropped[f"rejected by ccerx ({obj['op']})"] += 1
            continue
        kept.append(line)
    return kept, dropped


def ccerx_counts(lines) -> dict:
    """Trades and traded volume of ccerx on these lines (continuous rules, no accounts)."""
    exchange = Exchange(load_instruments(None), None, rules=PROFILES["continuous"])
    trades = volume = 0
    for line in lines:
        for event in exchange.apply(parse_command(line)):
            if type(event) is TradeExecuted:
                trades += 1
                volume += event.qty
    return {"trades": trades, "volume": volume}


def agreement(reference: dict, result: dict) -> str:
    """'agree' or what differs; an engine that reports no trade count is compared on volume."""
    problems = []
    if result.get("trades") is not None and result["trades"] != reference["trades"]:
        problems.append(f"trades {result['trades']:,} vs {reference['trades']:,}")
    if result.get("volume") != reference["volume"]:
        problems.append(f"volume {result.get('volume')} vs {reference['volume']:,}")
    if problems:
        return "DIFFER: " + "; ".join(problems)
    return "agree" if result.get("trades") is not None else "agree (volume; no trade count)"


def run_driver(python: str, engine: str, flow: Path, mode: str) -> tuple[dict, float]:
    """One driver process: its JSON line and the process's CPU seconds (children's rusage)."""
    before = os.times()
    done = subprocess.run([python, str(DRIVER), engine, str(flow.resolve()), mode],
                          capture_output=True, text=True, cwd=DRIVER.parent)
    after = os.times()
    if done.returncode != 0:
        raise RuntimeError(f"{engine} {mode}: {done.stderr.strip()[-500:]}")
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return json.loads(done.stdout.strip().splitlines()[-1]), cpu


def find_python312(explicit: str | None) -> str | None:
    candidates = [explicit] if explicit else []
    candidates += [shutil.which("python3.12"), shutil.which("python3.13")]
    for root in (Path.home() / ".pyenv" / "versions",):
        if root.is_dir():
            candidates += [str(p) for p in sorted(root.glob("3.1[23]*/bin/python3"))]
    for candidate in candidates:
        if candidate and subprocess.run([candidate, "-c", "import sys; assert sys.version_info >= (3, 12)"],
                                        capture_output=True).returncode == 0:
            return candidate
    return None


def peers_venv(where: Path, python: str | None) -> tuple[str, dict[str, str]]:
    """The venv's python and, per peer, '' (imports) or why it is missing."""
    bin_python = where / "bin" / "python"
    if not bin_python.exists():
        if python:
            subprocess.run([python, "-m", "venv", str(where)], check=True)
        else:
            venv.create(where, with_pip=True)
    status = {}
    pip = [str(bin_python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + HELPERS, capture_output=True)
    for engine, (requirement, _) in PEERS.items():
        got = subprocess.run(pip + [requirement], capture_output=True, text=True)
        check = subprocess.run([str(bin_python), "-c", f"import {IMPORTS[engine]}"],
                               capture_output=True, text=True)
        if check.returncode == 0:
            status[engine] = ""
        else:
            why = (got.stderr.strip().splitlines() or check.stderr.strip().splitlines() or ["?"])[-1]
            status[engine] = f"does not {'install' if got.returncode else 'import'} here: {why[:160]}"
    return str(bin_python), status


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--commands", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--python", help="interpreter for the peers' venv (default: a python3.12 "
                                    "if one is found, for matching-engine; else this one)")
    p.add_argument("--out", default="out/peers", help="flows (default out/peers)")
    p.add_argument("--venv", default=str(DEFAULT_VENV),
                   help=f"the peers' virtual environment (default {DEFAULT_VENV}: outside the "
                        "repository, whose tests read every .py file under it)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = out / f"flow-{args.commands}.ndjson"
    if not raw.exists():
        subprocess.run([sys.executable, "-m", "ccerx.scripts.ccerx", "gen-flow", "--seed",
                        str(args.seed), "--commands", str(args.commands), "--out", str(raw)],
                       check=True, capture_output=True)
    kept, dropped = clean_flow(raw.read_bytes().splitlines())
    flow = out / f"flow-{args.commands}-clean.ndjson"
    flow.write_bytes(b"\n".join(kept) + b"\n")
    reference = ccerx_counts(kept)
    print(f"flow: {raw} ({args.commands:,} commands) -> {flow}: {len(kept):,} kept; dropped "
          + ", ".join(f"{reason} {count:,}" for reason, count in dropped.most_common()))
    print(f"ccerx: {reference['trades']:,} trades, {reference['volume']:,} t")
    venv_python, status = peers_venv(Path(args.venv), find_python312(args.python))
    engines = {"ccerx": sys.executable, "lean": venv_python}
    notes = {"ccerx": "full validation, events (continuous, no accounts)",
             "lean": "SortedDict + deque book, no validation (in the harness)"}
    for engine, (_, what) in PEERS.items():
        notes[engine] = what
        if status[engine]:
            notes[engine] += f"; {status[engine]}"
            continue
        engines[engine] = venv_python
    checks = {}
    for engine, python in engines.items():
        result, _ = run_driver(python, engine, flow, "verify")
        checks[engine] = agreement(reference, result)
        print(f"{engine}: {checks[engine]}", flush=True)
    order = list(engines)
    engine_only = collections.defaultdict(list)
    whole = collections.defaultdict(list)
    for r in range(args.rounds):
        for engine in order[r % len(order):] + order[:r % len(order)]:
            result, _ = run_driver(engines[engine], engine, flow, "engine")
            engine_only[engine].append(result["commands"] / result["engine_cpu_s"])
            result, cpu = run_driver(engines[engine], engine, flow, "stream")
            whole[engine].append(result["commands"] / cpu)
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    med_e = {e: statistics.median(v) for e, v in engine_only.items()}
    med_w = {e: statistics.median(v) for e, v in whole.items()}
    print(f"\n{len(kept):,} commands, {args.rounds} alternating rounds, CPU time, medians\n")
    print("| engine | engine-only commands/s | x ccerx | whole process commands/s | x ccerx | trades/volume | notes |")
    print("|---|---:|---:|---:|---:|---|---|")
    for engine in ["ccerx", "lean", *PEERS]:
        if engine not in engines:
            print(f"| {engine} | - | - | - | - | - | {notes[engine]} |")
            continue
        print(f"| {engine} | {med_e[engine] / 1e3:,.0f}k | {med_e[engine] / med_e['ccerx']:.2f} | "
              f"{med_w[engine] / 1e3:,.0f}k | {med_w[engine] / med_w['ccerx']:.2f} | "
              f"{checks[engine]} | {notes[engine]} |")


if __name__ == "__main__":
    main()
