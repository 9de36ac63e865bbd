"""`ccerx recover`: open (and recover) a durable data directory; optionally keep feeding it.

    ccerx recover --data-dir DIR                       # recover, report, settle, exit
    ccerx recover --data-dir DIR --accounts A.json --feed COMMANDS.ndjson
        # journaled replay: applies the file's commands after the ones DIR already holds
        # (DIR's command n is the file's n-th non-blank line), so after a crash the same
        # command line resumes exactly where the durable journal ends.
"""
from __future__ import annotations

import sys
from itertools import islice
from pathlib import Path

import orjson


def add_parser(sub) -> None:
    p = sub.add_parser("recover", help="recover a durable data directory (journal + snapshots), "
                                       "optionally continue a journaled replay",
                       description="Open a data directory written by the durable engine: restore "
                                   "the newest snapshot, replay the journal after it, cut off a "
                                   "torn tail, resume settlement delivery, print the state hash.")
    p.add_argument("--data-dir", required=True, metavar="DIR",
                   help="the data directory: it must exist and hold a journal, unless "
                        "--accounts or --instruments say what a new one starts with")
    p.add_argument("--instruments", metavar="FILE.toml",
                   help="instrument config for a NEW directory (an existing one keeps its own)")
    p.add_argument("--accounts", metavar="ACCOUNTS.json",
                   help="accounts for a NEW directory (turns on pre-trade checks and settlement)")
    p.add_argument("--feed", metavar="COMMANDS.ndjson",
                   help="apply this file's commands after those already journaled")
    p.add_argument("--batch", type=int, default=500,
                   help="commands per group commit (one fsync) while feeding (default 500)")
    p.add_argument("--snapshot-every", type=int, default=250_000, metavar="N")
    p.add_argument("--no-ledger", action="store_true",
                   help="do not settle into the embedded SQLite ledger (DIR/ledger.sqlite)")
    p.add_argument("--mqtt", metavar="HOST:PORT",
                   help="also publish settlement instructions to this MQTT broker")
    p.add_argument("--settle-timeout", type=float, default=30.0, metavar="S",
                   help="how long to wait for the ledger relays before exiting (default 30)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=run)


def _not_a_data_dir(data_dir: Path, new: bool):
    """Why `data_dir` may not be opened (None if it may): recovering an existing directory
    needs its journal; only a command that says what a new one holds (--accounts or
    --instruments) may start one, so a mistyped path is an error, not a fresh directory."""
    from ccerx.engine.formats.binary import is_journal_path
    if data_dir.exists() and not data_dir.is_dir():
        return f"{data_dir} is not a directory"
    if new:
        if not data_dir.parent.is_dir():
            return f"no such directory: {data_dir.parent} (to hold the new {data_dir.name})"
        return None
    if not data_dir.exists():
        return (f"no such data directory: {data_dir} (to start a new one give --accounts "
                f"and/or --instruments)")
    if not is_journal_path(data_dir):
        return (f"{data_dir} is not a ccerx data directory (no journal-*.log in it; to start "
                f"a new one there give --accounts and/or --instruments)")
    return None


def run(args) -> int:
    from ccerx.engine.formats.config import load_accounts, load_instruments
    from ccerx.engine.durable.exchange import DurableExchange
    from ccerx.engine.core.commands import Malformed
    from ccerx.engine.formats.ndjson import parse_command
    from ccerx.scripts.cmd_replay import report_malformed
    try:
        instruments = load_instruments(args.instruments)
        accounts = load_accounts(args.accounts) if args.accounts else None
    except ValueError as err:
        print(f"ccerx recover: {err}", file=sys.stderr)
        return 2
    problem = _not_a_data_dir(Path(args.data_dir), new=bool(args.accounts or args.instruments))
    if problem:
        print(f"ccerx recover: {problem}", file=sys.stderr)
        return 2
    if args.feed and not Path(args.feed).is_file():
        print(f"ccerx recover: no such file: {args.feed}", file=sys.stderr)
        return 2
    adapters = {}
    if args.mqtt:
        from ccerx.engine.ledger.mqtt import MqttPublisher
        from ccerx.gateway.addresses import split_host_port
        # a bare port (or :PORT) means a broker on this machine, as before
        host_port = split_host_port(args.mqtt if args.mqtt.rpartition(":")[0] else
                                    "127.0.0.1:" + args.mqtt.lstrip(":"))
        if host_port is None:     # was a traceback from int()
            print(f"ccerx recover: --mqtt must be HOST:PORT, not {args.mqtt!r}", file=sys.stderr)
            return 2
        adapters["mqtt"] = MqttPublisher(*host_port)
    ex = DurableExchange(args.data_dir, instruments, accounts,
                         ledger=None if args.no_ledger else "sqlite", adapters=adapters,
                         snapshot_every=args.snapshot_every, log=lambda t: None)
    report = ex.recovery
    if not (args.accounts or args.instruments):
        report.config_ignored = False   # nothing was given that could have been ignored
    print(str(report), file=sys.stderr)
    fed = 0
    malformed: list = []
    try:
        if args.feed:
            with open(args.feed, "rb") as f:
                lines = ((number, line) for number, line in enumerate(f, 1) if line.strip())
                skip = report.last_seq
                for _ in islice(lines, skip):
                    pass
                batch = []
                for number, line in lines:
                    command = parse_command(line)
                    if type(command) is Malformed:
                        malformed.append((number, command.text))
                    batch.append(command)
                    if len(batch) >= args.batch:
                        ex.apply_many(batch)
                        fed += len(batch)
                        batch = []
                if batch:
                    ex.apply_many(batch)
                    fed += len(batch)
        settled = ex.wait_settled(args.settle_timeout)
        summary = {"data_dir": str(args.data_dir), "recovered_from_snapshot": report.snapshot_seq,
                   "replayed": report.replayed, "torn": str(report.torn) if report.torn else None,
                   "fed": fed, "last_seq": ex.journal.next_seq - 1,
                   "last_instruction": ex.outbox.last_seq,
                   "settled": settled,
                   "relays": {name: {"confirmed": r.cursor.value,
                                     "last_error": str(r.last_error) if r.last_error else None}
                              for name, r in ex.relays.items()},
                   "state_hash": ex.state_hash()}
    finally:
        ex.close(settle_timeout=0)
        if args.feed:
            report_malformed("recover", Path(args.feed), malformed)
    if args.json:
        print(orjson.dumps(summary).decode())
    else:
        print(f"fed {fed:,} commands; journal at command {summary['last_seq']:,}, "
              f"instruction {summary['last_instruction']:,}; settled: {settled}")
        for name, relay in summary["relays"].items():
            print(f"relay {name}: confirmed up to {relay['confirmed']:,}"
                  + (f" (last error: {relay['last_error']})" if relay["last_error"] else ""))
        print(f"state hash {summary['state_hash']}")
    return 0 if settled else 1
