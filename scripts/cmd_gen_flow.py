"""`ccerx gen-flow`: write a seeded, realistic order flow (NDJSON or binary)."""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from ccerx.engine.core.rules import PROFILES
from ccerx.engine.formats.binary import is_binary_path, ndjson_to_binary
from ccerx.benchmarks.flows import FlowParams, write_accounts, write_flow
from ccerx.benchmarks.lots_flows import LotFlowParams, write_lot_accounts, write_lot_flow
from ccerx.scripts.progress import Progress

_TUNABLE = {f.name: f.type for f in dataclasses.fields(FlowParams)
            if f.name not in ("instruments", "instrument_weights", "invalid_mix")}
_LOT_TUNABLE = {f.name: f.type for f in dataclasses.fields(LotFlowParams)
                if f.name not in ("listings_per_type", "rules")}


def add_parser(sub) -> None:
    p = sub.add_parser(
        "gen-flow", help="generate a seeded realistic order flow",
        description="Generate order flow for the four CCER credit types from a Cont-Stoikov-"
                    "Talreja style model (Poisson/Hawkes arrivals, distance-dependent limit and "
                    "cancel rates, heavy-tailed sizes, amends, a share of invalid commands). "
                    "The same seed and parameters always give the same bytes.")
    p.add_argument("--seed", type=int, required=True, help="random seed")
    p.add_argument("--commands", type=int, required=True, help="number of commands (lines)")
    p.add_argument("--out", required=True, help="output file (.ndjson, or .npz for binary)")
    p.add_argument("--format", choices=("ndjson", "binary"),
                   help="output format (default: by suffix, .npz = binary)")
    p.add_argument("--accounts-out", metavar="ACCOUNTS.json",
                   help="also write an accounts file funding the generated accounts "
                        "(for ccerx replay --accounts)")
    p.add_argument("--rate", type=float, help="primary events per second (default 2000)")
    p.add_argument("--hawkes", type=float, metavar="N",
                   help="Hawkes branching ratio in [0, 1); 0 = plain Poisson (default 0.5)")
    p.add_argument("--invalid-share", type=float, help="share of invalid commands (default 0.005)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="set any model parameter, e.g. --param lifetime_s=2.5 "
                        f"(names: {', '.join(sorted(_TUNABLE))}; with --lots: "
                        f"{', '.join(sorted(_LOT_TUNABLE))})")
    p.add_argument("--lots", type=int, metavar="N",
                   help="a multi-day flow over credits as lots: N project-vintage listings per "
                        "credit type beside the four type contracts, lot deposits, takes, "
                        "retirements and end-of-day closes (benchmarks/lots_flows.py); "
                        "default: the one-day pooled flow above")
    p.add_argument("--rules", choices=sorted(PROFILES),
                   help="with --lots: the rule profile the flow is made for (default "
                        "continuous); under cbeex-2023 its accounts keep the 5-day holding "
                        "period and its IOC/FOK/market/amend lines are the not_permitted share")
    p.add_argument("--days", type=int, help="with --lots: trading days (default 10)")
    p.set_defaults(run=run)


def build_params(args) -> FlowParams:
    values = {}
    for item in args.param:
        name, sep, text = item.partition("=")
        if not sep or name not in _TUNABLE:
            raise ValueError(f"--param {item!r}: expected NAME=VALUE with NAME one of "
                             f"{', '.join(sorted(_TUNABLE))}")
        kind = _TUNABLE[name]
        values[name] = int(text) if kind in (int, "int") else float(text)
    for name, value in (("rate", args.rate), ("hawkes_branching", args.hawkes),
                        ("invalid_share", args.invalid_share)):
        if value is not None:
            values[name] = value
    return FlowParams(**values)


