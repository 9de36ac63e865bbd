"""The FIX 4.4 data dictionary subset we validate against, and the session reject reasons.

Data (field numbers and types, enums, message layouts) comes from fix44_spec.py, generated
from the FIX 4.4 specification by gen_spec.py. This module turns it into lookup tables and
validates a parsed message the way a QuickFIX acceptor does, in the same order, so the first
problem found (and therefore the Reject sent) is the same:

    1. structure: a header field after the body, or a body field after the trailer (14)
    2. MsgType defined in FIX 4.4 (11)
    3. required fields: header, trailer, body, then inside each group instance (1)
    4. every field of the header, trailer and body, in tag order: repeated tag (13), empty
       value (4), data format (6), enum value (5), tag defined in FIX 4.4 (0), tag defined
       for this message type (2), NumInGroup equal to the group instances present (16)

A problem is raised as SessionReject(reason, tag); the session turns it into a Reject (3).
Message types that FIX 4.4 defines but this gateway does not model are checked for
header, trailer and field formats only; the application answers them (BusinessMessageReject).
"""
from __future__ import annotations

import re
from enum import IntEnum
from typing import Optional

from ccerx.gateway.fix import fix44_spec as spec


class Reason(IntEnum):
    """SessionRejectReason (373)."""
    INVALID_TAG_NUMBER = 0
    REQUIRED_TAG_MISSING = 1
    TAG_NOT_DEFINED_FOR_MESSAGE_TYPE = 2
    UNDEFINED_TAG = 3
    TAG_SPECIFIED_WITHOUT_A_VALUE = 4
    VALUE_IS_INCORRECT = 5
    INCORRECT_DATA_FORMAT = 6
    COMPID_PROBLEM = 9
    SENDINGTIME_ACCURACY_PROBLEM = 10
    INVALID_MSGTYPE = 11
    TAG_APPEARS_MORE_THAN_ONCE = 13
    TAG_SPECIFIED_OUT_OF_REQUIRED_ORDER = 14
    INCORRECT_NUMINGROUP_COUNT = 16
    OTHER = 99


# The wording QuickFIX uses in Text (58); counterparties' tooling greps for it.
REASON_TEXT = {
    Reason.INVALID_TAG_NUMBER: "Invalid tag number",
    Reason.REQUIRED_TAG_MISSING: "Required tag missing",
    Reason.TAG_NOT_DEFINED_FOR_MESSAGE_TYPE: "Tag not defined for this message type",
    Reason.TAG_SPECIFIED_WITHOUT_A_VALUE: "Tag specified without a value",
    Reason.VALUE_IS_INCORRECT: "Value is incorrect (out of range) for this tag",
    Reason.INCORRECT_DATA_FORMAT: "Incorrect data format for value",
    Reason.COMPID_PROBLEM: "CompID problem",
    Reason.SENDINGTIME_ACCURACY_PROBLEM: "SendingTime accuracy problem",
    Reason.INVALID_MSGTYPE: "Invalid MsgType",
    Reason.TAG_APPEARS_MORE_THAN_ONCE: "Tag appears more than once",
    Reason.TAG_SPECIFIED_OUT_OF_REQUIRED_ORDER: "Tag specified out of required order",
    Reason.INCORRECT_NUMINGROUP_COUNT: "Incorrect NumInGroup count for repeating group",
}


class SessionReject(Exception):
    """A message that must be answered by a session-level Reject (3)."""

    def __init__(self, reason: Reason, tag: Optional[int] = None, text: Optional[str] = None):
        super().__init__(text or REASON_TEXT.get(reason, reason.name))
        self.reason = reason
        self.tag = tag
        self.text = text


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------
def _flatten(items) -> set[int]:
    out = set()
    for it in items:
        out.add(it[0])
        if len(it) == 3:
            out |= _flatten(it[2])
    return out


HEADER_TAGS = frozenset(_flatten(spec.HEADER))
TRAILER_TAGS = frozenset(_flatten(spec.TRAILER))
FIELD_TYPES = {tag: ftype for tag, (_, ftype) in spec.FIELDS.items()}
FIELD_NAMES = {tag: name for tag, (name, _) in spec.FIELDS.items()}
ENUMS = {tag: frozenset(values) for tag, values in spec.ENUMS.items()}
MSG_TYPES = spec.MSG_TYPES
ADMIN_MSG_TYPES = frozenset(t for t, (_, cat) in MSG_TYPES.items() if cat == "admin")


