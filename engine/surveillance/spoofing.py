"""Art.44(4): frequent order-and-cancel, or a large order then cancelled.

Rationale. Spoofing and layering show depth that is not meant to trade: a large order near the
touch pulls the price its way and is cancelled before anyone can hit it. Two patterns:
  - `large_cancel`: an order at least `large_order_t`, or `depth_multiple` times the depth
    already resting within `touch_ticks` of its side's best price (and at least
    `min_order_t`), placed within `touch_ticks` of that best price, then cancelled by its
    owner within `cancel_within_s` having filled at most `max_filled_pct`;
  - `order_to_trade`: over one trading day (until the instrument's close), an account's orders
    and amends on an instrument reach `otr_min_orders`, `otr_min_ratio` per trade it made,
    and `otr_min_cancel_pct` of them were cancelled by the account itself.
A market maker requoting all day trades as well as cancels; the thresholds are set so the
default simulation's makers stay below them (see benchmarks/README.md).
"""
from __future__ import annotations

from ccerx.engine.core.events import (DayClosed, OrderAccepted, OrderAmended, OrderCancelled,
                                      TradeExecuted)
from ccerx.engine.core.types import CancelReason, Side
from ccerx.engine.surveillance.config import NS, SpoofingConfig
from ccerx.engine.surveillance.model import SPOOFING, draft, per_mille

BUY = Side.BUY
USER = CancelReason.USER


class SpoofingDetector:
    rule = SPOOFING

    def __init__(self, config: SpoofingConfig, related=None):
        self.config = config
        self.within = config.cancel_within_s * NS
        self.large: dict[str, tuple] = {}        # order_id -> (seq, ts, qty, depth, reason)
        self.day: dict[tuple, list] = {}         # (instrument, account) -> [orders, cancels, trades, cancel seqs]
        self.handlers = {OrderAccepted: self.on_accepted, OrderAmended: self.on_amended,
                         OrderCancelled: self.on_cancelled, TradeExecuted: self.on_trade,
                         DayClosed: self.on_close}

    def _counts(self, instrument: str, account: str) -> list:
        row = self.day.get((instrument, account))
        if row is None:
            row = self.day[(instrument, account)] = [0, 0, 0, []]
        return row

    def on_accepted(self, e, view):
        self._counts(e.instrument, e.account)[0] += 1
        config = self.config
        if e.price is None or e.qty < config.min_order_t:
            return ()
        best = view.best(e.instrument, e.side)
        opposite = view.best(e.instrument, Side.SELL if e.side is BUY else Side.BUY)
        if opposite is not None and (e.price >= opposite if e.side is BUY else e.price <= opposite):
            return ()        # marketable: it trades, it does not just show depth
        if best is not None and (best - e.price if e.side is BUY else e.price - best) > config.touch_ticks:
            return ()        # behind the touch
        depth = view.depth_near(e.instrument, e.side, config.touch_ticks)
        if e.qty >= config.large_order_t:
            reason = per_mille(e.qty, config.large_order_t)
        elif depth and e.qty >= config.depth_multiple * depth:
            reason = per_mille(e.qty, config.depth_multiple * depth)
        else:
            return ()
        self.large[e.order_id] = (e.seq, e.ts, e.qty, depth, reason)
        return ()

    def on_amended(self, e, view):
        self._counts(e.instrument, e.account)[0] += 1
        return ()

    def on_trade(self, e, view):
        self._counts(e.instrument, e.buy_account)[2] += 1
        if e.sell_account != e.buy_account:
            self._counts(e.instrument, e.sell_account)[2] += 1
        for order_id in (e.buy_order_id, e.sell_order_id):
            order = view.orders.get(order_id)
            if order is not None and order.open_qty <= e.qty:     # filled: never cancelled
                self.large.pop(order_id, None)
        return ()

    def on_cancelled(self, e, view):
        candidate = self.large.pop(e.order_id, None)
        if e.reason is not USER:
            return ()
        row = self._counts(e.instrument, e.account)
        row[1] += 1
        if len(row[3]) < 200:
            row[3].append(e.seq)
        if candidate is None:
            return ()
        seq, ts, qty, depth, score = candidate
        config = self.config
        if e.ts - ts > self.within or e.filled_qty * 100 > config.max_filled_pct * qty:
            return ()
        seconds = (e.ts - ts) // NS
        return (draft(SPOOFING, "large_cancel", e.instrument, (e.account,), score, e.ts, e.seq,
                      (seq, e.seq),
                      f"{e.account} placed a {e.side.value} order of {qty:,} t of "
                      f"{e.instrument} near the touch (depth there {depth:,} t) and cancelled "
                      f"it after {seconds} s, {e.filled_qty:,} t filled",
                      {"qty": qty, "depth_near_touch": depth, "filled_qty": e.filled_qty,
                       "order_id": e.order_id, "seconds": seconds}),)

    def on_close(self, e, view):
        return self._order_to_trade(e.instrument, e.ts, e.seq)

    def finish(self, view):
        """Days the stream ended in without a close."""
        alerts = []
        for instrument in sorted({k[0] for k in self.day}):
            alerts += self._order_to_trade(instrument, None, None)
        return alerts

    def _order_to_trade(self, instrument, ts, seq):
        config = self.config
        alerts = []
        for key in sorted(k for k in self.day if k[0] == instrument):
            orders, cancels, trades, seqs = self.day.pop(key)
            if (orders < config.otr_min_orders or orders < config.otr_min_ratio * max(trades, 1)
                    or cancels * 100 < config.otr_min_cancel_pct * orders):
                continue
            account = key[1]
            ratio = orders // max(trades, 1)
            at_seq = seq if seq is not None else (seqs[-1] if seqs else 0)
            alerts.append(draft(SPOOFING, "order_to_trade", instrument, (account,),
                                max(per_mille(ratio, config.otr_min_ratio),
                                    per_mille(orders, config.otr_min_orders)),
                                ts if ts is not None else 0, at_seq, seqs,
                                f"{account} entered {orders:,} orders of {instrument} in the "
                                f"day, cancelled {cancels:,} and traded {trades:,} "
                                f"time{'' if trades == 1 else 's'}",
                                {"orders": orders, "cancels": cancels, "trades": trades,
                                 "orders_per_trade": ratio}))
        return alerts
