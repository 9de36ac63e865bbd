"""The exchange: routes commands to the books, applies the trading rules, sequences events.

Theory of operation. `apply(command) -> list[event]` is the only entry point. It does no
I/O and reads no clock: the timestamp of every event is the command's `ts` (or the last
one seen), so the same commands always give the same events, byte for byte.

Every command yields at least one event. Expected failures (bad price, unknown order,
insufficient funds, ...) are `OrderRejected` (or `DepositRejected`) values and change nothing
else; a broken internal invariant raises, because it means a bug, not a bad input.

Matching is strict price-time priority and a trade always prints at the resting order's
price. Self-trade prevention cancels the resting order (reason stp) and matching goes on.
FOK counts only what it could really trade (other accounts' orders) and, if short, changes
nothing but its own accept/cancel.

Which order types, time in force, amends, self-trade handling, order caps and holding
periods apply is the exchange's rule profile (rules.py; `continuous` unless given). The
profile is part of the state: snapshots record it and `state_hash` covers it (for
`continuous` the hash is the one from before profiles existed). Under `continuous` a plain
limit order takes the fast path below; every other profile validates on the slow path.
"""
from __future__ import annotations

import hashlib
from bisect import bisect_left
from typing import Any, Callable, Iterable, Optional

from mypy_extensions import mypyc_attr

from ccerx.engine.core.book import Book, Order
from ccerx.engine.core.commands import (AmendOrder, CancelOrder, DefineInstrument, Deposit,
                                       EndOfDay, Malformed, NewOrder, Restrict, Retire,
                                       SetLimits, SetTradingStatus)
from ccerx.engine.core.events import (DayClosed, Deposited, DepositRejected, InstrumentDefined,
                                     LimitsSet, OrderAccepted, OrderAmended, OrderRejected,
                                     RestrictionChanged, Retired, TradingStatusChanged)
from ccerx.engine.core.lots import LOT_SEPARATOR, Lot, lot_key, lot_problem
from ccerx.engine.core.matching import Matching
from ccerx.engine.core.risk import DEFAULT_FEE_PPM, Accounts, Refused
from ccerx.engine.core.rules import CONTINUOUS, RuleProfile, SelfTrade
from ccerx.engine.core.lots import STANDARD_CONTRACTS
from ccerx.engine.core.types import (CASH_ASSET, DEFAULT_INSTRUMENTS, MAX_DEPOSIT, ORDER_TYPES, SIDES, TIFS,
                    CancelReason, InstrumentSpec, OrderType, ParticipantType, PriceError,
                    RejectReason as R, Side, TimeInForce, control_character,
                    symbol_problem, MAX_PRICE_UNITS)

BUY, SELL = Side.BUY, Side.SELL
LIMIT, MARKET, TAKE = OrderType.LIMIT, OrderType.MARKET, OrderType.TAKE
DAY, IOC, FOK = TimeInForce.DAY, TimeInForce.IOC, TimeInForce.FOK
MAX_ID_LEN = 64
_tuple_new = tuple.__new__  # builds an event NamedTuple without its Python-level __new__