class GroupSpec:
    """A repeating group: its delimiter (first field), members and required members."""
    __slots__ = ("count_tag", "delim", "members", "required")

    def __init__(self, count_tag: int, items):
        self.count_tag = count_tag
        self.delim = items[0][0]
        self.members: dict[int, Optional[GroupSpec]] = {}
        self.required: list[int] = []
        for it in items:
            self.members[it[0]] = GroupSpec(it[0], it[2]) if len(it) == 3 else None
            if it[1]:
                self.required.append(it[0])
        self.required.sort()


class MessageSpec:
    __slots__ = ("msg_type", "fields", "required")

    def __init__(self, msg_type: str, items):
        self.msg_type = msg_type
        self.fields: dict[int, Optional[GroupSpec]] = {}
        self.required: list[int] = []
        for it in items:
            self.fields[it[0]] = GroupSpec(it[0], it[2]) if len(it) == 3 else None
            if it[1]:
                self.required.append(it[0])
        self.required.sort()


MESSAGES = {t: MessageSpec(t, items) for t, items in spec.MESSAGES.items()}
HEADER_REQUIRED = sorted(it[0] for it in spec.HEADER if it[1])
TRAILER_REQUIRED = sorted(it[0] for it in spec.TRAILER if it[1])

_FLOAT = re.compile(r"-?(\d+\.?\d*|\.\d+)\Z", re.ASCII)
_TIME = re.compile(r"\d{2}:\d{2}:\d{2}(\.\d{3}|\.\d{6}|\.\d{9})?\Z", re.ASCII)
_DATE = re.compile(r"\d{8}\Z", re.ASCII)
_INT_TYPES = {"INT", "LENGTH", "NUMINGROUP", "SEQNUM", "DAYOFMONTH", "TAGNUM"}
_FLOAT_TYPES = {"FLOAT", "QTY", "PRICE", "PRICEOFFSET", "AMT", "PERCENTAGE"}


def _format_check(ftype: str):
    """A predicate for the data format of a field type, or None when any text is valid."""
    if ftype in _INT_TYPES:
        return lambda v: v.isascii() and (v.isdigit() or (v[:1] == "-" and v[1:].isdigit()))
    if ftype in _FLOAT_TYPES:
        return lambda v: _FLOAT.match(v) is not None
    if ftype == "CHAR":
        return lambda v: len(v) == 1
    if ftype == "BOOLEAN":
        return lambda v: v == "Y" or v == "N"
    if ftype == "UTCTIMESTAMP":
        from ccerx.gateway.fix.codec import parse_utc_timestamp
        return lambda v: parse_utc_timestamp(v) is not None
    if ftype == "UTCTIMEONLY":
        return lambda v: _TIME.match(v) is not None
    if ftype == "UTCDATEONLY":
        return lambda v: _DATE.match(v) is not None
    return None


_FORMAT_CHECKS = {tag: check for tag, ftype in FIELD_TYPES.items()
                  if (check := _format_check(ftype)) is not None}


def valid_format(tag: int, value: str) -> bool:
    check = _FORMAT_CHECKS.get(tag)
    return check is None or check(value)


def valid_value(tag: int, value: str) -> bool:
    allowed = ENUMS.get(tag)
    if allowed is None:
        return True
    if FIELD_TYPES.get(tag) == "MULTIPLEVALUESTRING":
        return all(v in allowed for v in value.split(" "))
    return value in allowed


# ---------------------------------------------------------------------------------------------
# Structure
# ---------------------------------------------------------------------------------------------
class Instance:
    """One instance of a repeating group: its fields and nested groups."""
    __slots__ = ("fields", "groups")

    def __init__(self):
        self.fields: list[tuple[int, str]] = []
        self.groups: dict[int, list[Instance]] = {}


def _read_group(fields, i: int, group: GroupSpec) -> tuple[list[Instance], int]:
    instances: list[Instance] = []
    current: Optional[Instance] = None
    seen: set[int] = set()
    members = group.members
    n = len(fields)
    while i < n:
        tag = fields[i][0]
        if tag == group.delim or (tag in members and (current is None or tag in seen)):
            current = Instance()
            instances.append(current)
            seen = set()
        elif tag not in members:
            break
        current.fields.append(fields[i])
        seen.add(tag)
        i += 1
        sub = members[tag]
        if sub is not None:
            current.groups[tag], i = _read_group(fields, i, sub)
    return instances, i


