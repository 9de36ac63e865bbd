"""Event lines without a dict per event: the fast form of `ndjson.encode_event` for the hot
event types (trade, accepted, rejected, cancelled, amended).

`EventLines(specs).encode(events)` returns the NDJSON lines of a list of events, byte for byte
what `orjson.dumps(event_to_dict(event, specs)) + b"\n"` gives, built from one precomputed
template per event type with cached price and fee text. `event_to_dict` stays the reference:
every other event type goes through it, and so does an event whose text fields are not plain
printable ASCII without quotes or backslashes (JSON escaping and non-ASCII are left to
orjson). On the first event of each fast type, the fast line is compared with the
reference line; if they ever differ (the reference changed), that type goes through the
reference from then on. tests/unit/test_ndjson_events.py compares both on whole flows.
"""
from __future__ import annotations

import orjson

from ccerx.engine.core.events import (OrderAccepted, OrderAmended, OrderCancelled, OrderRejected,
                                      TradeExecuted)
from ccerx.engine.core.types import format_fen
from ccerx.engine.formats.ndjson import event_to_dict

_CACHE_LIMIT = 1 << 16


def _plain(text: str) -> bool:
    """Whether orjson writes this string as itself between quotes."""
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


class EventLines:
    def __init__(self, specs: dict):
        self.specs = specs                 # the exchange's live specs (prices use the current)
        self._price_text: dict = {}        # tick_units -> {ticks: text}
        self._fen_text: dict = {}          # fen -> text
        self._checked: set = set()         # fast types whose line matched the reference
        self._fast = {TradeExecuted: self._trade, OrderAccepted: self._accepted,
                      OrderRejected: self._rejected, OrderCancelled: self._cancelled,
                      OrderAmended: self._amended}

    def encode(self, events) -> bytes:
        """The NDJSON lines (each ending in a newline) of these events, in order."""
        fast = self._fast
        parts = []
        for event in events:
            make = fast.get(type(event))
            line = make(event) if make is not None else None
            if line is None:
                parts.append(self._reference(event))
            else:
                if make not in self._checked:
                    self._check(make, event, line)
                parts.append(line)
        return "\n".join(parts).encode() + b"\n" if parts else b""

    def encode_batches(self, batches) -> bytes:
        """`encode` for a list of per-command event lists (replay's batch sink)."""
        return self.encode([event for events in batches for event in events])

    def _reference(self, event) -> str:
        return orjson.dumps(event_to_dict(event, self.specs)).decode()

    def _check(self, make, event, line: str) -> None:
        if line == self._reference(event):
            self._checked.add(make)
        else:   # the reference changed: this type goes the reference way from now on
            del self._fast[type(event)]

    def _price(self, instrument: str, ticks: int) -> str:
        spec = self.specs[instrument]
        cache = self._price_text.get(spec.tick_units)
        if cache is None:
            cache = self._price_text[spec.tick_units] = {}
        text = cache.get(ticks)
        if text is None:
            text = spec.ticks_to_text(ticks)
            if len(cache) < _CACHE_LIMIT:
                cache[ticks] = text
        return text

    def _fen(self, fen: int) -> str:
        text = self._fen_text.get(fen)
        if text is None:
            text = format_fen(fen)
            if len(self._fen_text) < _CACHE_LIMIT:
                self._fen_text[fen] = text
        return text

    # one template per type; None sends the event to the reference path
    def _trade(self, e) -> str | None:
        if e.lots or e.ts is None or not _plain(f"{e.instrument}{e.buy_order_id}{e.sell_order_id}"
                                      f"{e.buy_account}{e.sell_account}"):
            return None
        return (f'{{"type":"trade","seq":{e.seq},"ts":{e.ts},"trade_id":{e.trade_id},'
                f'"instrument":"{e.instrument}","price":"{self._price(e.instrument, e.price)}",'
                f'"qty":{e.qty},"buy_order_id":"{e.buy_order_id}",'
                f'"sell_order_id":"{e.sell_order_id}","aggressor":"{e.aggressor._value_}",'
                f'"buy_account":"{e.buy_account}","sell_account":"{e.sell_account}",'
                f'"buy_fee":"{self._fen(e.buy_fee)}","sell_fee":"{self._fen(e.sell_fee)}"}}')

    def _accepted(self, e) -> str | None:
        if e.ts is None or not _plain(f"{e.order_id}{e.account}{e.instrument}"):
            return None
        price = "null" if e.price is None else f'"{self._price(e.instrument, e.price)}"'
        return (f'{{"type":"accepted","seq":{e.seq},"ts":{e.ts},"order_id":"{e.order_id}",'
                f'"account":"{e.account}","instrument":"{e.instrument}",'
                f'"side":"{e.side._value_}","order_type":"{e.order_type._value_}",'
                f'"tif":"{e.tif._value_}","price":{price},"qty":{e.qty}}}')

    def _rejected(self, e) -> str | None:
        if (e.ts is None or type(e.op) is not str or type(e.order_id) is not str
                or not _plain(f"{e.op}{e.order_id}{e.text}")):
            return None
        return (f'{{"type":"rejected","seq":{e.seq},"ts":{e.ts},"op":"{e.op}",'
                f'"order_id":"{e.order_id}","reason":"{e.reason._value_}","text":"{e.text}"}}')

    def _cancelled(self, e) -> str | None:
        if e.ts is None or not _plain(f"{e.order_id}{e.account}{e.instrument}"):
            return None
        return (f'{{"type":"cancelled","seq":{e.seq},"ts":{e.ts},"order_id":"{e.order_id}",'
                f'"account":"{e.account}","instrument":"{e.instrument}",'
                f'"side":"{e.side._value_}","reason":"{e.reason._value_}",'
                f'"cancelled_qty":{e.cancelled_qty},"filled_qty":{e.filled_qty}}}')

    def _amended(self, e) -> str | None:
        if e.ts is None or not _plain(f"{e.order_id}{e.account}{e.instrument}"):
            return None
        return (f'{{"type":"amended","seq":{e.seq},"ts":{e.ts},"order_id":"{e.order_id}",'
                f'"account":"{e.account}","instrument":"{e.instrument}",'
                f'"side":"{e.side._value_}","price":"{self._price(e.instrument, e.price)}",'
                f'"qty":{e.qty},"open_qty":{e.open_qty},'
                f'"priority_kept":{"true" if e.priority_kept else "false"}}}')
