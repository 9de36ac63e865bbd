"""Write-ahead command journal: append-only, framed, checksummed, group-committed.

Theory of operation. The journal is a directory of segment files `journal-<first seq>.log`.
Each segment starts with an 8-byte magic and holds records; a record is one *batch*:

    u32 payload length | u32 crc32 | u64 first command seq | u32 commands
    | u64 first instruction seq | u32 instructions | u32 commands bytes | u32 streams bytes
    | payload = commands JSON | streams JSON | instructions JSON

The crc covers everything after itself (rest of the header and the payload). The three JSON
parts (orjson) are: the command rows of the batch, numbered from `first command seq`; the
instruction stream counters after the batch ({instrument: stream seq}, only when the batch
made instructions); and the settlement instructions those commands produced (the
transactional outbox), numbered from `first instruction seq`. They are separate so that
recovery parses only what it needs: commands after the snapshot, instructions not yet
confirmed by a relay. Because a command and the
instructions it caused live in one checksummed record they become durable together or not
at all: there is no window in which a trade exists without its instruction.

`Journal.append()` writes records; `Journal.commit()` fsyncs once for everything written
since the previous commit (group commit). Callers acknowledge nothing before `commit()`
returns. `GroupCommitter` (below) does the appending and the fsync in a writer thread of its
own, a group at a time, so that an event loop hands records over and goes on; it says when
each group is durable, and only then may what depends on it leave the process. Recovery (`scan()`) reads segments in order and stops at the first record that is
short, has an impossible length, a bad checksum or a sequence gap: that is the torn tail of
a write interrupted by a crash. `open_for_append()` moves the torn bytes aside to
`<segment>.torn-<offset>` (kept for inspection), truncates the segment to the last whole
record and reports what it did.

Commands are encoded as compact tagged rows (see `encode_command`), losslessly: every field
keeps its exact type and value (int price units, None, or a `PriceError`); a command whose
raw edge fields are not plain JSON scalars falls back to a pickled row, which is rare and
still exact.
"""
from __future__ import annotations

import base64
import os
import pickle
import struct
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import orjson

from ccerx.engine.core.commands import (AmendOrder, CancelOrder, DefineInstrument, Deposit, EndOfDay, Malformed,
                       NewOrder, Restrict, Retire, SetLimits, SetTradingStatus)
from ccerx.engine.core.types import InstrumentSpec, PriceError, RejectReason
from ccerx.engine.durable.files import (fsync_dir as _fsync_dir, open_private, private_dir,
                                        private_opener, write_atomic)

MAGIC = b"CCERXJ01"
HEADER = struct.Struct("<IIQIQIII")
HEADER_SIZE = HEADER.size          # 40 bytes
CRC_FROM = 8                       # the crc covers the header from this byte on, then the payload
MAX_RECORD = 1 << 30               # a length above this is garbage, not a record
SEGMENT_PREFIX, SEGMENT_SUFFIX = "journal-", ".log"

# ---------------------------------------------------------------------------- command codec
_NEW, _CANCEL, _AMEND, _DEFINE, _EOD, _MALFORMED, _PICKLED, _STATUS, _DEPOSIT = range(9)
_LIMITS, _RESTRICT, _RETIRE = 9, 10, 11
NEW_TAG = _NEW
_REASONS = {r.value: r for r in RejectReason}


def _plain(value) -> bool:
    kind = type(value)
    return kind is str or kind is type(None) or (kind is int and -(1 << 63) <= value < (1 << 64))


def _price_row(value):
    """int / None stay as they are; a PriceError becomes [reason, text] (never ambiguous:
    a raw price is only accepted on the fast path when it is an int, None or PriceError)."""
    if type(value) is PriceError:
        return [value.reason.value, value.text]
    return value


def _price_value(row):
    if type(row) is list:
        return PriceError(_REASONS[row[0]], row[1])
    return row


