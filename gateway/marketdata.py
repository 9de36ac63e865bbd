"""Market data over FIX 4.4: book subscriptions (V -> W, X) and the instrument list (x -> y).

Theory of operation. A MarketDataRequest (V) subscribes one session to one or more credit
types (Symbol in NoRelatedSym) at a depth (MarketDepth, 0 = the whole book) for some entry
types (0 bid, 1 offer, 2 trade). The answer is a snapshot (W) per credit type; after that,
every batch of engine events that touches a subscribed credit type produces one incremental
refresh (X) per subscription: the price levels that changed within the subscriber's depth
(MDUpdateAction 0 new / 1 change / 2 delete, keyed by side and price, aggregated size and
NumberOfOrders) and the trades. A subscriber that asked for full refreshes (MDUpdateType 0)
gets a new W instead. Subscriptions end with SubscriptionRequestType 2 or when the session
logs out; market data is not replayed, a broker resubscribes after it reconnects.

Each subscription remembers the view it last sent per credit type, so the increments are
exactly the difference between what the subscriber holds and the book. The cost is paid only
for credit types with subscribers.

SecurityListRequest (x) is answered with SecurityList (y): per instrument its Symbol,
SecurityDesc (name), Currency CNY, RoundLot and MinTradeVol (the lot), the daily price band as
a PRICE stipulation ("low-high"), and tick size, reference price, band percent and maximum
order size as text instrument attributes (InstrAttribType 99): FIX 4.4 has no dedicated tags
for those. Credits as lots (gateway/fix/lots.py): a listing of one lot (project and vintage)
and a contract of one credit type (the standard CCER-AFF, ... and any with a vintage range)
also carry their credit type (SecuritySubType 762, Product 460=2), a listing its project
(SecurityAltID 455, source 456=H), the vintage or vintage range as a PROD (production year)
stipulation, the kind (Kind=listing|contract) and, for a listing that trades only from a later
trading day (Art.17), TradableFrom=D+N as text attributes. A snapshot (W) carries the credit
type and the project too (FIX 4.4's W has no stipulations or attributes: the vintage is in
the SecurityList).
"""
from __future__ import annotations

from typing import Optional

from ccerx.engine.core.events import TradeExecuted
from ccerx.engine.core.types import PRICE_UNITS_PER_CNY, Side, format_units

from ccerx.gateway.fix.application import FixMessage, Outbound, SessionKey
from ccerx.gateway.fix.codec import declare_encoding, text_fields
from ccerx.gateway.fix.lots import (PRODUCTION_YEAR, attribute_texts, identity_fields,
                                    vintage_text)

MD_REQ_ID, SUBSCRIPTION_REQUEST_TYPE, MARKET_DEPTH, MD_UPDATE_TYPE = 262, 263, 264, 265
AGGREGATED_BOOK, NO_MD_ENTRY_TYPES, NO_MD_ENTRIES, MD_ENTRY_TYPE = 266, 267, 268, 269
MD_ENTRY_PX, MD_ENTRY_SIZE, MD_UPDATE_ACTION, MD_REQ_REJ_REASON = 270, 271, 279, 281
MD_ENTRY_POSITION_NO, NUMBER_OF_ORDERS, NO_RELATED_SYM, SYMBOL, TEXT = 290, 346, 146, 55, 58
SECURITY_REQ_ID, SECURITY_RESPONSE_ID, SECURITY_LIST_REQUEST_TYPE = 320, 322, 559
SECURITY_REQUEST_RESULT, TOT_NO_RELATED_SYM, LAST_FRAGMENT = 560, 393, 893
SECURITY_DESC, CURRENCY, ROUND_LOT, MIN_TRADE_VOL = 107, 15, 561, 562
NO_INSTR_ATTRIB, INSTR_ATTRIB_TYPE, INSTR_ATTRIB_VALUE = 870, 871, 872
NO_STIPULATIONS, STIPULATION_TYPE, STIPULATION_VALUE = 232, 233, 234

BID, OFFER, TRADE = "0", "1", "2"
SUPPORTED_ENTRY_TYPES = frozenset((BID, OFFER, TRADE))
ACTION_NEW, ACTION_CHANGE, ACTION_DELETE = "0", "1", "2"
FULL_BOOK = 1 << 30
MAX_SUBSCRIPTIONS_PER_SESSION = 64   # memory per session stays bounded

# MDReqRejReason (281)
REJ_UNKNOWN_SYMBOL, REJ_DUPLICATE_ID, REJ_SUBSCRIPTION_TYPE = "0", "1", "4"
REJ_DEPTH, REJ_UPDATE_TYPE, REJ_AGGREGATED, REJ_ENTRY_TYPE = "5", "6", "7", "8"

