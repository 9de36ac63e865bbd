"""Settlement instructions, the outbox that holds them, and the relay that delivers them.

Every `TradeExecuted` becomes exactly one `SettlementInstruction` (delivery versus payment:
`qty` tonnes of `instrument` from seller to buyer in the registry; the gross amount plus the
buyer's fee from the buyer's cash, the gross amount less the seller's fee to the seller, both
fees to the exchange). Its id is stable (`<exchange id>-T<trade id>`), so every consumer can
apply it idempotently; `seq` numbers the whole stream and `stream_seq` numbers the
instrument's own stream (the MQTT topic), so consumers of either can detect gaps.

Every `Deposited` becomes one `DepositInstruction` (id `<exchange id>-D<event seq>`): the
asset moves from outside into the account, credits from the registry, cash from the bank. Both
kinds share the one numbered stream, so a ledger applies them in the engine's order.

Day-end DvP clearing (rule profile `cbeex-2023`, Art.27-28 of the CCER trading and settlement
rules; `clears_at_close`). A trade's instruction is then a `BatchTradeInstruction`: the same
fields plus `delivery = "batch"`, which tells the ledger to record it *pending* (nothing moves
in the ledger yet; the engine's own accounts moved at the trade, and full pre-funding is what
guarantees the delivery). Every close (EndOfDay) then makes one `ClearingBatch` instruction
(id `<exchange id>-C<yyyymmdd>-<n>`, the n-th close of that trade date, from 1) in the same
numbered stream, right after the close's command: the trades it clears (every batch trade
after the previous batch, trade by trade and gross), their count, per participant the gross
cash paid and received, fees and tonnes bought and sold per instrument, and the totals. The
ledger confirms the batch by delivering all its pending trades in one transaction (credits
from the seller via the registry, cash via the exchange), idempotently by batch id, after
checking that what it holds pending matches the batch's count and totals. The batch travels
on its own stream, `CLEARING` (the MQTT topic `settle/CLEARING`). What the batch covers is
part of the maker's durable state (snapshot "settlement" -> "clearing"; recovery re-reads
the instructions journaled after the snapshot), so a replay makes the identical batch.

Credits as lots (engine/core/lots.py, issue 11). A trade that delivered lots (a listing's
lot, or a type contract's eligible lots in the allocation order) makes a `LotTradeInstruction`:
the trade fields plus `delivery` ("now" or "batch") and `lots`, ((project | None, vintage |
None, t), ...) as TradeExecuted.lots has them (None: the default lot, held under the
contract's own symbol); the edge form adds "lots": [{"project", "vintage", "qty"}]. A trade
of a pooled holding makes the SettlementInstruction / BatchTradeInstruction it always did,
row and JSON unchanged. `trade_holdings()` names the holding key each tonne moves under. A
deposit of a lot makes a `LotDepositInstruction` (asset = the lot key, plus credit type,
project, vintage; it travels on the lot key's stream). A `Retired` event makes a
`RetireInstruction` (id `<exchange>-R<event seq>`, stream `RETIRE`, MQTT settle/RETIRE):
account, holding key and lot, qty, purpose, and the certificate id the ledger records once.
A clearing batch covering lot trades is a `LotClearingBatch`: the batch plus `deliveries`,
each lot trade's lots ([[instruction id, instrument, [[project, vintage, t], ...]], ...]),
and in its edge form `lots`, the tonnes per holding key over all its trades. Journal rows are
the instructions' fields; the kinds are told apart by their row lengths (instruction_from_row).

The outbox is the journal itself (see journal.py): instructions are written in the same
checksummed record as the command that caused them. `Outbox` is the in-memory queue of the
instructions not yet confirmed by every relay; `Relay` delivers them to one ledger adapter in
batches and advances its durable cursor (`cursor-<name>.json`, replaced atomically) only
after the adapter confirms. Crash anywhere and the relay resumes from its cursor: nothing is
lost, a batch may be delivered twice, and adapters apply by id, so twice is harmless.
"""
from __future__ import annotations

import datetime as _dt
import threading
import time
from pathlib import Path
from typing import Iterable, NamedTuple, Optional

import orjson

from ccerx.engine.core.calendar import TradingCalendar
from ccerx.engine.core.events import Deposited, Retired, TradeExecuted
from ccerx.engine.core.lots import lot_key, lot_problem, lots_json
from ccerx.engine.durable.files import write_atomic
from ccerx.engine.core.types import (CASH_ASSET, PRICE_UNITS_PER_CNY, InstrumentSpec, format_fen, format_price_units,
                    parse_cny_to_fen, parse_price_units)

CHINA = _dt.timezone(_dt.timedelta(hours=8))   # trade dates are Beijing dates (no DST)


