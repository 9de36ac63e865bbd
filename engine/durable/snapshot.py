"""Explicit, versioned snapshots of the exchange state; they bound recovery time.

A snapshot is the full state that decides future behaviour (what `Exchange.state_hash()`
digests): the rule profile, specs, every resting order in FIFO order with its reservation, next ids, the day's
VWAP counters, seen order ids and every account, plus the durable layer's own counters
(settlement stream numbers). It is written as

    b"CCERXSNP" | u16 version | u32 crc32(payload) | u64 payload length | orjson payload

to a temporary file, fsynced and renamed to `snapshot-<command seq>.snap`, so a snapshot
either exists whole or not at all. Restoring rebuilds the books by re-adding orders level by
level (time priority preserved) and `restore()` checks the result against the state hash
recorded at write time: a snapshot that would not reproduce the exact state is refused
rather than trusted.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Optional

import orjson

from ccerx.engine.core.book import Order
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.durable.journal import spec_from_row, spec_to_row
from ccerx.engine.durable.files import write_atomic
from ccerx.engine.core.lots import Lot
from ccerx.engine.core.risk import Account, Accounts
from ccerx.engine.core.rules import CONTINUOUS, RuleProfile
from ccerx.engine.core.types import ParticipantType, Side

MAGIC = b"CCERXSNP"
VERSION = 1
HEAD = struct.Struct("<HIQ")
PREFIX, SUFFIX = "snapshot-", ".snap"
_SIDES = {"buy": Side.BUY, "sell": Side.SELL}


class SnapshotError(Exception):
    pass


def exchange_state(ex: Exchange) -> dict:
    books = {}
    for symbol, book in ex.books.items():
        sides = []
        for book_side in (book.bids, book.asks):
            levels = []
            for level in book_side.iter_levels():
                # (a contract sell's lot reservation, when it has one, as a 7th field)
                levels.append([level.price, [[o.order_id, o.account, o.open_qty, o.filled_qty,
                                              o.reserved, o.owner,
                                              *([o.lots] if o.lots is not None else [])]
                                             for o in level.orders()]])
            sides.append(levels)
        books[symbol] = sides
    accounts = None
    if ex.accounts is not None:
        accounts = {"fee_ppm": ex.accounts.fee_ppm, "closes": ex.accounts.closes, "rows": [
            [a.account, a.participant_type.value, a.member, a.cash, a.cash_reserved, a.credits,
             a.credits_reserved, a.bought_today, a.fees_paid, a.last_bought, a.last_sold,
             *([a.retired] if a.retired else [])]
            for a in ex.accounts.by_id.values()]}
        for name in ("lot_bought", "lot_sold"):   # (absent unless Art.29 restricts a lot)
            days = {a.account: dict(sorted(getattr(a, name).items()))
                    for a in ex.accounts.by_id.values() if getattr(a, name)}
            if days:
                accounts[name] = days
        if ex.accounts.lots:                                 # (absent without lots)
            accounts["lots"] = [list(lot) for lot in ex.accounts.lots.values()]
        if ex.accounts.limits or ex.accounts.report_ppm:     # (absent unless set)
            accounts["limits"] = ex.accounts.limits_json()
            accounts["report_ppm"] = ex.accounts.report_ppm
    return {"rules": ex.rules.to_json(),"specs": [spec_to_row(s) for s in ex.specs.values()],
            "book_order": list(ex.books), "books": books,
            "seq": ex.seq, "next_trade_id": ex.next_trade_id, "last_ts": ex.last_ts,
            "fee_ppm": ex.fee_ppm, "seen": sorted(ex.seen_order_ids),
            "trading_open": ex.trading_open, "last_close_ts": ex.last_close_ts,
            "deposit_ids": sorted(ex.deposit_ids), "halted": ex.halted,
            **({"retire_ids": sorted(ex.retire_ids)} if ex.retire_ids else {}),
            **({"closes": ex.closes} if ex.closes else {}),
            **({"after_close": True} if ex.after_close else {}),
            "day_stats": ex.day_stats, "accounts": accounts,
            # (absent unless the operator restricted someone)
            **({"restrictions": sorted([scope, target, side] for (scope, target), side
                                       in ex.restrictions.items())} if ex.restrictions else {})}


def exchange_from_state(state: dict) -> Exchange:
    accounts = None
    if state["accounts"] is not None:
        accounts = Accounts(fee_ppm=state["accounts"]["fee_ppm"])
        accounts.closes = state["accounts"].get("closes", 0)     # absent before rule profiles
        for row in state["accounts"]["rows"]:
            (name, ptype, member, cash, cash_reserved, credits, credits_reserved, bought_today,
             fees_paid) = row[:9]
            last_bought, last_sold = row[9:11] if len(row) > 9 else ({}, {})
            retired = row[11] if len(row) > 11 else {}
            accounts.add(Account(name, ParticipantType(ptype), member, cash, cash_reserved,
                                 credits, credits_reserved, bought_today, fees_paid,
                                 last_bought, last_sold, retired))
        for name, days in state["accounts"].get("lot_bought", {}).items():
            accounts.by_id[name].lot_bought = dict(days)
        for name, days in state["accounts"].get("lot_sold", {}).items():
            accounts.by_id[name].lot_sold = dict(days)
        # a snapshot of the tonne-level Art.29 (held_back: key -> [[day, t], ...] bought on
        # earlier days of the period; today's in bought_today): the lot was bought then
        for name, held_back in state["accounts"].get("held_back", {}).items():
            lot_bought = accounts.by_id[name].lot_bought
            for key, days in held_back.items():
                lot_bought[key] = max(lot_bought.get(key, 0), *(day for day, _ in days))
        for credit_type, project, vintage in state["accounts"].get("lots", []):
            accounts.register_lot(Lot(credit_type, project, vintage))
    specs = [spec_from_row(row) for row in state["specs"]]
    # the rule profile: absent in snapshots written before profiles existed (continuous)
    rules = RuleProfile.from_json(state["rules"]) if "rules" in state else CONTINUOUS
    ex = Exchange(specs, accounts, state["fee_ppm"], rules)
    # books in their original insertion order (instrument iteration order is behaviour:
    # end of day walks the books in this order)
    ex.books = {symbol: ex.books[symbol] for symbol in state["book_order"]}
    ex.specs = {symbol: ex.specs[symbol] for symbol in state["book_order"]}
    for symbol, (bids, asks) in state["books"].items():
        book = ex.books[symbol]
        for side, levels in ((Side.BUY, bids), (Side.SELL, asks)):
            for price, orders in levels:
                for order_id, account, open_qty, filled_qty, reserved, owner, *lots in orders:
                    order = Order(order_id, account, side, price, open_qty, owner)
                    order.filled_qty = filled_qty
                    order.reserved = reserved
                    if lots:
                        order.lots = [list(entry) for entry in lots[0]]
                    book.add(order)
    ex.seq = state["seq"]
    ex.next_trade_id = state["next_trade_id"]
    ex.last_ts = state["last_ts"]
    ex.seen_order_ids = set(state["seen"])
    ex.trading_open = state.get("trading_open", True)      # absent in snapshots before v0.1 status
    ex.last_close_ts = state.get("last_close_ts", 0)
    ex.deposit_ids = set(state.get("deposit_ids", ()))     # absent before deposits existed
    ex.retire_ids = set(state.get("retire_ids", ()))       # ... before retirements
    ex.closes = state.get("closes", 0)                      # ... and when no day has closed
    ex.after_close = state.get("after_close", False)
    ex.halted = state.get("halted", False)                  # ... and before halts
    ex.day_stats = {symbol: list(stats) for symbol, stats in state["day_stats"].items()}
    ex.restrictions = {(scope, target): side
                       for scope, target, side in state.get("restrictions", ())}
    if ex.accounts is not None:
        ex.accounts.limits = {ParticipantType(t): (per, total)
                              for t, per, total in state["accounts"].get("limits", ())}
        ex.accounts.report_ppm = state["accounts"].get("report_ppm", 0)
        ex.accounts.recount_open_buys(ex.books)
    return ex


def snapshot_path(directory: Path, seq: int) -> Path:
    return Path(directory) / f"{PREFIX}{seq:016d}{SUFFIX}"


def list_snapshots(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for path in Path(directory).glob(f"{PREFIX}*{SUFFIX}"):
        stem = path.name[len(PREFIX):-len(SUFFIX)]
        if stem.isdigit():
            found.append((int(stem), path))
    return sorted(found)


def write(directory: Path, seq: int, ex: Exchange, extra: dict) -> Path:
    """Write the state after command `seq` (atomically); `extra` is the durable layer's state."""
    payload = orjson.dumps({"version": VERSION, "seq": seq, "exchange": exchange_state(ex),
                            "state_hash": ex.state_hash(), "extra": extra},
                           option=orjson.OPT_NON_STR_KEYS)
    path = snapshot_path(directory, seq)
    write_atomic(path, [MAGIC + HEAD.pack(VERSION, zlib.crc32(payload), len(payload)), payload])
    return path


