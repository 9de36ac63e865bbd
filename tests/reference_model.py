"""A plain reference model of the whole exchange, for differential tests.

Written from the rules of issue 2 (items 2-7), separately from engine/exchange.py and
engine/book.py: it shares only the public vocabulary (commands, events, InstrumentSpec,
enums) so that its events can be compared field by field with the engine's.

Theory of operation: obviously correct beats fast. All resting orders of all instruments
live in ONE python list; every question ("best ask?", "who is next in the queue?", "what
does account A hold in reservations?") is answered by a linear scan and a sort. Time
priority is an ever-increasing stamp given when an order (re)joins a queue. Reservations
are not stored at all: they are recomputed from the resting orders whenever needed, so
they cannot drift. Nothing here is clever; if this model and the engine disagree, read
this file first: it should be possible to convince yourself it is right in a few minutes.

Choices the issue leaves open follow the engine's documented ones (module docstrings of
engine/): fee = floor(gross_fen * fee_ppm / 1e6) per side per trade; a market buy reserves
cash at the band's upper limit; the accepted event precedes an order's trades; an IOC /
FOK / market remainder is a `cancelled` event with reason ioc / fok / market; cancel or
amend of an unknown order is `order_not_resting`; the EOD close is the VWAP of the day's
trades rounded half up to a tick (the previous close when nothing traded). Choices found by
running this model against the engine, and adopted because the issue allows them:
  - validation order of a new order: order id, duplicate, account shape, instrument, side,
    type, tif, price, qty, then (with accounts) unknown account and funds/credits;
  - a market order that carries a price is rejected `invalid_price`;
  - a new order whose id is not a valid id (not a 1-64 character string) is rejected
    `malformed` with order_id null; every unparsable line, unknown op included, is
    `malformed`;
  - end of day: per instrument, resting orders expire (reason eod, bids then asks, best
    first) and then its `day_closed`; order ids may be reused on the next day.

Rule profiles (issue 11; the profile's fields are data from engine/core/rules.py, the rules
they switch are written here again):
  - a take order (type "take") carries no price and no tif (or "ioc"); it is priced at the
    best opposite level when it arrives (None if that side is empty: accepted, then
    cancelled), trades as a limit order at that price, and its rest is cancelled (take).
    With a target it trades with that listing only; the target must rest on the other side
    of the same instrument (else order_not_resting), belong to another account (else
    self_trade) and be within the best `take_levels` levels (else target_not_at_best).
    A non-take order naming a target is malformed (after the qty check);
  - a type the profile does not allow is not_permitted (after the type and tif are known),
    then for limit/market a tif it does not allow; an amend is not_permitted first of all;
  - the profile's max_qty, when set, replaces the instrument's;
  - reject-taker self-trade handling: an untargeted order that would meet an order of its
    own account before its quantity is used up (walking the crossing queue) is self_trade,
    checked before the account checks;
  - the holding period (with accounts): unknown account, then the last opposite trade
    (closes since it < holding_days: holding_period), then any resting order of the account
    on the other side of the instrument (holding_period), then funds/credits. A take with
    nothing to take reserves nothing;
  - the holding period on the credits (lots.py, HOLDING PERIOD): every trade logs, for
    each holding key it delivers, [trading day, key] in the buyer's `bought` log and the
    seller's `sold` log (never pruned). A key bought fewer than holding_days closes ago
    (today included) is held back as a whole: a sell may take none of it. A sell whose
    free eligible credits are short is holding_period if the unreserved credits of the
    held-back eligible keys would cover it, insufficient_credits if not. A buy of a
    listing whose key the account sold fewer than holding_days closes ago is
    holding_period (after the instrument's checks); a contract buy is not checked on the
    lots. A retirement may take credits of a held-back key (retiring is not selling).

Credits as lots (issue 11, Art.10, 17; engine/core/lots.py is the rule written down):
  - a holding is keyed by "PROJECT@VINTAGE" for a lot, by the instrument's symbol for a
    pooled holding (a standard contract's pooled holding is its type's default lot);
  - a listing (spec.project set) sells its lot only; a contract (credit_type, no project)
    sells any lot of its type within its vintage range plus its own pooled holding. A sell
    takes, at entry, free credits (owned - bought today - held by other resting sells) in
    the order: pooled holding first, then vintage, then project; an amend up takes more in
    the same way (merged, re-sorted), an amend down gives back from the end; trades
    deliver from the front. A trade names its lots: a listing's always ((project, vintage,
    qty),); a contract's once any lot is known (with accounts), its own pooled holding as
    (None, None, qty); otherwise none. A contract with a vintage range never delivers its
    pooled holding (vintage unknown);
  - a redefinition may not change an instrument's kind, credit type or lot (malformed); a
    new listing takes over credits an account held under its symbol;
  - lot deposits: id, repeat, then the lot (type, project, vintage), "instrument too"
    (malformed), amount, account shape, accounts, unknown account, a project's type fixed
    by its first deposit or listing (malformed), then the optional listing (already listed
    under another symbol, price, tick, symbol taken: malformed / the price's reason). A
    listing declared on a first transfer in is defined right after the Deposited event;
  - a listing is refused (malformed) if its project has another type, its lot is listed
    under another symbol, or its symbol lists another lot; it trades from trading day
    closes + listing_days (a redefinition keeps its day); before that a new order is
    not_yet_tradable (after the field checks, before self-trade and the account checks);
  - retire: id, repeat, account (unknown without accounts), instrument or lot (both:
    malformed; unknown instrument; unknown lot), qty, purpose (1-200 characters of one
    line), then free credits (insufficient_credits); certificates are numbered
    CCERX-RC-00000001 on;
  - position limits count a contract's holding as the sum over its eligible holdings.

Risk controls (issue 14, Art.37-39, 46):
  - position limits by participant type (SetLimits replaces them; LimitsSet echoes them
    sorted): a buy that reserves (not a take with nothing to take) is position_limit, just
    before the funds check, if the account's credits plus the open quantity of its resting
    buys plus the order's quantity (an amend: its increase, if any) exceed the type's limit
    of the instrument or, summed over every instrument, its total limit;
  - after each trade (for the buyer) and each credit deposit, a holding that went from below
    to at least ceil(limit x report_ppm / 10^6) is reported (LargeHolderReported), the
    instrument's limit first, then the total's (instrument None);
  - Restrict: bad scope/kill -> malformed, bad target -> malformed, bad side (or a kill not
    "both") -> invalid_side, unknown account (with accounts) -> unknown_account; else
    RestrictionChanged, and a kill cancels the target's resting orders (reason kill) in the
    order the close expires them. A new order of a restricted account and side (or "both") is
    restricted right after its id is recorded as seen; an amend of such an order after the
    resting check.
"""
from __future__ import annotations

