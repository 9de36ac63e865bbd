"""Surveillance (rules Art.44): each detector on a constructed flow that must trigger it and on
a near miss that must not; the settings file; determinism; the default simulation does not
flood. Flows run through the real engine (`Exchange`), except the one thing the engine
refuses to make (a self-trade: self-trade prevention stops it), which is built as an event."""
from __future__ import annotations

import tomllib
from collections import Counter

import pytest

from ccerx.engine.core.commands import CancelOrder, Deposit, EndOfDay, NewOrder
from ccerx.engine.core.events import TradeExecuted
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.core.types import Side
from ccerx.engine.formats.ndjson import event_to_dict
from ccerx.engine.surveillance.config import SurveillanceConfig, load_config, parse_config
from ccerx.engine.surveillance.model import Disclosure
from ccerx.engine.surveillance.monitor import Surveillance, surveil
from ccerx.engine.surveillance.relations import RelatedAccounts, parse_relations
from ccerx.engine.surveillance.stream import EventDecoder
from tests.serve_process import REPO

S = 1_000_000_000
T0 = 1_772_415_000 * S          # 2026-03-02 01:30 UTC (09:30 in Beijing)
AFF = "CCER-AFF"                # reference 62.00


def units(price: str) -> int:
    whole, _, frac = price.partition(".")
    return int(whole) * 1_000_000 + int((frac + "00")[:2]) * 10_000


class Flow:
    """Commands through the real engine on a scripted clock; every event kept."""

    def __init__(self):
        self.exchange = Exchange()
        self.events = []
        self.n = 0

    def _apply(self, command):
        out = self.exchange.apply(command)
        self.events.extend(out)
        return out

    def order(self, account, side, qty, price, t, instrument=AFF):
        self.n += 1
        order_id = f"{account}-{self.n}"
        self._apply(NewOrder(order_id, account, instrument, side, "limit", "day",
                             units(price), qty, T0 + t * S))
        return order_id

    def buy(self, account, qty, price, t, instrument=AFF):
        return self.order(account, "buy", qty, price, t, instrument)

    def sell(self, account, qty, price, t, instrument=AFF):
        return self.order(account, "sell", qty, price, t, instrument)

    def cancel(self, order_id, t):
        self._apply(CancelOrder(order_id, T0 + t * S))

    def deposit(self, deposit_id, account, instrument, qty, t):
        self._apply(Deposit(deposit_id, account, instrument, qty, T0 + t * S))

    def eod(self, t):
        self._apply(EndOfDay(T0 + t * S))

    def trade(self, buyer, seller, qty, price, t):
        """A trade between two named accounts (the book is empty at that price before)."""
        self.sell(seller, qty, price, t)
        self.buy(buyer, qty, price, t)

    def alerts(self, related=None, config=None, extra=()):
        return surveil([*self.events, *extra], config, related, list(Exchange().specs.values()))


def kinds(alerts):
    return Counter((a.rule, a.kind) for a in alerts)


def background(flow, t=0):
    """Ordinary trading at 62.00 between unrelated accounts."""
    for k in range(5):
        flow.trade(f"BUY{k}", f"SELL{k}", 100, "62.00", t + k)


