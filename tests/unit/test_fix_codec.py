"""Codec and data dictionary, without a network; simplefix is the independent codec."""
from __future__ import annotations

import pytest
import simplefix

from ccerx.gateway.fix import codec, dictionary
from ccerx.gateway.fix.dictionary import Reason, SessionReject


def simple(*fields, header=()) -> bytes:
    """A message framed by simplefix (so BodyLength and CheckSum are not ours)."""
    m = simplefix.FixMessage()
    m.append_pair(8, "FIX.4.4", header=True)
    for tag, value in header:
        m.append_pair(tag, value, header=True)
    for tag, value in fields:
        m.append_pair(tag, value)
    return m.encode()


HB = simple(header=[(35, "0"), (34, 2), (49, "TW44"), (52, "20240102-03:04:05.678"), (56, "ISLD")])


# ---------------------------------------------------------------------------------- framing
def test_framer_reassembles_a_stream_fed_byte_by_byte():
    stream = b"junk before" + HB + HB
    framer = codec.Framer()
    frames = []
    for i in range(len(stream)):
        framer.feed(stream[i:i + 1])
        while (frame := framer.next_frame()) is not None:
            frames.append(frame)
    assert frames == [HB, HB]
    assert codec.parse(frames[0])[2] == (35, "0")


def test_framer_with_a_too_long_body_length_swallows_the_next_message_like_quickfix():
    bad = HB.replace(b"9=51\x01", b"9=61\x01")
    assert bad != HB
    framer = codec.Framer()
    framer.feed(bad + HB + HB)
    first = framer.next_frame()
    assert first == bad + HB                      # one frame, which fails validation
    with pytest.raises(codec.GarbledMessage):
        codec.parse(first)
    assert framer.next_frame() == HB


def test_framer_rejects_a_body_length_beyond_the_limit_and_stays_bounded():
    framer = codec.Framer(max_message_size=1000)
    framer.feed(b"8=FIX.4.4\x019=1000000\x0135=0\x01")
    with pytest.raises(codec.FramingError):
        framer.next_frame()
    framer = codec.Framer(max_message_size=1000)
    framer.feed(b"x" * 5000)
    assert framer.next_frame() is None
    assert len(framer.buffer) <= 1
    framer.feed(b"8=FIX.4.4" + b"y" * 2000)
    with pytest.raises(codec.FramingError):
        framer.next_frame()


def test_framer_rejects_a_non_numeric_body_length():
    framer = codec.Framer()
    framer.feed(b"8=FIX.4.4\x019=abc\x0135=0\x0110=000\x01")
    with pytest.raises(codec.FramingError):
        framer.next_frame()


# ---------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("mangle, why", [
    (lambda m: m[:-4] + b"%03d\x01" % ((int(m[-4:-1]) + 1) % 256), "checksum"),
    (lambda m: m.replace(b"\x0149=", b"\x014x9="), "tag"),
    (lambda m: m.replace(b"\x0156=ISLD", b"\x0156ISLD"), "equal sign"),
    (lambda m: m.replace(b"9=", b"9=0", 1), "body length"),
])
def test_parse_rejects_garbled_frames(mangle, why):
    with pytest.raises(codec.GarbledMessage):
        codec.parse(mangle(HB))


def test_parse_requires_8_9_35_first():
    raw = simple((34, 2), header=[(35, "0")])
    fields = codec.parse(raw)
    assert [t for t, _ in fields[:3]] == [8, 9, 35]
    swapped = b"8=FIX.4.4\x019=5\x0134=2\x0135=0\x01"
    raw = swapped + b"10=%03d\x01" % (sum(swapped) % 256)
    with pytest.raises(codec.GarbledMessage):
        codec.parse(raw)


