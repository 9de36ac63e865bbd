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
