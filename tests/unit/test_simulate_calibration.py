"""Calibration targets (scenarios/calibration.toml) and their measurement on a run."""
import pytest

from ccerx.engine.core.rules import CBEEX_2023
from ccerx.scripts.simulate.calibration import load_targets, measure, table, text_table
from ccerx.scripts.simulate.run import Session
from ccerx.scripts.simulate.scenario import load_scenario


def test_every_target_has_a_source_and_a_tolerance_and_is_measured():
    targets = load_targets()
    keys = {t.key for t in targets}
    assert {"daily_volume_t", "weekly_volume_t", "weekly_turnover_cny", "vwap_cny",
            "no_trade_day_share", "active_accounts"} <= keys
    for t in targets:
        assert t.source and t.label
        if t.value is not None:
            assert t.low <= t.value <= t.high or t.key == "weekly_volume_t", t.key
            assert t.tolerance
    weekly = next(t for t in targets if t.key == "weekly_volume_t")
    assert weekly.value == 417_400


def test_a_bad_target_file_is_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[[target]]\nkey = "sunshine"\nlabel = "x"\nvalue = 1\nlow = 0\nhigh = 2\n'
                    'unit = ""\nsource = "x"\ntolerance = "x"\n')
    with pytest.raises(ValueError, match="nobody measures"):
        load_targets(path)


def test_measure_and_table_on_a_small_run():
    result = Session(load_scenario(days=2, seed=3, overrides={"agents": {
        "emitters": 20, "project_owners": 4, "market_makers": 4, "noise_traders": 20}}),
        rules=CBEEX_2023).run()
    stats = measure(result)
    volume = sum(t[5] for t in result.trades)
    assert stats["daily_volume_t"] == volume / 2 and stats["weekly_volume_t"] == volume * 2.5
    assert 0 <= stats["uptick_share"] <= 1
    rows = table([stats, stats])
    assert all(r.low == r.mean == r.high or r.mean != r.mean for r in rows)
    text = text_table(rows)
    assert "volume per trading day" in text and "(no target)" in text


def test_the_default_scenario_lands_within_tolerance_of_every_target():
    """The whole default market (5 days, 1,000 agents, seed 1, cbeex-2023): about 2 s."""
    result = Session(load_scenario(), rules=CBEEX_2023).run()
    rows = table([measure(result)])
    missed = [(r.target.key, r.mean, r.target.low, r.target.high) for r in rows
              if r.within is False]
    assert missed == []
    assert sum(r.within is True for r in rows) >= 8
    # not a ramp: every type both rises and falls from one day's close to the next
    for s in result.scenario.symbols:
        closes = [result.specs[s].ref_ticks] + [d.closes[s].close_ticks for d in result.days]
        changes = [b - a for a, b in zip(closes, closes[1:])]
        assert any(c > 0 for c in changes) and any(c < 0 for c in changes), (s, closes)


def test_the_fundamental_value_reverts_and_drifts_only_when_asked():
    calm = Session(load_scenario(days=1, seed=2, overrides={
        "fundamental": {"daily_volatility": 0.0, "news_per_day": 0.0}}))
    calm.log_value["CCER-AFF"] = 0.2          # a shock: decays by exp(-0.5) a day
    for minute in range(240):
        calm.minute = minute
        calm._move_values()
    assert 0.115 < calm.log_value["CCER-AFF"] < 0.125     # 0.2 * exp(-0.5) = 0.121
    assert calm.log_value["CCER-SOL"] == 0.0  # no noise, no news, no drift: stays put
    trend = Session(load_scenario(days=1, seed=2, overrides={"fundamental": {
        "daily_volatility": 0.0, "news_per_day": 0.0, "drift_per_day": 0.01}}))
    for minute in range(240):
        trend.minute = minute
        trend._move_values()
    assert 0.0 < trend.log_value["CCER-SOL"] < 0.01
    assert trend.fundamental("CCER-SOL") > trend.anchor["CCER-SOL"]


def test_an_issuance_batch_lowers_the_fundamental_value_of_its_type():
    session = Session(load_scenario(days=3, seed=2, overrides={
        "issuance": [{"day": 2, "instrument": "CCER-SOL", "qty": 2_000_000}]}))
    session._issue(1)
    assert session.log_value["CCER-SOL"] == -0.1       # 0.05 per Mt
    assert session.log_value["CCER-AFF"] == 0.0
