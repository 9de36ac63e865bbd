"""The binary replay format: one flow, one columnar file, read straight into engine commands.

Theory of operation. A flow is a sequence of rows, one per NDJSON line. Each row is a
record of a NumPy structured array (`ROW_DTYPE`, 40 bytes): the op, which fields are present
(`flags`), small enum codes for side/type/tif, indexes into interned string tables (order
ids, accounts, instruments) and integers for qty, price (price units of 1e-6 CNY, so an
off-tick price such as 62.005 stays representable and the engine can reject it) and ts.

Lossless both ways. Every row has a canonical NDJSON rendering (`render_rows`): compact
JSON, keys in the order op, ts, order_id, account, instrument, side, type, tif, price, qty.
When NDJSON is converted to binary, a line is stored as columns only if it parses into
fields the columns can hold *and* its canonical rendering is byte-identical to the input
line; any other line (malformed JSON, a float qty, an unknown side, extra keys, other
spacing, an instrument definition, a blank line) is stored verbatim in the `raw` side table
and parsed by `engine.ndjson.parse_command` at replay time, exactly as `ccerx replay` would.
Of the commands of credits as lots, the take order (frequent in a lots flow) has a type code;
the rare ones (lot deposits, listing definitions, retirements, a take with a target) are
raw lines. A file with take rows is version 2 (older readers refuse it rather than read
a take as a limit order); any other file is written as version 1.
So NDJSON -> binary -> NDJSON gives the same bytes, and binary -> NDJSON -> binary the same
arrays for a file this module wrote (a file written by the generator comes back with its
string tables renumbered in first-appearance order: same NDJSON, same commands).

File layout: an uncompressed `.npz` (a zip any NumPy can open with `np.load`) holding
  rows.npy                 the ROW_DTYPE array (streamed in chunks by the reader)
  <t>_blob.npy, <t>_off.npy  for t in oid, account, instrument, raw: UTF-8 bytes of all
                           strings of the table concatenated, and n+1 offsets
  meta.npy                 UTF-8 JSON: format name, version, row count, trailing newline,
                           generator parameters when the flow was generated
"""
from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np
import orjson

from ccerx.engine.core.commands import AmendOrder, CancelOrder, EndOfDay, NewOrder
from ccerx.engine.formats.ndjson import parse_command
from ccerx.engine.core.types import (DecimalFormatError, format_price_units,
                                     parse_price_units)

FORMAT_NAME = "ccerx-flow"
FORMAT_VERSION = 2          # 2: type code 2 (take); a file without take rows is written as 1,
READABLE_VERSIONS = (1, 2)  # so a reader of version 1 reads it, and refuses one with takes
BINARY_SUFFIXES = (".npz", ".ccxb")

# ops
RAW, NEW, CANCEL, AMEND, EOD = 0, 1, 2, 3, 4
OP_NAMES = {NEW: "new", CANCEL: "cancel", AMEND: "amend", EOD: "eod"}
# presence flags
F_TS, F_OID, F_ACCOUNT, F_INSTRUMENT, F_SIDE, F_TYPE, F_TIF, F_PRICE, F_QTY = (
    1 << i for i in range(9))
# enum codes (index into these tuples); ABSENT marks a missing field
SIDE_NAMES = ("buy", "sell")
TYPE_NAMES = ("limit", "market", "take")
TAKE = 2
TIF_NAMES = ("day", "ioc", "fok")
ABSENT = 255

ROW_DTYPE = np.dtype([("op", "u1"), ("side", "u1"), ("otype", "u1"), ("tif", "u1"),
                      ("flags", "u2"), ("instrument", "i2"),
                      ("account", "i4"), ("order_id", "i4"),   # raw rows: order_id = raw index
                      ("qty", "i8"), ("price", "i8"), ("ts", "i8")])
TABLES = ("oid", "account", "instrument", "raw")
_INT64_MAX = (1 << 63) - 1


def is_binary_path(path) -> bool:
    return Path(path).suffix.lower() in BINARY_SUFFIXES


# ---------------------------------------------------------------------------- strings
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')


def json_str(text: str) -> str:
    """A string as orjson would write it."""
    if _NEEDS_ESCAPE.search(text) is None:
        return f'"{text}"'
    return orjson.dumps(text).decode()


