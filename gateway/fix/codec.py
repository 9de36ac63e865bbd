"""FIX tag=value codec: framing a byte stream, parsing a frame, encoding a message.

Sans-IO: bytes in, frames and fields out; no sockets, no clock of its own.

Framing follows QuickFIX's parser on purpose (the acceptance scripts depend on it): a frame
starts at "8=", its BodyLength says where to start looking for "<SOH>10=", and the frame ends
at the SOH after the checksum. A wrong BodyLength therefore yields a frame that fails
validation (and, when too long, swallows the next message), exactly as a QuickFIX acceptor
sees it. Frames are validated by `parse`: tags must be integers, every field SOH-terminated,
the first three fields 8, 9, 35, BodyLength and CheckSum exact; anything else is a
`GarbledMessage`, which the session ignores (or answers by disconnecting before logon).

Values are str decoded as latin-1, so any byte survives a round trip. Human text that is not
plain ASCII (Chinese notes, reject texts, instrument names) is sent as FIX 4.4 prescribes, by
`text_fields`: UTF-8 bytes in EncodedText 355 (EncodedSecurityDesc 351) after its length,
MessageEncoding 347=UTF-8 in the header, and an ASCII rendering in Text 58; `read_text` reads
it back. `pretty` shows frames in logs with passwords (SECRET_TAGS) as ***.
"""
from __future__ import annotations

import calendar
import re
import time
import zlib
from typing import Iterable, Optional

SOH = b"\x01"
BEGIN_STRING = "FIX.4.4"
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024

# Header fields that the session layer owns on outgoing messages (everything else a caller
# puts in the header, e.g. PossResend 97 or routing tags, is kept).
SESSION_OWNED_HEADER = frozenset((8, 9, 10, 34, 35, 43, 49, 52, 56, 122))


class GarbledMessage(Exception):
    """A frame that is not a well-formed FIX message (ignored by the session)."""


class FramingError(Exception):
    """The byte stream cannot be framed any more (e.g. a BodyLength beyond the size limit)."""


class Framer:
    """Cuts a TCP byte stream into candidate FIX frames.

    Memory is bounded: at most one partial frame of max_message_size bytes is buffered;
    bytes before a "8=" are dropped.
    """
    __slots__ = ("buffer", "max_message_size")

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE):
        self.buffer = bytearray()
        self.max_message_size = max_message_size

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def next_frame(self) -> Optional[bytes]:
        """The next complete frame, or None when more bytes are needed.

        Raises FramingError when the stream is hopeless (declared length over the limit, a
        frame growing past the limit, a non-numeric BodyLength): drop the connection.
        """
        buf = self.buffer
        start = buf.find(b"8=")
        if start < 0:
            # keep a trailing "8" that may be the start of the next frame
            del buf[:max(0, len(buf) - 1)]
            return None
        if start:
            del buf[:start]
        i = buf.find(b"\x019=")
        if i < 0:
            if len(buf) > self.max_message_size:
                raise FramingError("no BodyLength within the size limit")
            return None
        j = buf.find(SOH, i + 3)
        if j < 0:
            if len(buf) > self.max_message_size:
                raise FramingError("BodyLength field too long")
            return None
        text = bytes(buf[i + 3:j])
        if not text.isdigit():
            del buf[:j + 1]
            raise FramingError("BodyLength is not a number: %r" % text)
        length = int(text)
        if length > self.max_message_size:
            raise FramingError("BodyLength %d exceeds the limit of %d" % (length, self.max_message_size))
        pos = j + 1 + length
        if len(buf) < pos:
            return None
        k = buf.find(b"\x0110=", pos - 1)
        if k < 0:
            if len(buf) > 2 * self.max_message_size + 64:
                raise FramingError("no CheckSum within the size limit")
            return None
        end = buf.find(SOH, k + 4)
        if end < 0:
            return None
        frame = bytes(buf[:end + 1])
        del buf[:end + 1]
        return frame


_TAG = re.compile(r"-?\d+\Z", re.ASCII)
_tag_cache: dict[str, int] = {}


# A frame whose every field is well formed ("tag=value<SOH>", the tag an integer as _TAG
# reads it): split by the regular expression engine in one pass, not field by field
_WELL_FORMED = re.compile(r"(?:-?\d+=[^\x01]*\x01)+\Z", re.ASCII)
_FIELD = re.compile(r"(-?\d+)=([^\x01]*)\x01", re.ASCII)


def split_fields(raw: bytes) -> list[tuple[int, str]]:
    """Split a frame into (tag, value) fields; GarbledMessage if any field is malformed."""
    text = raw.decode("latin-1")
    if _WELL_FORMED.match(text) is not None:
        cache = _tag_cache
        try:
            return [(cache[tag], value) for tag, value in _FIELD.findall(text)]
        except KeyError:
            pass                    # a tag not seen before: the field by field path learns it
    parts = text.split("\x01")
    if parts[-1] != "":
        raise GarbledMessage("SOH not found at end of field")
    del parts[-1]
    fields = []
    append = fields.append
    cache = _tag_cache
    for part in parts:
        tag, eq, value = part.partition("=")
        t = cache.get(tag)
        if t is None:
            if not eq:
                raise GarbledMessage("Equal sign not found in field")
            if _TAG.match(tag) is None:
                raise GarbledMessage("Field tag is invalid")
            t = int(tag)
            if len(cache) < 4096:
                cache[tag] = t
        elif not eq:
            raise GarbledMessage("Equal sign not found in field")
        append((t, value))
    return fields