View = dict  # (entry type, price ticks) -> (size, number of orders)


class _Subscription:
    __slots__ = ("session", "req_id", "symbols", "depth", "entry_types", "incremental", "views")

    def __init__(self, session, req_id, symbols, depth, entry_types, incremental):
        self.session: SessionKey = session
        self.req_id: str = req_id
        self.symbols: tuple[str, ...] = symbols
        self.depth: int = depth
        self.entry_types: frozenset = entry_types
        self.incremental: bool = incremental
        self.views: dict[str, View] = {}


class _BadRequest(Exception):
    def __init__(self, reason: Optional[str], text: str):
        self.reason, self.text = reason, text


class MarketData:
    MSG_TYPES = ("V", "x")

    def __init__(self, exchange):
        self.exchange = exchange
        self.subscriptions: dict[tuple[SessionKey, str], _Subscription] = {}
        self.by_symbol: dict[str, list[_Subscription]] = {}
        self.last_trade: dict[str, tuple[int, int]] = {}  # symbol -> (price ticks, qty)
        self._security_lists = 0

    # ------------------------------------------------------------------ requests
    def on_message(self, session: SessionKey, msg: FixMessage) -> list[FixMessage]:
        if msg.msg_type == "x":
            return [self._security_list(msg)]
        req_id = msg.get(MD_REQ_ID)
        if not req_id:
            return [_md_reject("NONE", None, "MDReqID (262) is required")]
        try:
            return self._market_data_request(session, req_id, msg)
        except _BadRequest as bad:
            return [_md_reject(req_id, bad.reason, bad.text)]

    def _market_data_request(self, session, req_id, msg) -> list[FixMessage]:
        kind = msg.get(SUBSCRIPTION_REQUEST_TYPE)
        key = (session, req_id)
        if kind == "2":
            sub = self.subscriptions.pop(key, None)
            if sub is None:
                raise _BadRequest(None, f"no active subscription with MDReqID {req_id!r}")
            self._unindex(sub)
            return []
        if kind not in ("0", "1"):
            raise _BadRequest(REJ_SUBSCRIPTION_TYPE, "SubscriptionRequestType must be 0 (snapshot), "
                                                     "1 (snapshot and updates) or 2 (unsubscribe)")
        if kind == "1" and key in self.subscriptions:
            raise _BadRequest(REJ_DUPLICATE_ID, f"MDReqID {req_id!r} is already subscribed")
        if kind == "1" and sum(k[0] == session for k in self.subscriptions) >= MAX_SUBSCRIPTIONS_PER_SESSION:
            raise _BadRequest(None, f"at most {MAX_SUBSCRIPTIONS_PER_SESSION} subscriptions per "
                                    "session; unsubscribe (SubscriptionRequestType 2) first")
        depth_text = msg.get(MARKET_DEPTH, "0")
        if not (depth_text.isascii() and depth_text.isdigit()) or len(depth_text) > 6:
            raise _BadRequest(REJ_DEPTH, "MarketDepth must be 0 (full book) or a number of levels")
        depth = int(depth_text) or FULL_BOOK
        update_type = msg.get(MD_UPDATE_TYPE, "1")
        if update_type not in ("0", "1"):
            raise _BadRequest(REJ_UPDATE_TYPE, "MDUpdateType must be 0 (full) or 1 (incremental)")
        if msg.get(AGGREGATED_BOOK, "Y") != "Y":
            raise _BadRequest(REJ_AGGREGATED, "only aggregated books (AggregatedBook=Y) are published")
        entry_types = frozenset(msg.get_all(MD_ENTRY_TYPE)) or SUPPORTED_ENTRY_TYPES
        if not entry_types <= SUPPORTED_ENTRY_TYPES:
            raise _BadRequest(REJ_ENTRY_TYPE, "MDEntryType must be 0 (bid), 1 (offer) or 2 (trade)")
        symbols = tuple(dict.fromkeys(msg.get_all(SYMBOL)))
        if not symbols:
            raise _BadRequest(REJ_UNKNOWN_SYMBOL, "no Symbol requested (NoRelatedSym)")
        for symbol in symbols:
            if symbol not in self.exchange.specs:
                raise _BadRequest(REJ_UNKNOWN_SYMBOL, f"unknown Symbol {symbol!r}")
        sub = _Subscription(session, req_id, symbols, depth, entry_types, update_type == "1")
        out = []
        for symbol in symbols:
            view = self._view(symbol, depth, entry_types)
            out.append(self._snapshot(sub, symbol, view))
            sub.views[symbol] = view
        if kind == "1":
            self.subscriptions[key] = sub
            for symbol in symbols:
                self.by_symbol.setdefault(symbol, []).append(sub)
        return out

    def drop_session(self, session: SessionKey) -> None:
        for key in [k for k in self.subscriptions if k[0] == session]:
            self._unindex(self.subscriptions.pop(key))

    def _unindex(self, sub: _Subscription) -> None:
        for symbol in sub.symbols:
            subs = self.by_symbol.get(symbol, [])
            if sub in subs:
                subs.remove(sub)
            if not subs:
                self.by_symbol.pop(symbol, None)

    # ------------------------------------------------------------------ engine events
    def on_events(self, events) -> list[Outbound]:
        """Increments for every subscription whose credit types these events touched."""
        touched: dict[str, list] = {}
        for event in events:
            instrument = getattr(event, "instrument", None)
            if instrument is None:
                continue
            trades = touched.setdefault(instrument, [])
            if type(event) is TradeExecuted:
                trades.append(event)
                self.last_trade[instrument] = (event.price, event.qty)
        if not touched or not self.by_symbol:
            return []
        out: list[Outbound] = []
        for sub in list(self.subscriptions.values()):
            entries = []
            for symbol in sub.symbols:
                if symbol not in touched:
                    continue
                view = self._view(symbol, sub.depth, sub.entry_types)
                if not sub.incremental:
                    if view != sub.views[symbol] or touched[symbol]:
                        out.append((sub.session, self._snapshot(sub, symbol, view)))
                    sub.views[symbol] = view
                    continue
                entries += self._increments(symbol, sub.views[symbol], view)
                if TRADE in sub.entry_types:
                    spec = self.exchange.specs[symbol]
                    for trade in touched[symbol]:
                        entries.append([(MD_UPDATE_ACTION, ACTION_NEW), (MD_ENTRY_TYPE, TRADE),
                                        (SYMBOL, symbol), (MD_ENTRY_PX, spec.ticks_to_text(trade.price)),
                                        (MD_ENTRY_SIZE, str(trade.qty))])
                sub.views[symbol] = view
            if entries:
                fields = [(35, "X"), (MD_REQ_ID, sub.req_id), (NO_MD_ENTRIES, str(len(entries)))]
                for entry in entries:
                    fields += entry
                out.append((sub.session, FixMessage(fields)))
        return out

    def _increments(self, symbol: str, old: View, new: View) -> list[list]:
        spec = self.exchange.specs[symbol]
        deletes, changes, news = [], [], []
        for key in old:
            if key not in new:
                deletes.append([(MD_UPDATE_ACTION, ACTION_DELETE), (MD_ENTRY_TYPE, key[0]),
                                (SYMBOL, symbol), (MD_ENTRY_PX, spec.ticks_to_text(key[1]))])
        for key, (size, count) in new.items():
            before = old.get(key)
            if before == (size, count):
                continue
            action = ACTION_NEW if before is None else ACTION_CHANGE
            (news if before is None else changes).append(
                [(MD_UPDATE_ACTION, action), (MD_ENTRY_TYPE, key[0]), (SYMBOL, symbol),
                 (MD_ENTRY_PX, spec.ticks_to_text(key[1])), (MD_ENTRY_SIZE, str(size)),
                 (NUMBER_OF_ORDERS, str(count))])
        return deletes + changes + news

    # ------------------------------------------------------------------ views and messages
    def _view(self, symbol: str, depth: int, entry_types) -> View:
        """{(entry type, price): (size, orders)}, best first per side, to `depth` levels."""
        book = self.exchange.books[symbol]
        view: View = {}
        for entry_type, side in ((BID, Side.BUY), (OFFER, Side.SELL)):
            if entry_type in entry_types:
                for price, size, count in book.depth(side, depth):
                    view[(entry_type, price)] = (size, count)
        return view

    def _snapshot(self, sub: _Subscription, symbol: str, view: View) -> FixMessage:
        """MarketDataSnapshotFullRefresh (W) of one credit type."""
        spec = self.exchange.specs[symbol]
        entries = []
        position = {BID: 0, OFFER: 0}
        for (entry_type, price), (size, count) in view.items():  # built best first per side
            position[entry_type] += 1
            entries.append([(MD_ENTRY_TYPE, entry_type), (MD_ENTRY_PX, spec.ticks_to_text(price)),
                            (MD_ENTRY_SIZE, str(size)), (NUMBER_OF_ORDERS, str(count)),
                            (MD_ENTRY_POSITION_NO, str(position[entry_type]))])
        last = self.last_trade.get(symbol)
        if TRADE in sub.entry_types and last is not None:
            entries.append([(MD_ENTRY_TYPE, TRADE), (MD_ENTRY_PX, spec.ticks_to_text(last[0])),
                            (MD_ENTRY_SIZE, str(last[1]))])
        fields = [(35, "W"), (MD_REQ_ID, sub.req_id), (SYMBOL, symbol),
                  *identity_fields(spec), (NO_MD_ENTRIES, str(len(entries)))]
        for entry in entries:
            fields += entry
        return FixMessage(fields)

    def _security_list(self, msg: FixMessage) -> FixMessage:
        self._security_lists += 1
        req_id = msg.get(SECURITY_REQ_ID) or "NONE"
        head = [(35, "y"), (SECURITY_REQ_ID, req_id),
                (SECURITY_RESPONSE_ID, f"SL{self._security_lists}")]
        kind = msg.get(SECURITY_LIST_REQUEST_TYPE)
        specs = self.exchange.specs
        if kind == "4":
            symbols = sorted(specs)
        elif kind == "0":
            symbols = [s for s in msg.get_all(SYMBOL)[:1] if s in specs]
        else:
            return FixMessage(head + [(SECURITY_REQUEST_RESULT, "1")])
        if not symbols:
            return FixMessage(head + [(SECURITY_REQUEST_RESULT, "2")])
        fields = head + [(SECURITY_REQUEST_RESULT, "0"), (TOT_NO_RELATED_SYM, str(len(symbols))),
                         (LAST_FRAGMENT, "Y"), (NO_RELATED_SYM, str(len(symbols)))]
        trading_day = getattr(self.exchange, "closes", 0)
        for symbol in symbols:
            fields += _security_entry(specs[symbol], trading_day)
        return FixMessage(declare_encoding(fields))


