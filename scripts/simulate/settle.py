"""The settlement seam: every simulated trade goes through `Settlement.trade()`.

The run loop calls these: `open()` for each account's opening balance, `deposit()` for each
`Deposited` (an issuance batch or a lot moved in), `trade()` for each `TradeExecuted`,
`retire()` for each `Retired`, `close_day()` after every close (the day-end clearing of
cbeex-2023) and `reconcile()` after it. Credits are counted per holding key (lots.py): a lot
"PROJECT@VINTAGE" or a pooled holding's symbol, so the reconciliation is per lot, to the
tonne: a trade moves exactly the lots it delivered (`TradeExecuted.lots`; a pooled delivery,
the instrument's holding), a retirement moves credits of one lot out of the market. `TradeLedger` is the built-in settlement: it keeps its own books, derived
only from opening balances, issuances and trades (never from the engine's account table),
so reconciling it against `engine.risk.Accounts` checks every tonne and every fen twice:
per account (cash, fees, credits) and in total (cash + fees conserved, credits conserved
up to issuance). When the exchange's settlement/ledger path is available, an adapter with
these same methods points the simulation at it.

`LedgerSettlement` is that adapter for the exchange's own settlement path (engine/settlement.py,
engine/ledger/): every trade becomes a `SettlementInstruction` made by the same
`InstructionMaker` the durable exchange uses, goes through an `Outbox` and a `Relay` with a
durable cursor, and is posted by the embedded `SqliteLedger` (double entry, idempotent by
instruction id). Opening balances go in with `open_accounts`; issuance batches are deposit
instructions on the same stream (`@registry -> owner`), as the durable exchange makes them.
`Settlements` fans the seam out to several of these and reconciles each.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ccerx.engine.core.events import Deposited, Retired, TradeExecuted
from ccerx.engine.core.lots import lot_key
from ccerx.engine.core.risk import Accounts, fee_fen
from ccerx.engine.core.types import InstrumentSpec, format_fen


LEDGER_WITHOUT_LOTS = ("the SQLite ledger path was not checked: its settlement instructions do "
                       "not carry lots yet (engine/durable/settlement.py); reconciled against "
                       "the in-memory book of trades, per lot")


def ledger_carries_lots() -> bool:
    """Whether the exchange's settlement path (engine/durable) settles lots and retirements."""
    from ccerx.engine.durable.settlement import InstructionMaker
    return hasattr(InstructionMaker, "make_retirement")


def delivered(t: TradeExecuted, spec: InstrumentSpec):
    """(holding key, t) of what a trade delivered: its lots, or the instrument's holding."""
    if not t.lots:
        return ((spec.holding, t.qty),)
    return tuple((spec.holding if project is None else lot_key(project, vintage), qty)
                 for project, vintage, qty in t.lots)