import dataclasses
import math
import unicodedata
from dataclasses import dataclass, field
from fractions import Fraction

from ccerx.engine.core.commands import (AmendOrder, CancelOrder, DefineInstrument, Deposit, EndOfDay, Malformed,
                             NewOrder, Restrict, Retire, SetLimits)
from ccerx.engine.core.events import (DayClosed, Deposited, DepositRejected, InstrumentDefined, LargeHolderReported,
                           LimitsSet, OrderAccepted, OrderAmended, OrderCancelled, OrderRejected,
                           RestrictionChanged, Retired, TradeExecuted)
from ccerx.engine.core.lots import CREDIT_TYPES, Lot
from ccerx.engine.core.rules import CONTINUOUS, RuleProfile, SelfTrade
from ccerx.engine.core.types import (CancelReason, InstrumentSpec, OrderType, PriceError, RejectReason,
                          Side, TimeInForce)

PRICE_UNITS_PER_FEN = 10_000  # 1 fen = 0.01 CNY = 10_000 millionths of a CNY
MAX_ORDER_ID_LEN = 64


class Rejected(Exception):
    """Internal: a validation step failed with this reason."""

    def __init__(self, reason: RejectReason, text: str = ""):
        super().__init__(text)
        self.reason = reason
        self.text = text or reason.value


@dataclass
class RefOrder:
    order_id: str
    account: str
    instrument: str
    side: Side
    price: int | None  # ticks; None for market orders (which never rest)
    qty: int           # total order quantity, filled included
    filled: int = 0
    stamp: int = 0     # time priority: lower is earlier
    alloc: list = field(default_factory=list)   # a sell's [[holding key, t], ...]

    @property
    def open(self) -> int:
        return self.qty - self.filled


@dataclass
class RefAccount:
    account: str
    cash: int                                    # fen
    credits: dict = field(default_factory=dict)  # instrument -> t
    bought_today: dict = field(default_factory=dict)
    fees_paid: int = 0
    last_bought: dict = field(default_factory=dict)   # instrument -> closes at the last buy
    last_sold: dict = field(default_factory=dict)
    participant_type: str = "other_organisation"
    retired: dict = field(default_factory=dict)
    bought: list = field(default_factory=list)    # [day, holding key] of every purchase
    sold: list = field(default_factory=list)      # [day, holding key] of every sale


def band_limits(spec: InstrumentSpec) -> tuple[int, int]:
    """[lowest, highest] valid price in ticks, by the issue's formula, with exact fractions:
    ceil(ref * (1 - band/100) / tick) <= P/tick <= floor(ref * (1 + band/100) / tick)."""
    tick = Fraction(spec.tick_units, 1_000_000)
    ref = spec.ref_ticks * tick
    band = Fraction(spec.band_ppm, 1_000_000)  # band_pct / 100
    return math.ceil(ref * (1 - band) / tick), math.floor(ref * (1 + band) / tick)


