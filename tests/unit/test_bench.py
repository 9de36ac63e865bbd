"""The bench harness: result shape, end-state check, regression comparison, CLI exit codes.
Speed itself is never asserted here (benchmarks measure it)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from benchmarks.bench import BenchError, compare, latency_summary, run_bench
from benchmarks.flows import write_flow
from engine.commands import CancelOrder
from engine.exchange import Exchange
from engine.replay import replay
from scripts.ccerx import main
from benchmarks.binary import iter_flow_commands

import numpy as np


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "flow.npz"
    write_flow(path, 8, 4_000)
    return path


@pytest.fixture(scope="module")
def result(flow):
    return run_bench(flow, rates=[40_000.0], open_loop_commands=1_500)


def test_result_agrees_with_a_plain_replay(flow, result):
    ex = Exchange()
    stats = replay(ex, iter_flow_commands(flow))
    end = result["end_state"]
    assert end["state_hash"] == ex.state_hash()
    assert end["trades"] == stats.trades and end["rejects"] == stats.rejects
    assert end["events"] == stats.events
    assert result["flow"]["commands"] == 4_000
    assert result["closed_loop"]["commands_per_s"] > 0
    assert sum(1 for _ in result["closed_loop"]["timeline"]) >= 1
    [open_run] = result["open_loop"]
    assert open_run["offered_per_s"] == 40_000.0 and open_run["commands"] == 1_500
    lat = result["service_time"]["latency_ns"]
    assert lat["count"] == 4_000
    assert lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["p99.99"]
    assert result["memory"]["peak_rss_bytes"] > 0


def test_hdr_percentiles_match_the_data():
    lat = np.arange(1, 100_001, dtype=np.int64) * 10     # 10 ns .. 1 ms, uniform
    s = latency_summary(lat)
    assert s["count"] == 100_000 and s["max"] == 1_000_000
    for p, want in ((50, 500_000), (99, 990_000), (99.9, 999_000)):
        assert abs(s[f"p{p:g}"] - want) <= want * 0.001 + 10


def test_fast_wrong_answer_fails(flow):
    class DropsCancels(Exchange):
        def apply(self, command):
            if type(command) is CancelOrder:
                return []
            return super().apply(command)

    made = []

    def factory():   # the first exchange (the closed loop) is wrong, the others honest
        made.append(1)
        return DropsCancels() if len(made) == 1 else Exchange()

    with pytest.raises(BenchError, match="end state differs"):
        run_bench(flow, make_exchange=factory, open_loop=False)


def test_compare_flags_throughput_drop_p99_growth_and_changed_state(result):
    assert compare(result, result, 0.1) == []
    slower = copy.deepcopy(result)
    slower["closed_loop"]["commands_per_s"] = int(result["closed_loop"]["commands_per_s"] * 0.7)
    slower["service_time"]["latency_ns"]["p99"] = result["service_time"]["latency_ns"]["p99"] * 2
    slower["open_loop"][0]["latency_ns"]["p99"] = result["open_loop"][0]["latency_ns"]["p99"] * 2 + 10
    slower["end_state"]["state_hash"] = "0" * 32
    problems = compare(result, slower, 0.1)
    assert len(problems) == 4
    assert "throughput dropped" in problems[0] and "p99 grew" in problems[1]
    assert "different end state" in problems[3]
    assert compare(result, slower, 10.0) == [problems[3]]


def test_cli_writes_report_and_compare_exit_codes(tmp_path, flow, result, capsys):
    out = tmp_path / "out"
    assert main(["bench", str(flow), "--out", str(out), "--rates", "30000",
                 "--open-loop-commands", "1000", "--limit", "2500"]) == 0
    text = capsys.readouterr().out
    assert "closed-loop max throughput" in text and "p99.99" in text
    stored = json.loads((out / "result.json").read_text())
    assert stored["flow"]["commands"] == 2_500
    for png in ("latency_spectrum.png", "throughput.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a baseline that was 10x faster: the stored result is a regression
    fast = copy.deepcopy(stored)
    fast["closed_loop"]["commands_per_s"] *= 10
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps(fast))
    assert main(["bench", "--compare", str(baseline), "--result",
                 str(out / "result.json")]) == 1
    assert "REGRESSION" in capsys.readouterr().err
    baseline.write_text(json.dumps(stored))
    assert main(["bench", "--compare", str(baseline), "--result",
                 str(out / "result.json")]) == 0
    assert main(["bench", str(tmp_path / "missing.npz")]) == 2
    assert main(["bench", str(flow), "--rates", "0"]) == 2


def test_replaying_the_engines_own_journal_reproduces_the_day(tmp_path, flow):
    from benchmarks.flows import accounts_file
    from engine.durable import DurableExchange
    from engine.risk import Accounts
    data = tmp_path / "day"
    (tmp_path / "accounts.json").write_text(json.dumps(accounts_file()))
    trades = 0
    with DurableExchange(data, accounts=Accounts.from_json(accounts_file()), fsync=False,
                         start_relays=False, log=lambda text: None) as ex:
        for command in iter_flow_commands(flow):
            trades += sum(1 for e in ex.apply(command) if type(e).__name__ == "TradeExecuted")
        recorded = ex.state_hash()
    result = run_bench(data, open_loop=False,
                       make_exchange=lambda: Exchange(accounts=Accounts.from_json(accounts_file())))
    assert result["flow"]["journal"] and result["flow"]["commands"] == 4_000
    assert result["end_state"]["state_hash"] == recorded
    assert result["end_state"]["trades"] == trades > 0
    assert main(["bench", str(data), "--out", str(tmp_path / "o"), "--open-loop-commands", "0",
                 "--no-plots", "--accounts", str(tmp_path / "accounts.json")]) == 0
    assert json.loads((tmp_path / "o" / "result.json").read_text())["end_state"][
        "state_hash"] == recorded


@pytest.mark.parametrize("baseline", ['{"a": 1}', "[1, 2]", '{"closed_loop": 5}', "not json"])
def test_compare_refuses_a_baseline_that_is_not_a_bench_result(tmp_path, capsys, baseline):
    path = tmp_path / "baseline.json"
    path.write_text(baseline)
    flow = Path(__file__).resolve().parents[2] / "samples" / "sample-flow.ndjson"
    code = main(["bench", str(flow), "--out", str(tmp_path / "out"),
                 "--compare", str(path)])
    assert code == 2
    assert "cannot read baseline" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()   # refused before any work
