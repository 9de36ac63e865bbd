"""`ccerx replay`: run a command file through the engine; events, final book, timing summary."""
from __future__ import annotations

import sys
from pathlib import Path

import orjson

from ccerx.engine.formats.config import load_accounts, load_instruments
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.core.rules import PROFILES
from ccerx.engine.core.commands import Malformed
from ccerx.engine.formats.ndjson import books_to_json, encode_event, parse_command
from ccerx.engine.replay import replay
from ccerx.engine.formats.binary import flow_length, is_binary_path, iter_flow_commands
from ccerx.scripts.paths import input_file_problem, output_file_problem
from ccerx.scripts.progress import Progress
from ccerx.scripts.tables import plural


def add_parser(sub) -> None:
    p = sub.add_parser("replay", help="replay a command file through the engine",
                       description="Replay NDJSON commands (one JSON object per line) through the "
                                   "matching engine and print a timing summary.")
    p.add_argument("commands", help="commands file (.ndjson, or a binary flow .npz; see ccerx convert)")
    p.add_argument("--events-out", metavar="EVENTS.ndjson", help="write every event here")
    p.add_argument("--book-out", metavar="BOOK.json", help="write the final resting book here")
    p.add_argument("--accounts", metavar="ACCOUNTS.json",
                   help="accounts file: turns on pre-trade checks (funds, credits, same-day resale)")
    p.add_argument("--instruments", metavar="FILE.toml", help="instrument config overriding the defaults")
    p.add_argument("--rules", choices=sorted(PROFILES), default="continuous",
                   help="trading rules (default continuous: limit/market, day/IOC/FOK, amends, "
                        "the replay contract of existing flows; cbeex-2023: the CCER rulebook, "
                        "day listings, take orders, the 5-trading-day holding period)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=run)


def events_sink(write, specs):
    """A replay sink that writes each event as one NDJSON line."""
    def sink(events):
        for event in events:
            write(encode_event(event, specs))
            write(b"\n")
    return sink


def count_lines(path: Path) -> int:
    n = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
    return n


def iter_ndjson(path: Path, malformed: list | None = None):
    """The file's commands; with `malformed`, the (line number, reason) of every line that
    is no command is appended to it (the engine rejects such a line in sequence, and its
    reject names no line)."""
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                command = parse_command(line)
                if malformed is not None and type(command) is Malformed:
                    malformed.append((number, command.text))
                yield command


def report_malformed(command: str, path: Path, malformed: list, shown: int = 5) -> None:
    """On stderr: which lines of `path` were rejected as malformed, by line number."""
    if not malformed:
        return
    lines = [f"ccerx {command}: {path}: {plural(len(malformed), 'malformed line')} "
             f"(each rejected in sequence):"]
    lines += [f"  line {number}: {text}" for number, text in malformed[:shown]]
    if len(malformed) > shown:
        lines.append(f"  ... and {len(malformed) - shown:,} more")
    print("\n".join(lines), file=sys.stderr)


def run(args) -> int:
    path = Path(args.commands)
    problem = (input_file_problem(path)
               or (args.events_out and output_file_problem(Path(args.events_out), "--events-out"))
               or (args.book_out and output_file_problem(Path(args.book_out), "--book-out")))
    if problem:
        print(f"ccerx replay: {problem}", file=sys.stderr)
        return 2
    try:
        instruments = load_instruments(args.instruments)
        accounts = load_accounts(args.accounts) if args.accounts else None
    except ValueError as err:
        print(f"ccerx replay: {err}", file=sys.stderr)
        return 2
    exchange = Exchange(instruments, accounts, rules=PROFILES[args.rules])
    binary = is_binary_path(path)   # binary flows (benchmarks/binary.py) by suffix
    try:
        total = flow_length(path) if binary else count_lines(path)
    except (ValueError, OSError) as err:
        print(f"ccerx replay: {err}", file=sys.stderr)
        return 2
    events_file = open(args.events_out, "wb", buffering=1 << 20) if args.events_out else None
    sink = None
    if events_file is not None:
        sink = events_sink(events_file.write, exchange.specs)
    progress = Progress("replay", total)
    malformed: list = []
    try:
        stats = replay(exchange, iter_flow_commands(path) if binary else iter_ndjson(path, malformed),
                       total=total, sink=sink,
                       progress=progress if total > 200_000 else None)
    finally:
        progress.close()
        if events_file is not None:
            events_file.close()
    if args.book_out:
        Path(args.book_out).write_bytes(orjson.dumps(books_to_json(exchange), option=orjson.OPT_INDENT_2))
    report_malformed("replay", path, malformed)
    summary = stats.summary()
    summary["state_hash"] = exchange.state_hash()
    summary["rules"] = exchange.rules.name
    if not binary:   # (a binary flow's rows are not numbered here)
        summary["malformed_lines"] = len(malformed)
        summary["first_malformed_lines"] = [number for number, _ in malformed[:10]]
    if args.json:
        print(orjson.dumps(summary).decode())
    else:
        lat = summary["latency_ns"]
        print(f"commands {stats.commands:,}  trades {stats.trades:,}  rejects {stats.rejects:,}  "
              f"events {stats.events:,}")
        print(f"wall {stats.wall_ns / 1e9:.3f} s ({stats.commands / max(stats.wall_ns / 1e9, 1e-9):,.0f} cmd/s)  "
              f"engine-only {stats.engine_ns / 1e9:.3f} s ({stats.engine_throughput:,.0f} cmd/s)")
        print("latency per command (us): " + "  ".join(
            f"{k} {v / 1000:.2f}" for k, v in lat.items()))
        print(f"state hash {summary['state_hash']}  (rules {exchange.rules.name})")
    return 0

