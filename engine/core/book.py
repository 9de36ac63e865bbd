"""One instrument's limit order book: price levels of FIFO queues, both sides.

Layout: each side keeps `levels` (dict price -> Level) and `keys` (a plain sorted list of
sort keys, best first: -price for bids, +price for asks). A Level is an intrusive
doubly-linked list of resting orders, so cancel is O(1) and the queue head is the
next to trade. Costs: add to an existing level O(1); a new or emptied level costs a
bisect plus a memmove of the key list, O(L) but with a tiny constant: the daily band
caps L (about 1,900 levels per side for CCER-MGV at a 0.01 tick), and measured here a
list with `bisect` beats sortedcontainers.SortedList twice over at that size
(insert+delete 0.41 us vs 0.86 us; best price 31 ns vs 129 ns). Best price O(1).

The book only stores orders; the matching rules live in exchange.py. `check()`
verifies every structural invariant and is called by the property tests after each step.
"""
from __future__ import annotations

from bisect import bisect_left, insort
from typing import Iterator, Optional

from ccerx.engine.core.types import Side


class Order:
    """A resting (or about to rest) limit order. Mutable: open/filled quantities move."""
    __slots__ = ("order_id", "account", "side", "price", "open_qty", "filled_qty",
                 "reserved", "owner", "prev", "next", "level", "lots")

    def __init__(self, order_id: str, account: str, side: Side, price: Optional[int],
                 open_qty: int, owner: Optional[str] = None):
        self.order_id = order_id
        self.account = account
        self.side = side
        self.price = price      # ticks; None only for a market order (which never rests)
        self.open_qty = open_qty
        self.filled_qty = 0
        self.reserved = 0       # cash (fen) or credits (t) held for this order by risk
        self.owner = owner
        self.prev: Optional[Order] = None
        self.next: Optional[Order] = None
        self.level: Optional[Level] = None
        # a contract sell's reservation per lot: [[holding key, t], ...] in delivery order
        # (None: all on the spec's holding key)
        self.lots: Optional[list] = None

    def __repr__(self) -> str:
        return (f"Order({self.order_id!r}, {self.account!r}, {self.side.value}, {self.price}, "
                f"open={self.open_qty}, filled={self.filled_qty})")


class Level:
    __slots__ = ("price", "head", "tail", "total_qty", "count")

    def __init__(self, price: int):
        self.price = price
        self.head: Optional[Order] = None
        self.tail: Optional[Order] = None
        self.total_qty = 0
        self.count = 0

    def orders(self) -> Iterator[Order]:
        order = self.head
        while order is not None:
            yield order
            order = order.next


class BookSide:
    __slots__ = ("side", "levels", "keys", "sign")

    def __init__(self, side: Side):
        self.side = side
        self.levels: dict[int, Level] = {}
        self.keys: list[int] = []
        self.sign = -1 if side is Side.BUY else 1

    def iter_levels(self) -> Iterator[Level]:
        """Levels best first."""
        levels, sign = self.levels, self.sign
        for key in self.keys:
            yield levels[key * sign]

    def __len__(self) -> int:
        return len(self.levels)


class Book:
    __slots__ = ("instrument", "bids", "asks", "orders", "where")

    def __init__(self, instrument: str, where: dict | None = None):
        self.instrument = instrument
        self.bids = BookSide(Side.BUY)
        self.asks = BookSide(Side.SELL)
        self.orders: dict[str, Order] = {}   # resting orders by order id
        # order id -> book, shared by all the books of one exchange, so that a cancel finds
        # its order without asking every book (one listing per project and vintage: many)
        self.where: dict = {} if where is None else where

    def side_of(self, side: Side) -> BookSide:
        return self.bids if side is Side.BUY else self.asks

    def opposite(self, side: Side) -> BookSide:
        return self.asks if side is Side.BUY else self.bids

    def add(self, order: Order) -> None:
        """Append at the back of its price level (time priority)."""
        book_side = self.bids if order.side is Side.BUY else self.asks
        price = order.price
        assert price is not None, "a market order never rests"
        level = book_side.levels.get(price)
        if level is None:
            level = Level(price)
            book_side.levels[price] = level
            insort(book_side.keys, price * book_side.sign)
        tail = level.tail
        order.prev = tail
        order.next = None
        if tail is None:
            level.head = order
        else:
            tail.next = order
        level.tail = order
        level.total_qty += order.open_qty
        level.count += 1
        order.level = level
        self.orders[order.order_id] = order
        self.where[order.order_id] = self

    def remove(self, order: Order) -> None:
        """Unlink a resting order (cancel or complete fill)."""
        level = order.level
        assert level is not None, "the order does not rest"
        prev, nxt = order.prev, order.next
        if prev is None:
            level.head = nxt
        else:
            prev.next = nxt
        if nxt is None:
            level.tail = prev
        else:
            nxt.prev = prev
        level.total_qty -= order.open_qty
        level.count -= 1
        order.prev = order.next = order.level = None
        del self.orders[order.order_id]
        del self.where[order.order_id]
        if level.count == 0:
            book_side = self.bids if order.side is Side.BUY else self.asks
            del book_side.levels[level.price]
            keys = book_side.keys
            del keys[bisect_left(keys, level.price * book_side.sign)]

    def reduce(self, order: Order, qty: int) -> None:
        """Take qty off a resting order's open quantity in place (keeps priority)."""
        order.open_qty -= qty
        level = order.level
        assert level is not None, "the order does not rest"
        level.total_qty -= qty

    def best_bid(self) -> Optional[int]:
        keys = self.bids.keys
        return -keys[0] if keys else None

    def best_ask(self) -> Optional[int]:
        keys = self.asks.keys
        return keys[0] if keys else None

    def depth(self, side: Side, levels: int = 5) -> list[tuple[int, int, int]]:
        """[(price, total_qty, order_count)] best first."""
        out: list[tuple[int, int, int]] = []
        for level in self.side_of(side).iter_levels():
            if len(out) == levels:
                break
            out.append((level.price, level.total_qty, level.count))
        return out

    def snapshot(self) -> dict:
        """{'buy': [(price, [(order_id, open_qty), ...]), ...], 'sell': [...]}, best first."""
        return {side.value: [(level.price, [(o.order_id, o.open_qty) for o in level.orders()])
                             for level in self.side_of(side).iter_levels()]
                for side in (Side.BUY, Side.SELL)}

    def check(self) -> None:
        """Raise AssertionError if any structural invariant is broken."""
        seen = 0
        for book_side in (self.bids, self.asks):
            assert len(book_side.keys) == len(book_side.levels), "keys/levels size differ"
            assert book_side.keys == sorted(p * book_side.sign for p in book_side.levels), \
                "keys out of order"
            for key in book_side.keys:
                price = key * book_side.sign
                level = book_side.levels[price]
                assert level.price == price
                assert level.count > 0, "empty level kept"
                total = count = 0
                prev: Optional[Order] = None
                for order in level.orders():
                    assert order.level is level and order.prev is prev, "broken links"
                    assert order.side is book_side.side and order.price == price
                    assert order.open_qty > 0, "resting order with no open quantity"
                    assert self.orders.get(order.order_id) is order, "id index disagrees"
                    total += order.open_qty
                    count += 1
                    prev = order
                assert level.tail is prev, "tail is not the last order"
                assert (total, count) == (level.total_qty, level.count), "level totals wrong"
                seen += count
        assert seen == len(self.orders), "id index holds orders not in the levels"
        bid, ask = self.best_bid(), self.best_ask()
        assert bid is None or ask is None or bid < ask, f"book crossed: {bid} >= {ask}"
