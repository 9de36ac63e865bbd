"""The bench harness: result shape, end-state check, regression comparison, CLI exit codes.
Speed itself is never asserted here (benchmarks measure it)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from ccerx.benchmarks.bench import BenchError, compare, latency_summary, run_bench
from ccerx.benchmarks.flows import write_flow
from ccerx.engine.core.commands import CancelOrder
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.replay import replay
from ccerx.scripts.ccerx import main
from ccerx.engine.formats.binary import iter_flow_commands

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


def test_percentiles_stay_within_the_recorded_min_and_max():
    """An HDR percentile is its bucket's upper (p0: lower) bound; reported, it is clamped to
    the data: p99.99 77,201 us beside max 77,166 us was a bucket bound, not a latency."""
    from hdrh.histogram import HdrHistogram
    from ccerx.benchmarks.gateway_load import latency_summary as gateway_summary
    top = 77_166_000
    lat = np.array([3_000] * 9_990 + [top] * 10, dtype=np.int64)
    raw = HdrHistogram(1, 3_600_000_000_000, 3)
    for v in lat.tolist():
        raw.record_value(v)
    assert raw.get_value_at_percentile(99.99) > top        # what used to be reported
    s = latency_summary(lat)
    assert s["min"] == 3_000 and s["max"] == top
    assert s["p99.99"] == top and 3_000 <= s["p50"] <= 3_000 * 1.001     # 3 digits inside
    assert all(3_000 <= v <= top for _, v in s["spectrum"])
    assert [v for _, v in s["spectrum"]] == sorted(v for _, v in s["spectrum"])
    one = latency_summary(np.full(50, 1_234_567, dtype=np.int64))   # one value: no spread at all
    assert {one[k] for k in ("min", "max", "p50", "p99.99")} == {1_234_567}
    assert {v for _, v in one["spectrum"]} == {1_234_567}
    g = gateway_summary(lat)                                 # the gateway load test, in us
    assert g["max"] == 77_166 and g["p99.9"] <= g["max"] and g["p50"] == 3


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


def test_compare_does_not_blame_the_engine_for_a_day_replayed_from_another_start(result):
    day = copy.deepcopy(result)
    day["notes"]["genesis"] = {"state_hash": "a" * 32}
    other = copy.deepcopy(day)
    other["end_state"]["state_hash"] = "0" * 32
    assert [p for p in compare(day, other, 10.0) if "different end state" in p]
    other["notes"]["genesis"] = {"state_hash": "b" * 32}
    assert compare(day, other, 10.0) == []


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
    from ccerx.benchmarks.flows import accounts_file
    from ccerx.engine.durable.exchange import DurableExchange
    from ccerx.engine.formats.config import accounts_from_json
    data = tmp_path / "day"
    (tmp_path / "accounts.json").write_text(json.dumps(accounts_file()))
    trades = 0
    with DurableExchange(data, accounts=accounts_from_json(accounts_file()), fsync=False,
                         start_relays=False, log=lambda text: None) as ex:
        for command in iter_flow_commands(flow):
            trades += sum(1 for e in ex.apply(command) if type(e).__name__ == "TradeExecuted")
        recorded = ex.state_hash()
    result = run_bench(data, open_loop=False,
                       make_exchange=lambda: Exchange(accounts=accounts_from_json(accounts_file())))
    assert result["flow"]["journal"] and result["flow"]["commands"] == 4_000
    assert result["end_state"]["state_hash"] == recorded
    assert result["end_state"]["trades"] == trades > 0
    assert main(["bench", str(data), "--out", str(tmp_path / "o"), "--open-loop-commands", "0",
                 "--no-plots", "--accounts", str(tmp_path / "accounts.json")]) == 0
    assert json.loads((tmp_path / "o" / "result.json").read_text())["end_state"][
        "state_hash"] == recorded


def _server_like_accounts() -> dict:
    """The generated accounts as a server would hold them: types, members, a non-default fee."""
    from ccerx.benchmarks.flows import accounts_file
    data = accounts_file()
    for i, row in enumerate(data["accounts"]):
        row["member"] = f"BROKER{i % 3 + 1:02d}"
    return data | {"fee_rate": "0.005"}


def _recovered_hash(data, capsys) -> str:
    capsys.readouterr()
    assert main(["recover", "--data-dir", str(data), "--no-ledger"]) == 0
    [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith("state hash ")]
    return line.split()[-1]


@pytest.fixture(scope="module", params=["DurableExchange", "ccerx recover --feed"])
def recorded_day(request, tmp_path_factory, flow):
    """A durable data directory holding a day of the generated flow, recorded from accounts
    with types, members and a fee rate of their own, with snapshots after the genesis one (so
    recovery starts from a later snapshot than the replay does)."""
    from ccerx.engine.durable.exchange import DurableExchange
    from ccerx.engine.formats.config import accounts_from_json
    base = tmp_path_factory.mktemp("day")
    accounts = base / "accounts.json"
    accounts.write_text(json.dumps(_server_like_accounts()))
    data = base / "data"
    commands = list(iter_flow_commands(flow))
    if request.param == "DurableExchange":
        with DurableExchange(data, accounts=accounts_from_json(_server_like_accounts()),
                             fsync=False, start_relays=False, ledger=None, snapshot_every=1_500,
                             log=lambda text: None) as ex:
            for i in range(0, len(commands), 500):
                ex.apply_many(commands[i:i + 500])
    else:
        from ccerx.engine.formats.binary import binary_to_ndjson
        binary_to_ndjson(flow, base / "flow.ndjson")
        assert main(["recover", "--data-dir", str(data), "--accounts", str(accounts),
                     "--feed", str(base / "flow.ndjson"), "--no-ledger",
                     "--snapshot-every", "1500"]) == 0
    return data, accounts


def test_a_recorded_day_replays_from_its_own_genesis_to_the_recovered_state(
        tmp_path, recorded_day, capsys):
    data, _ = recorded_day
    assert len(list(data.glob("snapshot-*.snap"))) > 1
    recovered = _recovered_hash(data, capsys)
    # no accounts file: the directory's genesis snapshot is the start
    assert main(["bench", str(data), "--out", str(tmp_path / "o"), "--open-loop-commands", "0",
                 "--no-plots"]) == 0
    assert "start state  the directory's genesis snapshot" in capsys.readouterr().out
    result = json.loads((tmp_path / "o" / "result.json").read_text())
    assert result["end_state"]["state_hash"] == recovered
    assert result["notes"]["genesis"]["source"].endswith("snapshot-0000000000000000.snap")
    assert result["end_state"]["trades"] > 0
    # the API does the same without a make_exchange; an empty exchange is another day
    assert run_bench(data, open_loop=False)["end_state"]["state_hash"] == recovered
    assert run_bench(data, open_loop=False,
                     make_exchange=Exchange)["end_state"]["state_hash"] != recovered


def test_a_recorded_day_refuses_accounts_other_than_its_genesis(tmp_path, recorded_day, capsys):
    data, accounts = recorded_day
    wrong = _server_like_accounts()
    wrong["fee_rate"] = "0.006"
    wrong["accounts"][0]["cash"] = "1.00"
    del wrong["accounts"][0]["member"]
    (tmp_path / "wrong.json").write_text(json.dumps(wrong))
    acc = wrong["accounts"][0]["account"]
    out = tmp_path / "o"
    capsys.readouterr()
    assert main(["bench", str(data), "--accounts", str(tmp_path / "wrong.json"),
                 "--out", str(out), "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert "would not reproduce the recorded day" in err
    assert "omit --accounts and --instruments" in err
    assert "fee rate 0.006 given, 0.005 in the directory" in err
    assert f"account {acc}: cash '1.00' given, '2000000000.00' in the directory" in err
    assert f"account {acc}: member None given, 'BROKER01' in the directory" in err
    samples = Path(__file__).resolve().parents[2] / "samples" / "accounts.json"
    assert main(["bench", str(data), "--accounts", str(samples), "--out", str(out),
                 "--no-plots"]) == 2
    assert "would not reproduce the recorded day" in capsys.readouterr().err
    assert not out.exists()                              # refused before any work
    # the accounts it was recorded from are accepted (and change nothing)
    assert main(["bench", str(data), "--accounts", str(accounts), "--out", str(out),
                 "--open-loop-commands", "0", "--no-plots"]) == 0
    assert json.loads((out / "result.json").read_text())["end_state"]["state_hash"] == \
        _recovered_hash(data, capsys)


def test_without_a_genesis_snapshot_opening_json_checks_the_start(tmp_path, recorded_day, capsys):
    import shutil
    data, accounts = recorded_day
    recovered = _recovered_hash(data, capsys)
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    (copy / "snapshot-0000000000000000.snap").unlink()
    out = tmp_path / "o"
    # opening.json has the balances and the genesis hash, not types, members or the fee
    assert main(["bench", str(copy), "--out", str(out), "--no-plots"]) == 2
    assert "opening.json holds only the opening balances" in capsys.readouterr().err
    wrong = _server_like_accounts()
    wrong["accounts"][1]["credits"]["CCER-AFF"] += 1
    (tmp_path / "wrong.json").write_text(json.dumps(wrong))
    assert main(["bench", str(copy), "--accounts", str(tmp_path / "wrong.json"), "--out",
                 str(out), "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert f"account {wrong['accounts'][1]['account']}: opening balances differ" in err
    assert main(["bench", str(copy), "--accounts", str(accounts), "--out", str(out),
                 "--open-loop-commands", "0", "--no-plots"]) == 0
    assert json.loads((out / "result.json").read_text())["end_state"]["state_hash"] == recovered


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
