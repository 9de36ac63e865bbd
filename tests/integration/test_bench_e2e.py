"""`ccerx bench --e2e`: a real `ccerx serve` subprocess, real TCP sessions, simplefix client."""
from __future__ import annotations

import json

from ccerx.benchmarks.e2e import fix_requests, run_e2e
from ccerx.benchmarks.flows import write_flow
from ccerx.scripts.ccerx import main


def test_every_request_is_acknowledged_over_fix(tmp_path):
    flow = tmp_path / "flow.ndjson"
    write_flow(flow, 5, 400)
    result = run_e2e(flow, sessions=2, rates=[400.0], commands=400, drain_timeout=20)
    [run] = result["runs"]
    assert result["config"] == "demo" and result["sessions"] == 2
    assert run["sent"] == result["requests"] > 350
    assert run["acked"] == run["sent"] and run["unacked"] == 0
    assert run["session_or_business_rejects"] == 0
    assert run["latency_ns"]["count"] == run["acked"]
    assert 0 < run["latency_ns"]["p50"] <= run["latency_ns"]["max"]


def test_load_config_sessions_and_cli(tmp_path):
    flow = tmp_path / "flow.ndjson"
    write_flow(flow, 6, 300)
    requests = fix_requests(flow, 4, 300)
    assert {s for s, *_ in requests} == {0, 1, 2, 3}     # spread over every session
    assert main(["bench", str(flow), "--e2e", "--sessions", "4", "--e2e-rates", "300",
                 "--e2e-commands", "300", "--out", str(tmp_path / "out"),
                 "--client-parser", "scan"]) == 0
    result = json.loads((tmp_path / "out" / "result_e2e.json").read_text())
    assert result["sessions"] == 4 and result["client_parser"] == "scan"
    [run] = result["runs"]
    assert run["unacked"] == 0 and run["acked"] == run["sent"] == result["requests"] > 250
    assert run["session_or_business_rejects"] == 0
    # the day the server journaled replays to the trades the brokers were told about
    day = run["journal_replay"]
    assert day["trades_match_fix_reports"] and day["trades"] > 0
    assert 0 < day["commands"] <= run["sent"]


def test_a_serve_data_directory_replays_without_an_accounts_file(tmp_path, capsys):
    """`ccerx serve` keeps its accounts in its config, not in a JSON file: `ccerx bench DIR`
    replays the day from the directory's genesis to the state `ccerx recover` reports."""
    import asyncio

    from ccerx.benchmarks.e2e import DEMO_BROKERS, Server, _client
    flow = tmp_path / "flow.ndjson"
    write_flow(flow, 7, 300)
    server = Server(None)                      # the demo config: members, types, balances
    try:
        run = asyncio.run(_client(server.host, server.port, DEMO_BROKERS,
                                  fix_requests(flow, 2, 300), 300.0, 20, True))
        server.stop(cleanup=False)
        assert run["unacked"] == 0 and run["trade_reports"] > 0
        capsys.readouterr()
        assert main(["recover", "--data-dir", str(server.data_dir), "--no-ledger"]) == 0
        [recovered] = [line.split()[-1] for line in capsys.readouterr().out.splitlines()
                       if line.startswith("state hash ")]
        out = tmp_path / "out"
        assert main(["bench", str(server.data_dir), "--out", str(out), "--no-plots",
                     "--open-loop-commands", "0"]) == 0
        result = json.loads((out / "result.json").read_text())
        assert result["end_state"]["state_hash"] == recovered
        assert 2 * result["end_state"]["trades"] == run["trade_reports"]
    finally:
        server.stop()