def parse(raw: bytes) -> list[tuple[int, str]]:
    """Validate a frame (structure, BodyLength, CheckSum) and return its fields."""
    fields = split_fields(raw)
    if len(fields) < 4 or fields[0][0] != 8 or fields[1][0] != 9 or fields[2][0] != 35:
        raise GarbledMessage("Header fields out of order")
    if fields[-1][0] != 10:
        raise GarbledMessage("CheckSum is not the last field")
    body_start = raw.index(SOH, raw.index(SOH) + 1) + 1
    trailer_start = raw.rindex(b"\x0110=") + 1
    declared = fields[1][1]
    if not (declared.isascii() and declared.isdigit()) or int(declared) != trailer_start - body_start:
        raise GarbledMessage("Expected BodyLength=%d, Received BodyLength=%s"
                             % (trailer_start - body_start, declared))
    declared_sum = fields[-1][1]
    actual_sum = byte_sum(memoryview(raw)[:trailer_start]) % 256
    if not (declared_sum.isascii() and declared_sum.isdigit()) or int(declared_sum) != actual_sum:
        raise GarbledMessage("Expected CheckSum=%d, Received CheckSum=%s" % (actual_sum, declared_sum))
    return fields


def peek_header(raw: bytes) -> dict[int, str]:
    """The first values of 8, 35, 49 and 56 in a frame, without validation (session lookup)."""
    out: dict[int, str] = {}
    for part in raw.split(SOH):
        tag, eq, value = part.partition(b"=")
        if eq and tag in (b"8", b"35", b"49", b"56") and int(tag) not in out:
            out[int(tag)] = value.decode("latin-1")
    return out


def encode(header: Iterable[tuple[int, str]], body: Iterable[tuple[int, str]],
           msg_type: str, begin_string: str = BEGIN_STRING) -> bytes:
    """Frame a message: 8, 9, 35, the header fields as given, the body, 10.

    The caller passes header fields already in order (the session sorts them by tag).
    """
    return frame(begin_string, "35=%s\x01%s%s" % (
        msg_type, "".join([f"{tag}={value}\x01" for tag, value in header]),
        "".join([f"{tag}={value}\x01" for tag, value in body])))


def frame(begin_string: str, text: str) -> bytes:
    """8=, 9= and 10= around `text` (35= onwards, every field SOH-terminated)."""
    return frame_bytes(begin_bytes(begin_string), text)


def begin_bytes(begin_string: str) -> tuple[bytes, int]:
    """What frame_bytes needs of a BeginString: b"8=<it><SOH>9=" and its byte sum (a session
    computes it once)."""
    head = b"8=%s\x019=" % begin_string.encode("latin-1")
    return head, byte_sum(head)


def frame_bytes(begin: tuple[bytes, int], text: str) -> bytes:
    """frame() with the BeginString prepared by begin_bytes (the session's send path)."""
    payload = text.encode("latin-1")
    n = len(payload)
    head, head_sum = begin
    length_sum = _DIGIT_SUMS[n] if n < 10_000 else byte_sum(b"%d\x01" % n)
    return b"%s%d\x01%s10=%03d\x01" % (head, n, payload,
                                         (head_sum + length_sum + byte_sum(payload)) % 256)


_adler32 = zlib.adler32


def byte_sum(data) -> int:
    """sum(data) for bytes or a memoryview, about 10x faster than sum() on a FIX frame.

    zlib.adler32's low 16 bits are (1 + the byte sum) mod 65521; for at most 256 bytes the
    sum is at most 65280, so it is exact. Longer data goes in 256-byte slices: O(n).
    """
    n = len(data)
    if n <= 256:
        return (_adler32(data) & 0xFFFF) - 1
    view = memoryview(data)
    total = 0
    for i in range(0, n, 256):
        total += (_adler32(view[i:i + 256]) & 0xFFFF) - 1
    return total


_DIGIT_SUMS = [byte_sum(b"%d\x01" % n) for n in range(10_000)]   # of "<BodyLength><SOH>"

_ts_cache = [-1, ""]
_ms_cache = [-1, ""]


def utc_timestamp(now: float) -> str:
    """YYYYMMDD-HH:MM:SS.sss (UTC, millisecond precision); formatted once per millisecond."""
    ms_total = int(round(now * 1000))
    if _ms_cache[0] == ms_total:
        return _ms_cache[1]
    sec, ms = divmod(ms_total, 1000)
    if _ts_cache[0] != sec:
        _ts_cache[0] = sec
        _ts_cache[1] = time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(sec))
    text = "%s.%03d" % (_ts_cache[1], ms)
    _ms_cache[0], _ms_cache[1] = ms_total, text
    return text


