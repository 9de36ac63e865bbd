"""NDJSON event lines (what `ccerx replay --events-out` writes, engine/formats/ndjson.py
event_to_dict) back to engine events, for surveillance. Pure: a dict in, an event out.

Prices are decimal text on the line and integer ticks in the event, so the decoder keeps the
instrument specs: it starts from the ones it is given (the defaults, or `--instruments`) and
takes every `instrument` line's spec from then on. Lines surveillance has no use for
(rejects) decode to None, and so do events of a type this build does not know that still look
like events (a type and an integer seq: a newer engine's), counted in `unknown`. A `disclosure` line (see model.Disclosure) follows the engine event
before it: its `seq` is that event's. A line that names an unknown instrument or carries an
impossible value raises ValueError with the reason.
"""
from __future__ import annotations

from ccerx.engine.core.events import (DayClosed, Deposited, InstrumentDefined, OrderAccepted,
                                      OrderAmended, OrderCancelled, TradeExecuted,
                                      TradingStatusChanged)
from ccerx.engine.core.types import (CASH_ASSET, CancelReason, InstrumentSpec, OrderType, Side,
                                     TimeInForce, parse_cny_to_fen, parse_price_units)
from ccerx.engine.surveillance.model import DIRECTIONS, UNKNOWN, Disclosure

_SIDES = {s.value: s for s in Side}
_TYPES = {t.value: t for t in OrderType}
_TIFS = {t.value: t for t in TimeInForce}
_CANCEL_REASONS = {r.value: r for r in CancelReason}
IGNORED = frozenset(("rejected", "deposit_rejected",
                     "limits", "large_holder", "restriction"))   # risk controls: not trading


class EventDecoder:
    def __init__(self, specs):
        self.specs: dict[str, InstrumentSpec] = {s.symbol: s for s in specs}
        self.last_seq = 0
        self.unknown: dict[str, int] = {}     # event type -> lines skipped

    def _ticks(self, instrument: str, text) -> int:
        spec = self.specs.get(instrument)
        if spec is None:
            raise ValueError(f"unknown instrument {instrument!r} (give its spec with "
                             f"--instruments, or an instrument line before it)")
        if not isinstance(text, str):
            raise ValueError(f"price must be decimal text, not {text!r}")
        units = parse_price_units(text)
        if units % spec.tick_units:
            raise ValueError(f"price {text} is not a multiple of {instrument}'s tick")
        return units // spec.tick_units

    def decode(self, obj: dict):
        """One event line's object -> an engine event, a Disclosure, or None (not needed)."""
        if not isinstance(obj, dict):
            raise ValueError("an event line must be a JSON object")
        kind = obj.get("type")
        try:
            event = self._decode(kind, obj)
        except KeyError as missing:
            raise ValueError(f"a {kind!r} event needs {missing}") from None
        if event is not None and type(event) is not Disclosure:
            if type(event.seq) is not int or type(event.ts) is not int:
                raise ValueError("seq and ts must be integers")
            self.last_seq = event.seq
        return event

    def _decode(self, kind, o):
        if kind == "trade":
            return TradeExecuted(o["seq"], o["ts"], o["trade_id"], o["instrument"],
                                 self._ticks(o["instrument"], o["price"]), _qty(o["qty"]),
                                 o["buy_order_id"], o["sell_order_id"], _enum(_SIDES, o["aggressor"]),
                                 o["buy_account"], o["sell_account"],
                                 parse_cny_to_fen(o.get("buy_fee", "0")),
                                 parse_cny_to_fen(o.get("sell_fee", "0")),
                                 o.get("buy_open_qty", 0), o.get("sell_open_qty", 0))
        if kind == "accepted":
            price = o["price"]
            return OrderAccepted(o["seq"], o["ts"], o["order_id"], o["account"], o["instrument"],
                                 _enum(_SIDES, o["side"]), _enum(_TYPES, o["order_type"]),
                                 _enum(_TIFS, o["tif"]),
                                 None if price is None else self._ticks(o["instrument"], price),
                                 _qty(o["qty"]), o.get("owner"))
        if kind == "cancelled":
            return OrderCancelled(o["seq"], o["ts"], o["order_id"], o["account"], o["instrument"],
                                  _enum(_SIDES, o["side"]),
                                  _CANCEL_REASONS.get(o["reason"], o["reason"]),
                                  _qty(o["cancelled_qty"]), _qty(o["filled_qty"]))
        if kind == "amended":
            return OrderAmended(o["seq"], o["ts"], o["order_id"], o["account"], o["instrument"],
                                _enum(_SIDES, o["side"]), self._ticks(o["instrument"], o["price"]),
                                _qty(o["qty"]), _qty(o["open_qty"]), bool(o.get("priority_kept")))
        if kind == "instrument":
            fields = {k: v for k, v in o.items() if k not in ("type", "seq", "ts", "op")}
            spec = InstrumentSpec.from_fields(**fields)
            self.specs[spec.symbol] = spec
            return InstrumentDefined(o["seq"], o["ts"], spec)
        if kind == "day_closed":
            return DayClosed(o["seq"], o["ts"], o["instrument"],
                             self._ticks(o["instrument"], o["close"]), _qty(o["volume"]),
                             parse_cny_to_fen(o["turnover"]), o["trades"])
        if kind == "status":
            return TradingStatusChanged(o["seq"], o["ts"], o["open"], o.get("note", ""),
                                        o.get("halted", False))
        if kind == "deposited":
            asset, amount = o["asset"], o["amount"]
            amount = parse_cny_to_fen(amount) if asset == CASH_ASSET else _qty(amount)
            return Deposited(o["seq"], o["ts"], o["deposit_id"], o["account"], asset, amount)
        if kind == "disclosure":
            return disclosure_from_dict(o, self.last_seq)
        if kind in IGNORED:
            return None
        if isinstance(kind, str) and type(o.get("seq")) is int:
            # an event of a kind this build does not know (a newer engine's): not ours to
            # judge, and not garbage either; counted, and said in the summary
            self.unknown[kind] = self.unknown.get(kind, 0) + 1
            return None
        raise ValueError(f"unknown event type {kind!r}")


def disclosure_from_dict(o: dict, seq: int) -> Disclosure:
    """A disclosure line: {"type":"disclosure","ts":NS,"instrument":"CCER-SOL",
    "direction":"negative","id":"ANN-1","note":"..."} (direction, id and note optional)."""
    ts, instrument = o.get("ts"), o.get("instrument")
    direction, note, ident = o.get("direction", UNKNOWN), o.get("note", ""), o.get("id", "")
    if type(ts) is not int or ts < 0:
        raise ValueError("a disclosure needs \"ts\", integer nanoseconds")
    if not isinstance(instrument, str) or not instrument:
        raise ValueError("a disclosure needs \"instrument\"")
    if direction not in DIRECTIONS:
        raise ValueError(f"a disclosure's direction is one of {', '.join(DIRECTIONS)}")
    if not isinstance(note, str) or not isinstance(ident, str):
        raise ValueError("a disclosure's id and note are text")
    return Disclosure(seq, ts, instrument, direction, ident, note)


def _qty(value) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"quantities are non-negative integers, not {value!r}")
    return value


def _enum(table: dict, value):
    try:
        return table[value]
    except (KeyError, TypeError):
        raise ValueError(f"unknown value {value!r}; expected one of {', '.join(table)}") from None