class SettlementInstruction(NamedTuple):
    id: str                 # stable: "<exchange>-T<trade id>"
    seq: int                # position in the exchange's instruction stream, from 1, no gaps
    stream_seq: int         # position in this instrument's stream, from 1, no gaps
    trade_id: int
    instrument: str
    qty: int                # tonnes, seller -> buyer
    price_units: int        # 1e-6 CNY per tonne
    gross_fen: int          # price x qty, buyer -> seller
    buy_fee: int            # fen, buyer -> exchange
    sell_fee: int           # fen, seller -> exchange
    buyer: str
    seller: str
    buyer_member: Optional[str]
    seller_member: Optional[str]
    trade_date: str         # ISO date, Beijing time of the trade's ts
    settle_date: str        # trade date + cycle business days
    ts: int

    kind = "trade"
    delivery = "now"        # settled at once (BatchTradeInstruction: "batch")
    lots = ()               # a pooled delivery (LotTradeInstruction: the lots delivered)

    def to_json(self) -> dict:
        """Edge form: decimal strings for money and price, never floats."""
        return {"id": self.id, "seq": self.seq, "stream": self.instrument,
                "stream_seq": self.stream_seq, "trade_id": self.trade_id,
                "instrument": self.instrument, "qty": self.qty,
                "price": format_price_units(self.price_units),
                "gross": format_fen(self.gross_fen), "buy_fee": format_fen(self.buy_fee),
                "sell_fee": format_fen(self.sell_fee), "buyer": self.buyer,
                "seller": self.seller, "buyer_member": self.buyer_member,
                "seller_member": self.seller_member, "trade_date": self.trade_date,
                "settle_date": self.settle_date, "ts": self.ts}

    @classmethod
    def from_json(cls, obj: dict) -> "SettlementInstruction":
        """Parse the edge form back (exact); raises ValueError on anything malformed."""
        try:
            inst = cls(obj["id"], obj["seq"], obj["stream_seq"], obj["trade_id"],
                       obj["instrument"], obj["qty"], parse_price_units(obj["price"]),
                       parse_cny_to_fen(obj["gross"]), parse_cny_to_fen(obj["buy_fee"]),
                       parse_cny_to_fen(obj["sell_fee"]), obj["buyer"], obj["seller"],
                       obj.get("buyer_member"), obj.get("seller_member"), obj["trade_date"],
                       obj["settle_date"], obj["ts"])
        except (KeyError, TypeError) as err:
            raise ValueError(f"not a settlement instruction: {err}") from None
        inst.check()
        return inst

    def check(self) -> None:
        for name in ("seq", "stream_seq", "trade_id", "qty", "price_units", "ts"):
            if type(getattr(self, name)) is not int:
                raise ValueError(f"instruction {name} must be an integer")
        if self.qty <= 0 or self.gross_fen <= 0 or self.buy_fee < 0 or self.sell_fee < 0:
            raise ValueError("instruction amounts must be positive")
        if self.sell_fee > self.gross_fen:
            raise ValueError("seller's fee exceeds the gross amount")
        if self.price_units * self.qty != self.gross_fen * (PRICE_UNITS_PER_CNY // 100):
            raise ValueError("gross amount is not price x quantity")
        if not self.buyer or not self.seller or self.buyer == self.seller:
            raise ValueError("instruction needs two different accounts")

    def encode(self) -> bytes:
        return orjson.dumps(self.to_json())


class DepositInstruction(NamedTuple):
    id: str                 # stable: "<exchange>-D<event seq>"
    seq: int                # position in the exchange's instruction stream (shared with trades)
    stream_seq: int         # position in the asset's stream (an instrument's, or "CNY")
    deposit_id: str         # the operator's reference
    account: str
    member: Optional[str]
    asset: str              # instrument symbol (amount in tonnes) or "CNY" (amount in fen)
    amount: int
    trade_date: str         # ISO date, Beijing time of the deposit's ts
    ts: int

    kind = "deposit"
    credit_type = project = vintage = None     # a pooled asset (LotDepositInstruction: a lot)

    @property
    def instrument(self) -> str:    # the stream (MQTT topic) it travels on
        return self.asset

    def to_json(self) -> dict:
        cash = self.asset == CASH_ASSET
        return {"kind": "deposit", "id": self.id, "seq": self.seq, "stream": self.asset,
                "stream_seq": self.stream_seq, "deposit_id": self.deposit_id,
                "account": self.account, "member": self.member, "asset": self.asset,
                "amount": format_fen(self.amount) if cash else self.amount,
                "trade_date": self.trade_date, "ts": self.ts}

    @classmethod
    def from_json(cls, obj: dict) -> "DepositInstruction":
        try:
            amount = obj["amount"]
            if obj["asset"] == CASH_ASSET:
                amount = parse_cny_to_fen(amount)
            inst = cls(obj["id"], obj["seq"], obj["stream_seq"], obj["deposit_id"],
                       obj["account"], obj.get("member"), obj["asset"], amount,
                       obj["trade_date"], obj["ts"])
        except (KeyError, TypeError) as err:
            raise ValueError(f"not a deposit instruction: {err}") from None
        inst.check()
        return inst

    def check(self) -> None:
        for name in ("seq", "stream_seq", "amount", "ts"):
            if type(getattr(self, name)) is not int:
                raise ValueError(f"instruction {name} must be an integer")
        if self.amount <= 0:
            raise ValueError("a deposit's amount must be positive")
        if not self.account or not self.asset or not self.deposit_id:
            raise ValueError("a deposit needs an account, an asset and a deposit id")

    def encode(self) -> bytes:
        return orjson.dumps(self.to_json())


_BatchTradeFields = NamedTuple("_BatchTradeFields", [
    *((name, SettlementInstruction.__annotations__[name])
      for name in SettlementInstruction._fields), ("delivery", str)])


class BatchTradeInstruction(_BatchTradeFields):
    """A trade cleared at the close (cbeex-2023): a SettlementInstruction's fields plus
    `delivery` ("batch"); the ledger records it pending until its ClearingBatch."""
    __slots__ = ()
    kind = "trade"
    lots = ()

    def to_json(self) -> dict:
        out = SettlementInstruction.to_json(self)
        out["delivery"] = self.delivery
        return out

    def check(self) -> None:
        SettlementInstruction.check(self)
        if self.delivery != "batch":
            raise ValueError(f"unknown delivery {self.delivery!r}")

    def encode(self) -> bytes:
        return orjson.dumps(self.to_json())


# ---------------------------------------------------------------------------- lots
def trade_holdings(inst) -> list[tuple[str, int]]:
    """[(holding key, t)] a trade instruction delivers, in delivery order: each lot under its
    lot key, the default lot (project None) and a pooled delivery under the instrument's own
    symbol (lots.py)."""
    if not inst.lots:
        return [(inst.instrument, inst.qty)]
    return [(inst.instrument if project is None else lot_key(project, vintage), qty)
            for project, vintage, qty in inst.lots]


def _lots_problem(lots, qty: int) -> str:
    """Why `lots` ((project | None, vintage | None, t), ...) is not a delivery of `qty` t."""
    if type(lots) is not tuple or not lots:
        return "lots must be a non-empty list"
    total = 0
    for entry in lots:
        if type(entry) is not tuple or len(entry) != 3:
            return "a lot is (project, vintage, qty)"
        project, vintage, t = entry
        if type(t) is not int or t <= 0:
            return "a lot's qty must be a positive integer"
        if project is None and vintage is None:
            pass                           # the default lot (lots.py)
        elif lot_problem("afforestation", project, vintage):   # (checks project and
            return lot_problem("afforestation", project, vintage)   # vintage; any type)
        total += t
    if total != qty:
        return f"the lots add up to {total} t, not the trade's {qty} t"
    return ""


def _lots_from_json(value) -> tuple:
    """The edge's `lots` list -> ((project, vintage, qty), ...) (checked by the caller)."""
    if not isinstance(value, list):
        raise ValueError("lots must be a list of {project, vintage, qty}")
    try:
        return tuple((e["project"], e["vintage"], e["qty"]) for e in value)
    except (KeyError, TypeError):
        raise ValueError("a lot is {project, vintage, qty}") from None


def _lots_from_row(value) -> tuple:
    return tuple(tuple(e) for e in value)


_LotTradeFields = NamedTuple("_LotTradeFields", [
    *((name, SettlementInstruction.__annotations__[name])
      for name in SettlementInstruction._fields), ("delivery", str), ("lots", tuple)])


class LotTradeInstruction(_LotTradeFields):
    """A trade that delivered lots (a listing's lot, or a contract's eligible lots in the
    allocation order of lots.py): a SettlementInstruction's fields plus `delivery` ("now", or
    "batch" under day-end clearing) and `lots` ((project | None, vintage | None, t), ...) as
    TradeExecuted.lots has them. The edge form adds `"lots": [{"project", "vintage", "qty"}]`
    (and `"delivery": "batch"` when cleared at the close)."""
    __slots__ = ()
    kind = "trade"

    def to_json(self) -> dict:
        out = SettlementInstruction.to_json(self)
        if self.delivery == "batch":
            out["delivery"] = "batch"
        out["lots"] = lots_json(self.lots)
        return out

    def check(self) -> None:
        SettlementInstruction.check(self)
        if self.delivery not in ("now", "batch"):
            raise ValueError(f"unknown delivery {self.delivery!r}")
        problem = _lots_problem(self.lots, self.qty)
        if problem:
            raise ValueError(f"instruction {self.id}: {problem}")

    def encode(self) -> bytes:
        return orjson.dumps(self.to_json())


_LotDepositFields = NamedTuple("_LotDepositFields", [
    *((name, DepositInstruction.__annotations__[name]) for name in DepositInstruction._fields),
    ("credit_type", str), ("project", str), ("vintage", int)])


class LotDepositInstruction(_LotDepositFields):
    """Credits of one lot moved in from the registry: a DepositInstruction (its `asset` the lot
    key) plus the lot's credit type, project and vintage."""
    __slots__ = ()
    kind = "deposit"

    @property
    def instrument(self) -> str:
        return self.asset

    def to_json(self) -> dict:
        out = DepositInstruction.to_json(self)
        out.update(credit_type=self.credit_type, project=self.project, vintage=self.vintage)
        return out

    def check(self) -> None:
        DepositInstruction.check(self)
        problem = lot_problem(self.credit_type, self.project, self.vintage)
        if problem:
            raise ValueError(f"deposit {self.id}: {problem}")
        if self.asset != lot_key(self.project, self.vintage):
            raise ValueError(f"deposit {self.id}: asset {self.asset!r} is not its lot's key")

    def encode(self) -> bytes:
        return orjson.dumps(self.to_json())


RETIRE_STREAM = "RETIRE"          # retirements' own stream (MQTT topic settle/RETIRE)


class RetireInstruction(NamedTuple):
    """Credits retired (注销) from the market for good: `qty` t of holding `asset` (a lot key,
    or an instrument's pooled holding) leave `account` for the stated `purpose`; the ledger
    records the exchange's `certificate` (once) and moves them to `@retired`."""
    id: str                 # stable: "<exchange>-R<event seq>"
    seq: int
    stream_seq: int         # in the RETIRE stream
    retire_id: str          # the holder's reference
    account: str
    member: Optional[str]
    asset: str              # holding key
    qty: int
    purpose: str
    certificate: str        # "CCERX-RC-00000001"
    credit_type: Optional[str]
    project: Optional[str]
    vintage: Optional[int]
    trade_date: str
    ts: int

    kind = "retire"

    @property
    def instrument(self) -> str:    # the stream (MQTT topic) it travels on
        return RETIRE_STREAM

    def to_json(self) -> dict:
        return {"kind": "retire", "id": self.id, "seq": self.seq, "stream": RETIRE_STREAM,
                "stream_seq": self.stream_seq, "retire_id": self.retire_id,
                "account": self.account, "member": self.member, "asset": self.asset,
                "qty": self.qty, "purpose": self.purpose, "certificate": self.certificate,
                "credit_type": self.credit_type, "project": self.project,
                "vintage": self.vintage, "trade_date": self.trade_date, "ts": self.ts}

    @classmethod
    def from_json(cls, obj: dict) -> "RetireInstruction":
        try:
            inst = cls(obj["id"], obj["seq"], obj["stream_seq"], obj["retire_id"],
                       obj["account"], obj.get("member"), obj["asset"], obj["qty"],
                       obj["purpose"], obj["certificate"], obj.get("credit_type"),
                       obj.get("project"), obj.get("vintage"), obj["trade_date"], obj["ts"])
        except (KeyError, TypeError) as err:
            raise ValueError(f"not a retirement instruction: {err}") from None
        inst.check()
        return inst

    def check(self) -> None:
        for name in ("seq", "stream_seq", "qty", "ts"):
            if type(getattr(self, name)) is not int:
                raise ValueError(f"instruction {name} must be an integer")
        if self.qty <= 0:
            raise ValueError("a retirement's qty must be positive")
        for name in ("retire_id", "account", "asset", "certificate"):
            if type(getattr(self, name)) is not str or not getattr(self, name):
                raise ValueError(f"a retirement needs a {name}")
        if type(self.purpose) is not str:
            raise ValueError("a retirement's purpose is text")
        if self.project is not None:
            problem = lot_problem(self.credit_type, self.project, self.vintage)
            if problem or self.asset != lot_key(self.project, self.vintage):
                raise ValueError(f"retirement {self.id}: {problem or 'asset is not the lot key'}")

    def encode(self) -> bytes:
        return orjson.dumps(self.to_json())


CLEARING_STREAM = "CLEARING"      # the batches' own stream (MQTT topic settle/CLEARING)
BATCH_CLEARING_PROFILES = frozenset(("cbeex-2023",))


def clears_at_close(rules) -> bool:
    """Whether a rule profile clears the day's trades in one batch after the close (Art.27-28)
    instead of settling each trade at once."""
    return rules.name in BATCH_CLEARING_PROFILES


def _fen_map(values: dict, fmt) -> dict:
    return {k: (fmt(v) if k in _CASH_KEYS else v) for k, v in values.items()}


_CASH_KEYS = frozenset(("paid", "received", "fees", "gross"))


class ClearingBatch(NamedTuple):
    """The day's clearing result, sent at the close: the ledger confirms it by delivering every
    trade it covers (all batch trades with seq in (after_seq, seq)) in one transaction."""
    id: str                 # the batch id: "<exchange>-C<yyyymmdd>-<n>"
    seq: int
    stream_seq: int         # in the CLEARING stream
    trade_date: str
    settle_date: str
    number: int             # n: the n-th batch of this trade date
    after_seq: int          # the previous batch's seq (0: none)
    trades: int             # trades cleared
    participants: dict      # account -> {member, trades, bought {instr: t}, sold {instr: t},
                            #             paid, received, fees (fen)}
    totals: dict            # {gross (fen), fees (fen), qty {instr: t}}
    ts: int

    kind = "clearing"

    @property
    def instrument(self) -> str:    # the stream (MQTT topic) it travels on
        return CLEARING_STREAM

    def to_json(self) -> dict:
        return {"kind": "clearing", "id": self.id, "batch_id": self.id, "seq": self.seq,
                "stream": CLEARING_STREAM, "stream_seq": self.stream_seq,
                "trade_date": self.trade_date, "settle_date": self.settle_date,
                "number": self.number, "after_seq": self.after_seq, "trades": self.trades,
                "participants": {a: _fen_map(p, format_fen)
                                 for a, p in self.participants.items()},
                "totals": _fen_map(self.totals, format_fen), "ts": self.ts}

    @classmethod
    def from_json(cls, obj: dict) -> "ClearingBatch":
        try:
            batch = cls(obj["id"], obj["seq"], obj["stream_seq"], obj["trade_date"],
                        obj["settle_date"], obj["number"], obj["after_seq"], obj["trades"],
                        {a: _fen_map(p, parse_cny_to_fen)
                         for a, p in obj["participants"].items()},
                        _fen_map(obj["totals"], parse_cny_to_fen), obj["ts"])
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"not a clearing batch: {err}") from None
        batch.check()
        return batch

    def check(self) -> None:
        for name in ("seq", "stream_seq", "number", "after_seq", "trades", "ts"):
            if type(getattr(self, name)) is not int:
                raise ValueError(f"batch {name} must be an integer")
        if self.trades < 0 or self.after_seq >= self.seq:
            raise ValueError("a batch covers a non-negative number of earlier trades")
        if sum(p["trades"] for p in self.participants.values()) != 2 * self.trades:
            raise ValueError("a batch's participants do not add up to its trades")

    def encode(self) -> bytes:
        return orjson.dumps(self.to_json())


