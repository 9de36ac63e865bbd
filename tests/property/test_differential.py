"""Differential test: the engine against the plain reference model, step by step.

Every generated command goes to both; after each one the events must be equal in every
field (reject texts excepted: they are for humans, the reason is the contract), the books
must be equal level by level and order by order, the accounts equal to the fen, and the
engine's own invariant check (`Exchange.check`) must pass.
"""
from __future__ import annotations

import pytest
from hypothesis import Phase, given, settings

from engine.events import OrderRejected
from engine.exchange import Exchange
from command_streams import iter_commands, scaled, streams

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reference_model import ReferenceExchange  # noqa: E402


def engine_reservation_policy() -> str:
    """'need' if a resting buy partly filled below its limit holds exactly what its open
    quantity needs (the rule), 'consumed' if it keeps the fill's saving (the engine bug)."""
    from engine.commands import NewOrder
    from engine.risk import Account, Accounts
    accounts = Accounts([Account("A", cash=100_000), Account("B", credits={"CCER-AFF": 1})])
    exchange = Exchange(accounts=accounts)
    exchange.apply(NewOrder("s", "B", "CCER-AFF", "sell", "limit", None, 60_000_000, 1))
    exchange.apply(NewOrder("b", "A", "CCER-AFF", "buy", "limit", None, 62_000_000, 5))
    need = 4 * 6200 + 4 * 6200 * 6_000 // 1_000_000
    return "need" if accounts.get("A").cash_reserved == need else "consumed"


ENGINE_RESERVATION = engine_reservation_policy()


def comparable(events):
    out = []
    for e in events:
        if type(e) is OrderRejected:
            assert isinstance(e.text, str) and e.text, f"reject without a text: {e}"
            e = e._replace(text="")
        out.append(e)
    return out


def book_lists(snapshot: dict) -> dict:
    return {symbol: {side: [[price, [list(o) for o in orders]] for price, orders in levels]
                     for side, levels in sides.items()}
            for symbol, sides in snapshot.items()}


def engine_account_view(account) -> dict:
    nonzero = lambda d: {k: v for k, v in d.items() if v}  # noqa: E731
    return {"cash": account.cash, "cash_reserved": account.cash_reserved,
            "credits": nonzero(account.credits), "credits_reserved": nonzero(account.credits_reserved),
            "bought_today": nonzero(account.bought_today), "fees_paid": account.fees_paid}


def run_both(stream, reservation="need"):
    engine = Exchange(stream.instruments, stream.engine_accounts())
    model = ReferenceExchange(stream.instruments, stream.model_accounts(), reservation=reservation)
    history = []
    for command in iter_commands(stream, lambda: model.specs):
        got = engine.apply(command)
        want = model.apply(command)
        history.append(command)
        context = "after commands:\n  " + "\n  ".join(map(repr, history))
        assert comparable(got) == comparable(want), context
        engine.check()
        assert book_lists(engine.snapshot_books()) == model.snapshot_books(), context
        assert engine.specs == model.specs, context
        if model.accounts is not None:
            for name in model.accounts:
                assert engine_account_view(engine.accounts.get(name)) == model.account_view(name), \
                    f"account {name} {context}"
    return engine, model


@settings(max_examples=scaled(800))
@given(streams(with_accounts=False))
def test_engine_matches_model_without_accounts(stream):
    run_both(stream)


RESERVATION_BUG = ("engine bug: a partly filled resting buy keeps holding the cash its fills saved "
                   "(better price, fee rounding) instead of exactly what its open quantity needs; "
                   "see tests/scenarios/book_scenarios.txt 'reservation after a better fill'")


# The rule: a resting buy holds exactly price x open qty plus fee. Expected to fail until the
# engine releases the saving of each fill; no shrinking meanwhile (it would cost minutes).
@pytest.mark.xfail(strict=True, reason=RESERVATION_BUG)
@settings(max_examples=scaled(300), phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(streams(with_accounts=True))
def test_engine_matches_model_with_accounts(stream):
    run_both(stream)


# The same streams against the engine's current reservation policy, so that everything else
# about accounts (funds and credit checks, settlement, fees, same-day resale) stays tested
# while the bug is open. Retires itself once the engine follows the rule (the strict xfail
# tests then XPASS and fail: remove their markers).
@pytest.mark.skipif(ENGINE_RESERVATION == "need", reason="engine fixed: covered by the rule's test")
@settings(max_examples=scaled(800))
@given(streams(with_accounts=True))
def test_engine_matches_model_with_accounts_consumed_reservations(stream):
    run_both(stream, reservation="consumed")


@settings(max_examples=scaled(60))
@given(streams(min_steps=100, max_steps=300))
def test_engine_matches_model_on_long_streams(stream):
    run_both(stream, reservation=ENGINE_RESERVATION)
