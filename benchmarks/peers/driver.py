"""One engine, one cleaned flow, one measurement: the driver `python -m ccerx.benchmarks.peers`
runs in each engine's environment (the peers' own virtual environment, or the project's for
ccerx). It imports nothing of ours unless the engine is ccerx, so it runs where ccerx is not
installed.

    python driver.py ENGINE FLOW.ndjson MODE

ENGINE: ccerx, lean, matching-engine, cython-orderbook, limit-order-book.
MODE:
  verify  read the flow, apply it and count trades and traded volume: from the events each
          call returns (ccerx, matching-engine), from the engine's own record after the
          timed path's calls (the lean book, cython-orderbook's trade log), or per command
          from the resting volume before and after (limit-order-book, which reports no
          trades);
  engine  translate the whole flow into calls of the engine's API first (`translate`: the
          entry point and its arguments; immutable command values are built here, as ccerx's
          commands are parsed here), then time only those calls (CPU time, process_time);
  stream  read, translate and call line by line, as a whole process would (the harness
          times the process from the outside).
It prints one JSON line: {"engine", "mode", "commands", "trades", "volume", "engine_cpu_s"}.

The cleaned flow (benchmarks/peers.py, `clean_flow`) holds only what every engine expresses:
limit orders resting until cancelled, market orders whose unfilled rest is dropped, and
cancels of resting orders; every order has its own account (no self-trade rules apply), and
each line carries the integer price in ticks ("px"), the numeric id ("n") and, for a cancel,
the instrument and side of the order it cancels.
"""
from __future__ import annotations

import gc
import json
from collections import deque
import sys
import time

import orjson

LIMIT, MARKET, CANCEL = 0, 1, 2


def row(obj: dict) -> tuple:
    """A cleaned flow line -> (kind, instrument, is_buy, n, px, qty)."""
    op = obj["op"]
    if op == "cancel":
        return (CANCEL, obj["instrument"], obj["side"] == "buy", obj["n"], 0, 0)
    kind = MARKET if obj["type"] == "market" else LIMIT
    return (kind, obj["instrument"], obj["side"] == "buy", obj["n"], obj.get("px", 0), obj["qty"])


# --- a lean book: SortedDict of price levels, a deque per level, no validation -------------

class LeanBook:
    """Price-time priority with nothing else: no validation, no events, no accounts."""

    def __init__(self):
        from sortedcontainers import SortedDict
        self.bids = SortedDict()     # key -price: best bid first
        self.asks = SortedDict()     # key price
        self.orders = {}             # n -> [n, qty, is_buy, key]
        self.trades = 0
        self.volume = 0

    def limit(self, is_buy, n, px, qty):
        qty = self._match(is_buy, qty, px)
        if qty:
            side, key = (self.bids, -px) if is_buy else (self.asks, px)
            order = [n, qty, is_buy, key]
            level = side.get(key)
            if level is None:
                level = side[key] = deque()
            level.append(order)
            self.orders[n] = order

    def market(self, is_buy, n, qty):
        self._match(is_buy, qty, None)

    def cancel(self, n):
        order = self.orders.pop(n, None)
        if order is not None:
            order[1] = 0       # left in its queue, dropped when matching reaches it

    def _match(self, is_buy, qty, px):
        side = self.asks if is_buy else self.bids
        orders = self.orders
        while qty and side:
            key, level = side.peekitem(0)
            if px is not None and (key > px if is_buy else -key < px):
                break
            maker = level[0]
            if not maker[1]:                 # cancelled
                level.popleft()
                if not level:
                    del side[key]
                continue
            fill = maker[1] if maker[1] < qty else qty
            qty -= fill
            maker[1] -= fill
            self.trades += 1
            self.volume += fill
            if not maker[1]:
                level.popleft()
                del orders[maker[0]]
                if not level:
                    del side[key]
        return qty


# --- adapters: apply(row) for each engine; counts() -> (trades or None, volume) -----------

class Lean:
    def __init__(self):
        self.books = {}

    def book(self, instrument):
        book = self.books.get(instrument)
        if book is None:
            book = self.books[instrument] = LeanBook()
        return book

    def translate(self, r):
        kind, instrument, is_buy, n, px, qty = r
        b = self.book(instrument)
        if kind == LIMIT:
            return b.limit, (is_buy, n, px, qty)
        if kind == MARKET:
            return b.market, (is_buy, n, qty)
        return b.cancel, (n,)

    def counts(self):
        return (sum(b.trades for b in self.books.values()),
                sum(b.volume for b in self.books.values()))