_LotBatchFields = NamedTuple("_LotBatchFields", [
    *((name, ClearingBatch.__annotations__[name]) for name in ClearingBatch._fields),
    ("deliveries", list)])


class LotClearingBatch(_LotBatchFields):
    """A clearing batch covering trades that delivered lots: a ClearingBatch plus
    `deliveries`, each lot trade's lots in stream order: [[instruction id, instrument,
    [[project, vintage, t], ...]], ...]; and (derived, in the edge form) `lots`, the tonnes
    delivered per holding key (lot key; the instrument's symbol for its pooled holding or
    default lot) over all its trades."""
    __slots__ = ()
    kind = "clearing"

    @property
    def instrument(self) -> str:
        return CLEARING_STREAM

    @property
    def lots(self) -> dict:
        return batch_lot_totals(self.totals["qty"], self.deliveries)

    def to_json(self) -> dict:
        out = ClearingBatch.to_json(self)
        out["lots"] = self.lots
        out["deliveries"] = [{"id": i, "instrument": instrument, "lots": lots_json(lots)}
                             for i, instrument, lots in self.deliveries]
        return out

    def check(self) -> None:
        ClearingBatch.check(self)
        if not isinstance(self.deliveries, list) or not self.deliveries:
            raise ValueError("a lot batch lists its deliveries")
        for entry in self.deliveries:
            if (not isinstance(entry, list) or len(entry) != 3
                    or entry[1] not in self.totals["qty"]):
                raise ValueError("a batch delivery is [id, instrument of the batch, lots]")
            lots = _lots_from_row(entry[2])
            problem = _lots_problem(lots, sum(t for _, _, t in lots) if lots else 0)
            if problem:
                raise ValueError(f"batch {self.id}: {entry[0]}: {problem}")
        if any(v < 0 for v in self.lots.values()):
            raise ValueError("a batch delivers more lots of an instrument than its tonnes")

    def encode(self) -> bytes:
        return orjson.dumps(self.to_json())