def build_lot_params(args) -> LotFlowParams:
    for name, value in (("--rate", args.rate), ("--hawkes", args.hawkes),
                        ("--invalid-share", args.invalid_share)):
        if value is not None:
            raise ValueError(f"{name} belongs to the pooled one-day model, not to --lots "
                             f"(its --param names: {', '.join(sorted(_LOT_TUNABLE))})")
    values = {"listings_per_type": args.lots, "rules": args.rules or "continuous"}
    if args.days is not None:
        values["days"] = args.days
    for item in args.param:
        name, sep, text = item.partition("=")
        if not sep or name not in _LOT_TUNABLE:
            raise ValueError(f"--param {item!r}: with --lots, expected NAME=VALUE with NAME one "
                             f"of {', '.join(sorted(_LOT_TUNABLE))}")
        try:
            values[name] = int(text) if _LOT_TUNABLE[name] in (int, "int") else float(text)
        except ValueError:
            raise ValueError(f"--param {item!r}: {text!r} is not a number") from None
    return LotFlowParams(**values)


def run_lots(args, out: Path, fmt: str) -> int:
    try:
        params = build_lot_params(args)
    except ValueError as err:
        print(f"ccerx gen-flow: {err}", file=sys.stderr)
        return 2
    progress = Progress("gen-flow", args.commands)
    start = time.perf_counter()
    text_out = out.with_name(out.name + ".ndjson.tmp") if fmt == "binary" else out
    try:
        summary = write_lot_flow(text_out, args.seed, args.commands, params, progress=progress)
        if fmt == "binary":      # the format keeps what its columns cannot hold verbatim
            ndjson_to_binary(text_out, out, meta={"generator": {
                "seed": args.seed, "commands": args.commands, "lots": params.to_json()}})
    except ValueError as err:
        print(f"ccerx gen-flow: {err}", file=sys.stderr)
        text_out.unlink(missing_ok=True)
        return 2
    finally:
        progress.close()
        if fmt == "binary":
            text_out.unlink(missing_ok=True)
    elapsed = time.perf_counter() - start
    if args.accounts_out:
        write_lot_accounts(args.accounts_out, params)
    counts = summary["counts"]
    print(f"wrote {summary['commands']:,} commands to {out} ({fmt}, lots, rules {params.rules}) "
          f"in {elapsed:.2f} s: " + ", ".join(f"{op} {n:,}" for op, n in counts.items())
          + f"; {summary['trades']:,} trades when the generator applied them")
    return 0


def run(args) -> int:
    if args.commands < 0:
        print("ccerx gen-flow: --commands must be >= 0", file=sys.stderr)
        return 2
    if args.lots is None and (args.rules is not None or args.days is not None):
        print("ccerx gen-flow: --rules and --days shape a lots flow: give --lots N as well "
              "(the one-day pooled flow is made for the continuous rules)", file=sys.stderr)
        return 2
    out = Path(args.out)
    fmt = args.format or ("binary" if is_binary_path(out) else "ndjson")
    if (fmt == "binary") != is_binary_path(out):
        print(f"ccerx gen-flow: readers pick the format by suffix: name a binary flow *.npz "
              f"and an NDJSON flow anything else (got {out.name} for {fmt})", file=sys.stderr)
        return 2
    if args.lots is not None:
        return run_lots(args, out, fmt)
    try:
        params = build_params(args)
    except ValueError as err:
        print(f"ccerx gen-flow: {err}", file=sys.stderr)
        return 2
    progress = Progress("gen-flow", args.commands)
    start = time.perf_counter()
    try:
        summary = write_flow(out, args.seed, args.commands, params, fmt, progress=progress)
    finally:
        progress.close()
    elapsed = time.perf_counter() - start
    if args.accounts_out:
        write_accounts(args.accounts_out, params)
    print(f"wrote {summary['commands']:,} commands to {out} ({fmt}) in {elapsed:.2f} s "
          f"({summary['commands'] / max(elapsed, 1e-9):,.0f} commands/s): new {summary['new']:,}, "
          f"cancel {summary['cancel']:,}, amend {summary['amend']:,}, "
          f"verbatim/malformed {summary['raw']:,}")
    return 0
