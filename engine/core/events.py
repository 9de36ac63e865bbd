"""Events: what happened, in order, past tense, immutable.

Every event carries `seq`, the global sequence number assigned by the exchange, and
`ts`, taken from the command that caused it (the engine reads no clock). Prices are
integer ticks of the event's instrument; quantities whole tonnes; fees integer fen.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

from ccerx.engine.core.types import CancelReason, InstrumentSpec, OrderType, RejectReason, Side, TimeInForce


class OrderAccepted(NamedTuple):
    seq: int
    ts: int
    order_id: str
    account: str
    instrument: str
    side: Side
    order_type: OrderType
    tif: TimeInForce
    price: Optional[int]   # ticks; None for market orders
    qty: int
    owner: Optional[str] = None


class OrderRejected(NamedTuple):
    seq: int
    ts: int
    op: Optional[str]
    order_id: Optional[str]
    reason: RejectReason
    text: str
    owner: Optional[str] = None


class TradeExecuted(NamedTuple):
    seq: int
    ts: int
    trade_id: int
    instrument: str
    price: int             # ticks, always the resting order's price
    qty: int
    buy_order_id: str
    sell_order_id: str
    aggressor: Side
    buy_account: str
    sell_account: str
    buy_fee: int = 0       # fen
    sell_fee: int = 0      # fen
    buy_open_qty: int = 0  # open quantity left on the buy order after this trade
    sell_open_qty: int = 0
    # the lots delivered, in delivery order: ((project, vintage, t), ...), project and
    # vintage None for a default lot (lots.py); () when the instrument's pooled holding is
    # delivered (a pooled instrument, or a contract seller holding only its default lot)
    lots: tuple = ()


class OrderCancelled(NamedTuple):
    seq: int
    ts: int
    order_id: str
    account: str
    instrument: str
    side: Side
    reason: CancelReason
    cancelled_qty: int     # open quantity removed
    filled_qty: int        # quantity filled before the cancel


class OrderAmended(NamedTuple):
    seq: int
    ts: int
    order_id: str
    account: str
    instrument: str
    side: Side
    price: int             # new limit price, ticks
    qty: int               # new total order quantity
    open_qty: int          # open quantity after the amend (before any trade it causes)
    priority_kept: bool


class InstrumentDefined(NamedTuple):
    seq: int
    ts: int
    spec: InstrumentSpec


class DayClosed(NamedTuple):
    """End of day for one instrument: the VWAP close becomes the next reference price."""
    seq: int
    ts: int
    instrument: str
    close_ticks: int       # VWAP of the day's trades (rounded half up to a tick), or previous close
    volume: int
    turnover_fen: int
    trades: int


class TradingStatusChanged(NamedTuple):
    seq: int
    ts: int
    open: bool
    note: str
    halted: bool = False


class Deposited(NamedTuple):
    """Assets paid into an account (see commands.Deposit): tonnes of `asset`, or fen if CNY."""
    seq: int
    ts: int
    deposit_id: str
    account: str
    asset: str             # holding key: instrument symbol, lot key (lots.py) or CNY
    amount: int
    credit_type: Optional[str] = None   # a lot's: credit type, project and vintage
    project: Optional[str] = None
    vintage: Optional[int] = None


class Retired(NamedTuple):
    """Credits retired (see commands.Retire); `certificate` is the exchange's retirement
    certificate id, which the ledger records."""
    seq: int
    ts: int
    retire_id: str
    account: str
    asset: str             # holding key retired from (lot key or pooled instrument symbol)
    qty: int
    purpose: str
    certificate: str
    credit_type: Optional[str] = None
    project: Optional[str] = None
    vintage: Optional[int] = None
    owner: Optional[str] = None


class DepositRejected(NamedTuple):
    """A deposit the engine refused (unknown account or asset, bad amount, repeated id);
    nothing changed."""
    seq: int
    ts: int
    deposit_id: Optional[str]
    reason: RejectReason
    text: str
    owner: Optional[str] = None


class LimitsSet(NamedTuple):
    """The position limits now in force (see commands.SetLimits)."""
    seq: int
    ts: int
    limits: tuple          # ((participant type value, per instrument t | None, total t | None), ...)
    report_ppm: int


class LargeHolderReported(NamedTuple):
    """Art.38: a trade or deposit took an account's holding of `instrument` (None: of all
    credit types together) to at least the reporting share of its limit."""
    seq: int
    ts: int
    account: str
    instrument: Optional[str]
    holding: int           # t owned after the trade or deposit
    limit: int             # t, the position limit the share is of


class RestrictionChanged(NamedTuple):
    """The operator restricted (side buy/sell/both), killed (kill, side both) or released
    (side none) an account or a member; a kill's cancels follow this event."""
    seq: int
    ts: int
    scope: str             # "account" | "member"
    target: str
    side: str              # "buy" | "sell" | "both" | "none"
    kill: bool = False


Event = (OrderAccepted | OrderRejected | TradeExecuted | OrderCancelled | OrderAmended
         | InstrumentDefined | DayClosed | TradingStatusChanged | Deposited
         | DepositRejected | LimitsSet | LargeHolderReported | RestrictionChanged | Retired)
