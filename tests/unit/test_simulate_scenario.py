"""Scenario loading, the trading calendar and agent construction rules of `ccerx simulate`."""
from datetime import date
from pathlib import Path

import pytest

from ccerx.scripts.simulate.agents import Emitter
from ccerx.scripts.simulate.calendar import MINUTES_PER_DAY, NS_PER_MIN, SimulatedDays
from ccerx.scripts.simulate.scenario import DEFAULTS, load_scenario

ROOT = Path(__file__).resolve().parents[2]


def test_default_file_matches_the_built_in_defaults():
    assert load_scenario(ROOT / "scenarios" / "default.toml") == load_scenario()


def test_default_market_is_the_scale_target():
    sc = load_scenario()
    assert sc.days == 5 and sc.agent_count == 1000
    assert sc.symbols == ["CCER-AFF", "CCER-SOL", "CCER-OWF", "CCER-MGV"]


def test_shock_scenario_adds_a_batch():
    sc = load_scenario(ROOT / "scenarios" / "issuance-shock.toml")
    assert sc.issuance == [{"day": 3, "instrument": "CCER-SOL", "qty": 800_000}]


def test_flags_override_the_file(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('days = 3\nseed = 9\n[agents]\nnoise_traders = 7\n')
    sc = load_scenario(path, days=2)
    assert (sc.days, sc.seed, sc.agents["noise_traders"]) == (2, 9, 7)
    assert sc.agents["emitters"] == DEFAULTS["agents"]["emitters"]


@pytest.mark.parametrize("text, message", [
    ("dayz = 3", "unknown scenario key"),
    ("[emitters]\nchild_t = [500, 100]", "range"),
    ("[emitters]\nchild_t = [1.5, 100]", "whole numbers"),
    ("[agents]\nemitters = -1", ">= 0"),
    ("days = 0", "days"),
    ("[[issuance]]\nday = 9\ninstrument = 'CCER-SOL'\nqty = 5", "issuance"),
    ("[[issuance]]\nday = 1\ninstrument = 'CCER-XXX'\nqty = 5", "issuance"),
    ("[[instrument]]\nsymbol = 'CCER-AFF'\nref_price = 62.5", "decimal string"),
    ("fee_rate = '1.5'", "fee_rate"),
    ("[agents]\nproject_owners = 0\n[[issuance]]\nday = 1\ninstrument = 'CCER-SOL'\nqty = 5",
     "project owners"),
    ("[agents]\nproject_owners = 3", "one project owner per credit type"),
    ("days = [", "not valid TOML"),
])
def test_bad_scenarios_are_refused_with_a_reason(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_scenario(path)


def test_instrument_override_changes_the_reference_price(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[[instrument]]\nsymbol = "CCER-AFF"\nref_price = "64.00"\n')
    spec = load_scenario(path).instruments[0]
    assert spec.symbol == "CCER-AFF" and spec.ref_ticks == 6400


def test_calendar_skips_weekends_and_keeps_the_sessions():
    cal = SimulatedDays(date(2026, 3, 5), 3)          # Thursday
    assert [d.isoformat() for d in cal.dates] == ["2026-03-05", "2026-03-06", "2026-03-09"]
    assert SimulatedDays.format_ts(cal.minute_ns(0, 0)) == "2026-03-05 09:30:00.000000"
    assert SimulatedDays.format_ts(cal.minute_ns(0, 119)) == "2026-03-05 11:29:00.000000"
    assert SimulatedDays.format_ts(cal.minute_ns(0, 120)) == "2026-03-05 13:00:00.000000"
    assert SimulatedDays.format_ts(cal.close_ns(2)) == "2026-03-09 15:00:00.000000"
    every_minute = [cal.minute_ns(0, m) for m in range(MINUTES_PER_DAY)]
    assert all(SimulatedDays.in_session(ts) for ts in every_minute)
    assert all(SimulatedDays.in_session(ts + NS_PER_MIN - 1) for ts in every_minute)
    assert not SimulatedDays.in_session(cal.close_ns(0))
    assert not SimulatedDays.in_session(cal.minute_ns(0, 119) + NS_PER_MIN)   # 11:30 lunch


def test_emitter_needs_are_capped_at_five_percent_of_verified_emissions():
    e = Emitter("E", "EMIT", 10, 100_000, {"CCER-AFF": 8_000, "CCER-SOL": 2_000}, 0, (1, 2),
                {"CCER-AFF": 6200, "CCER-SOL": 7550}, 0.1, (1, 2))
    assert sum(e.needs.values()) <= 5_000
    assert e.needs == {"CCER-AFF": 4_000, "CCER-SOL": 1_000}
    small = Emitter("E", "EMIT", 10, 100_000, {"CCER-AFF": 3_000}, 0, (1, 2), {"CCER-AFF": 6200},
                    0.1, (1, 2))
    assert small.needs == {"CCER-AFF": 3_000}


@pytest.mark.parametrize("name", ["default", "issuance-shock", "compliance-rush", "thin-market"])
def test_scenario_files_load(name):
    sc = load_scenario(ROOT / "scenarios" / f"{name}.toml")
    assert sc.days == 5 and sc.symbols == ["CCER-AFF", "CCER-SOL", "CCER-OWF", "CCER-MGV"]


def test_the_rush_and_the_thin_market_differ_from_the_default_as_described():
    default = load_scenario()
    rush = load_scenario(ROOT / "scenarios" / "compliance-rush.toml")
    thin = load_scenario(ROOT / "scenarios" / "thin-market.toml")
    assert rush.emitters["need_share"][1] > default.emitters["need_share"][1]
    assert rush.emitters["deadline_premium"] > default.emitters["deadline_premium"]
    assert thin.agent_count < default.agent_count / 3
    assert default.fundamental["drift_per_day"] == 0.0        # no built-in trend by default


def test_the_named_projects_scenario_gives_every_owner_one_project():
    from ccerx.scripts.simulate.agents import ProjectOwner
    from ccerx.scripts.simulate.run import Session
    sc = load_scenario(ROOT / "scenarios" / "projects.toml")
    assert len(sc.projects) == sc.agents["project_owners"] == 8
    owners = [a for a in Session(sc).agents if isinstance(a, ProjectOwner)]
    assert sorted(p.project for o in owners for p in o.projects) == sorted(
        p["id"] for p in sc.projects)
    assert all(len(o.projects) == 1 for o in owners)
