"""The simulator trades credits as lots (issue 11 item 9): project owners hold their own
projects' lots and list them (Art.17: tradable the next trading day under cbeex-2023),
emitters buy the type contract or named listings, prefer recent vintages and retire what
they bought once it is delivered (after the close); every tonne is reconciled per lot; the
report compares liquidity under cbeex-2023 and continuous for the same seed."""
from __future__ import annotations

import html
import json

import pytest

from ccerx.engine.core.lots import lot_key
from ccerx.engine.core.rules import CBEEX_2023, CONTINUOUS
from ccerx.scripts.simulate.agents import Emitter, ProjectOwner
from ccerx.scripts.simulate.report import liquidity_sentence, write_report, write_trades_csv
from ccerx.scripts.simulate.run import Session
from ccerx.scripts.simulate.scenario import load_scenario

TINY = {"agents": {"emitters": 30, "project_owners": 8, "market_makers": 8, "noise_traders": 40}}


def tiny(days=3, seed=7, **extra):
    return load_scenario(days=days, seed=seed, overrides={**TINY, **extra})


@pytest.fixture(scope="module")
def cbeex():
    session = Session(tiny(), rules=CBEEX_2023)
    return session, session.run()


@pytest.fixture(scope="module")
def continuous():
    session = Session(tiny(), rules=CONTINUOUS)
    return session, session.run()


def test_scenario_describes_projects_per_credit_type(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[agents]\nproject_owners = 4\n'
                    '[[project]]\nid = "CCER-14-2024-0101"\ninstrument = "CCER-AFF"\n'
                    'vintages = [2022, 2024]\nissuance_t = 7000\n')
    sc = load_scenario(path, days=1)
    assert sc.projects == [{"id": "CCER-14-2024-0101", "instrument": "CCER-AFF",
                            "vintages": [2022, 2024], "issuance_t": 7000}]
    session = Session(sc)
    [aff] = [a for a in session.agents if isinstance(a, ProjectOwner) and a.instrument == "CCER-AFF"]
    assert [(p.project, p.vintages) for p in aff.projects] == [("CCER-14-2024-0101", (2022, 2024))]
    result = session.run()
    assert {(d.asset, d.amount) for d in result.deposits if d.account == aff.account} == {
        ("CCER-14-2024-0101@2022", 7000), ("CCER-14-2024-0101@2024", 7000)}
    for bad, message in (('[[project]]\nid = "a b"\ninstrument = "CCER-AFF"\nvintages = [2023]',
                          "project"),
                         ('[[project]]\nid = "X-1"\ninstrument = "CCER-XXX"\nvintages = [2023]',
                          "instrument"),
                         ('[[project]]\nid = "X-1"\ninstrument = "CCER-AFF"\nvintages = [1990]',
                          "vintage"),
                         ('[[project]]\nid = "X-1"\ninstrument = "CCER-AFF"\nvintages = [2023]\n'
                          'issuance_t = 0', "issuance_t"),
                         ('[[project]]\nid = "X-1"\ninstrument = "CCER-AFF"\nvintages = [2023]\n'
                          '[[project]]\nid = "X-1"\ninstrument = "CCER-SOL"\nvintages = [2023]',
                          "twice")):
        path.write_text(bad)
        with pytest.raises(ValueError, match=message):
            load_scenario(path)


def test_owners_hold_only_their_own_projects_lots_before_trading(cbeex):
    session, result = cbeex
    first_trade = min(t[2] for t in result.trades)
    owners = [a for a in result.agents if isinstance(a, ProjectOwner)]
    assert owners and all(o.projects for o in owners)
    own = {o.account: {lot_key(p.project, v) for p in o.projects for v in p.vintages}
           for o in owners}
    projects = [p.project for o in owners for p in o.projects]
    assert len(projects) == len(set(projects))           # a project has one owner
    before = [d for d in result.deposits if d.ts < first_trade]
    assert before, "the opening lots are moved in before the first trade"
    for d in before:
        assert d.project is not None and d.vintage is not None, d   # every deposit is a lot
        if d.account in own:
            assert d.asset in own[d.account], d
    for account, lots in own.items():     # every lot of its projects moved in, and listed
        assert {d.asset for d in before if d.account == account} == lots
    listed = {spec.holding: spec for spec in result.final_specs.values() if spec.kind == "listing"}
    assert set(listed) == set().union(*own.values())
    # owners never buy: what they hold at the end is their own lots only
    for account, lots in own.items():
        assert set(result.closing[account][1]) <= lots