def encode_command(cmd) -> list:
    """Command -> JSON-ready tagged row. Exact: decode_command(encode_command(c)) == c."""
    kind = type(cmd)
    if kind is NewOrder:
        price = cmd.price_units
        plain = _plain(price) or type(price) is PriceError
        if plain:
            # every other field a plain JSON scalar (_plain inlined: the gateway encodes a row
            # per order, and a call per field cost about a third of the engine's own work)
            for value in cmd[:6] + cmd[7:11]:
                t = type(value)
                if not (t is str or value is None
                        or (t is int and -(1 << 63) <= value < (1 << 64))):
                    plain = False
                    break
        if plain:
            if cmd.target is not None:    # (rows without a target are the rows of before)
                return [_NEW, cmd.order_id, cmd.account, cmd.instrument, cmd.side,
                        cmd.order_type, cmd.tif, _price_row(price), cmd.qty, cmd.ts, cmd.owner,
                        cmd.target]
            return [_NEW, cmd.order_id, cmd.account, cmd.instrument, cmd.side, cmd.order_type,
                    cmd.tif, _price_row(price), cmd.qty, cmd.ts, cmd.owner]
    elif kind is CancelOrder:
        if _plain(cmd.order_id) and _plain(cmd.ts) and _plain(cmd.owner):
            return [_CANCEL, cmd.order_id, cmd.ts, cmd.owner]
    elif kind is AmendOrder:
        price = cmd.price_units
        if (_plain(cmd.order_id) and _plain(cmd.qty) and _plain(cmd.ts) and _plain(cmd.owner)
                and (_plain(price) or type(price) is PriceError)):
            return [_AMEND, cmd.order_id, _price_row(price), cmd.qty, cmd.ts, cmd.owner]
    elif kind is DefineInstrument:
        if _plain(cmd.ts):
            return [_DEFINE, spec_to_row(cmd.spec), cmd.ts]
    elif kind is EndOfDay:
        if _plain(cmd.ts):
            return [_EOD, cmd.ts]
    elif kind is SetTradingStatus:
        if type(cmd.open) is bool and _plain(cmd.note) and _plain(cmd.ts):
            if cmd.halted is True:
                return [_STATUS, cmd.open, cmd.note, cmd.ts, True]
            if cmd.halted is False:
                return [_STATUS, cmd.open, cmd.note, cmd.ts]   # (the row before halts existed)
    elif kind is Deposit:
        if all(_plain(v) for v in cmd):
            row = [_DEPOSIT, *cmd]
            while len(row) > 7 and row[-1] is None:   # (rows of before lots: 7 long)
                row.pop()
            return row
    elif kind is SetLimits:
        limits = cmd.limits
        if (type(limits) is tuple and all(type(r) is tuple and all(_plain(v) for v in r)
                                          for r in limits)
                and _plain(cmd.report_ppm) and _plain(cmd.ts) and _plain(cmd.owner)):
            return [_LIMITS, [list(r) for r in limits], cmd.report_ppm, cmd.ts, cmd.owner]
    elif kind is Restrict:
        if all(_plain(v) for v in cmd):
            return [_RESTRICT, *cmd]
    elif kind is Retire:
        if all(_plain(v) for v in cmd):
            return [_RETIRE, *cmd]
    elif kind is Malformed:
        if all(_plain(v) for v in cmd):
            return [_MALFORMED, cmd.op, cmd.order_id, cmd.text, cmd.ts]
    else:
        raise TypeError(f"not an engine command: {cmd!r}")
    # Raw edge values that JSON cannot carry exactly (floats, lists, huge ints...): pickle.
    # The journal is this process's own file, never input from outside.
    return [_PICKLED, base64.b64encode(pickle.dumps(cmd, protocol=5)).decode()]


def decode_command(row: list):
    tag = row[0]
    if tag == _NEW:
        price = row[7]
        if type(price) is list:
            price = PriceError(_REASONS[price[0]], price[1])
        return NewOrder(row[1], row[2], row[3], row[4], row[5], row[6], price, row[8], row[9],
                        row[10], row[11] if len(row) > 11 else None)
    if tag == _CANCEL:
        return CancelOrder(row[1], row[2], row[3])
    if tag == _AMEND:
        return AmendOrder(row[1], _price_value(row[2]), row[3], row[4], row[5])
    if tag == _DEFINE:
        return DefineInstrument(spec_from_row(row[1]), row[2])
    if tag == _EOD:
        return EndOfDay(row[1])
    if tag == _STATUS:
        return SetTradingStatus(row[1], row[2], row[3], len(row) > 4 and row[4])
    if tag == _DEPOSIT:
        return Deposit(*row[1:])
    if tag == _LIMITS:
        return SetLimits(tuple(tuple(r) for r in row[1]), row[2], row[3], row[4])
    if tag == _RESTRICT:
        return Restrict(*row[1:])
    if tag == _RETIRE:
        return Retire(*row[1:])
    if tag == _MALFORMED:
        return Malformed(row[1], row[2], row[3], row[4])
    if tag == _PICKLED:
        return pickle.loads(base64.b64decode(row[1]))
    raise ValueError(f"unknown journal command tag {tag!r}")


