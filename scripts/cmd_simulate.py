"""`ccerx simulate`: agent-based CCER trading days from a scenario, with a session report."""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from ccerx.engine.core.rules import PROFILES
from ccerx.scripts.progress import Progress

MODES = ("in-process", "fix")
LIQUIDITY_PAIR = ("cbeex-2023", "continuous")   # compared by default: the holding rule's effect


def add_parser(sub) -> None:
    p = sub.add_parser(
        "simulate", help="simulate trading days with emitters, project owners, institutions",
        description="Run simulated CCER trading days (emitters, project owners, market-making "
                    "institutions, noise traders) and write report.html, trades.csv and charts.")
    p.add_argument("--scenario", metavar="FILE.toml",
                   help="scenario file; keys it leaves out take the built-in defaults "
                        "(see scenarios/default.toml)")
    p.add_argument("--days", type=int, help="number of trading days (overrides the scenario)")
    p.add_argument("--seed", type=int, help="random seed (overrides the scenario)")
    p.add_argument("--mode", choices=MODES, default="in-process",
                   help="in-process: engine in this process on a simulated clock (default); "
                        "fix: agents as broker sessions on a running `ccerx serve`")
    p.add_argument("--out", metavar="DIR", default="out/simulation",
                   help="output folder for report.html, trades.csv, PNG charts (default "
                        "out/simulation; out/ is git-ignored)")
    p.add_argument("--host", default="127.0.0.1", help="fix mode: gateway address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=9878, help="fix mode: gateway port (default 9878)")
    p.add_argument("--control", metavar="SOCKET",
                   help="fix mode: the server's operator socket (`ccerx serve --control`, by "
                        "default DATA_DIR/control.sock), through which the simulator closes each "
                        "day and deposits issuance batches")
    p.add_argument("--gateway-config", metavar="FILE.toml",
                   help="write the `ccerx serve --config` file for this scenario and seed "
                        "(every agent's account under its group's broker session) and exit")
    p.add_argument("--ledger", choices=("sqlite", "none"), default="sqlite",
                   help="sqlite (default): settle every trade through the exchange's settlement "
                        "path into the embedded ledger DIR/ledger.sqlite and reconcile it each "
                        "day; none: reconcile only against an in-memory book of the trades")
    p.add_argument("--rules", choices=sorted(PROFILES), default="cbeex-2023",
                   help="the exchange's trading rules (default cbeex-2023, the CCER rulebook: "
                        "day listings, take orders, no IOC/market/amend, a 5-trading-day "
                        "holding period that keeps market makers to one side; continuous: the "
                        "continuous market with IOC orders). In fix mode, start `ccerx serve` "
                        "with the same --rules")
    p.add_argument("--seeds", metavar="LIST",
                   help="run the scenario over several seeds, e.g. 1-10 or 1,4,9: the report "
                        "(of the first seed) gets the calibration table as mean and range over "
                        "the seeds and the daily closes as bands (in-process only)")
    p.add_argument("--sweep", type=int, metavar="N",
                   help="the same over N seeds starting at the scenario's (or --seed's) seed")
    p.add_argument("--workers", type=int, metavar="N",
                   help="processes for a sweep or comparison (default: every core)")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="run a sweep's or comparison's seeds on this Dask distributed "
                        "scheduler's workers (pip install \"ccerx[dask]\"; each worker needs "
                        "ccerx installed) instead of local processes: the same per-seed results")
    p.add_argument("--compare-rules", metavar="A,B",
                   help="rule what-if: run the same scenario and seeds under each of these "
                        "profiles (e.g. continuous,cbeex-2023) and compare volume, spread, "
                        "price paths and market makers in the report (in-process only); a "
                        "profile may change parameters: cbeex-2023:holding=1 (holding period, "
                        "trading days), cbeex-2023:band=20 (daily band, %%)")
    p.add_argument("--no-compare", action="store_true",
                   help="in process, a run under cbeex-2023 or continuous is by default run "
                        "again on the same seed under the other profile, and the report says "
                        "what the 5-trading-day holding rule does to liquidity (spread, depth, "
                        "volume, market makers); this skips that second run")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(run=run)


