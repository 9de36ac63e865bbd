"""Matching: strict price-time priority inside one instrument's book.

Theory of operation. A taker that crosses walks the opposite side best level first and, in a
level, oldest order first; every trade prints at the resting (maker) order's price and
quantity min(taker open, maker open). Self-trade prevention: a resting order of the taker's
own account is cancelled (reason stp) and matching goes on behind it. FOK asks
`_fillable` first, which counts only other accounts' orders, so a short FOK changes nothing
but its own accept and cancel.

`Matching` is the matcher half of `Exchange` (a mixin: it reads the exchange's sequence
counters, day statistics, accounts and fee rate, and appends events to the caller's list);
validation and routing stay in exchange.py, and every move of cash or credits is
`Accounts.settle`/`release` in risk.py.
"""
from __future__ import annotations

from typing import Optional

from mypy_extensions import mypyc_attr

from ccerx.engine.core.book import Book, Order
from ccerx.engine.core.events import LargeHolderReported, OrderCancelled, TradeExecuted
from ccerx.engine.core.lots import lot_key
from ccerx.engine.core.risk import Accounts, fee_fen
from ccerx.engine.core.types import CancelReason, InstrumentSpec, Side

BUY = Side.BUY
_tuple_new = tuple.__new__  # builds an event NamedTuple without its Python-level __new__


