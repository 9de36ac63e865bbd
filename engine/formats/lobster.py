"""LOBSTER import: NASDAQ message files -> ccerx commands for one CCER credit type.

LOBSTER (lobsterdata.com) message files have one event per row, no header:
    Time, Type, OrderID, Size, Price, Direction
Time is seconds after midnight with up to 9 decimals; Price is dollars x 10,000; Direction
is 1 for a buy limit order and -1 for a sell limit order (for executions: the side of the
*resting* order that was hit). The order book file has, per row, (ask price, ask size, bid
price, bid size) for levels 1..N, and row k is the book *after* message k.

Mapping (one credit type, `instrument`):
  type 1 new limit order   -> new limit day order "L<OrderID>", account LOBSTER-BUY or
                              LOBSTER-SELL (by Direction), same size in tonnes
  type 2 partial cancel    -> amend of that order to its new total quantity (keeps priority)
  type 3 delete            -> cancel
  type 4 visible execution -> the aggressor is not in the file, so a synthetic IOC limit
                              order of account LOBSTER-TAKER on the opposite side, at the
                              execution price, for the executed size; in price-time priority
                              it hits the head of that level, which is the executed order
                              when our book mirrors LOBSTER's
  type 5 hidden execution  -> skipped: the engine has no hidden orders
  type 6 cross trade       -> skipped: auction crosses are not part of continuous trading
  type 7 trading halt      -> skipped: the engine has no halt state; commands keep flowing
Prices: `price_map="shift"` (default) keeps tick distances and anchors the opening price
(mid of the first snapshot, or the first new order's price) at the instrument's reference
price: units = ref + (price - anchor) * 100 (one LOBSTER cent = one 0.01 CNY tick). Stock
moves beyond the CCER band (+/- 10%, about 620 ticks for CCER-AFF) then become
price_out_of_band rejects; sub-penny prices become off-tick rejects. `price_map="direct"`
uses the dollar price as CNY (price / 10,000).
Opening book: with the order book file, its first row minus the effect of message 1 is
seeded as one order per level ("SEED-B1", "SEED-A1", ... of accounts LOBSTER-SEED-BUY /
-SELL) before the messages. Orders that existed before the file began have ids the
messages never introduced; their cancels, partial cancels and executions are applied to
the seed order of their price level. Without an order book file, cancels and partial
cancels of such orders are skipped (counted as unknown_order).
Not representable: hidden orders and their executions, auction crosses, halts, the
identity of aggressors (synthesised), the exact member of a pre-existing order inside a
level (seed orders aggregate a level), sizes above 99,999 t (rejected as qty_above_max).
"""
from __future__ import annotations

import csv
import os
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson

from ccerx.engine.core.types import DEFAULT_INSTRUMENTS, InstrumentSpec

from ccerx.engine.core.types import format_price_units
from ccerx.engine.formats.binary import is_binary_path, ndjson_to_binary

BEIJING = timezone(timedelta(hours=8))
LOBSTER_TICK = 100            # one cent in LOBSTER price units ($ x 10,000)
DUMMY_PRICE = 9_999_999_999   # LOBSTER's filler for empty book levels
NEW, PARTIAL_CANCEL, DELETE, EXECUTION, HIDDEN_EXECUTION, CROSS, HALT = range(1, 8)


class LobsterError(ValueError):
    pass


def parse_time_ns(text: str) -> int:
    """'34200.004241176' -> nanoseconds after midnight, exactly (no floats)."""
    whole, _, frac = text.strip().partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()) or len(frac) > 9:
        raise LobsterError(f"bad LOBSTER time {text!r}")
    return int(whole) * 1_000_000_000 + int(frac.ljust(9, "0") or 0)


