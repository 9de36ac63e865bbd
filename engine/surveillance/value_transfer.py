"""Art.44(5): large or frequent buy-high-sell-low trading between accounts.

Rationale. Two accounts can move money between them through the market: one buys from the
other above the price everyone else trades at, or sells to it below, and the difference is a
gift. For each trade the price others trade at is the last trade among the recent
`reference_trades` that involves neither account (the instrument's reference price if there
is none); a trade `min_deviation_bp` or more away from it transfers
|price - reference| x qty from the side that overpaid (the buyer above it, the seller below
it) to its counterparty. Transfers from one payer to one receiver are summed over `window_s`;
`min_trades` of them, or `min_transfer_fen`, raise an alert. A round trip (buy high from B,
sell low to B) counts both legs, both paid by the same account.
"""
from __future__ import annotations

from collections import deque

from ccerx.engine.core.events import DayClosed, TradeExecuted
from ccerx.engine.surveillance.config import NS, ValueTransferConfig
from ccerx.engine.surveillance.model import VALUE_TRANSFER, draft, per_mille
from ccerx.engine.core.types import format_fen

MAX_FLOWS = 200_000     # payer-receiver pairs remembered before idle ones are forgotten


class ValueTransferDetector:
    rule = VALUE_TRANSFER

    def __init__(self, config: ValueTransferConfig, related=None):
        self.config = config
        self.window = config.window_s * NS
        self.recent: dict[str, deque] = {}       # instrument -> (price, buyer, seller)
        self.flows: dict[tuple, deque] = {}      # (instrument, payer, receiver) -> (ts, seq, fen)
        self.handlers = {TradeExecuted: self.on_trade, DayClosed: self.on_close}

    def on_close(self, e, view):
        self._forget_before(e.ts - self.window)
        return ()

    def _forget_before(self, horizon: int) -> None:
        for key in [k for k, flow in self.flows.items() if flow[-1][0] < horizon]:
            del self.flows[key]

    def _reference(self, instrument: str, buyer: str, seller: str, view) -> int:
        for price, b, s in reversed(self.recent.get(instrument, ())):
            if b != buyer and b != seller and s != buyer and s != seller:
                return price
        spec = view.specs.get(instrument)
        return spec.ref_ticks if spec is not None else 0

    def on_trade(self, e, view):
        config = self.config
        buyer, seller = e.buy_account, e.sell_account
        reference = self._reference(e.instrument, buyer, seller, view)
        recent = self.recent.get(e.instrument)
        if recent is None:
            recent = self.recent[e.instrument] = deque(maxlen=max(config.reference_trades, 1))
        recent.append((e.price, buyer, seller))
        if buyer == seller or not reference:
            return ()
        deviation = e.price - reference
        if abs(deviation) * 10_000 < config.min_deviation_bp * reference:
            return ()
        payer, receiver = (buyer, seller) if deviation > 0 else (seller, buyer)
        fen = abs(deviation) * e.qty * view.tick_fen(e.instrument)
        key = (e.instrument, payer, receiver)
        flow = self.flows.get(key)
        if flow is None:
            if len(self.flows) >= MAX_FLOWS:       # no close for a long time (--hours always)
                self._forget_before(e.ts - self.window)
            flow = self.flows[key] = deque()
        flow.append((e.ts, e.seq, fen))
        horizon = e.ts - self.window
        while flow[0][0] < horizon:
            flow.popleft()
        total = sum(f[2] for f in flow)
        if len(flow) < config.min_trades and total < config.min_transfer_fen:
            return ()
        del self.flows[key]
        return (draft(VALUE_TRANSFER, "transfer", e.instrument, (payer, receiver),
                      max(per_mille(len(flow), config.min_trades),
                          per_mille(total, config.min_transfer_fen)),
                      e.ts, e.seq, [f[1] for f in flow],
                      f"{payer} paid {receiver} {format_fen(total)} CNY over the price others "
                      f"trade {e.instrument} at, in {len(flow)} trades (buying high, selling low)",
                      {"trades": len(flow), "transfer_fen": total, "payer": payer,
                       "receiver": receiver, "last_reference_ticks": reference}),)