class StringTable:
    """Interns strings to dense int indexes (first appearance order)."""

    __slots__ = ("index", "items")

    def __init__(self, items: Iterable[str] = ()):
        self.index: dict[str, int] = {}
        self.items: list[str] = []
        for item in items:
            self.intern(item)

    def intern(self, text: str) -> int:
        i = self.index.get(text)
        if i is None:
            i = self.index[text] = len(self.items)
            self.items.append(text)
        return i

    def __len__(self) -> int:
        return len(self.items)

    def to_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        encoded = [s.encode() for s in self.items]
        return strings_to_arrays(encoded)


def strings_to_arrays(encoded: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    if encoded:
        np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)),
                  out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets


def prefixed_ids(prefix: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Arrays of the table prefix0, prefix1, ... prefix{count-1}, built without a Python loop."""
    numbers = np.arange(count).astype("S20")
    encoded = np.char.add(prefix.encode(), numbers)
    lengths = np.char.str_len(encoded).astype(np.int64)
    offsets = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    blob = b"".join(encoded.tolist())
    return np.frombuffer(blob, dtype=np.uint8), offsets


class LoadedStrings:
    """A string table read from a file; `take(indexes)` -> list of str (None for -1)."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray):
        raw = blob.tobytes()
        self.text = raw.decode("utf-8", errors="surrogateescape")
        self.ascii = len(self.text) == len(raw)
        self.raw = raw
        self.offsets = offsets
        self.n = len(offsets) - 1

    def __len__(self) -> int:
        return self.n

    def get(self, i: int) -> str:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.text[a:b] if self.ascii else self.raw[a:b].decode("utf-8", "surrogateescape")

    def all(self) -> list[str]:
        return [self.get(i) for i in range(self.n)]

    def take(self, indexes: np.ndarray) -> list:
        idx = np.asarray(indexes, dtype=np.int64)
        missing = idx < 0
        if self.n == 0:
            if not missing.all():
                raise IndexError("string table is empty")
            return [None] * len(idx)
        safe = np.where(missing, 0, idx)
        starts = self.offsets[safe].tolist()
        ends = self.offsets[safe + 1].tolist()
        if self.ascii:
            text = self.text
            out = [text[a:b] for a, b in zip(starts, ends)]
        else:
            raw = self.raw
            out = [raw[a:b].decode("utf-8", "surrogateescape") for a, b in zip(starts, ends)]
        if missing.any():
            for i in np.flatnonzero(missing).tolist():
                out[i] = None
        return out


# ---------------------------------------------------------------------------- rendering


def render_rows(rows: np.ndarray, oids: list, accounts: list, instruments: list,
                raw: list) -> list[str]:
    """Canonical NDJSON text (without newline) of each row.

    oids/accounts/instruments: JSON-encoded strings per table index (lists); for `oids` the
    caller passes one already-taken entry per row (oids[i] for row i). raw: the raw table.
    """
    out = []
    append = out.append
    cols = (rows["op"].tolist(), rows["flags"].tolist(), rows["side"].tolist(),
            rows["otype"].tolist(), rows["tif"].tolist(), rows["instrument"].tolist(),
            rows["account"].tolist(), rows["order_id"].tolist(), rows["qty"].tolist(),
            rows["price"].tolist(), rows["ts"].tolist(), oids)
    full_new = F_TS | F_OID | F_ACCOUNT | F_INSTRUMENT | F_SIDE | F_TYPE | F_PRICE | F_QTY
    for op, flags, side, otype, tif, ins, acc, oidx, qty, price, ts, oid in zip(*cols):
        if op == NEW and flags == full_new:  # the common line, written in one go
            append(f'{{"op":"new","ts":{ts},"order_id":{oid},"account":{accounts[acc]},'
                   f'"instrument":{instruments[ins]},"side":"{SIDE_NAMES[side]}",'
                   f'"type":"{TYPE_NAMES[otype]}","price":"{format_price_units(price)}","qty":{qty}}}')
        elif op == CANCEL and flags == F_TS | F_OID:
            append(f'{{"op":"cancel","ts":{ts},"order_id":{oid}}}')
        elif op == RAW:
            append(raw[oidx])
        else:
            append(render_row(op, flags, side, otype, tif, ins, acc, qty, price, ts, oid,
                              accounts, instruments))
    return out


def render_row(op, flags, side, otype, tif, ins, acc, qty, price, ts, oid, accounts,
               instruments) -> str:
    """Canonical text of one non-raw row (oid already JSON-encoded)."""
    parts = [f'"op":"{OP_NAMES[op]}"']
    if flags & F_TS:
        parts.append(f'"ts":{ts}')
    if flags & F_OID:
        parts.append(f'"order_id":{oid}')
    if flags & F_ACCOUNT:
        parts.append(f'"account":{accounts[acc]}')
    if flags & F_INSTRUMENT:
        parts.append(f'"instrument":{instruments[ins]}')
    if flags & F_SIDE:
        parts.append(f'"side":"{SIDE_NAMES[side]}"')
    if flags & F_TYPE:
        parts.append(f'"type":"{TYPE_NAMES[otype]}"')
    if flags & F_TIF:
        parts.append(f'"tif":"{TIF_NAMES[tif]}"')
    if flags & F_PRICE:
        parts.append(f'"price":"{format_price_units(price)}"')
    if flags & F_QTY:
        parts.append(f'"qty":{qty}')
    return "{" + ",".join(parts) + "}"


# ---------------------------------------------------------------------------- NDJSON -> rows
_FIELDS_BY_OP = {
    "new": {"op", "ts", "order_id", "account", "instrument", "side", "type", "tif", "price", "qty"},
    "cancel": {"op", "ts", "order_id"},
    "amend": {"op", "ts", "order_id", "price", "qty"},
    "eod": {"op", "ts"},
}
_OP_CODES = {"new": NEW, "cancel": CANCEL, "amend": AMEND, "eod": EOD}
_SIDE_CODES = {n: i for i, n in enumerate(SIDE_NAMES)}
_TYPE_CODES = {n: i for i, n in enumerate(TYPE_NAMES)}
_TIF_CODES = {n: i for i, n in enumerate(TIF_NAMES)}


class Encoder:
    """Turns NDJSON lines into rows, interning strings; lines it cannot hold go to `raw`."""

    def __init__(self):
        self.oids = StringTable()
        self.accounts = StringTable()
        self.instruments = StringTable()
        self.raw: list[str] = []
        self._json = {"account": {}, "instrument": {}}
        self._views = (_JsonView(self, "account", self.accounts),
                       _JsonView(self, "instrument", self.instruments))

    def _row_fields(self, line: bytes):
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            return None
        if type(obj) is not dict:
            return None
        op = obj.get("op")
        allowed = _FIELDS_BY_OP.get(op) if type(op) is str else None
        if allowed is None or not obj.keys() <= allowed:
            return None
        flags = 0
        row = [_OP_CODES[op], ABSENT, ABSENT, ABSENT, 0, -1, -1, -1, 0, 0, 0]
        ts = obj.get("ts", _MISSING)
        if ts is not _MISSING:
            if type(ts) is not int or not 0 <= ts <= _INT64_MAX:
                return None
            flags |= F_TS
            row[10] = ts
        for key, slot, table, flag in (("order_id", 7, self.oids, F_OID),
                                       ("account", 6, self.accounts, F_ACCOUNT),
                                       ("instrument", 5, self.instruments, F_INSTRUMENT)):
            value = obj.get(key, _MISSING)
            if value is _MISSING:
                continue
            if type(value) is not str:
                return None
            if slot == 5 and len(table) >= 32_000 and value not in table.index:
                return None
            row[slot] = table.intern(value)
            flags |= flag
        for key, slot, codes, flag in (("side", 1, _SIDE_CODES, F_SIDE),
                                       ("type", 2, _TYPE_CODES, F_TYPE),
                                       ("tif", 3, _TIF_CODES, F_TIF)):
            value = obj.get(key, _MISSING)
            if value is _MISSING:
                continue
            code = codes.get(value) if type(value) is str else None
            if code is None:
                return None
            row[slot] = code
            flags |= flag
        price = obj.get("price", _MISSING)
        if price is not _MISSING:
            if type(price) is not str:
                return None
            try:
                units = parse_price_units(price)
            except DecimalFormatError:
                return None
            if not -_INT64_MAX <= units <= _INT64_MAX:
                return None
            row[9] = units
            flags |= F_PRICE
        qty = obj.get("qty", _MISSING)
        if qty is not _MISSING:
            if type(qty) is not int or not -_INT64_MAX <= qty <= _INT64_MAX:
                return None
            row[8] = qty
            flags |= F_QTY
        row[4] = flags
        return row

    def encode(self, line: bytes) -> tuple:
        """One line (without its newline) -> a row tuple in ROW_DTYPE field order."""
        fields = self._row_fields(line)
        if fields is not None:
            op, side, otype, tif, flags, ins, acc, oidx, qty, price, ts = fields
            oid = json_str(self.oids.items[oidx]) if oidx >= 0 else None
            text = render_row(op, flags, side, otype, tif, ins, acc, qty, price, ts, oid,
                              self._views[0], self._views[1])
            if text.encode() == line:
                return tuple(fields)
        index = len(self.raw)
        self.raw.append(line.decode("utf-8", errors="surrogateescape"))
        return (RAW, ABSENT, ABSENT, ABSENT, 0, -1, -1, index, 0, 0, 0)

    def _json_of(self, name, table, i):
        cache = self._json[name]
        text = cache.get(i)
        if text is None:
            text = cache[i] = json_str(table.items[i])
        return text

    def tables(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        raw = strings_to_arrays([s.encode("utf-8", errors="surrogateescape") for s in self.raw])
        return {"oid": self.oids.to_arrays(), "account": self.accounts.to_arrays(),
                "instrument": self.instruments.to_arrays(), "raw": raw}


class _JsonView:
    def __init__(self, encoder, name, table):
        self.encoder, self.name, self.table = encoder, name, table

    def __getitem__(self, i):
        return self.encoder._json_of(self.name, self.table, i)


_MISSING = object()


# ---------------------------------------------------------------------------- file I/O
class FlowWriter:
    """Streams rows into a `.npz` flow file; the row count must be known up front."""

    def __init__(self, path, n_rows: int):
        self.path = Path(path)
        self.n_rows = n_rows
        self.written = 0
        self.version = 1            # 2 once a take row is written
        self.zip = zipfile.ZipFile(self.path, "w", compression=zipfile.ZIP_STORED,
                                   allowZip64=True)
        self.stream = self.zip.open("rows.npy", "w", force_zip64=True)
        header = {"descr": np.lib.format.dtype_to_descr(ROW_DTYPE), "fortran_order": False,
                  "shape": (n_rows,)}
        np.lib.format.write_array_header_2_0(self.stream, header)

    def write(self, rows: np.ndarray) -> None:
        if rows.dtype != ROW_DTYPE:
            raise TypeError("rows must have ROW_DTYPE")
        self.written += len(rows)
        if self.written > self.n_rows:
            raise ValueError("more rows than announced")
        if self.version == 1 and ((rows["otype"] == TAKE) & (rows["op"] == NEW)).any():
            self.version = FORMAT_VERSION
        self.stream.write(rows.tobytes())

    def close(self, tables: dict[str, tuple[np.ndarray, np.ndarray]], meta: dict) -> None:
        self.stream.close()
        if self.written != self.n_rows:
            self.zip.close()
            raise ValueError(f"announced {self.n_rows} rows, wrote {self.written}")
        meta = {"format": FORMAT_NAME, "version": self.version, "rows": self.n_rows,
                "trailing_newline": True} | meta
        for name in TABLES:
            blob, offsets = tables[name]
            self._array(f"{name}_blob.npy", np.asarray(blob, dtype=np.uint8))
            self._array(f"{name}_off.npy", np.asarray(offsets, dtype=np.int64))
        self._array("meta.npy", np.frombuffer(json.dumps(meta, sort_keys=True).encode(),
                                              dtype=np.uint8))
        self.zip.close()

    def _array(self, name: str, array: np.ndarray) -> None:
        with self.zip.open(name, "w", force_zip64=True) as f:
            np.lib.format.write_array(f, array, allow_pickle=False)


class FlowFile:
    """A binary flow opened for reading: tables in memory, rows streamed in chunks."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            self.zip = zipfile.ZipFile(self.path, "r")
        except zipfile.BadZipFile:
            raise ValueError(f"{self.path}: not a binary flow file (not a zip/.npz)") from None
        names = set(self.zip.namelist())
        if "rows.npy" not in names or "meta.npy" not in names:
            raise ValueError(f"{self.path}: not a {FORMAT_NAME} file (rows.npy/meta.npy missing)")
        self.meta = json.loads(self._array("meta.npy").tobytes())
        if (self.meta.get("format") != FORMAT_NAME
                or self.meta.get("version") not in READABLE_VERSIONS):
            raise ValueError(f"{self.path}: unsupported flow format {self.meta.get('format')} "
                             f"v{self.meta.get('version')}")
        self.tables = {name: LoadedStrings(self._array(f"{name}_blob.npy"),
                                           self._array(f"{name}_off.npy")) for name in TABLES}
        self.rows = int(self.meta["rows"])
        self._accounts = np.array(self.tables["account"].all() + [None], dtype=object)
        self._instruments = np.array(self.tables["instrument"].all() + [None], dtype=object)
        self._raw_commands: dict[int, object] = {}

    def __len__(self) -> int:
        return self.rows

    def close(self) -> None:
        self.zip.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _array(self, name: str) -> np.ndarray:
        with self.zip.open(name) as f:
            return np.lib.format.read_array(f, allow_pickle=False)

    def iter_rows(self, chunk: int = 1 << 16) -> Iterator[np.ndarray]:
        with self.zip.open("rows.npy") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            if dtype != ROW_DTYPE or fortran or shape != (self.rows,):
                raise ValueError(f"{self.path}: rows array has an unexpected layout")
            left = self.rows
            while left:
                n = min(chunk, left)
                data = f.read(n * ROW_DTYPE.itemsize)
                if len(data) != n * ROW_DTYPE.itemsize:
                    raise ValueError(f"{self.path}: truncated rows array")
                yield np.frombuffer(data, dtype=ROW_DTYPE)
                left -= n

    def read_all_rows(self) -> np.ndarray:
        parts = list(self.iter_rows(1 << 20))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=ROW_DTYPE)

    # ------------------------------------------------------------------ commands
    def commands_of(self, rows: np.ndarray) -> list:
        """Engine commands for a chunk of rows, equal to what parse_command gives for their
        canonical lines; blank raw lines give no command (as `ccerx replay` skips them)."""
        flags = rows["flags"]
        ops = rows["op"]
        oid_idx = np.where(flags & F_OID, rows["order_id"], -1)
        oid_idx[ops == RAW] = -1
        oids = self.tables["oid"].take(oid_idx)
        accounts = self._accounts[np.where(flags & F_ACCOUNT, rows["account"], -1)].tolist()
        instruments = self._instruments[np.where(flags & F_INSTRUMENT, rows["instrument"],
                                                 -1)].tolist()
        sides = _SIDE_OBJ[rows["side"]].tolist()
        types = _TYPE_OBJ[rows["otype"]].tolist()   # absent -> "limit", as parse_command
        tifs = _TIF_OBJ[rows["tif"]].tolist()
        qty = _with_none(rows["qty"], flags & F_QTY)
        price = _with_none(rows["price"], flags & F_PRICE)
        ts = _with_none(rows["ts"], flags & F_TS)
        out = []
        append = out.append
        raw_index = rows["order_id"].tolist()
        for i, (op, oid, acc, ins, side, typ, tif, p, q, t) in enumerate(
                zip(ops.tolist(), oids, accounts, instruments, sides, types, tifs, price, qty, ts)):
            if op == NEW:
                append(NewOrder(oid, acc, ins, side, typ, tif, p, q, t))
            elif op == CANCEL:
                append(CancelOrder(oid, t))
            elif op == AMEND:
                append(AmendOrder(oid, p, q, t))
            elif op == EOD:
                append(EndOfDay(t))
            else:
                command = self._raw_command(raw_index[i])
                if command is not None:
                    append(command)
        return out

    def _raw_command(self, index: int):
        line = self.tables["raw"].get(index).encode("utf-8", errors="surrogateescape")
        if not line.strip():
            return None
        return parse_command(line)

    def iter_command_chunks(self, chunk: int = 1 << 16) -> Iterator[list]:
        for rows in self.iter_rows(chunk):
            yield self.commands_of(rows)

    def iter_commands(self, chunk: int = 1 << 16) -> Iterator:
        for commands in self.iter_command_chunks(chunk):
            yield from commands

    def json_tables(self) -> tuple[list[str], list[str]]:
        return ([json_str(s) for s in self._accounts[:-1].tolist()],
                [json_str(s) for s in self._instruments[:-1].tolist()])

    def iter_lines(self, chunk: int = 1 << 16) -> Iterator[list[str]]:
        """Canonical NDJSON lines (without newlines), a chunk at a time."""
        accounts, instruments = self.json_tables()
        raw = _LazyRaw(self.tables["raw"])
        oid_table = self.tables["oid"]
        for rows in self.iter_rows(chunk):
            idx = np.where(((rows["flags"] & F_OID) != 0) & (rows["op"] != RAW),
                           rows["order_id"], -1)
            oids = [None if s is None else json_str(s) for s in oid_table.take(idx)]
            yield render_rows(rows, oids, accounts, instruments, raw)


class _LazyRaw:
    def __init__(self, table: LoadedStrings):
        self.table = table

    def __getitem__(self, i):
        return self.table.get(i)


_SIDE_OBJ = np.array(list(SIDE_NAMES) + [None] * (256 - len(SIDE_NAMES)), dtype=object)
_TYPE_OBJ = np.array(list(TYPE_NAMES) + ["limit"] * (256 - len(TYPE_NAMES)), dtype=object)
_TIF_OBJ = np.array(list(TIF_NAMES) + [None] * (256 - len(TIF_NAMES)), dtype=object)


def _with_none(values: np.ndarray, present: np.ndarray) -> list:
    out = values.tolist()
    if not present.all():
        for i in np.flatnonzero(present == 0).tolist():
            out[i] = None
    return out


# ---------------------------------------------------------------------------- conversion
def count_rows(path) -> tuple[int, bool]:
    """(number of lines incl. a final unterminated one, file ends with a newline)."""
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    trailing = last == b"\n"
    return n + (0 if trailing else 1), trailing


def ndjson_to_binary(src, dst, progress=None, meta: Optional[dict] = None) -> int:
    """Convert an NDJSON command file to a binary flow; returns the row count."""
    n_rows, trailing = count_rows(src)
    encoder = Encoder()
    writer = FlowWriter(dst, n_rows)
    batch: list[tuple] = []
    done = 0
    try:
        with open(src, "rb") as f:
            for line in f:
                if line.endswith(b"\n"):
                    line = line[:-1]
                batch.append(encoder.encode(line))
                if len(batch) == 1 << 16:
                    writer.write(np.array(batch, dtype=ROW_DTYPE))
                    done += len(batch)
                    batch.clear()
                    if progress is not None:
                        progress(done)
        if batch:
            writer.write(np.array(batch, dtype=ROW_DTYPE))
        writer.close(encoder.tables(), (meta or {}) | {"trailing_newline": trailing})
    except BaseException:
        writer.zip.close()
        Path(dst).unlink(missing_ok=True)
        raise
    return n_rows


def binary_to_ndjson(src, dst, progress=None) -> int:
    """Write a binary flow back as NDJSON; returns the row count."""
    with FlowFile(src) as flow, open(dst, "wb") as out:
        trailing = flow.meta.get("trailing_newline", True)
        done = 0
        for lines in flow.iter_lines():
            done += len(lines)
            text = "\n".join(lines)
            if done < flow.rows or trailing:
                text += "\n"
            out.write(text.encode("utf-8", errors="surrogateescape"))
            if progress is not None:
                progress(done)
        return flow.rows


def is_journal_path(path) -> bool:
    """A directory holding the engine's own write-ahead journal (engine/journal.py)."""
    path = Path(path)
    return path.is_dir() and any(path.glob("journal-*.log"))


def iter_journal_commands(path) -> Iterator:
    """The commands of a journal, in sequence, exactly as the engine recorded them (owner
    included). The journal must start at command 1 (no segment trimmed by a snapshot)."""
    from ccerx.engine.durable.journal import iter_commands, scan
    result = scan(Path(path))
    if result.records and result.records[0].first_seq != 1:
        raise ValueError(f"{path}: the journal starts at command {result.records[0].first_seq}, "
                         "not 1; older segments were trimmed, so it cannot be replayed from "
                         "an empty book")
    yield from iter_commands(result.records)


def iter_flow_commands(path, chunk: int = 1 << 16) -> Iterator:
    """Engine commands from a flow: NDJSON, binary (by suffix) or a journal directory."""
    if is_journal_path(path):
        yield from iter_journal_commands(path)
        return
    if is_binary_path(path):
        with FlowFile(path) as flow:
            yield from flow.iter_commands(chunk)
        return
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                yield parse_command(line)


def iter_flow_command_chunks(path, chunk: int = 1 << 16) -> Iterator[list]:
    if is_binary_path(path):
        with FlowFile(path) as flow:
            yield from flow.iter_command_chunks(chunk)
        return
    batch = []
    for command in iter_flow_commands(path):
        batch.append(command)
        if len(batch) == chunk:
            yield batch
            batch = []
    if batch:
        yield batch


def flow_length(path) -> int:
    if is_journal_path(path):
        from ccerx.engine.durable.journal import scan
        return sum(r.n_commands for r in scan(Path(path)).records)
    if is_binary_path(path):
        with FlowFile(path) as flow:
            return flow.rows
    return count_rows(path)[0]
