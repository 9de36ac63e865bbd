"""The binary flow format: lossless both ways with NDJSON, same commands as parse_command."""
from __future__ import annotations

import numpy as np
import pytest

from ccerx.engine.core.types import format_price_units
from ccerx.engine.formats.binary import (RAW, FlowFile, binary_to_ndjson, iter_flow_commands,
                                         ndjson_to_binary)
from ccerx.benchmarks.flows import write_flow
from ccerx.engine.formats.ndjson import parse_command
from ccerx.scripts.ccerx import main

# Lines the columns can hold, and lines they cannot (kept verbatim in the raw side table).
ODD_LINES = [
    b'{"op":"new","ts":1,"order_id":"a1","account":"A","instrument":"CCER-AFF","side":"buy","type":"limit","price":"62.00","qty":10}',
    b'{"op":"new","order_id":"a2","account":"A","instrument":"CCER-AFF","side":"sell","price":"62.005","qty":10}',
    b'{"op":"new","ts":2,"order_id":"a3","account":"A","instrument":"CCER-AFF","side":"buy","type":"market","tif":"fok","qty":5}',
    b'{"op":"amend","order_id":"a1","price":"61.99"}',
    b'{"op":"amend","ts":3,"order_id":"a1","qty":0}',
    b'{"op":"cancel","order_id":"a1"}',
    b'{"op":"eod","ts":99}',
    b'{"op":"new","ts":4,"order_id":"q\\"uote\\\\","account":"\xe7\xa2\xb3","instrument":"CCER-SOL","side":"buy","type":"limit","price":"-1.00","qty":-5}',
    b'',                                                        # blank line
    b'   ',                                                     # whitespace only
    b'{"op":"new","ts":5,"order_id":"a4","account":"A","instrument":"CCER-AFF","side":"buy","type":"limit","price":"62.0100","qty":10}',
    b'{"op": "cancel", "order_id": "a4"}',                      # other spacing
    b'{"op":"new","ts":6,"order_id":"a5","account":"A","instrument":"CCER-AFF","side":"buy","type":"limit","price":"62.01","qty":1.5}',
    b'{"op":"new","ts":7,"order_id":"a6","account":"A","instrument":"CCER-AFF","side":"buy","type":"limit","price":"62.01","qty":true}',
    b'{"op":"new","ts":8,"order_id":"a7","account":"A","instrument":"CCER-AFF","side":"hold","type":"limit","price":"62.01","qty":1}',
    b'{"op":"new","ts":9,"order_id":7,"account":"A","instrument":"CCER-AFF","side":"buy","price":"62.01","qty":1}',
    b'{"op":"new","ts":10,"order_id":"a8","account":"A","instrument":"CCER-AFF","side":"buy","price":62.01,"qty":1}',
    b'{"op":"new","ts":11,"order_id":"a9","account":"A","instrument":"CCER-AFF","side":"buy","price":"62.01","qty":1,"extra":1}',
    b'{"op":"new","ts":12,"order_id":"a10","account":"A","instrument":"CCER-AFF","side":"buy","price":"62.01","qty":99999999999999999999999}',
    b'{"op":"cancel","ts":-1,"order_id":"a1"}',
    b'{"op":"instrument","symbol":"CCER-NEW","tick":"0.01","lot":1,"max_qty":99999,"ref_price":"50.00","band_pct":10}',
    b'{"op":"replace","order_id":"a1"}',
    b'{"op":"new","ts":13,"order_id":"a11"',                   # cut off
    b'[1,2,3]',
    b'not json at all \xff\xfe',                                # invalid UTF-8
    b'{"op":"cancel","order_id":"a2"}\r',                       # CRLF line ending
    b'{"op":"new","ts":14,"order_id":"a12","account":"B","instrument":"CCER-XXX","side":"buy","type":"limit","price":"62.01","qty":1}',
]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A generated flow (with its invalid commands) followed by the odd lines, no final newline."""
    d = tmp_path_factory.mktemp("mixed")
    gen = d / "gen.ndjson"
    write_flow(gen, 21, 8_000)
    path = d / "mixed.ndjson"
    path.write_bytes(gen.read_bytes() + b"\n".join(ODD_LINES))
    return path


def test_ndjson_binary_ndjson_is_byte_identical(tmp_path, mixed):
    binary, back = tmp_path / "m.npz", tmp_path / "back.ndjson"
    rows = ndjson_to_binary(mixed, binary)
    assert rows == 8_000 + len(ODD_LINES)
    binary_to_ndjson(binary, back)
    assert back.read_bytes() == mixed.read_bytes()


def test_trailing_newline_and_empty_file(tmp_path):
    for data in (b"", b"\n", b"\n\n", b'{"op":"eod"}\n', b'{"op":"eod"}', b"x\n\ny"):
        src, binary, back = tmp_path / "s.ndjson", tmp_path / "s.npz", tmp_path / "b.ndjson"
        src.write_bytes(data)
        ndjson_to_binary(src, binary)
        binary_to_ndjson(binary, back)
        assert back.read_bytes() == data


def test_columns_hold_canonical_lines_and_raw_holds_the_rest(tmp_path, mixed):
    binary = tmp_path / "m.npz"
    ndjson_to_binary(mixed, binary)
    with FlowFile(binary) as flow:
        rows = flow.read_all_rows()
        raw_count = len(flow.tables["raw"])
    tail = rows[8_000:]
    columnar = [i for i, r in enumerate(tail) if r["op"] != RAW]
    assert columnar == [0, 1, 2, 3, 4, 5, 6, 7, len(ODD_LINES) - 1]   # canonical ones only
    assert raw_count == int((rows["op"] == RAW).sum())
    assert (rows[:8_000]["op"] != RAW).mean() > 0.99


def test_binary_commands_equal_parse_command(tmp_path, mixed):
    binary = tmp_path / "m.npz"
    ndjson_to_binary(mixed, binary)
    expected = [parse_command(line) for line in mixed.read_bytes().split(b"\n") if line.strip()]
    assert list(iter_flow_commands(binary)) == expected
    # chunk boundaries do not matter
    with FlowFile(binary) as flow:
        assert [c for chunk in flow.iter_command_chunks(777) for c in chunk] == expected


def test_binary_ndjson_binary_gives_the_same_arrays(tmp_path, mixed):
    first, text, second = tmp_path / "1.npz", tmp_path / "t.ndjson", tmp_path / "2.npz"
    ndjson_to_binary(mixed, first)
    binary_to_ndjson(first, text)
    ndjson_to_binary(text, second)
    with FlowFile(first) as a, FlowFile(second) as b:
        assert np.array_equal(a.read_all_rows(), b.read_all_rows())
        for name in a.tables:
            assert a.tables[name].raw == b.tables[name].raw
            assert np.array_equal(a.tables[name].offsets, b.tables[name].offsets)


def test_price_text_is_canonical():
    assert format_price_units(62_000_000) == "62.00"
    assert format_price_units(62_005_000) == "62.005"
    assert format_price_units(62_000_001) == "62.000001"
    assert format_price_units(-1_000_000) == "-1.00"
    assert format_price_units(0) == "0.00"


def test_replay_reads_binary_by_suffix_with_identical_events(tmp_path, mixed):
    binary = tmp_path / "m.npz"
    assert main(["convert", str(mixed), str(binary)]) == 0
    ev_text, ev_bin = tmp_path / "t.ev", tmp_path / "b.ev"
    book_text, book_bin = tmp_path / "t.book", tmp_path / "b.book"
    assert main(["replay", str(mixed), "--events-out", str(ev_text), "--book-out",
                 str(book_text)]) == 0
    assert main(["replay", str(binary), "--events-out", str(ev_bin), "--book-out",
                 str(book_bin)]) == 0
    assert ev_text.read_bytes() == ev_bin.read_bytes()
    assert book_text.read_bytes() == book_bin.read_bytes()
    assert len(ev_text.read_bytes().splitlines()) > 8_000


def test_convert_and_replay_refuse_bad_input(tmp_path, capsys):
    bogus = tmp_path / "bogus.npz"
    bogus.write_bytes(b"not a zip")
    assert main(["replay", str(bogus)]) == 2
    assert "not a binary flow" in capsys.readouterr().err
    a, b = tmp_path / "a.ndjson", tmp_path / "b.ndjson"
    a.write_bytes(b'{"op":"eod"}\n')
    assert main(["convert", str(a), str(b)]) == 2
    assert main(["convert", str(tmp_path / "missing.ndjson"), str(bogus)]) == 2
