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
hands to the settlement like every trade. With lots, `deposit_lots()` moves lots (credit
type, project, vintage) in, each optionally declaring its listing (Art.17; the events are the
`Deposited` and the `InstrumentDefined` of the listing), and `retire()` retires (注销) free
credits of one lot for good (an engine `Retire`; the event is `Retired`, or an
`OrderRejected` with op "retire").
"""
from __future__ import annotations

from typing import Protocol

from ccerx.engine.core.commands import Deposit, EndOfDay, Retire
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
        """Tonnes a sell of `instrument` may deliver now: of a listing, its lot; of a
        contract, every eligible lot (and the type's pooled holding); else the pooled one."""
        spec = self.specs[instrument]
        held = self.accounts.by_id[account]
        lots = self.accounts.lots
        if lots and spec.kind == "contract":
            return sum(held.credits_sellable(key) for key in held.credits
                       if key == instrument or (key in lots and spec.eligible(lots[key])))
        return held.credits_sellable(spec.holding)


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

    def deposit_lots(self, requests: list, ts: int) -> list:
        """Lots moved in: [(account, credit_type, project, vintage, qty, list symbol | None,
        declared price units | None)] -> their events (Deposited, InstrumentDefined)."""
        out = []
        for account, credit_type, project, vintage, qty, symbol, price in requests:
            self.deposits += 1
            events = self.exchange.apply(Deposit(f"ISS-{self.deposits}", account, None, qty, ts,
                                                 None, credit_type, project, vintage, symbol,
                                                 price))
            if type(events[0]) is not Deposited:
                raise AssertionError(f"the exchange refused a lot: {events[0]}")
            out += events
        return out

    def retire(self, retire_id: str, account: str, key: str, qty: int, purpose: str,
               ts: int):
        """Retire `qty` t of holding `key` (a lot, or a type's pooled holding)."""
        project, vintage = self.accounts.lot_of(key)
        instrument = key if project is None else None
        [event] = self.exchange.apply(Retire(retire_id, account, project, vintage, qty, purpose,
                                             instrument, ts))
        return event
