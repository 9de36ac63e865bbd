"""The replay benchmark harness behind `ccerx bench`.

Passes over one flow, each on a fresh `Exchange`:
1. closed loop: commands decoded a chunk at a time (untimed), then applied back to back
   with one clock read per chunk: the maximum throughput, and throughput over time.
2. reference: a plain replay (`engine.replay.replay`) of the commands parsed from NDJSON
   text (a binary flow is rendered back to its NDJSON lines first). Its end state (state
   hash, trade and event counts) is what every timed pass must reproduce, so a fast wrong
   answer fails the bench instead of winning it.
3. service time: closed loop again with a clock read around every `apply`, into a
   preallocated NumPy buffer; percentiles come from an HDR histogram filled afterwards.
4. open loop, per offered rate R: command i has the planned send time t0 + i/R; the loop
   waits (spinning) until that time, applies the command, and records completion minus the
   *planned* time. When the engine stalls, the commands queued behind it are charged the
   wait, so coordinated omission cannot hide the stall.
Memory: peak RSS of the process and the RSS growth of the closed-loop pass (book state).
Collector: with it on (the default), passes 3 and 4 run inside `collector_off_the_hot_path`:
what was loaded is frozen (gc.freeze) and only the youngest generation is collected during
the pass; the full collection runs after it. --no-gc turns the collector off instead.
"""
from __future__ import annotations

import gc
import hashlib
import os
import platform
import resource
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ccerx.engine.core.exchange import Exchange
from ccerx.engine.formats.ndjson import parse_command
from ccerx.engine.replay import replay

from ccerx.engine.formats.binary import (FlowFile, is_binary_path, is_journal_path, iter_flow_command_chunks,
                     iter_journal_commands)
from ccerx.benchmarks.recorded_day import genesis

PERCENTILES = (50.0, 90.0, 99.0, 99.9, 99.99)
SPECTRUM = (0, 10, 20, 30, 40, 50, 60, 70, 75, 80, 85, 90, 92.5, 95, 96, 97, 98, 99, 99.3,
            99.5, 99.7, 99.9, 99.93, 99.95, 99.97, 99.99, 99.993, 99.995, 99.997, 99.999,
            99.9993, 99.9995, 99.9997, 99.9999)
TIMELINE_CHUNK = 1 << 14


class BenchError(Exception):
    """The bench could not produce a trustworthy result (e.g. wrong end state)."""


@dataclass
class EndState:
    state_hash: str
    trades: int
    events: int

    @classmethod
    def of(cls, exchange: Exchange) -> "EndState":
        return cls(exchange.state_hash(), exchange.next_trade_id - 1, exchange.seq)

    def to_json(self) -> dict:
        return {"state_hash": self.state_hash, "trades": self.trades, "events": self.events}


# ---------------------------------------------------------------------------- histograms
def latency_summary(lat_ns: np.ndarray) -> dict:
    """HDR-histogram percentiles (ns) of a latency buffer, plus exact min, max and mean.

    Every latency figure the benchmarks report comes from here. An HDR percentile is the
    upper bound of the bucket that holds it (3 significant digits), so near the top it can
    exceed the largest value recorded (p99.99 77,201 us next to max 77,166 us); each
    percentile is therefore clamped to the recorded [min, max]: it never leaves the range
    of the data and the columns of a table stay monotonic."""
    from hdrh.histogram import HdrHistogram
    if not len(lat_ns):
        return {"count": 0}
    hist = HdrHistogram(1, 3_600_000_000_000, 3)
    values, counts = np.unique(np.maximum(lat_ns, 1), return_counts=True)
    for v, c in zip(values.tolist(), counts.tolist()):
        hist.record_value(v, c)
    low, high = int(lat_ns.min()), int(lat_ns.max())

    def at(p: float) -> int:
        return min(max(int(hist.get_value_at_percentile(p)), low), high)

    out = {"count": int(len(lat_ns)), "mean": round(float(lat_ns.mean()), 1),
           "min": low, "max": high}
    for p in PERCENTILES:
        out[f"p{p:g}"] = at(p)
    out["spectrum"] = [[p, at(p)] for p in SPECTRUM]
    return out


