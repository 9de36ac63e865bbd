"""The flow generator: determinism, realism knobs, validity of prices, invalid shares."""
from __future__ import annotations

import collections

import numpy as np
import orjson
import pytest

from ccerx.engine.formats.binary import binary_to_ndjson, iter_flow_commands
from ccerx.benchmarks.flows import FlowGenerator, FlowParams, accounts_file, write_flow
from ccerx.engine.formats.config import load_accounts
from ccerx.engine.core.events import OrderRejected, TradeExecuted
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.core.types import DEFAULT_INSTRUMENTS, PRICE_UNITS_PER_CNY
from ccerx.scripts.ccerx import main

SPECS = {s.symbol: s for s in DEFAULT_INSTRUMENTS}


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    path = tmp_path_factory.mktemp("flow") / "flow.ndjson"
    write_flow(path, 11, 30_000)
    return path


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, flow):
    again = tmp_path / "again.ndjson"
    write_flow(again, 11, 30_000)
    assert again.read_bytes() == flow.read_bytes()
    other = tmp_path / "other.ndjson"
    write_flow(other, 12, 30_000)
    assert other.read_bytes() != flow.read_bytes()


def test_exact_count_and_prefix_property(tmp_path, flow):
    lines = flow.read_bytes().splitlines()
    assert len(lines) == 30_000
    short = tmp_path / "short.ndjson"
    write_flow(short, 11, 1_234)
    assert short.read_bytes().splitlines() == lines[:1_234]


def test_binary_output_is_the_same_flow(tmp_path, flow):
    binary = tmp_path / "flow.npz"
    write_flow(binary, 11, 30_000)
    back = tmp_path / "back.ndjson"
    binary_to_ndjson(binary, back)
    assert back.read_bytes() == flow.read_bytes()


def test_mix_prices_and_sizes_look_like_a_market(flow):
    ops = collections.Counter()
    sizes, ts = [], []
    for line in flow.read_bytes().splitlines():
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            ops["broken"] += 1
            continue
        if not isinstance(obj, dict):
            ops["not_object"] += 1
            continue
        op = obj.get("op")
        ops[op] += 1
        if "ts" in obj:
            ts.append(obj["ts"])
        if op == "new" and obj.get("instrument") in SPECS and obj.get("type") == "market":
            ops["market"] += 1
        if op == "new" and type(obj.get("qty")) is int and obj["qty"] > 0:
            sizes.append(obj["qty"])
    total = sum(v for k, v in ops.items() if k not in ("market",))
    assert 0.45 < ops["new"] / total < 0.8
    assert 0.15 < ops["cancel"] / total < 0.5
    assert 0.01 < ops["amend"] / total < 0.1
    assert 0.02 < ops["market"] / ops["new"] < 0.12
    assert ops["replace"] + ops["broken"] + ops["not_object"] > 0     # malformed lines present
    assert ts == sorted(ts)                                           # time ordered
    sizes = np.array(sizes)
    assert np.median(sizes) < 200 < 5_000 < sizes.max()               # heavy tail
    assert sizes.max() <= 99_999 + 1_000


def test_valid_prices_are_inside_the_band_and_near_the_reference(tmp_path):
    path = tmp_path / "clean.ndjson"
    write_flow(path, 5, 20_000, FlowParams(invalid_share=0.0))
    for line in path.read_bytes().splitlines():
        obj = orjson.loads(line)
        if "price" in obj:
            spec = SPECS[obj.get("instrument", "CCER-AFF")] if obj["op"] == "new" else None
            units = round(float(obj["price"]) * 100) * (PRICE_UNITS_PER_CNY // 100)
            assert 62 * PRICE_UNITS_PER_CNY * 0.9 - 1 <= units <= 95 * PRICE_UNITS_PER_CNY * 1.1 + 1
            if spec is not None:
                ticks = units // spec.tick_units
                assert spec.min_ticks <= ticks <= spec.max_ticks
    ex = Exchange()
    rejects = collections.Counter()
    for command in iter_flow_commands(path):
        for event in ex.apply(command):
            if type(event) is OrderRejected:
                rejects[event.reason.value] += 1
    # without invalid commands, the only rejects are late cancels/amends of filled orders
    assert set(rejects) <= {"order_not_resting", "qty_not_above_filled"}


def test_invalid_commands_cover_every_kind(flow):
    ex = Exchange()
    rejects = collections.Counter()
    trades = 0
    for command in iter_flow_commands(flow):
        for event in ex.apply(command):
            if type(event) is OrderRejected:
                rejects[event.reason.value] += 1
            elif type(event) is TradeExecuted:
                trades += 1
    ex.check()
    for reason in ("off_tick", "price_out_of_band", "order_not_resting", "unknown_instrument",
                   "duplicate_order_id", "malformed"):
        assert rejects[reason] > 0, reason
    assert rejects["invalid_qty"] + rejects["qty_above_max"] > 0
    assert 0.03 < trades / 30_000 < 0.4


def test_hawkes_clusters_arrivals():
    def dispersion(branching):
        gen = FlowGenerator(3, FlowParams(hawkes_branching=branching, invalid_share=0.0))
        rows = next(gen.generate(20_000)).rows
        news = rows[rows["op"] == 1]["ts"].astype(np.int64)
        counts = np.bincount((news - news[0]) // 20_000_000)[:-1]   # per 20 ms window
        return counts.var() / counts.mean()      # index of dispersion: 1 for Poisson
    assert 0.7 < dispersion(0.0) < 1.4
    assert dispersion(0.7) > 3


def test_params_are_validated():
    with pytest.raises(ValueError):
        FlowParams(hawkes_branching=1.0)
    with pytest.raises(ValueError):
        FlowParams(instrument_weights=(1.0,))


def test_cli_writes_flow_and_funded_accounts(tmp_path, capsys):
    out, acc = tmp_path / "f.ndjson", tmp_path / "accounts.json"
    assert main(["gen-flow", "--seed", "4", "--commands", "3000", "--out", str(out),
                 "--accounts-out", str(acc), "--param", "lifetime_s=2.0"]) == 0
    assert len(out.read_bytes().splitlines()) == 3000
    accounts = load_accounts(acc)
    assert len(accounts.by_id) == FlowParams().accounts
    ex = Exchange(accounts=accounts)
    rejects = collections.Counter()
    for command in iter_flow_commands(out):
        for event in ex.apply(command):
            if type(event) is OrderRejected:
                rejects[event.reason.value] += 1
    ex.check()
    assert rejects["insufficient_funds"] == rejects["insufficient_credits"] == 0
    assert main(["gen-flow", "--seed", "4", "--commands", "10", "--out", str(out),
                 "--param", "nonsense=1"]) == 2
    assert accounts_file()["accounts"][0]["account"] == "ACC0001"