def _int(text: str, what: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise LobsterError(f"bad LOBSTER {what} {text!r}") from None


def read_messages(path) -> list[tuple[int, int, int, int, int, int]]:
    """[(time_ns, type, order_id, size, price, direction)]"""
    out = []
    with open(path, newline="") as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 6:
                raise LobsterError(f"{path}:{lineno}: expected 6 columns, got {len(row)}")
            try:
                out.append((parse_time_ns(row[0]), _int(row[1], "type"), _int(row[2], "order id"),
                            _int(row[3], "size"), _int(row[4], "price"),
                            _int(row[5], "direction")))
            except LobsterError as err:
                raise LobsterError(f"{path}:{lineno}: {err}") from None
    return out


def read_first_book(path) -> tuple[dict[int, int], dict[int, int]]:
    """First order book row -> ({bid price: size}, {ask price: size})."""
    with open(path, newline="") as f:
        for row in csv.reader(f):
            if row and "".join(row).strip():
                break
        else:
            raise LobsterError(f"{path}: empty order book file")
    if len(row) % 4:
        raise LobsterError(f"{path}: order book rows need 4 columns per level")
    values = [_int(v, "book value") for v in row]
    bids, asks = {}, {}
    for i in range(0, len(values), 4):
        ask_p, ask_s, bid_p, bid_s = values[i:i + 4]
        if ask_s > 0 and abs(ask_p) < DUMMY_PRICE:
            asks[ask_p] = ask_s
        if bid_s > 0 and abs(bid_p) < DUMMY_PRICE:
            bids[bid_p] = bid_s
    return bids, asks


def _midnight_ns(date: str) -> int:
    try:
        day = datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=BEIJING)
    except ValueError:
        raise LobsterError(f"bad date {date!r}; expected YYYY-MM-DD") from None
    return int(day.timestamp()) * 1_000_000_000


