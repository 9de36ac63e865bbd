"""The exchange application: FIX 4.4 order entry in, engine commands through, execution reports out.

Theory of operation. The session layer hands every validated, in-sequence application message
of a broker session to `on_message(session, message)`. Order messages (D, F, G, H) are checked
here for what only the gateway knows (the broker may act only for its own accounts and its own
orders, ClOrdIDs are unique per broker and day), turned into one engine command stamped with
the gateway's receive time, and applied; the events that come back are turned into FIX
messages addressed to whichever broker owns each order: the aggressor's broker gets its
fills, and so does the broker of the resting order, logged on or not (the server stores
messages for a logged-out session; the broker recovers them by ResendRequest).

Identifiers. The engine's `order_id` must be unique per day across all brokers, so a new
order's engine id is "<broker CompID>:<ClOrdID>"; it is also the OrderID (37) we report. A
cancel or replace carries a new ClOrdID and names the order by OrigClOrdID (41, any ClOrdID
the order has had) or OrderID; `_by_cl_ord_id` maps every ClOrdID a broker has used to its
order, so later requests and reports use the latest one. ExecIDs: "E<seq>" for an engine
event, "T<trade id>-B"/"-S" for the two sides of a trade, "G<boot>.<n>" for what the gateway
answers itself (gateway rejects, status reports); all unique.

Values on the wire are FIX 4.4 standard tags and enums only (a stock QuickFIX FIX44
dictionary accepts every message): ExecType 0 new, F trade, 4 canceled, 5 replaced,
8 rejected, C expired (unfilled rest of IOC/FOK/market orders and day orders at the close),
I order status. Prices cross this module as decimal strings converted with
`engine.types.price_field` (never a float); quantities must be whole tonnes.

Trading session status. The exchange has one trading session, TradingSessionID (336)
"CONTINUOUS", open (TradSesStatus 340=2) or closed (3: outside trading hours or halted).
TradingSessionStatus (h) tells a broker its state: on every change (to every broker, logged
on or not), at logon (the session layer sends it after its Logon reply, so a broker that logs
on during a halt knows before its first order is rejected) and in answer to a
TradingSessionStatusRequest (g), carrying its TradSesReqID (335). Every broker gets every
change whatever it asked for, so SubscriptionRequestType (263) 0 and 1 get the same answer
and 2 (unsubscribe) is answered with the state and a Text saying so; a TradingSessionID other
than CONTINUOUS gets 340=6 (request rejected) with TradSesStatusRejReason (567) 1, as FIX 4.4
prescribes.

Market data (V, x) is delegated to `gateway.marketdata.MarketData`, which also sees every
batch of engine events. Anything else is answered with BusinessMessageReject (j).

Risk controls (issue 14). OrderMassCancelRequest (q) cancels the broker's own open orders:
MassCancelRequestType (530) 1 those of one Symbol, 7 all of them, narrowed by Side (54) if
given (FIX 4.4's q has no Account field: a broker that must cancel one account's orders
cancels them one by one); it is answered by an OrderMassCancelReport (r: MassCancelResponse
531 = the request type, or 0 refused with MassCancelRejectReason 532, TotalAffectedOrders
533) and then one ExecutionReport (150=4) per cancelled order. Each cancel is an engine
CancelOrder of its own, journaled like any other. When the operator restricts or kills an
account or a member, its broker is told by a News (B) message, Headline (148) "restricted" /
"kill switch" / "restriction lifted", the why in LinesOfText (33/58), sent before the
ExecutionReports (150=4, Text "cancelled by the exchange's kill switch") of a kill's cancels;
News rather than TradingSessionStatus because the trading session itself stays open for
everyone else. A drop copy session (a [[broker]] with drop_copy_for = "<member>") receives a
copy of every ExecutionReport sent to that member's session, with the same fields, and may
send nothing but session messages: an application message gets BusinessMessageReject (j).
"""
from __future__ import annotations

import logging
import re
import time
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Callable, Iterable, Optional

from ccerx.engine.core.commands import (AmendOrder, CancelOrder, DefineInstrument, Deposit, EndOfDay,
                                       NewOrder, Restrict, Retire, SetLimits, SetTradingStatus)
from ccerx.engine.core.events import (DayClosed, InstrumentDefined, LargeHolderReported, OrderAccepted, OrderAmended,
                           OrderCancelled, OrderRejected, RestrictionChanged, TradeExecuted,
                           TradingStatusChanged)
from ccerx.engine.core.types import (CancelReason, DecimalFormatError, RejectReason as R, Side, format_fen,
                          parse_decimal_units, price_field)

from ccerx.engine.durable.history import order_history
from ccerx.gateway.fix.application import FixMessage, Outbound, SessionKey
from ccerx.gateway.fix.codec import declare_encoding, text_fields
from ccerx.gateway.fix.lots import delivered_lots
from ccerx.gateway.marketdata import MarketData

log = logging.getLogger("gateway.risk")

# FIX 4.4 tags used here
ACCOUNT, AVG_PX, CL_ORD_ID, COMMISSION, COMM_TYPE, CUM_QTY = 1, 6, 11, 12, 13, 14
EXEC_ID, LAST_PX, LAST_QTY, MSG_SEQ_NUM, MSG_TYPE, ORDER_ID = 17, 31, 32, 34, 35, 37
ORDER_QTY, ORD_STATUS, ORD_TYPE, ORIG_CL_ORD_ID, PRICE, SIDE, SYMBOL = 38, 39, 40, 41, 44, 54, 55
TEXT, TIME_IN_FORCE, TRANSACT_TIME, REF_SEQ_NUM = 58, 59, 60, 45
POSS_DUP_FLAG, POSS_RESEND = 43, 97
CXL_REJ_REASON, ORD_REJ_REASON, EXEC_TYPE, LEAVES_QTY = 102, 103, 150, 151
REF_MSG_TYPE, BUSINESS_REJECT_REF_ID, BUSINESS_REJECT_REASON = 372, 379, 380
CXL_REJ_RESPONSE_TO, ORD_STATUS_REQ_ID = 434, 790
SUBSCRIPTION_REQUEST_TYPE, TRAD_SES_REQ_ID, TRADING_SESSION_ID, TRAD_SES_STATUS = 263, 335, 336, 340
TRAD_SES_STATUS_REJ_REASON = 567
HEADLINE, LINES_OF_TEXT = 148, 33
MASS_CANCEL_REQUEST_TYPE, MASS_CANCEL_RESPONSE, MASS_CANCEL_REJECT_REASON = 530, 531, 532
TOTAL_AFFECTED_ORDERS = 533
# MassCancelRequestType (530) we act on; MassCancelResponse (531) 0 = refused;
# MassCancelRejectReason (532)
MASS_CANCEL_SYMBOL, MASS_CANCEL_ALL, MASS_CANCEL_REFUSED = "1", "7", "0"
MASS_REJ_NOT_SUPPORTED, MASS_REJ_UNKNOWN_SECURITY = "0", "1"
CONTINUOUS = "CONTINUOUS"    # our one TradingSessionID
# TradSesStatus (340), TradSesStatusRejReason (567), SubscriptionRequestType (263)
TRAD_SES_HALTED, TRAD_SES_OPEN, TRAD_SES_CLOSED, TRAD_SES_REQUEST_REJECTED = "1", "2", "3", "6"
UNKNOWN_TRADING_SESSION = "1"
SNAPSHOT, SNAPSHOT_AND_UPDATES, UNSUBSCRIBE = "0", "1", "2"

# OrdStatus / ExecType values
NEW, PARTIAL, FILLED, CANCELED, REPLACED, REJECTED, EXPIRED, TRADE, STATUS = (
    "0", "1", "2", "4", "5", "8", "C", "F", "I")