@mypyc_attr(allow_interpreted_subclasses=True)   # (compiled: Exchange's subclasses)
class Matching:
    # the exchange's state the matcher reads and advances (Exchange.__init__ sets it)
    accounts: Accounts | None
    seq: int
    next_trade_id: int
    fee_ppm: int
    day_stats: dict[str, list[int]]
    specs: dict[str, InstrumentSpec]

    def _release(self, order: Order, spec: InstrumentSpec) -> None:
        if self.accounts is not None and order.reserved:
            self.accounts.release(order, spec)

    def _finish(self, order: Order, spec: InstrumentSpec, reason: CancelReason, out: list,
                ts: int) -> None:
        """Cancel the unfilled rest of an order that is not (or no longer) resting."""
        self.seq += 1
        out.append(OrderCancelled(self.seq, ts, order.order_id, order.account, spec.symbol,
                                  order.side, reason, order.open_qty, order.filled_qty))
        self._release(order, spec)     # (before the open quantity goes: limits count it)
        order.open_qty = 0

    def _fillable(self, book: Book, taker: Order, limit: Optional[int]) -> int:
        """Quantity the taker could trade now, not counting its own account's orders."""
        need, total, account = taker.open_qty, 0, taker.account
        buying = taker.side is BUY
        for level in book.opposite(taker.side).iter_levels():
            if limit is not None and (level.price > limit if buying else level.price < limit):
                break
            maker = level.head
            while maker is not None:
                if maker.account != account:
                    total += maker.open_qty
                    if total >= need:
                        return total
                maker = maker.next
        return total

    def _match(self, book: Book, spec: InstrumentSpec, taker: Order, limit: Optional[int],
               out: list, ts: int) -> None:
        buying = taker.side is BUY
        opposite = book.asks if buying else book.bids
        keys, levels, sign = opposite.keys, opposite.levels, opposite.sign
        account = taker.account
        accounts = self.accounts
        stats = self.day_stats[spec.symbol]
        instrument = spec.symbol
        fee_ppm = self.fee_ppm
        tick_fen = spec.tick_fen
        aggressor = taker.side
        watch = accounts is not None and accounts.report_ppm and accounts.limits
        while taker.open_qty and keys:
            price = keys[0] * sign
            if limit is not None and (price > limit if buying else price < limit):
                break
            maker = levels[price].head
            while maker is not None and taker.open_qty:
                following = maker.next
                if maker.account == account:
                    self._cancel_resting(book, spec, maker, CancelReason.STP, out, ts)
                    maker = following
                    continue
                qty = taker.open_qty if taker.open_qty < maker.open_qty else maker.open_qty
                gross = price * tick_fen * qty
                fee = fee_fen(gross, fee_ppm)
                taker.open_qty -= qty
                taker.filled_qty += qty
                maker.filled_qty += qty
                if maker.open_qty == qty:
                    book.remove(maker)  # subtracts maker.open_qty from the level
                    maker.open_qty = 0
                else:
                    book.reduce(maker, qty)
                buy, sell = (taker, maker) if buying else (maker, taker)
                if accounts is not None:
                    lots = accounts.settle(spec, buy, sell, qty, gross, fee, fee_ppm)
                else:
                    lots = ((spec.project, spec.vintage, qty),) if spec.project else ()
                stats[0] += qty
                stats[1] += price * qty
                stats[2] += 1
                self.seq += 1
                out.append(_tuple_new(TradeExecuted, (
                    self.seq, ts, self.next_trade_id, instrument, price, qty, buy.order_id,
                    sell.order_id, aggressor, buy.account, sell.account, fee, fee, buy.open_qty,
                    sell.open_qty, lots)))
                self.next_trade_id += 1
                if watch:
                    self._report_large(buy.account, self._gains(spec, lots, qty), out, ts)
                if not maker.open_qty and maker.reserved:
                    self._release(maker, spec)
                maker = following

    def _take_target(self, book: Book, spec: InstrumentSpec, taker: Order, maker: Order,
                     out: list, ts: int) -> None:
        """A targeted take: one trade with that listing only (other accounts' listing, at a
        level the rules let it reach, checked by the exchange). The trade itself is the same
        as one step of `_match` (kept inline there: it is the hot loop)."""
        if maker.account == taker.account or taker.side is maker.side:
            raise AssertionError(f"take {taker.order_id} of listing {maker.order_id}")
        buying = taker.side is BUY
        price = maker.price
        assert price is not None    # (a resting order has a price)
        qty = taker.open_qty if taker.open_qty < maker.open_qty else maker.open_qty
        gross = price * spec.tick_fen * qty
        fee = fee_fen(gross, self.fee_ppm)
        taker.open_qty -= qty
        taker.filled_qty += qty
        maker.filled_qty += qty
        if maker.open_qty == qty:
            book.remove(maker)
            maker.open_qty = 0
        else:
            book.reduce(maker, qty)
        buy, sell = (taker, maker) if buying else (maker, taker)
        if self.accounts is not None:
            lots = self.accounts.settle(spec, buy, sell, qty, gross, fee, self.fee_ppm)
        else:
            lots = ((spec.project, spec.vintage, qty),) if spec.project else ()
        stats = self.day_stats[spec.symbol]
        stats[0] += qty
        stats[1] += price * qty
        stats[2] += 1
        self.seq += 1
        out.append(TradeExecuted(self.seq, ts, self.next_trade_id, spec.symbol, price, qty,
                                 buy.order_id, sell.order_id, taker.side, buy.account,
                                 sell.account, fee, fee, buy.open_qty, sell.open_qty, lots))
        self.next_trade_id += 1
        if self.accounts is not None and self.accounts.report_ppm and self.accounts.limits:
            self._report_large(buy.account, self._gains(spec, lots, qty), out, ts)
        if not maker.open_qty and maker.reserved:
            self._release(maker, spec)

    @staticmethod
    def _gains(spec: InstrumentSpec, lots: tuple, qty: int) -> dict:
        """Holding key -> t the buyer of a trade gained (a default lot is the contract's own)."""
        if not lots:
            return {spec.holding: qty}
        gains: dict = {}
        for project, vintage, part in lots:
            key = spec.symbol if project is None else lot_key(project, vintage)
            gains[key] = gains.get(key, 0) + part
        return gains

    def _report_large(self, account: str, gains: dict, out: list, ts: int) -> None:
        """Art.38: report the holdings that `gains` (holding key -> t) took to the reporting
        share of their limit (after the trade or deposit that moved them)."""
        accounts = self.accounts
        assert accounts is not None
        for instrument, holding, limit in accounts.large_holdings(account, gains, self.specs):
            self.seq += 1
            out.append(LargeHolderReported(self.seq, ts, account, instrument, holding, limit))

    def _cancel_resting(self, book: Book, spec: InstrumentSpec, order: Order,
                        reason: CancelReason, out: list, ts: int) -> None:
        cancelled = order.open_qty
        book.remove(order)
        self._release(order, spec)     # (before the open quantity goes: limits count it)
        order.open_qty = 0
        self.seq += 1
        out.append(_tuple_new(OrderCancelled, (self.seq, ts, order.order_id, order.account,
                                               spec.symbol, order.side, reason, cancelled,
                                               order.filled_qty)))