@mypyc_attr(allow_interpreted_subclasses=True)   # (compiled: a test's subclass, a user's)
class Exchange(Matching):
    """Routes commands, validates them and sequences events; matching is `Matching`
    (matching.py), reservations and settlement of trades are `Accounts` (risk.py)."""

    def __init__(self, instruments: Iterable[InstrumentSpec] = DEFAULT_INSTRUMENTS,
                 accounts: Optional[Accounts] = None, fee_ppm: Optional[int] = None,
                 rules: RuleProfile = CONTINUOUS):
        self.rules = rules
        self._plain_rules = rules == CONTINUOUS   # the fast path applies only to these rules
        self._holding = rules.holding_days > 0
        if accounts is not None:
            accounts.holding_days = rules.holding_days
        self.specs: dict[str, InstrumentSpec] = {}
        self.books: dict[str, Book] = {}
        self.resting_in: dict[str, Book] = {}     # order id -> its book (Book.where)
        for spec in instruments:
            self.specs[spec.symbol] = spec
            self.books[spec.symbol] = Book(spec.symbol, self.resting_in)
            if spec.project and accounts is not None:     # a listing's lot is known
                accounts.register_lot(Lot(spec.credit_type, spec.project, spec.vintage))
        if accounts is not None:
            self._holdings_by_lot(accounts)
        self.accounts = accounts
        self.fee_ppm = fee_ppm if fee_ppm is not None else (
            accounts.fee_ppm if accounts is not None else DEFAULT_FEE_PPM)
        self.seq = 0
        self.next_trade_id = 1
        self.last_ts = 0
        self.seen_order_ids: set[str] = set()
        self.trading_open = True      # continuous trading; the calendar closes it (SetTradingStatus)
        self.halted = False           # closed by a halt rather than by the schedule
        self.after_close = False      # an end of day was applied and trading has not opened
                                      # since (the next trading day has not begun)
        self.last_close_ts = 0        # ts of the last EndOfDay (0: none yet)
        self.deposit_ids: set[str] = set()   # every deposit id ever applied (never reset)
        self.retire_ids: set[str] = set()    # every retirement applied (never reset); its
                                             # count numbers the retirement certificates
        # end-of-day closes applied: the trading day number (the accounts count it too)
        self.closes = accounts.closes if accounts is not None else 0
        # Art.39/46 operator restrictions: (scope "account"|"member", id) -> "buy"|"sell"|"both"
        self.restrictions: dict[tuple[str, str], str] = {}
        # per instrument: [volume t, turnover in tick*t, trades] for the VWAP close
        self.day_stats: dict[str, list[int]] = {s: [0, 0, 0] for s in self.specs}
        self._handlers: dict[type, Callable[[Any, int, list], None]] = {NewOrder: self._new, CancelOrder: self._cancel, AmendOrder: self._amend,
                          DefineInstrument: self._define, EndOfDay: self._end_of_day,
                          SetTradingStatus: self._set_trading_status, Deposit: self._deposit,
                          SetLimits: self._set_limits, Restrict: self._restrict,
                          Retire: self._retire, Malformed: self._malformed}

    def _holdings_by_lot(self, accounts: Accounts) -> None:
        """An accounts table may name a listing's credits by its symbol: they are that
        listing's lot. A lot key no listing or deposit made known has no credit type: lots
        move in by deposit (ValueError)."""
        for account in accounts.by_id.values():
            for key in list(account.credits):
                spec = self.specs.get(key)
                if spec is not None and spec.project:
                    if (account.credits_reserved.get(key) or account.bought_today.get(key)
                            or key in account.lot_bought or key in account.lot_sold):
                        raise ValueError(f"account {account.account}: {key} is reserved")
                    held = account.credits.pop(key)
                    account.credits[spec.holding] = account.credits.get(spec.holding, 0) + held
                elif LOT_SEPARATOR in key and key not in accounts.lots:
                    raise ValueError(
                        f"account {account.account} holds {key!r}, a lot of no known credit "
                        f"type: credits of a project and vintage move in by deposit (credit_type, "
                        f"project, vintage), or name the instrument that lists them")

    # ------------------------------------------------------------------ entry point
    def apply(self, command) -> list:
        ts = command.ts
        if ts is None:
            ts = self.last_ts
        else:
            self.last_ts = ts
        out: list = []
        if type(command) is NewOrder:       # the common case first, without a dict lookup
            self._new(command, ts, out)
            return out
        handler = self._handlers.get(type(command))
        if handler is None:
            raise TypeError(f"not an engine command: {command!r}")
        handler(command, ts, out)
        return out

    def _reject(self, out, ts, op, order_id, reason, text, owner=None):
        if type(order_id) is not str or len(order_id) > MAX_ID_LEN:
            order_id = None  # never echo a non-id (or a 100 KB one) back
        self.seq += 1
        out.append(OrderRejected(self.seq, ts, op, order_id, reason, text, owner))

    # ------------------------------------------------------------------ validation
    def _limit_ticks(self, spec: InstrumentSpec, price_units) -> int:
        if type(price_units) is not int:
            if type(price_units) is PriceError:
                raise Refused(price_units.reason, price_units.text)
            raise Refused(R.INVALID_PRICE, "a limit order needs a price")
        if price_units <= 0:
            raise Refused(R.INVALID_PRICE, "limit price must be positive")
        ticks, off = divmod(price_units, spec.tick_units)
        if off:
            raise Refused(R.OFF_TICK, f"price is not a multiple of the tick {spec.ticks_to_text(1)}")
        if not spec.min_ticks <= ticks <= spec.max_ticks:
            raise Refused(R.PRICE_OUT_OF_BAND,
                          f"price outside the daily band {spec.ticks_to_text(spec.min_ticks)}"
                          f"-{spec.ticks_to_text(spec.max_ticks)}")
        return ticks

    def _check_qty(self, spec: InstrumentSpec, qty) -> int:
        if type(qty) is not int or qty <= 0:
            raise Refused(R.INVALID_QTY, "quantity must be a positive whole number of tonnes")
        if qty % spec.lot:
            raise Refused(R.INVALID_QTY, f"quantity must be a multiple of the lot ({spec.lot} t)")
        max_qty = spec.max_qty if self.rules.max_qty is None else self.rules.max_qty
        if qty > max_qty:
            raise Refused(R.QTY_ABOVE_MAX, f"quantity above the maximum of {max_qty} t")
        return qty

    def _find_resting(self, order_id) -> tuple[Book, Order] | tuple[None, None]:
        book = self.resting_in.get(order_id) if type(order_id) is str else None
        if book is None:
            return None, None
        return book, book.orders[order_id]

    # ------------------------------------------------------------------ new order
    def _new(self, cmd: NewOrder, ts: int, out: list) -> None:
        order_id, owner = cmd.order_id, cmd.owner
        if type(order_id) is not str or not order_id or len(order_id) > MAX_ID_LEN:
            return self._reject(out, ts, "new", None, R.MALFORMED,
                                f"order_id must be a string of 1-{MAX_ID_LEN} characters", owner)
        seen = self.seen_order_ids
        if order_id in seen:
            return self._reject(out, ts, "new", order_id, R.DUPLICATE_ORDER_ID,
                                "order id already used today", owner)
        seen.add(order_id)
        if not self.trading_open:
            return self._reject(out, ts, "new", order_id, R.MARKET_CLOSED,
                                "the market is closed", owner)
        if self.restrictions:
            why = self._restricted(cmd.account, owner, cmd.side)
            if why:
                return self._reject(out, ts, "new", order_id, R.RESTRICTED, why, owner)
        account = cmd.account
        instrument = cmd.instrument
        spec = self.specs.get(instrument) if type(instrument) is str else None
        side = SIDES.get(cmd.side) if type(cmd.side) is str else None
        order_type = ORDER_TYPES.get(cmd.order_type) if type(cmd.order_type) is str else None
        tif = cmd.tif
        tif = (DAY if order_type is LIMIT else IOC) if tif is None else (
            TIFS.get(tif) if type(tif) is str else None)
        price_units, qty = cmd.price_units, cmd.qty
        price: Optional[int]
        # Fast path: a well-formed limit order whose fields need no explaining.
        if (self._plain_rules and spec is not None and side is not None and order_type is LIMIT
                and tif is not None and type(price_units) is int and type(qty) is int and type(account) is str
                and 0 < qty <= spec.max_qty and not qty % spec.lot and 0 < len(account) <= MAX_ID_LEN
                and spec.min_units <= price_units <= spec.max_units
                and not price_units % spec.tick_units and cmd.target is None):
            price = price_units // spec.tick_units
        else:
            # (the rules' checks live here, so the fast path stays as it was before profiles)
            try:
                price = self._validate_new(cmd, spec, side, order_type, tif)
                assert spec is not None and side is not None    # (validated)
                if spec.tradable_from > self.closes:
                    raise Refused(R.NOT_YET_TRADABLE, (
                        f"Art.17: {spec.symbol} is newly listed; it trades from trading day "
                        f"{spec.tradable_from} (the next trading day), today is day {self.closes}"))
                if not self._plain_rules:
                    self._check_self_trade(cmd, spec, side, price)
                    if self._holding and self.accounts is not None:
                        self.accounts.check_holding(account, side, spec.symbol,
                                                    self.books[spec.symbol],
                                                    spec.holding if spec.project else None)
            except Refused as bad:
                return self._reject(out, ts, "new", order_id, bad.reason, bad.text, owner)
            if order_type is TAKE:
                return self._new_take(cmd, spec, side, tif, price, ts, out)
        assert spec is not None and side is not None    # (both paths checked them)
        symbol = spec.symbol
        book = self.books[symbol]
        order = Order(order_id, account, side, price, qty, owner)
        if self.accounts is not None:
            try:
                self.accounts.reserve_new(order, spec, self.fee_ppm, self.specs)
            except Refused as bad:
                return self._reject(out, ts, "new", order_id, bad.reason, bad.text, owner)

        self.seq += 1
        out.append(_tuple_new(OrderAccepted, (self.seq, ts, order_id, account, symbol, side,
                                              order_type, tif, price, qty, owner)))
        if tif is FOK and self._fillable(book, order, price) < qty:
            return self._finish(order, spec, CancelReason.FOK, out, ts)
        keys = book.asks.keys if side is BUY else book.bids.keys
        # call the matcher only if the order crosses (keys are signed so that best is keys[0])
        if keys and (price is None or (keys[0] <= price if side is BUY else -keys[0] >= price)):
            self._match(book, spec, order, price, out, ts)
        if order.open_qty:
            if tif is DAY:
                book.add(order)
            else:
                self._finish(order, spec, CancelReason.MARKET if order_type is MARKET
                             else (CancelReason.FOK if tif is FOK else CancelReason.IOC), out, ts)
        elif order.reserved:
            self._release(order, spec)

    def _new_take(self, cmd: NewOrder, spec, side, tif, price, ts: int, out: list) -> None:
        """The rest of a valid take order: priced at the best level (None: nothing to take),
        it trades there only (or with its target only) and its rest is cancelled (take)."""
        order = Order(cmd.order_id, cmd.account, side, price, cmd.qty, cmd.owner)
        book = self.books[spec.symbol]
        if self.accounts is not None:
            try:
                if price is not None:
                    self.accounts.reserve_new(order, spec, self.fee_ppm, self.specs)
                elif self.accounts.get(cmd.account) is None:   # nothing to take: nothing held
                    raise Refused(R.UNKNOWN_ACCOUNT, f"unknown account {cmd.account!r}")
            except Refused as bad:
                return self._reject(out, ts, "new", cmd.order_id, bad.reason, bad.text, cmd.owner)
        self.seq += 1
        out.append(OrderAccepted(self.seq, ts, cmd.order_id, cmd.account, spec.symbol, side,
                                 TAKE, tif, price, cmd.qty, cmd.owner))
        if price is not None:
            if cmd.target is None:       # priced at the best level: the walk cannot pass it
                self._match(book, spec, order, price, out, ts)
            else:
                self._take_target(book, spec, order, book.orders[cmd.target], out, ts)
        if order.open_qty:
            self._finish(order, spec, CancelReason.TAKE, out, ts)
        elif order.reserved:
            self._release(order, spec)

    def _validate_new(self, cmd: NewOrder, spec, side, order_type, tif) -> Optional[int]:
        """The slow path of `_new`: find the first bad field and say what is wrong with it."""
        account = cmd.account
        if type(account) is not str or not account or len(account) > MAX_ID_LEN:
            raise Refused(R.MALFORMED, "account must be a non-empty string")
        if spec is None:
            raise Refused(R.UNKNOWN_INSTRUMENT, f"unknown instrument {str(cmd.instrument)[:40]!r}")
        if side is None:
            raise Refused(R.INVALID_SIDE, "side must be 'buy' or 'sell'")
        if order_type is None:
            raise Refused(R.INVALID_TYPE, "type must be 'limit', 'market' or 'take'")
        if order_type is TAKE and cmd.tif is not None:
            # a take is always immediate-or-cancel by nature: an explicit tif, even 'ioc', is
            # refused (the README's take has none)
            raise Refused(R.INVALID_TIF, f"a take order has no time in force (it trades at once "
                                         f"at the best level and never rests): send it without "
                                         f"a tif, not {str(cmd.tif)[:16]!r}")
        if tif is None:
            raise Refused(R.INVALID_TIF, "tif must be 'day', 'ioc' or 'fok'")
        rules = self.rules
        if order_type not in rules.order_types:
            raise Refused(R.NOT_PERMITTED,
                          f"{order_type.value} orders are not permitted under the "
                          f"{rules.name} rules: post a limit order or take the best listing")
        if order_type is TAKE:
            return self._validate_take(cmd, spec, side, tif)
        if tif not in rules.tifs:
            raise Refused(R.NOT_PERMITTED,
                          f"{tif.value} orders are not permitted under the {rules.name} rules "
                          f"(day orders only): enter a day order, and cancel it to withdraw")
        if order_type is LIMIT:
            price = self._limit_ticks(spec, cmd.price_units)
        else:
            if tif is DAY:
                raise Refused(R.INVALID_TIF, "a market order cannot be a day order")
            if cmd.price_units is not None:
                raise Refused(R.INVALID_PRICE, "a market order carries no price")
            price = None
        self._check_qty(spec, cmd.qty)
        if cmd.target is not None:
            raise Refused(R.MALFORMED, "only a take order names a target")
        return price

    def _validate_take(self, cmd: NewOrder, spec, side, tif) -> Optional[int]:
        """A take order's price: the best opposite level (its target's level if it names
        one), or None when the other side is empty (it is then cancelled at once)."""
        if tif is not IOC:
            raise Refused(R.INVALID_TIF, "a take order never rests: send it without a tif")
        if cmd.price_units is not None:
            raise Refused(R.INVALID_PRICE, "a take order carries no price: it trades at the "
                                           "best level of the other side")
        self._check_qty(spec, cmd.qty)
        opposite = self.books[spec.symbol].opposite(side)
        target = cmd.target
        if target is None:
            return opposite.keys[0] * opposite.sign if opposite.keys else None
        if type(target) is not str or not target or len(target) > MAX_ID_LEN:
            raise Refused(R.MALFORMED, f"target must be an order id of 1-{MAX_ID_LEN} characters")
        listing = self.books[spec.symbol].orders.get(target)
        if listing is None or listing.side is side:
            raise Refused(R.ORDER_NOT_RESTING, f"no {'sell' if side is BUY else 'buy'} listing "
                                               f"{target!r} rests in {spec.symbol}")
        if listing.account == cmd.account:     # in every profile: STP would only cancel it
            raise Refused(R.SELF_TRADE, f"listing {target!r} is the account's own: a taker "
                                        f"never takes its own listing")
        assert listing.price is not None    # (a resting order has a price)
        ahead = bisect_left(opposite.keys, listing.price * opposite.sign)
        if ahead >= self.rules.take_levels:
            best = opposite.keys[0] * opposite.sign
            raise Refused(R.TARGET_NOT_AT_BEST,
                          f"listing {target!r} at {spec.ticks_to_text(listing.price)} is not at "
                          f"the best {'level' if self.rules.take_levels == 1 else f'{self.rules.take_levels} levels'} "
                          f"({spec.ticks_to_text(best)})")
        return listing.price

    def _check_self_trade(self, cmd: NewOrder, spec, side, price) -> None:
        """Under REJECT_TAKER: refuse an order that would trade with an order of its own
        account before its quantity is used up (the resting order stays)."""
        if self.rules.self_trade is not SelfTrade.REJECT_TAKER or cmd.target is not None:
            return                   # (a targeted take is checked in _validate_take)
        book = self.books[spec.symbol]
        account = cmd.account
        need, own = cmd.qty, False
        buying = side is BUY
        for level in book.opposite(side).iter_levels():
            if price is not None and (level.price > price if buying else level.price < price):
                break
            maker = level.head
            while maker is not None and not own and need > 0:
                own = maker.account == account
                need -= maker.open_qty
                maker = maker.next
            if own or need <= 0:
                break
        if own:
            raise Refused(R.SELF_TRADE, f"this order would trade with a resting order of "
                                        f"account {account!r}; a taker never takes its own "
                                        f"listing (cancel that one first)")

    # ------------------------------------------------------------------ cancel / amend
    def _cancel(self, cmd: CancelOrder, ts: int, out: list) -> None:
        book, order = self._find_resting(cmd.order_id)
        if order is None:
            return self._reject(out, ts, "cancel", cmd.order_id, R.ORDER_NOT_RESTING,
                                "no resting order with this id", cmd.owner)
        if cmd.owner is not None and order.owner != cmd.owner:
            return self._reject(out, ts, "cancel", cmd.order_id, R.ORDER_NOT_RESTING,
                                "no resting order with this id for this member", cmd.owner)
        assert book is not None
        self._cancel_resting(book, self.specs[book.instrument], order, CancelReason.USER, out, ts)

    def _amend(self, cmd: AmendOrder, ts: int, out: list) -> None:
        order_id, owner = cmd.order_id, cmd.owner
        if not self.rules.amend:
            return self._reject(out, ts, "amend", order_id, R.NOT_PERMITTED,
                                f"amends are not permitted under the {self.rules.name} rules: "
                                f"cancel the order and enter a new one", owner)
        book, order = self._find_resting(order_id)
        if order is None or (owner is not None and order.owner != owner):
            return self._reject(out, ts, "amend", order_id, R.ORDER_NOT_RESTING,
                                "no resting order with this id", owner)
        if not self.trading_open:
            return self._reject(out, ts, "amend", order_id, R.MARKET_CLOSED,
                                "the market is closed; cancels are still accepted", owner)
        if self.restrictions:
            why = self._restricted(order.account, order.owner, order.side.value)
            if why:
                return self._reject(out, ts, "amend", order_id, R.RESTRICTED,
                                    why + "; cancels are still accepted", owner)
        assert book is not None
        spec = self.specs[book.instrument]
        try:
            if cmd.price_units is None and cmd.qty is None:
                raise Refused(R.NOTHING_TO_AMEND, "amend needs a new price or quantity")
            price = order.price if cmd.price_units is None else self._limit_ticks(spec, cmd.price_units)
            assert price is not None    # (a resting order has a price)
            qty = order.filled_qty + order.open_qty if cmd.qty is None else self._check_qty(spec, cmd.qty)
            if qty <= order.filled_qty:
                raise Refused(R.QTY_NOT_ABOVE_FILLED,
                              f"new quantity must exceed the {order.filled_qty} t already filled")
            open_qty = qty - order.filled_qty
            if self.accounts is not None:
                self.accounts.re_reserve(order, spec, price, open_qty, self.fee_ppm,
                                         self.specs)
        except Refused as bad:
            return self._reject(out, ts, "amend", order_id, bad.reason, bad.text, owner)

        keep = price == order.price and open_qty <= order.open_qty
        self.seq += 1
        out.append(OrderAmended(self.seq, ts, order_id, order.account, spec.symbol, order.side,
                                price, qty, open_qty, keep))
        if keep:
            book.reduce(order, order.open_qty - open_qty)
            return
        book.remove(order)
        order.price = price
        order.open_qty = open_qty
        self._match(book, spec, order, price, out, ts)
        if order.open_qty:
            book.add(order)
        elif order.reserved:
            self._release(order, spec)

    # ------------------------------------------------------------------ session control
    def _define(self, cmd: DefineInstrument, ts: int, out: list) -> None:
        spec = cmd.spec
        old = self.specs.get(spec.symbol)
        if old is not None and (old.kind != spec.kind or old.credit_type != spec.credit_type
                                or old.holding != spec.holding):
            # (holdings are kept under what an instrument delivers: changing it would strand
            # them or re-type them)
            return self._reject(out, ts, "instrument", None, R.MALFORMED, (
                f"{spec.symbol} delivers {old.kind} {old.credit_type or old.holding}; a "
                f"redefinition may change its prices and limits, not what it delivers"))
        if spec.project:
            problem = self._listing_problem(spec)
            if problem:
                return self._reject(out, ts, "instrument", None, R.MALFORMED, problem)
            old = self.specs.get(spec.symbol)
            spec = spec.with_tradable_from(old.tradable_from if old is not None else
                                           self._first_trading_day())
        self._define_spec(spec, ts, out)

    def _first_trading_day(self) -> int:
        """Art.17: the trading day a listing made now trades from: `listing_days` after the
        day it is listed on. Listed after a close while the market is still closed, it is
        listed on the coming day's eve, and that coming day is its next trading day."""
        day = self.closes + self.rules.listing_days
        if self.rules.listing_days and self.after_close and not self.trading_open:
            day -= 1
        return day

    def _listing_problem(self, spec: InstrumentSpec) -> str:
        """Why a listing of spec's lot cannot be (re)defined, or "": its lot's credit type is
        the one it was moved in with, and one lot has one listing."""
        key = spec.holding
        lot = self.accounts.lots.get(key) if self.accounts is not None else None
        if lot is not None and lot.credit_type != spec.credit_type:
            return (f"{spec.project} is a {lot.credit_type} project, not {spec.credit_type}")
        for other in self.specs.values():
            if other.holding == key and other.symbol != spec.symbol:
                return (f"{spec.project} vintage {spec.vintage} is already listed as "
                        f"{other.symbol}")
        old = self.specs.get(spec.symbol)
        if old is not None and old.holding != key:
            return f"{spec.symbol} lists another lot ({old.holding}); a listing keeps its lot"
        return ""

    def _define_spec(self, spec: InstrumentSpec, ts: int, out: list) -> None:
        book = self.books.get(spec.symbol)
        if book is not None and book.orders:
            return self._reject(out, ts, "instrument", None, R.INSTRUMENT_BUSY,
                                f"{spec.symbol} has resting orders; redefine it when its book is empty")
        old = self.specs.get(spec.symbol)
        if old is not None and old.tick_units != spec.tick_units and self.day_stats[spec.symbol][0]:
            # the day's VWAP is counted in ticks of the old size
            return self._reject(out, ts, "instrument", None, R.INSTRUMENT_BUSY,
                                f"{spec.symbol} traded today; change its tick after the close")
        self.specs[spec.symbol] = spec
        if book is None:
            self.books[spec.symbol] = Book(spec.symbol, self.resting_in)
            self.day_stats[spec.symbol] = [0, 0, 0]
        if spec.project and self.accounts is not None:
            self.accounts.register_lot(Lot(spec.credit_type, spec.project, spec.vintage))
            if book is None:   # credits a table held under the new listing's symbol: its lot
                self._holdings_by_lot(self.accounts)
        self.seq += 1
        out.append(InstrumentDefined(self.seq, ts, spec))

    def _set_trading_status(self, cmd: SetTradingStatus, ts: int, out: list) -> None:
        if type(cmd.open) is not bool or type(cmd.halted) is not bool or (cmd.open and cmd.halted):
            raise TypeError(f"SetTradingStatus needs bools open and halted, halted only when "
                            f"closed: {cmd!r}")
        self.trading_open = cmd.open
        self.halted = cmd.halted
        if cmd.open:
            self.after_close = False
        self.seq += 1
        out.append(TradingStatusChanged(self.seq, ts, cmd.open, cmd.note, cmd.halted))

    def _deposit(self, cmd: Deposit, ts: int, out: list) -> None:
        """Credit an account from outside the market. Allowed whether trading is open or not;
        deposited credits are sellable at once (they were not bought today)."""
        deposit_id, account_id, asset, amount = cmd.deposit_id, cmd.account, cmd.asset, cmd.amount

        def reject(reason: R, text: str) -> None:
            echo = deposit_id if type(deposit_id) is str and len(deposit_id) <= MAX_ID_LEN else None
            self.seq += 1
            out.append(DepositRejected(self.seq, ts, echo, reason, text, cmd.owner))

        if type(deposit_id) is not str or not deposit_id or len(deposit_id) > MAX_ID_LEN:
            return reject(R.MALFORMED, f"deposit_id must be a string of 1-{MAX_ID_LEN} characters")
        if deposit_id in self.deposit_ids:
            return reject(R.DUPLICATE_DEPOSIT_ID, "deposit id already applied")
        if cmd.project is not None or cmd.credit_type is not None or cmd.vintage is not None:
            return self._deposit_lot(cmd, ts, out, reject)
        if cmd.list_symbol is not None or cmd.list_price_units is not None:
            return reject(R.MALFORMED, "only a deposit of a lot (credit_type, project, "
                                       "vintage) can list it")
        if asset != CASH_ASSET and (type(asset) is not str or asset not in self.specs):
            return reject(R.UNKNOWN_INSTRUMENT,
                          f"asset must be {CASH_ASSET} or one of {', '.join(sorted(self.specs))}")
        if type(amount) is not int or not 0 < amount <= MAX_DEPOSIT:
            unit = "fen" if asset == CASH_ASSET else "tonnes"
            return reject(R.INVALID_AMOUNT, f"amount must be a positive whole number of {unit} "
                                            f"(at most {MAX_DEPOSIT})")
        if type(account_id) is not str or not account_id:
            return reject(R.MALFORMED, "account must be a non-empty string")
        if self.accounts is not None:
            account = self.accounts.get(account_id)
            if account is None:
                return reject(R.UNKNOWN_ACCOUNT, f"unknown account {account_id[:MAX_ID_LEN]!r}")
        lot = None
        if asset != CASH_ASSET:
            spec = self.specs[asset]
            if spec.project:      # credits of a listing's lot: held as that lot
                lot = Lot(spec.credit_type, spec.project, spec.vintage)
            asset = spec.holding
        if self.accounts is not None:
            assert account is not None     # (checked above)
            if asset == CASH_ASSET:
                account.cash += amount
            else:
                account.credits[asset] = account.credits.get(asset, 0) + amount
        self.deposit_ids.add(deposit_id)
        self.seq += 1
        out.append(Deposited(self.seq, ts, deposit_id, account_id, asset, amount,
                             *(lot or (None, None, None))))
        if asset != CASH_ASSET and self.accounts is not None and self.accounts.report_ppm:
            self._report_large(account_id, {asset: amount}, out, ts)

    def _deposit_lot(self, cmd: Deposit, ts: int, out: list, reject) -> None:
        """A transfer in of one lot from the registry: the lot is registered (its credit type
        fixed for ever) and, if it has no listing yet and the deposit declares a symbol and an
        initial price, listed (Art.17: that price is its first benchmark)."""
        credit_type, project, vintage = cmd.credit_type, cmd.project, cmd.vintage
        problem = lot_problem(credit_type, project, vintage)
        if problem:
            return reject(R.MALFORMED, problem)
        if cmd.asset is not None:
            return reject(R.MALFORMED, "a deposit names a lot or an instrument, not both")
        amount, account_id = cmd.amount, cmd.account
        if type(amount) is not int or not 0 < amount <= MAX_DEPOSIT:
            return reject(R.INVALID_AMOUNT, f"qty must be a positive whole number of tonnes "
                                            f"(at most {MAX_DEPOSIT})")
        if type(account_id) is not str or not account_id:
            return reject(R.MALFORMED, "account must be a non-empty string")
        accounts = self.accounts
        if accounts is None:
            return reject(R.UNKNOWN_ACCOUNT, "deposits of lots need accounts")
        account = accounts.get(account_id)
        if account is None:
            return reject(R.UNKNOWN_ACCOUNT, f"unknown account {account_id[:MAX_ID_LEN]!r}")
        key = lot_key(project, vintage)
        known = accounts.lots.get(key)
        if known is not None and known.credit_type != credit_type:
            return reject(R.MALFORMED, f"{project} is a {known.credit_type} project, "
                                       f"not {credit_type}")
        listed = next((s for s in self.specs.values() if s.holding == key), None)
        listing = None
        if cmd.list_symbol is not None or cmd.list_price_units is not None:
            # (checked even when the lot is listed already: bad input is refused, never
            # ignored; an existing listing keeps its benchmark)
            price = cmd.list_price_units
            if type(price) is PriceError:
                return reject(price.reason, f"declared initial price: {price.text}")
            if type(price) is not int or not 0 < price <= MAX_PRICE_UNITS:
                return reject(R.MALFORMED, "a listing needs a declared initial price above 0 "
                                           "and at most 1000000.00 CNY per tonne")
            if listed is not None:
                if cmd.list_symbol != listed.symbol:
                    return reject(R.MALFORMED, f"{project} vintage {vintage} is already "
                                               f"listed as {listed.symbol}")
            else:
                try:
                    # the tick of the type's standard contract (0.01 CNY without one)
                    base = self.specs.get(next((symbol for symbol, kind
                                                in STANDARD_CONTRACTS.items()
                                                if kind == credit_type), ""))
                    tick = base.tick_units if base is not None else 10_000
                    if price % tick:
                        raise ValueError("the declared initial price is not a multiple of the "
                                         "tick")
                    problem = symbol_problem(cmd.list_symbol)
                    if problem:
                        raise ValueError(problem)
                    listing = InstrumentSpec(
                        cmd.list_symbol, tick, ref_ticks=price // tick,
                        credit_type=credit_type, project=project, vintage=vintage)
                except (ValueError, TypeError) as bad:
                    return reject(R.MALFORMED, f"cannot list the lot: {bad}")
                if listing.symbol in self.specs:
                    return reject(R.MALFORMED, f"symbol {listing.symbol} is taken")
        accounts.register_lot(Lot(credit_type, project, vintage))
        account.credits[key] = account.credits.get(key, 0) + amount
        self.deposit_ids.add(cmd.deposit_id)
        self.seq += 1
        out.append(Deposited(self.seq, ts, cmd.deposit_id, account_id, key, amount,
                             credit_type, project, vintage))
        if listing is not None:
            self._define_spec(listing.with_tradable_from(self._first_trading_day()),
                              ts, out)
        if accounts.report_ppm:
            self._report_large(account_id, {key: amount}, out, ts)

    def _retire(self, cmd: Retire, ts: int, out: list) -> None:
        """Retire (注销) free credits of one lot or pooled holding for good."""
        retire_id, account_id, qty, purpose = cmd.retire_id, cmd.account, cmd.qty, cmd.purpose

        def reject(reason: R, text: str) -> None:
            self._reject(out, ts, "retire", retire_id, reason, text, cmd.owner)

        if type(retire_id) is not str or not retire_id or len(retire_id) > MAX_ID_LEN:
            return reject(R.MALFORMED, f"retire_id must be a string of 1-{MAX_ID_LEN} characters")
        if retire_id in self.retire_ids:
            return reject(R.DUPLICATE_RETIRE_ID, "retire id already applied")
        accounts = self.accounts
        account = accounts.get(account_id) if (accounts is not None
                                               and type(account_id) is str) else None
        if account is None:
            return reject(R.UNKNOWN_ACCOUNT, f"unknown account {str(account_id)[:MAX_ID_LEN]!r}")
        assert accounts is not None
        if cmd.instrument is not None:
            if cmd.project is not None or cmd.vintage is not None:
                return reject(R.MALFORMED, "retire names a lot (project, vintage) or an "
                                           "instrument's holding, not both")
            spec = self.specs.get(cmd.instrument) if type(cmd.instrument) is str else None
            if spec is None:
                return reject(R.UNKNOWN_INSTRUMENT,
                              f"unknown instrument {str(cmd.instrument)[:40]!r}")
            key = spec.holding
        else:
            if type(cmd.project) is not str or type(cmd.vintage) is not int:
                return reject(R.MALFORMED, "retire needs project (string) and vintage (year), "
                                           "or instrument")
            key = lot_key(cmd.project, cmd.vintage)
            if key not in accounts.lots:
                return reject(R.UNKNOWN_LOT, f"no credits of project {cmd.project[:64]!r} "
                                             f"vintage {cmd.vintage} were ever moved in")
        if type(qty) is not int or not 0 < qty <= MAX_DEPOSIT:
            return reject(R.INVALID_QTY, "qty must be a positive whole number of tonnes")
        if (type(purpose) is not str or not purpose.strip() or len(purpose) > 200
                or control_character(purpose) is not None):
            return reject(R.MALFORMED, "purpose must be one line of text, 1-200 characters "
                                       "(e.g. 2024年度碳排放配额清缴抵销)")
        try:
            accounts.retire(account, key, qty)
        except Refused as bad:
            return reject(bad.reason, bad.text)
        self.retire_ids.add(retire_id)
        lot = accounts.lots.get(key)
        credit_type, project, vintage = lot if lot is not None else (None, None, None)
        self.seq += 1
        out.append(Retired(self.seq, ts, retire_id, account_id, key, qty, purpose,
                           f"CCERX-RC-{len(self.retire_ids):08d}", credit_type, project, vintage,
                           cmd.owner))

    # ------------------------------------------------------------------ risk controls
    def _restricted(self, account, owner, side) -> str:
        """Why an order of `side` for this account (entered by member `owner`) is refused
        under the operator's restrictions, or "" if it is not. The member of an order is its
        entering broker and the member its account is registered to."""
        restrictions = self.restrictions
        members = [owner] if owner is not None else []
        if self.accounts is not None and type(account) is str:
            registered = self.accounts.get(account)
            if registered is not None and registered.member not in (None, owner):
                members.append(registered.member)
        for key in [("account", account), *(("member", m) for m in members)]:
            try:
                restricted = restrictions.get(key)
            except TypeError:          # an unhashable raw account: no restriction names it
                continue
            if restricted is not None and (restricted == "both" or restricted == side):
                sides = "new orders" if restricted == "both" else f"new {restricted} orders"
                return (f"Art.46: {key[0]} {key[1]} is restricted by the operator "
                        f"({sides} refused)")
        return ""

    def _set_limits(self, cmd: SetLimits, ts: int, out: list) -> None:
        """Set (replace) the position limits; a bad command is rejected and changes nothing."""
        limits, report_ppm = cmd.limits, cmd.report_ppm
        parsed: dict = {}
        text = ""
        if self.accounts is None:
            text = "position limits need accounts"
        elif type(report_ppm) is not int or not 0 <= report_ppm <= 1_000_000:
            text = "report_ppm must be a whole number of millionths from 0 to 1000000"
        elif type(limits) is not tuple:
            text = "limits must be a tuple of (participant type, per instrument, total)"
        else:
            types = {t.value: t for t in ParticipantType}
            for row in limits:
                if (type(row) is not tuple or len(row) != 3 or row[0] not in types
                        or types[row[0]] in parsed
                        or not all(v is None or (type(v) is int and 0 < v <= 10 ** 15)
                                   for v in row[1:])):
                    text = (f"bad limit {str(row)[:80]}: (one of {', '.join(types)}, a "
                            f"positive whole number of tonnes or None, the same or None), "
                            f"each type once")
                    break
                parsed[types[row[0]]] = (row[1], row[2])
        if text:
            return self._reject(out, ts, "limits", None, R.MALFORMED, text, cmd.owner)
        accounts = self.accounts
        assert accounts is not None
        accounts.set_limits(parsed, report_ppm, self.books)
        self.seq += 1
        out.append(LimitsSet(self.seq, ts, tuple(sorted(tuple(r) for r in accounts.limits_json())),
                             report_ppm))

    def _restrict(self, cmd: Restrict, ts: int, out: list) -> None:
        """Restrict, release or kill an account or a member (the kill cancels its open
        orders, in book order, after the RestrictionChanged event)."""
        scope, target, side, kill = cmd.scope, cmd.target, cmd.side, cmd.kill
        op = "kill" if kill is True else "restrict"
        if scope not in ("account", "member") or type(kill) is not bool:
            return self._reject(out, ts, op, None, R.MALFORMED,
                                "scope must be 'account' or 'member'", cmd.owner)
        if type(target) is not str or not target or len(target) > MAX_ID_LEN:
            return self._reject(out, ts, op, None, R.MALFORMED,
                                f"{scope} must be a string of 1-{MAX_ID_LEN} characters", cmd.owner)
        if side not in ("buy", "sell", "both", "none") or (kill and side != "both"):
            return self._reject(out, ts, op, None, R.INVALID_SIDE,
                                "side must be 'buy', 'sell', 'both' or 'none' (a kill: 'both')",
                                cmd.owner)
        if scope == "account" and self.accounts is not None and self.accounts.get(target) is None:
            return self._reject(out, ts, op, None, R.UNKNOWN_ACCOUNT,
                                f"unknown account {target!r}", cmd.owner)
        if side == "none":
            self.restrictions.pop((scope, target), None)
        else:
            self.restrictions[(scope, target)] = side
        self.seq += 1
        out.append(RestrictionChanged(self.seq, ts, scope, target, side, kill))
        if not kill:
            return
        accounts = self.accounts
        for symbol, book in self.books.items():
            spec = self.specs[symbol]
            for book_side in (book.bids, book.asks):
                for level in list(book_side.iter_levels()):
                    for order in list(level.orders()):
                        if scope == "account":
                            hit = order.account == target
                        else:
                            registered = accounts.get(order.account) if accounts else None
                            hit = order.owner == target or (registered is not None
                                                            and registered.member == target)
                        if hit:
                            self._cancel_resting(book, spec, order, CancelReason.KILL, out, ts)

    def _malformed(self, cmd: Malformed, ts: int, out: list) -> None:
        self._reject(out, ts, cmd.op, cmd.order_id, R.MALFORMED, cmd.text)

    def _end_of_day(self, cmd: EndOfDay, ts: int, out: list) -> None:
        for symbol, book in self.books.items():
            spec = self.specs[symbol]
            for book_side in (book.bids, book.asks):
                for level in list(book_side.iter_levels()):
                    for order in list(level.orders()):
                        self._cancel_resting(book, spec, order, CancelReason.EOD, out, ts)
            volume, turnover, trades = self.day_stats[symbol]
            close = (2 * turnover + volume) // (2 * volume) if volume else spec.ref_ticks
            self.specs[symbol] = spec.with_ref_ticks(close)
            self.day_stats[symbol] = [0, 0, 0]
            self.seq += 1
            out.append(DayClosed(self.seq, ts, symbol, close, volume,
                                 turnover * spec.tick_fen, trades))
        self.seen_order_ids.clear()
        self.last_close_ts = ts
        self.closes += 1
        self.after_close = True
        if self.accounts is not None:
            self.accounts.end_of_day()

    # ------------------------------------------------------------------ inspection
    def check(self) -> None:
        """Raise AssertionError if any invariant of books or accounts is broken."""
        ids: set[str] = set()
        for symbol, book in self.books.items():
            book.check()
            assert book.where is self.resting_in, f"{symbol}: book outside the order index"
            assert all(self.resting_in[oid] is book for oid in book.orders), "order index"
            assert not ids & book.orders.keys(), "an order id rests in two books"
            ids |= book.orders.keys()
        assert len(ids) == len(self.resting_in), "order index holds orders that do not rest"
        assert ids <= self.seen_order_ids, "resting order whose id was never seen"
        if self.accounts is not None:
            self.accounts.check()
            self.accounts.check_reservations(self.books, self.specs)
            assert self.accounts.closes == self.closes, "trading day miscounted"

    def snapshot_books(self) -> dict:
        return {symbol: book.snapshot() for symbol, book in self.books.items()}

    def state_hash(self) -> str:
        """Deterministic digest of everything that decides future behaviour."""
        h = hashlib.blake2b(digest_size=16)
        h.update(repr((self.seq, self.next_trade_id, self.last_ts, self.fee_ppm)).encode())
        if not self._plain_rules:    # (so hashes under `continuous` stay the same)
            h.update(repr((self.rules.to_json(), self.accounts and self.accounts.closes)).encode())
        if not self.trading_open or self.last_close_ts:  # (so hashes of older states stay the same)
            h.update(repr((self.trading_open, self.last_close_ts)).encode())
        if self.halted:
            h.update(b"halted")
        if self.after_close and self.rules.listing_days:   # (only where it decides anything)
            h.update(b"after close")
        if self.accounts is None and self.closes and not self._plain_rules:
            h.update(repr(self.closes).encode())
        for symbol in sorted(self.specs):
            h.update(repr((self.specs[symbol], self.day_stats[symbol])).encode())
            if self.specs[symbol].lot_fields():     # (only then, so older hashes stay the same)
                h.update(repr(self.specs[symbol].lot_fields()).encode())
            book = self.books[symbol]
            for side in (book.bids, book.asks):
                for level in side.iter_levels():
                    h.update(repr([(o.order_id, o.account, o.open_qty, o.filled_qty, o.reserved,
                                    o.owner, *(() if o.lots is None else (o.lots,)))
                                   for o in level.orders()]).encode())
                    h.update(repr(level.price).encode())
        h.update(repr(sorted(self.seen_order_ids)).encode())
        if self.deposit_ids:   # (so hashes of states without deposits stay the same)
            h.update(repr(sorted(self.deposit_ids)).encode())
        if self.retire_ids:    # (likewise for retirements and lots)
            h.update(repr(sorted(self.retire_ids)).encode())
        if self.accounts is not None and self.accounts.lots:
            h.update(repr(sorted(self.accounts.lots.items())).encode())
        if self.restrictions:     # (only when used, so that older hashes stay the same)
            h.update(repr(sorted(self.restrictions.items())).encode())
        if self.accounts is not None and (self.accounts.limits or self.accounts.report_ppm):
            h.update(repr((self.accounts.limits_json(), self.accounts.report_ppm)).encode())
        if self.accounts is not None:
            for key in sorted(self.accounts.by_id):
                h.update(repr(self.accounts.by_id[key].to_json()).encode())
        return h.hexdigest()