def spec_to_row(spec: InstrumentSpec) -> list:
    """The spec's exact integer fields (to_json/from_fields would also round-trip, but the
    integers are the truth and need no parsing)."""
    return [spec.symbol, spec.tick_units, spec.lot, spec.max_qty, spec.ref_ticks, spec.band_ppm,
            spec.name, *spec.lot_fields()]


def spec_from_row(row: list) -> InstrumentSpec:
    return InstrumentSpec(*row)


# ---------------------------------------------------------------------------- records
@dataclass(slots=True)
class Record:
    first_seq: int               # seq of the first command in the batch
    raw_commands: Optional[memoryview]   # the commands' JSON, parsed on demand (command_rows)
    first_instruction: int       # seq of the first instruction in the batch
    instructions: list           # instruction rows; [] if not parsed
    n_commands: int = 0
    n_instructions: int = 0
    streams: Optional[dict] = None   # instruction stream counters after this batch

    def command_rows(self) -> list:
        """The batch's command rows (decode each with decode_command). Parsed on every call
        and not kept: recovery holds one batch's rows at a time, not a million."""
        if self.raw_commands is None:
            raise ValueError("this record's commands were skipped by the scan")
        return orjson.loads(self.raw_commands)

    @property
    def last_seq(self) -> int:
        return self.first_seq + self.n_commands - 1

    @property
    def last_instruction(self) -> int:
        return self.first_instruction + self.n_instructions - 1


def frame(first_seq: int, commands: list, first_instruction: int, instructions: list,
          streams: Optional[dict] = None) -> bytes:
    cmd_json = orjson.dumps(commands)
    streams_json = orjson.dumps(streams) if instructions else b""
    payload = cmd_json + streams_json + (orjson.dumps(instructions) if instructions else b"")
    tail = HEADER.pack(len(payload), 0, first_seq, len(commands), first_instruction,
                       len(instructions), len(cmd_json), len(streams_json))[CRC_FROM:]
    crc = zlib.crc32(payload, zlib.crc32(tail))
    return struct.pack("<II", len(payload), crc) + tail + payload


@dataclass
class TornTail:
    """What recovery found after the last whole record of a segment."""
    segment: Path
    offset: int          # where the last whole record ends
    discarded: int       # bytes after it
    reason: str
    # A crash can tear only the last record written (each record is one write, fsynced
    # before the next is written), so a bad record with whole bytes after it is corruption
    # of acknowledged data, never a torn tail: recovery must refuse, not cut.
    corrupt: bool = False

    def __str__(self) -> str:
        if self.corrupt:
            return (f"corrupt record in {self.segment.name}: {self.reason}, with "
                    f"{self.discarded} bytes of later records after it")
        return (f"torn tail in {self.segment.name}: {self.reason}; kept the records up to byte "
                f"{self.offset}, discarded {self.discarded} bytes")


@dataclass
class ScanResult:
    records: list = field(default_factory=list)
    last_seq: int = 0
    last_instruction: int = 0
    torn: Optional[TornTail] = None


def segment_paths(directory: Path) -> list[Path]:
    found = []
    for path in directory.glob(f"{SEGMENT_PREFIX}*{SEGMENT_SUFFIX}"):
        stem = path.name[len(SEGMENT_PREFIX):-len(SEGMENT_SUFFIX)]
        if stem.isdigit():
            found.append((int(stem), path))
    return [path for _, path in sorted(found)]