class LimitOrderBookCpp:
    """limit-order-book (C++ through ctypes): reports no trades; traded volume per command is
    read from the book's resting volume before and after (verify mode only)."""

    def __init__(self, verify=False):
        from limit_order_book import LimitOrderBook
        self.new = LimitOrderBook
        self.books = {}
        self.verify = verify
        self.volume = 0

    def book(self, instrument):
        book = self.books.get(instrument)
        if book is None:
            book = self.books[instrument] = self.new()
        return book

    def make_apply(self):
        book = self.book
        if not self.verify:
            def apply(r):
                kind, instrument, is_buy, n, px, qty = r
                b = book(instrument)
                if kind == LIMIT:
                    b.limit(is_buy, n, qty, px)
                elif kind == MARKET:
                    b.market(is_buy, n, qty)
                else:
                    b.cancel(n)
            return apply

        def apply_counting(r):
            kind, instrument, is_buy, n, px, qty = r
            b = book(instrument)
            before = b.volume()
            if kind == LIMIT:
                b.limit(is_buy, n, qty, px)
                self.volume += (before + qty - b.volume()) // 2   # both sides lose the fill
            elif kind == MARKET:
                b.market(is_buy, n, qty)
                self.volume += before - b.volume()
            else:
                b.cancel(n)
        return apply_counting

    def translate(self, r):
        """The C++ entry points themselves (limit_order_book's own wrapper methods only
        look them up and pass the book pointer)."""
        from limit_order_book.library import Library
        lib = Library.functions
        kind, instrument, is_buy, n, px, qty = r
        pointer = self.book(instrument)._book
        if kind == LIMIT:
            return lib.limit, (pointer, is_buy, n, qty, px)
        if kind == MARKET:
            return lib.market, (pointer, is_buy, n, qty)
        return lib.cancel, (pointer, n)

    def counts(self):
        return (None, self.volume)


class CythonOrderbook:
    """cython-orderbook: its own string ids (kept in a map for cancels), a trade log."""

    def __init__(self):
        import cython_orderbook as co
        self.co = co
        self.books = {}
        self.ids = {}

    def book(self, instrument):
        book = self.books.get(instrument)
        if book is None:
            book = self.books[instrument] = self.co.OrderBook()
        return book

    def translate(self, r):
        kind, instrument, is_buy, n, px, qty = r
        b = self.book(instrument)
        side = self.co.OrderSide.BID if is_buy else self.co.OrderSide.ASK
        if kind == LIMIT:
            return self._limit, (b, side, n, px, qty)
        if kind == MARKET:
            return self._market, (b, side, qty)
        return self._cancel, (b, n)

    def _limit(self, b, side, n, px, qty):
        order = self.co.Order(side, qty, px)
        b.add_limit_order(order)
        if order.remaining_quantity:
            self.ids[n] = order.order_id

    def _market(self, b, side, qty):
        b.add_market_order(self.co.Order(side, qty))

    def _cancel(self, b, n):
        b.cancel_order(self.ids.pop(n))

    def counts(self):
        trades = volume = 0
        for b in self.books.values():
            trades += len(b.trade_log)
            volume += sum(t.quantity_filled for t in b.trade_log)
        return (trades, volume)


