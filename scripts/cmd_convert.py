"""`ccerx convert`: NDJSON <-> binary flow files (lossless), and LOBSTER import."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ccerx.engine.formats.binary import binary_to_ndjson, count_rows, is_binary_path, ndjson_to_binary
from ccerx.engine.formats.lobster import LobsterError, convert_lobster
from ccerx.scripts.paths import input_file_problem, os_error_text
from ccerx.scripts.progress import Progress


def add_parser(sub) -> None:
    p = sub.add_parser(
        "convert", help="convert flows between NDJSON and binary, or import LOBSTER files",
        description="ccerx convert IN OUT converts NDJSON <-> binary (.npz), by suffix, "
                    "losslessly both ways. ccerx convert --from-lobster MESSAGES.csv "
                    "[--orderbook OB.csv] --instrument CCER-AFF OUT turns LOBSTER message "
                    "files into commands for one credit type.")
    p.add_argument("paths", nargs="+", metavar="IN OUT",
                   help="input and output (only OUT with --from-lobster)")
    p.add_argument("--from-lobster", metavar="MESSAGES.csv", help="LOBSTER message file")
    p.add_argument("--orderbook", metavar="OB.csv",
                   help="LOBSTER order book file: seeds the opening book from its first row")
    p.add_argument("--instrument", metavar="CREDIT-TYPE",
                   help="with --from-lobster (required): the credit type to map the file onto, "
                        "e.g. CCER-AFF")
    p.add_argument("--price-map", choices=("shift", "direct"), default="shift",
                   help="shift (default): keep tick distances, anchor the first price at the "
                        "instrument's reference price; direct: LOBSTER price / 10000 in CNY")
    p.add_argument("--date", default="2024-01-22",
                   help="trading day of the LOBSTER file (Beijing time) for the ts field")
    p.set_defaults(run=run)


def run(args) -> int:
    if args.from_lobster:
        if len(args.paths) != 1:
            print("ccerx convert --from-lobster: give exactly one OUT path", file=sys.stderr)
            return 2
        if args.instrument is None:
            from ccerx.engine.core.types import DEFAULT_INSTRUMENTS
            print("ccerx convert --from-lobster: give --instrument, the credit type the file "
                  "becomes (one of " + ", ".join(s.symbol for s in DEFAULT_INSTRUMENTS)
                  + ")", file=sys.stderr)
            return 2
        try:
            summary = convert_lobster(args.from_lobster, args.paths[0], args.instrument,
                                      orderbook=args.orderbook, price_map=args.price_map,
                                      date=args.date)
        except (LobsterError, OSError) as err:
            text = os_error_text(err) if isinstance(err, OSError) else err
            print(f"ccerx convert: {text}", file=sys.stderr)
            return 2
        print(f"wrote {summary['commands']:,} commands to {args.paths[0]}: "
              + ", ".join(f"{k} {v:,}" for k, v in summary["counts"].items()))
        if summary["skipped"]:
            print("not representable, skipped: "
                  + ", ".join(f"{k} {v:,}" for k, v in summary["skipped"].items()))
        return 0
    if len(args.paths) != 2:
        print("ccerx convert: expected IN OUT", file=sys.stderr)
        return 2
    src, dst = Path(args.paths[0]), Path(args.paths[1])
    problem = input_file_problem(src)
    if problem:
        print(f"ccerx convert: {problem}", file=sys.stderr)
        return 2
    if is_binary_path(src) == is_binary_path(dst):
        print("ccerx convert: one side must be NDJSON and the other binary (.npz)",
              file=sys.stderr)
        return 2
    start = time.perf_counter()
    progress = Progress("convert", None if is_binary_path(src) else count_rows(src)[0])
    try:
        if is_binary_path(src):
            rows = binary_to_ndjson(src, dst, progress=progress)
        else:
            rows = ndjson_to_binary(src, dst, progress=progress)
    except ValueError as err:
        print(f"ccerx convert: {err}", file=sys.stderr)
        return 2
    finally:
        progress.close()
    print(f"converted {rows:,} lines {src} -> {dst} in {time.perf_counter() - start:.2f} s")
    return 0