def _security_entry(spec, trading_day: int = 0) -> list[tuple[int, str]]:
    """One NoRelatedSym (146) instance; `trading_day`: the exchange's count of closes, to
    tell a listing that trades only from a later day (spec.tradable_from)."""
    low, high = spec.ticks_to_text(spec.min_ticks), spec.ticks_to_text(spec.max_ticks)
    tick = format_units(spec.tick_units, PRICE_UNITS_PER_CNY, spec.price_places)
    band_pct = spec.to_json()["band_pct"]
    ref = spec.ticks_to_text(spec.ref_ticks)
    entry = [(SYMBOL, spec.symbol), *identity_fields(spec)]
    if spec.name:
        entry += text_fields(SECURITY_DESC, spec.name)
    attributes = (f"TickSize={tick}", f"RefPrice={ref}", f"PriceBandPct={band_pct}",
                  f"MaxOrderQty={spec.max_qty}", *attribute_texts(spec, trading_day))
    entry.append((NO_INSTR_ATTRIB, str(len(attributes))))
    for text in attributes:
        entry += [(INSTR_ATTRIB_TYPE, "99"), (INSTR_ATTRIB_VALUE, text)]
    stipulations = [(STIPULATION_TYPE, "PRICE"), (STIPULATION_VALUE, f"{low}-{high}")]
    vintage = vintage_text(spec)
    if vintage:
        stipulations += [(STIPULATION_TYPE, PRODUCTION_YEAR), (STIPULATION_VALUE, vintage)]
    entry += [(CURRENCY, "CNY"), (NO_STIPULATIONS, str(len(stipulations) // 2)), *stipulations,
              (ROUND_LOT, str(spec.lot)), (MIN_TRADE_VOL, str(spec.lot)),
              (TEXT, f"{_lot_text(spec, vintage, trading_day)}tick {tick} CNY; lot {spec.lot} t; "
                     f"max {spec.max_qty} t per order; "
                     f"daily band {low}-{high} CNY ({band_pct}% around {ref})")]
    return entry


def _lot_text(spec, vintage: str, trading_day: int) -> str:
    """What the instrument delivers, in words, for Text (58); "" for a pooled instrument."""
    if spec.kind == "pooled":
        return ""
    if spec.project:
        text = f"listing of {spec.project} vintage {vintage} ({spec.credit_type})"
        if spec.tradable_from > trading_day:
            text += "; trades from the next trading day (Art.17)" if (
                spec.tradable_from - trading_day == 1) else (
                f"; trades in {spec.tradable_from - trading_day} trading days (Art.17)")
        return text + "; "
    return (f"contract: any {spec.credit_type} lot"
            + (f" of vintage {vintage}" if vintage else "") + "; ")


def _md_reject(req_id: str, reason: Optional[str], text: str) -> FixMessage:
    """MarketDataRequestReject (Y)."""
    fields = [(35, "Y"), (MD_REQ_ID, req_id)]
    if reason is not None:
        fields.append((MD_REQ_REJ_REASON, reason))
    fields += text_fields(TEXT, text)
    return FixMessage(declare_encoding(fields))
