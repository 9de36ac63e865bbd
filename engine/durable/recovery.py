"""Recovery: a data directory back to its last durable state.

Theory of operation. The newest snapshot that restores to its recorded state hash, then the
journal records after it, replayed through the same deterministic engine; the replay
re-derives every trade and deposit and checks the count against the instructions the journal
holds (a mismatch means a non-deterministic engine or a journal of another version). A torn
tail (a crash in the middle of a write) is cut and reported; damage anywhere else, a journal
that ends before its snapshot's successor, or one shorter than what a relay confirmed, is
refused (RecoveryRefused) rather than silently losing acknowledged commands. A journal
may start after its snapshot (a cluster node that joined from one: journal.write_base); the
scan then counts from that base, so the snapshot there is where recovery starts.

`replay_directory` returns a `Recovered` value; `DurableExchange` opens the journal for
appending after it and wires the relays.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import orjson

from ccerx.engine.core.commands import EndOfDay, NewOrder
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.durable import journal as jr
from ccerx.engine.durable import snapshot as snap
from ccerx.engine.durable.settlement import (InstructionMaker, SettlementConfig,
                                              clears_at_close, trade_date)


class RecoveryRefused(RuntimeError):
    """The data directory cannot be recovered without losing acknowledged commands."""


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


@dataclass
class Recovered:
    exchange: Exchange
    maker: InstructionMaker
    scanned: jr.ScanResult
    pending_rows: list             # instructions some relay has not confirmed yet
    eod_marks: list                # closes whose statements are not written yet


def cursor_floor(data_dir: Path, relay_names: Iterable[str]) -> int:
    """The lowest instruction every relay confirmed (what the outbox must still hold)."""
    floor = None
    for name in relay_names:
        path = data_dir / f"cursor-{name}.json"
        value = orjson.loads(path.read_bytes())["confirmed"] if path.exists() else 0
        floor = value if floor is None else min(floor, value)
    return floor if floor is not None else 1 << 62


def replay_directory(data_dir: Path, settlement: SettlementConfig, floor: int,
                 report: RecoveryReport) -> Recovered:
    """The newest usable snapshot of `data_dir` plus the journal after it, replayed through
    the deterministic engine and checked against the instructions the journal holds.
    Fills `report` (snapshot, torn tail, replayed count) and returns what was recovered;
    raises RecoveryRefused where going on would lose acknowledged commands."""
    restored, skipped = snap.latest_valid(data_dir)
    while True:
        if restored is None:
            raise RecoveryRefused(f"{data_dir}: no usable snapshot ({skipped})")
        snap_seq, exchange, extra = restored
        batch_clearing = clears_at_close(exchange.rules)
        snap_instruction = extra["settlement"]["next_seq"] - 1
        # day-end clearing: the maker follows the instructions after the snapshot (what the
        # next clearing batch covers), so those are parsed too
        scanned = jr.scan(data_dir, decode_after=snap_seq, instructions_after=min(
            floor, snap_instruction) if batch_clearing else floor)
        if scanned.last_seq >= snap_seq:
            break
        # the journal ends before this snapshot (lost segment): take an older one
        restored, more = snap.latest_valid(data_dir, at_most=scanned.last_seq)
        skipped += more
    torn = scanned.torn
    if torn is not None and torn.segment != jr.segment_paths(data_dir)[-1]:
        # a crash can only tear the end of the newest segment; damage before other
        # segments means lost or corrupted acknowledged commands: never cut those silently
        raise RecoveryRefused(f"{data_dir}: journal damaged before its last segment "
                              f"({torn}); refusing to recover past it. Restore the segment, or "
                              f"move the later segments aside to accept the loss.")
    if torn is not None and torn.corrupt:
        raise RecoveryRefused(f"{data_dir}: journal damaged ({torn}); acknowledged "
                              f"commands follow the damage, so recovery refuses to cut them. "
                              f"Restore the segment from a replica or backup.")
    report.snapshot_seq, report.skipped_snapshots, report.torn = snap_seq, skipped, torn
    maker_state = extra["settlement"]
    # closes before the snapshot whose statements were not written yet
    eod_marks = [tuple(mark) for mark in extra.get("eod_marks", ())]
    maker = InstructionMaker(settlement, maker_state["next_seq"],
                             maker_state["stream_seqs"], batch_clearing=batch_clearing,
                             clearing=maker_state.get("clearing"))
    apply = exchange.apply
    decode = jr.decode_command
    make_tuple, new_order, new_tag = tuple.__new__, NewOrder, jr.NEW_TAG
    trade_ids_before = exchange.next_trade_id
    deposits_before = len(exchange.deposit_ids)
    retirements_before = len(exchange.retire_ids)

    closes = 0         # EndOfDay commands replayed: each made a clearing batch if batch_clearing

    def made() -> int:
        """Instructions the replay has made so far: one per trade, deposit and retirement
        (and one per close under day-end clearing)."""
        return (exchange.next_trade_id - trade_ids_before
                + len(exchange.deposit_ids) - deposits_before
                + len(exchange.retire_ids) - retirements_before + closes)
    replayed = expected = 0
    # a joined node's journal starts after its snapshot: the instructions before it that the
    # ledger had not confirmed came with the snapshot (journal.write_base)
    pending_rows = [row for row in jr.read_base_pending(data_dir) if row[1] > floor]
    next_needed = snap_seq + 1
    for record in scanned.records:
        if record.instructions:
            pending_rows.extend(row for row in record.instructions if row[1] > floor)
            if batch_clearing:
                for row in record.instructions:
                    if row[1] > snap_instruction:
                        maker.observe(row)
        if record.n_instructions and record.last_instruction > snap_instruction:
            expected += record.last_instruction - max(record.first_instruction - 1,
                                                      snap_instruction)
            maker.next_seq = record.last_instruction + 1
            maker.stream_seqs.update(record.streams)
        if record.last_seq <= snap_seq:
            continue
        if record.first_seq > next_needed:
            raise RecoveryRefused(f"{data_dir}: the journal lacks commands {next_needed}-"
                               f"{record.first_seq - 1} after the snapshot at {snap_seq}")
        next_needed = record.last_seq + 1
        rows = record.command_rows()
        if record.first_seq <= snap_seq:
            rows = rows[snap_seq + 1 - record.first_seq:]
        for row in rows:
            # the common case inline (a NewOrder with an int or no price and no take
            # target: its row lacks the last field, target None), else the codec
            if row[0] == new_tag and type(row[7]) is not list and len(row) == 11:
                row.append(None)
                apply(make_tuple(new_order, row[1:]))
            else:
                command = decode(row)
                apply(command)
                if type(command) is EndOfDay:   # its statements may not be written yet
                    if batch_clearing:
                        closes += 1
                    # the close's exact place in the instruction stream: what the replay
                    # has made so far (a record may hold trades after the close)
                    eod_marks.append((snap_instruction + made(),
                                            trade_date(exchange.last_ts)))
        replayed += len(rows)
    if made() != expected:
        raise AssertionError(f"journal replay produced {made()} trades and deposits but the "
                             f"journal holds "
                             f"{expected} instructions for them: the engine is not "
                             f"deterministic or the journal was written by another version")
    report.replayed = replayed
    return Recovered(exchange, maker, scanned, pending_rows, eod_marks)