class ReferenceExchange:
    def __init__(self, instruments, accounts: list[RefAccount] | None = None,
                 fee_ppm: int = 6_000, rules: RuleProfile = CONTINUOUS):
        """A resting buy holds exactly what its open quantity needs at its limit, fee
        included (recomputed, never stored)."""
        self.specs: dict[str, InstrumentSpec] = {s.symbol: s for s in instruments}
        self.accounts = None if accounts is None else {a.account: a for a in accounts}
        self.lots: dict[str, Lot] = {   # every lot moved in or listed
            self.holding_key(s): Lot(s.credit_type, s.project, s.vintage)
            for s in instruments if s.project and accounts is not None}
        self.fee_ppm = fee_ppm
        self.rules = rules
        self.closes = 0                        # end-of-day closes: the trading day number
        self.resting: list[RefOrder] = []
        self.seen_ids: set[str] = set()
        self.deposit_ids: set[str] = set()     # never cleared: a deposit id is used once
        self.retire_ids: set[str] = set()
        self.seq = 0
        self.trade_id = 0
        self.stamp = 0
        self.last_ts = 0
        self.day_trades: list[tuple[str, int, int]] = []  # (instrument, price ticks, qty)
        self.limits: dict[str, tuple] = {}     # participant type -> (per instrument, total)
        self.report_ppm = 0
        self.restrictions: dict[tuple[str, str], str] = {}
        # holding_period rejects made by the rule on the lots (the instrument's let the order
        # through): {"sell": n, "listing buy": n}, counted for the differential test's report
        self.lot_rule_rejects = {"sell": 0, "listing buy": 0}

    # ---- queries (linear scans) --------------------------------------------------------
    def find(self, order_id) -> RefOrder | None:
        for order in self.resting:
            if order.order_id == order_id:
                return order
        return None

    def queue(self, instrument: str, side: Side) -> list[RefOrder]:
        """Resting orders of one side, best price first, then time priority."""
        orders = [o for o in self.resting if o.instrument == instrument and o.side is side]
        if side is Side.BUY:
            return sorted(orders, key=lambda o: (-o.price, o.stamp))
        return sorted(orders, key=lambda o: (o.price, o.stamp))

    def snapshot_books(self) -> dict:
        out = {}
        for symbol in self.specs:
            out[symbol] = {}
            for side in (Side.BUY, Side.SELL):
                levels = []
                for order in self.queue(symbol, side):
                    if not levels or levels[-1][0] != order.price:
                        levels.append([order.price, []])
                    levels[-1][1].append([order.order_id, order.open])
                out[symbol][side.value] = levels
        return out

    def cash_needed(self, spec: InstrumentSpec, price: int, qty: int) -> int:
        gross = price * spec.tick_fen * qty
        return gross + self.fee(gross)

    def fee(self, gross_fen: int) -> int:
        return gross_fen * self.fee_ppm // 1_000_000

    def held(self, order: RefOrder) -> int:
        """Cash a resting buy order holds."""
        return self.cash_needed(self.specs[order.instrument], order.price, order.open)

    def cash_reserved(self, account: str) -> int:
        return sum(self.held(o) for o in self.resting
                   if o.account == account and o.side is Side.BUY)

    def credits_reserved(self, account: str, key: str) -> int:
        return sum(q for o in self.resting if o.account == account and o.side is Side.SELL
                   for k, q in o.alloc if k == key)

    @staticmethod
    def holding_key(spec: InstrumentSpec) -> str:
        return f"{spec.project}@{spec.vintage}" if spec.project else spec.symbol

    def free(self, account: str, key: str) -> int:
        """Credits a sell may take: not bought today, not reserved, not held back."""
        return 0 if self.held_back(account, key) else self.retirable(account, key)

    def retirable(self, account: str, key: str) -> int:
        a = self.accounts[account]
        return (a.credits.get(key, 0) - a.bought_today.get(key, 0)
                - self.credits_reserved(account, key))

    def in_period(self, day: int) -> bool:
        """Is a trade of trading day `day` still within the holding period?"""
        return self.closes - day < self.rules.holding_days

    def held_back(self, account: str, key: str) -> bool:
        """Did the account buy `key` within the holding period (then it may sell none)?"""
        return any(k == key and self.in_period(day) for day, k in self.accounts[account].bought)

    def held_back_credits(self, account: str, key: str) -> int:
        """What a sell could take of `key` but for the holding period."""
        if not self.held_back(account, key):
            return 0
        return self.accounts[account].credits.get(key, 0) - self.credits_reserved(account, key)

    def sold_within_period(self, account: str, key: str) -> bool:
        return any(k == key and self.in_period(day) for day, k in self.accounts[account].sold)

    def eligible_keys(self, spec: InstrumentSpec, keys) -> list:
        """The holding keys among `keys` a sell of `spec` may deliver, in allocation order."""
        if spec.project or not spec.credit_type:
            own = self.holding_key(spec)
            return [k for k in keys if k == own]
        out = []
        ranged = spec.vintage_from or spec.vintage_to
        for k in keys:
            if k == spec.symbol:
                if not ranged:          # its own pooled holding: vintage unknown
                    out.append(((0, ""), k))
            elif k in self.lots:
                lot = self.lots[k]
                if (lot.credit_type == spec.credit_type
                        and (not spec.vintage_from or lot.vintage >= spec.vintage_from)
                        and (not spec.vintage_to or lot.vintage <= spec.vintage_to)):
                    out.append(((lot.vintage, lot.project), k))
        return [k for _, k in sorted(out)]

    def held_of(self, a: RefAccount, spec: InstrumentSpec) -> int:
        return sum(a.credits.get(k, 0) for k in self.eligible_keys(spec, list(a.credits)))

    def account_view(self, account: str) -> dict:
        """Everything about an account, in the shape tests compare with the engine's."""
        a = self.accounts[account]
        reserved = {}
        for o in self.resting:
            if o.account == account and o.side is Side.SELL:
                for k, q in o.alloc:
                    reserved[k] = reserved.get(k, 0) + q
        return {"cash": a.cash, "cash_reserved": self.cash_reserved(account),
                "credits": {k: v for k, v in a.credits.items() if v},
                "credits_reserved": {k: v for k, v in reserved.items() if v},
                "bought_today": {k: v for k, v in a.bought_today.items() if v},
                "fees_paid": a.fees_paid, "last_bought": dict(a.last_bought),
                "last_sold": dict(a.last_sold), "retired": dict(a.retired),
                "lot_bought": self.last_days(a.bought), "lot_sold": self.last_days(a.sold)}

    def resale_probes(self) -> list:
        """(account, instrument, free t, held-back t) for each account holding credits the
        holding period holds back and each instrument that trades them and that the
        per-instrument check lets it sell (the command streams' resale probes)."""
        out = []
        for name, a in (self.accounts or {}).items():
            keys = {k for k in a.credits if a.credits[k] and self.held_back(name, k)}
            for symbol, spec in self.specs.items():
                eligible = self.eligible_keys(spec, list(a.credits))
                if not keys & set(eligible) or self._instrument_refuses(name, symbol, Side.SELL):
                    continue        # (aim at the credits: skip what the instrument refuses)
                out.append((name, symbol, sum(self.free(name, k) for k in eligible),
                            sum(self.held_back_credits(name, k) for k in eligible)))
        return out

    def rebuy_probes(self) -> list:
        """(account, listing) for each account that sold a listed lot within the holding
        period and may buy that listing as far as the per-instrument check goes (the command
        streams' buy-back probes)."""
        return [(name, symbol) for name in (self.accounts or {})
                for symbol, spec in self.specs.items()
                if spec.project and self.sold_within_period(name, self.holding_key(spec))
                and not self._instrument_refuses(name, symbol, Side.BUY)]

    def _instrument_refuses(self, account, instrument, side) -> bool:
        try:
            self._check_instrument_holding(account, instrument, side)
        except Rejected:
            return True
        return False

    def last_days(self, log: list) -> dict:
        """holding key -> the last trading day in `log` still within the holding period, for
        the keys that are not an instrument's own symbol: the engine keeps no per-key record
        of those (lots.py, HOLDING PERIOD: such a key trades through its instrument only, whose
        own record is the whole rule). This model decides with every key (held_back,
        sold_within_period), so the differential test checks that leaving them out changes
        nothing the engine does."""
        out: dict = {}
        for day, key in log:
            if self.in_period(day) and key not in self.specs:
                out[key] = max(out.get(key, day), day)
        return out

    # ---- events ------------------------------------------------------------------------
    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _reject(self, out, ts, op, order_id, reason, text=""):
        out.append(OrderRejected(self._next_seq(), ts, op,
                                 order_id if type(order_id) is str else None, reason,
                                 text or reason.value))

    def _cancelled(self, out, ts, order: RefOrder, reason: CancelReason):
        out.append(OrderCancelled(self._next_seq(), ts, order.order_id, order.account,
                                  order.instrument, order.side, reason, order.open, order.filled))

    # ---- commands ----------------------------------------------------------------------
    def apply(self, command) -> list:
        ts = command.ts
        if ts is None:
            ts = self.last_ts
        else:
            self.last_ts = ts
        out: list = []
        kind = type(command)
        if kind is NewOrder:
            self._new(command, ts, out)
        elif kind is CancelOrder:
            self._cancel(command, ts, out)
        elif kind is AmendOrder:
            self._amend(command, ts, out)
        elif kind is EndOfDay:
            self._end_of_day(ts, out)
        elif kind is DefineInstrument:
            self._define(command, ts, out)
        elif kind is Deposit:
            self._deposit(command, ts, out)
        elif kind is SetLimits:
            self._set_limits(command, ts, out)
        elif kind is Restrict:
            self._restrict(command, ts, out)
        elif kind is Retire:
            self._retire(command, ts, out)
        elif kind is Malformed:
            # engine's choice: every line the edge could not parse, unknown op included, is
            # `malformed`
            self._reject(out, ts, command.op, command.order_id, RejectReason.MALFORMED,
                         command.text)
        else:
            raise TypeError(command)
        return out

    def _price_ticks(self, spec: InstrumentSpec, price_units) -> int:
        if isinstance(price_units, PriceError):
            raise Rejected(price_units.reason, price_units.text)
        if type(price_units) is not int or price_units <= 0:
            raise Rejected(RejectReason.INVALID_PRICE)
        if price_units % spec.tick_units:
            raise Rejected(RejectReason.OFF_TICK)
        ticks = price_units // spec.tick_units
        low, high = band_limits(spec)
        if not low <= ticks <= high:
            raise Rejected(RejectReason.PRICE_OUT_OF_BAND)
        return ticks

    def _qty(self, spec: InstrumentSpec, qty) -> int:
        if type(qty) is not int or qty <= 0 or qty % spec.lot:  # bool is not int here
            raise Rejected(RejectReason.INVALID_QTY)
        if qty > (spec.max_qty if self.rules.max_qty is None else self.rules.max_qty):
            raise Rejected(RejectReason.QTY_ABOVE_MAX)
        return qty

    def _new(self, cmd: NewOrder, ts, out):
        oid = cmd.order_id
        try:
            if type(oid) is not str or not oid or len(oid) > MAX_ORDER_ID_LEN:
                raise Rejected(RejectReason.MALFORMED, "order_id must be a non-empty string")
            if oid in self.seen_ids:
                raise Rejected(RejectReason.DUPLICATE_ORDER_ID)
            self.seen_ids.add(oid)  # seen, whatever happens next
            restricted = self.restrictions.get(("account", cmd.account))
            if restricted is not None and restricted in ("both", cmd.side):
                raise Rejected(RejectReason.RESTRICTED)
            account = cmd.account
            # engine's order of checks: id, duplicate, account shape, instrument, side, type,
            # tif, price, qty, then the account table and the funds
            if type(account) is not str or not account or len(account) > MAX_ORDER_ID_LEN:
                raise Rejected(RejectReason.MALFORMED, "account must be a non-empty string")
            spec = self.specs.get(cmd.instrument) if type(cmd.instrument) is str else None
            if spec is None:
                raise Rejected(RejectReason.UNKNOWN_INSTRUMENT)
            side = {"buy": Side.BUY, "sell": Side.SELL}.get(cmd.side) if type(cmd.side) is str else None
            if side is None:
                raise Rejected(RejectReason.INVALID_SIDE)
            otype = ({"limit": OrderType.LIMIT, "market": OrderType.MARKET,
                      "take": OrderType.TAKE}.get(cmd.order_type)
                     if type(cmd.order_type) is str else None)
            if otype is None:
                raise Rejected(RejectReason.INVALID_TYPE)
            tif_text = cmd.tif
            if tif_text is None:
                tif_text = "day" if otype is OrderType.LIMIT else "ioc"
            tif = ({"day": TimeInForce.DAY, "ioc": TimeInForce.IOC, "fok": TimeInForce.FOK}
                   .get(tif_text) if type(tif_text) is str else None)
            if tif is None:
                raise Rejected(RejectReason.INVALID_TIF)
            if otype not in self.rules.order_types:
                raise Rejected(RejectReason.NOT_PERMITTED)
            target = None
            if otype is OrderType.TAKE:
                if tif is not TimeInForce.IOC:
                    raise Rejected(RejectReason.INVALID_TIF)
                if cmd.price_units is not None:
                    raise Rejected(RejectReason.INVALID_PRICE)
                qty = self._qty(spec, cmd.qty)
                price, target = self._take_price(cmd, spec, side)
            else:
                if tif not in self.rules.tifs:
                    raise Rejected(RejectReason.NOT_PERMITTED)
                if otype is OrderType.MARKET and tif is TimeInForce.DAY:
                    raise Rejected(RejectReason.INVALID_TIF)
                if otype is OrderType.LIMIT:
                    price = self._price_ticks(spec, cmd.price_units)
                elif cmd.price_units is not None:  # engine's choice: a market order has no price
                    raise Rejected(RejectReason.INVALID_PRICE, "a market order carries no price")
                else:
                    price = None
                qty = self._qty(spec, cmd.qty)
                if cmd.target is not None:
                    raise Rejected(RejectReason.MALFORMED, "only a take order names a target")
            if spec.tradable_from > self.closes:
                raise Rejected(RejectReason.NOT_YET_TRADABLE)
            if (self.rules.self_trade is SelfTrade.REJECT_TAKER and target is None
                    and self._meets_own(account, spec.symbol, side, price, qty)):
                raise Rejected(RejectReason.SELF_TRADE)
            if self.accounts is not None:
                if account not in self.accounts:
                    raise Rejected(RejectReason.UNKNOWN_ACCOUNT)
                if self.rules.holding_days:
                    self._check_holding(account, spec.symbol, side)
                plan = []
                if not (otype is OrderType.TAKE and price is None):
                    plan = self._check_funds(spec, account, side, price, qty, None)
        except Rejected as bad:
            valid_id = type(oid) is str and 0 < len(oid) <= MAX_ORDER_ID_LEN
            # engine's choice: a new order's id that is not a valid id is not echoed
            self._reject(out, ts, "new", oid if valid_id else None, bad.reason, bad.text)
            return
        out.append(OrderAccepted(self._next_seq(), ts, oid, account, spec.symbol, side, otype, tif,
                                 price, qty))
        order = RefOrder(oid, account, spec.symbol, side, price, qty)
        if side is Side.SELL:
            self._allocate(order, spec, plan if self.accounts is not None else [])
        if otype is OrderType.TAKE:
            if target is not None:
                self._trade(order, target, ts, out)
            elif price is not None:
                self._match(order, price, ts, out)
            if order.open:
                self._cancelled(out, ts, order, CancelReason.TAKE)
            return
        if tif is TimeInForce.FOK and self._fillable(order, price) < qty:
            self._cancelled(out, ts, order, CancelReason.FOK)  # short: nothing else changes
            return
        self._match(order, price, ts, out)
        if order.open == 0:
            return
        if tif is TimeInForce.DAY:
            self.stamp += 1
            order.stamp = self.stamp
            self.resting.append(order)
        elif otype is OrderType.MARKET and tif is TimeInForce.IOC:
            self._cancelled(out, ts, order, CancelReason.MARKET)
        else:
            self._cancelled(out, ts, order, CancelReason.IOC if tif is TimeInForce.IOC
                            else CancelReason.FOK)

    def _take_price(self, cmd: NewOrder, spec, side) -> tuple:
        """(price, target order or None) of a take order."""
        other = Side.SELL if side is Side.BUY else Side.BUY
        queue = self.queue(spec.symbol, other)
        if cmd.target is None:
            return (queue[0].price if queue else None), None
        if type(cmd.target) is not str or not 1 <= len(cmd.target) <= MAX_ORDER_ID_LEN:
            raise Rejected(RejectReason.MALFORMED)
        found = [o for o in queue if o.order_id == cmd.target]
        if not found:
            raise Rejected(RejectReason.ORDER_NOT_RESTING)
        listing = found[0]
        if listing.account == cmd.account:
            raise Rejected(RejectReason.SELF_TRADE)
        better_levels = {o.price for o in queue
                         if (o.price < listing.price if other is Side.SELL else o.price > listing.price)}
        if len(better_levels) >= self.rules.take_levels:
            raise Rejected(RejectReason.TARGET_NOT_AT_BEST)
        return listing.price, listing

    def _meets_own(self, account, instrument, side, limit, qty) -> bool:
        """Would an order of `account` reach one of the account's own resting orders before
        `qty` is used up?"""
        other = Side.SELL if side is Side.BUY else Side.BUY
        for maker in self.queue(instrument, other):
            crosses = limit is None or (maker.price <= limit if side is Side.BUY
                                        else maker.price >= limit)
            if not crosses or qty <= 0:
                return False
            if maker.account == account:
                return True
            qty -= maker.open
        return False

    def _check_holding(self, account, instrument, side):
        self._check_instrument_holding(account, instrument, side)
        spec = self.specs[instrument]
        if (side is Side.BUY and spec.project
                and self.sold_within_period(account, self.holding_key(spec))):
            self.lot_rule_rejects["listing buy"] += 1
            raise Rejected(RejectReason.HOLDING_PERIOD)

    def _check_instrument_holding(self, account, instrument, side):
        a = self.accounts[account]
        last = (a.last_sold if side is Side.BUY else a.last_bought).get(instrument)
        if last is not None and self.closes - last < self.rules.holding_days:
            raise Rejected(RejectReason.HOLDING_PERIOD)
        if any(o.account == account and o.instrument == instrument and o.side is not side
               for o in self.resting):
            raise Rejected(RejectReason.HOLDING_PERIOD)

    def _check_funds(self, spec, account, side, price, open_qty, amended: RefOrder | None):
        """Reject unless the account can cover `open_qty` at `price` (None: market order),
        counting the amended order's current reservation as available to it."""
        a = self.accounts[account]
        if side is Side.BUY:
            self._check_limit(spec, a, open_qty - (amended.open if amended is not None else 0))
            limit = price if price is not None else band_limits(spec)[1]
            available = a.cash - self.cash_reserved(account)
            if amended is not None:
                available += self.held(amended)
            if self.cash_needed(spec, limit, open_qty) > available:
                raise Rejected(RejectReason.INSUFFICIENT_FUNDS)
        else:
            # the free credits a sell of `more` t more would take, in allocation order
            more = open_qty - (amended.open if amended is not None else 0)
            plan = []
            for key in self.eligible_keys(spec, list(a.credits)):
                free = self.free(account, key)
                if more > 0 and free > 0:
                    plan.append([key, min(free, more)])
                    more -= min(free, more)
            if more > 0:
                held = sum(self.held_back_credits(account, key)
                           for key in self.eligible_keys(spec, list(a.credits)))
                if held and held >= more:
                    self.lot_rule_rejects["sell"] += 1
                    raise Rejected(RejectReason.HOLDING_PERIOD)
                raise Rejected(RejectReason.INSUFFICIENT_CREDITS)
            return plan
        return []

    def _allocate(self, order: RefOrder, spec: InstrumentSpec, plan: list) -> None:
        """Add `plan` to a sell's allocation (without accounts: everything on its own key)."""
        if self.accounts is None:
            order.alloc = [[self.holding_key(spec), order.open]]
            return
        for key, qty in plan:
            for entry in order.alloc:
                if entry[0] == key:
                    entry[1] += qty
                    break
            else:
                order.alloc.append([key, qty])
        rank = {k: i for i, k in enumerate(self.eligible_keys(spec, [k for k, _ in order.alloc]))}
        order.alloc.sort(key=lambda entry: rank[entry[0]])

    def _give_back(self, order: RefOrder, qty: int) -> None:
        while qty:
            take = min(order.alloc[-1][1], qty)
            order.alloc[-1][1] -= take
            qty -= take
            if not order.alloc[-1][1]:
                order.alloc.pop()

    def _open_buys(self, account: str, instrument: str | None = None) -> int:
        return sum(o.open for o in self.resting if o.account == account and o.side is Side.BUY
                   and (instrument is None or o.instrument == instrument))

    def _check_limit(self, spec, a: RefAccount, more: int) -> None:
        caps = self.limits.get(a.participant_type)
        if caps is None or more <= 0:
            return
        per, total = caps
        buys = sum(self._open_buys(a.account, other.symbol) for other in self.specs.values()
                   if self.may_deliver_the_same(spec, other))
        if per is not None and self.held_of(a, spec) + buys + more > per:
            raise Rejected(RejectReason.POSITION_LIMIT)
        if total is not None and (sum(a.credits.values()) + self._open_buys(a.account)
                                  + more > total):
            raise Rejected(RejectReason.POSITION_LIMIT)

    def may_deliver_the_same(self, one: InstrumentSpec, other: InstrumentSpec) -> bool:
        """Could a buy of `other` deliver credits that `one` trades? The same instrument; two
        listings of one lot; a listing and a contract its lot is eligible for; two contracts
        of one credit type whose vintage ranges meet. Pooled instruments share nothing."""
        if one.symbol == other.symbol:
            return True
        if not one.credit_type or one.credit_type != other.credit_type:
            return False
        if one.project and other.project:
            return self.holding_key(one) == self.holding_key(other)
        if one.project or other.project:
            listing, contract = (one, other) if one.project else (other, one)
            return ((not contract.vintage_from or listing.vintage >= contract.vintage_from)
                    and (not contract.vintage_to or listing.vintage <= contract.vintage_to))
        lowest = max(one.vintage_from, other.vintage_from)
        highest = min([v for v in (one.vintage_to, other.vintage_to) if v] or [10 ** 9])
        return lowest <= highest

    def _report_large(self, account: str, gains: dict, ts, out) -> None:
        """`gains`: holding key -> t gained; every instrument that trades one of them is
        checked (in instrument order), then the total."""
        a = self.accounts[account]
        caps = self.limits.get(a.participant_type)
        if caps is None or not self.report_ppm:
            return
        rows = []
        for spec in self.specs.values():
            gained = sum(q for k, q in gains.items() if self.eligible_keys(spec, [k]))
            if gained:
                rows.append((spec.symbol, caps[0], self.held_of(a, spec), gained))
        rows.append((None, caps[1], sum(a.credits.values()), sum(gains.values())))
        for name, cap, now, gained in rows:
            if cap is not None:
                threshold = math.ceil(Fraction(cap * self.report_ppm, 1_000_000))
                if now - gained < threshold <= now:
                    out.append(LargeHolderReported(self._next_seq(), ts, account, name, now, cap))

    def _set_limits(self, cmd: SetLimits, ts, out):
        # (the streams send only valid limits; the engine's refusals are its unit tests')
        assert self.accounts is not None and type(cmd.limits) is tuple, cmd
        self.limits = {ptype: (per, total) for ptype, per, total in cmd.limits}
        self.report_ppm = cmd.report_ppm
        out.append(LimitsSet(self._next_seq(), ts, tuple(sorted(
            (t, per, total) for t, (per, total) in self.limits.items())), cmd.report_ppm))

    def _restrict(self, cmd: Restrict, ts, out):
        op = "kill" if cmd.kill is True else "restrict"
        if cmd.scope not in ("account", "member") or type(cmd.kill) is not bool:
            return self._reject(out, ts, op, None, RejectReason.MALFORMED)
        if type(cmd.target) is not str or not 1 <= len(cmd.target) <= MAX_ORDER_ID_LEN:
            return self._reject(out, ts, op, None, RejectReason.MALFORMED)
        if cmd.side not in ("buy", "sell", "both", "none") or (cmd.kill and cmd.side != "both"):
            return self._reject(out, ts, op, None, RejectReason.INVALID_SIDE)
        if (cmd.scope == "account" and self.accounts is not None
                and cmd.target not in self.accounts):
            return self._reject(out, ts, op, None, RejectReason.UNKNOWN_ACCOUNT)
        if cmd.side == "none":
            self.restrictions.pop((cmd.scope, cmd.target), None)
        else:
            self.restrictions[(cmd.scope, cmd.target)] = cmd.side
        out.append(RestrictionChanged(self._next_seq(), ts, cmd.scope, cmd.target, cmd.side,
                                      cmd.kill))
        if cmd.kill and cmd.scope == "account":   # (stream orders have no member)
            for symbol in list(self.specs):
                for side in (Side.BUY, Side.SELL):
                    for order in self.queue(symbol, side):
                        if order.account == cmd.target:
                            self.resting.remove(order)
                            self._cancelled(out, ts, order, CancelReason.KILL)

    @staticmethod
    def _crosses(taker: RefOrder, limit: int | None, maker_price: int) -> bool:
        if limit is None:
            return True
        return maker_price <= limit if taker.side is Side.BUY else maker_price >= limit

    def _opposite(self, taker: RefOrder) -> list[RefOrder]:
        other = Side.SELL if taker.side is Side.BUY else Side.BUY
        return self.queue(taker.instrument, other)

    def _fillable(self, taker: RefOrder, limit) -> int:
        return sum(o.open for o in self._opposite(taker)
                   if self._crosses(taker, limit, o.price) and o.account != taker.account)

    def _match(self, taker: RefOrder, limit, ts, out):
        while taker.open > 0:
            queue = self._opposite(taker)
            if not queue or not self._crosses(taker, limit, queue[0].price):
                return
            maker = queue[0]
            if maker.account == taker.account:  # self-trade prevention: the resting one goes
                self.resting.remove(maker)
                self._cancelled(out, ts, maker, CancelReason.STP)
                continue
            self._trade(taker, maker, ts, out)

    def _trade(self, taker: RefOrder, maker: RefOrder, ts, out):
        """One trade of the taker with one resting order, at the resting order's price."""
        spec = self.specs[taker.instrument]
        qty = min(taker.open, maker.open)
        price = maker.price  # always the resting order's price
        taker.filled += qty
        maker.filled += qty
        if maker.open == 0:
            self.resting.remove(maker)
        buy, sell = (taker, maker) if taker.side is Side.BUY else (maker, taker)
        gross = price * spec.tick_fen * qty
        fee = self.fee(gross)
        self.trade_id += 1
        delivered, left = [], qty       # from the front of the sell's allocation
        while left:
            entry = sell.alloc[0]
            take = min(entry[1], left)
            delivered.append((entry[0], take))
            entry[1] -= take
            left -= take
            if not entry[1]:
                sell.alloc.pop(0)
        if spec.project:
            lots = ((spec.project, spec.vintage, qty),)
        elif spec.credit_type and self.lots:    # once lots exist, contracts name deliveries
            lots = tuple((*((self.lots[k].project, self.lots[k].vintage) if k in self.lots
                            else (None, None)), q) for k, q in delivered)
        else:
            lots = ()
        out.append(TradeExecuted(self._next_seq(), ts, self.trade_id, spec.symbol, price, qty,
                                 buy.order_id, sell.order_id, taker.side, buy.account,
                                 sell.account, fee, fee, buy.open, sell.open, lots))
        self.day_trades.append((spec.symbol, price, qty))
        if self.accounts is not None:
            b, s = self.accounts[buy.account], self.accounts[sell.account]
            b.cash -= gross + fee
            b.fees_paid += fee
            for key, q in delivered:
                b.credits[key] = b.credits.get(key, 0) + q
                b.bought_today[key] = b.bought_today.get(key, 0) + q
                s.credits[key] -= q
                if self.rules.holding_days:
                    b.bought.append([self.closes, key])
                    s.sold.append([self.closes, key])
            s.cash += gross - fee
            s.fees_paid += fee
            if self.rules.holding_days:
                b.last_bought[spec.symbol] = self.closes
                s.last_sold[spec.symbol] = self.closes
            gains: dict = {}
            for key, q in delivered:
                gains[key] = gains.get(key, 0) + q
            self._report_large(buy.account, gains, ts, out)

    def _cancel(self, cmd: CancelOrder, ts, out):
        order = self.find(cmd.order_id) if type(cmd.order_id) is str else None
        if order is None:
            self._reject(out, ts, "cancel", cmd.order_id, RejectReason.ORDER_NOT_RESTING)
            return
        self.resting.remove(order)
        self._cancelled(out, ts, order, CancelReason.USER)

    def _amend(self, cmd: AmendOrder, ts, out):
        order = self.find(cmd.order_id) if type(cmd.order_id) is str else None
        try:
            if not self.rules.amend:
                raise Rejected(RejectReason.NOT_PERMITTED)
            if order is None:
                raise Rejected(RejectReason.ORDER_NOT_RESTING)
            restricted = self.restrictions.get(("account", order.account))
            if restricted is not None and restricted in ("both", order.side.value):
                raise Rejected(RejectReason.RESTRICTED)
            if cmd.price_units is None and cmd.qty is None:
                raise Rejected(RejectReason.NOTHING_TO_AMEND)
            spec = self.specs[order.instrument]
            price = order.price if cmd.price_units is None else self._price_ticks(spec, cmd.price_units)
            qty = order.qty if cmd.qty is None else self._qty(spec, cmd.qty)
            if qty <= order.filled:
                raise Rejected(RejectReason.QTY_NOT_ABOVE_FILLED)
            open_qty = qty - order.filled
            plan = []
            if self.accounts is not None:
                plan = self._check_funds(spec, order.account, order.side, price, open_qty, order)
        except Rejected as bad:
            self._reject(out, ts, "amend", cmd.order_id, bad.reason, bad.text)
            return
        if order.side is Side.SELL:
            if self.accounts is None:
                order.alloc = [[self.holding_key(spec), open_qty]]
            elif open_qty > order.open:
                self._allocate(order, spec, plan)
            elif open_qty < order.open:
                self._give_back(order, order.open - open_qty)
        keep = price == order.price and open_qty <= order.open
        out.append(OrderAmended(self._next_seq(), ts, order.order_id, order.account,
                                order.instrument, order.side, price, qty, open_qty, keep))
        order.price, order.qty = price, qty
        if keep:
            return
        self.resting.remove(order)  # to the back of its new level, and trade if it crosses
        self._match(order, price, ts, out)
        if order.open:
            self.stamp += 1
            order.stamp = self.stamp
            self.resting.append(order)

    def _end_of_day(self, ts, out):
        for symbol, spec in list(self.specs.items()):
            for side in (Side.BUY, Side.SELL):
                for order in self.queue(symbol, side):
                    self.resting.remove(order)
                    self._cancelled(out, ts, order, CancelReason.EOD)
            trades = [(p, q) for s, p, q in self.day_trades if s == symbol]
            volume = sum(q for _, q in trades)
            turnover_ticks = sum(p * q for p, q in trades)
            if volume:
                close = math.floor(Fraction(turnover_ticks, volume) + Fraction(1, 2))
            else:
                close = spec.ref_ticks
            out.append(DayClosed(self._next_seq(), ts, symbol, close, volume,
                                 turnover_ticks * spec.tick_fen, len(trades)))
            self.specs[symbol] = spec.with_ref_ticks(close)
        self.day_trades = []
        self.seen_ids = set()  # an order id is unique for the day: a new day may reuse it
        self.closes += 1
        if self.accounts is not None:
            for a in self.accounts.values():
                a.bought_today = {}

    def _deposit(self, cmd: Deposit, ts, out):
        """Checks in the engine's documented order: id, repeat, asset, amount, account."""
        def bad(reason):
            out.append(DepositRejected(self._next_seq(), ts, cmd.deposit_id
                                       if type(cmd.deposit_id) is str
                                       and len(cmd.deposit_id) <= 64 else None, reason,
                                       reason.value))
        if not isinstance(cmd.deposit_id, str) or not 1 <= len(cmd.deposit_id) <= 64:
            return bad(RejectReason.MALFORMED)
        if cmd.deposit_id in self.deposit_ids:
            return bad(RejectReason.DUPLICATE_DEPOSIT_ID)
        if cmd.credit_type is not None or cmd.project is not None or cmd.vintage is not None:
            return self._deposit_lot(cmd, ts, out, bad)
        if cmd.list_symbol is not None or cmd.list_price_units is not None:
            return bad(RejectReason.MALFORMED)
        if cmd.asset != "CNY" and cmd.asset not in self.specs:
            return bad(RejectReason.UNKNOWN_INSTRUMENT)
        if type(cmd.amount) is not int or cmd.amount <= 0 or cmd.amount > 10 ** 15:
            return bad(RejectReason.INVALID_AMOUNT)
        if not isinstance(cmd.account, str) or cmd.account == "":
            return bad(RejectReason.MALFORMED)
        key, lot = cmd.asset, (None, None, None)
        if cmd.asset != "CNY":
            spec = self.specs[cmd.asset]
            key = self.holding_key(spec)
            if spec.project:
                lot = (spec.credit_type, spec.project, spec.vintage)
        if self.accounts is not None:
            if cmd.account not in self.accounts:
                return bad(RejectReason.UNKNOWN_ACCOUNT)
            account = self.accounts[cmd.account]
            if cmd.asset == "CNY":
                account.cash += cmd.amount
            else:
                account.credits[key] = account.credits.get(key, 0) + cmd.amount
        self.deposit_ids.add(cmd.deposit_id)
        out.append(Deposited(self._next_seq(), ts, cmd.deposit_id, cmd.account, key,
                             cmd.amount, *lot))
        if self.accounts is not None and cmd.asset != "CNY":
            self._report_large(cmd.account, {key: cmd.amount}, ts, out)

    def _deposit_lot(self, cmd: Deposit, ts, out, bad):
        ctype, project, vintage = cmd.credit_type, cmd.project, cmd.vintage
        if (ctype not in CREDIT_TYPES or type(project) is not str
                or not 1 <= len(project) <= 64 or not project.isascii()
                or not project.isprintable() or " " in project or "@" in project
                or type(vintage) is not int or not 2005 <= vintage <= 2100):
            return bad(RejectReason.MALFORMED)
        if cmd.asset is not None:
            return bad(RejectReason.MALFORMED)
        if type(cmd.amount) is not int or not 0 < cmd.amount <= 10 ** 15:
            return bad(RejectReason.INVALID_AMOUNT)
        if not isinstance(cmd.account, str) or cmd.account == "":
            return bad(RejectReason.MALFORMED)
        if self.accounts is None or cmd.account not in self.accounts:
            return bad(RejectReason.UNKNOWN_ACCOUNT)
        key = f"{project}@{vintage}"
        if key in self.lots and self.lots[key].credit_type != ctype:
            return bad(RejectReason.MALFORMED)
        listed = [s for s in self.specs.values() if self.holding_key(s) == key]
        new_listing = None
        if cmd.list_symbol is not None or cmd.list_price_units is not None:
            price = cmd.list_price_units
            if isinstance(price, PriceError):
                return bad(price.reason)
            if type(price) is not int or not 0 < price <= 10 ** 12:
                return bad(RejectReason.MALFORMED)
            if listed:
                if cmd.list_symbol != listed[0].symbol:
                    return bad(RejectReason.MALFORMED)
            else:
                standard = [s for s in self.specs.values()
                            if s.symbol in ("CCER-AFF", "CCER-SOL", "CCER-OWF", "CCER-MGV")
                            and s.credit_type == ctype]
                tick = standard[0].tick_units if standard else 10_000
                if price % tick:
                    return bad(RejectReason.MALFORMED)
                symbol = cmd.list_symbol
                if (type(symbol) is not str or not symbol or not symbol.isascii()
                        or not symbol.isprintable() or " " in symbol or "@" in symbol):
                    return bad(RejectReason.MALFORMED)
                try:
                    new_listing = InstrumentSpec(cmd.list_symbol, tick, ref_ticks=price // tick,
                                                 credit_type=ctype, project=project,
                                                 vintage=vintage)
                except (ValueError, TypeError):
                    return bad(RejectReason.MALFORMED)
                if new_listing.symbol in self.specs:
                    return bad(RejectReason.MALFORMED)
        self.lots[key] = Lot(ctype, project, vintage)
        account = self.accounts[cmd.account]
        account.credits[key] = account.credits.get(key, 0) + cmd.amount
        self.deposit_ids.add(cmd.deposit_id)
        out.append(Deposited(self._next_seq(), ts, cmd.deposit_id, cmd.account, key,
                             cmd.amount, ctype, project, vintage))
        if new_listing is not None:
            self._define(DefineInstrument(new_listing, ts), ts, out)
        self._report_large(cmd.account, {key: cmd.amount}, ts, out)

    def _retire(self, cmd: Retire, ts, out):
        def bad(reason):
            self._reject(out, ts, "retire", cmd.retire_id if type(cmd.retire_id) is str
                         and len(cmd.retire_id) <= 64 else None, reason)
        if type(cmd.retire_id) is not str or not 1 <= len(cmd.retire_id) <= 64:
            return bad(RejectReason.MALFORMED)
        if cmd.retire_id in self.retire_ids:
            return bad(RejectReason.DUPLICATE_RETIRE_ID)
        if self.accounts is None or cmd.account not in self.accounts:
            return bad(RejectReason.UNKNOWN_ACCOUNT)
        if cmd.instrument is not None:
            if cmd.project is not None or cmd.vintage is not None:
                return bad(RejectReason.MALFORMED)
            if cmd.instrument not in self.specs:
                return bad(RejectReason.UNKNOWN_INSTRUMENT)
            key = self.holding_key(self.specs[cmd.instrument])
        else:
            if type(cmd.project) is not str or type(cmd.vintage) is not int:
                return bad(RejectReason.MALFORMED)
            key = f"{cmd.project}@{cmd.vintage}"
            if key not in self.lots:
                return bad(RejectReason.UNKNOWN_LOT)
        if type(cmd.qty) is not int or not 0 < cmd.qty <= 10 ** 15:
            return bad(RejectReason.INVALID_QTY)
        purpose = cmd.purpose
        if (type(purpose) is not str or not purpose.strip() or len(purpose) > 200
                or any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs")
                       for c in purpose)):
            return bad(RejectReason.MALFORMED)
        if cmd.qty > self.retirable(cmd.account, key):
            return bad(RejectReason.INSUFFICIENT_CREDITS)
        a = self.accounts[cmd.account]
        a.credits[key] -= cmd.qty
        a.retired[key] = a.retired.get(key, 0) + cmd.qty
        self.retire_ids.add(cmd.retire_id)
        lot = self.lots.get(key)
        out.append(Retired(self._next_seq(), ts, cmd.retire_id, cmd.account, key, cmd.qty,
                           purpose, f"CCERX-RC-{len(self.retire_ids):08d}",
                           *(lot or (None, None, None)), cmd.owner))

    def _define(self, cmd: DefineInstrument, ts, out):
        symbol = cmd.spec.symbol
        spec = cmd.spec
        old = self.specs.get(symbol)
        kind = lambda s: "listing" if s.project else ("contract" if s.credit_type else "pooled")  # noqa: E731
        if old is not None and (kind(old) != kind(spec) or old.credit_type != spec.credit_type
                                or self.holding_key(old) != self.holding_key(spec)):
            self._reject(out, ts, "instrument", None, RejectReason.MALFORMED)
            return
        if spec.project:
            key = self.holding_key(spec)
            old = self.specs.get(symbol)
            if ((key in self.lots and self.lots[key].credit_type != spec.credit_type)
                    or any(self.holding_key(s) == key and s.symbol != symbol
                           for s in self.specs.values())
                    or (old is not None and self.holding_key(old) != key)):
                self._reject(out, ts, "instrument", None, RejectReason.MALFORMED)
                return
            day = old.tradable_from if old is not None else self.closes + self.rules.listing_days
            cmd = cmd._replace(spec=dataclasses.replace(spec, tradable_from=day))
        if any(o.instrument == symbol for o in self.resting):
            self._reject(out, ts, "instrument", None, RejectReason.INSTRUMENT_BUSY)
            return
        old = self.specs.get(symbol)
        if (old is not None and old.tick_units != cmd.spec.tick_units
                and any(s == symbol for s, _, _ in self.day_trades)):
            self._reject(out, ts, "instrument", None, RejectReason.INSTRUMENT_BUSY)
            return
        new = symbol not in self.specs
        self.specs[symbol] = cmd.spec
        if cmd.spec.project and self.accounts is not None:
            key = self.holding_key(cmd.spec)
            self.lots[key] = Lot(cmd.spec.credit_type, cmd.spec.project, cmd.spec.vintage)
            for a in self.accounts.values():    # credits held under a new listing's symbol
                if new and symbol in a.credits:
                    a.credits[key] = a.credits.get(key, 0) + a.credits.pop(symbol)
        out.append(InstrumentDefined(self._next_seq(), ts, cmd.spec))