class Structure:
    """A message split QuickFIX-style into header, body (with groups) and trailer."""
    __slots__ = ("header", "body", "trailer", "groups", "out_of_order")

    def __init__(self, fields: list[tuple[int, str]], msg_spec: Optional[MessageSpec]):
        self.header: list[tuple[int, str]] = []
        self.body: list[tuple[int, str]] = []
        self.trailer: list[tuple[int, str]] = []
        self.groups: dict[int, list[Instance]] = {}
        self.out_of_order: Optional[int] = None
        section = 0          # 0 header, 1 body, 2 trailer
        i, n = 0, len(fields)
        group_fields = msg_spec.fields if msg_spec else {}
        while i < n:
            tag, value = fields[i]
            i += 1
            if tag in HEADER_TAGS:
                if section != 0 and self.out_of_order is None:
                    self.out_of_order = tag
                self.header.append((tag, value))
            elif tag in TRAILER_TAGS:
                section = 2
                self.trailer.append((tag, value))
            else:
                if section == 2 and self.out_of_order is None:
                    self.out_of_order = tag
                section = 1
                self.body.append((tag, value))
                group = group_fields.get(tag)
                if group is not None:
                    self.groups[tag], i = _read_group(fields, i, group)


_HEADER_RANK = {8: -3, 9: -2, 35: -1}


def _header_order(item):
    tag = item[0]
    return _HEADER_RANK.get(tag, tag)


def _check_fields(fields: list[tuple[int, str]], in_message: Optional[dict], groups: dict) -> None:
    last = None
    formats = _FORMAT_CHECKS
    enums = ENUMS
    for tag, value in fields:
        if tag == last:
            raise SessionReject(Reason.TAG_APPEARS_MORE_THAN_ONCE, tag)
        if value == "":
            raise SessionReject(Reason.TAG_SPECIFIED_WITHOUT_A_VALUE, tag)
        check = formats.get(tag)
        if check is not None and not check(value):
            raise SessionReject(Reason.INCORRECT_DATA_FORMAT, tag)
        if tag in enums and not valid_value(tag, value):
            raise SessionReject(Reason.VALUE_IS_INCORRECT, tag)
        if tag not in FIELD_TYPES:
            raise SessionReject(Reason.INVALID_TAG_NUMBER, tag)
        if in_message is not None:
            if tag not in in_message:
                raise SessionReject(Reason.TAG_NOT_DEFINED_FOR_MESSAGE_TYPE, tag)
            if in_message[tag] is not None and len(groups.get(tag, ())) != int(value):
                raise SessionReject(Reason.INCORRECT_NUMINGROUP_COUNT, tag)
        last = tag


def _check_instances(groups: dict[int, list[Instance]], group_specs: dict) -> None:
    for count_tag, instances in groups.items():
        gspec = group_specs.get(count_tag)
        for inst in instances:
            present = {t for t, _ in inst.fields}
            if gspec is not None:
                for req in gspec.required:
                    if req not in present:
                        raise SessionReject(Reason.REQUIRED_TAG_MISSING, req)
            _check_fields(inst.fields, gspec.members if gspec else None, inst.groups)
            if inst.groups:
                _check_instances(inst.groups, gspec.members if gspec else {})