class MatchingEnginePy:
    """matching-engine (pure Python, msgspec commands): sequenced commands, market = IOC."""

    def __init__(self):
        from matching_engine.engine import MatchingEngine
        from matching_engine import domain, events
        self.d, self.Trade = domain, events.Trade
        self.new = MatchingEngine
        self.books = {}
        self.seq = 0
        self.trades = self.volume = 0
        self.count = False

    def book(self, instrument):
        book = self.books.get(instrument)
        if book is None:
            book = self.books[instrument] = [self.new(), 0]
        return book

    def make_apply(self):
        d, Trade, book = self.d, self.Trade, self.book
        NewOrder, CancelOrder, Sequenced = d.NewOrder, d.CancelOrder, d.SequencedCommand
        BUY, SELL, MKT, IOC = d.Side.BUY, d.Side.SELL, d.OrderType.MARKET, d.TimeInForce.IOC
        counting = self.count

        def apply(r):
            kind, instrument, is_buy, n, px, qty = r
            b = book(instrument)
            b[1] += 1
            if kind == LIMIT:
                command = NewOrder(n, n, BUY if is_buy else SELL, px, qty)
            elif kind == MARKET:
                command = NewOrder(n, n, BUY if is_buy else SELL, 0, qty, MKT, IOC)
            else:
                command = CancelOrder(n, n)
            events = b[0].process(Sequenced(b[1], 0, command))
            if counting:
                for event in events:
                    if type(event) is Trade:
                        self.trades += 1
                        self.volume += event.qty
        return apply

    def translate(self, r):
        """A sequenced command, built in flow order (its commands are immutable values)."""
        d = self.d
        kind, instrument, is_buy, n, px, qty = r
        b = self.book(instrument)
        b[1] += 1
        side = d.Side.BUY if is_buy else d.Side.SELL
        if kind == LIMIT:
            command = d.NewOrder(n, n, side, px, qty)
        elif kind == MARKET:
            command = d.NewOrder(n, n, side, 0, qty, d.OrderType.MARKET, d.TimeInForce.IOC)
        else:
            command = d.CancelOrder(n, n)
        return b[0].process, (d.SequencedCommand(b[1], 0, command),)

    def counts(self):
        return (self.trades, self.volume)


class Ccerx:
    """ccerx itself: continuous rules, no accounts, the NDJSON edge's own parser."""

    def __init__(self):
        from ccerx.engine.core.events import TradeExecuted
        from ccerx.engine.core.exchange import Exchange
        from ccerx.engine.core.rules import PROFILES
        from ccerx.engine.formats.config import load_instruments
        from ccerx.engine.formats.ndjson import parse_command
        self.exchange = Exchange(load_instruments(None), None, rules=PROFILES["continuous"])
        self.parse = parse_command
        self.Trade = TradeExecuted
        self.trades = self.volume = 0
        self.count = False

    def make_apply(self):
        apply, Trade = self.exchange.apply, self.Trade
        if not self.count:
            return apply

        def apply_counting(command):
            for event in apply(command):
                if type(event) is Trade:
                    self.trades += 1
                    self.volume += event.qty
        return apply_counting

    def translate(self, command):
        return self.exchange.apply, (command,)

    def counts(self):
        return (self.trades, self.volume)


ENGINES = {"ccerx": Ccerx, "lean": Lean, "limit-order-book": LimitOrderBookCpp,
           "cython-orderbook": CythonOrderbook, "matching-engine": MatchingEnginePy}


def run(engine_name: str, flow: str, mode: str) -> dict:
    adapter = (LimitOrderBookCpp(verify=mode == "verify") if engine_name == "limit-order-book"
               else ENGINES[engine_name]())
    if mode == "verify" and hasattr(adapter, "count"):
        adapter.count = True
    is_ccerx = engine_name == "ccerx"
    decode = adapter.parse if is_ccerx else (lambda line: row(orjson.loads(line)))
    gc.disable()    # every engine alike: the collector's pauses are item 3's subject, not this
    commands = 0
    cpu = None
    if mode == "verify" and hasattr(adapter, "make_apply"):   # counting from the events
        apply = adapter.make_apply()
        with open(flow, "rb") as f:
            for line in f:
                apply(decode(line))
                commands += 1
    elif mode == "engine":
        translate = adapter.translate
        with open(flow, "rb") as f:
            calls = [translate(decode(line)) for line in f if line.strip()]
        commands = len(calls)
        started = time.process_time()
        for call, args in calls:
            call(*args)
        cpu = time.process_time() - started
    else:
        translate = adapter.translate
        with open(flow, "rb") as f:
            for line in f:
                call, args = translate(decode(line))
                call(*args)
                commands += 1
    trades, volume = adapter.counts() if mode == "verify" else (None, None)
    return {"engine": engine_name, "mode": mode, "commands": commands, "trades": trades,
            "volume": volume, "engine_cpu_s": cpu}


if __name__ == "__main__":
    print(json.dumps(run(*sys.argv[1:4])))
