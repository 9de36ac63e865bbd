"""Sweeps: the same scenario over many seeds (and rule profiles), in parallel processes or on
a Dask distributed cluster (`--scheduler tcp://HOST:PORT`).

Each seed is an independent run (its own random generators, venue and accounts), so a
sweep's per-seed results are exactly those of running the seeds one by one; a process pool
only spreads them over the cores. `run_seed` keeps what the report needs from a run: the
calibration statistics, the daily closes per type (for the bands) and the market-quality
figures the rule what-ifs compare.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import replace
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from ccerx.engine.core.rules import PROFILES, RuleProfile
from ccerx.engine.core.types import InstrumentSpec

from ccerx.scripts.simulate.calibration import measure
from ccerx.scripts.simulate.report import emitter_fulfilment
from ccerx.scripts.simulate.run import Session
from ccerx.scripts.simulate.scenario import Scenario


def parse_seeds(text: str) -> list[int]:
    """'1-10', '3', '1,4,9' or '1-3,7' -> the seeds in order, each once."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            first, last = int(low), int(high) if high else int(low)
            if last < first:
                raise ValueError
            seeds += [s for s in range(first, last + 1) if s not in seeds]
    except ValueError:
        raise ValueError(f"--seeds wants e.g. 1-10 or 1,4,9, not {text!r}") from None
    if not seeds or len(seeds) > 1000:
        raise ValueError("--seeds: from 1 to 1000 seeds")
    return seeds


def what_if(label: str, scenario: Scenario) -> tuple[RuleProfile, Scenario]:
    """A rule profile by name, optionally with parameter changes: 'cbeex-2023:holding=1'
    (Art.29 holding period in trading days), 'cbeex-2023:band=20' (daily price band, % of
    the reference price, every credit type), or both ('cbeex-2023:holding=1:band=20')."""
    name, *changes = label.split(":")
    if name not in PROFILES:
        raise ValueError(f"unknown rule profile {name!r} in {label!r}; known: "
                         f"{', '.join(sorted(PROFILES))}")
    profile = PROFILES[name]
    for change in changes:
        key, _, value = change.partition("=")
        if key not in ("holding", "band") or not value.isdigit():
            raise ValueError(f"{label!r}: a change is holding=DAYS or band=PERCENT, not {change!r}")
        if key == "holding":
            profile = replace(profile, holding_days=int(value))
        else:
            if not 1 <= int(value) <= 100:
                raise ValueError(f"{label!r}: band must be 1 to 100 (%)")
            specs = []
            for spec in scenario.instruments:
                fields = spec.to_json()
                fields.pop("op", None)
                fields["band_pct"] = value
                specs.append(InstrumentSpec.from_fields(**fields))
            scenario = dataclasses.replace(scenario, instruments=specs)
    return (replace(profile, name=label) if changes else profile), scenario


def run_seed(scenario: Scenario, seed: int, rules: str = "cbeex-2023",
             result=None) -> dict:
    """One seed's figures (a plain dict: it crosses process boundaries) under `rules` (a
    `what_if` label). `result`: an already finished run of this scenario and seed, measured
    instead of re-run."""
    if result is None:
        profile, scenario = what_if(rules, scenario)
        result = Session(dataclasses.replace(scenario, seed=seed), rules=profile).run()
    symbols = result.scenario.symbols
    makers = [a for a in result.agents if a.kind == "market_maker"]
    spreads = {}
    for s in symbols:
        xs = [a - b for _, _, b, a, _, _ in result.samples[s] if a is not None and b is not None]
        spreads[s] = float(np.mean(xs)) if xs else float("nan")
    fulfilment = emitter_fulfilment(result)
    need = sum(fulfilment["need_t"].values())
    return {
        "seed": seed, "rules": rules, "trades": len(result.trades),
        "reconciled": result.reconciled,
        "calibration": measure(result),
        "closes": {s: [d.closes[s].close_ticks for d in result.days] for s in symbols},
        "tick_cny": {s: result.specs[s].tick_fen / 100 for s in symbols},
        "spread_ticks": float(np.mean([x for x in spreads.values() if x == x]))
        if any(x == x for x in spreads.values()) else float("nan"),
        "maker_trades": sum(a.trades for a in makers),
        "maker_volume_t": sum(sum(a.bought.values()) + sum(a.sold.values()) for a in makers),
        "maker_round_trip_t": sum(min(a.bought.get(a.instrument, 0), a.sold.get(a.instrument, 0))
                                  for a in makers),
        "emitters_covered": sum(fulfilment["bought_t"].values()) / need if need else float("nan"),
        "two_sided_share": float(np.mean([b is not None and a is not None
                                          for s in symbols
                                          for _, _, b, a, _, _ in result.samples[s]])),
        "depth_t": float(np.mean([bd + ad for s in symbols for *_, bd, ad in result.samples[s]])),
        "volume_t": sum(t[5] for t in result.trades) / len(result.days),
        "retired_t": sum(r.qty for r in result.retirements),
    }


def _client(scheduler: str, timeout: float = 10):
    try:
        from distributed import Client
    except ImportError:
        raise ValueError('--scheduler needs Dask distributed: pip install "ccerx[dask]"') from None
    try:
        return Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError) as err:
        raise ValueError(f"cannot reach the Dask scheduler at {scheduler}: {err}") from None


def check_scheduler(scheduler: str) -> None:
    """Raise ValueError (said before any work) if the scheduler cannot be reached."""
    _client(scheduler, timeout=5).close()


def _job(job):
    return run_seed(*job)


def sweep(scenario: Scenario, seeds: list[int], rules: str = "cbeex-2023",
          workers: int | None = None, done: dict | None = None,
          scheduler: str | None = None) -> list[dict]:
    """`run_seed` for every seed, in seed order; `done` {seed: figures} already measured.
    workers: processes (default: every core; 1 = in this process). scheduler: the address of
    a Dask distributed scheduler (tcp://HOST:PORT) whose workers run the seeds instead, on as
    many machines as it has (each worker needs ccerx installed, the same version); the
    per-seed results are the same as in process, since each seed is its own run."""
    done = dict(done or {})
    todo = [(scenario, seed, rules) for seed in seeds if seed not in done]
    if scheduler is not None and todo:
        with _client(scheduler) as client:
            results = client.gather(client.map(_job, todo, pure=False))
        done.update({r["seed"]: r for r in results})
        return [done[seed] for seed in seeds]
    workers = min(workers or os.cpu_count() or 1, len(todo)) if todo else 1
    if workers <= 1:
        results = [_job(job) for job in todo]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_job, todo))
    done.update({r["seed"]: r for r in results})
    return [done[seed] for seed in seeds]
