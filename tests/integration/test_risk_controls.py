"""Issue 14 item 2 end to end: a real `ccerx serve` (config with a drop copy session and
position limits), brokers over real TCP, the operator over the real control socket and the
`ccerx operator` command: kill switch told over FIX, mass cancel, drop copy, position limit."""
from __future__ import annotations

import pytest

from ccerx.gateway.config import DEMO_CONFIG
from ccerx.scripts.ccerx import main as ccerx
from tests.fixclient import Broker, group, s

CONFIG = DEMO_CONFIG + """
[[broker]]
comp_id = "BROKER01-DC"
drop_copy_for = "BROKER01"
password = "%s"

[limits]
report_pct = "50"
[limits.key_emission_unit]
per_instrument = 5000
""" % DEMO_CONFIG.split('password = "')[1].split('"')[0]    # demo01's hash


@pytest.fixture
def market(tmp_path, start_serve):
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG)
    server = start_serve("--config", str(config), "--data-dir", str(tmp_path / "data"),
                         "--rules", "continuous")
    brokers = []
    for comp_id, password in (("BROKER01", "demo01"), ("BROKER01-DC", "demo01"),
                              ("BROKER02", "demo02")):
        broker = Broker(comp_id, server.port)
        assert s(broker.logon(password, reset=True), 35) == "A"
        assert s(broker.expect("h"), 340) == "2"
        brokers.append(broker)
    yield server, *brokers
    for broker in brokers:
        broker.close()


def test_kill_mass_cancel_drop_copy_and_limits_over_fix(market, capsys):
    server, b1, dc, b2 = market
    for cl, price in (("a", "61.00"), ("b", "61.10"), ("c", "61.20")):
        b1.new_order(cl, "EMIT01", "1", 10, price)
        assert s(b1.expect("8"), 150) == "0"
        assert s(dc.expect("8"), 11) == cl
    # mass cancel of one symbol, own orders only
    b2.new_order("z", "EMIT02", "1", 10, "61.30")
    assert s(b2.expect("8"), 150) == "0"
    b1.send("q", (11, "mc1"), (530, "1"), (55, "CCER-AFF"), (54, "1"),
            (60, "20260101-00:00:00.000"))
    report = b1.expect("r")
    assert (s(report, 531), s(report, 533)) == ("1", "3")
    assert sorted(s(b1.expect("8"), 11) for _ in range(3)) == ["a", "b", "c"]
    assert sorted(s(dc.expect("8"), 150) for _ in range(3)) == ["4", "4", "4"]
    # the drop copy may not trade
    dc.new_order("x", "EMIT01", "1", 10, "61.00")
    assert s(dc.expect("j"), 380) == "4"
    # position limit (5000 t of one credit type for key emission units)
    b1.new_order("big", "EMIT01", "1", 5001, "61.00")
    refused = b1.expect("8")
    assert s(refused, 150) == "8" and s(refused, 58).startswith("position_limit")
    assert s(dc.expect("8"), 11) == "big"
    # the kill switch, from the command line
    b1.new_order("d", "EMIT01", "1", 10, "61.00")
    assert s(b1.expect("8"), 150) == "0" and s(dc.expect("8"), 11) == "d"
    capsys.readouterr()
    assert ccerx(["operator", "kill", "--member", "BROKER01", "--control",
                  str(server.control)]) == 0
    assert '"reason":"kill"' in capsys.readouterr().out
    news = b1.expect("B")
    assert s(news, 148) == "kill switch" and "BROKER01" in group(news, 58)[0][58]
    cancelled = b1.expect("8")
    assert (s(cancelled, 11), s(cancelled, 150)) == ("d", "4")
    assert s(dc.expect("8"), 150) == "4"
    b1.new_order("e", "EMIT01", "1", 10, "61.00")
    assert "restricted" in s(b1.expect("8"), 58)
    assert ccerx(["operator", "unrestrict", "--member", "BROKER01", "--control",
                  str(server.control)]) == 0
    assert s(b1.expect("B"), 148) == "restriction lifted"
    b1.new_order("f", "EMIT01", "1", 10, "61.00")
    assert s(b1.expect("8"), 150) == "0"