Instruction = (SettlementInstruction | BatchTradeInstruction | LotTradeInstruction
               | DepositInstruction | LotDepositInstruction | ClearingBatch | LotClearingBatch
               | RetireInstruction)


def instruction_from_json(obj: dict) -> Instruction:
    """Any kind from its edge form (trades carry no "kind": older consumers' format); raises
    ValueError, and only that, on anything malformed."""
    if not isinstance(obj, dict):
        raise ValueError("an instruction is a JSON object")
    try:
        return _instruction_from_json(obj)
    except (KeyError, TypeError, AttributeError) as err:   # a field of the wrong shape
        raise ValueError(f"malformed instruction {obj.get('id')!r}: {err!r}") from None


def _instruction_from_json(obj: dict) -> Instruction:
    kind = obj.get("kind", "trade")
    if kind == "deposit":
        inst = DepositInstruction.from_json(obj)
        if "project" in obj:
            inst = LotDepositInstruction(*inst, obj.get("credit_type"), obj["project"],
                                         obj.get("vintage"))
            inst.check()
        return inst
    if kind == "clearing":
        batch = ClearingBatch.from_json(obj)
        if "deliveries" in obj:
            try:
                deliveries = [[d["id"], d["instrument"], _lots_from_json(d["lots"])]
                              for d in obj["deliveries"]]
            except (KeyError, TypeError):
                raise ValueError("a batch delivery is {id, instrument, lots}") from None
            batch = LotClearingBatch(*batch, [
                [i, instrument, [list(lot) for lot in lots]] for i, instrument, lots in deliveries])
            batch.check()
            if "lots" in obj and obj["lots"] != batch.lots:
                raise ValueError(f"batch {batch.id}: its tonnes per lot are not its deliveries'")
        return batch
    if kind == "retire":
        return RetireInstruction.from_json(obj)
    if kind == "trade":
        inst = SettlementInstruction.from_json(obj)
        if "lots" in obj:
            inst = LotTradeInstruction(*inst, obj.get("delivery", "now"),
                                       _lots_from_json(obj["lots"]))
            inst.check()
        elif "delivery" in obj:
            inst = BatchTradeInstruction(*inst, obj["delivery"])
            inst.check()
        return inst
    raise ValueError(f"unknown instruction kind {kind!r}")


