"""`ccerx simulate --mode fix`: the same scenario through a real `ccerx serve` subprocess,
agent groups as broker sessions over real TCP, simplefix on the client side."""
from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest

from scripts.ccerx import main
from scripts.simulate.fixvenue import FixUnavailable, FixVenue, gateway_config_text
from scripts.simulate.run import Session
from scripts.simulate.scenario import load_scenario

SMALL = {"agents": {"emitters": 16, "project_owners": 4, "market_makers": 4, "noise_traders": 20},
         "issuance": [{"day": 1, "instrument": "CCER-OWF", "qty": 30_000}]}


class Serve:
    def __init__(self, config, data_dir):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scripts.ccerx", "serve", "--config", str(config),
             "--port", "0", "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        match = re.search(r"listening on ([\d.]+):(\d+)", line)
        if match is None:
            self.proc.kill()
            raise RuntimeError(f"ccerx serve did not start: {line!r} {self.proc.stderr.read()}")
        self.host, self.port = match.group(1), int(match.group(2))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def serve(tmp_path):
    scenario = load_scenario(days=1, seed=4, overrides=SMALL)
    config = tmp_path / "gateway.toml"
    config.write_text(gateway_config_text(Session(scenario)))
    server = Serve(config, tmp_path / "data")
    yield scenario, server
    server.stop()


def test_fix_mode_trades_the_scenario_like_in_process(serve):
    scenario, server = serve
    fix = Session(scenario, venue_factory=lambda s: FixVenue(server.host, server.port, s)).run()
    local = Session(load_scenario(days=1, seed=4, overrides=SMALL)).run()
    assert fix.mode == "fix" and fix.reconciled
    assert len(fix.trades) > 100
    # same agents, same seed: the market comes out (nearly) the same through the gateway
    assert abs(len(fix.trades) - len(local.trades)) <= len(local.trades) // 10
    for s in scenario.symbols:
        fix_close = fix.days[0].closes[s].close_ticks
        local_close = local.days[0].closes[s].close_ticks
        assert abs(fix_close - local_close) <= 10, s
    # both halves of every trade came back, fees as the engine charges them
    for t in fix.trades:
        gross = t[4] * scenario.instruments[0].tick_fen * t[5]
        assert t[9] == t[10] == gross * scenario.fee_ppm // 1_000_000
    # the day-1 batch was part of the gateway's opening balances and was sold into
    sold = sum(t[5] for t in fix.trades if t[3] == "CCER-OWF" and t[7].startswith("PROJ"))
    assert sold > 0


def test_fix_mode_from_the_command_line(serve, tmp_path, capsys):
    scenario, server = serve
    path = tmp_path / "small.toml"
    path.write_text("days = 1\nseed = 4\n[agents]\nemitters = 16\nproject_owners = 4\n"
                    "market_makers = 4\nnoise_traders = 20\n[[issuance]]\nday = 1\n"
                    "instrument = \"CCER-OWF\"\nqty = 30_000\n")
    out = tmp_path / "out"
    assert main(["simulate", "--scenario", str(path), "--mode", "fix", "--port", str(server.port),
                 "--out", str(out), "--quiet"]) == 0
    assert "reconciliation: OK" in capsys.readouterr().out
    assert "mode <b>fix</b>" in (out / "report.html").read_text()


def test_fix_mode_without_a_gateway_is_a_clear_error(tmp_path, capsys):
    import socket
    with socket.socket() as s:          # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FixUnavailable, match="cannot connect"):
        Session(load_scenario(days=1, overrides=SMALL),
                venue_factory=lambda s: FixVenue("127.0.0.1", port, s)).run()
    assert main(["simulate", "--mode", "fix", "--days", "1", "--port", str(port),
                 "--out", str(tmp_path), "--quiet"]) == 1
    assert "cannot connect" in capsys.readouterr().err


def test_fix_mode_runs_one_day(tmp_path, capsys):
    assert main(["simulate", "--mode", "fix", "--days", "2", "--out", str(tmp_path)]) == 2
    assert "one trading day" in capsys.readouterr().err