def test_listings_trade_from_the_next_trading_day_under_cbeex_2023(cbeex, continuous):
    _, result = cbeex
    kind = {s: spec.kind for s, spec in result.final_specs.items()}
    assert any(kind[t[3]] == "listing" for t in result.trades)
    assert not any(kind[t[3]] == "listing" and t[1] == 0 for t in result.trades)
    _, free = continuous          # no listing delay under continuous
    assert any(kind[t[3]] == "listing" and t[1] == 0 for t in free.trades)


def test_contract_trades_deliver_lots_and_listings_exactly_their_lot(cbeex):
    _, result = cbeex
    specs = result.final_specs
    contract_lots = 0
    for trade_id, _, _, instrument, _, qty, *_ in result.trades:
        spec = specs[instrument]
        lots = result.trade_lots[trade_id]
        assert sum(q for _, _, q in lots) == qty
        if spec.kind == "listing":
            assert lots == ((spec.project, spec.vintage, qty),)
        else:
            assert spec.kind == "contract"
            for project, vintage, _ in lots:
                assert result.lot_types[lot_key(project, vintage)] == spec.credit_type
            contract_lots += len(lots)
    assert contract_lots > 0


def test_emitters_prefer_recent_vintages(cbeex):
    """What emitters took from named listings is younger on average than what the type
    contracts delivered (which deliver the oldest vintage first)."""
    _, result = cbeex
    specs = result.final_specs
    emitters = {a.account for a in result.agents if isinstance(a, Emitter)}
    named, contract = [], []
    for trade_id, _, _, instrument, _, _, buyer, *_ in result.trades:
        if buyer in emitters:
            for _, vintage, qty in result.trade_lots[trade_id]:
                (named if specs[instrument].kind == "listing" else contract).append((vintage, qty))
    assert named and contract

    def mean(xs):
        return sum(v * q for v, q in xs) / sum(q for _, q in xs)
    assert mean(named) > mean(contract)


def test_emitters_retire_what_they_bought_once_delivered_to_meet_their_need(cbeex):
    session, result = cbeex
    emitters = [a for a in result.agents if isinstance(a, Emitter)]
    assert result.retirements and sum(r.qty for r in result.retirements) > 0
    certificates = [r.certificate for r in result.retirements]
    assert len(certificates) == len(set(certificates))
    close = {d: session.calendar.close_ns(d) for d in range(len(result.days))}
    bought_day: dict = {}
    for _, day, _, _, _, qty, buyer, *_ in result.trades:
        bought_day.setdefault(buyer, []).append(day)
    for e in emitters:
        mine = [r for r in result.retirements if r.account == e.account]
        for type_symbol, need in e.needs.items():
            retired = sum(r.qty for r in mine if result.type_of_lot(r.asset) == type_symbol)
            assert retired == e.bought_type.get(type_symbol, 0) <= need    # all of it, no more
        for r in mine:       # after a close: delivered, never on the day of purchase
            assert any(r.ts >= close[d] for d in bought_day[e.account])
    # the exchange holds them as retired, never to trade again
    accounts = session.venue.accounts
    for e in emitters:
        assert sum(accounts.by_id[e.account].retired.values()) == sum(e.bought_type.values())
    need = sum(sum(e.needs.values()) for e in emitters)
    assert sum(r.qty for r in result.retirements) > need // 4


def test_reconciliation_is_per_lot_to_the_tonne(cbeex, continuous):
    for session, result in (cbeex, continuous):
        assert result.reconciled, [d.reconciliation.problems for d in result.days]
    # a tonne moved from one lot to another of the same account (same type total) is found
    session = Session(tiny(days=1), rules=CBEEX_2023)
    session.run()
    accounts = session.venue.accounts
    owner = next(a for a in session.agents if isinstance(a, ProjectOwner)
                 and len([k for k, v in accounts.by_id[a.account].credits.items() if v]) >= 2)
    held = accounts.by_id[owner.account].credits
    a, b = [k for k, v in held.items() if v][:2]
    held[a] -= 1
    held[b] += 1
    problems = session.settlement.reconcile(accounts, 0).problems
    assert any(owner.account in p and "credits" in p for p in problems), problems


