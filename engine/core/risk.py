"""Participants, balances and pre-trade reservations (fully pre-funded market).

A buy reserves cash for price x quantity plus the buyer's fee at its limit (market buys
at the band's upper limit); a sell reserves credits of that type. Credits bought today
cannot be sold again until the day closes. Reservations live on the order
(`Order.reserved`) and are released on fill or cancel.

Fees are ad valorem per side, rounded down to the fen per trade. Rounding down is what
makes a reservation provably sufficient: the sum of per-fill floors never exceeds the
floor of the sum, so an order never needs more than it reserved.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from ccerx.engine.core.types import ParticipantType, format_fen

DEFAULT_FEE_PPM = 6_000  # the exchange's listed rate: 6 per mille of turnover per side
PPM = 1_000_000


def fee_fen(gross_fen: int, fee_ppm: int) -> int:
    """The exchange's fee on one side of a trade: ad valorem, rounded down to the fen. The
    one home of the formula (matching, reservations and the simulator's books call it)."""
    return gross_fen * fee_ppm // PPM


@dataclass(slots=True)
class Account:
    account: str
    participant_type: ParticipantType = ParticipantType.OTHER_ORGANISATION
    member: str | None = None             # broker member the account is registered to
    cash: int = 0                         # fen, total owned
    cash_reserved: int = 0                # fen held for open buy orders
    credits: dict[str, int] = field(default_factory=dict)           # t owned per instrument
    credits_reserved: dict[str, int] = field(default_factory=dict)  # t held for open sells
    bought_today: dict[str, int] = field(default_factory=dict)      # t not sellable until EOD
    fees_paid: int = 0                    # fen, cumulative

    @property
    def cash_available(self) -> int:
        return self.cash - self.cash_reserved

    def credits_sellable(self, instrument: str) -> int:
        return (self.credits.get(instrument, 0) - self.credits_reserved.get(instrument, 0)
                - self.bought_today.get(instrument, 0))

    def check(self) -> None:
        assert 0 <= self.cash_reserved <= self.cash, f"{self.account}: cash reservation broken"
        for instrument, held in self.credits.items():
            reserved = self.credits_reserved.get(instrument, 0)
            today = self.bought_today.get(instrument, 0)
            assert held >= 0 and reserved >= 0 and today >= 0, f"{self.account}: negative credits"
            assert reserved + today <= held, f"{self.account}: sold credits it may not sell"

    def to_json(self) -> dict:
        return {"account": self.account, "type": self.participant_type.value,
                "member": self.member, "cash": format_fen(self.cash),
                "cash_reserved": format_fen(self.cash_reserved),
                "credits": dict(sorted(self.credits.items())),
                "credits_reserved": {k: v for k, v in sorted(self.credits_reserved.items()) if v},
                "bought_today": {k: v for k, v in sorted(self.bought_today.items()) if v},
                "fees_paid": format_fen(self.fees_paid)}


class Accounts:
    """The account table the risk checks run against."""

    def __init__(self, accounts: Iterable[Account] = (), fee_ppm: int = DEFAULT_FEE_PPM):
        self.by_id: dict[str, Account] = {}
        self.fee_ppm = fee_ppm
        for account in accounts:
            self.add(account)

    def add(self, account: Account) -> None:
        if account.account in self.by_id:
            raise ValueError(f"duplicate account {account.account!r}")
        self.by_id[account.account] = account

    def get(self, account_id) -> Account | None:
        return self.by_id.get(account_id)

    def end_of_day(self) -> None:
        for account in self.by_id.values():
            account.bought_today.clear()

    def check(self) -> None:
        for account in self.by_id.values():
            account.check()

    def totals(self) -> tuple[int, dict[str, int]]:
        """(total cash incl. fees paid, total credits per instrument): conserved by trading."""
        cash = sum(a.cash + a.fees_paid for a in self.by_id.values())
        credits: dict[str, int] = {}
        for a in self.by_id.values():
            for k, v in a.credits.items():
                credits[k] = credits.get(k, 0) + v
        return cash, credits