@dataclass
class Reconciliation:
    day: int
    accounts: int
    trades: int
    cash_fen: int                 # total cash held, all accounts
    fees_fen: int                 # total fees charged to date
    credits: dict[str, int]       # total tonnes held (and retired) per holding key
    issued: dict[str, int]        # total tonnes issued per holding key to date
    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=lambda: ["trades"])   # which books were compared
    against: str = "exchange accounts"                                # ... with what

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        state = "OK" if self.ok else f"{len(self.problems)} DIFFERENCES"
        return (f"day {self.day + 1}: {state} ({' + '.join(self.checked)} vs {self.against}): "
                f"{self.accounts} accounts, {self.trades} trades, "
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
        self.retired: dict[str, dict[str, int]] = {}
        self.trades = 0
        self.problems: list[str] = []

    def open(self, account: str, cash: int, credits: dict[str, int]) -> None:
        self.cash[account] = cash
        self.fees[account] = 0
        self.credits[account] = dict(credits)
        self.retired[account] = {}
        self.opening_cash += cash
        for k, v in credits.items():
            self.opening_credits[k] = self.opening_credits.get(k, 0) + v

    name = "trades"

    def deposit(self, d: Deposited) -> None:
        held = self.credits[d.account]
        held[d.asset] = held.get(d.asset, 0) + d.amount
        self.issued[d.asset] = self.issued.get(d.asset, 0) + d.amount

    def trade(self, t: TradeExecuted, spec: InstrumentSpec) -> None:
        gross = t.price * spec.tick_fen * t.qty
        fee = fee_fen(gross, self.fee_ppm)
        if t.buy_fee != fee or t.sell_fee != fee:
            raise AssertionError(f"trade {t.trade_id}: fees {t.buy_fee}/{t.sell_fee}, expected {fee}")
        buyer, seller = self.credits[t.buy_account], self.credits[t.sell_account]
        moved = delivered(t, spec)
        if sum(q for _, q in moved) != t.qty:
            self.problems.append(f"trade {t.trade_id}: lots {t.lots} do not add up to {t.qty} t")
        for key, qty in moved:
            buyer[key] = buyer.get(key, 0) + qty
            seller[key] = seller.get(key, 0) - qty
        self.cash[t.buy_account] -= gross + fee
        self.cash[t.sell_account] += gross - fee
        self.fees[t.buy_account] += fee
        self.fees[t.sell_account] += fee
        self.trades += 1

    def retire(self, r: Retired) -> None:
        held, gone = self.credits[r.account], self.retired[r.account]
        held[r.asset] = held.get(r.asset, 0) - r.qty
        gone[r.asset] = gone.get(r.asset, 0) + r.qty

    def reconcile(self, accounts: Accounts, day: int) -> Reconciliation:
        problems = list(self.problems)
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
            mine = {k: v for k, v in self.retired[account_id].items() if v}
            theirs = {k: v for k, v in a.retired.items() if v}
            if mine != theirs:
                problems.append(f"{account_id}: retired {theirs}, retirements say {mine}")
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


class LedgerSettlement:
    """Trades -> settlement instructions -> outbox -> relay -> the embedded SQLite ledger."""

    name = "ledger"

    def __init__(self, path: str | Path, accounts: Accounts, exchange_id: str = "CCERX",
                 batch: int = 2000, rules=None):
        from dataclasses import replace
        from ccerx.engine.ledger.sqlite import SqliteLedger
        from ccerx.engine.durable.settlement import (InstructionMaker, Outbox, Relay,
                                                     SettlementConfig, clears_at_close)
        self.path = Path(path)
        cursor = self.path.with_name(self.path.stem + "-cursor.json")
        for old in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm"), cursor):
            old.unlink(missing_ok=True)        # a run starts a fresh ledger
        self.ledger = SqliteLedger(self.path)
        self.accounts = accounts               # for the members on the instructions
        # day-end DvP clearing as the durable exchange does it (cbeex-2023: every trade is
        # pending in the ledger until the close's clearing batch delivers it); a what-if
        # label such as "cbeex-2023:holding=1" clears as its profile does
        batch_clearing = rules is not None and clears_at_close(
            replace(rules, name=rules.name.split(":")[0]))
        self.maker = InstructionMaker(SettlementConfig(exchange_id),
                                      batch_clearing=batch_clearing)
        self.outbox = Outbox()
        self.relay = Relay("ledger", self.outbox, self.ledger, cursor, batch)
        self.opening: list[tuple[str, int, dict]] = []
        self.pending: list = []
        self.issued: dict[str, int] = {}
        self.trades = 0

    def open(self, account: str, cash: int, credits: dict[str, int]) -> None:
        self.opening.append((account, cash, dict(credits)))

    def _flush(self) -> None:
        if self.opening:
            self.ledger.open_accounts(self.opening)
            self.opening = []
        if self.pending:
            self.outbox.publish(self.pending)
            self.pending = []
        self.relay.drain()

    def deposit(self, d: Deposited) -> None:
        self.pending.append(self.maker.make_deposit(d, self.accounts))
        self.issued[d.asset] = self.issued.get(d.asset, 0) + d.amount

    def trade(self, t: TradeExecuted, spec: InstrumentSpec) -> None:
        self.pending.append(self.maker.make(t, spec, self.accounts))
        self.trades += 1
        if len(self.pending) >= 5000:
            self._flush()

    def retire(self, r: Retired) -> None:
        self.pending.append(self.maker.make_retirement(r, self.accounts))

    def close_day(self, ts: int) -> None:
        """The close's clearing batch, when the rules clear at the close (Art.27-28)."""
        if self.maker.batch_clearing:
            self.pending.append(self.maker.make_batch(ts))

    def reconcile(self, accounts: Accounts, day: int) -> Reconciliation:
        self._flush()
        return reconcile_ledger(self.ledger, accounts, self.trades, self.issued, day)

    def close(self) -> None:
        self._flush()
        self.ledger.close()


def reconcile_ledger(ledger, accounts: Accounts, trades: int, issued: dict, day: int
                     ) -> Reconciliation:
    """Compare a settlement ledger with the exchange's accounts, account by account, after
    checking the ledger's own invariants."""
    from ccerx.engine.ledger.sql import CASH, FEES
    problems = [f"ledger {p}" for p in ledger.problems()]
    balances = ledger.balances()
    for account_id in sorted(accounts.by_id):
        a = accounts.by_id[account_id]
        held = balances.get(account_id, {})
        if held.get(CASH, 0) != a.cash:
            problems.append(f"{account_id}: exchange cash {a.cash} fen, ledger {held.get(CASH, 0)}")
        mine = {k: v for k, v in held.items() if k != CASH and v}
        theirs = {k: v for k, v in a.credits.items() if v}
        if mine != theirs:
            problems.append(f"{account_id}: exchange credits {theirs}, ledger {mine}")
    fees = sum(a.fees_paid for a in accounts.by_id.values())
    if balances.get(FEES, {}).get(CASH, 0) != fees:
        problems.append(f"fees: exchange charged {fees} fen, ledger @fees holds "
                        f"{balances.get(FEES, {}).get(CASH, 0)}")
    settled = ledger.settlement_count()
    if settled != trades:
        problems.append(f"ledger holds {settled} trade settlements for {trades} trades")
    cash_total, credit_totals = accounts.totals()
    return Reconciliation(day, len(accounts.by_id), settled, cash_total - fees, fees,
                          credit_totals, dict(issued), problems)


class Settlements:
    """The seam with several settlements behind it: each sees every event, each reconciles."""

    def __init__(self, *parts):
        self.parts = parts

    def open(self, account, cash, credits):
        for p in self.parts:
            p.open(account, cash, credits)

    def deposit(self, d):
        for p in self.parts:
            p.deposit(d)

    def trade(self, t, spec):
        for p in self.parts:
            p.trade(t, spec)

    def retire(self, r):
        for p in self.parts:
            p.retire(r)

    def close_day(self, ts):
        for p in self.parts:
            if hasattr(p, "close_day"):
                p.close_day(ts)

    def reconcile(self, accounts, day) -> Reconciliation:
        results = [(p.name, p.reconcile(accounts, day)) for p in self.parts]
        first = results[0][1]
        first.problems = [f"{name}: {x}" for name, r in results for x in r.problems]
        first.checked = [name for name, _ in results]
        return first

    def close(self):
        for p in self.parts:
            if hasattr(p, "close"):
                p.close()
