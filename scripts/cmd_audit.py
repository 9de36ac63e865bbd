"""`ccerx audit`: the audit trail of one trade date, exported from a data directory and verified.

    ccerx audit export --date 2026-03-02 --data-dir DIR --out OUT
    ccerx audit verify OUT

Export replays the directory's journal read-only (snapshot 0 and every command after it,
through the same deterministic engine, see cmd_surveil.replay_journal) and writes, for every
event whose trade date (Beijing) is the date, one row in sequence: the journal command that
caused it (its number, what it was, who sent it) and the event (order accepted, rejected,
traded, cancelled, amended; the operator's closes, status changes, deposits, instrument
definitions). Files, all 0600:

    audit-DATE.csv       UTF-8, a header line, one row per event
    audit-DATE.parquet   the same rows, typed (int64 numbers, UTF-8 strings; empty = null)
    audit-DATE.json      manifest: date, rows, journal range, columns, what is not recorded
    audit-DATE.sha256    SHA-256 of the three files above, in `sha256sum` format

A trade row names both sides (buy_/sell_ account, member, order id); its `side` is the
aggressor's and its `member` the member whose order made it trade.

Who acted: `member` is the broker member that sent an order, cancel or amend (the FIX
session's member, recorded with each command in the journal), else the member the account is
registered to. The journal records no operator name: operator actions carry the `operator`
the command itself holds (a deposit's owner, when given), or `console:<name>` for an action
taken in the operator console (its action log, DATA_DIR/console-actions.ndjson, names the
events each action made); an action at the control socket (`ccerx operator`) has no name on
record (whoever could open the 0600 socket file), so its rows show `source=operator` with an
empty `operator`; nor does the journal tell a close or a status change made by the trading
calendar from one made at the socket.

Verify checks every `*.sha256` in the folder (each listed file's digest) and that each CSV
and its Parquet hold the same rows as many as the manifest says; exit 1 on any difference.
"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import sys
from pathlib import Path

import orjson

CHINA = dt.timezone(dt.timedelta(hours=8))
COLUMNS = ("journal_seq", "event_seq", "ts_ns", "time", "source", "command", "event",
           "operator", "member", "account", "instrument", "side", "order_id", "order_type",
           "tif", "price", "qty", "filled_qty", "trade_id", "buy_account", "buy_member",
           "buy_order_id", "sell_account", "sell_member", "sell_order_id", "reason", "text",
           "deposit_id", "asset", "amount")
INT_COLUMNS = frozenset(("journal_seq", "event_seq", "ts_ns", "qty", "filled_qty", "trade_id"))
NOT_RECORDED = ("The journal records no operator name: operator actions (eod, status, deposit, "
                "instrument) show source=operator and the operator the command held (a "
                "deposit's owner), or console:<name> for actions taken in the operator console "
                "(from its action log); actions at the control socket (ccerx operator) have no "
                "name on record and show an empty operator. The journal does not tell a close "
                "or status change made by the trading calendar from one made at the socket.")


def add_parser(sub) -> None:
    p = sub.add_parser("audit", help="export one trade date's audit trail (CSV + Parquet + "
                                     "SHA-256) from a data directory; verify an export",
                       description="Export every order event and operator action of a trade "
                                   "date from a data directory (read-only), in sequence, with "
                                   "timestamps, accounts, members and the operator, as CSV and "
                                   "Parquet with a SHA-256 checksum file; or verify an export.")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    export = actions.add_parser("export", help="write audit-DATE.csv/.parquet/.json/.sha256")
    export.add_argument("--date", required=True, metavar="YYYY-MM-DD",
                        help="trade date (Beijing)")
    export.add_argument("--data-dir", required=True, metavar="DIR",
                        help="the data directory of `ccerx serve` / `ccerx recover` (only read)")
    export.add_argument("--out", required=True, metavar="DIR", help="folder for the export")
    export.set_defaults(run=run_export)
    verify = actions.add_parser("verify", help="check an export's checksums and rows")
    verify.add_argument("folder", metavar="DIR")
    verify.set_defaults(run=run_verify)


def fail(text: str) -> int:
    print(f"ccerx audit: {text}", file=sys.stderr)
    return 2


# ---------------------------------------------------------------------------- rows
def _time(ts: int) -> str:
    seconds, nanos = divmod(ts, 1_000_000_000)
    stamp = dt.datetime.fromtimestamp(seconds, CHINA)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{nanos:09d}+08:00"


def trade_date(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts // 1_000_000_000, CHINA).date().isoformat()


class RowMaker:
    """(journal seq, command, events) -> audit rows (dicts over COLUMNS, None = empty)."""

    def __init__(self, exchange):
        self.exchange = exchange
        self.order_members: dict[str, tuple] = {}     # order id -> (account, member)

    def registered_member(self, account):
        accounts = self.exchange.accounts
        record = accounts.get(account) if accounts is not None and isinstance(account, str) else None
        return record.member if record is not None else None

    def rows(self, journal_seq: int, command, events) -> list[dict]:
        from ccerx.engine.core.commands import (AmendOrder, CancelOrder, DefineInstrument, Deposit,
                                                EndOfDay, Malformed, NewOrder, Restrict,
                                                SetLimits, SetTradingStatus)
        kind = type(command)
        name = {NewOrder: "new", CancelOrder: "cancel", AmendOrder: "amend", EndOfDay: "eod",
                SetTradingStatus: "status", Deposit: "deposit", DefineInstrument: "instrument",
                SetLimits: "limits", Malformed: "malformed"}.get(kind, kind.__name__)
        if kind is Restrict:
            name = "kill" if command.kill is True else "restrict"
        source = ("member" if kind in (NewOrder, CancelOrder, AmendOrder)
                  else "unknown" if kind is Malformed else "operator")
        owner = getattr(command, "owner", None)
        operator = owner if source == "operator" else None
        member = owner if source == "member" else None
        if kind is NewOrder and isinstance(command.order_id, str):
            self.order_members[command.order_id] = (
                command.account, owner or self.registered_member(command.account))
        out = []
        for event in events:
            row = dict.fromkeys(COLUMNS)
            row.update(journal_seq=journal_seq, event_seq=event.seq, ts_ns=event.ts,
                       time=_time(event.ts), source=source, command=name, operator=operator,
                       member=member)
            self._event(row, event)
            out.append(row)
        return out

    def _price(self, instrument, ticks):
        spec = self.exchange.specs.get(instrument)
        return None if ticks is None or spec is None else spec.ticks_to_text(ticks)

    def _event(self, row: dict, e) -> None:
        from ccerx.engine.core.events import (DayClosed, Deposited, DepositRejected,
                                              InstrumentDefined, LargeHolderReported, LimitsSet,
                                              OrderAccepted, OrderAmended, OrderCancelled,
                                              OrderRejected, RestrictionChanged, TradeExecuted,
                                              TradingStatusChanged)
        from ccerx.engine.core.types import CASH_ASSET, format_fen
        kind = type(e)
        if kind is OrderAccepted:
            row.update(event="accepted", account=e.account, instrument=e.instrument,
                       side=e.side.value, order_id=e.order_id, order_type=e.order_type.value,
                       tif=e.tif.value, price=self._price(e.instrument, e.price), qty=e.qty)
        elif kind is OrderRejected:
            row.update(event="rejected", order_id=e.order_id, reason=e.reason.value, text=e.text)
            if e.order_id in self.order_members:
                row["account"] = self.order_members[e.order_id][0]
        elif kind is TradeExecuted:
            buy = self.order_members.get(e.buy_order_id, (e.buy_account, None))
            sell = self.order_members.get(e.sell_order_id, (e.sell_account, None))
            row.update(event="trade", instrument=e.instrument, side=e.aggressor.value,
                       price=self._price(e.instrument, e.price), qty=e.qty, trade_id=e.trade_id,
                       buy_account=e.buy_account,
                       buy_member=buy[1] or self.registered_member(e.buy_account),
                       buy_order_id=e.buy_order_id, sell_account=e.sell_account,
                       sell_member=sell[1] or self.registered_member(e.sell_account),
                       sell_order_id=e.sell_order_id)
        elif kind is OrderCancelled:
            row.update(event="cancelled", account=e.account, instrument=e.instrument,
                       side=e.side.value, order_id=e.order_id, reason=getattr(e.reason, "value", str(e.reason)),
                       qty=e.cancelled_qty, filled_qty=e.filled_qty)
        elif kind is OrderAmended:
            row.update(event="amended", account=e.account, instrument=e.instrument,
                       side=e.side.value, order_id=e.order_id,
                       price=self._price(e.instrument, e.price), qty=e.qty)
        elif kind is DayClosed:
            row.update(event="day_closed", instrument=e.instrument,
                       price=self._price(e.instrument, e.close_ticks), qty=e.volume,
                       text=f"{e.trades} trades, turnover {format_fen(e.turnover_fen)} CNY")
        elif kind is TradingStatusChanged:
            row.update(event="status", text=e.note,
                       reason="halt" if e.halted else ("open" if e.open else "closed"))
        elif kind is Deposited:
            row.update(event="deposited", account=e.account, deposit_id=e.deposit_id,
                       asset=e.asset, amount=format_fen(e.amount) if e.asset == CASH_ASSET
                       else str(e.amount))
        elif kind is DepositRejected:
            row.update(event="deposit_rejected", deposit_id=e.deposit_id,
                       reason=e.reason.value, text=e.text)
        elif kind is RestrictionChanged:
            row.update(event="restriction", reason=e.side, text="kill" if e.kill else None,
                       **{"account" if e.scope == "account" else "member": e.target})
        elif kind is LimitsSet:
            row.update(event="limits", text="; ".join(
                f"{ptype}: per type {per if per is not None else '-'} t, total "
                f"{total if total is not None else '-'} t" for ptype, per, total in e.limits)
                or "no limits")
        elif kind is LargeHolderReported:
            row.update(event="large_holder", account=e.account, instrument=e.instrument,
                       qty=e.holding, text=f"limit {e.limit} t")
        elif kind is InstrumentDefined:
            row.update(event="instrument", instrument=e.spec.symbol,
                       price=e.spec.ticks_to_text(e.spec.ref_ticks), text=e.spec.name)
        else:
            row.update(event=type(e).__name__)
        if row["member"] is None and row["account"] is not None:
            sent = self.order_members.get(row["order_id"]) if row["order_id"] else None
            row["member"] = (sent[1] if sent else None) or self.registered_member(row["account"])


def console_actions(data_dir: Path, notes: list) -> dict[int, str]:
    """event seq -> "console:<operator>" from the operator console's action log
    (DATA_DIR/console-actions.ndjson, written by `ccerx serve --console`), if there is one."""
    path = data_dir / "console-actions.ndjson"
    if not path.is_file():
        return {}
    out: dict[int, str] = {}
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        try:
            record = orjson.loads(line)
            for seq in record.get("event_seqs") or ():
                out[int(seq)] = f"console:{record['operator']}"
        except (ValueError, TypeError, KeyError, AttributeError):
            notes.append(f"{path.name} line {number} is not an action record; skipped")
    return out


# ---------------------------------------------------------------------------- files
def csv_bytes(rows: list[dict]) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(["" if row[c] is None else row[c] for c in COLUMNS])
    return buffer.getvalue().encode("utf-8")


def parquet_bytes(rows: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq
    schema = pa.schema([(c, pa.int64() if c in INT_COLUMNS else pa.string()) for c in COLUMNS])
    table = pa.Table.from_pydict({c: [row[c] for row in rows] for c in COLUMNS}, schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def read_csv_rows(path: Path) -> list[tuple]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        head = next(reader, None)
        if tuple(head or ()) != COLUMNS:
            raise ValueError(f"{path.name}: the header is not the audit columns")
        return [tuple(line) for line in reader]


def read_parquet_rows(path: Path) -> list[tuple]:
    import pyarrow.parquet as pq
    table = pq.read_table(path)
    if tuple(table.column_names) != COLUMNS:
        raise ValueError(f"{path.name}: the columns are not the audit columns")
    columns = [table.column(c).to_pylist() for c in COLUMNS]
    return [tuple("" if v is None else str(v) for v in values) for values in zip(*columns)]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def run_export(args) -> int:
    try:
        day = dt.date.fromisoformat(args.date).isoformat()
    except ValueError:
        return fail(f"--date {args.date!r} is not a date (YYYY-MM-DD)")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return fail("the Parquet file needs pyarrow: pip install 'ccerx[audit]'")
    data_dir, out = Path(args.data_dir), Path(args.out)
    if out.exists() and not out.is_dir():
        return fail(f"--out {out} is not a directory")
    from ccerx.scripts.cmd_surveil import replay_journal
    notes: list[str] = []
    try:
        exchange, commands = replay_journal(data_dir, notes)
    except ValueError as err:
        return fail(str(err))
    maker = RowMaker(exchange)
    console_operators = console_actions(data_dir, notes)
    rows: list[dict] = []
    seen_after = False
    last_journal = 0
    for journal_seq, command, events in commands:
        last_journal = journal_seq
        made = maker.rows(journal_seq, command, events)
        for row in made:
            date = trade_date(row["ts_ns"])
            if date == day:
                who = console_operators.get(row["event_seq"])
                if who is not None and not row["operator"]:
                    row["operator"] = who
                rows.append(row)
            elif date > day:
                seen_after = True
    from ccerx.engine.durable.files import private_dir, write_atomic
    private_dir(out)
    stem = f"audit-{day}"
    files = {f"{stem}.csv": csv_bytes(rows), f"{stem}.parquet": parquet_bytes(rows)}
    manifest = {"trade_date": day, "data_dir": str(data_dir.resolve()), "rows": len(rows),
                "first_journal_seq": rows[0]["journal_seq"] if rows else None,
                "last_journal_seq": rows[-1]["journal_seq"] if rows else None,
                "journal_commands_read": last_journal,
                "day_complete": seen_after or None, "columns": list(COLUMNS),
                "time_zone": "Beijing (UTC+08:00); ts_ns is UTC nanoseconds since the epoch",
                "not_recorded": NOT_RECORDED, "notes": notes}
    files[f"{stem}.json"] = orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n"
    for name, data in files.items():
        write_atomic(out / name, data)
    sums = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in files.items())
    write_atomic(out / f"{stem}.sha256", sums.encode())
    for note in notes:
        print(f"ccerx audit: {note}", file=sys.stderr)
    print(f"{len(rows):,} rows for trade date {day} (journal commands "
          f"{manifest['first_journal_seq'] or '-'} to {manifest['last_journal_seq'] or '-'}); "
          f"wrote {', '.join(files)} and {stem}.sha256 in {out}")
    if not rows:
        print(f"ccerx audit: no events on {day} in {data_dir}", file=sys.stderr)
    return 0


def run_verify(args) -> int:
    folder = Path(args.folder)
    if not folder.is_dir():
        return fail(f"no such directory: {folder}")
    sums = sorted(folder.glob("audit-*.sha256"))
    if not sums:
        return fail(f"no audit-*.sha256 in {folder}")
    problems: list[str] = []
    checked = 0
    for sum_file in sums:
        for number, line in enumerate(sum_file.read_text(encoding="utf-8").splitlines(), 1):
            digest, _, name = line.partition("  ")
            path = folder / name
            if len(digest) != 64 or not name or "/" in name:
                problems.append(f"{sum_file.name} line {number}: not '<sha256>  <file name>'")
            elif not path.is_file():
                problems.append(f"{name}: missing")
            elif sha256_file(path) != digest:
                problems.append(f"{name}: checksum mismatch (the file was changed after export)")
            else:
                checked += 1
        stem = sum_file.name[:-len(".sha256")]
        csv_path, parquet_path = folder / f"{stem}.csv", folder / f"{stem}.parquet"
        manifest_path = folder / f"{stem}.json"
        if csv_path.is_file() and parquet_path.is_file() and manifest_path.is_file():
            try:
                from_csv, from_parquet = read_csv_rows(csv_path), read_parquet_rows(parquet_path)
                expected = orjson.loads(manifest_path.read_bytes())["rows"]
            except Exception as err:     # a damaged file of any kind is a finding, not a crash
                problems.append(f"{stem}: cannot be read back: {err}")
                continue
            if from_csv != from_parquet:
                problems.append(f"{stem}: the CSV and the Parquet file hold different rows")
            if len(from_csv) != expected:
                problems.append(f"{stem}: {len(from_csv)} rows, the manifest says {expected}")
    if problems:
        for problem in problems:
            print(f"ccerx audit verify: {problem}", file=sys.stderr)
        return 1
    print(f"ok: {checked} files match their checksums; CSV and Parquet rows agree")
    return 0
