"""Art.44(2): large or frequent opposite trades between the same or related accounts.

Rationale. Trades where one interest is on both sides transfer no risk: they paint volume and
prices (wash trades) or coordinate two accounts (collusion). Three patterns:
  - `self_trade`: one account on both sides (self-trade prevention should stop these; one that
    gets through is always worth a look), at least `self_trade_min_qty_t`;
  - `related`: accounts the relations file ties together (same group, same beneficial owner)
    trading with each other `related_min_trades` times or `related_min_qty_t` tonnes within
    `window_s`;
  - `round_trip`: two accounts with no declared relation trading with each other in both
    directions, `round_trip_min_trades` times, or `round_trip_min_qty_t` tonnes each way,
    within `window_s` (a fixed pair passing credits back and forth).
An alert consumes its trades: the next alert for the pair needs new ones.
"""
from __future__ import annotations

from collections import deque

from ccerx.engine.core.events import DayClosed, TradeExecuted
from ccerx.engine.surveillance.config import NS, WashConfig
from ccerx.engine.surveillance.model import WASH, draft, per_mille

MAX_PAIRS = 200_000     # pairs remembered before the ones idle for a window are forgotten


class WashDetector:
    rule = WASH

    def __init__(self, config: WashConfig, related):
        self.config = config
        self.related = related
        self.window = config.window_s * NS
        self.pairs: dict[tuple, deque] = {}    # (instrument, a, b) a < b -> (ts, seq, buyer, qty)
        self.handlers = {TradeExecuted: self.on_trade, DayClosed: self.on_close}

    def on_close(self, e, view):
        """Forget pairs whose last trade is out of the window (memory stays bounded)."""
        self._forget_before(e.ts - self.window)
        return ()

    def _forget_before(self, horizon: int) -> None:
        for key in [k for k, trades in self.pairs.items() if trades[-1][0] < horizon]:
            del self.pairs[key]

    def on_trade(self, e, view):
        config = self.config
        buyer, seller = e.buy_account, e.sell_account
        if buyer == seller:
            if e.qty < config.self_trade_min_qty_t:
                return ()
            return (draft(WASH, "self_trade", e.instrument, (buyer,),
                          per_mille(e.qty, config.self_trade_min_qty_t), e.ts, e.seq, (e.seq,),
                          f"{buyer} traded {e.qty:,} t of {e.instrument} with itself",
                          {"qty": e.qty, "buy_order_id": e.buy_order_id,
                           "sell_order_id": e.sell_order_id}),)
        a, b = (buyer, seller) if buyer < seller else (seller, buyer)
        key = (e.instrument, a, b)
        trades = self.pairs.get(key)
        if trades is None:
            if len(self.pairs) >= MAX_PAIRS:       # no close for a long time (--hours always)
                self._forget_before(e.ts - self.window)
            trades = self.pairs[key] = deque()
        trades.append((e.ts, e.seq, buyer, e.qty))
        horizon = e.ts - self.window
        while trades[0][0] < horizon:
            trades.popleft()
        relation = self.related.related(a, b) if self.related is not None else None
        count = len(trades)
        if relation is not None:
            qty = sum(t[3] for t in trades)
            if count < config.related_min_trades and qty < config.related_min_qty_t:
                return ()
            kind_name = f"{relation[0]} {relation[1]}".strip()
            score = max(per_mille(count, config.related_min_trades),
                        per_mille(qty, config.related_min_qty_t))
            alert = draft(WASH, "related", e.instrument, (a, b), score, e.ts, e.seq,
                          [t[1] for t in trades],
                          f"related accounts {a} and {b} ({kind_name}) traded {count} times, "
                          f"{qty:,} t of {e.instrument} with each other within "
                          f"{config.window_s // 60} min",
                          {"trades": count, "qty": qty, "relation_kind": relation[0],
                           "relation_name": relation[1]})
        else:
            a_bought = sum(t[3] for t in trades if t[2] == a)
            b_bought = sum(t[3] for t in trades if t[2] == b)
            if not (a_bought and b_bought):
                return ()
            each_way = min(a_bought, b_bought)
            if count < config.round_trip_min_trades and each_way < config.round_trip_min_qty_t:
                return ()
            score = max(per_mille(count, config.round_trip_min_trades),
                        per_mille(each_way, config.round_trip_min_qty_t))
            alert = draft(WASH, "round_trip", e.instrument, (a, b), score, e.ts, e.seq,
                          [t[1] for t in trades],
                          f"{a} and {b} traded {e.instrument} back and forth {count} times "
                          f"within {config.window_s // 60} min ({a} bought {a_bought:,} t, "
                          f"{b} bought {b_bought:,} t)",
                          {"trades": count, "a_bought": a_bought, "b_bought": b_bought})
        del self.pairs[key]
        return (alert,)