# ---------------------------------------------------------------------- Art.44(1)
def _insider_flow(insider_sells=6_000, insider_buys=0):
    flow = Flow()
    background(flow)
    for k in range(insider_sells // 1_000):
        flow.trade(f"EMIT{k}", "INSIDER", 1_000, "62.00", 100 + k * 600)
    if insider_buys:
        flow.trade("INSIDER", "OTHER", insider_buys, "62.00", 5_000)
    flow.deposit("ISS-1", "PROJ01", AFF, 60_000, 8 * 3600)   # issuance batch: negative news
    return flow


def test_pre_disclosure_selling_before_an_issuance_batch():
    flow = _insider_flow()
    alerts = flow.alerts()
    assert kinds(alerts) == {("pre_disclosure", "before_negative"): 1}
    [alert] = alerts
    deposit_seq = flow.events[-1].seq
    assert alert.accounts == ("INSIDER",) and alert.instrument == AFF
    assert alert.trigger_seq == deposit_seq and deposit_seq in alert.evidence
    sells = [e.seq for e in flow.events if type(e) is TradeExecuted and e.sell_account == "INSIDER"]
    assert set(sells) <= set(alert.evidence) and len(sells) == 6
    assert alert.details["net_qty"] == 6_000 and alert.score >= 1_000


def test_pre_disclosure_near_misses():
    assert _insider_flow(insider_sells=4_000).alerts() == []          # below min_qty_t
    assert _insider_flow(insider_buys=3_000).alerts() == []           # not one-sided enough
    small = _insider_flow()
    small.events[-1] = small.events[-1]._replace(amount=49_999)       # no issuance announcement
    assert small.alerts() == []
    # an explicit disclosure of good news: selling ahead of it is not trading on it
    flow = _insider_flow()
    good = Disclosure(flow.events[-1].seq, T0 + 8 * 3600 * S, AFF, "positive", "ANN-1", "新方法学")
    assert [a for a in flow.alerts(extra=[good]) if a.details.get("disclosure_id") == "ANN-1"] == []
    bad = good._replace(direction="negative", disclosure_id="ANN-2")
    [hit] = [a for a in flow.alerts(extra=[bad]) if a.details.get("disclosure_id") == "ANN-2"]
    assert hit.accounts == ("INSIDER",) and "新方法学" in hit.text


# ---------------------------------------------------------------------- Art.44(2)
RELATED = parse_relations({"relation": [{"kind": "group", "name": "华能集团",
                                         "accounts": ["GRP-A", "GRP-B"]}]})


def test_wash_between_related_accounts():
    flow = Flow()
    background(flow)
    flow.trade("GRP-A", "GRP-B", 500, "62.00", 100)
    flow.trade("GRP-B", "GRP-A", 500, "62.00", 200)
    alerts = flow.alerts(RELATED)
    assert kinds(alerts) == {("wash", "related"): 1}
    [alert] = alerts
    assert alert.accounts == ("GRP-A", "GRP-B") and alert.details["relation_name"] == "华能集团"
    pair = [e.seq for e in flow.events if type(e) is TradeExecuted
            and {e.buy_account, e.sell_account} == {"GRP-A", "GRP-B"}]
    assert list(alert.evidence) == pair
    # near misses: the same trades without the relation; or the second trade after the window
    assert flow.alerts() == []
    late = Flow()
    late.trade("GRP-A", "GRP-B", 500, "62.00", 100)
    late.trade("GRP-B", "GRP-A", 500, "62.00", 100 + 3_601)
    assert late.alerts(RELATED) == []


def test_wash_round_trips_between_a_fixed_pair():
    def flow_of(n):
        flow = Flow()
        for k in range(n):
            buyer, seller = ("FIX-X", "FIX-Y") if k % 2 == 0 else ("FIX-Y", "FIX-X")
            flow.trade(buyer, seller, 300, "62.00", 60 * k)
        return flow
    assert kinds(flow_of(6).alerts()) == {("wash", "round_trip"): 1}
    assert flow_of(5).alerts() == []


def test_wash_self_trade():
    trade = TradeExecuted(99, T0, 1, AFF, 6200, 100, "o1", "o2", Side.BUY, "SAME", "SAME")
    [alert] = surveil([trade])
    assert (alert.rule, alert.kind, alert.accounts, alert.evidence) == (
        "wash", "self_trade", ("SAME",), (99,))
    # the engine's own self-trade prevention: the resting order is cancelled, no trade
    flow = Flow()
    flow.sell("SAME", 100, "62.00", 0)
    flow.buy("SAME", 100, "62.00", 1)
    assert not [e for e in flow.events if type(e) is TradeExecuted] and flow.alerts() == []


# ---------------------------------------------------------------------- Art.44(3)
def test_ramping_large_order_and_far_from_the_last_trade():
    flow = Flow()
    background(flow)
    flow.buy("BIG", 20_000, "61.00", 100)
    flow.buy("FAR", 500, "64.00", 200)       # 3.2 % above the last trade (62.00)
    alerts = flow.alerts()
    assert kinds(alerts) == {("ramping", "large_order"): 1, ("ramping", "far_from_last"): 1}
    far = next(a for a in alerts if a.kind == "far_from_last")
    assert far.accounts == ("FAR",) and far.details["beyond_bp"] == 322
    near = Flow()
    background(near)
    near.buy("BIG", 19_999, "61.00", 100)
    near.buy("FAR", 500, "63.80", 200)       # 2.9 %
    near.buy("LOW", 500, "58.00", 300)       # far, but passive: below the market
    near.sell("LOW2", 499, "58.00", 400)     # far and aggressive, but small
    assert near.alerts() == []


def _ramp(spacing_s):
    flow = Flow()
    background(flow)
    for k in range(12):
        flow.sell("MAKER", 100, f"62.{10 * (k + 1):02d}" if k < 9 else f"63.{10 * (k - 9):02d}", 50)
    for k in range(12):
        flow.buy("RAMP", 100, "64.00" if k == 0 else "63.50", 100 + k * spacing_s)
    return flow


def test_ramping_a_dense_run_that_moves_the_price():
    flow = _ramp(spacing_s=5)
    dense = [a for a in flow.alerts() if a.kind == "dense"]
    assert len(dense) == 1 and dense[0].accounts == ("RAMP",)
    assert dense[0].details["orders"] == 12 and dense[0].details["moved_bp"] >= 150
    # near miss: the same orders spread over eleven minutes
    assert [a for a in _ramp(spacing_s=60).alerts() if a.kind == "dense"] == []


# ---------------------------------------------------------------------- Art.44(4)
def _spoof(cancel_after_s, filled=0):
    flow = Flow()
    background(flow)
    flow.buy("MM", 500, "61.90", 10)
    flow.sell("MM2", 500, "62.10", 10)
    order = flow.buy("SPOOF", 6_000, "61.95", 100)
    if filled:
        flow.sell("HIT", filled, "61.95", 101)
    flow.cancel(order, 100 + cancel_after_s)
    return flow


def test_spoofing_a_large_order_near_the_touch_cancelled_quickly():
    alerts = _spoof(cancel_after_s=10).alerts()
    assert kinds(alerts) == {("spoofing", "large_cancel"): 1}
    assert alerts[0].accounts == ("SPOOF",) and alerts[0].details["seconds"] == 10
    assert _spoof(cancel_after_s=31).alerts() == []            # rested long enough
    assert _spoof(cancel_after_s=10, filled=601).alerts() == []  # it traded (over 10 %)


def test_spoofing_order_to_trade_ratio_over_a_day():
    def flow_of(n):
        flow = Flow()
        background(flow)
        for k in range(n):
            order = flow.buy("LAYER", 100, "61.50", 100 + k)
            flow.cancel(order, 100 + k)
        flow.eod(5 * 3600)
        return flow
    [alert] = flow_of(100).alerts()
    assert (alert.kind, alert.accounts, alert.details["orders"]) == ("order_to_trade", ("LAYER",), 100)
    assert flow_of(99).alerts() == []


# ---------------------------------------------------------------------- Art.44(5)
def test_value_transfer_buying_high_from_one_account():
    def flow_of(price):
        flow = Flow()
        background(flow)
        for k in range(3):
            flow.trade("PAYER", "TAKER", 100, price, 100 + k * 60)
        return flow
    alerts = flow_of("64.00").alerts()
    assert kinds(alerts) == {("value_transfer", "transfer"): 1}
    assert alerts[0].accounts == ("PAYER", "TAKER") and alerts[0].details["transfer_fen"] == 3 * 200 * 100
    assert flow_of("63.00").alerts() == []        # 1.6 % from the market: ordinary


def test_value_transfer_round_trip_buy_high_sell_low():
    flow = Flow()
    background(flow)
    flow.trade("PAYER", "TAKER", 10_000, "63.30", 100)    # +1.30 above 62.00
    flow.trade("TAKER", "PAYER", 10_000, "60.70", 200)    # -1.30 below: PAYER sells low
    [alert] = [a for a in flow.alerts() if a.rule == "value_transfer"]
    assert alert.accounts == ("PAYER", "TAKER") and alert.details["transfer_fen"] == 2 * 130 * 10_000
    assert alert.details["trades"] == 2


# ---------------------------------------------------------------------- settings, determinism
def test_the_settings_file_lists_every_default():
    data = tomllib.loads((REPO / "scenarios" / "surveillance.toml").read_text())
    assert parse_config(data) == SurveillanceConfig()
    listed = {(s, k) for s, table in data.items() for k in table}
    known = {(s, k) for s, section in SurveillanceConfig().to_dict().items() for k in section}
    assert listed == known


@pytest.mark.parametrize("data, words", [
    ({"wash": {"windows_s": 10}}, "no setting 'windows_s'"),
    ({"wash": {"window_s": 1.5}}, "non-negative integer"),
    ({"ramping": {"large_order_t": -1}}, "non-negative integer"),
    ({"spoofs": {}}, "unknown section [spoofs]"),
    ({"wash": {"enabled": 1}}, "true or false"),
])
def test_bad_settings_are_refused_by_name(data, words):
    with pytest.raises(ValueError, match=None) as err:
        parse_config(data)
    assert words in str(err.value)


def test_a_disabled_detector_raises_nothing(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("[spoofing]\nenabled = false\n")
    assert _spoof(10).alerts(config=load_config(path)) == []


def test_events_file_lines_give_the_same_alerts_as_the_engine_events():
    flow = _spoof(10)
    flow.events += _ramp(5).events       # (the check needs no unique seq numbers)
    flow.eod(5 * 3600)
    specs = list(Exchange().specs.values())
    decoder = EventDecoder(specs)
    decoded = [decoder.decode(event_to_dict(e, Exchange().specs)) for e in flow.events]
    expected = surveil(flow.events, specs=specs)
    assert {a.kind for a in expected} >= {"large_cancel", "dense"}
    assert surveil(decoded, specs=specs) == expected


def test_related_accounts_file_errors():
    with pytest.raises(ValueError, match="kind must be one of"):
        parse_relations({"relation": [{"kind": "friends", "accounts": ["A", "B"]}]})
    with pytest.raises(ValueError, match="at least two"):
        parse_relations({"relation": [{"kind": "group", "accounts": ["A"]}]})
    related = RelatedAccounts([("beneficial_owner", "张三", ["A", "B", "C"])])
    assert related.related("C", "A") == ("beneficial_owner", "张三") and related.related("A", "D") is None


# ---------------------------------------------------------------------- the simulation
def test_the_default_simulation_does_not_flood():
    """One day of the default scenario (the 5-day counts are in benchmarks/README.md): no
    wash, ramping, value-transfer or disclosure alerts, and a handful of spoofing ones (the
    market makers who requote all day and rarely trade)."""
    from ccerx.scripts.simulate.run import Session
    from ccerx.scripts.simulate.scenario import load_scenario
    session = Session(load_scenario(None, days=1))
    exchange = session.venue.exchange
    monitor = Surveillance(specs=list(exchange.specs.values()))
    alerts, apply = [], exchange.apply

    def watched(command):
        events = apply(command)
        for event in events:
            alerts.extend(monitor.feed(event))
        return events
    session.venue.send = watched     # every command, issuance and end of day too
    result = session.run()
    alerts += monitor.finish()
    assert len(result.trades) > 5_000
    by_rule = Counter(a.rule for a in alerts)
    assert set(by_rule) <= {"spoofing"} and by_rule["spoofing"] <= 15, by_rule
