"""The FIX gateway load harness (benchmarks/gateway_load.py, `ccerx bench-gateway`) end to end:
a real `ccerx serve` subprocess, real TCP sessions, sender and receiver processes. Checks
the harness's end state, never its speed."""
from __future__ import annotations

import json

from ccerx.benchmarks.gateway_load import broker_ids, config_text, make_orders, password_of
from ccerx.gateway.config import GatewayConfig, verify_password
from ccerx.scripts.ccerx import main


def test_generated_config_has_hashed_passwords_and_two_accounts_per_broker():
    config = GatewayConfig.from_toml_text(config_text(3))
    assert list(config.brokers) == broker_ids(3) == ["BROKER01", "BROKER02", "BROKER03"]
    for broker in config.brokers.values():
        assert broker.password_hash.startswith("scrypt$")
        assert password_of(broker.comp_id) not in broker.password_hash
        assert verify_password(password_of(broker.comp_id), broker.password_hash)
        assert [a.account for a in broker.accounts] == ["EMIT" + broker.comp_id[-2:],
                                                        "HOLD" + broker.comp_id[-2:]]
    accounts = config.build_accounts()
    assert accounts.get("EMIT02").member == "BROKER02"


def test_order_mix_is_seeded_and_mixes_resting_and_crossing():
    orders = make_orders(2000, seed=7)
    assert orders == make_orders(2000, seed=7) != make_orders(2000, seed=8)
    ioc = sum(1 for o in orders if o[4] == "3")
    assert 400 < ioc < 800                                   # ~30% marketable IOC
    assert {o[0] for o in orders} == {"CCER-AFF", "CCER-SOL", "CCER-OWF", "CCER-MGV"}
    assert all(1 <= o[3] <= 500 for o in orders)


def test_every_order_is_acknowledged_over_two_sessions(tmp_path):
    out = tmp_path / "out"
    code = main(["bench-gateway", "--sessions", "2", "--rates", "300", "--seconds", "1",
                 "--closed-loop-orders", "200", "--window", "20", "--out", str(out)])
    result = json.loads((out / "result.json").read_text())
    assert code == 0 and result["ok"] is True
    assert result["sessions"] == 2
    closed, opened = result["runs"]
    assert closed["mode"] == "closed loop" and closed["orders"] == 200
    assert opened["mode"] == "open loop" and opened["offered_per_s"] == 300
    assert opened["orders"] == 300
    for run in (closed, opened):
        assert run["acked"] == run["orders"] and run["unacked"] == 0
        assert run["latency_us"]["count"] == run["orders"]
        assert 0 < run["latency_us"]["p50"] <= run["latency_us"]["p99"] <= run["latency_us"]["max"]
        assert run["session_or_business_rejects"] == 0
        assert run["logged_out_sessions"] == 2
        # one ExecType 0 (new) per order; the crossing ones also traded (F) or expired (C)
        assert run["exec_types"]["0"] == run["orders"]
        assert run["exec_types"].get("F", 0) > 0
        assert run["msg_types"]["8"] == sum(run["exec_types"].values())
        assert set(run) >= {"sustained_per_s", "server_cpu_us_per_order", "span_s",
                            "late_sends_over_1ms"}
    assert (out / "latency_spectrum.png").stat().st_size > 1000
