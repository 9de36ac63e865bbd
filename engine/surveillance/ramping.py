"""Art.44(3): large, continuous or dense orders, or prices far from the last trade.

Rationale. Ramping moves the price by the weight of orders rather than by trading interest:
one order far bigger than the market trades (`large_order`), a limit price far beyond the
last trade in the order's own direction (`far_from_last`: a buy `far_from_last_bp` above it,
a sell as far below; passive orders away from the market are harmless and not flagged), or
a dense run of orders on one side (`dense`: `dense_min_orders` from one account on one side
within `dense_window_s` while the last price moved `dense_min_move_bp` their way). Market
orders count towards a run; they carry no price to be far.
"""
from __future__ import annotations

from collections import deque

from ccerx.engine.core.events import OrderAccepted
from ccerx.engine.core.types import Side
from ccerx.engine.surveillance.config import NS, RampingConfig
from ccerx.engine.surveillance.model import RAMPING, draft, per_mille

BUY = Side.BUY


class RampingDetector:
    rule = RAMPING

    def __init__(self, config: RampingConfig, related=None):
        self.config = config
        self.window = config.dense_window_s * NS
        self.runs: dict[tuple, deque] = {}     # (account, instrument, side) -> (ts, seq, last price)
        self.handlers = {OrderAccepted: self.on_accepted}

    def on_accepted(self, e, view):
        config = self.config
        alerts = []
        last = view.reference(e.instrument)
        side_word = e.side.value
        if e.qty >= config.large_order_t:
            alerts.append(draft(RAMPING, "large_order", e.instrument, (e.account,),
                                per_mille(e.qty, config.large_order_t), e.ts, e.seq, (e.seq,),
                                f"{e.account} entered a {side_word} order of {e.qty:,} t of "
                                f"{e.instrument}",
                                {"qty": e.qty, "order_id": e.order_id, "side": side_word}))
        if e.price is not None and last and e.qty >= config.far_min_qty_t:
            beyond = e.price - last if e.side is BUY else last - e.price
            bp = beyond * 10_000 // last
            if bp >= config.far_from_last_bp:
                alerts.append(draft(RAMPING, "far_from_last", e.instrument, (e.account,),
                                    per_mille(bp, config.far_from_last_bp), e.ts, e.seq,
                                    (e.seq,),
                                    f"{e.account} entered a {side_word} order of {e.qty:,} t of "
                                    f"{e.instrument} {bp} bp beyond the last trade",
                                    {"qty": e.qty, "order_id": e.order_id, "side": side_word,
                                     "price_ticks": e.price, "last_ticks": last, "beyond_bp": bp}))
        key = (e.account, e.instrument, e.side)
        run = self.runs.get(key)
        if run is None:
            if len(self.runs) > 100_000:       # accounts idle for longer than the window
                horizon = e.ts - self.window
                self.runs = {k: r for k, r in self.runs.items() if r and r[-1][0] >= horizon}
            run = self.runs[key] = deque()
        run.append((e.ts, e.seq, last))
        horizon = e.ts - self.window
        while run[0][0] < horizon:
            run.popleft()
        if len(run) >= config.dense_min_orders and run[0][2]:
            start = run[0][2]
            moved = last - start if e.side is BUY else start - last
            bp = moved * 10_000 // start
            if bp >= config.dense_min_move_bp:
                alerts.append(draft(RAMPING, "dense", e.instrument, (e.account,),
                                    max(per_mille(len(run), config.dense_min_orders),
                                        per_mille(bp, config.dense_min_move_bp)),
                                    e.ts, e.seq, [r[1] for r in run],
                                    f"{e.account} entered {len(run)} {side_word} orders of "
                                    f"{e.instrument} within {config.dense_window_s} s while the "
                                    f"price moved {bp} bp their way",
                                    {"orders": len(run), "moved_bp": bp, "side": side_word,
                                     "from_ticks": start, "to_ticks": last}))
                del self.runs[key]
        return alerts