def test_encode_is_read_back_by_simplefix_with_exact_length_and_checksum():
    raw = codec.encode([(34, "7"), (49, "CCERX"), (52, codec.utc_timestamp(1700000000.25)), (56, "B1")],
                       [(11, "ord-1"), (58, "caf\xe9 bytes")], "D")
    parser = simplefix.FixParser()
    parser.append_buffer(raw)
    msg = parser.get_message()
    assert msg.get(35) == b"D" and msg.get(11) == b"ord-1" and msg.get(58) == "caf\xe9 bytes".encode("latin-1")
    body_start = raw.index(b"35=")
    trailer = raw.rindex(b"10=")
    assert int(msg.get(9)) == trailer - body_start
    assert int(msg.get(10)) == sum(raw[:trailer]) % 256
    assert codec.parse(raw)[3:5] == [(34, "7"), (49, "CCERX")]


def test_timestamps_have_milliseconds_and_round_trip():
    text = codec.utc_timestamp(1700000000.123)
    assert text == "20231114-22:13:20.123"
    assert codec.parse_utc_timestamp(text) == pytest.approx(1700000000.123)
    assert codec.parse_utc_timestamp("20231114-22:13:20") == 1700000000
    for bad in ("20231314-22:13:20", "2023111-22:13:20", "20231114-25:13:20", "20231114-22:13:20.1"):
        assert codec.parse_utc_timestamp(bad) is None


# ---------------------------------------------------------------------------------- dictionary
def order(*extra, msg_type="D"):
    header = [(8, "FIX.4.4"), (9, "0"), (35, msg_type), (34, "2"), (49, "B"), (52, "20240102-03:04:05"),
              (56, "X")]
    body = [(11, "c1"), (40, "2"), (54, "1"), (60, "20240102-03:04:05")]
    return header + body + list(extra) + [(10, "000")]


# (extra fields on a NewOrderSingle, expected reason, expected tag); a new case is a new row
REJECTS = [
    ([(38, "+5")], Reason.INCORRECT_DATA_FORMAT, 38),
    ([(44, "1.2.3")], Reason.INCORRECT_DATA_FORMAT, 44),
    ([(59, "Z")], Reason.VALUE_IS_INCORRECT, 59),
    ([(54, "1")], Reason.TAG_APPEARS_MORE_THAN_ONCE, 54),
    ([(1, "")], Reason.TAG_SPECIFIED_WITHOUT_A_VALUE, 1),
    ([(4999, "x")], Reason.INVALID_TAG_NUMBER, 4999),
    ([(112, "x")], Reason.TAG_NOT_DEFINED_FOR_MESSAGE_TYPE, 112),
    ([(453, "2"), (448, "P1"), (447, "D"), (452, "1")], Reason.INCORRECT_NUMINGROUP_COUNT, 453),
    ([(453, "1"), (448, "P1"), (447, "Q")], Reason.VALUE_IS_INCORRECT, 447),
    ([(97, "Y")], Reason.TAG_SPECIFIED_OUT_OF_REQUIRED_ORDER, 97),
]


@pytest.mark.parametrize("extra, reason, tag", REJECTS)
def test_validation_finds_the_first_problem(extra, reason, tag):
    with pytest.raises(SessionReject) as err:
        dictionary.validate(order(*extra))
    assert (err.value.reason, err.value.tag) == (reason, tag)


def test_validation_accepts_a_good_order_with_a_group_and_reports_required_fields():
    st = dictionary.validate(order((453, "2"), (448, "P1"), (447, "D"), (452, "1"), (448, "P2"), (447, "D")))
    assert [len(i.fields) for i in st.groups[453]] == [3, 2]
    missing = [f for f in order() if f[0] != 11]
    with pytest.raises(SessionReject) as err:
        dictionary.validate(missing)
    assert (err.value.reason, err.value.tag) == (Reason.REQUIRED_TAG_MISSING, 11)
    with pytest.raises(SessionReject) as err:
        dictionary.validate(order(msg_type="ZZ"))
    assert err.value.reason == Reason.INVALID_MSGTYPE


def test_canonical_body_sorts_top_level_fields_and_keeps_groups_whole():
    body = [(60, "t"), (11, "c"), (453, "2"), (448, "P1"), (447, "D"), (448, "P2"), (1, "A")]
    assert dictionary.canonical_body("D", body) == [
        (1, "A"), (11, "c"), (60, "t"), (453, "2"), (448, "P1"), (447, "D"), (448, "P2")]
