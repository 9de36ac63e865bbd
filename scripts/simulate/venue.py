"""Venues: the one way agents reach the exchange.

Agents never touch an `Exchange`; they send commands through a venue and learn what
happened from the events it hands back. `InProcessVenue` drives `engine.exchange.Exchange`
directly on the simulated clock (the engine applies every session rule: band, pre-funded
accounts, same-day resale, fees, expiry and the VWAP close at `EndOfDay`). The FIX venue
(fixvenue.py), where each agent group is a broker session on a running `ccerx serve`,
implements the same methods over TCP.

Issuance is a registry operation, not a trade: `issue()` deposits the batch into the owner's
account at the exchange (an engine `Deposit`, the operator's command for the registry's
transfer into the trading account) and returns the `Deposited` event, which the run loop
hands to the settlement like every trade.
"""
from __future__ import annotations

from typing import Protocol

from ccerx.engine.core.commands import Deposit, EndOfDay
from ccerx.engine.core.events import Deposited
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.core.rules import CONTINUOUS
from ccerx.engine.core.risk import Account, Accounts
from ccerx.engine.core.types import InstrumentSpec


class Venue(Protocol):
    mode: str
    specs: dict[str, InstrumentSpec]   # current specs: the band moves with each close

    def send(self, command) -> list: ...
    def end_of_day(self, ts: int) -> list: ...
    def top(self, instrument: str) -> tuple[int | None, int | None]: ...
    def depth(self, instrument: str, levels: int) -> tuple[int, int]: ...
    def cash_available(self, account: str) -> int: ...
    def credits_sellable(self, account: str, instrument: str) -> int: ...
    def issue(self, account: str, instrument: str, qty: int, ts: int) -> Deposited: ...


class AccountView:
    """What agents may spend: read from `self.accounts` (the exchange's own in process, the
    brokers' shadow over FIX)."""
    accounts: Accounts

    def cash_available(self, account: str) -> int:
        return self.accounts.by_id[account].cash_available

    def credits_sellable(self, account: str, instrument: str) -> int:
        return self.accounts.by_id[account].credits_sellable(instrument)


class InProcessVenue(AccountView):
    mode = "in-process"

    def __init__(self, instruments, accounts: Accounts, fee_ppm: int, rules=CONTINUOUS):
        self.exchange = Exchange(instruments, accounts, fee_ppm, rules)
        self.accounts = accounts
        self.specs = self.exchange.specs
        self.books = self.exchange.books
        self.send = self.exchange.apply       # commands in, events out (every command: a
                                              # recorder replaces `send`, see cmd_surveil)
        self.deposits = 0

    def end_of_day(self, ts: int) -> list:
        return self.send(EndOfDay(ts))

    def top(self, instrument: str):
        book = self.books[instrument]
        return book.best_bid(), book.best_ask()

    def depth(self, instrument: str, levels: int = 5) -> tuple[int, int]:
        """Tonnes resting on the best `levels` price levels of each side."""
        book = self.books[instrument]
        out = []
        for side in (book.bids, book.asks):
            total = 0
            for n, level in enumerate(side.iter_levels()):
                if n == levels:
                    break
                total += level.total_qty
            out.append(total)
        return out[0], out[1]

    def account(self, account: str) -> Account:
        return self.accounts.by_id[account]

    def issue(self, account: str, instrument: str, qty: int, ts: int) -> Deposited:
        self.deposits += 1
        [event] = self.send(Deposit(f"ISS-{self.deposits}", account, instrument, qty, ts))
        if type(event) is not Deposited:
            raise AssertionError(f"the exchange refused an issuance batch: {event}")
        return event