def read(path: Path) -> dict:
    data = Path(path).read_bytes()
    if data[:len(MAGIC)] != MAGIC or len(data) < len(MAGIC) + HEAD.size:
        raise SnapshotError(f"{path.name}: not a snapshot")
    version, crc, length = HEAD.unpack_from(data, len(MAGIC))
    if version != VERSION:
        raise SnapshotError(f"{path.name}: snapshot version {version}, this build reads {VERSION}")
    payload = data[len(MAGIC) + HEAD.size:]
    if len(payload) != length or zlib.crc32(payload) != crc:
        raise SnapshotError(f"{path.name}: truncated or corrupt")
    return orjson.loads(payload)


def restore(path: Path) -> tuple[int, Exchange, dict]:
    """(command seq, exchange, extra) from a snapshot file; raises SnapshotError."""
    doc = read(path)
    ex = exchange_from_state(doc["exchange"])
    if ex.state_hash() != doc["state_hash"]:
        raise SnapshotError(f"{Path(path).name}: restored state does not match its state hash "
                            f"(the exchange gained state this snapshot format does not hold)")
    return doc["seq"], ex, doc["extra"]


def latest_valid(directory: Path, at_most: Optional[int] = None):
    """The newest snapshot that restores cleanly (seq <= at_most if given), and the ones
    skipped as (path, reason). Returns (None, skipped) if there is none."""
    skipped = []
    for seq, path in reversed(list_snapshots(directory)):
        if at_most is not None and seq > at_most:
            skipped.append((path, f"beyond the journal's end ({at_most})"))
            continue
        try:
            return restore(path), skipped
        except (SnapshotError, ValueError, KeyError, TypeError) as err:
            skipped.append((path, str(err)))
    return None, skipped
