"""Invariants of the engine on generated command streams, checked from the outside.

Independently of the reference model: after every command, from the engine's public state
(snapshot, accounts) and the events it emitted,
  - money is conserved: sum over accounts of cash + fees paid changes only by the cash
    deposits printed (Deposited events), and the fees paid equal the fees printed on the
    trades, each floor(gross * 6 / 1000) per side;
  - credits are conserved per instrument, except for the credits deposits printed;
  - no account is ever negative, and nobody holds reservations beyond what they own;
  - credits reserved equal the open quantity of the account's resting sells;
  - cash reserved covers what the resting buys need (and, by the rule, equals it);
  - the book is never crossed, levels are strictly ordered, every level and order is
    non-empty, and an order id rests at most once.
"""
from __future__ import annotations

from hypothesis import given, settings

from ccerx.engine.core.events import Deposited, OrderAccepted, TradeExecuted
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.core.types import Side
from tests.property.command_streams import iter_commands, scaled, streams

FEE_PPM = 6_000


def need_fen(spec, price_ticks: int, qty: int) -> int:
    gross = price_ticks * spec.tick_fen * qty
    return gross + gross * FEE_PPM // 1_000_000


def check_book_shape(snapshot: dict) -> None:
    seen = set()
    for symbol, sides in snapshot.items():
        for side, levels in sides.items():
            prices = [price for price, _ in levels]
            ordered = sorted(prices, reverse=(side == "buy"))
            assert prices == ordered and len(set(prices)) == len(prices), f"{symbol} {side} levels"
            for price, orders in levels:
                assert orders, f"{symbol} {side} empty level {price}"
                for oid, qty in orders:
                    assert qty > 0, f"{symbol} order {oid} rests with qty {qty}"
                    assert oid not in seen, f"order {oid} rests twice"
                    seen.add(oid)
        if sides["buy"] and sides["sell"]:
            assert sides["buy"][0][0] < sides["sell"][0][0], f"{symbol} book crossed"


def run_checked(stream) -> None:
    accounts = stream.engine_accounts()
    engine = Exchange(stream.instruments, accounts, rules=stream.profile)
    cash0, credits0 = accounts.totals()
    credits0 = {k: v for k, v in credits0.items() if v}
    owner: dict[str, tuple[str, Side]] = {}
    fees_printed = 0
    fees_paid0 = sum(a.fees_paid for a in accounts.by_id.values())
    for command in iter_commands(stream, lambda: engine.specs):
        events = engine.apply(command)
        for e in events:
            if type(e) is OrderAccepted:
                owner[e.order_id] = (e.account, e.side)
            elif type(e) is Deposited:     # paid in from outside: the totals move by it
                if e.asset == "CNY":
                    cash0 += e.amount
                else:
                    credits0[e.asset] = credits0.get(e.asset, 0) + e.amount
            elif type(e) is TradeExecuted:
                gross = e.price * engine.specs[e.instrument].tick_fen * e.qty
                assert e.buy_fee == e.sell_fee == gross * FEE_PPM // 1_000_000, e
                fees_printed += e.buy_fee + e.sell_fee
        where = f"after {command!r}"
        cash, credits = accounts.totals()
        assert cash == cash0, f"cash + fees not conserved {where}"
        assert {k: v for k, v in credits.items() if v} == credits0, f"credits not conserved {where}"
        assert sum(a.fees_paid for a in accounts.by_id.values()) - fees_paid0 == fees_printed, where

        snapshot = engine.snapshot_books()
        check_book_shape(snapshot)
        needs_cash: dict[str, int] = {}
        needs_credits: dict[tuple[str, str], int] = {}
        for symbol, sides in snapshot.items():
            spec = engine.specs[symbol]
            for side, levels in sides.items():
                for price, orders in levels:
                    for oid, qty in orders:
                        account, order_side = owner[oid]
                        assert order_side.value == side, f"{oid} rests on the wrong side {where}"
                        if side == "buy":
                            needs_cash[account] = needs_cash.get(account, 0) + need_fen(spec, price, qty)
                        else:
                            key = (account, symbol)
                            needs_credits[key] = needs_credits.get(key, 0) + qty
        for name, a in accounts.by_id.items():
            assert a.cash >= 0 and a.fees_paid >= 0, f"{name} negative cash {where}"
            assert 0 <= a.cash_reserved <= a.cash, f"{name} cash reservation {where}"
            for symbol, held in a.credits.items():
                reserved = a.credits_reserved.get(symbol, 0)
                today = a.bought_today.get(symbol, 0)
                assert held >= 0 and reserved >= 0 and today >= 0, f"{name} negative {where}"
                assert reserved + today <= held, f"{name} sells credits it may not {where}"
            for symbol in engine.specs:
                assert a.credits_reserved.get(symbol, 0) == needs_credits.get((name, symbol), 0), \
                    f"{name} {symbol} credits reserved != open sells {where}"
            need = needs_cash.get(name, 0)
            assert a.cash_reserved == need, \
                f"{name} cash reserved {a.cash_reserved} != {need} needed by open buys {where}"
        engine.check()


@settings(max_examples=scaled(400))
@given(streams(with_accounts=True))
def test_money_credits_and_reservations_hold_after_every_step(stream):
    """Conservation, and each account's cash reserved equals exactly what its open buys need."""
    run_checked(stream)