def read_segment(path: Path, expect_seq: Optional[int] = None,
                 expect_instruction: Optional[int] = None,
                 decode_after: int = 0, instructions_after: int = 0):
    """Yield (record, end offset, None) for each whole record, then one final
    (None, offset, TornTail or None): the torn tail if the segment does not end cleanly.

    Every record's checksum is verified. Commands are kept (unparsed) only for records holding
    a command seq > decode_after; instructions are parsed only for records holding an
    instruction seq > instructions_after."""
    data = path.read_bytes()
    size = len(data)
    if size < len(MAGIC) or data[:len(MAGIC)] != MAGIC:
        yield None, 0, TornTail(path, 0, size, "segment header missing or wrong")
        return
    pos = len(MAGIC)
    view = memoryview(data)
    unpack = HEADER.unpack_from
    crc32 = zlib.crc32
    loads = orjson.loads
    while pos < size:
        if size - pos < HEADER_SIZE:
            yield None, pos, TornTail(path, pos, size - pos, "incomplete record header")
            return
        length, crc, first_seq, n_cmd, first_instr, n_instr, cmd_len, streams_len = unpack(
            data, pos)
        end = pos + HEADER_SIZE + length
        if length > MAX_RECORD or end > size:
            yield None, pos, TornTail(path, pos, size - pos,
                                      f"record at byte {pos} runs past the end of the file")
            return
        body = view[pos + CRC_FROM:end]
        if crc32(body) != crc:
            yield None, pos, TornTail(path, pos, size - pos, f"checksum mismatch at byte {pos}",
                                      corrupt=end < size)
            return
        if expect_seq is not None and first_seq != expect_seq:
            yield None, pos, TornTail(path, pos, size - pos,
                                      f"sequence gap at byte {pos}: {first_seq} after "
                                      f"{expect_seq - 1}", corrupt=end < size)
            return
        if expect_instruction is not None and n_instr and first_instr != expect_instruction:
            yield None, pos, TornTail(path, pos, size - pos,
                                      f"instruction sequence gap at byte {pos}",
                                      corrupt=end < size)
            return
        expect_seq = first_seq + n_cmd
        if n_instr:
            expect_instruction = first_instr + n_instr
        start = pos + HEADER_SIZE
        if cmd_len + streams_len > length:
            yield None, pos, TornTail(path, pos, size - pos, f"bad part lengths at byte {pos}",
                                      corrupt=end < size)
            return
        record = Record(first_seq, None, first_instr, [], n_cmd, n_instr)
        if first_seq + n_cmd - 1 > decode_after:
            record.raw_commands = view[start:start + cmd_len]
            if streams_len:
                record.streams = loads(view[start + cmd_len:start + cmd_len + streams_len])
        if n_instr and first_instr + n_instr - 1 > instructions_after:
            record.instructions = loads(view[start + cmd_len + streams_len:end])
        yield record, end, None
        pos = end
    yield None, pos, None


BASE_FILE = "journal-base.json"   # a journal that starts after a snapshot (a joined node)


def write_base(directory: Path, last_seq: int, last_instruction: int,
               pending: list = ()) -> None:
    """Mark `directory`'s journal as starting after command `last_seq` (and instruction
    `last_instruction`): a cluster node that joined from a snapshot (replicated.py) holds no
    journal before it. `scan` then counts from there. `pending`: the instruction rows up to
    `last_instruction` that the ledger had not confirmed when the snapshot was taken (the
    joined node's relays deliver them; recovery reads them with `read_base_pending`)."""
    write_atomic(Path(directory) / BASE_FILE, orjson.dumps(
        {"last_seq": last_seq, "last_instruction": last_instruction,
         "pending": [list(row) for row in pending]}))


def read_base(directory: Path) -> tuple[int, int]:
    """(last command, last instruction) the journal starts after; (0, 0) for one from genesis."""
    path = Path(directory) / BASE_FILE
    if not path.exists():
        return 0, 0
    base = orjson.loads(path.read_bytes())
    return base["last_seq"], base["last_instruction"]


def read_base_pending(directory: Path) -> list:
    """The instruction rows before the journal's base still to deliver (write_base); []."""
    path = Path(directory) / BASE_FILE
    if not path.exists():
        return []
    return orjson.loads(path.read_bytes()).get("pending", [])


def scan(directory: Path, decode_after: int = 0, instructions_after: int = 0) -> ScanResult:
    """Read every segment in order; stop at the first torn or corrupt record. A journal with
    a base (`write_base`) starts after it: its first record must continue the base."""
    result = ScanResult()
    result.last_seq, result.last_instruction = read_base(directory)
    expect_seq = result.last_seq + 1 if result.last_seq else None
    expect_instr = result.last_instruction + 1 if result.last_instruction else None
    for path in segment_paths(directory):
        for record, _end, torn in read_segment(path, expect_seq, expect_instr, decode_after,
                                               instructions_after):
            if torn is not None:
                result.torn = torn
                return result
            if record is None:
                break
            result.records.append(record)
            expect_seq = record.first_seq + record.n_commands
            result.last_seq = expect_seq - 1
            if record.n_instructions:
                expect_instr = record.first_instruction + record.n_instructions
                result.last_instruction = expect_instr - 1
    return result


