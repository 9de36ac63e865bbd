"""The double-entry settlement ledger, in SQL shared by SQLite and PostgreSQL.

Theory of operation. Every participant has one account per asset: `CNY` in fen and one per
*holding key* in tonnes (engine/core/lots.py): a lot key "PROJECT@VINTAGE" for credits of one
project and vintage, or an instrument's symbol for its pooled holding (every holding before
lots; for a standard contract, its credit type's default lot), exactly as the engine keys
them, so the two reconcile per lot to the tonne (`reconcile()`). A posting moves `amount` of one asset from a
debited account to a credited account, so debits equal credits per asset by construction;
three external accounts (`@bank` for cash paid in, `@registry` for credits issued into the
exchange, both allowed to go negative) mirror the opening balances, and `@fees` collects the
exchange's fees. So for every asset the balances of all accounts sum to zero, always.

A settlement instruction becomes one `settlements` row (primary key: the instruction id) and
its postings, in one transaction:
    credits   seller -> buyer          qty
    cash      buyer  -> seller         gross
    cash      buyer  -> @fees          buy fee
    cash      seller -> @fees          sell fee
(a trade that delivered lots has one credits leg per lot, in delivery order, under each lot's
holding key: leg 1, then legs 5, 6, ...; its instruction's `lots`, settlement.py). A lot
deposit also records the lot (credit type, project, vintage) in `lots`. A retirement (注销,
settlement.RetireInstruction) moves its credits `account -> @retired` and records one
`retirements` row: its certificate id is the primary key, and the exchange's retire id is
unique too, so a second instruction with either is refused (LedgerRejected); the same
instruction again is a duplicate like any other.
A deposit instruction moves the asset in from outside: credits `@registry -> account`, cash
`@bank -> account` (one posting; it shares the stream's numbering with trades). Its
`settlements` row (kind 'deposit') keeps the account in `buyer`, the asset in `instrument`,
tonnes in `qty` or fen in `gross_fen`, and the whole instruction in `body`.
Day-end clearing (cbeex-2023, see settlement.py): a trade instruction with `delivery` "batch"
gets its `settlements` row and a `deliveries` row (batch_id NULL: *pending*) but no postings,
so no balance moves. Its exchange's `ClearingBatch` (a `settlements` row of kind 'clearing',
id = the batch id, `qty` = trades, `gross_fen` = the gross total) is the registry side's
confirmation: in one transaction the ledger checks that the pending trades it covers (seq
between the previous batch and the batch) match the batch's count, totals and per-participant
figures, posts each of them as above, trade by trade in stream order, and marks them
delivered by that batch. A mismatch is refused (LedgerRejected): nothing is delivered.
The insert of the settlement row is the idempotency check: if the id is already there, the
instruction was applied before and nothing happens (its body must be identical, else it is a
conflict and raises). No non-external balance may go negative: the debit is a conditional
UPDATE (`... AND balance >= amount`) and a CHECK constraint backs it up. Instructions are
applied in stream order; the ledger records the last applied `seq` per exchange and refuses a
gap, so a consumer that sees one waits for the missing instruction instead of applying past it.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

import orjson

from ccerx.engine.core.types import format_price_units
from ccerx.engine.core.lots import LOT_SEPARATOR, STANDARD_CONTRACTS, lots_json
from ccerx.engine.durable.settlement import (ClearingBatch, DepositInstruction, Instruction,
                                             LotClearingBatch, LotDepositInstruction,
                                             RetireInstruction, batch_lot_totals,
                                             instruction_from_json, trade_holdings)
from ccerx.engine.core.types import CASH_ASSET, format_fen
from ccerx.engine.ledger.base import LedgerRejected

CASH = CASH_ASSET
BANK, REGISTRY, FEES = "@bank", "@registry", "@fees"
RETIRED = "@retired"          # credits retired (注销): out of the market for good
OPENING_DATE = "0000-00-00"   # sorts before every trade date

SCHEMA = """
CREATE TABLE IF NOT EXISTS {p}accounts (
    owner    TEXT    NOT NULL,
    asset    TEXT    NOT NULL,
    external INTEGER NOT NULL DEFAULT 0,
    balance  BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (owner, asset),
    CHECK (external = 1 OR balance >= 0)
);
CREATE TABLE IF NOT EXISTS {p}settlements (
    id          TEXT   NOT NULL PRIMARY KEY,
    kind        TEXT   NOT NULL,
    exchange    TEXT,
    seq         BIGINT,
    stream_seq  BIGINT,
    trade_id    BIGINT,
    instrument  TEXT,
    qty         BIGINT,
    price_units BIGINT,
    gross_fen   BIGINT,
    buy_fee     BIGINT,
    sell_fee    BIGINT,
    buyer       TEXT,
    seller      TEXT,
    trade_date  TEXT   NOT NULL,
    settle_date TEXT   NOT NULL,
    ts          BIGINT,
    body        TEXT   NOT NULL
);
CREATE TABLE IF NOT EXISTS {p}postings (
    settlement_id TEXT   NOT NULL REFERENCES {p}settlements (id),
    leg           INTEGER NOT NULL,
    asset         TEXT   NOT NULL,
    debit_owner   TEXT   NOT NULL,
    credit_owner  TEXT   NOT NULL,
    amount        BIGINT NOT NULL CHECK (amount > 0),
    PRIMARY KEY (settlement_id, leg),
    FOREIGN KEY (debit_owner, asset) REFERENCES {p}accounts (owner, asset),
    FOREIGN KEY (credit_owner, asset) REFERENCES {p}accounts (owner, asset)
);
CREATE INDEX IF NOT EXISTS {p}settlements_buyer ON {p}settlements (buyer, trade_date);
CREATE INDEX IF NOT EXISTS {p}settlements_seller ON {p}settlements (seller, trade_date);
CREATE TABLE IF NOT EXISTS {p}closes (
    upto_seq    BIGINT NOT NULL,
    trade_date  TEXT   NOT NULL,
    PRIMARY KEY (upto_seq, trade_date)
);
CREATE TABLE IF NOT EXISTS {p}deliveries (
    settlement_id TEXT NOT NULL PRIMARY KEY REFERENCES {p}settlements (id),
    batch_id      TEXT
);
CREATE TABLE IF NOT EXISTS {p}disputes (
    exchange    TEXT   NOT NULL,
    trade_id    BIGINT NOT NULL,
    note        TEXT   NOT NULL,
    ts          BIGINT NOT NULL,
    PRIMARY KEY (exchange, trade_id)
);
CREATE TABLE IF NOT EXISTS {p}streams (
    exchange    TEXT   NOT NULL PRIMARY KEY,
    applied_seq BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS {p}lots (
    holding     TEXT   NOT NULL PRIMARY KEY,
    credit_type TEXT   NOT NULL,
    project     TEXT   NOT NULL,
    vintage     INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS {p}retirements (
    certificate   TEXT   NOT NULL PRIMARY KEY,
    settlement_id TEXT   NOT NULL UNIQUE REFERENCES {p}settlements (id),
    exchange      TEXT   NOT NULL,
    retire_id     TEXT   NOT NULL,
    account       TEXT   NOT NULL,
    holding       TEXT   NOT NULL,
    credit_type   TEXT,
    project       TEXT,
    vintage       INTEGER,
    qty           BIGINT NOT NULL CHECK (qty > 0),
    purpose       TEXT   NOT NULL,
    trade_date    TEXT   NOT NULL,
    UNIQUE (exchange, retire_id)
);
"""


def exchange_of(instruction_id: str) -> str:
    """"CCERX-T17", "CCERX-D5" and the clearing batch "CCERX-C20261204-1" -> "CCERX" (a
    trade's or deposit's suffix never holds a dash; a batch's is C<yyyymmdd>-<n>)."""
    head, tail = instruction_id.rsplit("-", 1)
    if tail.isdigit():                  # only a batch id ends in a bare number
        head = head.rsplit("-", 1)[0]
    return head


class SqlLedger:
    """Dialect-neutral ledger logic. Subclasses supply the connection and transactions:
    `_tx()` (a context manager running one transaction), `_execute(sql, params)` returning a
    cursor, `q(sql)` turning `?` placeholders and `{p}` prefixes into the dialect's, and
    `_lock` (an RLock serialising use of the connection across threads)."""

    name = "sql"
    keeps_accounts = True     # a ledger of record: opening balances, statements

    # ---------------------------------------------------------------- to be provided
    def _tx(self):
        raise NotImplementedError

    def _execute(self, sql: str, params=()):
        raise NotImplementedError

    def q(self, sql: str) -> str:
        raise NotImplementedError

    def _create_schema(self) -> None:
        with self._tx():
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self._execute(self.q(statement))

    # ---------------------------------------------------------------- writes
    def _ensure(self, owner: str, asset: str, external: int = 0) -> None:
        self._execute(self.q("INSERT INTO {p}accounts (owner, asset, external, balance) "
                             "VALUES (?, ?, ?, 0) ON CONFLICT (owner, asset) DO NOTHING"),
                      (owner, asset, external))

    def _post(self, settlement_id: str, leg: int, asset: str, debit: str, credit: str,
              amount: int) -> None:
        if amount == 0:
            return
        if amount < 0:
            raise LedgerRejected(f"{settlement_id}: negative amount")
        cur = self._execute(self.q(
            "UPDATE {p}accounts SET balance = balance - ? WHERE owner = ? AND asset = ? "
            "AND (external = 1 OR balance >= ?)"), (amount, debit, asset, amount))
        if cur.rowcount != 1:
            raise LedgerRejected(f"{settlement_id}: {debit} cannot pay {amount} {asset} "
                                 f"(balance {self.balance(debit, asset)})")
        self._execute(self.q("UPDATE {p}accounts SET balance = balance + ? "
                             "WHERE owner = ? AND asset = ?"), (amount, credit, asset))
        self._execute(self.q("INSERT INTO {p}postings (settlement_id, leg, asset, debit_owner, "
                             "credit_owner, amount) VALUES (?, ?, ?, ?, ?, ?)"),
                      (settlement_id, leg, asset, debit, credit, amount))

    def _insert_settlement(self, row: tuple) -> bool:
        """True if new; False if this id was applied before with the same body."""
        cur = self._execute(self.q(
            "INSERT INTO {p}settlements (id, kind, exchange, seq, stream_seq, trade_id, "
            "instrument, qty, price_units, gross_fen, buy_fee, sell_fee, buyer, seller, "
            "trade_date, settle_date, ts, body) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"),
            row)
        if cur.rowcount == 1:
            return True
        old = self._execute(self.q("SELECT body FROM {p}settlements WHERE id = ?"),
                            (row[0],)).fetchone()
        if old is None or old[0] != row[-1]:
            raise LedgerRejected(f"{row[0]}: an instruction with this id but other content "
                                 f"was applied before")
        return False

    def open_accounts(self, opening: Iterable[tuple[str, int, dict]]) -> int:
        """Post opening balances [(account, cash fen, {instrument: t})] once per account
        (id `OPEN-<account>`); returns how many accounts were newly opened."""
        opened = 0
        with self._tx():
            self._ensure(BANK, CASH, 1)
            for account, cash, credits in opening:
                body = orjson.dumps([account, cash, dict(sorted(credits.items()))]).decode()
                sid = f"OPEN-{account}"
                row = (sid, "opening", None, None, None, None, None, None, None, cash, None,
                       None, account, None, OPENING_DATE, OPENING_DATE, None, body)
                if not self._insert_settlement(row):
                    continue
                opened += 1
                self._ensure(account, CASH)
                self._post(sid, 0, CASH, BANK, account, cash)
                for leg, (instrument, qty) in enumerate(sorted(credits.items()), 1):
                    self._ensure(REGISTRY, instrument, 1)
                    self._ensure(account, instrument)
                    self._post(sid, leg, instrument, REGISTRY, account, qty)
        return opened

    def deliver(self, instructions: Sequence[Instruction]) -> None:
        """Apply a batch in one transaction (all or nothing), idempotently by id."""
        if not instructions:
            return
        with self._tx():
            self.apply_in_tx(instructions)

    def apply_in_tx(self, instructions: Sequence[Instruction]) -> int:
        applied = 0
        streams: dict[str, int] = {}
        for inst in instructions:
            exchange = exchange_of(inst.id)
            last = streams.get(exchange)
            if last is None:
                row = self._execute(self.q("SELECT applied_seq FROM {p}streams "
                                           "WHERE exchange = ?"), (exchange,)).fetchone()
                last = row[0] if row else 0
            body = orjson.dumps(inst.to_json()).decode()
            kind = type(inst)
            deposit = kind is DepositInstruction or kind is LotDepositInstruction
            if kind is ClearingBatch or kind is LotClearingBatch:
                kind = ClearingBatch
                settlement = (inst.id, "clearing", exchange, inst.seq, inst.stream_seq, None,
                              inst.instrument, inst.trades, None, inst.totals["gross"], None,
                              None, None, None, inst.trade_date, inst.settle_date, inst.ts,
                              body)
            elif deposit:
                cash = inst.asset == CASH
                settlement = (inst.id, "deposit", exchange, inst.seq, inst.stream_seq, None,
                              inst.asset, None if cash else inst.amount, None,
                              inst.amount if cash else None, None, None, inst.account, None,
                              inst.trade_date, inst.trade_date, inst.ts, body)
            elif kind is RetireInstruction:
                settlement = (inst.id, "retire", exchange, inst.seq, inst.stream_seq, None,
                              inst.asset, inst.qty, None, None, None, None, inst.account, None,
                              inst.trade_date, inst.trade_date, inst.ts, body)
            else:
                settlement = (inst.id, "trade", exchange, inst.seq, inst.stream_seq,
                              inst.trade_id, inst.instrument, inst.qty, inst.price_units,
                              inst.gross_fen, inst.buy_fee, inst.sell_fee, inst.buyer,
                              inst.seller, inst.trade_date, inst.settle_date, inst.ts, body)
            if inst.seq > last + 1:
                raise LedgerRejected(f"{inst.id}: gap in the {exchange} stream, instruction "
                                     f"{inst.seq} after {last}")
            if inst.seq <= last:
                self._insert_settlement(settlement)    # must be a true duplicate
                continue
            inst.check()
            if not self._insert_settlement(settlement):
                raise LedgerRejected(f"{inst.id}: applied before but the stream is at {last}")
            if kind is ClearingBatch:
                self._deliver_batch(inst, exchange)
                streams[exchange] = last = inst.seq
                applied += 1
                continue
            if deposit:
                source = BANK if cash else REGISTRY
                self._ensure(source, inst.asset, 1)
                self._ensure(inst.account, inst.asset)
                self._post(inst.id, 0, inst.asset, source, inst.account, inst.amount)
                if inst.project is not None:
                    self._register_lot(inst.asset, inst.credit_type, inst.project, inst.vintage)
                streams[exchange] = last = inst.seq
                applied += 1
                continue
            if kind is RetireInstruction:
                self._retire(inst, exchange)
                streams[exchange] = last = inst.seq
                applied += 1
                continue
            sid = inst.id
            for owner in (inst.buyer, inst.seller):
                self._ensure(owner, CASH)
                for holding, _ in trade_holdings(inst):
                    self._ensure(owner, holding)
            self._ensure(FEES, CASH)
            if inst.delivery == "batch":           # pending until its clearing batch
                self._execute(self.q("INSERT INTO {p}deliveries (settlement_id, batch_id) "
                                     "VALUES (?, NULL)"), (sid,))
            else:
                self._post_trade(inst)
            streams[exchange] = last = inst.seq
            applied += 1
        for exchange, seq in streams.items():
            self._execute(self.q("INSERT INTO {p}streams (exchange, applied_seq) VALUES (?, ?) "
                                 "ON CONFLICT (exchange) DO UPDATE SET applied_seq = ?"),
                          (exchange, seq, seq))
        return applied

    def _post_trade(self, inst) -> None:
        """A trade's DvP legs (see the module doc): the credits per holding it delivers (leg
        1, further lots legs 5, 6, ...), then the cash."""
        sid = inst.id
        for n, (holding, qty) in enumerate(trade_holdings(inst)):
            self._post(sid, 1 if n == 0 else 4 + n, holding, inst.seller, inst.buyer, qty)
        self._post(sid, 2, CASH, inst.buyer, inst.seller, inst.gross_fen)
        self._post(sid, 3, CASH, inst.buyer, FEES, inst.buy_fee)
        self._post(sid, 4, CASH, inst.seller, FEES, inst.sell_fee)

    def _register_lot(self, holding: str, credit_type: str, project: str, vintage: int) -> None:
        self._execute(self.q("INSERT INTO {p}lots (holding, credit_type, project, vintage) "
                             "VALUES (?, ?, ?, ?) ON CONFLICT (holding) DO NOTHING"),
                      (holding, credit_type, project, vintage))

    def _retire(self, inst: RetireInstruction, exchange: str) -> None:
        """Record a retirement once by its certificate and move its credits to @retired."""
        row = self._execute(self.q("SELECT settlement_id FROM {p}retirements WHERE "
                                   "certificate = ? OR (exchange = ? AND retire_id = ?)"),
                            (inst.certificate, exchange, inst.retire_id)).fetchone()
        if row is not None:
            raise LedgerRejected(f"{inst.id}: certificate {inst.certificate} or retire id "
                                 f"{inst.retire_id} already recorded by {row[0]}")
        self._ensure(inst.account, inst.asset)
        self._ensure(RETIRED, inst.asset)
        self._post(inst.id, 0, inst.asset, inst.account, RETIRED, inst.qty)
        if inst.project is not None:
            self._register_lot(inst.asset, inst.credit_type, inst.project, inst.vintage)
        self._execute(self.q(
            "INSERT INTO {p}retirements (certificate, settlement_id, exchange, retire_id, "
            "account, holding, credit_type, project, vintage, qty, purpose, trade_date) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
            (inst.certificate, inst.id, exchange, inst.retire_id, inst.account, inst.asset,
             inst.credit_type, inst.project, inst.vintage, inst.qty, inst.purpose,
             inst.trade_date))

    def _deliver_batch(self, batch: ClearingBatch, exchange: str) -> None:
        """Confirm a clearing batch: check the pending trades it covers against it, post them
        in stream order, mark them delivered by it (inside the caller's transaction)."""
        rows = self._execute(self.q(
            "SELECT s.body FROM {p}settlements s JOIN {p}deliveries d ON d.settlement_id = s.id "
            "WHERE d.batch_id IS NULL AND s.exchange = ? AND s.seq > ? AND s.seq < ? "
            "ORDER BY s.seq"), (exchange, batch.after_seq, batch.seq)).fetchall()
        trades = [instruction_from_json(orjson.loads(r[0])) for r in rows]
        participants: dict = {}
        gross = fees = 0
        qty: dict = {}
        deliveries = []
        for t in trades:
            gross += t.gross_fen
            fees += t.buy_fee + t.sell_fee
            qty[t.instrument] = qty.get(t.instrument, 0) + t.qty
            if t.lots:
                deliveries.append([t.id, t.instrument, [list(lot) for lot in t.lots]])
            for account, side, cash_key, fee in ((t.buyer, "bought", "paid", t.buy_fee),
                                                 (t.seller, "sold", "received", t.sell_fee)):
                p = participants.setdefault(account, {"trades": 0, "bought": {}, "sold": {},
                                                      "paid": 0, "received": 0, "fees": 0})
                p["trades"] += 1
                p[side][t.instrument] = p[side].get(t.instrument, 0) + t.qty
                p[cash_key] += t.gross_fen
                p["fees"] += fee
        expected = {a: {k: v for k, v in p.items() if k != "member"}
                    for a, p in batch.participants.items()}
        if (len(trades) != batch.trades or gross != batch.totals["gross"]
                or fees != batch.totals["fees"] or qty != batch.totals["qty"]
                or participants != expected
                or deliveries != getattr(batch, "deliveries", [])):
            raise LedgerRejected(
                f"{batch.id}: the batch clears {batch.trades} trades (gross "
                f"{format_fen(batch.totals['gross'])}) but the ledger holds {len(trades)} "
                f"pending for it (gross {format_fen(gross)}): not confirmed")
        for t in trades:
            self._post_trade(t)
        if trades:
            self._execute(self.q(
                "UPDATE {p}deliveries SET batch_id = ? WHERE batch_id IS NULL AND settlement_id "
                "IN (SELECT id FROM {p}settlements WHERE exchange = ? AND seq > ? AND seq < ?)"),
                (batch.id, exchange, batch.after_seq, batch.seq))

    def record_dispute(self, trade_id: int, note: str, ts: int, exchange: str = "CCERX") -> dict:
        """Record an operator's dispute of a trade cleared at the close (Art.32), once. A
        recorded flag: statements show it; the delivery is not held back or reversed (that
        is not built). The window: while the trade is pending, or delivered by the latest
        clearing batch with no trade or batch after it (the next trading day has not begun).
        Raises LedgerRejected (nothing recorded) outside it."""
        with self._lock:
            row = self._execute(self.q(
                "SELECT s.id, d.settlement_id, d.batch_id FROM {p}settlements s LEFT JOIN "
                "{p}deliveries d ON d.settlement_id = s.id WHERE s.exchange = ? AND "
                "s.kind = 'trade' AND s.trade_id = ?"), (exchange, trade_id)).fetchone()
            if row is None:
                raise LedgerRejected(f"no trade {trade_id} of {exchange} in the ledger")
            sid, batch_trade, batch_id = row
            if batch_trade is None:
                raise LedgerRejected(f"trade {trade_id} was settled at once, not cleared at "
                                     f"the close: there is no clearing to dispute")
            if batch_id is not None:
                later = self._execute(self.q(
                    "SELECT COUNT(*) FROM {p}settlements WHERE exchange = ? AND kind IN "
                    "('trade', 'clearing') AND seq > (SELECT seq FROM {p}settlements "
                    "WHERE id = ?)"), (exchange, batch_id)).fetchone()[0]
                if later:
                    raise LedgerRejected(f"the dispute window of trade {trade_id} (delivered "
                                         f"by {batch_id}) closed when trading began again")
            with self._tx():
                cur = self._execute(self.q(
                    "INSERT INTO {p}disputes (exchange, trade_id, note, ts) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (exchange, trade_id) DO NOTHING"), (exchange, trade_id, note, ts))
                if cur.rowcount != 1:
                    raise LedgerRejected(f"trade {trade_id} is already disputed")
        return {"trade_id": trade_id, "settlement_id": sid, "batch_id": batch_id,
                "delivery": "delivered" if batch_id else "pending", "note": note}

    # ---------------------------------------------------------------- queries
    def applied_seq(self, exchange: str = "CCERX") -> int:
        row = self._execute(self.q("SELECT applied_seq FROM {p}streams WHERE exchange = ?"),
                            (exchange,)).fetchone()
        return row[0] if row else 0

    def balance(self, owner: str, asset: str) -> int:
        row = self._execute(self.q("SELECT balance FROM {p}accounts WHERE owner = ? AND asset = ?"),
                            (owner, asset)).fetchone()
        return row[0] if row else 0

    def balances(self, owner: Optional[str] = None) -> dict[str, dict[str, int]]:
        """{owner: {asset: balance}} (cash in fen, credits in tonnes)."""
        with self._lock:   # queries from other threads share the connection's lock
            return self._balances(owner)

    def _balances(self, owner: Optional[str]) -> dict[str, dict[str, int]]:
        sql = "SELECT owner, asset, balance FROM {p}accounts"
        params: tuple = ()
        if owner is not None:
            sql += " WHERE owner = ?"
            params = (owner,)
        out: dict[str, dict[str, int]] = {}
        for o, asset, bal in self._execute(self.q(sql + " ORDER BY owner, asset"), params):
            out.setdefault(o, {})[asset] = bal
        return out

    def settlement_count(self) -> int:
        return self._execute(self.q("SELECT COUNT(*) FROM {p}settlements WHERE kind = 'trade'")
                             ).fetchone()[0]

    def problems(self) -> list[str]:
        """Every broken invariant, as text (empty when the books balance): per asset the
        balances sum to zero, every balance equals its postings, no participant balance is
        negative. Grouped queries, linear in the postings (a correlated subquery per account
        took minutes at 1,000 accounts and 50,000 trades)."""
        with self._lock:
            rows = list(self._execute(self.q(
                "SELECT owner, asset, balance, external FROM {p}accounts")))
            posted: dict[tuple[str, str], int] = {}
            for column, sign in (("credit_owner", 1), ("debit_owner", -1)):
                for owner, asset, amount in self._execute(self.q(
                        f"SELECT {column}, asset, SUM(amount) FROM {{p}}postings "
                        f"GROUP BY {column}, asset")):
                    posted[(owner, asset)] = posted.get((owner, asset), 0) + sign * int(amount)
        problems, totals = [], {}
        for owner, asset, balance, external in rows:
            totals[asset] = totals.get(asset, 0) + balance
            if balance != posted.get((owner, asset), 0):
                problems.append(f"{owner}/{asset}: balance {balance} != postings "
                                f"{posted.get((owner, asset), 0)}")
            if not external and balance < 0:
                problems.append(f"{owner}/{asset}: negative balance {balance}")
        problems += [f"{asset}: balances sum to {total}, not 0"
                     for asset, total in sorted(totals.items()) if total]
        return problems

    def check(self) -> None:
        """Raise AssertionError unless the books balance (see problems())."""
        problems = self.problems()
        assert not problems, "; ".join(problems[:10])

    def statement(self, account: str, trade_date: str) -> dict:
        """Statement of one account for one trade date: its trades (both sides), deposits,
        fees, and balances at the start and end of that date (cash as decimal CNY)."""
        with self._lock:
            return self._statement(account, trade_date, _DatePeriod(trade_date))

    def _statement(self, account: str, trade_date: str, period: "_DatePeriod | _SeqPeriod"
                   ) -> dict:
        trades = []
        fees = 0
        rows = self._execute(self.q(
            "SELECT s.id, s.trade_id, s.instrument, s.qty, s.price_units, s.gross_fen, "
            "s.buy_fee, s.sell_fee, s.buyer, s.seller, s.settle_date, s.body, d.settlement_id, "
            "d.batch_id, x.note FROM {p}settlements s "
            "LEFT JOIN {p}deliveries d ON d.settlement_id = s.id "
            "LEFT JOIN {p}disputes x ON x.exchange = s.exchange AND x.trade_id = s.trade_id "
            f"WHERE s.kind = 'trade' AND {period.within_s} AND (s.buyer = ? OR s.seller = ?) "
            "ORDER BY s.seq"), (*period.args, account, account))
        clearing: dict[Optional[str], dict] = {}
        for (sid, trade_id, instrument, qty, price_units, gross, buy_fee, sell_fee, buyer,
             seller, settle_date, body, batch_trade, batch_id, dispute) in rows:
            buying = buyer == account
            fee = buy_fee if buying else sell_fee
            fees += fee
            trade = {"settlement_id": sid, "trade_id": trade_id, "instrument": instrument,
                     "side": "buy" if buying else "sell", "qty": qty,
                     "price": format_price_units(price_units),
                     "gross": format_fen(gross), "fee": format_fen(fee),
                     "counterparty": seller if buying else buyer,
                     "settle_date": settle_date}
            if '"lots":' in body:               # the lots it delivered (lots.py)
                trade["lots"] = orjson.loads(body)["lots"]
            if batch_trade is not None:         # day-end clearing: pending or delivered
                trade["delivery"] = "delivered" if batch_id else "pending"
                trade["batch_id"] = batch_id
                entry = clearing.setdefault(batch_id, {"batch_id": batch_id, "trades": 0,
                                                       "delivered": 0, "pending": 0})
                entry["trades"] += 1
                entry["delivered" if batch_id else "pending"] += 1
            if dispute is not None:
                trade["disputed"] = dispute
            trades.append(trade)
        deposits = []
        rows = self._execute(self.q(
            "SELECT id, instrument, qty, gross_fen, body FROM {p}settlements WHERE kind = "
            f"'deposit' AND {period.within} AND buyer = ? ORDER BY seq"), (*period.args, account))
        for sid, asset, qty, cash, body in rows:
            edge = orjson.loads(body)
            entry = {"settlement_id": sid, "deposit_id": edge["deposit_id"],
                     "asset": asset, "amount": format_fen(cash) if asset == CASH else qty}
            if "project" in edge:                   # a lot moved in from the registry
                entry.update(credit_type=edge["credit_type"], project=edge["project"],
                             vintage=edge["vintage"])
            deposits.append(entry)
        opening = self._balances_through(account, period.before, period.before_args)
        closing = self._balances_through(account, period.through, period.through_args)
        out = {"account": account, "trade_date": trade_date, "trades": trades,
               "trade_count": len(trades), "deposits": deposits, "fees": format_fen(fees),
               "opening": _format_balances(opening), "closing": _format_balances(closing)}
        if self._knows_lots():      # (a ledger before lots: statements as they were)
            retired = self._retired_through(account, period)
            out["holdings"] = self._holdings(account, closing, retired, period)
            out["retirements"] = self._retirements(account, period)
            out["retired"] = retired
        if clearing:       # per clearing batch (None: still pending) the account's trades
            out["clearing"] = [clearing[k] for k in sorted(clearing, key=lambda k: (k is None,
                                                                                    k or ""))]
        if type(period) is _SeqPeriod:
            out["instructions"] = [period.after + 1, period.upto]   # the stream span covered
        return out

    # ---------------------------------------------------------------- lots and retirements
    def _knows_lots(self) -> bool:
        """Whether any lot or retirement ever reached this ledger."""
        return any(self._execute(self.q(f"SELECT 1 FROM {{p}}{table} LIMIT 1")).fetchone()
                   for table in ("lots", "retirements"))

    def _lot_of(self, holding: str) -> tuple:
        """(credit type, project, vintage) of a holding key; a pooled holding's project and
        vintage are None (its credit type too, unless it is a standard contract's)."""
        row = self._execute(self.q("SELECT credit_type, project, vintage FROM {p}lots "
                                   "WHERE holding = ?"), (holding,)).fetchone()
        if row is not None:
            return tuple(row)
        if LOT_SEPARATOR in holding:            # a lot that came in by trade only
            project, vintage = holding.rsplit(LOT_SEPARATOR, 1)
            return None, project, int(vintage) if vintage.isdigit() else None
        return STANDARD_CONTRACTS.get(holding), None, None

    def _retired_through(self, account: str, period) -> dict:
        rows = self._execute(self.q(
            "SELECT r.holding, SUM(r.qty) FROM {p}retirements r JOIN {p}settlements s ON "
            f"s.id = r.settlement_id WHERE r.account = ? AND {period.through} "
            "GROUP BY r.holding"), (account, *period.through_args))
        return {holding: int(qty) for holding, qty in sorted(rows)}

    def _retirements(self, account: Optional[str], period=None) -> list[dict]:
        where, args = [], []
        if account is not None:
            where.append("r.account = ?")
            args.append(account)
        if period is not None:
            where.append(period.within_s)
            args += period.args
        rows = self._execute(self.q(
            "SELECT r.certificate, r.retire_id, r.settlement_id, r.account, r.holding, "
            "r.credit_type, r.project, r.vintage, r.qty, r.purpose, r.trade_date FROM "
            "{p}retirements r JOIN {p}settlements s ON s.id = r.settlement_id"
            + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY s.seq"),
            tuple(args))
        keys = ("certificate", "retire_id", "settlement_id", "account", "holding",
                "credit_type", "project", "vintage", "qty", "purpose", "trade_date")
        return [dict(zip(keys, row)) for row in rows]

    def retirements(self, account: Optional[str] = None) -> list[dict]:
        """Every retirement recorded (of one account), in stream order, with its certificate."""
        with self._lock:
            return self._retirements(account)

    def _pending(self, period=None, account: Optional[str] = None) -> list:
        """Trades cleared at the close not delivered (by the end of `period`; None: now), of
        `account` (None: all), as instructions."""
        if period is None:
            rows = self._execute(self.q(
                "SELECT s.body FROM {p}settlements s JOIN {p}deliveries d ON d.settlement_id = "
                "s.id WHERE d.batch_id IS NULL ORDER BY s.seq"))
        else:
            rows = self._execute(self.q(
                "SELECT s.body FROM {p}settlements s JOIN {p}deliveries d ON d.settlement_id = "
                "s.id LEFT JOIN {p}settlements b ON b.id = d.batch_id WHERE "
                f"{period.through} AND (d.batch_id IS NULL OR NOT "
                f"{period.through.replace('s.', 'b.')}) AND (s.buyer = ? OR s.seller = ?) "
                "ORDER BY s.seq"), (*period.through_args, *period.through_args, account, account))
        return [instruction_from_json(orjson.loads(r[0])) for r in rows]

    def _holdings(self, account: str, closing: dict, retired: dict, period) -> list[dict]:
        """Per holding key (lot) at the end of `period`: delivered (the ledger balance),
        pending in and out (day-end clearing), retired."""
        pending_in: dict = {}
        pending_out: dict = {}
        for t in self._pending(period, account):
            side = pending_in if t.buyer == account else pending_out
            for holding, qty in trade_holdings(t):
                side[holding] = side.get(holding, 0) + qty
        keys = sorted({k for k, v in closing.items() if k != CASH and v}
                      | set(pending_in) | set(pending_out) | set(retired))
        out = []
        for holding in keys:
            credit_type, project, vintage = self._lot_of(holding)
            out.append({"holding": holding, "credit_type": credit_type, "project": project,
                        "vintage": vintage, "qty": closing.get(holding, 0),
                        "pending_in": pending_in.get(holding, 0),
                        "pending_out": pending_out.get(holding, 0),
                        "retired": retired.get(holding, 0)})
        return out

    def reconcile(self, accounts) -> list[str]:
        """Differences between this ledger and the engine's accounts (core risk.Accounts), as
        text; empty when they agree: every account's cash to the fen and credits per holding
        key (lot) to the tonne, counting trades still pending delivery (day-end clearing: the
        engine moved them at the trade) as moved; credits retired per holding key; fees; and
        the ledger's own invariants (problems()). Meaningful once the ledger has applied every
        instruction the engine made (compare applied_seq() with the journal's last)."""
        with self._lock:
            problems = [f"ledger: {p}" for p in self.problems()]
            balances = self._balances(None)
            pending = self._pending()
            retirements = self._retirements(None)
        cash: dict = {}
        credits: dict = {}
        fees = balances.get(FEES, {}).get(CASH, 0)
        for owner, assets in balances.items():
            if owner.startswith("@"):
                continue
            cash[owner] = assets.get(CASH, 0)
            credits[owner] = {k: v for k, v in assets.items() if k != CASH}
        for t in pending:
            cash[t.buyer] = cash.get(t.buyer, 0) - t.gross_fen - t.buy_fee
            cash[t.seller] = cash.get(t.seller, 0) + t.gross_fen - t.sell_fee
            fees += t.buy_fee + t.sell_fee
            for holding, qty in trade_holdings(t):
                bought, sold = credits.setdefault(t.buyer, {}), credits.setdefault(t.seller, {})
                bought[holding] = bought.get(holding, 0) + qty
                sold[holding] = sold.get(holding, 0) - qty
        retired: dict = {}
        for r in retirements:
            mine = retired.setdefault(r["account"], {})
            mine[r["holding"]] = mine.get(r["holding"], 0) + r["qty"]
        for account_id in sorted(set(accounts.by_id) | set(cash)):
            a = accounts.by_id.get(account_id)
            if a is None:
                if cash.get(account_id) or any(credits.get(account_id, {}).values()):
                    problems.append(f"{account_id}: in the ledger, not in the engine")
                continue
            if cash.get(account_id, 0) != a.cash:
                problems.append(f"{account_id} cash: engine {format_fen(a.cash)} CNY, ledger "
                                f"{format_fen(cash.get(account_id, 0))} CNY")
            for label, engine, ledger in (
                    ("", a.credits, credits.get(account_id, {})),
                    (" retired", a.retired, retired.get(account_id, {}))):
                for holding in sorted(set(engine) | set(ledger)):
                    e, l_ = engine.get(holding, 0), ledger.get(holding, 0)
                    if e != l_:
                        problems.append(f"{account_id} {holding}{label}: engine {e} t, "
                                        f"ledger {l_} t")
        engine_fees = sum(a.fees_paid for a in accounts.by_id.values())
        if fees != engine_fees:
            problems.append(f"fees: engine charged {format_fen(engine_fees)} CNY, ledger "
                            f"{format_fen(fees)} CNY")
        return problems

    def _balances_through(self, account: str, condition: str, args: tuple) -> dict:
        out: dict[str, int] = {}
        for column, sign in (("credit_owner", 1), ("debit_owner", -1)):
            rows = self._execute(self.q(
                f"SELECT p.asset, SUM(p.amount) FROM {{p}}postings p JOIN {{p}}settlements s "
                f"ON s.id = p.settlement_id WHERE p.{column} = ? AND {condition} "
                f"GROUP BY p.asset"), (account, *args))
            for asset, amount in rows:
                out[asset] = out.get(asset, 0) + sign * int(amount)   # PostgreSQL sums are Decimal
        return out

    def _accounts_within(self, period: "_DatePeriod | _SeqPeriod") -> list[str]:
        rows = self._execute(self.q(
            f"SELECT buyer FROM {{p}}settlements WHERE kind IN ('trade', 'deposit', 'retire') "
            f"AND {period.within} UNION "
            f"SELECT seller FROM {{p}}settlements WHERE kind = 'trade' AND {period.within}"),
            period.args * 2)
        return sorted(r[0] for r in rows)

    def accounts_with_activity(self, trade_date: str) -> list[str]:
        with self._lock:
            return self._accounts_within(_DatePeriod(trade_date))

    def trade_dates(self) -> list[str]:
        rows = self._execute(self.q("SELECT DISTINCT trade_date FROM {p}settlements "
                                    "WHERE kind IN ('trade', 'deposit', 'retire') "
                                    "ORDER BY trade_date"))
        return [r[0] for r in rows]

    def end_of_day_statements(self, trade_date: str, accounts: Optional[Iterable[str]] = None):
        """Statements of every account with trades or deposits dated that day (or of
        `accounts`)."""
        names = list(accounts) if accounts is not None else self.accounts_with_activity(trade_date)
        return [self.statement(name, trade_date) for name in names]

    def close_statements(self, trade_date: str, upto_seq: int) -> list[dict]:
        """The statements of a close: the exchange closed trading date `trade_date` when its
        instruction stream stood at `upto_seq`. Each covers what settled since the previous
        close recorded here (trades and deposits, whatever their dates: a deposit after
        Friday's close or on a Saturday belongs to Monday's), with the balances at that close
        and at this one. The close is recorded; asking again gives the same statements."""
        with self._lock:
            row = self._execute(self.q(
                "SELECT MAX(upto_seq) FROM {p}closes WHERE upto_seq < ? "
                "OR (upto_seq = ? AND trade_date < ?)"), (upto_seq, upto_seq, trade_date)
            ).fetchone()
            period = _SeqPeriod(int(row[0] or 0), upto_seq)
            statements = [self._statement(name, trade_date, period)
                          for name in self._accounts_within(period)]
            with self._tx():
                self._execute(self.q("INSERT INTO {p}closes (upto_seq, trade_date) VALUES "
                                     "(?, ?) ON CONFLICT (upto_seq, trade_date) DO NOTHING"),
                              (upto_seq, trade_date))
        return statements


class _DatePeriod:
    """Settlements dated one trade date; balances before and through it."""

    def __init__(self, trade_date: str):
        self.within, self.args = "trade_date = ?", (trade_date,)
        self.within_s = "s.trade_date = ?"
        self.before, self.before_args = "s.trade_date < ?", (trade_date,)
        self.through, self.through_args = "s.trade_date <= ?", (trade_date,)


class _SeqPeriod:
    """Settlements with stream seq in (after, upto]; opening balances (no seq) count before."""

    def __init__(self, after: int, upto: int):
        self.after, self.upto = after, upto
        self.within, self.args = "seq > ? AND seq <= ?", (after, upto)
        self.within_s = "s.seq > ? AND s.seq <= ?"
        self.before, self.before_args = "(s.seq IS NULL OR s.seq <= ?)", (after,)
        self.through, self.through_args = "(s.seq IS NULL OR s.seq <= ?)", (upto,)


def _format_balances(balances: dict[str, int]) -> dict:
    out = {"cash": format_fen(balances.get(CASH, 0))}
    out["credits"] = {asset: qty for asset, qty in sorted(balances.items()) if asset != CASH}
    return out
