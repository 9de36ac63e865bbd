"""Message stores: a session's sequence numbers and the messages it sent, for resends.

The interface is QuickFIX's MessageStore in miniature, declared as the `MessageStore`
Protocol below (the session holds a MessageStore, never a concrete class):

    next_sender / next_target      the next MsgSeqNum we send / expect
    set(seq, raw)                  keep a sent message
    get(begin, end)                the kept messages with begin <= seq <= end, in order
    each(begin, end)               the same, one at a time (for a pass over a large store)
    reset()                        forget everything, both numbers back to 1
    flush()                        make everything so far durable (before bytes hit the wire)

MemoryStore serves tests and sessions without a store directory. FileStore keeps three files
per session under a directory, so a broker that reconnects after a gateway restart recovers
what it missed by ResendRequest:

    <name>.body     the sent messages, appended raw
    <name>.index    one line "seq offset length" per message (rebuilt into arrays on open)
    <name>.seqnums  "next_sender next_target", rewritten in place on flush: two 20-digit
                    numbers, so every write is the same 42 bytes at offset 0 (one write()
                    that a crash of the process cannot tear), and the file is truncated
                    after it, so no earlier content can outlive it. A file that does not read
                    back as two numbers stops the store from opening (StoreCorrupt): starting
                    the session silently from 1/1 would make its stored messages unresendable.

Writes go through buffered files and reach the operating system on flush(); with
fsync=True flush() also fsyncs (survives a machine crash, at a cost per flush). The
session flushes once per batch of outgoing bytes, not once per message.
"""
from __future__ import annotations

import os
from array import array
from pathlib import Path
from typing import Iterator, Optional, Protocol, runtime_checkable

from ccerx.engine.durable.files import private_dir, private_opener


SEQNUM_DIGITS = 20


class StoreCorrupt(ValueError):
    """A store file cannot be read back; the message names the file and what to do."""