def lobster_commands(messages, instrument: InstrumentSpec, *, book=None,
                     price_map: str = "shift", date: str = "2024-01-22"):
    """Map messages (and an optional first book row) to NDJSON command dicts.

    Returns (commands, counts, skipped)."""
    symbol = instrument.symbol
    day0 = _midnight_ns(date)
    counts = {"seed": 0, "new": 0, "cancel": 0, "amend": 0, "taker": 0}
    skipped = {"hidden_execution": 0, "cross_trade": 0, "halt": 0, "unknown_order": 0,
               "bad_type": 0}
    if book is not None:
        bids, asks = (dict(book[0]), dict(book[1]))
        if messages:   # the snapshot is the book after message 1: undo message 1
            _, kind, _, size, price, direction = messages[0]
            side = bids if direction == 1 else asks
            if kind == NEW:
                side[price] = side.get(price, 0) - size
            elif kind in (PARTIAL_CANCEL, DELETE, EXECUTION):
                side[price] = side.get(price, 0) + size
            bids = {p: s for p, s in bids.items() if s > 0}
            asks = {p: s for p, s in asks.items() if s > 0}
    else:
        bids = asks = {}
    if price_map == "shift":
        if bids and asks:
            anchor = (max(bids) + min(asks)) // 2 // LOBSTER_TICK * LOBSTER_TICK
        else:
            first = next((m[4] for m in messages if m[1] == NEW), None)
            anchor = first if first is not None else (max(bids) if bids else
                                                      min(asks) if asks else 0)
        ref_units = instrument.ref_ticks * instrument.tick_units
        units_per_lobster = instrument.tick_units // LOBSTER_TICK

        def to_text(price: int) -> str:
            return format_price_units(ref_units + (price - anchor) * units_per_lobster)
    elif price_map == "direct":
        def to_text(price: int) -> str:
            return format_price_units(price * 100)
    else:
        raise LobsterError(f"unknown price map {price_map!r}")

    out = []
    ts0 = day0 + (messages[0][0] if messages else 0)
    # seed orders: {(direction, price): [order_id, original qty, cancelled, filled]}
    seeds: dict[tuple[int, int], list] = {}
    for direction, levels, tag in ((1, bids, "B"), (-1, asks, "A")):
        for n, price in enumerate(sorted(levels, reverse=direction == 1), 1):
            oid = f"SEED-{tag}{n}"
            seeds[(direction, price)] = [oid, levels[price], 0, 0]
            out.append({"op": "new", "ts": ts0, "order_id": oid,
                        "account": "LOBSTER-SEED-BUY" if direction == 1 else "LOBSTER-SEED-SELL",
                        "instrument": symbol, "side": "buy" if direction == 1 else "sell",
                        "type": "limit", "price": to_text(price), "qty": levels[price]})
            counts["seed"] += 1
    live: dict[int, list] = {}   # LOBSTER id -> [order_id, original qty, cancelled, filled]
    taker_n = 0
    for time_ns, kind, lob_id, size, price, direction in messages:
        ts = day0 + time_ns
        if kind == NEW:
            oid = f"L{lob_id}"
            live[lob_id] = [oid, size, 0, 0]
            out.append({"op": "new", "ts": ts, "order_id": oid,
                        "account": "LOBSTER-BUY" if direction == 1 else "LOBSTER-SELL",
                        "instrument": symbol, "side": "buy" if direction == 1 else "sell",
                        "type": "limit", "price": to_text(price), "qty": size})
            counts["new"] += 1
        elif kind in (PARTIAL_CANCEL, DELETE, EXECUTION):
            is_live = lob_id in live
            entry = live[lob_id] if is_live else seeds.get((direction, price))
            if kind == EXECUTION:
                # the aggressor is not in the file: synthesise it (it hits the level's head)
                taker_n += 1
                out.append({"op": "new", "ts": ts, "order_id": f"T{taker_n}",
                            "account": "LOBSTER-TAKER", "instrument": symbol,
                            "side": "sell" if direction == 1 else "buy", "type": "limit",
                            "tif": "ioc", "price": to_text(price), "qty": size})
                counts["taker"] += 1
                if entry is not None:
                    entry[3] += size
                    if entry[1] - entry[2] - entry[3] <= 0:
                        _forget(live, seeds, is_live, lob_id, direction, price)
                continue
            if entry is None:
                skipped["unknown_order"] += 1
                continue
            entry[2] += size
            remaining = entry[1] - entry[2] - entry[3]
            if kind == DELETE and is_live:
                remaining = 0
            if remaining > 0:
                out.append({"op": "amend", "ts": ts, "order_id": entry[0],
                            "qty": entry[1] - entry[2]})
                counts["amend"] += 1
            else:
                out.append({"op": "cancel", "ts": ts, "order_id": entry[0]})
                counts["cancel"] += 1
                _forget(live, seeds, is_live, lob_id, direction, price)
        elif kind == HIDDEN_EXECUTION:
            skipped["hidden_execution"] += 1
        elif kind == CROSS:
            skipped["cross_trade"] += 1
        elif kind == HALT:
            skipped["halt"] += 1
        else:
            skipped["bad_type"] += 1
    return out, counts, {k: v for k, v in skipped.items() if v}


def _forget(live, seeds, is_live, lob_id, direction, price) -> None:
    if is_live:
        del live[lob_id]
    else:
        del seeds[(direction, price)]


def convert_lobster(messages_path, out_path, instrument: str = "CCER-AFF", *, orderbook=None,
                    price_map: str = "shift", date: str = "2024-01-22",
                    instruments=DEFAULT_INSTRUMENTS) -> dict:
    specs = {s.symbol: s for s in instruments}
    if instrument not in specs:
        raise LobsterError(f"unknown instrument {instrument!r}; expected one of {sorted(specs)}")
    messages = read_messages(messages_path)
    book = read_first_book(orderbook) if orderbook else None
    commands, counts, skipped = lobster_commands(messages, specs[instrument], book=book,
                                                 price_map=price_map, date=date)
    out_path = Path(out_path)
    data = b"".join(orjson.dumps(c) + b"\n" for c in commands)
    if is_binary_path(out_path):
        fd, tmp = tempfile.mkstemp(suffix=".ndjson", dir=out_path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            ndjson_to_binary(tmp, out_path, meta={"lobster": str(messages_path)})
        finally:
            os.unlink(tmp)
    else:
        out_path.write_bytes(data)
    return {"commands": len(commands), "counts": counts, "skipped": skipped}