def validate(fields: list[tuple[int, str]]) -> Structure:
    """Validate a parsed message; return its structure or raise SessionReject."""
    msg_type = fields[2][1] if len(fields) > 2 and fields[2][0] == 35 else ""
    msg_spec = MESSAGES.get(msg_type)
    st = Structure(fields, msg_spec)
    if st.out_of_order is not None:
        raise SessionReject(Reason.TAG_SPECIFIED_OUT_OF_REQUIRED_ORDER, st.out_of_order)
    if msg_type not in MSG_TYPES:
        raise SessionReject(Reason.INVALID_MSGTYPE)
    header_tags = {t for t, _ in st.header}
    for tag in HEADER_REQUIRED:
        if tag not in header_tags:
            raise SessionReject(Reason.REQUIRED_TAG_MISSING, tag)
    trailer_tags = {t for t, _ in st.trailer}
    for tag in TRAILER_REQUIRED:
        if tag not in trailer_tags:
            raise SessionReject(Reason.REQUIRED_TAG_MISSING, tag)
    if msg_spec is not None:
        body_tags = {t for t, _ in st.body}
        for tag in msg_spec.required:
            if tag not in body_tags:
                raise SessionReject(Reason.REQUIRED_TAG_MISSING, tag)
        for count_tag, instances in st.groups.items():
            gspec = msg_spec.fields[count_tag]
            for inst in instances:
                present = {t for t, _ in inst.fields}
                for req in gspec.required:
                    if req not in present:
                        raise SessionReject(Reason.REQUIRED_TAG_MISSING, req)
    _check_fields(sorted(st.header, key=_header_order), None, {})
    _check_fields(st.trailer, None, {})
    _check_fields(sorted(st.body, key=lambda f: f[0]), msg_spec.fields if msg_spec else None, st.groups)
    if st.groups and msg_spec is not None:
        _check_instances(st.groups, msg_spec.fields)
    return st


_shapes: dict[tuple, tuple] = {}
MAX_SHAPES = 1024


def check(fields: list[tuple[int, str]], tags: Optional[tuple] = None) -> None:
    """validate() for the hot path: the same verdict and the same first SessionReject.

    Everything validate() checks except empty values, data formats, enum values and
    NumInGroup counts depends only on the message's MsgType and its sequence of tags (its
    shape). So the first message of a shape that passes validate() leaves a plan: the fields
    that need a value check, in validate()'s order. Later messages of that shape run only
    the plan, O(fields) with no sorting or sets. Shapes with repeating groups (their counts
    depend on values) are never planned; at most MAX_SHAPES shapes are kept, the rest go
    through validate(). `tags` may be passed when the caller has built it already.
    """
    if tags is None:
        tags = tuple([f[0] for f in fields])
    key = (fields[2][1] if len(fields) > 2 and fields[2][0] == 35 else "", tags)
    plan = _shapes.get(key)
    if plan is None:
        st = validate(fields)
        if not st.groups and len(_shapes) < MAX_SHAPES:
            _shapes[key] = _plan(fields, st)
        return
    for i, tag, fmt, enum in plan:
        value = fields[i][1]
        if value == "":
            raise SessionReject(Reason.TAG_SPECIFIED_WITHOUT_A_VALUE, tag)
        if fmt is not None and not fmt(value):
            raise SessionReject(Reason.INCORRECT_DATA_FORMAT, tag)
        if enum and not valid_value(tag, value):
            raise SessionReject(Reason.VALUE_IS_INCORRECT, tag)


def _plan(fields: list[tuple[int, str]], st: Structure) -> tuple:
    """(index, tag, format check, has enum) for every field, in validate()'s check order:
    header sorted as _header_order sorts it, trailer as given, body by tag (stable)."""
    header = [i for i, (t, _) in enumerate(fields) if t in HEADER_TAGS]
    trailer = [i for i, (t, _) in enumerate(fields) if t in TRAILER_TAGS]
    body = [i for i, (t, _) in enumerate(fields) if t not in HEADER_TAGS and t not in TRAILER_TAGS]
    order = (sorted(header, key=lambda i: _header_order(fields[i])) + trailer
             + sorted(body, key=lambda i: fields[i][0]))
    return tuple((i, fields[i][0], _FORMAT_CHECKS.get(fields[i][0]), fields[i][0] in ENUMS)
                 for i in order)


def canonical_body(msg_type: str, body: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The body in QuickFIX's field order: top-level fields by tag, groups kept whole after
    their NumInGroup field (what a QuickFIX application sends when it echoes a message)."""
    msg_spec = MESSAGES.get(msg_type)
    group_fields = msg_spec.fields if msg_spec else {}
    blocks: list[tuple[int, list[tuple[int, str]]]] = []
    i, n = 0, len(body)
    while i < n:
        tag = body[i][0]
        start = i
        i += 1
        group = group_fields.get(tag)
        if group is not None:
            _, i = _read_group(body, i, group)
        blocks.append((tag, body[start:i]))
    blocks.sort(key=lambda b: b[0])
    return [f for _, block in blocks for f in block]
