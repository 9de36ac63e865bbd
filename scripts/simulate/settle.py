"""The settlement seam: every simulated trade goes through `Settlement.trade()`.

The run loop calls exactly three things here: `open()` for each account's opening balance,
`issue()` for each registry issuance, `trade()` for each `TradeExecuted`, and `reconcile()`
at every close. `TradeLedger` is the built-in settlement: it keeps its own books, derived
only from opening balances, issuances and trades (never from the engine's account table),
so reconciling it against `engine.risk.Accounts` checks every tonne and every fen twice:
per account (cash, fees, credits) and in total (cash + fees conserved, credits conserved
up to issuance). When the exchange's settlement/ledger path is available, an adapter with
these same methods points the simulation at it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from engine.events import TradeExecuted
from engine.risk import PPM, Accounts
from engine.types import InstrumentSpec, format_fen


@dataclass
class Reconciliation:
    day: int
    accounts: int
    trades: int
    cash_fen: int                 # total cash held, all accounts
    fees_fen: int                 # total fees charged to date
    credits: dict[str, int]       # total tonnes held per type
    issued: dict[str, int]        # total tonnes issued per type to date
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        state = "OK" if self.ok else f"{len(self.problems)} DIFFERENCES"
        return (f"day {self.day + 1}: {state}: {self.accounts} accounts, {self.trades} trades, "
                f"cash {format_fen(self.cash_fen)} + fees {format_fen(self.fees_fen)} CNY, "
                f"credits {sum(self.credits.values()):,} t")


class TradeLedger:
    """Independent books: opening balances + issuance + trades -> expected balances."""

    def __init__(self, fee_ppm: int):
        self.fee_ppm = fee_ppm
        self.cash: dict[str, int] = {}
        self.fees: dict[str, int] = {}
        self.credits: dict[str, dict[str, int]] = {}
        self.opening_cash = 0
        self.opening_credits: dict[str, int] = {}
        self.issued: dict[str, int] = {}
        self.trades = 0

    def open(self, account: str, cash: int, credits: dict[str, int]) -> None:
        self.cash[account] = cash
        self.fees[account] = 0
        self.credits[account] = dict(credits)
        self.opening_cash += cash
        for k, v in credits.items():
            self.opening_credits[k] = self.opening_credits.get(k, 0) + v

    def issue(self, account: str, instrument: str, qty: int) -> None:
        held = self.credits[account]
        held[instrument] = held.get(instrument, 0) + qty
        self.issued[instrument] = self.issued.get(instrument, 0) + qty

    def trade(self, t: TradeExecuted, spec: InstrumentSpec) -> None:
        gross = t.price * spec.tick_fen * t.qty
        fee = gross * self.fee_ppm // PPM
        if t.buy_fee != fee or t.sell_fee != fee:
            raise AssertionError(f"trade {t.trade_id}: fees {t.buy_fee}/{t.sell_fee}, expected {fee}")
        buyer, seller = self.credits[t.buy_account], self.credits[t.sell_account]
        buyer[t.instrument] = buyer.get(t.instrument, 0) + t.qty
        seller[t.instrument] = seller.get(t.instrument, 0) - t.qty
        self.cash[t.buy_account] -= gross + fee
        self.cash[t.sell_account] += gross - fee
        self.fees[t.buy_account] += fee
        self.fees[t.sell_account] += fee
        self.trades += 1

    def reconcile(self, accounts: Accounts, day: int) -> Reconciliation:
        problems = []
        for account_id in sorted(self.cash):
            a = accounts.get(account_id)
            if a is None:
                problems.append(f"{account_id}: missing from the exchange's accounts")
                continue
            if a.cash != self.cash[account_id]:
                problems.append(f"{account_id}: cash {a.cash} fen, trades say {self.cash[account_id]}")
            if a.fees_paid != self.fees[account_id]:
                problems.append(f"{account_id}: fees {a.fees_paid} fen, trades say {self.fees[account_id]}")
            mine = {k: v for k, v in self.credits[account_id].items() if v}
            theirs = {k: v for k, v in a.credits.items() if v}
            if mine != theirs:
                problems.append(f"{account_id}: credits {theirs}, trades say {mine}")
            if a.cash_reserved or any(a.credits_reserved.values()):
                problems.append(f"{account_id}: reservations left after the close")
        extra = sorted(set(accounts.by_id) - set(self.cash))
        problems += [f"{k}: account the settlement never opened" for k in extra]
        cash_total, credit_totals = accounts.totals()        # cash + fees paid, credits
        fees_total = sum(a.fees_paid for a in accounts.by_id.values())
        if cash_total != self.opening_cash:   # what buyers paid went to sellers or to fees
            problems.append(f"cash not conserved: {cash_total} fen held + fees paid vs "
                            f"{self.opening_cash} fen opening")
        expected = dict(self.opening_credits)
        for k, v in self.issued.items():
            expected[k] = expected.get(k, 0) + v
        if {k: v for k, v in credit_totals.items() if v} != {k: v for k, v in expected.items() if v}:
            problems.append(f"credits not conserved: held {credit_totals}, opening+issued {expected}")
        return Reconciliation(day, len(self.cash), self.trades, cash_total - fees_total,
                              fees_total, credit_totals, dict(self.issued), problems)