# ---------------------------------------------------------------------------- flow access
def flow_digest(path) -> str:
    path = Path(path)
    files = sorted(path.glob("journal-*.log")) if path.is_dir() else [path]
    h = hashlib.sha256()
    for name in files:
        with open(name, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def reference_commands(path, limit: Optional[int] = None):
    """Commands via the plain NDJSON path (`parse_command` on text lines); a journal's
    commands as the journal decodes them (they carry fields NDJSON cannot, e.g. owner)."""
    n = 0
    if is_journal_path(path):
        for command in iter_journal_commands(path):
            if limit is not None and n >= limit:
                return
            n += 1
            yield command
        return
    if is_binary_path(path):
        with FlowFile(path) as flow:
            for lines in flow.iter_lines():
                for line in lines:
                    if limit is not None and n >= limit:
                        return
                    encoded = line.encode("utf-8", errors="surrogateescape")
                    if encoded.strip():
                        n += 1
                        yield parse_command(encoded)
        return
    with open(path, "rb") as f:
        for line in f:
            if limit is not None and n >= limit:
                return
            if line.strip():
                n += 1
                yield parse_command(line)


def command_chunks(path, limit: Optional[int], chunk: int):
    n = 0
    for commands in iter_flow_command_chunks(path, chunk):
        if limit is not None and n + len(commands) > limit:
            commands = commands[:limit - n]
        n += len(commands)
        if commands:
            yield commands
        if limit is not None and n >= limit:
            return


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


# ---------------------------------------------------------------------------- passes
def run_reference(path, make_exchange, limit, open_n, progress=None) -> dict:
    exchange = make_exchange()
    commands = reference_commands(path, limit)
    prefix_state = None
    stats_parts = []
    if open_n:
        head = []
        for c in commands:
            head.append(c)
            if len(head) == open_n:
                break
        stats_parts.append(replay(exchange, head, total=len(head)))
        prefix_state = EndState.of(exchange)
    stats_parts.append(replay(exchange, commands, progress=progress))
    n = sum(s.commands for s in stats_parts)
    engine_ns = sum(s.engine_ns for s in stats_parts)
    lat = np.concatenate([s.latencies_ns for s in stats_parts])
    return {"commands": n, "trades": sum(s.trades for s in stats_parts),
            "rejects": sum(s.rejects for s in stats_parts),
            "events": sum(s.events for s in stats_parts),
            "engine_s": engine_ns / 1e9,
            "engine_commands_per_s": n / (engine_ns / 1e9) if engine_ns else 0.0,
            "latency_ns": latency_summary(lat), "end": EndState.of(exchange),
            "prefix_end": prefix_state}


def run_closed_loop(path, make_exchange, limit, progress=None) -> dict:
    exchange = make_exchange()
    apply = exchange.apply
    clock = time.perf_counter_ns
    rss0 = _rss_bytes()
    timeline = []          # (engine seconds so far, commands/s of this chunk)
    total_ns = n = 0
    for commands in command_chunks(path, limit, TIMELINE_CHUNK):
        t0 = clock()
        for command in commands:
            apply(command)
        dt = clock() - t0
        total_ns += dt
        n += len(commands)
        timeline.append([round(total_ns / 1e9, 6), round(len(commands) / (dt / 1e9))])
        if progress is not None:
            progress(n)
    rss_growth = _rss_bytes() - rss0
    resting = sum(len(book.orders) for book in exchange.books.values())
    return {"commands": n, "engine_s": total_ns / 1e9,
            "commands_per_s": n / (total_ns / 1e9) if total_ns else 0.0,
            "timeline": timeline, "rss_growth_bytes": rss_growth, "resting_orders": resting,
            "end": EndState.of(exchange)}


def run_service_time(path, make_exchange, limit, progress=None) -> dict:
    exchange = make_exchange()
    apply = exchange.apply
    clock = time.perf_counter_ns
    lat = np.empty(1 << 20, dtype=np.int64)
    n = 0
    for commands in command_chunks(path, limit, 1 << 16):
        if n + len(commands) > len(lat):
            lat = np.resize(lat, 2 * (n + len(commands)))
        buf = [0] * len(commands)
        i = 0
        for command in commands:
            t0 = clock()
            apply(command)
            buf[i] = clock() - t0
            i += 1
        lat[n:n + i] = buf
        n += i
        if progress is not None:
            progress(n)
    lat = lat[:n]
    return {"commands": n, "latency_ns": latency_summary(lat), "end": EndState.of(exchange)}


def run_open_loop(commands: list, make_exchange, rate: float) -> dict:
    """Send `commands` at `rate` per second on a fixed schedule; latency from planned time."""
    exchange = make_exchange()
    apply = exchange.apply
    clock = time.perf_counter_ns
    n = len(commands)
    interval = 1e9 / rate
    start = clock() + 1_000_000
    planned = (start + np.round(np.arange(n) * interval)).astype(np.int64).tolist()
    done = [0] * n
    i = 0
    for command, when in zip(commands, planned):
        now = clock()
        while now < when:
            now = clock()
        apply(command)
        done[i] = clock()
        i += 1
    done_arr = np.asarray(done, dtype=np.int64)
    lat = done_arr - np.asarray(planned, dtype=np.int64)
    elapsed = (done_arr[-1] - start) / 1e9 if n else 0.0
    # achieved throughput per 100 ms of wall time
    bins = ((done_arr - start) // 100_000_000).astype(np.int64)
    per_bin = np.bincount(bins) * 10 if n else np.zeros(0)
    if len(per_bin) > 1:
        per_bin = per_bin[:-1]      # the last 100 ms window is partial
    return {"offered_per_s": rate, "commands": n,
            "achieved_per_s": n / elapsed if elapsed else 0.0,
            "latency_ns": latency_summary(lat),
            "timeline": [[round((k + 1) * 0.1, 1), int(v)] for k, v in enumerate(per_bin.tolist())],
            "end": EndState.of(exchange)}


# ---------------------------------------------------------------------------- driver
def _check(label: str, got: EndState, want: EndState) -> None:
    if got != want:
        raise BenchError(f"{label}: end state differs from the plain replay "
                         f"(state hash {got.state_hash} vs {want.state_hash}, trades "
                         f"{got.trades} vs {want.trades}, events {got.events} vs {want.events}); "
                         f"a fast wrong answer is not a result")


def default_rates(max_rate: float) -> list[float]:
    out = []
    for share in (0.25, 0.5, 0.75, 0.9):
        r = max_rate * share
        magnitude = 10 ** max(int(np.floor(np.log10(r))) - 1, 0)
        out.append(float(round(r / magnitude) * magnitude))
    return out


@contextmanager
def collector_off_the_hot_path(collecting: bool = True):
    """Around a timed pass with the collector on: what exists now (the loaded commands, the
    interpreter's start-up objects) is frozen out of the collector's reach (gc.freeze), and
    only the youngest generation is collected while the pass runs (its threshold unchanged:
    a collection of at most a few hundred young objects, tens of microseconds); the older
    generations, which would re-traverse every resting order, wait until the pass is over
    and are collected then. The engine leaves no reference cycles (tests/unit/
    test_engine_gc.py), so nothing it drops waits for that collection. Without `collecting`
    (--no-gc) it does nothing."""
    if not collecting or not gc.isenabled():
        yield
        return
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(thresholds[0], 1 << 30, 1 << 30)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
        gc.collect()


def run_bench(path, *, make_exchange: Optional[Callable[[], Exchange]] = None,
              limit: Optional[int] = None, rates: Optional[list[float]] = None,
              open_loop_commands: int = 200_000, open_loop: bool = True,
              progress_factory: Optional[Callable[[str, Optional[int]], Callable]] = None,
              notes: Optional[dict] = None, collect_garbage: bool = True) -> dict:
    """All passes; with collect_garbage=False Python's cyclic collector is off while they run
    (reference counting still frees everything the engine drops). Without `make_exchange`
    each pass starts from an empty `Exchange()`, or for a data directory (a journal) from the
    directory's own genesis (benchmarks/recorded_day.py)."""
    if make_exchange is None:
        make_exchange = (genesis(path).new_exchange if is_journal_path(path) else Exchange)
    was_enabled = gc.isenabled()
    if not collect_garbage:
        gc.disable()
    try:
        result = _run_bench(path, make_exchange, limit, rates, open_loop_commands, open_loop,
                            progress_factory, notes)
    finally:
        if was_enabled:
            gc.enable()
    result["gc"] = "on" if collect_garbage else "off"
    return result


def _run_bench(path, make_exchange, limit, rates, open_loop_commands, open_loop,
               progress_factory, notes) -> dict:
    path = Path(path)

    def progress(label, total):
        return progress_factory(label, total) if progress_factory else None

    with_open = open_loop and open_loop_commands > 0
    started = time.time()
    gc.collect()
    # the closed loop runs first, so that its RSS growth is the engine's state and not
    # memory recycled from an earlier pass
    closed = run_closed_loop(path, make_exchange, limit, progress("closed-loop", None))
    ref = run_reference(path, make_exchange, limit, open_loop_commands if with_open else 0,
                        progress("reference", closed["commands"]))
    total = ref["commands"]
    open_n = min(open_loop_commands, total) if with_open else 0
    _check("closed loop", closed["end"], ref["end"])
    with collector_off_the_hot_path():
        service = run_service_time(path, make_exchange, limit, progress("service-time", total))
    _check("service time", service["end"], ref["end"])
    opened = []
    if open_n:
        commands = [c for chunk in command_chunks(path, open_n, 1 << 16) for c in chunk]
        want = ref["prefix_end"] if open_n < total else ref["end"]
        if open_n == total:
            want = ref["end"]
        for rate in rates or default_rates(closed["commands_per_s"]):
            with collector_off_the_hot_path():
                result = run_open_loop(commands, make_exchange, rate)
            _check(f"open loop at {rate:,.0f}/s", result["end"], want)
            opened.append(result)
        del commands
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    end = ref["end"]
    return {
        "format": "ccerx-bench", "version": 1,
        "flow": {"path": str(path), "sha256": flow_digest(path), "commands": total,
                 "binary": is_binary_path(path), "journal": is_journal_path(path),
                 "limit": limit},
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "started_unix": int(started)},
        "notes": notes or {},
        "end_state": end.to_json() | {"rejects": ref["rejects"]},
        "reference": {"engine_commands_per_s": round(ref["engine_commands_per_s"]),
                      "engine_s": round(ref["engine_s"], 4), "latency_ns": ref["latency_ns"]},
        "closed_loop": {"commands_per_s": round(closed["commands_per_s"]),
                        "engine_s": round(closed["engine_s"], 4),
                        "timeline": closed["timeline"]},
        "service_time": {"latency_ns": service["latency_ns"]},
        "open_loop": [{"offered_per_s": r["offered_per_s"], "commands": r["commands"],
                       "achieved_per_s": round(r["achieved_per_s"]),
                       "latency_ns": r["latency_ns"], "timeline": r["timeline"]}
                      for r in opened],
        "memory": {"peak_rss_bytes": peak_rss,
                   "closed_loop_rss_growth_bytes": closed["rss_growth_bytes"],
                   "resting_orders_at_end": closed["resting_orders"]},
        "wall_s": round(time.time() - started, 2),
    }


# ---------------------------------------------------------------------------- reporting
def _us(ns) -> str:
    return f"{ns / 1000:,.2f}"


def format_table(result: dict) -> str:
    lines = []
    flow, end = result["flow"], result["end_state"]
    kind = ("engine journal" if flow.get("journal") else
            "binary" if flow["binary"] else "NDJSON")
    lines.append(f"flow {flow['path']}  ({flow['commands']:,} commands, {kind}; Python gc "
                 f"{result.get('gc', 'on')})")
    start = result.get("notes", {}).get("genesis")
    if start:
        lines.append(f"start state  {start['source']} (hash {start['state_hash']})")
    lines.append(f"end state  trades {end['trades']:,}  rejects {end['rejects']:,}  events "
                 f"{end['events']:,}  hash {end['state_hash']}  (all passes agree)")
    lines.append(f"closed-loop max throughput  {result['closed_loop']['commands_per_s']:>12,} "
                 f"commands/s (engine only, one core)")
    lines.append(f"plain replay (engine.replay) {result['reference']['engine_commands_per_s']:>11,} "
                 f"commands/s engine-only")
    head = ["run", "offered/s", "achieved/s"] + [f"p{p:g}" for p in PERCENTILES] + ["max"]
    rows = []
    svc = result["service_time"]["latency_ns"]
    rows.append(["service time (closed)", "-", f"{result['closed_loop']['commands_per_s']:,}"]
                + [_us(svc[f"p{p:g}"]) for p in PERCENTILES] + [_us(svc["max"])])
    for r in result["open_loop"]:
        lat = r["latency_ns"]
        rows.append(["open loop", f"{r['offered_per_s']:,.0f}", f"{r['achieved_per_s']:,}"]
                    + [_us(lat[f"p{p:g}"]) for p in PERCENTILES] + [_us(lat["max"])])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    lines.append("latency per command, microseconds:")
    for row in [head] + rows:
        lines.append("  " + "  ".join(str(x).rjust(w) for x, w in zip(row, widths)))
    mem = result["memory"]
    lines.append(f"memory  peak RSS {mem['peak_rss_bytes'] / 2**20:,.1f} MiB;  closed-loop RSS "
                 f"growth {mem['closed_loop_rss_growth_bytes'] / 2**20:,.1f} MiB with "
                 f"{mem['resting_orders_at_end']:,} orders resting at the end")
    return "\n".join(lines)


def plot_spectrum(series: list, path: Path, title: str) -> Path:
    """Latency percentile spectrum, log-log: [(label, latency summary with 'spectrum')]."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FixedFormatter

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for label, lat in series:
        pts = [(p, v) for p, v in lat.get("spectrum", []) if p < 100]
        if not pts:
            continue
        x = [1 / (1 - p / 100) for p, _ in pts]
        y = [max(v, 1) / 1000 for _, v in pts]
        ax.plot(x, y, marker=".", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    marks = [0, 50, 90, 99, 99.9, 99.99, 99.999, 99.9999]
    ax.xaxis.set_major_locator(FixedLocator([1 / (1 - m / 100) for m in marks]))
    ax.xaxis.set_major_formatter(FixedFormatter([f"{m:g}%" for m in marks]))
    ax.xaxis.set_minor_locator(FixedLocator([]))
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (us, log)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def write_plots(result: dict, out_dir: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [("service time (closed loop)", result["service_time"]["latency_ns"])]
    series += [(f"open loop {r['offered_per_s']:,.0f}/s", r["latency_ns"])
               for r in result["open_loop"]]
    paths = [plot_spectrum(series, out_dir / "latency_spectrum.png",
                           f"Latency percentile spectrum: {Path(result['flow']['path']).name}")]

    fig, ax = plt.subplots(figsize=(9, 5))
    tl = result["closed_loop"]["timeline"]
    if tl:
        ax.plot([t for t, _ in tl], [v for _, v in tl], label="closed loop (engine time)")
    for r in result["open_loop"]:
        if r["timeline"]:
            ax.plot([t for t, _ in r["timeline"]], [v for _, v in r["timeline"]],
                    label=f"open loop, offered {r['offered_per_s']:,.0f}/s (wall time)")
    ax.set_xlabel("seconds")
    ax.set_ylabel("commands per second")
    ax.set_title("Throughput over time")
    ax.grid(True, alpha=0.3)
    ax.legend()
    path = out_dir / "throughput.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    paths.append(path)
    return paths


# ---------------------------------------------------------------------------- regressions
# Open-loop latency depends on the offered rate, and by default the rates derive from each
# run's own closed-loop maximum (default_rates): two runs offer the same rate at different
# loads, or different rates. Runs are therefore compared only at the same offered rate and
# command count; `ccerx bench --compare` runs at the baseline's rates (open_loop_plan).
def not_comparable(baseline: dict, current: dict) -> list[str]:
    """Why `current` cannot be compared with `baseline` at all (empty when it can): another
    flow, another part of it, or the collector set differently. `current` may be partial
    (only "flow" and "gc"), so that a bench is refused before it runs."""
    reasons = []
    b_flow, c_flow = baseline.get("flow", {}), current.get("flow", {})
    if b_flow.get("sha256") and c_flow.get("sha256") and b_flow["sha256"] != c_flow["sha256"]:
        reasons.append(f"different flows: the baseline ran {b_flow.get('path')} (sha256 "
                       f"{b_flow['sha256'][:12]}...), this run {c_flow.get('path')} (sha256 "
                       f"{c_flow['sha256'][:12]}...)")
    if "limit" in c_flow and b_flow.get("limit") != c_flow["limit"]:
        reasons.append(f"different parts of the flow: the baseline used --limit "
                       f"{b_flow.get('limit')}, this run --limit {c_flow['limit']}")
    if "gc" in current and baseline.get("gc", "on") != current["gc"]:
        reasons.append(f"the garbage collector was {baseline.get('gc', 'on')} in the baseline "
                       f"and {current['gc']} in this run (--no-gc)")
    return reasons


def open_loop_plan(baseline: dict) -> tuple[list[float], Optional[int]]:
    """The offered rates and commands per run of the baseline's open-loop runs, to run at."""
    runs = baseline.get("open_loop", [])
    return [r["offered_per_s"] for r in runs], (runs[0]["commands"] if runs else None)


def uncompared_open_loop(baseline: dict, current: dict) -> list[str]:
    """The baseline's open-loop runs that `current` has no run to compare with (same offered
    rate, same number of commands), in words."""
    have = {(r["offered_per_s"], r["commands"]) for r in current.get("open_loop", [])}
    missing = [r for r in baseline.get("open_loop", [])
               if (r["offered_per_s"], r["commands"]) not in have]
    if not missing:
        return []
    ran = ", ".join(f"{r['offered_per_s']:,.0f}/s x {r['commands']:,}"
                    for r in current.get("open_loop", [])) or "none"
    return [f"open loop at {r['offered_per_s']:,.0f}/s x {r['commands']:,} commands not compared: "
            f"this run has no run at that rate and length (it ran: {ran}); run `ccerx bench "
            f"FLOW --compare BASELINE` without --rates to use the baseline's rates"
            for r in missing]


def compare(baseline: dict, current: dict, tolerance: float) -> list[str]:
    """Problems of `current` against `baseline` (empty when within tolerance). Open-loop
    runs are compared only at the same offered rate and number of commands."""
    problems = []
    b_tp = baseline["closed_loop"]["commands_per_s"]
    c_tp = current["closed_loop"]["commands_per_s"]
    if b_tp and c_tp < b_tp * (1 - tolerance):
        problems.append(f"closed-loop throughput dropped {100 * (1 - c_tp / b_tp):.1f}%: "
                        f"{c_tp:,} < {b_tp:,} commands/s (tolerance {100 * tolerance:g}%)")
    b99 = baseline["service_time"]["latency_ns"].get("p99")
    c99 = current["service_time"]["latency_ns"].get("p99")
    if b99 and c99 is not None and c99 > b99 * (1 + tolerance):
        problems.append(f"service-time p99 grew {100 * (c99 / b99 - 1):.1f}%: {_us(c99)} us > "
                        f"{_us(b99)} us (tolerance {100 * tolerance:g}%)")
    base_open = {(r["offered_per_s"], r["commands"]): r for r in baseline.get("open_loop", [])}
    for r in current.get("open_loop", []):
        b = base_open.get((r["offered_per_s"], r["commands"]))
        if b is None:
            continue
        bp, cp = b["latency_ns"].get("p99"), r["latency_ns"].get("p99")
        if bp and cp is not None and cp > bp * (1 + tolerance):
            problems.append(f"open loop at {r['offered_per_s']:,.0f}/s: p99 grew "
                            f"{100 * (cp / bp - 1):.1f}%: {_us(cp)} us > {_us(bp)} us "
                            f"(tolerance {100 * tolerance:g}%)")
    if (baseline["flow"].get("sha256") == current["flow"].get("sha256")
            and baseline["flow"].get("limit") == current["flow"].get("limit")
            and baseline.get("notes", {}).get("accounts") == current.get("notes", {}).get("accounts")
            and _start_hash(baseline) == _start_hash(current)
            and baseline["end_state"]["state_hash"] != current["end_state"]["state_hash"]):
        problems.append(f"same flow, different end state: state hash "
                        f"{current['end_state']['state_hash']} != baseline "
                        f"{baseline['end_state']['state_hash']} (engine behaviour changed)")
    return problems


def _start_hash(result: dict):
    """The state hash a journal's replay started from (None for other flows, and for results
    written before a journal was replayed from its directory's genesis)."""
    return (result.get("notes", {}).get("genesis") or {}).get("state_hash")
