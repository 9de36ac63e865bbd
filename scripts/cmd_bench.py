"""`ccerx bench`: replay a flow through the engine and report throughput, latency, memory."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ccerx.engine.formats.binary import is_journal_path
from ccerx.benchmarks.bench import (BenchError, compare, flow_digest, format_table,
                                    not_comparable, open_loop_plan, run_bench,
                                    uncompared_open_loop, write_plots)
from ccerx.benchmarks.recorded_day import genesis
from ccerx.engine.formats.config import load_accounts, load_instruments
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.core.rules import PROFILES
from ccerx.scripts.progress import Progress


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bench", help="benchmark the engine on a flow (throughput, latency, memory)",
        description="Run a flow (NDJSON or binary .npz) through the engine: closed-loop maximum "
                    "throughput, per-command service time, open-loop runs at fixed offered "
                    "rates (latency from each command's planned send time), memory. Every pass "
                    "must end in the same state as a plain replay. Writes result.json, "
                    "latency_spectrum.png and throughput.png into --out.")
    p.add_argument("flow", nargs="?", help="flow file (.ndjson or .npz), or a data directory "
                   "holding the engine's own journal (journal-*.log) to replay a recorded day "
                   "from the directory's genesis (the state it was created with)")
    p.add_argument("--out", default="out/bench", metavar="DIR",
                   help="output directory (default out/bench; out/ is git-ignored)")
    p.add_argument("--rates", metavar="R1,R2,...",
                   help="offered rates for the open-loop runs, commands/s (default: 25, 50, 75 "
                        "and 90%% of the measured closed-loop maximum; with --compare the "
                        "baseline's rates, so that latencies are compared at the same rates)")
    p.add_argument("--open-loop-commands", type=int, metavar="N",
                   help="commands per open-loop run (the flow's first N; default 200000, with "
                        "--compare the baseline's; 0 = no open-loop runs)")
    p.add_argument("--limit", type=int, metavar="N", help="use only the flow's first N commands")
    p.add_argument("--accounts", metavar="ACCOUNTS.json",
                   help="turn on pre-trade risk checks with this accounts file (a data "
                        "directory has its own: one that differs is refused)")
    p.add_argument("--instruments", metavar="FILE.toml",
                   help="instrument config (a data directory has its own: one that differs "
                        "is refused)")
    p.add_argument("--rules", choices=sorted(PROFILES), default="continuous",
                   help="trading rules of the engine replay (default continuous, so existing "
                        "flows and their hashes stay comparable; a data directory replays "
                        "under the rules recorded in its genesis)")
    p.add_argument("--compare", metavar="BASELINE.json",
                   help="fail (exit 1) if throughput drops or p99 grows beyond --tolerance "
                        "against this earlier result.json (runs the open loop at its offered "
                        "rates; refuses, exit 2, a baseline of another flow, --limit or --no-gc)")
    p.add_argument("--tolerance", type=float, default=0.20,
                   help="allowed relative regression for --compare (default 0.20 = 20%%)")
    p.add_argument("--result", metavar="RESULT.json",
                   help="with --compare and no FLOW: compare this stored result instead of "
                        "running the bench")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-gc", action="store_true",
                   help="turn Python's cyclic garbage collector off during the passes (shows how "
                        "much of the latency tail is collection pauses)")
    p.add_argument("--e2e", action="store_true",
                   help="end to end: send the flow as FIX 4.4 over loopback from several broker "
                        "sessions to a `ccerx serve` subprocess; order-to-acknowledgement latency")
    p.add_argument("--sessions", type=int, default=2,
                   help="--e2e broker sessions (2 = the demo config: BROKER01/demo01 and "
                        "BROKER02/demo02; more = a generated password-less load config)")
    p.add_argument("--e2e-rates", default="1000,2000", metavar="R1,R2,...",
                   help="--e2e offered rates, FIX requests/s over all sessions (default 1000,2000)")
    p.add_argument("--e2e-commands", type=int, default=20_000, metavar="N",
                   help="--e2e: the flow's first N commands (default 20000)")
    p.add_argument("--client-parser", choices=("simplefix", "scan"), default="simplefix",
                   help="--e2e: how the client reads the gateway's messages: simplefix (default, "
                        "a full FIX parse, ~76 us per message in pure Python) or scan (framing "
                        "plus tags 35 and 11 only, so the client's parsing does not pace the run)")
    p.set_defaults(run=run)


def run(args) -> int:
    baseline = None
    if args.compare:
        try:
            baseline = json.loads(Path(args.compare).read_text())
            if not (isinstance(baseline, dict)
                    and isinstance(baseline.get("closed_loop"), dict)
                    and "commands_per_s" in baseline["closed_loop"]
                    and isinstance(baseline.get("service_time"), dict)
                    and isinstance(baseline["service_time"].get("latency_ns"), dict)):
                raise ValueError("not a result.json written by `ccerx bench`")
        except (OSError, ValueError) as err:
            reason = err.strerror if isinstance(err, OSError) else err
            print(f"ccerx bench: cannot read baseline {args.compare}: {reason}", file=sys.stderr)
            return 2
    if args.e2e:
        return _run_e2e(args)
    if args.flow is None:
        if not (baseline is not None and args.result):
            print("ccerx bench: give a FLOW file (or --compare BASELINE.json --result "
                  "RESULT.json)", file=sys.stderr)
            return 2
        result = json.loads(Path(args.result).read_text())
    else:
        if baseline is not None:
            refused = _not_comparable_before_running(args, baseline)
            if refused is not None:
                return refused
        result = _run(args)
        if isinstance(result, int):
            return result
    if baseline is not None:
        reasons = not_comparable(baseline, result)
        if reasons:
            _print_not_comparable(args.compare, reasons)
            return 2
        for note in uncompared_open_loop(baseline, result):
            print(f"note: {note}", file=sys.stderr)
        problems = compare(baseline, result, args.tolerance)
        if problems:
            print(f"REGRESSION against {args.compare}:", file=sys.stderr)
            for problem in problems:
                print(f"  - {problem}", file=sys.stderr)
            return 1
        print(f"no regression against {args.compare} (tolerance {100 * args.tolerance:g}%)")
    return 0


def _not_comparable_before_running(args, baseline):
    """With --compare and a flow: refuse (2) a baseline this run could not be compared with,
    before any work; otherwise run the open loop at the baseline's rates and length unless
    the command line says otherwise."""
    flow = Path(args.flow)
    if not (flow.is_file() or is_journal_path(flow)):
        return None                               # _run says what is wrong with it
    reasons = not_comparable(baseline, {
        "flow": {"path": str(flow), "sha256": flow_digest(flow), "limit": args.limit},
        "gc": "off" if args.no_gc else "on"})
    if reasons:
        _print_not_comparable(args.compare, reasons)
        return 2
    rates, commands = open_loop_plan(baseline)
    if args.rates is None and rates:
        args.rates = ",".join(f"{r:g}" for r in rates)
        if args.open_loop_commands is None:
            args.open_loop_commands = commands
        print(f"open loop at the baseline's offered rates: {args.rates.replace(',', ', ')} "
              f"commands/s", file=sys.stderr)
    return None


def _print_not_comparable(baseline_path, reasons) -> None:
    print(f"ccerx bench: not comparable with {baseline_path}:", file=sys.stderr)
    for reason in reasons:
        print(f"  - {reason}", file=sys.stderr)


def _run(args):
    flow = Path(args.flow)
    if not (flow.is_file() or is_journal_path(flow)):
        problem = (f"{flow} is a directory but not a data directory (no journal-*.log in it)"
                   if flow.is_dir() else f"no such file: {flow}")
        print(f"ccerx bench: {problem}", file=sys.stderr)
        return 2
    try:
        instruments = load_instruments(args.instruments)
        rates = ([float(r) for r in args.rates.split(",") if r.strip()]
                 if args.rates else None)
        if rates is not None and (not rates or min(rates) <= 0):
            raise ValueError("--rates must be positive numbers")
        if args.accounts:
            load_accounts(args.accounts)
        notes = {"accounts": args.accounts, "instruments": args.instruments,
                 "rules": args.rules}
        if is_journal_path(flow):
            # a recorded day is replayed from the directory's own genesis; accounts or
            # instruments given must be that genesis (GenesisError otherwise)
            given = (Exchange(instruments, load_accounts(args.accounts) if args.accounts
                              else None, rules=PROFILES[args.rules])
                     if args.accounts or args.instruments else None)
            start = genesis(flow, given)
            notes["genesis"] = {"source": start.source, "state_hash": start.state_hash,
                                "checked": start.checked}
            if not start.checked:
                print(f"ccerx bench: warning: {flow}: {start.source}; the replay may not "
                      f"reproduce the recorded day", file=sys.stderr)
    except ValueError as err:
        print(f"ccerx bench: {err}", file=sys.stderr)
        return 2

    def flow_exchange():
        accounts = load_accounts(args.accounts) if args.accounts else None
        return Exchange(instruments, accounts, rules=PROFILES[args.rules])

    make_exchange = start.new_exchange if "genesis" in notes else flow_exchange

    progresses = []

    def progress_factory(label, total):
        if progresses:
            progresses[-1].close()
        progresses.append(Progress(label, total))
        return progresses[-1]

    try:
        result = run_bench(flow, make_exchange=make_exchange, limit=args.limit, rates=rates,
                           open_loop_commands=(200_000 if args.open_loop_commands is None
                                               else args.open_loop_commands),
                           progress_factory=progress_factory,
                           notes=notes,
                           collect_garbage=not args.no_gc)
    except BenchError as err:
        print(f"ccerx bench: FAILED: {err}", file=sys.stderr)
        return 3
    except ValueError as err:
        print(f"ccerx bench: {err}", file=sys.stderr)
        return 2
    finally:
        if progresses:
            progresses[-1].close()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    print(format_table(result))
    written = [out / "result.json"]
    if not args.no_plots:
        written += write_plots(result, out)
    print("wrote " + ", ".join(str(p) for p in written))
    return result


def _run_e2e(args) -> int:
    from ccerx.benchmarks.bench import PERCENTILES
    from ccerx.benchmarks.e2e import run_e2e
    flow = Path(args.flow) if args.flow else None
    if flow is None or not flow.is_file():
        print(f"ccerx bench --e2e: no such flow file: {flow}", file=sys.stderr)
        return 2
    try:
        rates = [float(r) for r in args.e2e_rates.split(",") if r.strip()]
        if not rates or min(rates) <= 0 or args.sessions < 1 or args.e2e_commands < 1:
            raise ValueError
    except ValueError:
        print("ccerx bench --e2e: --e2e-rates, --sessions and --e2e-commands must be positive",
              file=sys.stderr)
        return 2
    from ccerx.benchmarks.e2e import load_config_text
    from ccerx.gateway.config import GatewayConfig
    config = (GatewayConfig.demo() if args.sessions == 2 else
              GatewayConfig.from_toml_text(load_config_text(args.sessions)))
    instruments = load_instruments(config.instruments_path)

    def replay_exchange():   # set up like the server: same instruments, accounts, fee
        return Exchange(instruments, config.build_accounts(), config.fee_ppm)

    print(f"ccerx bench --e2e: {len(rates)} run(s) of the first {args.e2e_commands:,} commands "
          f"of {flow} as FIX requests over {args.sessions} sessions; each run starts a fresh "
          f"`ccerx serve`, sends on schedule at the offered rate, waits for the "
          f"acknowledgements, then replays the server's journal", file=sys.stderr)
    from ccerx.benchmarks.e2e import fix_requests
    requests = len(fix_requests(flow, args.sessions, args.e2e_commands))
    result = None
    for n, rate in enumerate(rates, 1):
        with _ScheduleProgress(f"e2e run {n}/{len(rates)} at {rate:,.0f}/s, requests sent "
                               f"on schedule", rate, requests):
            one = run_e2e(flow, sessions=args.sessions, rates=[rate],
                          commands=args.e2e_commands, client_parser=args.client_parser,
                          replay_exchange=replay_exchange)
        [run] = one["runs"]
        print(f"e2e run {n}/{len(rates)} at {rate:,.0f}/s: {run['acked']:,} acknowledged, "
              f"{run['unacked']:,} not; p99 {run['latency_ns'].get('p99', 0) / 1000:,.1f} us",
              file=sys.stderr)
        if result is None:
            result = one
        else:
            result["runs"] += one["runs"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "result_e2e.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"end to end over FIX 4.4 loopback: {result['sessions']} broker sessions "
          f"({result['config']}), {result['requests']:,} requests from {flow}, client parser "
          f"{result['client_parser']}")
    print("order-to-acknowledgement latency, microseconds:")
    head = ["offered/s", "achieved/s", "acked", "unacked", "late sends"] + [f"p{p:g}" for p in PERCENTILES] + ["max"]
    rows = []
    for r in result["runs"]:
        lat = r["latency_ns"]
        rows.append([f"{r['offered_per_s']:,.0f}", f"{r['achieved_per_s']:,}", f"{r['acked']:,}",
                     f"{r['unacked']:,}", f"{r['late_sends_over_1ms']:,}"] + [f"{lat.get(f'p{p:g}', 0) / 1000:,.1f}"
                                             for p in PERCENTILES]
                    + [f"{lat.get('max', 0) / 1000:,.1f}"])
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    for row in [head] + rows:
        print("  " + "  ".join(x.rjust(w) for x, w in zip(row, widths)))
    for r in result["runs"]:
        day = r.get("journal_replay")
        if day is not None:
            print(f"recorded day at {r['offered_per_s']:,.0f}/s: the server's journal replays "
                  f"{day['commands']:,} commands to {day['trades']:,} trades "
                  f"({'equal to' if day['trades_match_fix_reports'] else 'DIFFERENT FROM'} the "
                  f"{r['trade_reports']:,} trade reports / 2 seen over FIX), state hash "
                  f"{day['state_hash']} ({_versus(day['state_hash_matches_recovery'])} the durable "
                  f"engine's own recovery), engine-only "
                  f"{day['engine_commands_per_s']:,} commands/s")
    written = [out / "result_e2e.json"]
    if not args.no_plots:
        from ccerx.benchmarks.bench import plot_spectrum
        written.append(plot_spectrum(
            [(f"offered {r['offered_per_s']:,.0f}/s", r["latency_ns"]) for r in result["runs"]],
            out / "e2e_latency_spectrum.png",
            f"Order-to-acknowledgement latency, {result['sessions']} FIX sessions"))
    print("wrote " + ", ".join(str(p) for p in written))
    bad = [r for r in result["runs"] if r["unacked"]
           or not r.get("journal_replay", {}).get("trades_match_fix_reports", True)
           or r.get("journal_replay", {}).get("state_hash_matches_recovery") is False]
    return 1 if bad else 0


class _ScheduleProgress:
    """Progress of an open-loop run that sends on a fixed schedule: request i goes at
    i / rate seconds, so how many are due is known from the clock (scripts/progress.py shows
    it, from a thread, while the run holds the main one). The start of a server counts in
    the elapsed time, so it runs a little ahead of the sends at first."""

    def __init__(self, label: str, rate: float, total: int):
        import threading
        self.rate, self.total = rate, total
        self.progress = Progress(label, total)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._tick, daemon=True)

    def _tick(self) -> None:
        import time
        start = time.monotonic()
        while not self.done.wait(0.25):
            self.progress(min(int((time.monotonic() - start) * self.rate), self.total))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()
        self.progress.close()


def _versus(match) -> str:
    return {True: "equal to", False: "DIFFERENT FROM", None: "not checked against"}[match]
