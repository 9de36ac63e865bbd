"""`ccerx replay`: run a command file through the engine; events, final book, timing summary."""
from __future__ import annotations

import sys
from pathlib import Path

import orjson

from ccerx.engine.formats.config import load_accounts, load_instruments
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.formats.ndjson import books_to_json, encode_event, parse_command
from ccerx.engine.replay import replay
from ccerx.engine.formats.binary import flow_length, is_binary_path, iter_flow_commands
from ccerx.scripts.progress import Progress


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


def iter_ndjson(path: Path):
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                yield parse_command(line)


def run(args) -> int:
    path = Path(args.commands)
    if not path.is_file():
        print(f"ccerx replay: no such file: {path}", file=sys.stderr)
        return 2
    try:
        instruments = load_instruments(args.instruments)
        accounts = load_accounts(args.accounts) if args.accounts else None
    except ValueError as err:
        print(f"ccerx replay: {err}", file=sys.stderr)
        return 2
    exchange = Exchange(instruments, accounts)
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
    try:
        stats = replay(exchange, iter_flow_commands(path) if binary else iter_ndjson(path),
                       total=total, sink=sink,
                       progress=progress if total > 200_000 else None)
    finally:
        progress.close()
        if events_file is not None:
            events_file.close()
    if args.book_out:
        Path(args.book_out).write_bytes(orjson.dumps(books_to_json(exchange), option=orjson.OPT_INDENT_2))
    summary = stats.summary()
    summary["state_hash"] = exchange.state_hash()
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
        print(f"state hash {summary['state_hash']}")
    return 0