FIX_SIDES = {"1": "buy", "2": "sell"}
# OrdType Q (FIX 5.0 SP1 "Counter-order selection", a CCERX extension of FIX 4.4) is the take
# order (摘牌): no Price; it trades only at the best level of the other side and its rest is
# cancelled (ExecType C, Expired). RefOrderID (1080, from FIX 5.0 SP1) names the OrderID (37)
# of the one listing to take; that listing must be at the best level. See gen_spec.py.
FIX_ORD_TYPES = {"1": "market", "2": "limit", "Q": "take"}
REF_ORDER_ID = 1080
FIX_TIFS = {"0": "day", "3": "ioc", "4": "fok"}
ENGINE_SIDE = {Side.BUY: "1", Side.SELL: "2"}
ENGINE_TIF = {"day": "0", "ioc": "3", "fok": "4"}
ENGINE_ORD_TYPE = {engine: fix for fix, engine in FIX_ORD_TYPES.items()}

# OrdRejReason (103) for each engine reject reason
ORD_REJ_REASON_OF = {
    R.UNKNOWN_INSTRUMENT: "1", R.MARKET_CLOSED: "2",
    R.INSUFFICIENT_FUNDS: "3", R.INSUFFICIENT_CREDITS: "3", R.QTY_ABOVE_MAX: "3",
    R.PRICE_OUT_OF_BAND: "3", R.ORDER_NOT_RESTING: "5", R.DUPLICATE_ORDER_ID: "6",
    R.INVALID_SIDE: "11", R.INVALID_TYPE: "11", R.INVALID_TIF: "11", R.INVALID_QTY: "13",
    R.UNKNOWN_ACCOUNT: "15", R.POSITION_LIMIT: "3",
    # Art.17: a new listing's trading has not opened yet (it trades from the next trading day)
    R.NOT_YET_TRADABLE: "2",
}
OTHER = "99"
# What the exchange itself may apply besides the brokers' orders (run_operator_command)
OPERATOR_COMMANDS = (SetTradingStatus, EndOfDay, Deposit, SetLimits, Restrict,
                     DefineInstrument, Retire)     # (listing a lot; retiring credits)
# CxlRejReason (102)
CXL_TOO_LATE, CXL_UNKNOWN, CXL_EXCHANGE_OPTION, CXL_DUPLICATE = "0", "1", "2", "6"
# BusinessRejectReason (380)
BMR_OTHER, BMR_UNSUPPORTED, BMR_NOT_AVAILABLE, BMR_FIELD_MISSING = "0", "3", "4", "5"

EXPIRY_REASONS = (CancelReason.IOC, CancelReason.FOK, CancelReason.MARKET, CancelReason.EOD,
                  CancelReason.TAKE)
CANCEL_TEXT = {CancelReason.USER: None, CancelReason.STP: "cancelled by self-trade prevention",
               CancelReason.IOC: "unfilled rest of an immediate-or-cancel order",
               CancelReason.FOK: "fill-or-kill order could not be filled completely",
               CancelReason.MARKET: "unfilled rest of a market order",
               CancelReason.EOD: "day order expired at the close",
               CancelReason.TAKE: "unfilled rest of a take order (it trades at the best level "
                                  "only)",
               CancelReason.KILL: "cancelled by the exchange's kill switch"}


_last_second = [None, ""]


def utc_timestamp(ts_ns: int) -> str:
    """Nanoseconds since the epoch -> FIX UTCTimestamp with milliseconds."""
    secs, ns = divmod(ts_ns, 1_000_000_000)
    if _last_second[0] != secs:  # one strftime per second, not per report
        _last_second[0], _last_second[1] = secs, time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(secs))
    return f"{_last_second[1]}.{ns // 1_000_000:03d}"


class _Reject(Exception):
    def __init__(self, reason: str, text: str):
        self.reason, self.text = reason, text


class OrderState:
    """What the gateway knows about one order of one broker (FIX view of an engine order)."""
    __slots__ = ("order_id", "broker", "session", "cl_ord_id", "account", "symbol", "side",
                 "ord_type", "tif", "price", "price_text", "qty", "cum_qty", "cum_cost", "done",
                 "accepted")

    def __init__(self, order_id, broker, session, cl_ord_id, account, symbol, side, ord_type,
                 tif, price_text, qty):
        self.order_id: str = order_id
        self.broker: str = broker
        self.session: SessionKey = session
        self.cl_ord_id: str = cl_ord_id
        self.account = account        # raw tag values until the engine accepts the order
        self.symbol = symbol
        self.side = side              # FIX Side "1"/"2"
        self.ord_type = ord_type      # FIX OrdType "1"/"2"
        self.tif = tif                # FIX TimeInForce or None
        self.price = None             # ticks, once accepted (limit orders)
        self.price_text = price_text  # as sent, until accepted
        self.qty = qty                # int tonnes, or the raw text of a bad quantity
        self.cum_qty = 0
        self.cum_cost = 0             # sum of ticks x tonnes over the fills
        self.done: Optional[str] = None  # CANCELED / REJECTED / EXPIRED once final
        self.accepted = False

    @property
    def ord_status(self) -> str:
        if self.done is not None:
            return self.done
        if type(self.qty) is int and self.cum_qty >= self.qty:
            return FILLED
        return PARTIAL if self.cum_qty else NEW

    @property
    def leaves_qty(self) -> int:
        if self.done is not None or type(self.qty) is not int:
            return 0
        return max(self.qty - self.cum_qty, 0)

    @property
    def is_open(self) -> bool:
        return self.accepted and self.done is None and self.leaves_qty > 0


class _Request:
    """The request being applied, so its events can be answered in its own terms.
    `before`: messages to send ahead of its events' reports (a forwarded mass cancel's r)."""
    __slots__ = ("kind", "session", "order", "cl_ord_id", "orig_cl_ord_id", "before")

    def __init__(self, kind, session, order, cl_ord_id=None, orig_cl_ord_id=None):
        self.kind, self.session, self.order = kind, session, order
        self.cl_ord_id, self.orig_cl_ord_id = cl_ord_id, orig_cl_ord_id
        self.before: Optional[list] = None


# What the events of a command that no request of this process made are translated with (a
# front gateway's commands on the leader, everyone else's on a front): fills, cancels and
# expiries reach this process's own orders (self.orders), market data and trading-status
# news everyone; acceptances, rejects and amends of orders it does not own are not its to tell.
FOREIGN = _Request("foreign", None, None)


