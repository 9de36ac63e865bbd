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
MAX_BLOB = 512 << 10       # a replicated blob of FIX records (NATS refuses payloads over 1 MB)


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


class SessionReplicator:
    """The FIX side of a cluster node (engine/durable/replicated.py): what every session's
    store took since the last publish, so that it reaches the replicated log before any of it
    reaches a socket, and so that a standby's stores hold what the leader's hold.

    What a store does (a message set, its sequence numbers changed, a reset) is held per store
    name with a *watermark*: `watermark()`, the number of commands the engine had applied then
    (a report is made after the command it reports). `take(upto)` hands over, as blobs, what
    was held with a watermark up to `upto`: the node attaches it to the batch of commands that
    ends at command `upto`, so a command and the execution reports it caused are one JetStream
    message, and a report never reaches the log before its command. `sync(store)`, before a
    store's bytes go out, publishes (`publish`, set by the node) all that store held and what
    the others held up to the last published command: heartbeats, logons, gateway rejects, a
    received MsgSeqNum. `mirror(blob)` writes a blob into the stores it names (a standby).

    Blob: for each session, b"<name> <next_sender> <next_target> <reset 0|1> <count>\\n"
    then count times b"<seq> <length>\\n" + the message's bytes."""

    def __init__(self):
        import threading
        self._lock = threading.Lock()
        # name -> [store, [(watermark, seq or RESET or None, raw, next_sender, next_target)]]
        self._pending: dict[str, list] = {}
        self.stores: dict[str, "ReplicatedStore"] = {}
        self.publish = None                      # publish(blob), raises on failure
        self.watermark = lambda: 0               # commands the engine has applied
        self.published = lambda: 0               # commands published (sync takes up to it)
        self._skip_below: dict[str, int] = {}    # mirror: what the local store already holds
        self.mirrored = None                     # mirrored(name, records) after each write

    def wrap(self, store: "FileStore") -> "ReplicatedStore":
        wrapped = ReplicatedStore(store, self)
        self.stores[store.name] = wrapped
        self._skip_below[store.name] = store.next_sender
        return wrapped

    def _hold(self, store, seq, raw, next_sender: int) -> None:
        mark = self.watermark()
        item = (mark, seq, raw, next_sender, store.inner.next_target)
        with self._lock:
            entry = self._pending.get(store.name)
            if entry is None:
                self._pending[store.name] = [store, [item]]
                return
            items = entry[1]
            last = items[-1]
            if seq is None and last[0] == mark and last[1] != _RESET:
                items[-1] = last[:3] + item[3:]      # numbers only: update the last one
            else:
                items.append(item)

    def held(self, store, seq: int, raw: bytes) -> None:
        self._hold(store, seq, raw, seq + 1)

    def touched(self, store) -> None:
        self._hold(store, None, None, store.inner.next_sender)

    def was_reset(self, store) -> None:
        self._hold(store, _RESET, None, 1)

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def take(self, upto: Optional[int] = None, whole: Optional[str] = None,
             limit: int = MAX_BLOB) -> list[bytes]:
        """What was held with a watermark up to `upto` (None: everything), and everything of
        the store named `whole`, as blobs of about `limit` bytes at most (a single larger
        message makes a larger one), in order; [] if nothing. A session with more records
        than fit is split over entries of the same name (the reset flag on the first)."""
        taken = []
        with self._lock:
            for name, entry in list(self._pending.items()):
                items = entry[1]
                cut = len(items)
                if upto is not None and name != whole:
                    cut = next((i for i, item in enumerate(items) if item[0] > upto), cut)
                if cut == 0:
                    continue
                if cut == len(items):
                    del self._pending[name]
                else:
                    entry[1] = items[cut:]
                taken.append((name, items[:cut]))
        blobs, parts, size = [], [], 0
        for name, items in taken:
            reset = False
            for i in range(len(items) - 1, -1, -1):
                if items[i][1] == _RESET:
                    reset, items = True, items[i:]
                    break
            _, _, _, next_sender, next_target = items[-1]
            head = b"%s %d %d " % (name.encode(), next_sender, next_target)
            records = [(seq, raw) for _, seq, raw, _, _ in items if raw is not None]
            chunk: list = []
            last = len(records) - 1
            for i, (seq, raw) in enumerate(records):
                chunk.append(b"%d %d\n" % (seq, len(raw)))
                chunk.append(raw)
                size += len(raw) + 24
                if size >= limit and i < last:
                    parts.append(head + b"%d %d\n" % (reset, len(chunk) // 2))
                    parts.extend(chunk)
                    blobs.append(b"".join(parts))
                    reset, chunk, parts, size = False, [], [], 0
            parts.append(head + b"%d %d\n" % (reset, len(chunk) // 2))
            parts.extend(chunk)
            size += len(head) + 8
        if parts:
            blobs.append(b"".join(parts))
        return blobs

    def sync(self, store: "ReplicatedStore") -> None:
        """Before `store`'s bytes go out: publish what no batch of commands carried."""
        if self._pending and self.publish is not None:
            for blob in self.take(self.published(), store.name):
                self.publish(blob)

    def mirror(self, blob: bytes) -> None:
        """A standby: write what the leader's stores took into the same stores here. A store
        it does not know (another config) is skipped; a message the local store holds from
        before this process started is not written again."""
        for name, ns, nt, reset, records in decode_sessions(blob):
            store = self.stores.get(name)
            if store is None:
                continue
            inner = store.inner
            if reset:
                inner.reset()
                self._skip_below[name] = 0
            skip_below = self._skip_below.get(name, 0)
            if skip_below:
                records = [(seq, raw) for seq, raw in records if seq >= skip_below]
            for seq, raw in records:
                inner.set(seq, raw)
            inner.next_sender, inner.next_target = ns, nt
            inner.flush()
            if self.mirrored is not None and records:
                self.mirrored(name, records)


_RESET = -1


def decode_sessions(blob: bytes) -> Iterator[tuple[str, int, int, bool, list]]:
    """SessionReplicator's blob back into (name, next_sender, next_target, reset, records);
    ValueError if it is not one."""
    view, at, end = memoryview(blob), 0, len(blob)
    while at < end:
        eol = blob.index(b"\n", at)
        name, ns, nt, reset, count = blob[at:eol].split(b" ")
        at = eol + 1
        records = []
        for _ in range(int(count)):
            eol = blob.index(b"\n", at)
            seq, length = (int(x) for x in blob[at:eol].split(b" "))
            at = eol + 1 + length
            if at > end:
                raise ValueError("a session blob cut short")
            records.append((seq, bytes(view[eol + 1:at])))
        yield name.decode(), int(ns), int(nt), reset == b"1", records


class ReplicatedStore:
    """A FileStore whose every change is also handed to the SessionReplicator (a cluster
    node's FIX store): set/reset and the sequence numbers are recorded for the next publish,
    and flush() publishes what is left before the local flush (so the bytes that follow on
    the socket are in the replicated log first)."""

    def __init__(self, inner: "FileStore", replicator: SessionReplicator):
        self.inner = inner
        self.name = inner.name
        self._replicator = replicator

    @property
    def next_sender(self) -> int:
        return self.inner.next_sender

    @next_sender.setter
    def next_sender(self, value: int) -> None:
        self.inner.next_sender = value
        self._replicator.touched(self)

    @property
    def next_target(self) -> int:
        return self.inner.next_target

    @next_target.setter
    def next_target(self, value: int) -> None:
        self.inner.next_target = value
        self._replicator.touched(self)

    def set(self, seq: int, raw: bytes) -> None:
        self.inner.set(seq, raw)
        self._replicator.held(self, seq, raw)

    def get(self, begin: int, end: int) -> list[tuple[int, bytes]]:
        return self.inner.get(begin, end)

    def each(self, begin: int, end: int):
        return self.inner.each(begin, end)

    def reset(self) -> None:
        self.inner.reset()
        self._replicator.was_reset(self)

    def flush(self) -> None:
        self._replicator.sync(self)
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()
