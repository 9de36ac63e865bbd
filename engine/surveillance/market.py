"""MarketView: the market as the event stream shows it, for the detectors to read.

Rebuilt from events alone (no access to the exchange): the specs and reference prices, the
last trade of each instrument, and the live orders with their open quantity, summed per price
level, so a detector can ask for the touch and the depth near it. Costs: O(1) per event,
except `best()` and `depth_near()`, O(levels on that side), which only the spoofing detector
calls, and only for large orders.
"""
from __future__ import annotations

from ccerx.engine.core.events import (DayClosed, InstrumentDefined, OrderAccepted, OrderAmended,
                                      OrderCancelled, TradeExecuted)
from ccerx.engine.core.types import InstrumentSpec, Side

BUY, SELL = Side.BUY, Side.SELL


class LiveOrder:
    __slots__ = ("order_id", "account", "instrument", "side", "price", "qty", "open_qty",
                 "seq", "ts", "owner")

    def __init__(self, event: OrderAccepted):
        self.order_id, self.account, self.instrument = event.order_id, event.account, event.instrument
        self.side, self.price, self.qty = event.side, event.price, event.qty
        self.open_qty, self.seq, self.ts = event.qty, event.seq, event.ts
        self.owner = getattr(event, "owner", None)


class MarketView:
    __slots__ = ("specs", "last_price", "orders", "levels")

    def __init__(self, specs: dict[str, InstrumentSpec]):
        self.specs = dict(specs)
        self.last_price: dict[str, int] = {}
        self.orders: dict[str, LiveOrder] = {}
        self.levels: dict[tuple[str, Side], dict[int, int]] = {}

    def reference(self, instrument: str) -> int:
        """The last trade's price, or the instrument's reference (benchmark) before any."""
        price = self.last_price.get(instrument)
        if price is None:
            spec = self.specs.get(instrument)
            price = spec.ref_ticks if spec is not None else 0
        return price

    def tick_fen(self, instrument: str) -> int:
        spec = self.specs.get(instrument)
        return spec.tick_fen if spec is not None else 1

    def best(self, instrument: str, side: Side):
        level = self.levels.get((instrument, side))
        if not level:
            return None
        return max(level) if side is BUY else min(level)

    def depth_near(self, instrument: str, side: Side, ticks: int) -> int:
        """Tonnes resting on `side` within `ticks` of its best price."""
        level = self.levels.get((instrument, side))
        if not level:
            return 0
        if side is BUY:
            edge = max(level) - ticks
            return sum(q for p, q in level.items() if p >= edge)
        edge = min(level) + ticks
        return sum(q for p, q in level.items() if p <= edge)

    # ------------------------------------------------------------------ apply
    def _level_add(self, order: LiveOrder, qty: int) -> None:
        if order.price is None or not qty:
            return
        level = self.levels.setdefault((order.instrument, order.side), {})
        total = level.get(order.price, 0) + qty
        if total:
            level[order.price] = total
        else:
            del level[order.price]

    def apply(self, event) -> None:
        kind = type(event)
        if kind is TradeExecuted:
            self.last_price[event.instrument] = event.price
            # open quantity from the trade's own size: an events file does not carry the
            # engine's buy_open_qty/sell_open_qty, and both ways must give the same view
            for order_id in (event.buy_order_id, event.sell_order_id):
                order = self.orders.get(order_id)
                if order is not None:
                    open_qty = max(order.open_qty - event.qty, 0)
                    self._level_add(order, open_qty - order.open_qty)
                    order.open_qty = open_qty
                    if not open_qty:
                        del self.orders[order_id]
        elif kind is OrderAccepted:
            order = LiveOrder(event)
            self.orders[event.order_id] = order
            self._level_add(order, order.qty)
        elif kind is OrderCancelled:
            order = self.orders.pop(event.order_id, None)
            if order is not None:
                self._level_add(order, -order.open_qty)
        elif kind is OrderAmended:
            order = self.orders.get(event.order_id)
            if order is not None:
                self._level_add(order, -order.open_qty)
                order.price, order.qty, order.open_qty = event.price, event.qty, event.open_qty
                self._level_add(order, order.open_qty)
        elif kind is InstrumentDefined:
            self.specs[event.spec.symbol] = event.spec
        elif kind is DayClosed:
            spec = self.specs.get(event.instrument)
            if spec is not None:
                self.specs[event.instrument] = spec.with_ref_ticks(event.close_ticks)
