"""The ledger adapter interface: the one thing the settlement relay calls.

An adapter receives instructions in stream order (`seq` ascending, possibly repeating a batch
it already confirmed after a crash) and returns from `deliver()` only once they are durable on
its side; any exception means "not confirmed" and the relay will deliver the same batch again.
Adapters therefore apply by instruction id: delivering twice must change nothing.
"""
from __future__ import annotations

from typing import Protocol, Sequence

from ccerx.engine.durable.settlement import Instruction


class LedgerRejected(Exception):
    """The ledger refused an instruction (would overdraw an account, conflicts with an
    instruction of the same id, or arrives after a gap). Nothing of its batch was applied."""


class LedgerAdapter(Protocol):
    name: str

    def deliver(self, instructions: Sequence[Instruction]) -> None:
        """Apply or transmit, durably, in order; return only when confirmed, else raise."""

    def close(self) -> None:
        """Release connections and threads."""
