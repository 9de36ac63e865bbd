"""`ccerx ledger`: the settlement ledger from the command line.

    ccerx ledger consume --broker 127.0.0.1:1883 --db ledger.sqlite --accounts accounts.json
    ccerx ledger balances --db ledger.sqlite [--account A1] [--json]
    ccerx ledger statement --db ledger.sqlite --date 2024-01-23 [--account A1] [--out FILE]
    ccerx ledger check --db ledger.sqlite
    ccerx ledger reconcile --db ledger.sqlite --data DATA_DIR
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

import orjson

from ccerx.engine.core.types import format_fen
from ccerx.gateway.addresses import split_host_port
from ccerx.scripts.tables import format_table, plural


def add_parser(sub) -> None:
    p = sub.add_parser("ledger", help="settlement ledger: consume from MQTT, balances, statements",
                       description="The double-entry settlement ledger (SQLite file).")
    p.add_argument("--db", metavar="FILE|URL", help="the ledger: a SQLite file or "
                   "postgresql://USER@HOST:PORT/DB?schema=NAME (here or after the action)")
    p.set_defaults(db=None)
    lsub = p.add_subparsers(dest="ledger_command", metavar="ACTION")
    lsub.required = True

    c = lsub.add_parser("consume", help="apply settlement instructions from an MQTT broker")
    c.add_argument("--broker", default="127.0.0.1:1883", metavar="HOST:PORT")
    c.add_argument("--db", metavar="FILE", default=argparse.SUPPRESS,
                   help="SQLite ledger file (required; created)")
    c.add_argument("--accounts", metavar="ACCOUNTS.json",
                   help="post these opening balances first (once per account); use the same "
                        "accounts file the engine started with")
    c.add_argument("--prefix", default="ccer/v1",
                   help="topic prefix: instructions are read from PREFIX/settle/+, what the "
                        "ledger holds is confirmed on PREFIX/confirm (retained) and missing ones "
                        "asked for on PREFIX/request (default ccer/v1)")
    c.add_argument("--client-id", default="ccerx-ledger-consumer",
                   help="MQTT client id; the broker keeps this session's queue while away")
    c.add_argument("--report-every", type=float, default=10.0, metavar="SECONDS",
                   help="say how much has been applied this often, when something was "
                        "(default 10; 0: only when stopping)")
    c.add_argument("--exit-when-idle", type=float, metavar="SECONDS",
                   help="stop after this long without a message (default: run until Ctrl-C)")
    c.set_defaults(run=_with_db(run_consume))

    b = lsub.add_parser("balances", help="print account balances")
    b.add_argument("--db", metavar="FILE", default=argparse.SUPPRESS, help="the ledger (required)")
    b.add_argument("--account", help="only this account")
    b.add_argument("--json", action="store_true")
    b.set_defaults(run=_with_db(run_balances))

    s = lsub.add_parser("statement", help="end-of-day statements (trades, fees, balances)")
    s.add_argument("--db", metavar="FILE", default=argparse.SUPPRESS, help="the ledger (required)")
    s.add_argument("--date", help="trade date YYYY-MM-DD (default: the latest with trades)")
    s.add_argument("--account", action="append",
                   help="account (repeatable; default: every account that traded that day)")
    s.add_argument("--out", metavar="FILE.json", help="write the statements here as JSON")
    s.add_argument("--json", action="store_true", help="print the statements as JSON")
    s.set_defaults(run=_with_db(run_statement))

    k = lsub.add_parser("check", help="verify the ledger balances (per asset sum zero, "
                                      "balances equal postings, none negative)")
    k.add_argument("--db", metavar="FILE", default=argparse.SUPPRESS, help="the ledger (required)")
    k.set_defaults(run=_with_db(run_check))

    r = lsub.add_parser("reconcile", help="compare the ledger with the engine's accounts "
                                          "(recovered from its data directory), per lot")
    r.add_argument("--db", metavar="FILE", default=argparse.SUPPRESS, help="the ledger (required)")
    r.add_argument("--data", metavar="DIR", required=True,
                   help="the engine's data directory (journal and snapshots; read only)")
    r.add_argument("--json", action="store_true", help="print the result as JSON")
    r.set_defaults(run=_with_db(run_reconcile))


def _with_db(run):
    """`run`, once --db was given (before or after the action)."""
    def checked(args) -> int:
        if args.db is None:
            print(f"ccerx ledger {args.ledger_command}: give --db FILE, the ledger file",
                  file=sys.stderr)
            return 2
        return run(args)
    return checked


def _open(path: str, create: bool = False):
    """The ledger --db names: a SQLite file or a postgresql:// URL (engine/ledger/where.py).
    A query (not `create`) opens only a ledger that exists."""
    from ccerx.engine.ledger import where
    try:
        if not create:
            problem = (where.missing_database_ledger(path) if where.is_database_url(path)
                       else _not_a_ledger(path))
            if problem:
                print(f"ccerx ledger: {where.describe(path)}: {problem}", file=sys.stderr)
                return None
        return where.open_ledger(path)
    except Exception as err:      # a bad URL, an unreachable server: the user's to fix
        if not where.is_database_url(path) and not isinstance(err, ValueError):
            raise
        text, shown = where.scrub(str(err), path), where.describe(path)
        if not text.startswith(shown) and not isinstance(err, ConnectionError):
            text = f"{shown}: {text}"                 # (unless the error names it already)
        print(f"ccerx ledger: {text}", file=sys.stderr)
        return None


def _shown(db: str) -> str:
    from ccerx.engine.ledger.where import describe
    return describe(db)


def _not_a_ledger(path: str):
    """Why `path` is not an existing ledger (None if it is), read-only: a query command must
    never turn some other file into a ledger."""
    import sqlite3
    if not Path(path).is_file():
        return "no such ledger file"
    try:
        conn = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as err:
        return f"not a SQLite database ({err})"
    if not {"accounts", "postings", "settlements"} <= tables:
        return "not a ccerx ledger (no accounts/postings/settlements tables)"
    return None


def _host_port(text: str) -> tuple[str, int]:
    host_port = split_host_port(text)
    if host_port is None:
        raise ValueError(f"--broker must be HOST:PORT, not {text!r}")
    return host_port


def run_consume(args) -> int:
    from ccerx.engine.formats.config import load_accounts
    from ccerx.engine.durable.exchange import opening_balances
    from ccerx.engine.ledger.mqtt_consumer import SettlementConsumer
    try:
        host, port = _host_port(args.broker)
        accounts = load_accounts(args.accounts) if args.accounts else None
    except ValueError as err:
        print(f"ccerx ledger consume: {err}", file=sys.stderr)
        return 2
    from ccerx.engine.ledger.where import is_database_url
    folder = Path(args.db).parent
    if not is_database_url(args.db) and not folder.is_dir():
        print(f"ccerx ledger consume: no such directory: {folder} (for the ledger file "
              f"{_shown(args.db)}; create it first)", file=sys.stderr)
        return 2
    ledger = _open(args.db, create=True)
    if ledger is None:
        return 2
    if accounts is not None:
        opened = ledger.open_accounts([tuple(r) for r in opening_balances(accounts)])
        print(f"opened {plural(opened, 'account')}", file=sys.stderr)
    consumer = SettlementConsumer(ledger, host, port, client_id=args.client_id,
                                  prefix=args.prefix)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        reporter = asyncio.create_task(
            report_consuming(consumer, ledger, f"{host}:{port}", args.report_every))
        try:
            await consumer.run(stop, idle_exit=args.exit_when_idle)
        finally:
            reporter.cancel()
            await asyncio.gather(reporter, return_exceptions=True)

    until = ("Ctrl-C" if args.exit_when_idle is None
             else f"Ctrl-C or {args.exit_when_idle:g} s without a message")
    print(f"consuming {args.prefix}/settle/+ from {host}:{port} into {_shown(args.db)} (until {until})",
          file=sys.stderr)
    try:
        asyncio.run(main())
    finally:
        print(f"applied {consumer.applied}, duplicates {consumer.duplicates}, "
              f"malformed {consumer.malformed}, confirmations {consumer.confirmations}, "
              f"requests {consumer.requests}; ledger at instruction {ledger.applied_seq()}",
              file=sys.stderr)
        ledger.close()
    return 0


async def report_consuming(consumer, ledger, broker: str, every: float) -> None:
    """On stderr while `ccerx ledger consume` runs: each (re)connection to the broker, and
    every `every` seconds what was applied since the last report (when anything was). Reads
    the consumer's counters only; the consumer prints its own warnings."""
    connects, shown, last_report = 0, (consumer.applied, consumer.duplicates,
                                       consumer.malformed), asyncio.get_running_loop().time()
    while True:
        await asyncio.sleep(0.1)
        if consumer.connects != connects:
            again = "re" if connects else ""
            connects = consumer.connects
            print(f"{again}connected to {broker}, subscribed to {consumer.topic}", file=sys.stderr)
        now = asyncio.get_running_loop().time()
        if every <= 0 or now - last_report < every:
            continue
        counts = (consumer.applied, consumer.duplicates, consumer.malformed)
        if counts != shown:
            print(f"so far {consumer.applied:,} applied (+{consumer.applied - shown[0]:,} in "
                  f"{now - last_report:.0f} s), duplicates {consumer.duplicates:,}, malformed "
                  f"{consumer.malformed:,}; ledger at instruction {ledger.applied_seq():,}",
                  file=sys.stderr)
            shown = counts
        last_report = now