def test_same_seed_same_lots_trades_and_retirements(tmp_path, cbeex):
    _, first = cbeex
    again = Session(tiny(), rules=CBEEX_2023).run()
    write_trades_csv(first, tmp_path / "a.csv")
    write_trades_csv(again, tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert [r[1:] for r in first.retirements] == [r[1:] for r in again.retirements]
    assert first.trade_lots == again.trade_lots


def test_the_liquidity_sentence_says_what_the_holding_rule_does_from_the_numbers():
    rows = {"cbeex-2023": {"spread_ticks": 9.5, "depth_t": 800.0, "volume_t": 40_000.0,
                           "maker_volume_t": 3_000.0, "maker_round_trip_t": 100.0,
                           "two_sided_share": 0.7},
            "continuous": {"spread_ticks": 6.0, "depth_t": 1_200.0, "volume_t": 50_000.0,
                           "maker_volume_t": 9_000.0, "maker_round_trip_t": 2_500.0,
                           "two_sided_share": 0.9}}
    text = liquidity_sentence(rows["cbeex-2023"], rows["continuous"])
    assert "5-trading-day" in text
    assert "96% fewer" in text and "2,500 t to 100 t" in text      # round trips
    assert "widened" in text and "6.00 to 9.50 ticks" in text       # spread
    assert "thinner" in text and "1,200 t to 800 t" in text          # depth
    wider = dict(rows["cbeex-2023"], spread_ticks=5.0, depth_t=1_500.0)
    text = liquidity_sentence(wider, rows["continuous"])
    assert "narrowed" in text and "deeper" in text


def test_the_report_shows_lots_retirements_and_the_liquidity_comparison(tmp_path, cbeex, continuous):
    from ccerx.scripts.simulate.sweep import run_seed
    _, result = cbeex
    comparison = {"cbeex-2023": [run_seed(result.scenario, result.scenario.seed, "cbeex-2023",
                                          result=result)],
                  "continuous": [run_seed(continuous[1].scenario, result.scenario.seed,
                                          "continuous", result=continuous[1])]}
    summary = write_report(result, tmp_path, comparison=comparison)
    page = (tmp_path / "report.html").read_text()
    assert "Credits by lot" in page and "Retirements against offset needs" in page
    assert "What the 5-trading-day rule does to liquidity" in page
    assert html.escape(summary["liquidity"]["sentence"]) in page
    lots = summary["lots"]
    assert sum(x["traded_t"] for x in lots) == sum(
        q for lots_ in result.trade_lots.values() for _, _, q in lots_)
    assert sum(x["retired_t"] for x in lots) == sum(r.qty for r in result.retirements)
    assert summary["retirements"]["retired_t"] == sum(r.qty for r in result.retirements)
    json.loads((tmp_path / "summary.json").read_text())
    assert (tmp_path / "lots.png").exists()


def test_the_command_line_compares_liquidity_under_both_profiles_by_default(tmp_path, capsys):
    from ccerx.scripts.ccerx import main
    path = tmp_path / "tiny.toml"
    path.write_text("days = 2\nseed = 3\n[agents]\nemitters = 30\nproject_owners = 8\n"
                    "market_makers = 8\nnoise_traders = 40\n")
    out = tmp_path / "out"
    assert main(["simulate", "--scenario", str(path), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "5-trading-day holding rule" in printed and "retired" in printed
    page = (out / "report.html").read_text()
    assert "What the 5-trading-day rule does to liquidity" in page
    assert json.loads((out / "summary.json").read_text())["liquidity"]["seeds"] == [3]
    alone = tmp_path / "alone"
    assert main(["simulate", "--scenario", str(path), "--out", str(alone), "--quiet",
                 "--no-compare"]) == 0
    assert "5-trading-day holding rule" not in capsys.readouterr().out
    assert "to liquidity" not in (alone / "report.html").read_text()


def test_calibration_counts_a_credit_type_traded_on_its_listings_once(cbeex):
    from ccerx.scripts.simulate.calibration import measure
    _, result = cbeex
    assert 0 <= measure(result)["no_trade_day_share"] < 1


def test_the_daily_purchases_count_listings_of_the_type_too(cbeex):
    _, result = cbeex
    emitters = [a for a in result.agents if isinstance(a, Emitter)]
    assert result.days[-1].emitter_bought == {
        s: sum(e.bought_type.get(s, 0) for e in emitters) for s in result.scenario.symbols}
    assert sum(result.days[-1].emitter_bought.values()) > sum(
        e.bought.get(s, 0) for e in emitters for s in result.scenario.symbols)
