"""Participants, balances and pre-trade reservations (fully pre-funded market).

A buy reserves cash for price x quantity plus the buyer's fee at its limit (market buys
at the band's upper limit); a sell reserves the credits it delivers: of its listing's lot, of
a pooled instrument's holding, or, for a contract, of eligible lots chosen at entry in the
allocation order of lots.py (kept on the order as `Order.lots`, delivered in that order).
Holdings are keyed by holding key (lots.py): a lot key or an instrument's own symbol. Credits bought today
cannot be sold again until the day closes. Under a rule profile with a holding period
(rules.py, Art.29; what it restricts is written down in lots.py, HOLDING PERIOD) the
accounts also remember, per instrument, the trading day of the account's last buy and last
sell (`closes`: the number of end-of-day closes applied so far is the current trading day),
and refuse the opposite side until `holding_days` closes later; and, per holding key, the
trading day of the last purchase and the last sale still within the period
(`Account.lot_bought`, `Account.lot_sold`, pruned at each close). Reservations live on the
order (`Order.reserved`) and are released on fill or cancel.

Fees are ad valorem per side, rounded down to the fen per trade. Rounding down is what
makes a reservation provably sufficient: the sum of per-fill floors never exceeds the
floor of the sum, so an order never needs more than it reserved.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

from ccerx.engine.core.lots import Lot
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
    credits: dict[str, int] = field(default_factory=dict)           # t owned per holding key
    credits_reserved: dict[str, int] = field(default_factory=dict)  # t held for open sells
    bought_today: dict[str, int] = field(default_factory=dict)      # t not sellable until EOD
    fees_paid: int = 0                    # fen, cumulative
    # Art.29 holding period (only under a profile with holding_days): instrument -> the
    # trading day (closes applied before it) of the account's last buy / last sell
    last_bought: dict[str, int] = field(default_factory=dict)
    last_sold: dict[str, int] = field(default_factory=dict)
    retired: dict[str, int] = field(default_factory=dict)    # t retired (注销) per holding key
    # Art.29 on the credits (lots.py, HOLDING PERIOD; only under a holding period): holding
    # key -> the trading day of the account's last purchase / last sale of it, through any
    # instrument, kept while that day is within the period (each close drops the others)
    lot_bought: dict[str, int] = field(default_factory=dict)
    lot_sold: dict[str, int] = field(default_factory=dict)
    # derived (not part of the state: Accounts.recount_open_buys rebuilds it from the books):
    # instrument -> open buy orders, kept only under a holding period; open sells show as
    # credits_reserved
    open_buys: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    open_sells: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    # derived, kept only while position limits are set (Accounts.recount_open_buys): instrument
    # -> tonnes of open buy orders, which count toward the holding a limit caps
    open_buy_qty: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    @property
    def cash_available(self) -> int:
        return self.cash - self.cash_reserved

    def credits_sellable(self, key: str) -> int:
        """Free credits of one holding key: owned, not reserved, not bought today; none
        while the holding period holds the whole key back (bought within it: lots.py)."""
        if self.lot_bought and key in self.lot_bought:
            return 0
        return (self.credits.get(key, 0) - self.credits_reserved.get(key, 0)
                - self.bought_today.get(key, 0))

    def credits_retirable(self, key: str) -> int:
        """Credits of one holding key the account may retire: owned, not reserved, not
        bought today. The holding period restricts selling, not retiring."""
        return (self.credits.get(key, 0) - self.credits_reserved.get(key, 0)
                - self.bought_today.get(key, 0))

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
                **({"last_sold": dict(sorted(self.last_sold.items()))} if self.last_sold else {}),
                **({"retired": dict(sorted(self.retired.items()))} if self.retired else {}),
                **({"lot_bought": dict(sorted(self.lot_bought.items()))}
                   if self.lot_bought else {}),
                **({"lot_sold": dict(sorted(self.lot_sold.items()))} if self.lot_sold else {})}


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
        # every lot ever moved in or listed: lot key -> Lot (lots.py); empty: no lots, and
        # contracts deliver their pooled (default lot) holding exactly as before lots existed
        self.lots: dict[str, Lot] = {}
        for account in accounts:
            self.add(account)

    def add(self, account: Account) -> None:
        if account.account in self.by_id:
            raise ValueError(f"duplicate account {account.account!r}")
        self.by_id[account.account] = account

    def get(self, account_id) -> Account | None:
        return self.by_id.get(account_id)

    def end_of_day(self) -> None:
        """The close of trading day `closes`: today's purchases become sellable (under a
        holding period, once it is over: lots.py, HOLDING PERIOD), and purchases and sales
        whose period is over are forgotten."""
        for account in self.by_id.values():
            account.bought_today.clear()
        self.closes += 1
        if self.holding_days:
            over = self.closes - self.holding_days     # a trade on this day or before: free
            for account in self.by_id.values():
                for days in (account.lot_bought, account.lot_sold):
                    if days:
                        for key in [k for k, day in days.items() if day <= over]:
                            del days[key]

    def check(self) -> None:
        for account in self.by_id.values():
            account.check()
            if self.holding_days:
                for symbol, bought in account.last_bought.items():
                    sold = account.last_sold.get(symbol)
                    assert sold is None or abs(sold - bought) >= self.holding_days, \
                        f"{account.account}: bought and sold {symbol} within the holding period"
                for days in (account.lot_bought, account.lot_sold):
                    assert all(self.closes - self.holding_days < day <= self.closes
                               for day in days.values()), f"{account.account}: stale lot days"
            else:
                assert not account.lot_bought and not account.lot_sold, account.account

    def check_holding(self, account_id, side: Side, symbol: str, book,
                      lot: str | None = None) -> None:
        """Art.29: refuse an order (raises Refused holding_period) if its account traded the
        other side of `symbol` fewer than `holding_days` trading days ago, or has an order of
        the other side resting in `book` (both could trade today), or, for a buy of a
        listing (`lot`: its holding key), sold that lot through any instrument fewer than
        `holding_days` trading days ago (lots.py, HOLDING PERIOD). A trade on trading day D
        (after D closes) allows the opposite side from day D + holding_days on. O(1): the
        account's open sells and buys are counted (`open_sells`, `open_buys`; the book
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
        if buying and lot is not None and account.lot_sold:
            sold = account.lot_sold.get(lot)
            if sold is not None:
                raise Refused(R.HOLDING_PERIOD, (
                    f"Art.29: lot {lot} was sold on trading day {sold} (through any "
                    f"instrument); {symbol} may be bought from trading day "
                    f"{sold + self.holding_days}, today is day {self.closes}"))
        if not (account.open_sells if buying else account.open_buys).get(symbol):
            return
        for resting in (o for level in book.opposite(side).iter_levels()
                        for o in level.orders()):          # (in priority: deterministic)
            if resting.account == account_id:
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
            account.open_sells.clear()
            account.open_buy_qty.clear()
        if not self.holding_days and not self.limits:
            return
        for symbol, book in books.items():
            for order in book.orders.values():
                if order.side is not BUY and self.holding_days:
                    sells = self.by_id[order.account].open_sells
                    sells[symbol] = sells.get(symbol, 0) + 1
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

    def check_limit(self, account: Account, spec: InstrumentSpec, more: int,
                    specs: dict | None = None) -> None:
        """Art.37: refuse (position_limit) a buy of `more` t of `symbol` if the account's
        holding (owned + open buys) could then exceed its type's limit for the instrument or
        for all credit types together. Open buys count for an instrument when they may
        deliver what it trades (`overlaps`: a listing's lot and the contracts it is eligible
        for). O(instruments)."""
        limit = self.limits.get(account.participant_type)
        if limit is None:
            return
        symbol = spec.symbol
        per, total = limit
        if per is not None:
            buys = account.open_buy_qty
            held = self.held(account, spec) + sum(
                buys.get(other.symbol, 0) for other in (specs or {symbol: spec}).values()
                if self.overlaps(spec, other))
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

    def holds(self, spec: InstrumentSpec, key: str) -> bool:
        """Whether holding `key` is credits that `spec` trades (lots.py)."""
        if spec.credit_type and not spec.project:
            if key == spec.symbol:     # the default lot's vintage is unknown: never in a range
                return not (spec.vintage_from or spec.vintage_to)
            lot = self.lots.get(key)
            return lot is not None and spec.eligible(lot)
        return key == spec.holding

    @staticmethod
    def overlaps(one: InstrumentSpec, other: InstrumentSpec) -> bool:
        """Whether a buy of `other` may deliver credits that `one` trades."""
        if one.symbol == other.symbol:
            return True
        if not one.credit_type or not other.credit_type or one.credit_type != other.credit_type:
            return False
        if one.project and other.project:
            return one.holding == other.holding
        if one.project or other.project:
            listing, contract = (one, other) if one.project else (other, one)
            return contract.eligible(Lot(listing.credit_type, listing.project, listing.vintage))
        low = max(one.vintage_from, other.vintage_from)
        highs = [v for v in (one.vintage_to, other.vintage_to) if v]
        return not highs or low <= min(highs)

    def held(self, account: Account, spec: InstrumentSpec) -> int:
        """Tonnes the account owns of what `spec` trades (a contract: every eligible lot)."""
        if spec.credit_type and not spec.project:
            return sum(qty for key, qty in account.credits.items() if self.holds(spec, key))
        return account.credits.get(spec.holding, 0)

    def large_holdings(self, account_id: str, gains: dict, specs: dict) -> list:
        """Art.38: [(instrument or None for the total, holding, limit)] whose reporting
        threshold the account's holding just reached by gaining `gains` (holding key -> t):
        every instrument that trades what was gained, in the exchange's order, then the
        total."""
        account = self.by_id[account_id]
        limit = self.limits.get(account.participant_type)
        if limit is None or not self.report_ppm:
            return []
        out = []
        per, total = limit
        rows: list[tuple[str | None, int, int, int]] = []
        if per is not None:
            for spec in specs.values():
                gained = sum(qty for key, qty in gains.items() if self.holds(spec, key))
                if gained:
                    rows.append((spec.symbol, per, self.held(account, spec), gained))
        if total is not None:
            rows.append((None, total, sum(account.credits.values()), sum(gains.values())))
        for name, cap, now, gained in rows:
            threshold = -(-cap * self.report_ppm // PPM)      # ceiling: reached at >=
            if now - gained < threshold <= now:
                out.append((name, now, cap))
        return out

    def totals(self) -> tuple[int, dict[str, int]]:
        """(total cash incl. fees paid, total credits per holding key incl. retired ones):
        conserved by trading and retiring."""
        cash = sum(a.cash + a.fees_paid for a in self.by_id.values())
        credits: dict[str, int] = {}
        for a in self.by_id.values():
            for holdings in (a.credits, a.retired):
                for k, v in holdings.items():
                    credits[k] = credits.get(k, 0) + v
        return cash, credits

    # ------------------------------------------------------------------ lots
    def register_lot(self, lot: Lot) -> None:
        self.lots[lot.key] = lot

    def lot_of(self, key: str) -> tuple:
        """(project, vintage) of a holding key; (None, None) for a pooled/default holding."""
        lot = self.lots.get(key)
        return (None, None) if lot is None else (lot.project, lot.vintage)

    def allocation(self, account: Account, spec: InstrumentSpec, need: int) -> list:
        """[[holding key, t], ...] of free credits a contract sell of `need` t reserves, in
        the allocation order (lots.py: default lot, then vintage, then project), skipping
        the lots the holding period holds back; raises Refused if the eligible lots hold less
        (holding_period if the held-back lots would have covered it)."""
        candidates = []
        for key in account.credits:
            if self.holds(spec, key):
                candidates.append((*self._allocation_key(key), key))
        candidates.sort()
        out, left = [], need
        for _, _, key in candidates:
            free = account.credits_sellable(key)
            if free > 0:
                take = free if free < left else left
                out.append([key, take])
                left -= take
                if not left:
                    return out
        raise self._short(account, spec, [key for _, _, key in candidates], need, need - left,
                          " (any eligible lot)")

    def _short(self, account: Account, spec: InstrumentSpec, keys: list, need: int, free: int,
               what: str = "") -> Refused:
        """The refusal of a sell of `need` t of `spec` that found `free` t sellable in
        holdings `keys`: holding_period if the unreserved credits of the lots the holding
        period holds back would have covered it (lots.py, HOLDING PERIOD),
        insufficient_credits otherwise."""
        bought = account.lot_bought
        held = sorted((bought[key], key, account.credits.get(key, 0)
                       - account.credits_reserved.get(key, 0)) for key in keys if key in bought)
        if held and free + sum(qty for _, _, qty in held) >= need:
            enough = free
            for day, key, qty in held:
                enough += qty
                if enough >= need:
                    break
            return Refused(R.HOLDING_PERIOD, (
                f"Art.29: needs {need} t of {spec.symbol}{what}, {max(free, 0)} t sellable; "
                f"the rest is in lots bought within the last {self.holding_days} trading days "
                f"({key} on day {day}), sellable from trading day "
                f"{day + self.holding_days} (today is day {self.closes})"))
        return Refused(R.INSUFFICIENT_CREDITS,
                       f"needs {need} t of {spec.symbol}{what}, {max(free, 0)} t sellable")

    def _allocation_key(self, key: str) -> tuple:
        lot = self.lots.get(key)
        return (0, "") if lot is None else (lot.vintage, lot.project)

    def _reserve_sell(self, account: Account, spec: InstrumentSpec, order: "Order",
                      extra: int) -> None:
        """Reserve `extra` more t for a sell order (raises Refused if it cannot)."""
        key = spec.holding
        if (spec.credit_type and not spec.project
                and (self.lots or spec.vintage_from or spec.vintage_to)):
            more = self.allocation(account, spec, extra)
            if order.lots is not None or len(more) > 1 or more[0][0] != key:
                reserved = account.credits_reserved
                lots = order.lots
                if lots is None:
                    lots = order.lots = [[key, order.reserved]] if order.reserved else []
                for lot_key, qty in more:
                    reserved[lot_key] = reserved.get(lot_key, 0) + qty
                    for entry in lots:
                        if entry[0] == lot_key:
                            entry[1] += qty
                            break
                    else:
                        lots.append([lot_key, qty])
                lots.sort(key=lambda entry: self._allocation_key(entry[0]))
                return
        free = account.credits_sellable(key)
        if extra > free:
            raise self._short(account, spec, [key], extra, free)
        reserved = account.credits_reserved
        reserved[key] = reserved.get(key, 0) + extra

    def _unreserve_sell(self, account: Account, spec: InstrumentSpec, order: "Order",
                        less: int) -> None:
        """Give back `less` t of a sell's reservation (the last allocated lots first)."""
        reserved = account.credits_reserved
        lots = order.lots
        if lots is None:
            reserved[spec.holding] -= less
            return
        while less:
            entry = lots[-1]
            qty = entry[1] if entry[1] < less else less
            reserved[entry[0]] -= qty
            entry[1] -= qty
            less -= qty
            if not entry[1]:
                lots.pop()

    def retire(self, account: Account, key: str, qty: int) -> None:
        """Move `qty` t of free credits of holding `key` out of the market (Refused if the
        account cannot)."""
        free = account.credits_retirable(key)
        if qty > free:
            raise Refused(R.INSUFFICIENT_CREDITS,
                          f"needs {qty} free t of {key} (owned, not reserved for an order, "
                          f"not bought today), {max(free, 0)} t free")
        account.credits[key] -= qty
        account.retired[key] = account.retired.get(key, 0) + qty

    # ------------------------------------------------------------------ reservations
    def reserve_new(self, order: "Order", spec: InstrumentSpec, fee_ppm: int,
                    specs: dict | None = None) -> None:
        """Hold what a new order may spend (raises Refused if the account cannot)."""
        account = self.by_id.get(order.account)
        if account is None:
            raise Refused(R.UNKNOWN_ACCOUNT, f"unknown account {order.account!r}")
        if order.side is BUY:
            if self.limits:
                self.check_limit(account, spec, order.open_qty, specs)
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
            self._reserve_sell(account, spec, order, need)
            if self.holding_days:
                account.open_sells[spec.symbol] = account.open_sells.get(spec.symbol, 0) + 1
        order.reserved = need

    def re_reserve(self, order: "Order", spec: InstrumentSpec, price: int, open_qty: int,
                   fee_ppm: int, specs: dict | None = None) -> None:
        """Resize the order's reservation for its amended price and open quantity."""
        account = self.by_id[order.account]
        if order.side is BUY:
            more = open_qty - order.open_qty
            if self.limits and more > 0:
                self.check_limit(account, spec, more, specs)
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
            if extra > 0:
                try:
                    self._reserve_sell(account, spec, order, extra)
                except Refused as short:
                    raise Refused(short.reason,
                                  f"amend needs more sellable credits: {short.text}") from None
            elif extra < 0:
                self._unreserve_sell(account, spec, order, -extra)
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
        elif order.lots is None:
            account.credits_reserved[spec.holding] -= order.reserved
            if self.holding_days:
                account.open_sells[spec.symbol] -= 1
        else:
            reserved = account.credits_reserved
            for key, qty in order.lots:
                reserved[key] -= qty
            order.lots = None
            if self.holding_days:
                account.open_sells[spec.symbol] -= 1
        order.reserved = 0

    def settle(self, spec: InstrumentSpec, buy: "Order", sell: "Order", qty: int, gross: int,
               fee: int, fee_ppm: int) -> tuple:
        """Move cash and credits of one trade between the two accounts; charge both fees.
        Returns the lots delivered (TradeExecuted.lots)."""
        symbol = spec.symbol
        buyer, seller = self.by_id[buy.account], self.by_id[sell.account]
        charge = gross + fee
        buy.reserved -= charge
        buyer.cash_reserved -= charge
        buyer.cash -= charge
        buyer.fees_paid += fee
        # Re-size the buy's reservation to what its open quantity needs at its limit: a fill
        # below the limit (or a fee rounded down) must not keep the saving locked. The need
        # shrinks by at least the charge (floor fees are superadditive), so this never grows.
        need = cash_needed(spec, buy.price, buy.open_qty, fee_ppm) if buy.open_qty else 0
        excess = buy.reserved - need
        if excess:
            buy.reserved = need
            buyer.cash_reserved -= excess
        sell.reserved -= qty
        if sell.lots is None:
            key = spec.holding
            seller.credits_reserved[key] -= qty
            seller.credits[key] -= qty
            buyer.credits[key] = buyer.credits.get(key, 0) + qty
            buyer.bought_today[key] = buyer.bought_today.get(key, 0) + qty
            if self.holding_days and key != symbol:   # (its own pooled holding: last_bought)
                buyer.lot_bought[key] = seller.lot_sold[key] = self.closes
            lots: tuple
            if spec.project:
                lots = ((spec.project, spec.vintage, qty),)
            elif self.lots and spec.credit_type:   # once lots exist, a contract names its
                lots = ((None, None, qty),)         # deliveries, the default lot's too
            else:
                lots = ()
        else:
            lots = self._deliver_lots(seller, buyer, sell.lots, qty, symbol)
        seller.cash += gross - fee
        seller.fees_paid += fee
        if self.limits:
            buyer.open_buy_qty[symbol] -= qty
        if self.holding_days:
            buyer.last_bought[symbol] = seller.last_sold[symbol] = self.closes
            if not buy.open_qty:           # the buy is done (its reservation just went to 0)
                buyer.open_buys[symbol] -= 1
            if not sell.open_qty:          # likewise the sell
                seller.open_sells[symbol] -= 1
        if excess < 0 or sell.reserved < 0:
            raise AssertionError(f"reservation overdrawn on trade {buy.order_id}/{sell.order_id}")
        return lots

    def _deliver_lots(self, seller: Account, buyer: Account, allocation: list, qty: int,
                      symbol: str) -> tuple:
        """Deliver `qty` t of a contract sell's reserved lots, first allocated first."""
        delivered = []
        while qty:
            entry = allocation[0]
            key, take = entry[0], (entry[1] if entry[1] < qty else qty)
            seller.credits_reserved[key] -= take
            seller.credits[key] -= take
            buyer.credits[key] = buyer.credits.get(key, 0) + take
            buyer.bought_today[key] = buyer.bought_today.get(key, 0) + take
            if self.holding_days and key != symbol:   # (the default lot: last_bought)
                buyer.lot_bought[key] = seller.lot_sold[key] = self.closes
            delivered.append((*self.lot_of(key), take))
            entry[1] -= take
            qty -= take
            if not entry[1]:
                allocation.pop(0)
        return tuple(delivered)

    def check_reservations(self, books, specs) -> None:
        """Every account's reservations equal what its resting orders hold."""
        book_keys = {symbol: specs[symbol].holding for symbol in books}
        for account in self.by_id.values():
            held_cash = sum(o.reserved for b in books.values() for o in b.orders.values()
                            if o.account == account.account and o.side is BUY)
            assert held_cash == account.cash_reserved, f"{account.account}: cash reservations"
            held_credits: dict[str, int] = {}
            for symbol, book in books.items():
                key = book_keys[symbol]
                for o in book.orders.values():
                    if o.account == account.account and o.side is not BUY:
                        for lot_key, qty in (o.lots if o.lots is not None else ((key, o.reserved),)):
                            held_credits[lot_key] = held_credits.get(lot_key, 0) + qty
                        assert o.lots is None or sum(q for _, q in o.lots) == o.reserved, \
                            f"{o.order_id}: lot reservations do not add up"
            assert ({k: v for k, v in held_credits.items() if v}
                    == {k: v for k, v in account.credits_reserved.items() if v}), \
                f"{account.account}: credit reservations"
            for symbol, book in books.items():
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
                    sells = sum(1 for o in book.orders.values()
                                if o.account == account.account and o.side is not BUY)
                    assert sells == account.open_sells.get(symbol, 0), \
                        f"{account.account}: {symbol} open sells miscounted"