def run_balances(args) -> int:
    ledger = _open(args.db)
    if ledger is None:
        return 2
    try:
        balances = ledger.balances(args.account)
    finally:
        ledger.close()
    if args.account is not None and not balances:
        print(f"ccerx ledger balances: unknown account {args.account!r} (not in {_shown(args.db)})",
              file=sys.stderr)
        return 1
    if args.json:
        out = {owner: {asset: (format_fen(v) if asset == "CNY" else v)
                       for asset, v in assets.items()} for owner, assets in balances.items()}
        print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
        return 0
    credits = sorted({asset for assets in balances.values() for asset in assets} - {"CNY"})
    rows = [[owner, format_fen(assets["CNY"]) if "CNY" in assets else "-"]
            + [str(assets[a]) if a in assets else "-" for a in credits]
            for owner, assets in balances.items()]
    if rows:
        print(format_table(["account", "cash CNY"] + [f"{a} t" for a in credits], rows))
    return 0


def run_statement(args) -> int:
    if args.date is not None and not _is_date(args.date):
        print(f"ccerx ledger statement: --date must be a calendar date YYYY-MM-DD, not "
              f"{args.date!r}", file=sys.stderr)
        return 2
    ledger = _open(args.db)
    if ledger is None:
        return 2
    try:
        unknown = [a for a in args.account or () if not ledger.balances(a)]
        if unknown:
            print(f"ccerx ledger statement: unknown account{'s' if len(unknown) > 1 else ''} "
                  f"{', '.join(unknown)} (not in {_shown(args.db)})", file=sys.stderr)
            return 1
        date = args.date
        if date is None:
            dates = ledger.trade_dates()
            if not dates:
                print("ccerx ledger statement: the ledger holds no trades", file=sys.stderr)
                return 1
            date = dates[-1]
        statements = ledger.end_of_day_statements(date, args.account)
    finally:
        ledger.close()
    if not statements:
        who = f" of {', '.join(args.account)}" if args.account else ""
        print(f"ccerx ledger statement: no trades or deposits{who} dated {date}",
              file=sys.stderr)
        return 1
    if args.out:
        Path(args.out).write_bytes(orjson.dumps(statements, option=orjson.OPT_INDENT_2))
        print(f"{plural(len(statements), 'statement')} for {date} written to {args.out}",
              file=sys.stderr)
        return 0
    if args.json:
        print(orjson.dumps(statements, option=orjson.OPT_INDENT_2).decode())
        return 0
    for st in statements:
        print(format_statement(st))
    return 0