class ExchangeApplication:
    """The application behind every broker session: order entry, permissions, market data."""
    fast_reports = True     # _report's template for accepted orders (False: the field list)

    def __init__(self, exchange, comp_id: str, brokers: Iterable[str],
                 clock: Callable[[], int] = time.time_ns, begin_string: str = "FIX.4.4",
                 group_commit: bool = False, drop_copy_for: Optional[dict] = None,
                 forward: Optional[Callable[[object, "_Request"], None]] = None):
        """group_commit=True applies commands with exchange.apply_deferred (durable engine):
        the caller must call exchange.commit() before anything this application returns
        leaves the process (GatewayServer(before_write=exchange.commit) does).
        drop_copy_for: {drop copy CompID: member CompID} (both among `brokers`); when not
        given and `brokers` is the config's {CompID: BrokerConfig}, read from it.

        forward(command, request) (a front gateway, gateway/front.py): commands are not
        applied here but handed to forward(), and nothing is answered for them yet; once the
        command is applied (by the front's replica, in stream order) the caller passes its
        events to translate_applied(events, request). `exchange` is then a replica: read
        (accounts, specs, books) for validation, never applied to here."""
        if exchange.accounts is None:
            raise ValueError("the gateway needs an engine with accounts (pre-trade checks on)")
        self.exchange = exchange
        self._engine_apply = exchange.apply_deferred if group_commit else exchange.apply
        self._forward = forward
        self.clock = clock
        self.sessions: dict[str, SessionKey] = {b: SessionKey(begin_string, comp_id, b)
                                                for b in brokers}
        if drop_copy_for is None and isinstance(brokers, dict):
            drop_copy_for = {b: getattr(c, "drop_copy_for", None) for b, c in brokers.items()}
        # member session -> its drop copy sessions
        self._drop_copies: dict[SessionKey, list[SessionKey]] = {}
        self._drop_copy_sessions: set[str] = set()
        for copy, member in (drop_copy_for or {}).items():
            if member is None:
                continue
            if copy not in self.sessions or member not in self.sessions:
                raise ValueError(f"drop copy {copy!r} of {member!r}: both must be brokers")
            self._drop_copies.setdefault(self.sessions[member], []).append(self.sessions[copy])
            self._drop_copy_sessions.add(copy)
        self.orders: dict[str, OrderState] = {}                  # engine order id -> state
        self._by_cl_ord_id: dict[tuple[str, str], OrderState] = {}  # (broker, ClOrdID) -> state
        self.market_data = MarketData(exchange)
        self._price_texts: dict[tuple[str, int], str] = {}
        self._price_fields: dict[str, object] = {}
        self._boot = _base36(clock() // 1_000_000)
        self._local_ids = 0
        self._handlers = {"D": self._new_order, "F": self._cancel, "G": self._replace,
                          "H": self._status, "g": self._session_status_request,
                          "q": self._mass_cancel}
        # (open, Text) of the last TradingSessionStatus broadcast: a broker logging on during a
        # halt is told "halt", not just "closed" (unknown after a restart until the next change)
        self._last_status: Optional[tuple[bool, str]] = None
        self._learned_fills: dict[str, list[int]] = {}     # learn_sent (a cluster standby)
        self._learned_close = getattr(exchange, "last_close_ts", 0)
        self.adopt_resting_orders()

    # ------------------------------------------------------------------ Application protocol
    def on_logon(self, session: SessionKey) -> list[Outbound]:
        """The trading session's state, so the broker need not learn of a halt from a rejected
        order. The session layer sends it after its Logon reply (and its ResendRequest, if the
        broker is ahead): a new message with the next sequence number, like any other."""
        if self.sessions.get(session.their_comp_id) != session:
            return []
        return [(session, self._session_status())]

    def on_logout(self, session: SessionKey) -> list[Outbound]:
        self.market_data.drop_session(session)
        return []

    def on_message(self, session: SessionKey, message: FixMessage) -> list[Outbound]:
        msg_type = message.msg_type
        broker = session.their_comp_id
        if self.sessions.get(broker) != session:
            return [(session, business_reject(message, BMR_NOT_AVAILABLE,
                                              "no exchange application on this session"))]
        if broker in self._drop_copy_sessions:
            return [(session, business_reject(
                message, BMR_NOT_AVAILABLE, "a drop copy session receives execution reports "
                                            "only: send orders on the member's own session"))]
        handler = self._handlers.get(msg_type)
        if handler is not None:
            return self._copied(handler(session, broker, message))
        if msg_type in MarketData.MSG_TYPES:
            return [(session, m) for m in self.market_data.on_message(session, message)]
        return [(session, business_reject(message, BMR_UNSUPPORTED, "Unsupported Message Type"))]

    # ------------------------------------------------------------------ NewOrderSingle (D)
    def _new_order(self, session, broker, msg) -> list[Outbound]:
        get = first_values(msg).get
        cl_ord_id = get(CL_ORD_ID)
        if not cl_ord_id:
            return [(session, business_reject(msg, BMR_FIELD_MISSING, "ClOrdID (11) is required"))]
        qty_text = get(ORDER_QTY)
        order = OrderState(f"{broker}:{cl_ord_id}", broker, session, cl_ord_id, get(ACCOUNT),
                           get(SYMBOL), get(SIDE), get(ORD_TYPE), get(TIME_IN_FORCE), get(PRICE),
                           qty_text)
        key = (broker, cl_ord_id)
        known = self._by_cl_ord_id.get(key)
        poss_dup = get(POSS_DUP_FLAG) == "Y" or get(POSS_RESEND) == "Y"
        if known is None and poss_dup:
            known = self._lost_order(order)    # finished, its reports lost with a crash
        if known is not None:
            if poss_dup:
                # a resend (e.g. after a crash lost our store's MsgSeqNum but not the engine's
                # journal): the order was received; it is told its true state, never refused
                return [(session, self._status_report(
                    known, f"status of order {cl_ord_id!r}, already received: a possible "
                           "duplicate (PossDupFlag/PossResend) is not entered again"))]
            return self._gateway_reject(order, "6", f"duplicate ClOrdID {cl_ord_id!r}: "
                                        "ClOrdIDs are unique per broker and trading day")
        self._by_cl_ord_id[key] = order
        try:
            if len(order.order_id) > 64:
                raise _Reject(OTHER, f"ClOrdID too long: at most {63 - len(broker)} characters")
            self._check_account(broker, order.account)
            if not order.symbol:
                raise _Reject("1", "Symbol (55) is required")
            side = FIX_SIDES.get(order.side)
            if side is None:
                raise _Reject("11", f"unsupported Side {order.side!r}: 1 (buy) or 2 (sell)")
            order_type = FIX_ORD_TYPES.get(order.ord_type)
            if order_type is None:
                raise _Reject("11", f"unsupported OrdType {order.ord_type!r}: 1 (market), "
                                    "2 (limit) or Q (take the best listing)")
            target = get(REF_ORDER_ID)
            if target is not None and order_type != "take":
                raise _Reject("11", "RefOrderID (1080) names the listing a take order "
                                    "(OrdType Q) takes; other orders carry none")
            tif = None
            if order.tif is not None:
                tif = FIX_TIFS.get(order.tif)
                if tif is None:
                    raise _Reject("11", f"unsupported TimeInForce {order.tif!r}: 0 (day), "
                                        "3 (immediate or cancel) or 4 (fill or kill)")
            qty = whole_tonnes(qty_text)
        except _Reject as bad:
            return self._gateway_reject(order, bad.reason, bad.text)
        order.qty = qty
        command = NewOrder(order.order_id, order.account, order.symbol, side, order_type, tif,
                           self._price_units(order.price_text), qty, self.clock(), broker,
                           target)
        return self._apply(command, _Request("new", session, order))

    def _check_account(self, broker: str, account) -> None:
        if not account:
            raise _Reject("15", "Account (1) is required: the client account the order is for")
        registered = self.exchange.accounts.get(account)
        if registered is None or registered.member != broker:
            raise _Reject("15", f"account {account!r} is not registered to broker {broker}")

    # ------------------------------------------------------------------ OrderCancelRequest (F)
    def _cancel(self, session, broker, msg) -> list[Outbound]:
        cl_ord_id, orig = msg.get(CL_ORD_ID), msg.get(ORIG_CL_ORD_ID)
        if not cl_ord_id or not orig:
            return [(session, business_reject(msg, BMR_FIELD_MISSING,
                                              "ClOrdID (11) and OrigClOrdID (41) are required"))]
        order, refusal = self._resolve(broker, orig, msg.get(ORDER_ID), msg, "1")
        if refusal is not None:
            return [(session, refusal)]
        self._by_cl_ord_id[(broker, cl_ord_id)] = order
        command = CancelOrder(order.order_id, self.clock(), broker)
        return self._apply(command, _Request("cancel", session, order, cl_ord_id, order.cl_ord_id))

    # ------------------------------------------------------------------ OrderCancelReplaceRequest (G)
    def _replace(self, session, broker, msg) -> list[Outbound]:
        cl_ord_id, orig = msg.get(CL_ORD_ID), msg.get(ORIG_CL_ORD_ID)
        if not cl_ord_id or not orig:
            return [(session, business_reject(msg, BMR_FIELD_MISSING,
                                              "ClOrdID (11) and OrigClOrdID (41) are required"))]
        order, refusal = self._resolve(broker, orig, msg.get(ORDER_ID), msg, "2")
        if refusal is not None:
            return [(session, refusal)]
        try:
            if msg.get(ORD_TYPE) is not None and msg.get(ORD_TYPE) != order.ord_type:
                raise _Reject(OTHER, "OrdType cannot be changed by a replace")
            if msg.get(TIME_IN_FORCE) not in (None, order.tif or "0"):
                raise _Reject(OTHER, "TimeInForce cannot be changed by a replace")
            if msg.get(ACCOUNT) is not None and msg.get(ACCOUNT) != order.account:
                raise _Reject(OTHER, "Account cannot be changed by a replace")
            qty_text = msg.get(ORDER_QTY)
            qty = None if qty_text is None else whole_tonnes(qty_text)
        except _Reject as bad:
            return [(session, self._cancel_reject(order, cl_ord_id, orig, "2", OTHER, bad.text))]
        self._by_cl_ord_id[(broker, cl_ord_id)] = order
        command = AmendOrder(order.order_id, self._price_units(msg.get(PRICE)), qty, self.clock(),
                             broker)
        return self._apply(command, _Request("amend", session, order, cl_ord_id, order.cl_ord_id))

    def _resolve(self, broker, orig, order_id, msg, response_to):
        """The broker's order named by OrigClOrdID (or OrderID) -> (order, None) or (None, 9)."""
        cl_ord_id = msg.get(CL_ORD_ID)
        order = self._by_cl_ord_id.get((broker, orig))
        if order is not None and order_id and order_id != order.order_id:
            order = None
        if order is None and order_id:
            other = self.orders.get(order_id)
            if other is not None and other.broker == broker:
                order = other
            elif other is not None:
                return None, self._cancel_reject(
                    None, cl_ord_id, orig, response_to, CXL_EXCHANGE_OPTION,
                    f"order {order_id} was not entered by {broker}: a broker may cancel or "
                    "replace only its own orders")
        if order is None or not order.accepted:
            return None, self._cancel_reject(None, cl_ord_id, orig, response_to, CXL_UNKNOWN,
                                             f"unknown order: no order of {broker} with "
                                             f"ClOrdID {orig!r}")
        if (broker, cl_ord_id) in self._by_cl_ord_id:
            return None, self._cancel_reject(order, cl_ord_id, orig, response_to, CXL_DUPLICATE,
                                             f"duplicate ClOrdID {cl_ord_id!r}")
        if not order.is_open:
            return None, self._cancel_reject(order, cl_ord_id, orig, response_to, CXL_TOO_LATE,
                                             "too late: the order is no longer open "
                                             f"(OrdStatus {order.ord_status})")
        for tag, value, label in ((SYMBOL, order.symbol, "Symbol"), (SIDE, order.side, "Side")):
            if msg.get(tag) is not None and msg.get(tag) != value:
                return None, self._cancel_reject(order, cl_ord_id, orig, response_to, OTHER,
                                                 f"{label} does not match the order ({value})")
        return order, None

    # ------------------------------------------------------------------ OrderStatusRequest (H)
    def _status(self, session, broker, msg) -> list[Outbound]:
        cl_ord_id, order_id = msg.get(CL_ORD_ID), msg.get(ORDER_ID)
        order = self._by_cl_ord_id.get((broker, cl_ord_id)) if cl_ord_id else None
        if order is None and order_id:
            candidate = self.orders.get(order_id)
            if candidate is not None and candidate.broker == broker:
                order = candidate
        extra = [(ORD_STATUS_REQ_ID, msg.get(ORD_STATUS_REQ_ID))] if msg.get(ORD_STATUS_REQ_ID) else []
        if order is None:
            unknown = OrderState("NONE", broker, session, cl_ord_id or "NONE", msg.get(ACCOUNT),
                                 msg.get(SYMBOL) or "NONE", msg.get(SIDE) or "1", None, None,
                                 None, 0)
            unknown.done = REJECTED
            report = self._report(unknown, STATUS, self._local_exec_id(), self.clock(),
                                  rej_reason="5", text="unknown order", order_id="NONE")
        else:
            report = self._status_report(order)
        if extra:
            report.fields.insert(3, extra[0])
        return [(session, report)]

    def _status_report(self, order: OrderState, text: Optional[str] = None) -> FixMessage:
        """ExecutionReport ExecType I: the order's current state (OrderStatusRequest, and the
        answer to a NewOrderSingle resent as a possible duplicate)."""
        return self._report(order, STATUS, self._local_exec_id(), self.clock(), text=text,
                            order_id=None if order.accepted else "NONE")

    # ------------------------------------------------------------------ TradingSessionStatusRequest (g)
    def _session_status_request(self, session, broker, msg) -> list[Outbound]:
        get = first_values(msg).get
        req_id, subscription = get(TRAD_SES_REQ_ID), get(SUBSCRIPTION_REQUEST_TYPE)
        # (the session layer's FIX 4.4 dictionary refuses these first with a Reject (3))
        if not req_id or not subscription:
            return [(session, business_reject(msg, BMR_FIELD_MISSING,
                                              "TradSesReqID (335) and SubscriptionRequestType "
                                              "(263) are required", ref_id=req_id))]
        if subscription not in (SNAPSHOT, SNAPSHOT_AND_UPDATES, UNSUBSCRIBE):
            return [(session, business_reject(msg, BMR_OTHER,
                                              "unsupported SubscriptionRequestType "
                                              f"{subscription!r}: 0 (snapshot), 1 (snapshot and "
                                              "updates) or 2 (unsubscribe)", ref_id=req_id))]
        trading_session = get(TRADING_SESSION_ID)
        if trading_session and trading_session != CONTINUOUS:
            return [(session, FixMessage.of(
                "h", (TRAD_SES_REQ_ID, req_id), (TRADING_SESSION_ID, trading_session),
                (TRAD_SES_STATUS, TRAD_SES_REQUEST_REJECTED),
                (TRAD_SES_STATUS_REJ_REASON, UNKNOWN_TRADING_SESSION),
                *text_fields(TEXT, f"unknown TradingSessionID {trading_session[:32]!r}: the "
                                   f"only trading session is {CONTINUOUS}")))]
        text = None
        if subscription == UNSUBSCRIBE:
            text = (f"{self._status_text()}; every broker is sent every change of the trading "
                    "session status, there is no subscription to end")
        return [(session, self._session_status(req_id, text))]

    def _session_status(self, req_id: Optional[str] = None,
                        text: Optional[str] = None) -> FixMessage:
        """TradingSessionStatus (h) with the current state (TradSesReqID when answering g)."""
        return _status_message(self.exchange.trading_open, text or self._status_text(), req_id,
                               self.exchange.halted)

    def _status_text(self) -> str:
        last, is_open = self._last_status, self.exchange.trading_open
        if last is not None and last[0] == is_open:
            return last[1]
        return "open" if is_open else "halted" if self.exchange.halted else "closed"

    # ------------------------------------------------------------------ operator commands
    def run_operator_command(self, command, events: Optional[list] = None) -> list[Outbound]:
        """Apply a command of the exchange itself (the trading calendar and the operator's
        control channel: SetTradingStatus, EndOfDay, Deposit) and return what brokers must be
        told: expiries, TradingSessionStatus (nothing for a deposit: brokers are not told of
        deposits over FIX). The engine's events are appended to `events` if given (the
        control channel answers the operator with them)."""
        if type(command) not in OPERATOR_COMMANDS:
            raise TypeError(f"not an operator command: {command!r}")
        if self._forward is not None:
            raise RuntimeError("a front gateway takes no operator commands: send them to the "
                               "leader's control socket")
        engine_events = self._engine_apply(command)
        if events is not None:
            events.extend(engine_events)
        return self._copied(self._translate(engine_events, _Request("operator", None, None)))

    def _copied(self, out: list[Outbound]) -> list[Outbound]:
        """`out` with a copy of every ExecutionReport after the original for each drop copy
        session of the member it goes to."""
        copies = self._drop_copies
        if not copies:
            return out
        with_copies: list[Outbound] = []
        for session, message in out:
            with_copies.append((session, message))
            targets = copies.get(session)
            if targets and message.msg_type == "8":
                with_copies.extend((copy, message) for copy in targets)
        return with_copies

    def _restriction_news(self, event: RestrictionChanged, out) -> None:
        """News (B) to the broker concerned: the member restricted, or the account's member."""
        member = event.target
        if event.scope == "account":
            account = self.exchange.accounts.get(event.target)
            member = account.member if account is not None else None
        session = self.sessions.get(member) if member is not None else None
        if session is None:
            return
        whom = f"{event.scope} {event.target}"
        if event.kill:
            headline = "kill switch"
            text = (f"the exchange stopped {whom}: every open order is cancelled and new "
                    f"orders are refused until the operator lifts the restriction (Art.46)")
        elif event.side == "none":
            headline, text = "restriction lifted", f"{whom} may trade again"
        else:
            headline = "restricted"
            sides = "orders" if event.side == "both" else f"{event.side} orders"
            text = (f"the exchange restricted {whom}: new {sides} are refused; cancels are "
                    f"accepted (Art.39/46)")
        fields = [(MSG_TYPE, "B"), (HEADLINE, headline), (LINES_OF_TEXT, "1"),
                  *text_fields(TEXT, text)]
        out.append((session, FixMessage(declare_encoding(fields))))

    # ------------------------------------------------------------------ OrderMassCancelRequest (q)
    def _mass_cancel(self, session, broker, msg) -> list[Outbound]:
        """Cancel the broker's own open orders (all, or one Symbol's; one Side's if given)."""
        get = first_values(msg).get
        cl_ord_id, kind = get(CL_ORD_ID), get(MASS_CANCEL_REQUEST_TYPE)
        symbol, side = get(SYMBOL), get(SIDE)
        refusal = None
        if kind not in (MASS_CANCEL_SYMBOL, MASS_CANCEL_ALL):
            refusal = (MASS_REJ_NOT_SUPPORTED, f"MassCancelRequestType {kind!r} is not "
                       f"supported: 1 (the orders of one Symbol) or 7 (all orders)")
        elif kind == MASS_CANCEL_SYMBOL and symbol not in self.exchange.specs:
            refusal = (MASS_REJ_UNKNOWN_SECURITY, f"unknown Symbol {str(symbol)[:40]!r}")
        elif side is not None and side not in FIX_SIDES:
            refusal = (OTHER, f"unsupported Side {side[:8]!r}: 1 (buy) or 2 (sell)")
        out: list[Outbound] = []
        cancelled = 0
        if refusal is None:
            targets = [o for o in self.orders.values()
                       if o.broker == broker and o.is_open
                       and (kind == MASS_CANCEL_ALL or o.symbol == symbol)
                       and (side is None or o.side == side)]
            if self._forward is not None and targets:
                return self._forward_mass_cancel(session, broker, targets, cl_ord_id, kind,
                                                 symbol, side)
            for order in targets:
                events = self._engine_apply(CancelOrder(order.order_id, self.clock(), broker))
                cancelled += sum(1 for e in events if type(e) is OrderCancelled)
                out += self._translate(events, _Request("mass_cancel", session, None))
        return [(session, self._mass_cancel_report(cl_ord_id, kind, refusal, cancelled, symbol,
                                                   side)), *out]

    def _forward_mass_cancel(self, session, broker, targets, cl_ord_id, kind, symbol,
                             side) -> list[Outbound]:
        """A front's mass cancel: one CancelOrder per open order forwarded; the report (r),
        counting the cancels sent (an order may fill meanwhile: its cancel is then refused
        and reported as such), goes out ahead of the first cancel's report, once that one
        is in the stream."""
        first = None
        for order in targets:
            request = _Request("mass_cancel", session, order, None, order.cl_ord_id)
            if first is None:
                first = request
                request.before = [(session, self._mass_cancel_report(
                    cl_ord_id, kind, None, len(targets), symbol, side))]
            self._forward(CancelOrder(order.order_id, self.clock(), broker), request)
        return []

    def _mass_cancel_report(self, cl_ord_id, kind, refusal, cancelled, symbol,
                            side) -> FixMessage:
        f = [(MSG_TYPE, "r"), (CL_ORD_ID, cl_ord_id or "NONE"), (ORDER_ID, self._local_exec_id()),
             (MASS_CANCEL_REQUEST_TYPE, kind or "0"),
             (MASS_CANCEL_RESPONSE, MASS_CANCEL_REFUSED if refusal else kind)]
        if refusal:
            f.append((MASS_CANCEL_REJECT_REASON, refusal[0]))
        f.append((TOTAL_AFFECTED_ORDERS, str(cancelled)))
        if symbol:
            f.append((SYMBOL, symbol))
        if side:
            f.append((SIDE, side))
        f.append((TRANSACT_TIME, utc_timestamp(self.clock())))
        if refusal:
            f += text_fields(TEXT, refusal[1])
        return FixMessage(declare_encoding(f))

    def _trading_status(self, event: TradingStatusChanged, out) -> None:
        """TradingSessionStatus (h) to every broker, logged on or not (stored for resend)."""
        text = event.note or ("open" if event.open else "halted" if event.halted else "closed")
        self._last_status = (event.open, text)
        for session in self.sessions.values():
            out.append((session, _status_message(event.open, text, halted=event.halted)))

    # ------------------------------------------------------------------ events -> FIX
    def _apply(self, command, request: _Request) -> list[Outbound]:
        if self._forward is not None:      # a front: answered once it is in the stream
            self._forward(command, request)
            return []
        return self._translate(self._engine_apply(command), request)

    def translate_applied(self, events: list, request: Optional[_Request] = None
                          ) -> list[Outbound]:
        """What to send for the events of a command applied elsewhere than through this
        application: a front's own forwarded command (its `request`), or, with no request,
        anyone else's (FOREIGN: see there). Drop copies included."""
        if request is None:
            return self._copied(self._translate(events, FOREIGN))
        out = self._translate(events, request)
        if request.before:
            out[:0] = request.before
        return self._copied(out)

    def _translate(self, events: list, request: _Request) -> list[Outbound]:
        out: list[Outbound] = []
        for event in events:
            kind = type(event)
            if kind is TradeExecuted:
                self._on_trade(event, out)
            elif kind is OrderAccepted:
                self._on_accepted(event, request, out)
            elif kind is OrderCancelled:
                self._on_cancelled(event, request, out)
            elif kind is OrderAmended:
                self._on_amended(event, request, out)
            elif kind is OrderRejected:
                self._on_rejected(event, request, out)
            elif kind is DayClosed or kind is InstrumentDefined:
                self._on_day_closed()
            elif kind is TradingStatusChanged:
                self._trading_status(event, out)
            elif kind is RestrictionChanged:
                self._restriction_news(event, out)
            elif kind is LargeHolderReported:     # Art.38: the operator's notice
                log.warning("Art.38 large holder: account %s holds %d t of %s (limit %d t)",
                            event.account, event.holding,
                            event.instrument or "all credit types", event.limit)
        out.extend(self.market_data.on_events(events))
        return out

    def _on_accepted(self, event: OrderAccepted, request: _Request, out) -> None:
        if request is FOREIGN:
            if self._forward is not None:
                self._adopt_accepted(event, out)
            return
        order = request.order
        if request.kind != "new" or event.order_id != order.order_id:
            raise AssertionError(f"unexpected acceptance of {event.order_id}")
        order.accepted = True
        order.account, order.symbol = event.account, event.instrument
        order.price = event.price
        order.tif = ENGINE_TIF[event.tif.value]
        order.qty = event.qty
        self.orders[order.order_id] = order
        out.append((order.session, self._report(order, NEW, f"E{event.seq}", event.ts)))

    def _adopt_accepted(self, event: OrderAccepted, out) -> None:
        """A front: an order of one of its brokers accepted by a command it has no request
        for, i.e. sent by an earlier run of this front that stopped before seeing it in the
        stream. The broker never had its acknowledgement: it gets it now, and the order's
        fills from here on (its ClOrdID is the one in the engine id, as after a restart)."""
        if event.order_id in self.orders:
            return
        order = self._adopt(event.order_id, event.owner, event.account, event.instrument,
                            event.side, ENGINE_ORD_TYPE[event.order_type.value], event.qty,
                            event.price)
        if order is None:
            return
        order.tif = ENGINE_TIF[event.tif.value]
        out.append((order.session, self._report(order, NEW, f"E{event.seq}", event.ts)))

    def _on_rejected(self, event: OrderRejected, request: _Request, out) -> None:
        if request.kind == "operator" or request is FOREIGN:
            return  # the exchange's own command, or another process's: none of ours asked
        order = request.order
        text = f"{event.reason.value}: {event.text}"
        if request.kind == "new":
            order.done = REJECTED
            out.append((request.session, self._report(
                order, REJECTED, f"E{event.seq}", event.ts,
                rej_reason=ORD_REJ_REASON_OF.get(event.reason, OTHER), text=text,
                order_id="NONE")))
            return
        # the refused request's ClOrdID never became a name of the order
        if self._by_cl_ord_id.get((order.broker, request.cl_ord_id)) is order:
            del self._by_cl_ord_id[(order.broker, request.cl_ord_id)]
        reason = CXL_TOO_LATE if event.reason is R.ORDER_NOT_RESTING else OTHER
        out.append((request.session, self._cancel_reject(
            order, request.cl_ord_id, request.orig_cl_ord_id,
            "2" if request.kind == "amend" else "1", reason, text, event.ts)))

    def _on_trade(self, event: TradeExecuted, out) -> None:
        last_px = self._price_text(event.instrument, event.price)
        for order_id, suffix, fee in ((event.buy_order_id, "-B", event.buy_fee),
                                      (event.sell_order_id, "-S", event.sell_fee)):
            order = self.orders.get(order_id)
            if order is None:
                continue  # not a gateway order (no broker to tell)
            order.cum_qty += event.qty
            order.cum_cost += event.price * event.qty
            out.append((order.session, self._report(
                order, TRADE, f"T{event.trade_id}{suffix}", event.ts,
                last=(event.qty, last_px), fee_fen=fee, lots=event.lots)))

    def _on_cancelled(self, event: OrderCancelled, request: _Request, out) -> None:
        order = self.orders.get(event.order_id)
        if order is None:
            return
        exec_type = EXPIRED if event.reason in EXPIRY_REASONS else CANCELED
        order.done = exec_type
        orig = None
        if (event.reason is CancelReason.USER and request.kind == "cancel"
                and request.order is order):
            orig = order.cl_ord_id
            order.cl_ord_id = request.cl_ord_id
        out.append((order.session, self._report(order, exec_type, f"E{event.seq}", event.ts,
                                                orig=orig, text=CANCEL_TEXT[event.reason])))

    def _on_amended(self, event: OrderAmended, request: _Request, out) -> None:
        if request is FOREIGN:
            return          # (an order is amended only by the process that entered it)
        order = self.orders[event.order_id]
        orig = order.cl_ord_id
        order.cl_ord_id = request.cl_ord_id
        order.price, order.qty = event.price, event.qty
        out.append((order.session, self._report(order, REPLACED, f"E{event.seq}", event.ts,
                                                orig=orig)))

    def _on_day_closed(self) -> None:
        # Every day order has expired before the first DayClosed; ClOrdIDs may be reused.
        # (Also on a redefined instrument: its tick may have changed the price texts.)
        self._price_texts.clear()
        self.orders = {k: o for k, o in self.orders.items() if o.is_open}
        self._by_cl_ord_id = {k: o for k, o in self._by_cl_ord_id.items() if o.is_open}

    # ------------------------------------------------------------------ message builders
    def _report(self, order: OrderState, exec_type: str, exec_id: str, ts: int, *,
                orig: Optional[str] = None, last=None, fee_fen: Optional[int] = None,
                rej_reason: Optional[str] = None, text: Optional[str] = None,
                order_id: Optional[str] = None, lots: tuple = ()) -> FixMessage:
        """ExecutionReport (8), fields in the FIX 4.4 dictionary order; `lots`: a fill's
        delivered lots (NoUnderlyings, gateway/fix/lots.py)."""
        accepted = order.accepted
        if (self.fast_reports and accepted and rej_reason is None and order_id is None
                and not lots
                and (not text or (text.isascii() and text.isprintable()))
                and order.account and order.symbol and order.side and order.ord_type
                and order.tif is not None and type(order.qty) is int):
            return self._accepted_report(order, exec_type, exec_id, ts, last, fee_fen, orig, text)
        f = [(MSG_TYPE, "8"), (ORDER_ID, order_id or order.order_id),
             (CL_ORD_ID, order.cl_ord_id)]
        if orig is not None:
            f.append((ORIG_CL_ORD_ID, orig))
        f += [(EXEC_ID, exec_id), (EXEC_TYPE, exec_type), (ORD_STATUS, order.ord_status)]
        if rej_reason is not None:
            f.append((ORD_REJ_REASON, rej_reason))
        if order.account:
            f.append((ACCOUNT, order.account))
        f.append((SYMBOL, order.symbol or "NONE"))
        if lots:
            f += delivered_lots(order.symbol, lots)
        f.append((SIDE, order.side or "1"))
        qty = order.qty
        if qty is not None and qty != "":
            f.append((ORDER_QTY, str(qty)))
        if order.ord_type is not None:
            f.append((ORD_TYPE, order.ord_type))
        if accepted:
            if order.price is not None:
                f.append((PRICE, self._price_text(order.symbol, order.price)))
        elif order.price_text is not None:
            f.append((PRICE, order.price_text))
        if order.tif is not None:
            f.append((TIME_IN_FORCE, order.tif))
        if last is not None:
            f += [(LAST_QTY, str(last[0])), (LAST_PX, last[1])]
        f += [(LEAVES_QTY, str(order.leaves_qty)), (CUM_QTY, str(order.cum_qty)),
              (AVG_PX, self._avg_px(order) if accepted and order.cum_qty else "0"),
              (TRANSACT_TIME, utc_timestamp(ts))]
        if fee_fen is not None:
            f += [(COMMISSION, format_fen(fee_fen)), (COMM_TYPE, "3")]  # 3 = absolute, CNY
        if text:
            f += text_fields(TEXT, text)
            declare_encoding(f)
        return FixMessage(f)

    def _accepted_report(self, order: OrderState, exec_type: str, exec_id: str, ts: int, last,
                         fee_fen: Optional[int], orig: Optional[str] = None,
                         text: Optional[str] = None) -> FixMessage:
        """_report's fast path, for an accepted order's acknowledgement, fills, cancels and
        expiries (no reject reason; a Text, if any, in printable ASCII): the same fields in the
        same order, encoded straight into the body text from a template (no field list; see
        EncodedReport)."""
        price = order.price
        cum_qty = order.cum_qty
        body = (f"37={order.order_id}\x0111={order.cl_ord_id}\x01"
                + ("" if orig is None else f"41={orig}\x01")
                + f"17={exec_id}\x01"
                f"150={exec_type}\x0139={order.ord_status}\x011={order.account}\x01"
                f"55={order.symbol}\x0154={order.side}\x0138={order.qty}\x01"
                f"40={order.ord_type}\x01"
                + ("" if price is None else f"44={self._price_text(order.symbol, price)}\x01")
                + f"59={order.tif}\x01"
                + ("" if last is None else f"32={last[0]}\x0131={last[1]}\x01")
                + f"151={order.leaves_qty}\x0114={cum_qty}\x01"
                  f"6={self._avg_px(order) if cum_qty else '0'}\x0160={utc_timestamp(ts)}\x01"
                + ("" if fee_fen is None else f"12={format_fen(fee_fen)}\x0113=3\x01")
                + (f"58={text}\x01" if text else ""))
        return EncodedReport(body)

    def _price_text(self, symbol: str, ticks: int) -> str:
        """spec.ticks_to_text, memoised: a day's prices live inside the band, a few thousand."""
        key = (symbol, ticks)
        text = self._price_texts.get(key)
        if text is None:
            if len(self._price_texts) > 100_000:
                self._price_texts.clear()
            text = self._price_texts[key] = self.exchange.specs[symbol].ticks_to_text(ticks)
        return text

    def _price_units(self, text):
        """engine.types.price_field, memoised: brokers send the same few hundred prices."""
        units = self._price_fields.get(text)
        if units is None:
            if len(self._price_fields) > 100_000:
                self._price_fields.clear()
            units = price_field(text)
            if text is not None and len(text) <= 32:
                self._price_fields[text] = units
        return units

    def _avg_px(self, order: OrderState) -> str:
        whole, rest = divmod(order.cum_cost, order.cum_qty)
        if not rest:  # every fill at one price, or an even average: a whole tick
            return self._price_text(order.symbol, whole)
        spec = self.exchange.specs[order.symbol]
        avg = (Decimal(order.cum_cost * spec.tick_units) / order.cum_qty / 1_000_000).quantize(
            Decimal("0.000001"), ROUND_HALF_EVEN)
        text = f"{avg:f}".rstrip("0")
        whole_text, _, frac = text.partition(".")
        return f"{whole_text}.{frac.ljust(spec.price_places, '0')}"

    def _cancel_reject(self, order: Optional[OrderState], cl_ord_id, orig, response_to: str,
                       reason: str, text: str, ts: Optional[int] = None) -> FixMessage:
        """OrderCancelReject (9)."""
        f = [(MSG_TYPE, "9"), (ORDER_ID, order.order_id if order is not None else "NONE"),
             (CL_ORD_ID, cl_ord_id or "NONE"), (ORIG_CL_ORD_ID, orig or "NONE"),
             (ORD_STATUS, order.ord_status if order is not None else REJECTED)]
        if order is not None and order.account:
            f.append((ACCOUNT, order.account))
        f += [(TRANSACT_TIME, utc_timestamp(self.clock() if ts is None else ts)),
              (CXL_REJ_RESPONSE_TO, response_to), (CXL_REJ_REASON, reason),
              *text_fields(TEXT, text)]
        return FixMessage(declare_encoding(f))

    def _gateway_reject(self, order: OrderState, reason: str, text: str) -> list[Outbound]:
        order.done = REJECTED
        return [(order.session, self._report(order, REJECTED, self._local_exec_id(), self.clock(),
                                             rej_reason=reason, text=text, order_id="NONE"))]

    def _local_exec_id(self) -> str:
        self._local_ids += 1
        return f"G{self._boot}.{self._local_ids}"

    # ------------------------------------------------------------------ restart
    def adopt_resting_orders(self) -> None:
        """Take over the resting orders of an engine restored from its journal.

        Their FIX history is gone: the ClOrdID becomes the one in the engine id (a later
        replace's ClOrdID is not known), and AvgPx assumes earlier fills at the order's price.
        """
        for symbol, book in self.exchange.books.items():
            for resting in book.orders.values():
                order = self._adopt(str(resting.order_id), resting.owner, resting.account,
                                    symbol, resting.side, "2",
                                    resting.open_qty + resting.filled_qty, resting.price)
                if order is not None:
                    order.cum_qty = resting.filled_qty
                    order.cum_cost = resting.filled_qty * resting.price

    def _adopt(self, order_id: str, owner, account, symbol, side, ord_type: str, qty: int,
               price) -> Optional[OrderState]:
        """An order the engine accepted that this application did not see accepted, taken
        over as accepted (its ClOrdID is the one in the engine id `BROKER:ClOrdID`); None if
        it is not one of this application's brokers' own orders."""
        broker, sep, cl_ord_id = order_id.partition(":")
        session = self.sessions.get(broker)
        if not sep or session is None or owner != broker:
            return None
        order = OrderState(order_id, broker, session, cl_ord_id, account, symbol,
                           ENGINE_SIDE[side], ord_type, None, None, qty)
        order.accepted = True
        order.price = price
        self.orders[order_id] = order
        self._by_cl_ord_id[(broker, cl_ord_id)] = order
        return order

    def _lost_order(self, order: OrderState) -> Optional[OrderState]:
        """A NewOrderSingle resent as a possible duplicate whose order the engine has seen
        today but this gateway does not know: it finished (the engine keeps only resting
        orders) before a crash that lost its reports. Its history, re-derived from the
        journal (engine/durable/history.py), makes it known again with its true state; None
        if the engine never saw it (or keeps no journal)."""
        data_dir = getattr(self.exchange, "data_dir", None)
        if data_dir is None or order.order_id not in getattr(self.exchange, "seen_order_ids", ()):
            return None
        history = order_history(data_dir, order.order_id)
        if history is None:
            return None
        accepted = history.accepted
        if accepted is None:                  # the engine refused it
            order.done = REJECTED
        else:
            order.accepted = True
            order.account, order.symbol = accepted.account, accepted.instrument
            order.side = ENGINE_SIDE[accepted.side]
            order.tif = ENGINE_TIF[accepted.tif.value]
            order.price, order.qty = accepted.price, accepted.qty
            if history.amended is not None:
                order.price, order.qty = history.amended.price, history.amended.qty
            for trade in history.trades:
                order.cum_qty += trade.qty
                order.cum_cost += trade.price * trade.qty
            if history.cancelled is not None:
                order.done = (EXPIRED if history.cancelled.reason in EXPIRY_REASONS
                              else CANCELED)
            self.orders[order.order_id] = order
        self._by_cl_ord_id[(order.broker, order.cl_ord_id)] = order
        return order

    def learn_sent(self, session: SessionKey, sent: Iterable[tuple[int, bytes]]) -> None:
        """A cluster standby (gateway/cluster.py): learn from the messages its session's
        store was just given by the leader, as they come, so that taking over costs nothing
        per stored message (take_learned_over). The same learning as on_session_restored,
        with no order's numbers taken from the engine yet (the engine is ahead of the stores
        here) and fills kept across calls; a close the engine applied since the last call
        forgets the finished orders, as it does on a leader."""
        close = self.exchange.last_close_ts
        if close != self._learned_close:
            self._learned_close = close
            self._on_day_closed()
        self.on_session_restored(session, sent, engine_orders=(), fills=self._learned_fills)

    def take_learned_over(self) -> None:
        """The standby leads: what learn_sent learnt stands, the resting orders take their
        numbers from the engine (adopted as after a restart when nothing was learnt of
        them), and the fills learnt give each order's AvgPx when they account for all of
        its filled quantity."""
        if self.exchange.last_close_ts != self._learned_close:
            self._learned_close = self.exchange.last_close_ts
            self._on_day_closed()
        learnt = {order_id: self.orders.pop(order_id) for order_id in list(self.orders)}
        self.adopt_resting_orders()               # fresh states of the resting orders
        for order_id, adopted in list(self.orders.items()):
            order = learnt.pop(order_id, None)
            if order is None:
                continue
            order.accepted = True
            order.account, order.symbol = adopted.account, adopted.symbol
            order.price, order.qty, order.cum_qty = adopted.price, adopted.qty, adopted.cum_qty
            order.cum_cost, order.done = adopted.cum_cost, None
            self.orders[order_id] = order         # learnt ClOrdIDs, OrdType, TimeInForce kept
            self._by_cl_ord_id[(order.broker, order_id.partition(":")[2])] = order
            self._by_cl_ord_id[(order.broker, order.cl_ord_id)] = order
        for order_id, order in learnt.items():    # finished: as their reports said
            if order.is_open:       # its end came with a close its reports were learnt after
                for key in [k for k, o in self._by_cl_ord_id.items() if o is order]:
                    del self._by_cl_ord_id[key]
                continue
            self.orders[order_id] = order
        for order_id, (qty, cost) in self._learned_fills.items():
            order = self.orders.get(order_id)
            if order is not None and qty == order.cum_qty:
                order.cum_cost = cost
        self._learned_fills = {}

    def on_session_restored(self, session: SessionKey, sent: Iterable[tuple[int, bytes]],
                            engine_orders=None, fills: Optional[dict] = None) -> None:
        """After a restart: learn the broker's orders of the trading day from the execution
        reports its session sent before (its FIX store, in sequence order), so that an
        OrderStatusRequest, cancel or replace naming an order filled, cancelled or rejected
        before the restart gets the true answer (the engine keeps only resting orders). The
        resting ones, adopted from the engine, keep the engine's quantities and price and get
        back their latest ClOrdID, every earlier one, their OrdType, TimeInForce and AvgPx.

        Reports from before the last close are skipped, unless their order still rests: a
        close forgets finished orders (_on_day_closed). Cost: one pass over the store, parsing
        only the execution reports. What the store never held cannot be learnt: a report
        lost with a crash between the journal's commit and the store's flush never reached
        the broker either; such an order, gone from the book, answers with its last known
        state."""
        broker = session.their_comp_id
        if self.sessions.get(broker) != session:
            return
        # TransactTime texts compare as times (fixed-width UTC), so no parsing per report
        last_close = self.exchange.last_close_ts
        closed_at = utc_timestamp(last_close) if last_close else ""
        specs = self.exchange.specs
        price_units = self._price_units
        # the orders whose numbers are the engine's (learn_sent: none yet)
        resting = set(self.orders) if engine_orders is None else engine_orders
        if fills is None:
            fills = {}                                # order id -> [tonnes, ticks x tonnes]
        filled_now = set()
        for _, raw in sent:
            if b"\x0135=8\x01" not in raw[:40]:
                continue
            get = _report_fields(raw).get
            exec_type, order_id, cl_ord_id = get(EXEC_TYPE), get(ORDER_ID), get(CL_ORD_ID)
            if exec_type == STATUS or not cl_ord_id or (
                    order_id not in resting and (get(TRANSACT_TIME) or "") <= closed_at):
                continue
            if order_id == "NONE":                    # a new order refused
                if (broker, cl_ord_id) not in self._by_cl_ord_id:
                    refused = OrderState(order_id, broker, session, cl_ord_id, get(ACCOUNT),
                                         get(SYMBOL), get(SIDE), get(ORD_TYPE),
                                         get(TIME_IN_FORCE), get(PRICE), get(ORDER_QTY))
                    refused.done = REJECTED
                    self._by_cl_ord_id[(broker, cl_ord_id)] = refused
                continue
            order = self.orders.get(order_id)
            symbol = get(SYMBOL)
            spec = specs.get(symbol)
            if order is None:
                if spec is None:
                    continue
                order = OrderState(order_id, broker, session, cl_ord_id, get(ACCOUNT), symbol,
                                   get(SIDE), None, None, None, 0)
                order.accepted = True
                self.orders[order_id] = order
            order.cl_ord_id = cl_ord_id
            self._by_cl_ord_id[(broker, cl_ord_id)] = order
            orig = get(ORIG_CL_ORD_ID)
            if orig:
                self._by_cl_ord_id[(broker, orig)] = order
            order.ord_type, order.tif = get(ORD_TYPE), get(TIME_IN_FORCE)
            if exec_type == TRADE and spec is not None:
                filled_now.add(order_id)
                done = fills.setdefault(order_id, [0, 0])
                qty = int(get(LAST_QTY))
                done[0] += qty
                done[1] += qty * (price_units(get(LAST_PX)) // spec.tick_units)
            if order_id in resting:
                continue                              # the engine's numbers are the truth
            order.qty, order.cum_qty = int(get(ORDER_QTY)), int(get(CUM_QTY))
            price = get(PRICE)
            order.price = (None if price is None or spec is None
                           else price_units(price) // spec.tick_units)
            if exec_type in (CANCELED, EXPIRED, REJECTED):
                order.done = exec_type
        for order_id in filled_now:
            qty, cost = fills[order_id]
            order = self.orders[order_id]
            if qty == order.cum_qty:                  # every fill is in the store
                order.cum_cost = cost


_REPORT_FIELD = re.compile(rb"\x01(%s)=([^\x01]*)" % b"|".join(b"%d" % tag for tag in (
    EXEC_TYPE, ORDER_ID, CL_ORD_ID, ORIG_CL_ORD_ID, TRANSACT_TIME, ACCOUNT, SYMBOL, SIDE,
    ORD_TYPE, TIME_IN_FORCE, PRICE, ORDER_QTY, CUM_QTY, LAST_QTY, LAST_PX)))


def _report_fields(raw: bytes) -> dict[int, str]:
    """The fields of a stored ExecutionReport that on_session_restored reads, first occurrence
    of each (a restart reads a day's reports: a regex scan is ~6x faster than
    codec.split_fields, which splits and converts all of them)."""
    return {int(tag): value.decode("latin-1")
            for tag, value in reversed(_REPORT_FIELD.findall(raw))}


class EncodedReport(FixMessage):
    """An ExecutionReport built as its body text: the session sends `encoded_body` as it is.
    `fields` are parsed from that text when someone reads them, so it reads like any
    FixMessage; once they have been read (and perhaps changed: _status inserts its
    OrdStatusReqID) `encoded_body` is None and the session sends the fields."""
    __slots__ = ("_body", "_fields")
    msg_type = "8"

    def __init__(self, body: str):
        self._body = body
        self._fields: Optional[list[tuple[int, str]]] = None

    @property
    def encoded_body(self) -> Optional[str]:
        return self._body if self._fields is None else None

    @property
    def fields(self) -> list[tuple[int, str]]:
        if self._fields is None:
            self._fields = [(35, "8")] + [(int(tag), value) for tag, _, value in (
                part.partition("=") for part in self._body.split("\x01")[:-1])]
        return self._fields


def first_values(message: FixMessage) -> dict[int, str]:
    """tag -> value of its first occurrence, in one pass (FixMessage.get scans per call)."""
    return dict(reversed(message.fields))  # later occurrences first, so the first one wins


def whole_tonnes(text) -> int:
    """OrderQty text -> int tonnes; raises _Reject (OrdRejReason 13) unless a whole number."""
    if text is None:
        raise _Reject("13", "OrderQty (38) is required")
    if text.isascii() and text.isdigit() and len(text) < 10:
        return int(text)
    try:
        return parse_decimal_units(text, 1)
    except DecimalFormatError:
        raise _Reject("13", f"OrderQty must be a whole number of tonnes, not {text[:32]!r}") from None


def _status_message(is_open: bool, text: str, req_id: Optional[str] = None,
                    halted: bool = False) -> FixMessage:
    """TradingSessionStatus (h) of the CONTINUOUS session, fields in FIX 4.4 dictionary order:
    TradSesStatus 2 open, 3 closed (by the schedule), 1 halted (by the operator)."""
    fields = [(TRAD_SES_REQ_ID, req_id)] if req_id else []
    status = TRAD_SES_OPEN if is_open else TRAD_SES_HALTED if halted else TRAD_SES_CLOSED
    fields += [(TRADING_SESSION_ID, CONTINUOUS), (TRAD_SES_STATUS, status),
               *text_fields(TEXT, text)]
    return FixMessage.of("h", *declare_encoding(fields))


def business_reject(message: FixMessage, reason: str, text: str,
                    ref_id: Optional[str] = None) -> FixMessage:
    """BusinessMessageReject (j) answering `message`."""
    f = [(MSG_TYPE, "j")]
    if message.get(MSG_SEQ_NUM):
        f.append((REF_SEQ_NUM, message.get(MSG_SEQ_NUM)))
    f.append((REF_MSG_TYPE, message.msg_type or ""))
    ref_id = ref_id or message.get(CL_ORD_ID)
    if ref_id:
        f.append((BUSINESS_REJECT_REF_ID, ref_id))
    f += [(BUSINESS_REJECT_REASON, reason), *text_fields(TEXT, text)]
    return FixMessage(declare_encoding(f))


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out


__all__ = ["ExchangeApplication", "OrderState", "business_reject", "utc_timestamp", "whole_tonnes"]
