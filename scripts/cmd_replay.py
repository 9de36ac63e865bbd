"""`ccerx replay`: run a command file through the engine; events, final book, timing summary."""
from __future__ import annotations

import sys
from pathlib import Path

import orjson

from ccerx.engine.formats.config import load_accounts, load_instruments
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.core.rules import PROFILES
from ccerx.engine.core.commands import Malformed
from ccerx.engine.formats.ndjson import books_to_json, parse_command
from ccerx.engine.formats.ndjson_events import EventLines
from ccerx.engine.replay import replay, replay_batches
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
    p.add_argument("--accounts-out", metavar="FINAL.json",
                   help="with --accounts: write the accounts as the flow leaves them (cash, "
                        "holdings per holding key, reservations, retired credits) and every "
                        "lot moved in or listed")
    p.add_argument("--instruments", metavar="FILE.toml", help="instrument config overriding the defaults")
    p.add_argument("--rules", choices=sorted(PROFILES), default="continuous",
                   help="trading rules (default continuous: limit/market, day/IOC/FOK, amends, "
                        "the replay contract of existing flows; cbeex-2023: the CCER rulebook, "
                        "day listings, take orders, the 5-trading-day holding period)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=run)


def events_batch_sink(write, specs):
    """A replay batch sink that writes each event as one NDJSON line (the lines
    `encode_event` gives, built without a dict per event: engine/formats/ndjson_events.py)."""
    encode_batches = EventLines(specs).encode_batches

    def sink(batches):
        write(encode_batches(batches))
    return sink


def final_accounts(accounts) -> dict:
    """{"lots": {holding key: {"credit_type", "project", "vintage"}}, "accounts": [...]}: each
    account as the engine holds it (Account.to_json: credits, credits_reserved, bought_today
    and retired per holding key)."""
    return {"lots": {key: lot._asdict() for key, lot in sorted(accounts.lots.items())},
            "accounts": [accounts.by_id[key].to_json() for key in sorted(accounts.by_id)]}


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


def iter_ndjson_batches(path: Path, malformed: list | None = None, chunk_bytes: int = 1 << 20):
    """`iter_ndjson` a list at a time (about `chunk_bytes` of lines each): one list
    comprehension per chunk instead of a generator step per line; the line numbers of
    malformed lines are worked out only for a chunk that holds one."""
    parse = parse_command
    first_number = 1
    with path.open("rb") as f:
        while lines := f.readlines(chunk_bytes):
            commands = [parse(line) for line in lines if not line.isspace()]
            if malformed is not None and Malformed in set(map(type, commands)):
                nonblank = (number for number, line in enumerate(lines, first_number)
                            if not line.isspace())
                malformed.extend((number, command.text) for number, command in zip(nonblank, commands)
                                 if type(command) is Malformed)
            first_number += len(lines)
            if commands:
                yield commands


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
               or (args.book_out and output_file_problem(Path(args.book_out), "--book-out"))
               or (args.accounts_out and output_file_problem(Path(args.accounts_out),
                                                             "--accounts-out"))
               or (args.accounts_out and not args.accounts
                   and "--accounts-out needs --accounts (without accounts the engine keeps none)"))
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
        sink = events_batch_sink(events_file.write, exchange.specs)
    progress = Progress("replay", total)
    malformed: list = []
    try:
        if binary:
            stats = replay(exchange, iter_flow_commands(path), total=total, batch_sink=sink,
                           progress=progress if total > 200_000 else None)
        else:
            stats = replay_batches(exchange, iter_ndjson_batches(path, malformed), total=total,
                                   batch_sink=sink, progress=progress if total > 200_000 else None)
    finally:
        progress.close()
        if events_file is not None:
            events_file.close()
    if args.book_out:
        Path(args.book_out).write_bytes(orjson.dumps(books_to_json(exchange), option=orjson.OPT_INDENT_2))
    if args.accounts_out:
        Path(args.accounts_out).write_bytes(orjson.dumps(
            final_accounts(exchange.accounts), option=orjson.OPT_INDENT_2))
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
        sampled = (f" (sampled: 1 command in {stats.latency_every})"
                   if stats.latency_every > 1 else "")
        print(f"latency per command{sampled} (us): " + "  ".join(
            f"{k} {v / 1000:.2f}" for k, v in lat.items()))
        print(f"state hash {summary['state_hash']}  (rules {exchange.rules.name})")
    return 0