_TS = re.compile(r"(\d{4})(\d{2})(\d{2})-(\d{2}):(\d{2}):(\d{2})(?:\.(\d{3}|\d{6}|\d{9}))?\Z", re.ASCII)


_ts_parsed: dict[str, Optional[float]] = {}


def parse_utc_timestamp(text: str) -> Optional[float]:
    """Seconds since the epoch for a FIX UTCTimestamp, or None if malformed (memoised: the
    same SendingTime arrives many times a second)."""
    try:
        return _ts_parsed[text]
    except KeyError:
        pass
    if len(_ts_parsed) > 4096:
        _ts_parsed.clear()
    value = _ts_parsed[text] = _parse_utc_timestamp(text)
    return value


def _parse_utc_timestamp(text: str) -> Optional[float]:
    m = _TS.match(text)
    if not m:
        return None
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and s <= 60):
        return None
    frac = m.group(7)
    try:
        base = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
    except (ValueError, OverflowError):
        return None
    return base + (int(frac) / 10 ** len(frac) if frac else 0.0)


# Text that is not plain ASCII travels as FIX 4.4 prescribes: the encoded bytes in the
# EncodedText-style data field that follows its length field, MessageEncoding (347) in the
# header names the encoding, and the plain field carries an ASCII rendering for engines that
# ignore the encoded one. plain tag -> (length tag, data tag).
ENCODED_FIELDS = {58: (354, 355), 107: (350, 351)}   # Text, SecurityDesc
MESSAGE_ENCODING = 347
WIRE_ENCODING = "UTF-8"
_ENCODED_DATA_TAGS = frozenset(data for _, data in ENCODED_FIELDS.values())
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _escape_controls(text: str) -> str:
    """Control characters as backslash escapes: a SOH can never end a field early."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def ascii_rendering(text: str) -> str:
    """`text` as printable ASCII: control characters and non-ASCII as backslash escapes."""
    if text.isascii() and text.isprintable():
        return text
    return _escape_controls(text).encode("ascii", "backslashreplace").decode("ascii")


def text_fields(tag: int, text: str) -> list[tuple[int, str]]:
    """The fields that carry human text under `tag` (Text 58 or SecurityDesc 107).

    Printable ASCII: the field alone. Anything else (Chinese, say): the field as an ASCII
    rendering, then the encoded length and data fields holding the UTF-8 bytes (as latin-1
    str, like every value here). A message holding these needs MessageEncoding in its header:
    pass its fields through `declare_encoding`. Control characters are escaped in both forms.
    """
    if text.isascii() and text.isprintable():
        return [(tag, text)]
    length_tag, data_tag = ENCODED_FIELDS[tag]
    data = _escape_controls(text).encode("utf-8")
    return [(tag, ascii_rendering(text)), (length_tag, str(len(data))),
            (data_tag, data.decode("latin-1"))]


def declare_encoding(fields: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """`fields` plus MessageEncoding 347=UTF-8 (a header field: the session puts it in the
    header) when an encoded data field is among them and 347 is not."""
    tags = {tag for tag, _ in fields}
    if tags & _ENCODED_DATA_TAGS and MESSAGE_ENCODING not in tags:
        fields.append((MESSAGE_ENCODING, WIRE_ENCODING))
    return fields


def read_text(fields, tag: int = 58) -> Optional[str]:
    """The human text of a received message under `tag` (Text or SecurityDesc): its encoded
    form decoded when present (MessageEncoding 347, UTF-8 if absent), else the plain field."""
    values = dict(reversed(list(fields)))
    data_tag = ENCODED_FIELDS[tag][1]
    data = values.get(data_tag)
    if data is not None:
        encoding = values.get(MESSAGE_ENCODING) or WIRE_ENCODING
        try:
            return data.encode("latin-1").decode(encoding, "replace")
        except (LookupError, UnicodeEncodeError):   # an unknown encoding, or not wire bytes
            pass
    return values.get(tag)


# Fields whose values never appear in a log or an error message: every password field of the
# FIX 4.4 dictionary (Password 554, NewPassword 925; a test checks the dictionary) and RawData
# (96), which some venues use for logon credentials.
SECRET_TAGS = frozenset((554, 925, 96))
REDACTED = "***"
# a secret tag's "tag=" not preceded by a digit, then its value up to the next SOH: also inside
# a garbled frame whose SOH before the tag is missing (over-redacting a Text is harmless)
_SECRET_VALUE = re.compile(r"(?<![0-9])(%s)=[^\x01]*" % "|".join(map(str, sorted(SECRET_TAGS))))


def redacted(fields: Iterable[tuple[int, str]]) -> list[tuple[int, str]]:
    """(tag, value) fields with the values of SECRET_TAGS replaced by ***."""
    return [(tag, REDACTED if tag in SECRET_TAGS else value) for tag, value in fields]


def pretty(raw: bytes) -> str:
    """A frame (or any bytes that claim to be one) for logs and error messages: SOH shown as
    |, the values of SECRET_TAGS as ***, in a garbled frame too. Every log line that shows
    received or sent bytes goes through here."""
    text = _SECRET_VALUE.sub(r"\1=" + REDACTED, raw.decode("latin-1"))
    return text.replace("\x01", "|")
