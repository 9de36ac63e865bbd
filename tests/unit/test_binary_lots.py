"""The binary flow format and the commands of credits as lots (issue 11).

What binary is for (engine/formats/binary.py): replaying big flows fast and *losslessly* —
every NDJSON line comes back byte for byte and replays to the same commands. So the new
commands are not refused: lot deposits, listing instruments, retirements and targeted takes
are rare lines kept verbatim (the raw side table, parsed as `ccerx replay` parses them), and
the take order, frequent in a lots flow, is held in the columns (type code "take"). A file
holding take rows is format version 2, so a reader that knows only version 1 (where an
unknown type code would read as "limit") refuses it instead of misreading it; a file without
takes stays version 1.
"""
from __future__ import annotations

import json

import pytest

from ccerx.benchmarks.lots_flows import (LotFlowParams, write_lot_accounts, write_lot_flow)
from ccerx.engine.formats.binary import (RAW, FlowFile, binary_to_ndjson, iter_flow_commands,
                                         ndjson_to_binary)
from ccerx.engine.formats.ndjson import parse_command
from ccerx.scripts.ccerx import main


@pytest.fixture(scope="module")
def lots_flow(tmp_path_factory):
    d = tmp_path_factory.mktemp("lots")
    flow = d / "flow.ndjson"
    write_lot_flow(flow, 3, 3_000, LotFlowParams(rules="cbeex-2023"))
    write_lot_accounts(d / "accounts.json")
    return flow


def test_a_lots_flow_goes_to_binary_and_back_byte_for_byte(tmp_path, lots_flow):
    binary, back = tmp_path / "flow.npz", tmp_path / "back.ndjson"
    assert ndjson_to_binary(lots_flow, binary) == 3_000
    binary_to_ndjson(binary, back)
    assert back.read_bytes() == lots_flow.read_bytes()
    lines = lots_flow.read_bytes().splitlines()
    assert list(iter_flow_commands(binary)) == [parse_command(line) for line in lines]


def test_takes_are_columns_the_rare_lot_commands_are_kept_verbatim(tmp_path, lots_flow):
    binary = tmp_path / "flow.npz"
    ndjson_to_binary(lots_flow, binary)
    lines = [json.loads(line) for line in lots_flow.read_bytes().splitlines()]
    with FlowFile(binary) as flow:
        rows = flow.read_all_rows()
        assert flow.meta["version"] == 2
    is_raw = rows["op"] == RAW
    for line, raw in zip(lines, is_raw.tolist()):
        targeted_take = line.get("type") == "take" and "target" in line
        rare = line["op"] in ("deposit", "instrument", "retire") or targeted_take
        assert raw == rare, line
    assert sum(1 for line in lines if line.get("type") == "take" and "target" not in line) > 100


def test_a_flow_without_takes_stays_version_1(tmp_path):
    flow = tmp_path / "flow.ndjson"
    flow.write_text('{"op":"new","ts":1,"order_id":"a","account":"A","instrument":"CCER-AFF",'
                    '"side":"buy","type":"limit","price":"62.00","qty":1}\n')
    ndjson_to_binary(flow, tmp_path / "flow.npz")
    with FlowFile(tmp_path / "flow.npz") as binary:
        assert binary.meta["version"] == 1


def test_replay_of_the_binary_is_the_replay_of_the_ndjson_under_cbeex_2023(tmp_path, lots_flow,
                                                                         capsys):
    accounts = lots_flow.parent / "accounts.json"
    assert main(["convert", str(lots_flow), str(tmp_path / "flow.npz")]) == 0
    hashes = []
    for name in ("flow.npz", str(lots_flow)):
        events = tmp_path / f"{len(hashes)}.events"
        capsys.readouterr()
        assert main(["replay", str(tmp_path / name), "--accounts", str(accounts), "--rules",
                     "cbeex-2023", "--events-out", str(events), "--json"]) == 0
        hashes.append((json.loads(capsys.readouterr().out)["state_hash"], events.read_bytes()))
    assert hashes[0] == hashes[1]
    assert b'"not_permitted"' in hashes[0][1] and b'"retired"' in hashes[0][1]