def _is_date(text: str) -> bool:
    from datetime import date
    try:
        return len(text) == 10 and date.fromisoformat(text).isoformat() == text
    except ValueError:
        return False


def format_statement(st: dict) -> str:
    """One account's statement for people: its balances, then its trades as a table, then
    its deposits. Amounts are written as the ledger and the JSON statements write them."""
    lines = [f"== {st['account']}  trade date {st['trade_date']}  "
             f"{plural(st['trade_count'], 'trade')}  fees {st['fees']} CNY",
             "   " + _balance_line("opening", st["opening"])]
    if st["trades"]:
        rows = [[str(t["trade_id"]), t["side"], t["instrument"], str(t["qty"]), t["price"],
                 t["gross"], t["fee"], t["settle_date"]] for t in st["trades"]]
        header, align = ["trade", "side", "credit type", "qty t", "price CNY", "gross CNY",
                         "fee CNY", "settles"], "rllrrrrl"
        if any("delivery" in t for t in st["trades"]):     # day-end clearing (cbeex-2023)
            header, align = header + ["delivery"], align + "l"
            for row, t in zip(rows, st["trades"]):
                row.append(t.get("delivery", "") + (" (disputed)" if "disputed" in t else ""))
        table = format_table(header, rows, align)
        lines += ["   " + line for line in table.splitlines()]
    for t in st["trades"]:
        if t.get("lots"):                               # the lots a trade delivered
            lines.append(f"   trade {t['trade_id']} lots: " + ", ".join(
                f"{_lot_name(lot['project'], lot['vintage'], t['instrument'])} {lot['qty']} t"
                for lot in t["lots"]))
    for c in st.get("clearing", ()):
        if c["batch_id"] is None:
            lines.append(f"   pending: {plural(c['pending'], 'trade')}, delivered by the "
                         f"clearing batch after the close")
        else:
            lines.append(f"   clearing batch {c['batch_id']}: "
                         f"{plural(c['delivered'], 'trade')} delivered")
    for t in st["trades"]:
        if "disputed" in t:
            lines.append(f"   trade {t['trade_id']} disputed: {t['disputed']}")
    for d in st["deposits"]:
        unit = " CNY" if d["asset"] == "CNY" else f" t {d['asset']}"
        lines.append(f"   deposit {d['amount']}{unit}  ({d['deposit_id']})")
    if st.get("holdings"):                             # per lot: delivered, pending, retired
        rows = [[h["holding"], h["credit_type"] or "-", h["project"] or "-",
                 str(h["vintage"]) if h["vintage"] is not None else "-", str(h["qty"]),
                 str(h["pending_in"]), str(h["pending_out"]), str(h["retired"])]
                for h in st["holdings"]]
        table = format_table(["holding", "credit type", "project", "vintage", "delivered t",
                              "pending in t", "pending out t", "retired t"], rows, "llllrrrr")
        lines += ["   " + line for line in table.splitlines()]
    for r in st.get("retirements", ()):
        lot = (f"{r['project']} {r['vintage']}" if r["project"] is not None
               else f"{r['holding']} (pooled)")
        lines.append(f"   retired {r['qty']} t of {lot} for {r['purpose']!r}: certificate "
                     f"{r['certificate']} ({r['retire_id']})")
    lines.append("   " + _balance_line("closing", st["closing"]))
    return "\n".join(lines)