_ROW_KINDS = {len(k._fields): k for k in (SettlementInstruction, BatchTradeInstruction,
                                          LotTradeInstruction, DepositInstruction,
                                          LotDepositInstruction, ClearingBatch, LotClearingBatch,
                                          RetireInstruction)}
assert len(_ROW_KINDS) == 8, "instruction kinds are told apart by their row lengths"


def instruction_from_row(row) -> Instruction:
    """Any kind from its journal row (the tuple of its fields; the lengths differ: a pooled
    trade's or deposit's row is the row it always was)."""
    kind = _ROW_KINDS[len(row)]
    if kind is LotTradeInstruction:
        row = (*row[:-1], _lots_from_row(row[-1]))
    return kind(*row)




def trade_date(ts: int) -> str:
    """ISO trade date (Beijing) of a timestamp in ns."""
    return _dt.datetime.fromtimestamp(ts // 10 ** 9, CHINA).date().isoformat()


class SettlementConfig(NamedTuple):
    exchange_id: str = "CCERX"
    cycle_days: int = 0       # T+0 by default: settle on the trade date
    holidays: tuple[str, ...] = ()   # ISO dates skipped by T+n, as the trading calendar does

    def calendar(self) -> TradingCalendar:
        return TradingCalendar(holidays=[_dt.date.fromisoformat(d) for d in self.holidays])


class InstructionMaker:
    """Turns trades into instructions, numbering the streams. Its counters are part of the
    durable state (snapshotted alongside the exchange)."""

    def __init__(self, config: SettlementConfig = SettlementConfig(), next_seq: int = 1,
                 stream_seqs: Optional[dict[str, int]] = None, *, batch_clearing: bool = False,
                 clearing: Optional[dict] = None):
        """`batch_clearing` (see clears_at_close): trades become BatchTradeInstructions and
        make_batch() clears them; `clearing` is that state as state() wrote it."""
        self.config = config
        self.next_seq = next_seq
        self.stream_seqs: dict[str, int] = dict(stream_seqs or {})
        self._dates: dict[int, tuple[str, str]] = {}   # day number -> (trade, settle) dates
        self._calendar = config.calendar()
        self.batch_clearing = batch_clearing
        clearing = clearing or {}
        self._batch_after = clearing.get("after_seq", 0)     # the last batch's seq
        self._batch_last = tuple(clearing.get("last", ("", 0)))   # (trade date, number)
        self._batch_trades = clearing.get("trades", 0)       # trades since the last batch
        self._batch_participants: dict = clearing.get("participants", {})
        self._batch_totals: dict = clearing.get("totals", {"gross": 0, "fees": 0, "qty": {}})
        # the lot trades since the last batch: [[instruction id, instrument, lots], ...]
        self._batch_deliveries: list = clearing.get("deliveries", [])

    def _dates_for(self, ts: int) -> tuple[str, str]:
        day_key = (ts + 8 * 3600 * 10 ** 9) // (86400 * 10 ** 9)
        dates = self._dates.get(day_key)
        if dates is None:
            trade = _dt.datetime.fromtimestamp(ts // 10 ** 9, CHINA).date()
            settle = self._calendar.trading_days_after(trade, self.config.cycle_days)
            dates = self._dates[day_key] = (trade.isoformat(), settle.isoformat())
            if len(self._dates) > 64:
                self._dates.clear()
                self._dates[day_key] = dates
        return dates

    def _number(self, stream: str) -> tuple[int, int]:
        """The next (seq, stream_seq): every instruction takes one of each, in order."""
        stream_seq = self.stream_seqs.get(stream, 0) + 1
        self.stream_seqs[stream] = stream_seq
        seq = self.next_seq
        self.next_seq = seq + 1
        return seq, stream_seq

    @staticmethod
    def _member(accounts, account_id: str) -> Optional[str]:
        account = accounts.get(account_id) if accounts is not None else None
        return account.member if account is not None else None

    def make(self, trade: TradeExecuted, spec: InstrumentSpec, accounts) -> SettlementInstruction:
        instrument = trade.instrument
        seq, stream_seq = self._number(instrument)
        buyer_member = self._member(accounts, trade.buy_account)
        seller_member = self._member(accounts, trade.sell_account)
        trade_date, settle_date = self._dates_for(trade.ts)
        inst = SettlementInstruction(
            f"{self.config.exchange_id}-T{trade.trade_id}", seq, stream_seq, trade.trade_id,
            instrument, trade.qty, trade.price * spec.tick_units,
            trade.price * spec.tick_fen * trade.qty, trade.buy_fee, trade.sell_fee,
            trade.buy_account, trade.sell_account, buyer_member, seller_member, trade_date,
            settle_date, trade.ts)
        if trade.lots:
            inst = LotTradeInstruction(*inst, "batch" if self.batch_clearing else "now",
                                       trade.lots)
            if self.batch_clearing:
                self._clear_later(inst)
        elif self.batch_clearing:
            inst = BatchTradeInstruction(*inst, "batch")
            self._clear_later(inst)
        return inst

    # ---------------------------------------------------------------- day-end clearing
    def _clear_later(self, inst) -> None:
        """Add a batch trade to what the next batch clears (gross, per participant)."""
        self._batch_trades += 1
        totals = self._batch_totals
        totals["gross"] += inst.gross_fen
        totals["fees"] += inst.buy_fee + inst.sell_fee
        totals["qty"][inst.instrument] = totals["qty"].get(inst.instrument, 0) + inst.qty
        if inst.lots:
            self._batch_deliveries.append([inst.id, inst.instrument,
                                           [list(lot) for lot in inst.lots]])
        for account, member, side, cash_key, cash, fee in (
                (inst.buyer, inst.buyer_member, "bought", "paid", inst.gross_fen, inst.buy_fee),
                (inst.seller, inst.seller_member, "sold", "received", inst.gross_fen,
                 inst.sell_fee)):
            entry = self._batch_participants.get(account)
            if entry is None:
                entry = self._batch_participants[account] = {
                    "member": member, "trades": 0, "bought": {}, "sold": {}, "paid": 0,
                    "received": 0, "fees": 0}
            entry["trades"] += 1
            entry[side][inst.instrument] = entry[side].get(inst.instrument, 0) + inst.qty
            entry[cash_key] += cash
            entry["fees"] += fee

    def make_batch(self, ts: int) -> ClearingBatch:
        """The close's clearing batch: every batch trade since the previous batch."""
        trade_date, settle_date = self._dates_for(ts)
        number = self._batch_last[1] + 1 if self._batch_last[0] == trade_date else 1
        seq, stream_seq = self._number(CLEARING_STREAM)
        participants = {a: self._batch_participants[a]
                        for a in sorted(self._batch_participants)}
        totals = self._batch_totals
        totals["qty"] = dict(sorted(totals["qty"].items()))
        batch = ClearingBatch(
            f"{self.config.exchange_id}-C{trade_date.replace('-', '')}-{number}", seq,
            stream_seq, trade_date, settle_date, number, self._batch_after, self._batch_trades,
            participants, totals, ts)
        if self._batch_deliveries:
            batch = LotClearingBatch(*batch, self._batch_deliveries)
        self._batch_closed(batch)
        return batch

    def _batch_closed(self, batch: ClearingBatch) -> None:
        self._batch_after = batch.seq
        self._batch_last = (batch.trade_date, batch.number)
        self._batch_trades = 0
        self._batch_participants = {}
        self._batch_totals = {"gross": 0, "fees": 0, "qty": {}}
        self._batch_deliveries = []

    def observe(self, row) -> None:
        """Recovery: follow an instruction row journaled after the snapshot this maker was
        restored from (its numbering is restored from the journal's records)."""
        if not self.batch_clearing:
            return
        inst = instruction_from_row(row)
        kind = type(inst)
        if kind is BatchTradeInstruction or (kind is LotTradeInstruction
                                             and inst.delivery == "batch"):
            self._clear_later(inst)
        elif kind is ClearingBatch or kind is LotClearingBatch:
            self._batch_closed(inst)

    def make_deposit(self, event: Deposited, accounts) -> DepositInstruction:
        seq, stream_seq = self._number(event.asset)
        inst = DepositInstruction(f"{self.config.exchange_id}-D{event.seq}", seq, stream_seq,
                                  event.deposit_id, event.account,
                                  self._member(accounts, event.account), event.asset,
                                  event.amount, self._dates_for(event.ts)[0], event.ts)
        if event.project is not None:
            inst = LotDepositInstruction(*inst, event.credit_type, event.project, event.vintage)
        return inst

    def make_retirement(self, event: Retired, accounts) -> RetireInstruction:
        """A retirement's instruction (id `<exchange>-R<event seq>`, stream RETIRE)."""
        seq, stream_seq = self._number(RETIRE_STREAM)
        return RetireInstruction(f"{self.config.exchange_id}-R{event.seq}", seq, stream_seq,
                                 event.retire_id, event.account,
                                 self._member(accounts, event.account), event.asset, event.qty,
                                 event.purpose, event.certificate, event.credit_type,
                                 event.project, event.vintage, self._dates_for(event.ts)[0],
                                 event.ts)

    def state(self) -> dict:
        out = {"next_seq": self.next_seq, "stream_seqs": dict(sorted(self.stream_seqs.items()))}
        if self.batch_clearing:
            out["clearing"] = {"after_seq": self._batch_after, "last": list(self._batch_last),
                               "trades": self._batch_trades,
                               "participants": self._batch_participants,
                               "totals": self._batch_totals}
            if self._batch_deliveries:          # (absent without lots: as before lots)
                out["clearing"]["deliveries"] = self._batch_deliveries
        return out


def batch_lot_totals(qty: dict, deliveries: list) -> dict:
    """Tonnes per holding key a batch delivers: its tonnes per instrument, of which the lot
    trades' (`deliveries`) go to their lots' keys (a default lot stays under the instrument's
    symbol); sorted, zeros left out."""
    out = dict(qty)
    for _, instrument, lots in deliveries:
        for project, vintage, t in lots:
            out[instrument] -= t
            key = instrument if project is None else lot_key(project, vintage)
            out[key] = out.get(key, 0) + t
    return {k: v for k, v in sorted(out.items()) if v}


# ---------------------------------------------------------------------------- outbox
class Outbox:
    """Instructions that are durable (in the journal) but not yet confirmed by every relay.

    The engine thread `publish()`es after each group commit; relay threads `read()` after their
    cursor and `wait()` for more. Memory holds only what some relay still has to deliver."""

    def __init__(self, pending: Iterable[SettlementInstruction] = (), last_seq: int = 0):
        self._items: list[SettlementInstruction] = list(pending)
        self._base = self._items[0].seq if self._items else last_seq + 1   # seq of _items[0]
        self.last_seq = self._items[-1].seq if self._items else last_seq
        self._cond = threading.Condition()
        self._closed = False

    def publish(self, instructions: list[SettlementInstruction]) -> None:
        if not instructions:
            return
        with self._cond:
            if instructions[0].seq != self.last_seq + 1:
                raise AssertionError(f"outbox gap: {instructions[0].seq} after {self.last_seq}")
            if not self._items:
                self._base = instructions[0].seq
            self._items.extend(instructions)
            self.last_seq = instructions[-1].seq
            self._cond.notify_all()

    def read(self, after: int, limit: int) -> list[SettlementInstruction]:
        with self._cond:
            start = max(after + 1 - self._base, 0)
            if after + 1 < self._base and self._items:
                raise AssertionError(f"outbox no longer holds instruction {after + 1}")
            return self._items[start:start + limit]

    def wait(self, after: int, timeout: float) -> bool:
        """Block until an instruction after `after` exists (True) or timeout/close (False)."""
        with self._cond:
            if self.last_seq > after:
                return True
            if self._closed:
                return False
            self._cond.wait(timeout)
            return self.last_seq > after

    def trim(self, upto: int) -> None:
        """Forget instructions with seq <= upto (every relay has confirmed them)."""
        with self._cond:
            drop = upto + 1 - self._base
            if drop > 0:
                del self._items[:drop]
                self._base += drop

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


# ---------------------------------------------------------------------------- cursor
class Cursor:
    """A relay's durable position: the seq of the last instruction its adapter confirmed."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.value = 0
        if self.path.exists():
            self.value = orjson.loads(self.path.read_bytes())["confirmed"]

    def advance(self, value: int) -> None:
        if value <= self.value:
            return
        write_atomic(self.path, orjson.dumps({"confirmed": value}))
        self.value = value


# ---------------------------------------------------------------------------- relay
class Relay:
    """Delivers the outbox to one adapter (see ledger/base.py), cursor after confirmation.

    `pump()` delivers one batch synchronously; `start()` runs pumps in a daemon thread that
    waits on the outbox and backs off (up to `max_backoff` s) while the adapter fails. The
    engine thread never waits for a relay.

    Confirmation is the adapter's: `deliver()` returns only when the batch is applied on the
    far side. For an embedded ledger that is its commit; for MQTT it is the remote consumer's
    confirmation that the batch is in its ledger (a broker's PUBACK is not enough), which can
    take as long as that consumer is away. An adapter that may wait that long has `cancel()`,
    which `stop()` calls so a waiting `deliver()` raises and the thread ends; what it held stays
    after the cursor and is delivered again on the next start."""

    def __init__(self, name: str, outbox: Outbox, adapter, cursor_path: Path,
                 batch: int = 500, max_backoff: float = 5.0, on_confirm=None, on_idle=None):
        self.name = name
        self.outbox = outbox
        self.adapter = adapter
        self.cursor = Cursor(cursor_path)
        self.batch = batch
        self.max_backoff = max_backoff
        self.on_confirm = on_confirm      # called in the relay's thread after each confirm
        self.on_idle = on_idle            # ... and when there is nothing to deliver
        # Seconds to let instructions gather after a wake-up before delivering (0: at once).
        # A relay in the engine's process pays a ledger transaction per delivery and holds
        # the GIL meanwhile; lingering a few ms makes one delivery of many instructions.
        self.linger = 0.0
        self.last_error: Optional[BaseException] = None
        self.failures = 0
        self.delivered = 0
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._idle = threading.Condition()

    def pump(self) -> int:
        """Deliver the next batch after the cursor; returns how many were confirmed."""
        batch = self.outbox.read(self.cursor.value, self.batch)
        if not batch:
            return 0
        self.adapter.deliver(batch)          # raises if not confirmed: cursor stays put
        self.cursor.advance(batch[-1].seq)
        self.delivered += len(batch)
        if self.on_confirm is not None:
            self.on_confirm()
        return len(batch)

    def drain(self) -> None:
        """Deliver everything published so far, in this thread (raises on adapter failure)."""
        while self.pump():
            pass

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"relay-{self.name}",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            if not self.outbox.wait(self.cursor.value, 0.2):
                if self.on_idle is not None:
                    try:
                        self.on_idle()
                    except Exception as err:
                        self.last_error = err
                with self._idle:
                    self._idle.notify_all()
                continue
            if self.linger:
                self._stop.wait(self.linger)
            try:
                self.pump()
                backoff = 0.05
                self.last_error = None
            except Exception as err:   # adapter down: keep everything, retry later
                self.last_error = err
                self.failures += 1
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until the cursor reached the outbox's last instruction (True) or timeout."""
        deadline = time.monotonic() + timeout
        while self.cursor.value < self.outbox.last_seq:
            if self._thread is None:
                self.drain()
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._idle:
                self._idle.wait(min(remaining, 0.05))
        return True

    def stop(self) -> None:
        self._stop.set()
        cancel = getattr(self.adapter, "cancel", None)
        if cancel is not None and self._thread is not None:
            cancel()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
