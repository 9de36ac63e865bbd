"""Participants, balances and pre-trade reservations (fully pre-funded market).

A buy reserves cash for price x quantity plus the buyer's fee at its limit (market buys
at the band's upper limit); a sell reserves credits of that type. Credits bought today
cannot be sold again until the day closes. Under a rule profile with a holding period
(rules.py, Art.29) the accounts also remember, per instrument, the trading day of the
account's last buy and last sell (`closes`: the number of end-of-day closes applied so far
is the current trading day), and refuse the opposite side until `holding_days` closes later. Reservations live on the order
(`Order.reserved`) and are released on fill or cancel.

Fees are ad valorem per side, rounded down to the fen per trade. Rounding down is what
makes a reservation provably sufficient: the sum of per-fill floors never exceeds the
floor of the sum, so an order never needs more than it reserved.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

from ccerx.engine.core.types import (InstrumentSpec, ParticipantType, RejectReason as R, Side,
                                     format_fen)

if TYPE_CHECKING:
    from ccerx.engine.core.book import Order

BUY = Side.BUY

DEFAULT_FEE_PPM = 6_000  # the exchange's listed rate: 6 per mille of turnover per side
PPM = 1_000_000


def fee_fen(gross_fen: int, fee_ppm: int) -> int:
    """The exchange's fee on one side of a trade: ad valorem, rounded down to the fen. The
    one home of the formula (matching, reservations and the simulator's books call it)."""
    return gross_fen * fee_ppm // PPM


@dataclass(slots=True)
class Account:
    account: str
    participant_type: ParticipantType = ParticipantType.OTHER_ORGANISATION
    member: str | None = None             # broker member the account is registered to
    cash: int = 0                         # fen, total owned
    cash_reserved: int = 0                # fen held for open buy orders
    credits: dict[str, int] = field(default_factory=dict)           # t owned per instrument
    credits_reserved: dict[str, int] = field(default_factory=dict)  # t held for open sells
    bought_today: dict[str, int] = field(default_factory=dict)      # t not sellable until EOD
    fees_paid: int = 0                    # fen, cumulative
    # Art.29 holding period (only under a profile with holding_days): instrument -> the
    # trading day (closes applied before it) of the account's last buy / last sell
    last_bought: dict[str, int] = field(default_factory=dict)
    last_sold: dict[str, int] = field(default_factory=dict)
    # derived (not part of the state: Accounts.recount_open_buys rebuilds it from the books):
    # instrument -> open buy orders, kept only under a holding period; open sells show as
    # credits_reserved
    open_buys: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    # derived, kept only while position limits are set (Accounts.recount_open_buys): instrument
    # -> tonnes of open buy orders, which count toward the holding a limit caps
    open_buy_qty: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    @property
    def cash_available(self) -> int:
        return self.cash - self.cash_reserved

    def credits_sellable(self, instrument: str) -> int:
        return (self.credits.get(instrument, 0) - self.credits_reserved.get(instrument, 0)
                - self.bought_today.get(instrument, 0))

    def check(self) -> None:
        assert 0 <= self.cash_reserved <= self.cash, f"{self.account}: cash reservation broken"
        for instrument, held in self.credits.items():
            reserved = self.credits_reserved.get(instrument, 0)
            today = self.bought_today.get(instrument, 0)
            assert held >= 0 and reserved >= 0 and today >= 0, f"{self.account}: negative credits"
            assert reserved + today <= held, f"{self.account}: sold credits it may not sell"

    def to_json(self) -> dict:
        return {"account": self.account, "type": self.participant_type.value,
                "member": self.member, "cash": format_fen(self.cash),
                "cash_reserved": format_fen(self.cash_reserved),
                "credits": dict(sorted(self.credits.items())),
                "credits_reserved": {k: v for k, v in sorted(self.credits_reserved.items()) if v},
                "bought_today": {k: v for k, v in sorted(self.bought_today.items()) if v},
                "fees_paid": format_fen(self.fees_paid),
                # (only when set, so that states without a holding period hash as before)
                **({"last_bought": dict(sorted(self.last_bought.items()))}
                   if self.last_bought else {}),
                **({"last_sold": dict(sorted(self.last_sold.items()))} if self.last_sold else {})}


class Refused(Exception):
    """Internal control flow of the exchange: a pre-trade check (or a field check) failed.
    The exchange turns it into an OrderRejected value; it never leaves the core."""

    def __init__(self, reason: R, text: str):
        self.reason, self.text = reason, text


def cash_needed(spec: InstrumentSpec, price, qty: int, fee_ppm: int) -> int:
    """Cash to reserve for a buy of qty at limit `price` ticks (market: band top), fee incl."""
    gross = (spec.max_ticks if price is None else price) * spec.tick_fen * qty
    return gross + fee_fen(gross, fee_ppm)


class Accounts:
    """The account table the risk checks run against, and the reservations and settlement
    of the trades the matcher makes (everything that moves an account's cash or credits)."""

    def __init__(self, accounts: Iterable[Account] = (), fee_ppm: int = DEFAULT_FEE_PPM):
        self.by_id: dict[str, Account] = {}
        self.fee_ppm = fee_ppm
        self.holding_days = 0     # set by the exchange from its rule profile
        self.closes = 0           # end-of-day closes applied: the current trading day number
        # Art.37/38 position limits: participant type -> (per instrument t | None, total t |
        # None); empty: no limits (and no open buy quantities kept). report_ppm: the share of
        # a limit at which a holding is reported (0: never)
        self.limits: dict[ParticipantType, tuple] = {}
        self.report_ppm = 0
        for account in accounts:
            self.add(account)

    def add(self, account: Account) -> None:
        if account.account in self.by_id:
            raise ValueError(f"duplicate account {account.account!r}")
        self.by_id[account.account] = account

    def get(self, account_id) -> Account | None:
        return self.by_id.get(account_id)

    def end_of_day(self) -> None:
        for account in self.by_id.values():
            account.bought_today.clear()
        self.closes += 1

    def check(self) -> None:
        for account in self.by_id.values():
            account.check()
            if self.holding_days:
                for symbol, bought in account.last_bought.items():
                    sold = account.last_sold.get(symbol)
                    assert sold is None or abs(sold - bought) >= self.holding_days, \
                        f"{account.account}: bought and sold {symbol} within the holding period"

    def check_holding(self, account_id, side: Side, symbol: str, book) -> None:
        """Art.29: refuse an order (raises Refused holding_period) if its account traded the
        other side of `symbol` fewer than `holding_days` trading days ago, or has an order of
        the other side resting in `book` (both could trade today). A trade on trading day D
        (after D closes) allows the opposite side from day D + holding_days on. O(1): the
        account's open sells are its credits_reserved, its open buys `open_buys` (the book
        is scanned only to name the order in a refusal)."""
        account = self.by_id.get(account_id)
        if account is None:
            raise Refused(R.UNKNOWN_ACCOUNT, f"unknown account {account_id!r}")
        buying = side is BUY
        last = (account.last_sold if buying else account.last_bought).get(symbol)
        if last is not None:
            remaining = last + self.holding_days - self.closes
            if remaining > 0:
                raise Refused(R.HOLDING_PERIOD, (
                    f"Art.29: {symbol} was {'sold' if buying else 'bought'} on trading day "
                    f"{last}; it may be {'bought' if buying else 'sold'} from trading day "
                    f"{last + self.holding_days} ({self.holding_days} trading days later), "
                    f"after {remaining} more close{'s' if remaining > 1 else ''}"))
        if not (account.credits_reserved.get(symbol) if buying else account.open_buys.get(symbol)):
            return
        for resting in book.orders.values():
            if resting.account == account_id and resting.side is not side:
                raise Refused(R.HOLDING_PERIOD, (
                    f"Art.29: a {resting.side.value} order of {symbol} rests "
                    f"({resting.order_id}); buying and selling {symbol} within "
                    f"{self.holding_days} trading days is not allowed: cancel it first"))
        raise AssertionError(f"{account_id}: open {symbol} orders miscounted")

    def recount_open_buys(self, books) -> None:
        """Rebuild every account's open_buys (and, under limits, open_buy_qty) from the
        resting orders (after a restore, or when limits are set)."""
        for account in self.by_id.values():
            account.open_buys.clear()
            account.open_buy_qty.clear()
        if not self.holding_days and not self.limits:
            return
        for symbol, book in books.items():
            for order in book.orders.values():
                if order.side is BUY:
                    account = self.by_id[order.account]
                    if self.holding_days:
                        account.open_buys[symbol] = account.open_buys.get(symbol, 0) + 1
                    if self.limits:
                        qty = account.open_buy_qty
                        qty[symbol] = qty.get(symbol, 0) + order.open_qty

    # ------------------------------------------------------------------ position limits
    def set_limits(self, limits: dict, report_ppm: int, books) -> None:
        self.limits = dict(limits)
        self.report_ppm = report_ppm
        self.recount_open_buys(books)

    def limits_json(self) -> list:
        """[[participant type, per instrument | None, total | None], ...] sorted by type."""
        return sorted([t.value, per, total] for t, (per, total) in self.limits.items())

    def check_limit(self, account: Account, symbol: str, more: int) -> None:
        """Art.37: refuse (position_limit) a buy of `more` t of `symbol` if the account's
        holding (owned + open buys) could then exceed its type's limit for the instrument or
        for all credit types together. O(instruments)."""
        limit = self.limits.get(account.participant_type)
        if limit is None:
            return
        per, total = limit
        if per is not None:
            held = account.credits.get(symbol, 0) + account.open_buy_qty.get(symbol, 0)
            if held + more > per:
                raise Refused(R.POSITION_LIMIT, (
                    f"Art.37: {account.account} holds {held} t of {symbol} with open buys; "
                    f"{more} t more would exceed the position limit of {per} t for "
                    f"{account.participant_type.value}"))
        if total is not None:
            held = sum(account.credits.values()) + sum(account.open_buy_qty.values())
            if held + more > total:
                raise Refused(R.POSITION_LIMIT, (
                    f"Art.37: {account.account} holds {held} t of all credit types with open "
                    f"buys; {more} t more would exceed the total position limit of {total} t "
                    f"for {account.participant_type.value}"))

    def large_holdings(self, account_id: str, symbol: str, before: int) -> list:
        """Art.38: [(instrument or None for the total, holding, limit)] whose reporting
        threshold the account's holding just reached (it held `before` t of `symbol` before)."""
        account = self.by_id[account_id]
        limit = self.limits.get(account.participant_type)
        if limit is None or not self.report_ppm:
            return []
        out = []
        per, total = limit
        gained = account.credits.get(symbol, 0) - before
        for name, cap, now in ((symbol, per, account.credits.get(symbol, 0)),
                               (None, total, sum(account.credits.values()) if total is not None else 0)):
            if cap is not None:
                threshold = -(-cap * self.report_ppm // PPM)      # ceiling: reached at >=
                if now - gained < threshold <= now:
                    out.append((name, now, cap))
        return out

    def totals(self) -> tuple[int, dict[str, int]]:
        """(total cash incl. fees paid, total credits per instrument): conserved by trading."""
        cash = sum(a.cash + a.fees_paid for a in self.by_id.values())
        credits: dict[str, int] = {}
        for a in self.by_id.values():
            for k, v in a.credits.items():
                credits[k] = credits.get(k, 0) + v
        return cash, credits

    # ------------------------------------------------------------------ reservations
    def reserve_new(self, order: "Order", spec: InstrumentSpec, fee_ppm: int) -> None:
        """Hold what a new order may spend (raises Refused if the account cannot)."""
        account = self.by_id.get(order.account)
        if account is None:
            raise Refused(R.UNKNOWN_ACCOUNT, f"unknown account {order.account!r}")
        if order.side is BUY:
            if self.limits:
                self.check_limit(account, spec.symbol, order.open_qty)
            need = cash_needed(spec, order.price, order.open_qty, fee_ppm)
            if need > account.cash - account.cash_reserved:
                raise Refused(R.INSUFFICIENT_FUNDS,
                              f"needs {format_fen(need)} CNY incl. fee, "
                              f"{format_fen(account.cash - account.cash_reserved)} CNY available")
            account.cash_reserved += need
            if self.holding_days:
                account.open_buys[spec.symbol] = account.open_buys.get(spec.symbol, 0) + 1
            if self.limits:
                qty = account.open_buy_qty
                qty[spec.symbol] = qty.get(spec.symbol, 0) + order.open_qty
        else:
            need = order.open_qty
            if need > account.credits_sellable(spec.symbol):
                raise Refused(R.INSUFFICIENT_CREDITS,
                              f"needs {need} t of {spec.symbol}, "
                              f"{account.credits_sellable(spec.symbol)} t sellable")
            reserved = account.credits_reserved
            reserved[spec.symbol] = reserved.get(spec.symbol, 0) + need
        order.reserved = need

    def re_reserve(self, order: "Order", spec: InstrumentSpec, price: int, open_qty: int,
                   fee_ppm: int) -> None:
        """Resize the order's reservation for its amended price and open quantity."""
        account = self.by_id[order.account]
        if order.side is BUY:
            more = open_qty - order.open_qty
            if self.limits and more > 0:
                self.check_limit(account, spec.symbol, more)
            need = cash_needed(spec, price, open_qty, fee_ppm)
            extra = need - order.reserved
            if extra > account.cash - account.cash_reserved:
                raise Refused(R.INSUFFICIENT_FUNDS,
                              f"amend needs {format_fen(extra)} CNY more, "
                              f"{format_fen(account.cash - account.cash_reserved)} CNY available")
            account.cash_reserved += extra
            if self.limits:
                account.open_buy_qty[spec.symbol] += more
        else:
            need = open_qty
            extra = need - order.reserved
            if extra > account.credits_sellable(spec.symbol):
                raise Refused(R.INSUFFICIENT_CREDITS, "amend needs more sellable credits")
            account.credits_reserved[spec.symbol] += extra
        order.reserved = need

    def release(self, order: "Order", spec: InstrumentSpec) -> None:
        """Give back what an order that no longer rests still holds (called before its
        open quantity is zeroed: under limits that much stops counting as an open buy)."""
        account = self.by_id[order.account]
        if order.side is BUY:
            account.cash_reserved -= order.reserved
            if self.holding_days:
                account.open_buys[spec.symbol] -= 1
            if self.limits:
                account.open_buy_qty[spec.symbol] -= order.open_qty
        else:
            account.credits_reserved[spec.symbol] -= order.reserved
        order.reserved = 0

    def settle(self, spec: InstrumentSpec, buy: "Order", sell: "Order", qty: int, gross: int,
               fee: int, fee_ppm: int) -> None:
        """Move cash and credits of one trade between the two accounts; charge both fees."""
        symbol = spec.symbol
        buyer, seller = self.by_id[buy.account], self.by_id[sell.account]
        charge = gross + fee
        buy.reserved -= charge
        buyer.cash_reserved -= charge
        buyer.cash -= charge
        buyer.fees_paid += fee
        buyer.credits[symbol] = buyer.credits.get(symbol, 0) + qty
        buyer.bought_today[symbol] = buyer.bought_today.get(symbol, 0) + qty
        # Re-size the buy's reservation to what its open quantity needs at its limit: a fill
        # below the limit (or a fee rounded down) must not keep the saving locked. The need
        # shrinks by at least the charge (floor fees are superadditive), so this never grows.
        need = cash_needed(spec, buy.price, buy.open_qty, fee_ppm) if buy.open_qty else 0
        excess = buy.reserved - need
        if excess:
            buy.reserved = need
            buyer.cash_reserved -= excess
        sell.reserved -= qty
        seller.credits_reserved[symbol] -= qty
        seller.credits[symbol] -= qty
        seller.cash += gross - fee
        seller.fees_paid += fee
        if self.limits:
            buyer.open_buy_qty[symbol] -= qty
        if self.holding_days:
            buyer.last_bought[symbol] = seller.last_sold[symbol] = self.closes
            if not buy.open_qty:           # the buy is done (its reservation just went to 0)
                buyer.open_buys[symbol] -= 1
        if excess < 0 or sell.reserved < 0:
            raise AssertionError(f"reservation overdrawn on trade {buy.order_id}/{sell.order_id}")

    def check_reservations(self, books) -> None:
        """Every account's reservations equal what its resting orders hold."""
        for account in self.by_id.values():
            held_cash = sum(o.reserved for b in books.values() for o in b.orders.values()
                            if o.account == account.account and o.side is BUY)
            assert held_cash == account.cash_reserved, f"{account.account}: cash reservations"
            for symbol, book in books.items():
                held = sum(o.reserved for o in book.orders.values()
                           if o.account == account.account and o.side is not BUY)
                assert held == account.credits_reserved.get(symbol, 0), \
                    f"{account.account}: {symbol} credit reservations"
                if self.limits:
                    tonnes = sum(o.open_qty for o in book.orders.values()
                                 if o.account == account.account and o.side is BUY)
                    assert tonnes == account.open_buy_qty.get(symbol, 0), \
                        f"{account.account}: {symbol} open buy tonnes miscounted"
                if self.holding_days:
                    buys = sum(1 for o in book.orders.values()
                               if o.account == account.account and o.side is BUY)
                    assert buys == account.open_buys.get(symbol, 0), \
                        f"{account.account}: {symbol} open buys miscounted"