def _lot_name(project, vintage, instrument: str) -> str:
    """A delivered lot as the trade's `lots` name it: its lot key, or the default lot."""
    return f"{project}@{vintage}" if project is not None else f"{instrument} (default lot)"


def _balance_line(label: str, balance: dict) -> str:
    return "  ".join([f"{label} cash {balance['cash']} CNY"] + [
        f"{asset} {qty} t" for asset, qty in sorted(balance["credits"].items())])


def run_check(args) -> int:
    ledger = _open(args.db)
    if ledger is None:
        return 2
    try:
        ledger.check()
        count = ledger.settlement_count()
    except AssertionError as err:
        print(f"ccerx ledger check: FAILED: {err}", file=sys.stderr)
        return 1
    finally:
        ledger.close()
    print(f"ok: {plural(count, 'settlement')}, every asset balances, no negative balance")
    return 0


def run_reconcile(args) -> int:
    """The ledger against the engine: the engine's state is recovered (read only) from its
    data directory's snapshot and journal, then compared account by account, cash to the fen
    and credits per holding key (lot) to the tonne, retirements per lot, fees (pending
    deliveries of day-end clearing counted as the engine counts them)."""
    from ccerx.engine.core.lots import STANDARD_CONTRACTS
    from ccerx.engine.durable.exchange import OPENING
    from ccerx.engine.durable.recovery import (RecoveryRefused, RecoveryReport,
                                               replay_directory)
    from ccerx.engine.durable.settlement import SettlementConfig
    data = Path(args.data)
    if not (data / OPENING).is_file():
        print(f"ccerx ledger reconcile: {data}: not an engine data directory (no {OPENING})",
              file=sys.stderr)
        return 2
    ledger = _open(args.db)
    if ledger is None:
        return 2
    try:
        stored = orjson.loads((data / OPENING).read_bytes())["settlement"]
        config = SettlementConfig(**{**stored, "holidays": tuple(stored.get("holidays", ()))})
        try:
            recovered = replay_directory(data, config, 1 << 62, RecoveryReport(data))
        except RecoveryRefused as err:
            print(f"ccerx ledger reconcile: {err}", file=sys.stderr)
            return 2
        accounts = recovered.exchange.accounts
        if accounts is None:
            print(f"ccerx ledger reconcile: {data}: the engine keeps no accounts",
                  file=sys.stderr)
            return 2
        journal_last = recovered.scanned.last_instruction
        applied = ledger.applied_seq(config.exchange_id)
        problems = ledger.reconcile(accounts)
        if applied != journal_last:
            problems.insert(0, f"the ledger applied instruction {applied:,} of the journal's "
                               f"{journal_last:,}: not everything was delivered yet")
    finally:
        ledger.close()
    held: dict = {}
    for a in accounts.by_id.values():
        for holding, qty in a.credits.items():
            held.setdefault(holding, [0, 0])[0] += qty
        for holding, qty in a.retired.items():
            held.setdefault(holding, [0, 0])[1] += qty
    lots = {k: v for k, v in sorted(held.items()) if v != [0, 0]}
    if args.json:
        print(orjson.dumps({"reconciled": not problems, "problems": problems,
                            "instructions": journal_last, "accounts": len(accounts.by_id),
                            "holdings": {k: {"held": v[0], "retired": v[1]}
                                         for k, v in lots.items()}},
                           option=orjson.OPT_INDENT_2).decode())
        return 1 if problems else 0
    for problem in problems:
        print(f"DIFFERENCE {problem}", file=sys.stderr)
    rows = []
    for holding, (qty, retired) in lots.items():
        lot = accounts.lots.get(holding)
        rows.append([holding, lot.credit_type if lot else STANDARD_CONTRACTS.get(holding, "-"),
                     lot.project if lot else "-",
                     str(lot.vintage) if lot else "-", str(qty), str(retired)])
    if rows:
        print(format_table(["holding", "credit type", "project", "vintage", "held t",
                            "retired t"], rows, "llllrr"))
    if problems:
        print(f"ccerx ledger reconcile: NOT reconciled: "
              f"{plural(len(problems), 'difference')}", file=sys.stderr)
        return 1
    print(f"reconciled: {plural(len(accounts.by_id), 'account')}, "
          f"{plural(len(lots), 'holding')}, instructions 1-{journal_last:,}: every fen and "
          f"every tonne per lot as the engine has it")
    return 0
