"""DurableExchange: the exchange behind a write-ahead journal, with snapshots and an outbox.

Theory of operation. `apply_many(commands)` applies each command to the in-memory
`Exchange` (deterministic, no I/O), turns every trade into a settlement instruction, writes
the commands and their instructions as batch records to the journal and fsyncs once (group
commit); only then does it return the events, publish the instructions to the outbox and
wake the relays. Nothing is acknowledged before it is durable, and a trade's instruction is
durable exactly when the trade is. If a write fails the in-memory state is ahead of the disk,
so the object refuses all further commands: reopen the data directory to recover.

Opening a data directory recovers: the newest snapshot that restores to its recorded state
hash, then the journal records after it, replayed through the same deterministic engine (the
replay re-derives every trade and checks it against the instructions the journal holds). A
torn tail (a crash in the middle of a write) is cut off and reported in `recovery`. A new
directory starts from a genesis snapshot of the given instruments and accounts and records
the opening balances for the ledger; afterwards the directory's own state wins and the
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import orjson

from ccerx.engine.durable import journal as jr
from ccerx.engine.durable import snapshot as snap
from ccerx.engine.durable.files import open_private, private_dir, write_atomic
from ccerx.engine.core.commands import EndOfDay, NewOrder
from ccerx.engine.core.events import Deposited, TradeExecuted
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.core.risk import Accounts
from ccerx.engine.durable.settlement import (Cursor, InstructionMaker, Outbox, Relay, SettlementConfig,
                         instruction_from_row, trade_date)
from ccerx.engine.core.types import DEFAULT_INSTRUMENTS, InstrumentSpec

OPENING = "opening.json"



class RecoveryRefused(RuntimeError):
    """The data directory cannot be recovered without losing acknowledged commands."""

class JournalFailed(RuntimeError):
    """A journal write failed after the engine applied the command: the in-memory state is
    not durable. Reopen the data directory to recover the last durable state."""


@dataclass
class RecoveryReport:
    data_dir: Path
    created: bool = False                 # a new data directory
    snapshot_seq: Optional[int] = None    # the snapshot recovery started from
    skipped_snapshots: list = field(default_factory=list)
    replayed: int = 0                     # journal commands replayed after the snapshot
    last_seq: int = 0                     # last durable command
    last_instruction: int = 0             # last durable settlement instruction
    torn: Optional[jr.TornTail] = None
    pending: dict = field(default_factory=dict)   # relay -> instructions not yet confirmed
    seconds: float = 0.0
    state_hash: str = ""
    config_ignored: bool = False

    def lines(self) -> list[str]:
        if self.created:
            out = [f"new data directory {self.data_dir}"]
        else:
            out = [f"recovered {self.data_dir}: snapshot at command {self.snapshot_seq}, "
                   f"replayed {self.replayed:,} journal commands in {self.seconds:.2f} s; "
                   f"last command {self.last_seq}, last instruction {self.last_instruction}"]
        for path, reason in self.skipped_snapshots:
            out.append(f"skipped snapshot {Path(path).name}: {reason}")
        if self.torn is not None:
            out.append(f"journal {self.torn}; recovery stopped at the last whole record "
                       f"(command {self.last_seq})")
        for name, count in self.pending.items():
            if count:
                out.append(f"relay {name}: {count} instructions still to deliver")
        if self.config_ignored:
            out.append("the instruments/accounts given differ from the directory's genesis; "
                       "the directory's state was used")
        out.append(f"state hash at open {self.state_hash}")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


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
                 log=None):
        self.data_dir = private_dir(data_dir)
        self.settlement = settlement
        self.snapshot_every = snapshot_every
        self.record_batch = record_batch
        self.fsync = fsync
        self._log = log if log is not None else (lambda text: print(text, file=sys.stderr))
        self._lock = threading.RLock()
        self._marks_lock = threading.Lock()
        self._statements_lock = threading.Lock()
        self._eod_marks: list[tuple[int, str]] = []   # (last instruction before, trade date)
        self.statements_error: Optional[BaseException] = None   # the last failed statement write
        self._failed: Optional[BaseException] = None
        self._deferred: list = []     # (instructions, eod marks, commands) awaiting commit()
        self._held_rows: list = []    # apply_deferred commands not yet written to the journal
        self._held_made: list = []    # and their settlement instructions
        self._lock_fd = open_private(self.data_dir / "LOCK", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise RecoveryRefused(f"{self.data_dir} is open in another process") from None
        try:
            self._open(list(instruments), accounts, fee_ppm, ledger, adapters or {},
                       relay_batch)
        except BaseException:
            os.close(self._lock_fd)
            raise
        if start_relays:
            for relay in self.relays.values():
                relay.start()

    # ------------------------------------------------------------------ recovery
    def _open(self, instruments, accounts, fee_ppm, ledger, adapters, relay_batch) -> None:
        started = time.perf_counter()
        report = self.recovery = RecoveryReport(self.data_dir)
        genesis = Exchange(instruments, accounts, fee_ppm)
        fresh = not snap.list_snapshots(self.data_dir) and not jr.segment_paths(self.data_dir)
        if fresh:
            report.created = True
            self.exchange = genesis
            self.maker = InstructionMaker(self.settlement)
            write_atomic(self.data_dir / OPENING, orjson.dumps(
                {"genesis_hash": genesis.state_hash(), "accounts": opening_balances(accounts),
                 "settlement": self.settlement._asdict()}))
            snap.write(self.data_dir, 0, genesis, self._extra())
            scanned = jr.ScanResult()
            pending_rows: list = []
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
                scanned, pending_rows = self._recover(adapters, ledger)
            finally:
                if collecting:
                    gc.enable()
        for path in sorted(self.data_dir.glob("cursor-*.json")):   # before anything is cut
            confirmed = Cursor(path).value
            if confirmed > scanned.last_instruction:
                raise RecoveryRefused(
                    f"{self.data_dir}: {path.name} confirmed instruction {confirmed}, beyond the "
                    f"journal's last ({scanned.last_instruction}): the journal lost acknowledged "
                    f"commands whose settlement was already delivered. Restore the journal from "
                    f"a replica or backup; do not run on a shorter one.")
        self.journal = jr.Journal.open_for_append(self.data_dir, scanned, self.fsync)
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
            statements = name == "ledger" and adapter.keeps_accounts
            self.relays[name] = Relay(name, self.outbox, adapter,
                                      self.data_dir / f"cursor-{name}.json", relay_batch,
                                      on_confirm=self._on_confirm if statements
                                      else self._trim_outbox,
                                      on_idle=self._write_statements if statements else None)
        if self.ledger is None or not self.ledger.keeps_accounts:
            self._eod_marks.clear()
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

    def _cursor_floor(self, adapters, ledger) -> int:
        names = list(adapters) + (["ledger"] if ledger is not None else [])
        floor = None
        for name in names:
            path = self.data_dir / f"cursor-{name}.json"
            value = orjson.loads(path.read_bytes())["confirmed"] if path.exists() else 0
            floor = value if floor is None else min(floor, value)
        return floor if floor is not None else 1 << 62

    def _recover(self, adapters, ledger):
        report = self.recovery
        restored, skipped = snap.latest_valid(self.data_dir)
        floor = self._cursor_floor(adapters, ledger)
        while True:
            if restored is None:
                raise RecoveryRefused(f"{self.data_dir}: no usable snapshot ({skipped})")
            snap_seq, exchange, extra = restored
            scanned = jr.scan(self.data_dir, decode_after=snap_seq, instructions_after=floor)
            if scanned.last_seq >= snap_seq:
                break
            # the journal ends before this snapshot (lost segment): take an older one
            restored, more = snap.latest_valid(self.data_dir, at_most=scanned.last_seq)
            skipped += more
        torn = scanned.torn
        if torn is not None and torn.segment != jr.segment_paths(self.data_dir)[-1]:
            # a crash can only tear the end of the newest segment; damage before other
            # segments means lost or corrupted acknowledged commands: never cut those silently
            raise RecoveryRefused(f"{self.data_dir}: journal damaged before its last segment "
                                  f"({torn}); refusing to recover past it. Restore the segment, or "
                                  f"move the later segments aside to accept the loss.")
        if torn is not None and torn.corrupt:
            raise RecoveryRefused(f"{self.data_dir}: journal damaged ({torn}); acknowledged "
                                  f"commands follow the damage, so recovery refuses to cut them. "
                                  f"Restore the segment from a replica or backup.")
        report.snapshot_seq, report.skipped_snapshots, report.torn = snap_seq, skipped, torn
        maker_state = extra["settlement"]
        # closes before the snapshot whose statements were not written yet
        self._eod_marks = [tuple(mark) for mark in extra.get("eod_marks", ())]
        maker = InstructionMaker(self.settlement, maker_state["next_seq"],
                                 maker_state["stream_seqs"])
        apply = exchange.apply
        decode = jr.decode_command
        make_tuple, new_order, new_tag = tuple.__new__, NewOrder, jr.NEW_TAG
        trade_ids_before = exchange.next_trade_id
        deposits_before = len(exchange.deposit_ids)

        def made() -> int:
            """Instructions the replay has made so far: one per trade and per deposit."""
            return (exchange.next_trade_id - trade_ids_before
                    + len(exchange.deposit_ids) - deposits_before)
        replayed = expected = 0
        pending_rows = []
        snap_instruction = maker.next_seq - 1
        next_needed = snap_seq + 1
        for record in scanned.records:
            if record.instructions:
                pending_rows.extend(row for row in record.instructions if row[1] > floor)
            if record.n_instructions and record.last_instruction > snap_instruction:
                expected += record.last_instruction - max(record.first_instruction - 1,
                                                          snap_instruction)
                maker.next_seq = record.last_instruction + 1
                maker.stream_seqs.update(record.streams)
            if record.last_seq <= snap_seq:
                continue
            if record.first_seq > next_needed:
                raise RecoveryRefused(f"{self.data_dir}: the journal lacks commands {next_needed}-"
                                   f"{record.first_seq - 1} after the snapshot at {snap_seq}")
            next_needed = record.last_seq + 1
            rows = record.command_rows()
            if record.first_seq <= snap_seq:
                rows = rows[snap_seq + 1 - record.first_seq:]
            for row in rows:
                # the common case inline (a NewOrder with an int or no price), else the codec
                if row[0] == new_tag and type(row[7]) is not list:
                    apply(make_tuple(new_order, row[1:]))
                else:
                    command = decode(row)
                    apply(command)
                    if type(command) is EndOfDay:   # its statements may not be written yet
                        # the close's exact place in the instruction stream: what the replay
                        # has made so far (a record may hold trades after the close)
                        self._eod_marks.append((snap_instruction + made(),
                                                trade_date(exchange.last_ts)))
            replayed += len(rows)
        if made() != expected:
            raise AssertionError(f"journal replay produced {made()} trades and deposits but the "
                                 f"journal holds "
                                 f"{expected} instructions for them: the engine is not "
                                 f"deterministic or the journal was written by another version")
        report.replayed = replayed
        self.exchange = exchange
        self.maker = maker
        return scanned, pending_rows

    def _extra(self) -> dict:
        with self._marks_lock:
            marks = [list(mark) for mark in self._eod_marks]
        return {"settlement": self.maker.state(), "eod_marks": marks}

    # ------------------------------------------------------------------ end of day
    def _on_confirm(self) -> None:
        self._trim_outbox()
        self._write_statements()

    def _write_statements(self) -> None:
        """Once the ledger holds every instruction up to an end of day, write that close's
        per-account statements (everything settled since the previous close) to
        statements/<trade date>.json (<trade date>-<seq>.json for a later close of the same
        date, as in round-the-clock demos). Runs in the ledger relay's thread and in
        wait_settled(); the statements lock makes a second caller wait for a write in
        progress, and a close's mark is dropped only after its file is on disk, so a failed
        write is retried, never lost."""
        if "ledger" not in self.relays:
            return
        with self._statements_lock:
            with self._marks_lock:
                confirmed = self.relays["ledger"].cursor.value
                due = [m for m in self._eod_marks if m[0] <= confirmed]
            for mark in due:
                upto_seq, date = mark
                private_dir(self.statements_dir)
                statements = self.ledger.close_statements(date, upto_seq)
                path = self.statements_dir / f"{date}.json"
                if path.exists() and orjson.loads(path.read_bytes()).get("upto_seq") != upto_seq:
                    path = self.statements_dir / f"{date}-{upto_seq}.json"
                write_atomic(path, orjson.dumps({"trade_date": date, "upto_seq": upto_seq,
                                                 "statements": statements},
                                                option=orjson.OPT_INDENT_2))
                with self._marks_lock:
                    self._eod_marks.remove(mark)

    def _statements_due(self) -> bool:
        with self._marks_lock:
            confirmed = self.relays["ledger"].cursor.value if "ledger" in self.relays else 0
            return any(m[0] <= confirmed for m in self._eod_marks)

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
        durable, and its settlement instructions are published, at the next
        commit() (or apply/apply_many, which commit everything before them). The caller must
        let nothing that depends on the events leave the process before then: the FIX
        gateway applies the orders of one event-loop iteration this way and commits once
        before it writes to any socket."""
        return self.apply_many((command,), _commit=False)[0]

    def commit(self) -> None:
        """Make every command applied with apply_deferred() durable (one fsync) and publish
        its settlement instructions."""
        with self._lock:
            if self._deferred:
                self.apply_many(())

    def apply_many(self, commands, _commit: bool = True) -> list[list]:
        """Apply commands in order, group-commit them (one fsync), return their events."""
        with self._lock:
            if self._failed is not None:
                raise JournalFailed(f"journal failed earlier ({self._failed}); reopen "
                                    f"{self.data_dir} to recover")
            exchange, maker, journal = self.exchange, self.maker, self.journal
            apply, encode = exchange.apply, jr.encode_command
            specs, accounts = exchange.specs, exchange.accounts
            batch_size = self.record_batch
            trade = TradeExecuted
            out: list[list] = []
            marks: list = []
            rows: list = self._held_rows      # rows held by apply_deferred come first
            made: list = self._held_made
            published: list = []
            try:
                for command in commands:
                    events = apply(command)
                    rows.append(encode(command))
                    if type(command) is EndOfDay:
                        marks.append((maker.next_seq - 1, trade_date(exchange.last_ts)))
                    for event in events:
                        if type(event) is trade:
                            made.append(maker.make(event, specs[event.instrument], accounts))
                        elif type(event) is Deposited:
                            made.append(maker.make_deposit(event, accounts))
                    out.append(events)
                    if len(rows) >= batch_size:
                        journal.append(rows, [tuple(i) for i in made], maker.stream_seqs)
                        published += made
                        rows, made = [], []
                if not _commit:               # apply_deferred: held until commit()
                    self._held_rows, self._held_made = rows, made
                    self._deferred.append((published, marks, len(out)))
                    return out
                if rows:
                    journal.append(rows, [tuple(i) for i in made], maker.stream_seqs)
                    published += made
                self._held_rows, self._held_made = [], []
                journal.commit()
            except BaseException as err:
                self._failed = err
                raise JournalFailed(f"journal write failed: {err}") from err
            if self._deferred:                # now durable too, and before these
                held, self._deferred = self._deferred, []
                published = [i for p, _, _ in held for i in p] + published
                marks = [m for _, ms, _ in held for m in ms] + marks
                out_count = sum(n for _, _, n in held)
            else:
                out_count = 0
            self.outbox.publish(published)
            if marks and self.ledger is not None:
                with self._marks_lock:
                    self._eod_marks += marks
            if not self.relays:
                self.outbox.trim(self.outbox.last_seq)
            self._since_snapshot += len(out) + out_count
            if self._since_snapshot >= self.snapshot_every:
                self.snapshot()
            return out

    # ------------------------------------------------------------------ snapshots
    def snapshot(self) -> Optional[Path]:
        """Write a snapshot of the current (durable) state and start a new journal segment.
        Keeps the genesis snapshot and the two newest ones."""
        with self._lock:
            if self._deferred:
                self.commit()                 # the journal must hold what the state holds
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
        while True:
            try:
                self._write_statements()
            except Exception as err:            # e.g. a full disk; the relay retries too
                self.statements_error = err
            if not self._statements_due():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

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
                self.journal.close()
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
