"""DurableExchange: the exchange behind a write-ahead journal, with snapshots and an outbox.

Theory of operation. `apply_many(commands)` applies each command to the in-memory
`Exchange` (deterministic, no I/O), turns every trade into a settlement instruction, writes
the commands and their instructions as batch records to the journal and fsyncs once (group
commit); only then does it return the events, publish the instructions to the outbox and
wake the relays. Nothing is acknowledged before it is durable, and a trade's instruction is
durable exactly when the trade is. The journal's writes go through a GroupCommitter
(journal.py): `apply_deferred()` applies and holds the journal rows; `commit_async()` hands
them to its writer thread and returns a ticket at once (the FIX gateway's event loop never
waits for the disk: its acknowledgements wait for `durable_ticket`, told by
`add_durable_listener`); `commit()`, `apply()` and `apply_many()` wait, writing in the
caller's thread once what is queued before them is durable. If a write fails the in-memory state is ahead of the disk,
so the object refuses all further commands: reopen the data directory to recover.

Opening a data directory recovers: the newest snapshot that restores to its recorded state
hash, then the journal records after it, replayed through the same deterministic engine (the
replay re-derives every trade and checks it against the instructions the journal holds). A
torn tail (a crash in the middle of a write) is cut off and reported in `recovery`. A new
directory starts from a genesis snapshot of the given instruments and accounts and records
the opening balances for the ledger; the genesis snapshot and opening.json record the rule
profile (rules.py), so a replay applies the rules the commands were accepted under;
afterwards the directory's own state wins and the
arguments are ignored (`recovery.config_ignored` says whether they differed).

Relays (one per ledger adapter) run in their own threads and never block matching; each
keeps a durable cursor, so after a crash delivery resumes where the adapter last confirmed.

Layout of a data directory:
    journal-<seq>.log      batch records (commands + instructions), see journal.py
    snapshot-<seq>.snap    state after command <seq>, see snapshot.py
    opening.json           opening balances of the accounts (what the ledger starts from) and
                           the settlement config (exchange id, cycle), fixed at creation
    cursor-<relay>.json    last instruction each relay's adapter confirmed
    statements/<date>.json per-account end-of-day statements (trades, fees, opening and
                           closing balances) from the ledger, written after each end of day
    ledger.sqlite          the embedded ledger (the default when the exchange has accounts;
                           ledger=None for none, or pass another adapter)
    LOCK                   held while a process has the directory open
"""
from __future__ import annotations

import fcntl
import gc
import os
import sys
import threading
import time
from pathlib import Path
from typing import Iterable, Optional

import orjson

from ccerx.engine.durable import journal as jr
from ccerx.engine.durable import snapshot as snap
from ccerx.engine.durable.files import open_private, private_dir, write_atomic
from ccerx.engine.durable.recovery import (RecoveryRefused, RecoveryReport, cursor_floor,
                                           replay_directory)
from ccerx.engine.durable.statements import StatementWriter
from ccerx.engine.core.commands import EndOfDay
from ccerx.engine.core.events import Deposited, Retired, TradeExecuted
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.core.risk import Accounts
from ccerx.engine.core.rules import CONTINUOUS, RuleProfile
from ccerx.engine.durable.settlement import (Cursor, InstructionMaker, Outbox, Relay, SettlementConfig,
                         clears_at_close, instruction_from_row, trade_date)
from ccerx.engine.core.types import DEFAULT_INSTRUMENTS, InstrumentSpec

OPENING = "opening.json"



class JournalFailed(RuntimeError):
    """A journal write failed after the engine applied the command: the in-memory state is
    not durable. Reopen the data directory to recover the last durable state."""


def opening_balances(accounts: Optional[Accounts]) -> list:
    if accounts is None:
        return []
    return [[a.account, a.cash, dict(sorted(a.credits.items()))] for a in accounts.by_id.values()]


