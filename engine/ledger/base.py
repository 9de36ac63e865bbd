"""The ledger adapter interface: the one thing the settlement relay calls.

An adapter receives instructions in stream order (`seq` ascending, possibly repeating a batch
it already confirmed after a crash) and returns from `deliver()` only once they are durable on
its side; any exception means "not confirmed" and the relay will deliver the same batch again.
Adapters therefore apply by instruction id: delivering twice must change nothing.
"""
from __future__ import annotations

from typing import Iterable, Protocol, Sequence

from ccerx.engine.durable.settlement import Instruction


class LedgerRejected(Exception):
    """The ledger refused an instruction (would overdraw an account, conflicts with an
    instruction of the same id, or arrives after a gap). Nothing of its batch was applied."""


class LedgerAdapter(Protocol):
    """What every adapter declares and does. `keeps_accounts` is a declared capability, read
    by the durable exchange (never probed with hasattr): True for a ledger of record (it is
    opened with the exchange's opening balances and writes the end-of-day statements: see
    AccountLedger), False for a transport such as MQTT."""
    name: str
    keeps_accounts: bool

    def deliver(self, instructions: Sequence[Instruction]) -> None:
        """Apply or transmit, durably, in order; return only when confirmed, else raise."""

    def close(self) -> None:
        """Release connections and threads."""


class AccountLedger(LedgerAdapter, Protocol):
    """A ledger of record (`keeps_accounts = True`): SQLite, PostgreSQL."""

    def open_accounts(self, opening: Iterable[tuple[str, int, dict]]) -> int:
        """Post the opening balances (account, cash fen, credits) once; returns rows posted."""

    def close_statements(self, trade_date: str, upto_seq: int) -> list[dict]:
        """Per-account statements of the close covering instructions up to `upto_seq`."""