# ---------------------------------------------------------------------------- writer
class Journal:
    """Appends batch records to the newest segment; `commit()` makes them durable.

    Not thread-safe: the engine thread owns it."""

    def __init__(self, directory: Path, next_seq: int, next_instruction: int,
                 fsync: bool = True):
        self.directory = Path(directory)
        self.next_seq = next_seq
        self.next_instruction = next_instruction
        self.fsync = fsync
        self.fd: Optional[int] = None
        self.path: Optional[Path] = None
        self.pending = 0          # bytes written since the last commit
        self.bytes_written = 0

    # -- opening
    @classmethod
    def open_for_append(cls, directory: Path, scanned: ScanResult, fsync: bool = True) -> "Journal":
        """Continue after what `scan()` found; a torn tail is moved aside and cut off."""
        directory = private_dir(directory)
        journal = cls(directory, scanned.last_seq + 1, scanned.last_instruction + 1, fsync)
        torn = scanned.torn
        segments = segment_paths(directory)
        if torn is not None:
            keep = torn.offset if torn.offset >= len(MAGIC) else 0
            data = torn.segment.read_bytes()
            aside = torn.segment.with_name(f"{torn.segment.name}.torn-{keep}")
            with open(aside, "wb", opener=private_opener) as f:
                f.write(data[keep:])
            # segments after the torn one cannot be trusted to continue the sequence
            for later in segments[segments.index(torn.segment) + 1:]:
                later.rename(later.with_name(later.name + f".after-torn-{keep}"))
            if keep == 0:
                torn.segment.unlink()
            else:
                with open(torn.segment, "r+b") as f:
                    f.truncate(keep)
                    os.fsync(f.fileno())
            _fsync_dir(directory)
            segments = segment_paths(directory)
        if segments:
            journal._open_segment(segments[-1], create=False)
        else:
            journal.rotate()
        return journal

    def _open_segment(self, path: Path, create: bool) -> None:
        if self.fd is not None:
            os.close(self.fd)
        flags = os.O_WRONLY | os.O_APPEND | (os.O_CREAT | os.O_EXCL if create else 0)
        self.fd = open_private(path, flags)
        self.path = path
        if create:
            os.write(self.fd, MAGIC)
            if self.fsync:
                os.fsync(self.fd)
                _fsync_dir(self.directory)

    def rotate(self) -> Path:
        """Start a new segment at the next command seq (called after a snapshot)."""
        self.commit()
        path = self.directory / f"{SEGMENT_PREFIX}{self.next_seq:016d}{SEGMENT_SUFFIX}"
        if path.exists():   # an empty segment left by a previous rotate at the same seq
            if path.stat().st_size <= len(MAGIC):
                path.unlink()
            else:
                raise AssertionError(f"{path} exists and holds records past the journal's end")
        self._open_segment(path, create=True)
        return path

    # -- writing
    def append(self, commands: list, instructions: list, streams: Optional[dict] = None) -> None:
        """Write one batch record (not yet durable: call commit()). `streams` are the
        instruction stream counters after the batch (needed when it holds instructions)."""
        data = frame(self.next_seq, commands, self.next_instruction, instructions, streams)
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        self.next_seq += len(commands)
        self.next_instruction += len(instructions)
        self.pending += len(data)
        self.bytes_written += len(data)

    def commit(self) -> None:
        """Make everything appended so far durable (one fsync for the whole group)."""
        if self.pending and self.fd is not None:
            if self.fsync:
                os.fdatasync(self.fd)
            self.pending = 0

    def close(self) -> None:
        if self.fd is not None:
            self.commit()
            os.close(self.fd)
            self.fd = None


