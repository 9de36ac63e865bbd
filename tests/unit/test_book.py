"""The book's own invariant checker must catch every kind of corruption it claims to."""
import pytest

from ccerx.engine.core.book import Book, Order
from ccerx.engine.core.types import DEFAULT_INSTRUMENTS, InstrumentSpec, Side


def filled_book() -> Book:
    book = Book("CCER-AFF")
    for i, (side, price, qty) in enumerate([(Side.BUY, 6190, 10), (Side.BUY, 6190, 20),
                                             (Side.BUY, 6180, 5), (Side.SELL, 6200, 7),
                                             (Side.SELL, 6210, 9)]):
        book.add(Order(f"o{i}", "A", side, price, qty))
    book.check()
    return book


def test_levels_are_best_first_and_fifo():
    book = filled_book()
    assert book.best_bid() == 6190 and book.best_ask() == 6200
    assert book.depth(Side.BUY) == [(6190, 30, 2), (6180, 5, 1)]
    assert book.snapshot()["buy"][0] == (6190, [("o0", 10), ("o1", 20)])


def test_remove_middle_order_keeps_links_and_drops_empty_levels():
    book = filled_book()
    book.remove(book.orders["o0"])
    book.check()
    assert book.snapshot()["buy"][0] == (6190, [("o1", 20)])
    book.remove(book.orders["o1"])
    book.check()
    assert book.best_bid() == 6180


@pytest.mark.parametrize("corrupt, message", [
    (lambda b: setattr(b.orders["o0"].level, "total_qty", 999), "level totals"),
    (lambda b: setattr(b.orders["o1"], "prev", None), "broken links"),
    (lambda b: b.orders.pop("o4"), "id index"),
    (lambda b: b.add(Order("x", "B", Side.BUY, 6205, 1)), "crossed"),
    (lambda b: setattr(b.orders["o3"], "open_qty", 0), "no open quantity"),
    (lambda b: b.bids.keys.reverse(), "keys out of order"),
])
def test_check_detects_corruption(corrupt, message):
    book = filled_book()
    corrupt(book)
    with pytest.raises(AssertionError, match=message):
        book.check()


def test_band_limits_follow_the_ceil_floor_formula():
    aff = DEFAULT_INSTRUMENTS[0]
    assert (aff.min_ticks, aff.max_ticks) == (5580, 6820)
    odd = InstrumentSpec.from_fields("X", tick="0.05", ref_price="10.05", band_pct="7.5")
    # ref 10.05 -> [9.29625, 10.80375]; ticks of 0.05: ceil(185.925)=186, floor(216.075)=216
    assert (odd.min_ticks, odd.max_ticks) == (186, 216)
    assert odd.ticks_to_text(186) == "9.30"


@pytest.mark.parametrize("fields", [
    {"ref_price": "10.005"}, {"ref_price": 10.0}, {"ref_price": "10.00", "tick": "0.001"},
    {"ref_price": "10.00", "lot": 0}, {"ref_price": "10.00", "band_pct": 100},
    {"ref_price": "10.00", "max_qty": "5"},
])
def test_bad_instrument_specs_are_refused(fields):
    with pytest.raises(ValueError):
        InstrumentSpec.from_fields("X", **fields)