@runtime_checkable
class MessageStore(Protocol):
    """What a session needs of its store (see the module doc for each call's contract)."""
    next_sender: int
    next_target: int

    def set(self, seq: int, raw: bytes) -> None: ...

    def get(self, begin: int, end: int) -> list[tuple[int, bytes]]: ...

    def each(self, begin: int, end: int) -> Iterator[tuple[int, bytes]]: ...

    def reset(self) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class MemoryStore:
    __slots__ = ("next_sender", "next_target", "_messages")

    def __init__(self):
        self.next_sender = 1
        self.next_target = 1
        self._messages: dict[int, bytes] = {}

    def set(self, seq: int, raw: bytes) -> None:
        self._messages[seq] = raw

    def get(self, begin: int, end: int) -> list[tuple[int, bytes]]:
        msgs = self._messages
        return [(s, msgs[s]) for s in range(max(begin, 1), end + 1) if s in msgs]

    def each(self, begin: int, end: int):
        return iter(self.get(begin, end))

    def reset(self) -> None:
        self.next_sender = 1
        self.next_target = 1
        self._messages.clear()

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class FileStore:
    """Durable store. Memory: 16 bytes per stored message (offset and length arrays)."""

    def __init__(self, directory: Path, name: str, fsync: bool = False):
        self.directory = private_dir(directory)
        self.name = name
        self.fsync = fsync
        base = self.directory / name
        self._body_path = base.with_name(name + ".body")
        self._index_path = base.with_name(name + ".index")
        self._seq_path = base.with_name(name + ".seqnums")
        self.next_sender = 1
        self.next_target = 1
        self._first = 1                      # seq of _offsets[0]
        self._offsets = array("q")
        self._lengths = array("q")
        self._load()
        self._body = open(self._body_path, "ab", opener=private_opener)
        self._body_end = self._body.tell()
        self._index = open(self._index_path, "ab", opener=private_opener)
        self._reader = open(self._body_path, "rb")
        self._saved_seqnums: Optional[tuple[int, int]] = None
        self._seqfile = None
        self._dirty = False

    def _load(self) -> None:
        if self._seq_path.exists():
            self.next_sender, self.next_target = self._read_seqnums()
        if self._index_path.exists():
            body_size = self._body_path.stat().st_size if self._body_path.exists() else 0
            with open(self._index_path, "rb") as fh:
                for line in fh:
                    parts = line.split()
                    if len(parts) != 3:
                        break                      # a torn last line after a crash
                    seq, offset, length = (int(p) for p in parts)
                    if offset + length > body_size:
                        break
                    if seq >= self.next_sender:
                        # written (a buffer spilled) but never committed by a flush: the bytes
                        # never reached the socket and the engine may not have journaled what
                        # they report, so they must not be resent; their numbers are reused
                        continue
                    self._put(seq, offset, length)

    def _read_seqnums(self) -> tuple[int, int]:
        data = self._seq_path.read_bytes()
        if not data:
            return 1, 1           # created, then a crash before the first flush wrote it
        parts = data.split(b" ")
        if (len(parts) == 2 and parts[1].endswith(b"\n") and parts[0].isdigit()
                and parts[1][:-1].isdigit()
                and all(0 < len(p.rstrip(b"\n")) <= SEQNUM_DIGITS for p in parts)):
            numbers = int(parts[0]), int(parts[1])
            if min(numbers) >= 1:
                return numbers
        raise StoreCorrupt(
            f"{self._seq_path}: not two sequence numbers 'next_sender next_target' "
            f"(it holds {data[:60]!r}{'...' if len(data) > 60 else ''}); refusing to start the "
            f"session at 1/1, which would leave its stored messages unresendable. Restore the "
            f"file, or write the right numbers into it, or delete {self.name}.seqnums, "
            f".index and .body to start the session afresh")

    def _put(self, seq: int, offset: int, length: int) -> None:
        if not self._offsets:
            self._first = seq
        idx = seq - self._first
        if idx < 0:
            return                                  # older than the first kept message
        while len(self._offsets) <= idx:
            self._offsets.append(-1)
            self._lengths.append(0)
        self._offsets[idx] = offset
        self._lengths[idx] = length

    def set(self, seq: int, raw: bytes) -> None:
        offset = self._body_end            # kept here: tell() on a buffered file is a call
        n = len(raw)
        self._body.write(raw)
        self._body_end = offset + n
        self._index.write(b"%d %d %d\n" % (seq, offset, n))
        if self._offsets and seq == self._first + len(self._offsets):
            self._offsets.append(offset)   # the usual case: the next sequence number
            self._lengths.append(n)
        else:
            self._put(seq, offset, n)
        self._dirty = True

    def get(self, begin: int, end: int) -> list[tuple[int, bytes]]:
        return list(self.each(begin, end))

    def each(self, begin: int, end: int):
        """The kept messages with begin <= seq <= end, in order, read one at a time."""
        self._body.flush()
        first = self._first
        lo = max(begin, first)
        hi = min(end, first + len(self._offsets) - 1)
        reader = self._reader
        for seq in range(lo, hi + 1):
            offset = self._offsets[seq - first]
            if offset < 0:
                continue
            reader.seek(offset)
            yield seq, reader.read(self._lengths[seq - first])

    def reset(self) -> None:
        self.next_sender = 1
        self.next_target = 1
        for fh in (self._body, self._index, self._reader):
            fh.close()
        self._body = open(self._body_path, "wb", opener=private_opener)
        self._body_end = 0
        self._index = open(self._index_path, "wb", opener=private_opener)
        self._reader = open(self._body_path, "rb")
        self._offsets = array("q")
        self._lengths = array("q")
        self._first = 1
        self._dirty = True
        self.flush()

    def flush(self) -> None:
        seqnums = (self.next_sender, self.next_target)
        if not self._dirty and seqnums == self._saved_seqnums:
            return
        self._body.flush()
        self._index.flush()
        if self._seqfile is None:
            self._seqfile = open(self._seq_path, "r+b" if self._seq_path.exists() else "w+b",
                                 opener=private_opener)
        # fixed width, rewritten in place: one small write, never a torn number; the session
        # bounds sequence numbers far below 20 digits, so a wider one is a bug
        line = b"%020d %020d\n" % seqnums
        if len(line) != 2 * SEQNUM_DIGITS + 2:
            raise ValueError(f"{self._seq_path}: sequence numbers {seqnums} do not fit the file")
        self._seqfile.seek(0)
        self._seqfile.write(line)
        self._seqfile.truncate()
        self._seqfile.flush()
        if self.fsync:
            for fh in (self._body, self._index, self._seqfile):
                os.fsync(fh.fileno())
        self._saved_seqnums = seqnums
        self._dirty = False

    def close(self) -> None:
        self.flush()
        for fh in (self._body, self._index, self._reader, self._seqfile):
            if fh is not None:
                fh.close()