# ---------------------------------------------------------------------------- group commit
class GroupCommitter:
    """Writes and fsyncs a journal's records off the caller's thread, in groups.

    Theory of operation. `submit(records, after)` queues one job (a list of
    (commands, instructions, streams) records, in journal order) and returns its *ticket*
    at once; a writer thread takes every job queued so far, appends their records, fsyncs once
    (`Journal.commit()`), then runs each job's `after()` in ticket order (the durable
    exchange publishes the job's settlement instructions there) and only then advances
    `durable` and calls the listeners with it. While one group is being fsynced the next one
    gathers in the queue, so a slow disk makes groups bigger, not callers slower: an asyncio
    loop that submits never waits for the disk. `write_now(records, after)` is the same for a
    caller that waits anyway (it writes in the caller's thread once everything queued before it
    is durable: no thread hop). Tickets are consecutive and durable in order; `durable` never
    runs ahead of an fsync.

    A failed write or fsync is final: `failed` holds the error, `durable` stops, later jobs are
    refused, `wait()` raises it and the listeners are told (ticket, error). The journal then no
    longer matches the caller's state: reopen the directory to recover.

    The journal may be a wrapper (replicated.py's ReplicatedJournal): only this object calls its
    append() and commit() while it runs; `drain()` hands the journal back (snapshots, rotate,
    close call it first)."""

    def __init__(self, journal):
        self.journal = journal
        self.issued = 0                 # tickets handed out
        self.durable = 0                # every ticket <= this is durable
        self.failed: Optional[BaseException] = None
        self.groups = 0                 # fsyncs done (statistics: jobs per group)
        self._queue: list = []          # (ticket, records, after) not yet taken by the writer
        self._busy = False              # a group is being written (by the thread or inline)
        self._cond = threading.Condition()
        self._listeners: list = []
        self._thread: Optional[threading.Thread] = None
        self._stopping = False

    def add_listener(self, listener) -> None:
        """listener(durable ticket, error or None), called in the writing thread after each
        group (it must not block: hand over to another thread, e.g. call_soon_threadsafe)."""
        self._listeners.append(listener)

    def submit(self, records: list, after=None) -> int:
        """Queue `records` (and `after()`, run once they are durable); returns the ticket."""
        with self._cond:
            if self.failed is not None:
                raise self.failed
            self.issued += 1
            self._queue.append((self.issued, records, after))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="journal-writer",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()
            return self.issued

    def write_now(self, records: list, after=None) -> int:
        """Write, fsync and run `after()` in this thread, after everything queued before."""
        with self._cond:
            while (self._queue or self._busy) and self.failed is None:
                self._cond.wait()
            if self.failed is not None:
                raise self.failed
            self.issued += 1
            self._busy = True
            group = [(self.issued, records, after)]
        self._write(group)
        if self.failed is not None:
            raise self.failed
        return group[0][0]

    def wait(self, ticket: int, timeout: Optional[float] = None) -> bool:
        """Block until `ticket` is durable (True) or timeout (False); raises a failure."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.durable >= ticket or self.failed is not None,
                                       timeout):
                return False
            if self.durable < ticket:
                raise self.failed
            return True

    def drain(self) -> None:
        """Wait until nothing is queued or being written (raises a failure)."""
        with self._cond:
            self._cond.wait_for(lambda: not (self._queue or self._busy) or self.failed is not None)
            if self.failed is not None:
                raise self.failed

    @property
    def idle(self) -> bool:
        with self._cond:
            return not (self._queue or self._busy)

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while not self._queue and not self._stopping:
                    cond.wait()
                if not self._queue:
                    return
                group, self._queue = self._queue, []
                self._busy = True
            self._write(group)
            if self.failed is not None:
                return

    def _write(self, group: list) -> None:
        journal = self.journal
        error = None
        try:
            for _ticket, records, _after in group:
                for commands, instructions, streams in records:
                    journal.append(commands, instructions, streams)
            journal.commit()
            for _ticket, _records, after in group:
                if after is not None:
                    after()
        except BaseException as err:       # the disk, or a replica: nothing more is durable
            error = err
        with self._cond:
            self._busy = False
            self.groups += 1
            if error is None:
                self.durable = group[-1][0]
            else:
                self.failed = error
                self._queue.clear()
            self._cond.notify_all()
            durable = self.durable
        for listener in self._listeners:
            try:
                listener(durable, error)
            except Exception:               # a listener's bug must not stop the journal
                pass


def iter_commands(records) -> Iterator:
    for record in records:
        for row in record.command_rows():
            yield decode_command(row)