class DurableExchange:
    """An Exchange whose every acknowledged command survives a crash (see module doc).

    Reads (`specs`, `books`, `accounts`, `state_hash()`, `check()`, `snapshot_books()`, ...)
    pass through to the wrapped exchange. Thread-safe for `apply`/`apply_many`."""

    def __init__(self, data_dir, instruments: Iterable[InstrumentSpec] = DEFAULT_INSTRUMENTS,
                 accounts: Optional[Accounts] = None, fee_ppm: Optional[int] = None, *,
                 settlement: SettlementConfig = SettlementConfig(),
                 ledger="sqlite", adapters: Optional[dict] = None,
                 snapshot_every: int = 250_000, record_batch: int = 1000,
                 fsync: bool = True, start_relays: bool = True, relay_batch: int = 500,
                 log=None, journal_hook=None, rules: RuleProfile = CONTINUOUS):
        self.data_dir = private_dir(data_dir)
        # the replicated log (replicated.py) wraps the local journal: journal_hook(journal)
        self._journal_hook = journal_hook
        self.settlement = settlement
        self.snapshot_every = snapshot_every
        self.record_batch = record_batch
        self.fsync = fsync
        self._log = log if log is not None else (lambda text: print(text, file=sys.stderr))
        self._lock = threading.RLock()
        self.statements: Optional[StatementWriter] = None   # with a ledger that keeps accounts
        self._failed: Optional[BaseException] = None
        # held since the last commit (apply_deferred), not yet handed to the journal's writer:
        self._deferred = 0            # commands applied
        self._held_records: list = [] # whole journal records of them (record_batch rows each)
        self._held_rows: list = []    # the rows of the record being filled
        self._held_made: list = []    # and its settlement instructions
        self._held_published: list = []   # the instructions of _held_records, in order
        self._held_marks: list = []   # end-of-day marks (statements due)
        self._lock_fd = open_private(self.data_dir / "LOCK", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise RecoveryRefused(f"{self.data_dir} is open in another process") from None
        try:
            self._open(list(instruments), accounts, fee_ppm, ledger, adapters or {},
                       relay_batch, rules)
        except BaseException:
            os.close(self._lock_fd)
            raise
        if start_relays:
            for relay in self.relays.values():
                relay.start()

    # ------------------------------------------------------------------ recovery
    def _open(self, instruments, accounts, fee_ppm, ledger, adapters, relay_batch,
              rules) -> None:
        started = time.perf_counter()
        report = self.recovery = RecoveryReport(self.data_dir)
        genesis = Exchange(instruments, accounts, fee_ppm, rules)
        fresh = not snap.list_snapshots(self.data_dir) and not jr.segment_paths(self.data_dir)
        if fresh:
            report.created = True
            self.exchange = genesis
            self.maker = InstructionMaker(self.settlement, batch_clearing=clears_at_close(rules))
            write_atomic(self.data_dir / OPENING, orjson.dumps(
                {"genesis_hash": genesis.state_hash(), "accounts": opening_balances(accounts),
                 "settlement": self.settlement._asdict(), "rules": rules.to_json()}))
            snap.write(self.data_dir, 0, genesis, self._extra())
            scanned = jr.ScanResult()
            pending_rows: list = []
            eod_marks: list = []
        else:
            opening = orjson.loads((self.data_dir / OPENING).read_bytes())
            stored = SettlementConfig(**{**opening["settlement"], "holidays": tuple(
                opening["settlement"].get("holidays", ()))})
            report.config_ignored = (opening["genesis_hash"] != genesis.state_hash()
                                     or stored != self.settlement)
            self.settlement = stored     # instruction ids must not change mid-stream
            # Replay allocates millions of small objects that live on (orders, ids) or die by
            # reference counting; the cyclic collector would rescan the growing heap over and
            # over (a 1M-command replay took 2-3x longer with it on), so it waits until the end.
            collecting = gc.isenabled()
            gc.disable()
            try:
                relay_names = list(adapters) + (["ledger"] if ledger is not None else [])
                recovered = replay_directory(self.data_dir, self.settlement,
                                             cursor_floor(self.data_dir, relay_names), report)
            finally:
                if collecting:
                    gc.enable()
            self.exchange, self.maker = recovered.exchange, recovered.maker
            scanned, pending_rows = recovered.scanned, recovered.pending_rows
            eod_marks = recovered.eod_marks   # closes whose statements are not written yet
        for path in sorted(self.data_dir.glob("cursor-*.json")):   # before anything is cut
            confirmed = Cursor(path).value
            if confirmed > scanned.last_instruction:
                raise RecoveryRefused(
                    f"{self.data_dir}: {path.name} confirmed instruction {confirmed}, beyond the "
                    f"journal's last ({scanned.last_instruction}): the journal lost acknowledged "
                    f"commands whose settlement was already delivered. Restore the journal from "
                    f"a replica or backup; do not run on a shorter one.")
        self.journal = jr.Journal.open_for_append(self.data_dir, scanned, self.fsync)
        if self._journal_hook is not None:
            self.journal = self._journal_hook(self.journal)
        self._writer = jr.GroupCommitter(self.journal)
        self._since_snapshot = self.journal.next_seq - 1 - (report.snapshot_seq or 0)
        report.last_seq = self.journal.next_seq - 1
        report.last_instruction = self.journal.next_instruction - 1
        if self.maker.next_seq != self.journal.next_instruction:
            raise AssertionError("settlement numbering disagrees with the journal")
        self.outbox = Outbox([instruction_from_row(row) for row in pending_rows],
                             last_seq=report.last_instruction)
        self.relays: dict[str, Relay] = {}
        self.ledger = None
        self.statements_dir = self.data_dir / "statements"
        if ledger == "sqlite" and self.exchange.accounts is None:
            ledger = None    # no accounts, no balances: nothing the ledger could settle against
        if ledger == "sqlite":
            from ccerx.engine.ledger.sqlite import SqliteLedger
            ledger = SqliteLedger(self.data_dir / "ledger.sqlite")
        if ledger is not None:
            self.ledger = ledger
            if ledger.keeps_accounts:
                rows = orjson.loads((self.data_dir / OPENING).read_bytes())["accounts"]
                ledger.open_accounts([tuple(r) for r in rows])
            adapters = {"ledger": ledger, **adapters}
        for name, adapter in adapters.items():
            self.relays[name] = Relay(name, self.outbox, adapter,
                                      self.data_dir / f"cursor-{name}.json", relay_batch,
                                      on_confirm=self._trim_outbox)
        if self.ledger is not None and self.ledger.keeps_accounts:
            ledger_relay = self.relays["ledger"]
            self.statements = StatementWriter(self.statements_dir, self.ledger,
                                              lambda: ledger_relay.cursor.value, eod_marks)
            ledger_relay.on_confirm = self._on_confirm
            ledger_relay.on_idle = self.statements.try_write_due
        for name, relay in self.relays.items():
            report.pending[name] = max(0, report.last_instruction - relay.cursor.value)
            if relay.cursor.value > report.last_instruction:
                raise AssertionError(f"relay {name} confirmed instruction {relay.cursor.value} "
                                     f"beyond the journal's last ({report.last_instruction})")
        self._trim_outbox()
        report.seconds = time.perf_counter() - started
        report.state_hash = self.exchange.state_hash()
        if not fresh and (report.torn is not None or report.skipped_snapshots):
            self._log(str(report))

    def _extra(self) -> dict:
        pending = self.statements.pending() if self.statements is not None else ()
        return {"settlement": self.maker.state(), "eod_marks": [list(m) for m in pending]}

    # ------------------------------------------------------------------ end of day
    def _on_confirm(self) -> None:
        """In the ledger relay's thread, after each confirmed batch."""
        self._trim_outbox()
        self.statements.try_write_due()

    def _trim_outbox(self) -> None:
        if self.relays:
            self.outbox.trim(min(r.cursor.value for r in self.relays.values()))
        else:
            self.outbox.trim(self.outbox.last_seq)

    # ------------------------------------------------------------------ commands
    def apply(self, command) -> list:
        """Apply one command; returns its events once the command is durable."""
        return self.apply_many((command,))[0]

    def apply_deferred(self, command) -> list:
        """Caller-driven group commit: apply the command, hold its journal row in memory (written
        with the others in one record, one write and one fsync, at commit). It becomes
        durable, and its settlement instructions are published, at the next commit(),
        commit_async() (or apply/apply_many, which commit everything before them). The caller
        must let nothing that depends on the events leave the process before then: the FIX
        gateway applies the orders of one event-loop iteration this way, then calls
        commit_async() and writes their acknowledgements once the writer says they are durable."""
        return self.apply_many((command,), _commit=False)[0]

    def commit(self) -> None:
        """Make every command applied so far durable (one fsync for everything held) and publish
        its settlement instructions; returns when that is done."""
        with self._lock:
            if self._deferred:
                self.apply_many(())
            else:
                self._wait(self._writer.issued)

    def commit_async(self) -> int:
        """Start making every command applied so far durable, without waiting for the disk: the
        journal's writer thread writes and fsyncs them with whatever else is queued (group
        commit) and then publishes their settlement instructions. Returns the ticket that
        covers them (0: nothing was ever written); they are durable once `durable_ticket`
        reaches it, and every listener added with add_durable_listener is told."""
        with self._lock:
            if self._failed is not None:
                raise JournalFailed(f"journal failed earlier ({self._failed}); reopen "
                                    f"{self.data_dir} to recover")
            if self._deferred:
                self._submit(wait=False)
            return self._writer.issued

    @property
    def durable_ticket(self) -> int:
        """The last commit_async() ticket that is durable (tickets are durable in order)."""
        return self._writer.durable

    def add_durable_listener(self, listener) -> None:
        """listener(durable ticket, error or None) after each group the writer makes durable,
        in the writer's thread (hand over, do not block); an error means nothing after the
        last durable ticket will ever be: the engine refuses further commands."""
        self._writer.add_listener(listener)

    @property
    def uncommitted(self) -> bool:
        """True while commands applied with apply_deferred() wait for a commit, or a commit of
        commit_async() waits for the disk."""
        return bool(self._deferred) or not self._writer.idle

    def apply_many(self, commands, _commit: bool = True) -> list[list]:
        """Apply commands in order, group-commit them (one fsync), return their events."""
        with self._lock:
            if self._failed is None and self._writer.failed is not None:
                self._failed = self._writer.failed      # an asynchronous commit failed
            if self._failed is not None:
                raise JournalFailed(f"journal failed earlier ({self._failed}); reopen "
                                    f"{self.data_dir} to recover")
            exchange, maker = self.exchange, self.maker
            apply, encode = exchange.apply, jr.encode_command
            specs, accounts = exchange.specs, exchange.accounts
            batch_size = self.record_batch
            trade = TradeExecuted
            out: list[list] = []
            records = self._held_records      # whole records held since the last submit
            rows: list = self._held_rows      # rows held by apply_deferred come first
            made: list = self._held_made
            published = self._held_published  # their instructions, in order
            marks = self._held_marks
            try:
                for command in commands:
                    events = apply(command)
                    rows.append(encode(command))
                    for event in events:
                        if type(event) is trade:
                            made.append(maker.make(event, specs[event.instrument], accounts))
                        elif type(event) is Deposited:
                            made.append(maker.make_deposit(event, accounts))
                        elif type(event) is Retired:
                            made.append(maker.make_retirement(event, accounts))
                    if type(command) is EndOfDay:
                        if maker.batch_clearing:     # day-end DvP clearing (settlement.py)
                            made.append(maker.make_batch(exchange.last_ts))
                        marks.append((maker.next_seq - 1, trade_date(exchange.last_ts)))
                    out.append(events)
                    if len(rows) >= batch_size:
                        records.append(self._record(rows, made))
                        published += made
                        rows, made = [], []
            except BaseException as err:
                self._failed = err
                raise JournalFailed(f"journal write failed: {err}") from err
            self._held_rows, self._held_made = rows, made
            self._deferred += len(out)
            if not _commit:               # apply_deferred: held until a commit
                return out
            if self._deferred:
                self._submit(wait=True)
            return out

    def _record(self, rows: list, made: list) -> tuple:
        """A journal record: the rows, their instructions, the stream counters after them (a
        copy: the writer frames it later, when the maker has moved on)."""
        return (rows, [tuple(i) for i in made], dict(self.maker.stream_seqs) if made else None)

    def _submit(self, wait: bool) -> None:
        """Hand everything held to the journal's writer (caller holds the lock): written in this
        thread when `wait` (once what is queued is durable), else by the writer thread."""
        if self._held_rows:
            self._held_records.append(self._record(self._held_rows, self._held_made))
            self._held_published += self._held_made
        records, published, marks = self._held_records, self._held_published, self._held_marks
        count = self._deferred
        self._held_records, self._held_rows, self._held_made = [], [], []
        self._held_published, self._held_marks, self._deferred = [], [], 0

        def durable() -> None:            # in the writing thread, once the records are on disk
            self.outbox.publish(published)
            if marks and self.statements is not None:
                self.statements.add(marks)
            if not self.relays:
                self.outbox.trim(self.outbox.last_seq)
        try:
            if wait:
                self._writer.write_now(records, durable)
            else:
                self._writer.submit(records, durable)
        except BaseException as err:
            self._failed = err
            raise JournalFailed(f"journal write failed: {err}") from err
        self._since_snapshot += count
        if self._since_snapshot >= self.snapshot_every:
            self.snapshot()

    def _wait(self, ticket: int) -> None:
        try:
            self._writer.wait(ticket)
        except BaseException as err:
            self._failed = self._failed or err
            raise JournalFailed(f"journal write failed: {err}") from err

    # ------------------------------------------------------------------ snapshots
    def snapshot(self) -> Optional[Path]:
        """Write a snapshot of the current (durable) state and start a new journal segment.
        Keeps the genesis snapshot and the two newest ones."""
        with self._lock:
            if self._deferred:
                self._submit(wait=True)       # the journal must hold what the state holds
            self._writer.drain()              # and the writer hands the journal back
            self.journal.commit()
            seq = self.journal.next_seq - 1
            path = snap.write(self.data_dir, seq, self.exchange, self._extra())
            self.journal.rotate()
            self._since_snapshot = 0
            for old_seq, old in snap.list_snapshots(self.data_dir)[1:-2]:
                old.unlink()
            return path

    # ------------------------------------------------------------------ settlement
    def wait_settled(self, timeout: float = 30.0) -> bool:
        """Block until every relay confirmed every instruction published so far and the
        statements of every end of day before them are on disk (True), or timeout (False).
        A statement write that fails is retried until the deadline."""
        deadline = time.monotonic() + timeout
        if not all(relay.wait_idle(max(0.0, deadline - time.monotonic()))
                   for relay in self.relays.values()):
            return False
        while self.statements is not None:
            self.statements.try_write_due()     # e.g. a full disk: retried to the deadline
            if not self.statements.due():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def close(self, settle_timeout: float = 5.0) -> None:
        """Stop accepting commands; give the relays `settle_timeout` s to catch up (what they
        do not deliver stays in the journal for the next open); release the directory."""
        with self._lock:
            if getattr(self, "_closed", False):
                return
            self._closed = True
            if self._failed is None:
                if self._deferred:
                    self.commit()
                try:
                    self._writer.drain()
                except BaseException:         # failed: what is on disk is what recovery gets
                    pass
                self._writer.close()
                if self._writer.failed is None:
                    self.journal.close()
            else:
                self._writer.close()
            self._failed = self._failed or RuntimeError("closed")
        if settle_timeout > 0:
            try:
                self.wait_settled(settle_timeout)
            except Exception:   # an adapter that fails now retries on the next open
                pass
        for relay in self.relays.values():
            relay.stop()
        self.outbox.close()
        for relay in self.relays.values():
            relay.adapter.close()
        os.close(self._lock_fd)

    def __enter__(self) -> "DurableExchange":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ pass-through
    def __getattr__(self, name):
        # only called for attributes not found on self: reads of the wrapped exchange
        if name in ("exchange", "__setstate__"):
            raise AttributeError(name)
        return getattr(self.exchange, name)
