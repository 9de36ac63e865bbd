"""End-of-day statements: once the ledger holds every instruction up to a close, that close's
per-account statements (everything settled since the previous close) go to
statements/<trade date>.json (<trade date>-<seq>.json for a later close of the same date, as
in round-the-clock demos).

What a statement holds is the ledger's (SqlLedger.close_statements): the account's trades
(with the lots each delivered), deposits, fees, opening and closing balances per holding key;
under day-end clearing (cbeex-2023) each trade's delivery, pending or delivered by its
clearing batch; and once the ledger knows lots or retirements, `holdings` (per holding key:
credit type, project, vintage, delivered t, pending in and out, retired t), `retirements`
(with their certificates and purposes) and `retired` per holding key.

A close is a *mark*: (last instruction before the close, trade date). Marks are added when a
close is journaled, travel in snapshots until their statements are written, and are dropped
only once the file is on disk, so a failed write is retried (by the relay's thread and by
`DurableExchange.wait_settled`), never lost. The statements lock makes a second writer wait
for a write in progress.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Iterable, Optional

import orjson

from ccerx.engine.durable.files import private_dir, write_atomic

Mark = tuple[int, str]     # (last instruction before the close, trade date)


class StatementWriter:
    def __init__(self, directory: Path, ledger, confirmed: Callable[[], int],
                 marks: Iterable[Mark] = ()):
        """`ledger` keeps accounts (close_statements); `confirmed()` is the highest
        instruction the ledger has confirmed."""
        self.directory = Path(directory)
        self.ledger = ledger
        self.confirmed = confirmed
        self._marks: list[Mark] = [tuple(m) for m in marks]
        self._marks_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self.last_error: Optional[BaseException] = None

    def add(self, marks: Iterable[Mark]) -> None:
        with self._marks_lock:
            self._marks += marks

    def pending(self) -> list[Mark]:
        """The closes whose statements are not written yet (what a snapshot carries)."""
        with self._marks_lock:
            return list(self._marks)

    def due(self) -> bool:
        with self._marks_lock:
            confirmed = self.confirmed()
            return any(m[0] <= confirmed for m in self._marks)

    def write_due(self) -> None:
        """Write the statements of every close the ledger has confirmed up to; raises what the
        ledger or the disk raised (the mark stays for the next try)."""
        with self._write_lock:
            with self._marks_lock:
                confirmed = self.confirmed()
                due = [m for m in self._marks if m[0] <= confirmed]
            for mark in due:
                upto_seq, date = mark
                private_dir(self.directory)
                statements = self.ledger.close_statements(date, upto_seq)
                path = self.directory / f"{date}.json"
                if path.exists() and orjson.loads(path.read_bytes()).get("upto_seq") != upto_seq:
                    path = self.directory / f"{date}-{upto_seq}.json"
                write_atomic(path, orjson.dumps({"trade_date": date, "upto_seq": upto_seq,
                                                 "statements": statements},
                                                option=orjson.OPT_INDENT_2))
                with self._marks_lock:
                    self._marks.remove(mark)

    def try_write_due(self) -> None:
        """write_due() for a background thread: a failure is kept in last_error."""
        try:
            self.write_due()
        except Exception as err:            # e.g. a full disk: retried at the next call
            self.last_error = err
