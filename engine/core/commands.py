"""Commands: what the outside world asks of the engine.

Commands are plain immutable tuples built at the edge (NDJSON, binary flow, FIX).
Prices travel as exact fixed-point integers in price units (1e-6 CNY, see types.py)
so that off-tick prices can still be expressed and rejected; the engine converts to
ticks with the instrument's spec. Fields not yet validated (side, type, tif, qty)
keep their raw edge values and the engine validates them: a bad command becomes an
OrderRejected event, never an exception.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

from ccerx.engine.core.types import InstrumentSpec


class NewOrder(NamedTuple):
    order_id: Any           # client's order id (str); unique for the trading day
    account: Any            # client account (str)
    instrument: Any         # symbol, e.g. "CCER-AFF"
    side: Any               # "buy" | "sell"
    order_type: Any         # "limit" | "market" | "take"
    tif: Any                # "day" | "ioc" | "fok" | None (default by type)
    price_units: Any        # int price units for limit orders, None for market
    qty: Any                # whole tonnes (int)
    ts: Optional[int] = None  # nanoseconds since the epoch, from the sender
    owner: Optional[str] = None  # broker member entering the order (gateway), if any
    target: Any = None      # a take order's target: the order_id of the listing to take


class CancelOrder(NamedTuple):
    order_id: Any
    ts: Optional[int] = None
    owner: Optional[str] = None


class AmendOrder(NamedTuple):
    order_id: Any
    price_units: Any = None  # new limit price, None keeps it
    qty: Any = None          # new total order quantity (incl. filled), None keeps it
    ts: Optional[int] = None
    owner: Optional[str] = None


class DefineInstrument(NamedTuple):
    spec: InstrumentSpec
    ts: Optional[int] = None


class EndOfDay(NamedTuple):
    """Close the trading day: expire day orders, roll reference prices to the VWAP close,
    make today's purchases sellable."""
    ts: Optional[int] = None


class SetTradingStatus(NamedTuple):
    """Open or close continuous trading (the trading calendar drives this). While closed, new
    orders and amends are rejected (market_closed); cancels still work. `halted` marks a close
    that interrupts the schedule (an operator's halt), as opposed to a scheduled one; it
    changes nothing in matching, only what brokers are told (FIX TradSesStatus 1, not 3)."""
    open: bool
    note: str = ""          # e.g. "morning session", "lunch break", "close"
    ts: Optional[int] = None
    halted: bool = False    # only with open=False


class Deposit(NamedTuple):
    """Assets paid into an account from outside the market: `amount` whole tonnes of the
    instrument `asset` (an issuance batch transferred in from the national registry), or, with
    asset "CNY", `amount` fen of cash (funds paid in). `deposit_id` is the operator's reference,
    unique for ever (a repeat is rejected, so a retried deposit never credits twice)."""
    deposit_id: Any
    account: Any
    asset: Any              # instrument symbol, or CASH_ASSET ("CNY")
    amount: Any             # tonnes (credits) or fen (cash), a positive int
    ts: Optional[int] = None
    owner: Optional[str] = None  # who asked (operator), if known
    # A deposit of credits of one lot (lots.py) names it; `asset` is then None. The first
    # transfer in of a lot without a listing may list it (Art.17): `list_symbol` and
    # `list_price_units` (the declared initial price, the listing's first benchmark).
    credit_type: Any = None
    project: Any = None
    vintage: Any = None
    list_symbol: Any = None
    list_price_units: Any = None


class Retire(NamedTuple):
    """Retirement (注销): `qty` t of the account's free credits of one lot (`project`,
    `vintage`), or of an instrument's pooled holding (`instrument`), leave the market for
    good for the stated `purpose` (e.g. offsetting an emitter's obligation). Free: owned, not
    reserved for an order, not bought today (pending delivery). `retire_id` is the holder's
    reference, unique for ever."""
    retire_id: Any
    account: Any
    project: Any
    vintage: Any
    qty: Any
    purpose: Any
    instrument: Any = None
    ts: Optional[int] = None
    owner: Optional[str] = None


class SetLimits(NamedTuple):
    """Art.37/38: position limits by participant type, replacing the ones in force. `limits`
    is a tuple of (participant type value, per-instrument limit t or None, total limit t or
    None), sorted by type; a type not named has no limit, and an empty tuple lifts them all.
    A buy that could take the account's holding (owned + open buys) above a limit is
    rejected (position_limit); a holding that reaches `report_ppm` millionths of a limit is
    reported (LargeHolderReported; 0: no reports)."""
    limits: Any
    report_ppm: Any = 0
    ts: Optional[int] = None
    owner: Optional[str] = None


class Restrict(NamedTuple):
    """Art.39/46: the operator restricts an account or a member (`scope` "account" or
    "member", `target` its id): `side` "buy", "sell" or "both" refuses new orders (and amends)
    of that side (restricted); "none" lifts the restriction. `kill` also cancels every open
    order of the target (reason kill) and implies "both"."""
    scope: Any
    target: Any
    side: Any
    kill: bool = False
    ts: Optional[int] = None
    owner: Optional[str] = None


class Malformed(NamedTuple):
    """An input line the edge codec could not turn into a command; rejected in sequence."""
    op: Optional[str]
    order_id: Optional[str]
    text: str
    ts: Optional[int] = None


Command = (NewOrder | CancelOrder | AmendOrder | DefineInstrument | EndOfDay | SetTradingStatus
           | Deposit | SetLimits | Restrict | Retire | Malformed)