def run(args) -> int:
    from ccerx.scripts.simulate.report import write_report
    from ccerx.scripts.simulate.run import Session
    from ccerx.scripts.simulate.scenario import load_scenario

    try:
        scenario = load_scenario(args.scenario, days=args.days, seed=args.seed)
    except (ValueError, KeyError, TypeError) as err:
        print(f"ccerx simulate: {err}", file=sys.stderr)
        return 2
    seeds, compared = [scenario.seed], []
    try:
        if args.seeds and args.sweep:
            raise ValueError("--seeds and --sweep: give one of them")
        if args.seeds:
            from ccerx.scripts.simulate.sweep import parse_seeds
            seeds = parse_seeds(args.seeds)
        elif args.sweep is not None:
            if not 1 <= args.sweep <= 1000:
                raise ValueError("--sweep: from 1 to 1000 seeds")
            seeds = list(range(scenario.seed, scenario.seed + args.sweep))
        if args.compare_rules or scenario.compare_rules:
            from ccerx.scripts.simulate.sweep import what_if
            compared = [x.strip() for x in args.compare_rules.split(",") if x.strip()] \
                if args.compare_rules else list(scenario.compare_rules)
            if len(compared) < 2 or len(set(compared)) != len(compared):
                raise ValueError(f"--compare-rules wants two or more of {', '.join(sorted(PROFILES))}"
                                 f" (optionally with :holding=DAYS or :band=PERCENT), "
                                 f"comma-separated, not {args.compare_rules or compared!r}")
            for label in compared:
                what_if(label, scenario)
        elif (args.mode == "in-process" and not args.gateway_config and not args.no_compare
              and args.rules in LIQUIDITY_PAIR):
            compared = [args.rules, *(x for x in LIQUIDITY_PAIR if x != args.rules)]
        if (len(seeds) > 1 or compared) and (args.mode != "in-process" or args.gateway_config):
            raise ValueError("--seeds, --sweep and --compare-rules run in process only")
        if args.scheduler is not None:
            if not (len(seeds) > 1 or compared):
                raise ValueError("--scheduler runs the seeds of --seeds, --sweep or "
                                 "--compare-rules: give one of them")
            from ccerx.scripts.simulate.sweep import check_scheduler
            check_scheduler(args.scheduler)
    except ValueError as err:
        print(f"ccerx simulate: {err}", file=sys.stderr)
        return 2
    if seeds[0] != scenario.seed:
        scenario = dataclasses.replace(scenario, seed=seeds[0])
    venue_factory = None
    if args.gateway_config:
        from ccerx.scripts.simulate.fixvenue import gateway_config_text
        Path(args.gateway_config).write_text(gateway_config_text(Session(scenario)))
        print(f"wrote {args.gateway_config}: start the gateway with\n  ccerx serve --config "
              f"{args.gateway_config} --port {args.port} --data-dir DIR --rules {args.rules}\n"
              f"(DIR fresh), then run "
              f"the same command with --mode fix --control DIR/control.sock instead of "
              f"--gateway-config", file=sys.stderr)
        return 0
    if args.mode == "fix":
        from ccerx.scripts.simulate.fixvenue import FixVenue
        if not args.control:
            print("ccerx simulate: --mode fix needs --control SOCKET, the server's operator "
                  "socket (DATA_DIR/control.sock of `ccerx serve`): the simulator closes each "
                  "day and deposits issuance through it", file=sys.stderr)
            return 2
        host, port, control = args.host, args.port, args.control
        venue_factory = lambda session: FixVenue(host, port, session, control)   # noqa: E731
        if args.ledger == "sqlite":
            args.ledger = "none"     # the trades settle in the server; see fixvenue.py
    total = scenario.days * 240
    rules = PROFILES[args.rules]
    print(f"simulating '{scenario.name}': {scenario.days} day(s), {scenario.agent_count:,} agents, "
          f"seed {scenario.seed}, {args.mode}, rules {rules.name}", file=sys.stderr)
    progress = None if args.quiet else Progress("simulate (trading minutes)", total, min_interval=0.25)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ledger_path = out / "ledger.sqlite" if args.ledger == "sqlite" else None
    started = time.perf_counter()
    try:
        result = Session(scenario, progress=progress, ledger_path=ledger_path,
                         venue_factory=venue_factory, rules=rules).run()
    except RuntimeError as err:       # FixUnavailable: no gateway, refused session, timeout
        if venue_factory is None:
            raise
        print(f"\nccerx simulate: {err}", file=sys.stderr)
        return 1
    finally:
        if progress is not None:
            progress.close()
    simulated = time.perf_counter() - started
    baseline = None
    if scenario.issuance and args.mode == "in-process":
        print("running the same scenario without its issuance batches (the baseline for the "
              "price response)", file=sys.stderr)
        baseline = Session(dataclasses.replace(scenario, issuance=[]), rules=rules).run()
    sweep_figures, comparison, sweep_s = None, None, 0.0
    if len(seeds) > 1 or compared:
        from ccerx.scripts.simulate.calibration import text_table
        from ccerx.scripts.simulate.report import calibration_table
        from ccerx.scripts.simulate.sweep import run_seed, sweep
        swept = time.perf_counter()
        first = {seeds[0]: run_seed(scenario, seeds[0], rules.name, result=result)}
        if len(seeds) > 1:
            print(f"sweep: {len(seeds)} seeds under {rules.name}", file=sys.stderr)
            sweep_figures = sweep(scenario, seeds, rules.name, args.workers, done=first,
                                  scheduler=args.scheduler)
        if compared:
            comparison = {}
            for name in compared:
                print(f"rule what-if: {len(seeds)} seed(s) under {name}", file=sys.stderr)
                done = first if name == rules.name else None
                if name == rules.name and sweep_figures is not None:
                    comparison[name] = sweep_figures
                else:
                    comparison[name] = sweep(scenario, seeds, name, args.workers, done=done,
                                             scheduler=args.scheduler)
        sweep_s = time.perf_counter() - swept
        print(f"calibration over {len(seeds)} seed(s) ({sweep_s:.1f} s):")
        print(text_table(calibration_table(sweep_figures or comparison.get(rules.name)
                                           or [first[seeds[0]]])))
    if result.settlement_note:
        print(f"note: {result.settlement_note}", file=sys.stderr)
    summary = write_report(result, out, baseline, sweep_figures, comparison)
    if comparison:
        from ccerx.scripts.simulate.report import comparison_text
        print(comparison_text(summary["comparison"], compared))
    if "liquidity" in summary:
        print(summary["liquidity"]["sentence"])
    if "retirements" in summary:
        r = summary["retirements"]
        print(f"retired {r['retired_t']:,} of {r['need_t']:,} t needed "
              f"({100 * r['retired_t'] / max(r['need_t'], 1):.1f}%) under "
              f"{r['certificates']:,} certificates; {r['met']} of {r['emitters']} emitters met "
              f"their need")
    total_s = time.perf_counter() - started
    for s, rows in summary["instruments"].items():
        closes = " ".join(r["close"] for r in rows)
        print(f"{s:<10} closes {closes}  volume {sum(r['volume'] for r in rows):,} t")
    em = summary["emitters"]
    need, bought = sum(em["need_t"].values()), sum(em["bought_t"].values())
    print(f"emitters covered {bought:,} of {need:,} t ({100 * bought / max(need, 1):.1f}%); "
          f"{summary['trades']:,} trades from {summary['commands']:,} commands")
    print(f"reconciliation: {'OK' if result.reconciled else 'FAILED'} "
          f"({summary['reconciliation'][-1]})")
    sweeps = f"other seeds and profiles in {sweep_s:.1f} s, " if sweep_s else ""
    print(f"simulated in {simulated:.1f} s, {sweeps}report in {total_s - simulated - sweep_s:.1f} s: "
          f"{(out / 'report.html').resolve()}")
    return 0 if result.reconciled else 1
