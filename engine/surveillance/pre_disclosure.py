"""Art.44(1): heavy or sustained one-sided trading before a price-sensitive disclosure.

Rationale. Someone who knows of an announcement before the market does trades ahead of it in
the direction it will move the price: sells before an issuance batch floods supply, buys
before good news. So when a disclosure arrives, look back `lookback_s` at the instrument's
trades and flag each account whose trading there was large (`min_qty_t` net), a real part of
the market (`min_share_pct` of the volume) and one-sided (`min_imbalance_pct` of its own
turnover), in the direction the disclosure moves the price (either way when unknown). An
issuance (credits deposited at one time, summed over the deposits with the same timestamp,
reaching `issuance_min_t`) is a negative disclosure; explicit ones carry their direction.
Evidence: the account's trades in that direction and the disclosure's own event.
"""
from __future__ import annotations

from collections import deque

from ccerx.engine.core.events import Deposited, TradeExecuted
from ccerx.engine.core.types import CASH_ASSET
from ccerx.engine.surveillance.config import NS, PreDisclosureConfig
from ccerx.engine.surveillance.model import (NEGATIVE, POSITIVE, PRE_DISCLOSURE, Disclosure,
                                             draft, per_mille)


class PreDisclosureDetector:
    rule = PRE_DISCLOSURE

    def __init__(self, config: PreDisclosureConfig, related=None):
        self.config = config
        self.lookback = config.lookback_s * NS
        self.trades: dict[str, deque] = {}          # instrument -> (ts, seq, buyer, seller, qty)
        self.deposited_at: dict[tuple[str, int], int] = {}   # (instrument, ts) -> tonnes
        self.handlers = {TradeExecuted: self.on_trade, Deposited: self.on_deposit,
                         Disclosure: self.on_disclosure}

    def on_trade(self, e, view):
        window = self.trades.setdefault(e.instrument, deque())
        window.append((e.ts, e.seq, e.buy_account, e.sell_account, e.qty))
        self._prune(window, e.ts)
        return ()

    def _prune(self, window: deque, now: int) -> None:
        horizon = now - self.lookback
        while window and window[0][0] < horizon:
            window.popleft()

    def on_deposit(self, e, view):
        if e.asset == CASH_ASSET:
            return ()
        key = (e.asset, e.ts)
        before = self.deposited_at.get(key, 0)
        if len(self.deposited_at) > 10_000:        # only today's matter; keep it small
            self.deposited_at.clear()
        self.deposited_at[key] = total = before + e.amount
        if before >= self.config.issuance_min_t or total < self.config.issuance_min_t:
            return ()    # below the threshold, or this announcement was already looked at
        return self.on_disclosure(Disclosure(e.seq, e.ts, e.asset, NEGATIVE, e.deposit_id,
                                             f"issuance of {total:,} t"), view)

    def on_disclosure(self, d: Disclosure, view):
        config = self.config
        window = self.trades.get(d.instrument)
        if not window:
            return ()
        self._prune(window, d.ts)
        volume = 0
        per_account: dict[str, list] = {}      # account -> [bought, sold, buy seqs, sell seqs]
        for ts, seq, buyer, seller, qty in window:
            if ts > d.ts:
                continue
            volume += qty
            row = per_account.setdefault(buyer, [0, 0, [], []])
            row[0] += qty
            row[2].append(seq)
            row = per_account.setdefault(seller, [0, 0, [], []])
            row[1] += qty
            row[3].append(seq)
        alerts = []
        for account in sorted(per_account):
            bought, sold, buys, sells = per_account[account]
            if d.direction == NEGATIVE or (d.direction != POSITIVE and sold > bought):
                net, side, seqs = sold - bought, "sold", sells
            else:
                net, side, seqs = bought - sold, "bought", buys
            if (net < config.min_qty_t or net * 100 < config.min_share_pct * volume
                    or net * 100 < config.min_imbalance_pct * (bought + sold)):
                continue
            score = max(per_mille(net, config.min_qty_t),
                        per_mille(net * 100, config.min_share_pct * volume))
            hours = config.lookback_s // 3600
            alerts.append(draft(
                PRE_DISCLOSURE, "before_" + (d.direction if d.direction != "unknown" else "disclosure"),
                d.instrument, (account,), score, d.ts, d.seq, [*seqs, d.seq],
                f"{account} net {side} {net:,} t of {d.instrument} ({net * 100 // max(volume, 1)}% "
                f"of the volume) in the {hours} h before disclosure "
                f"{d.disclosure_id or d.seq}: {d.note}"[:300],
                {"net_qty": net, "bought": bought, "sold": sold, "volume": volume,
                 "disclosure_id": d.disclosure_id, "direction": d.direction,
                 "disclosure_ts": d.ts, "note": d.note}))
        return alerts
