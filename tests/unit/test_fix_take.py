"""The take order (摘牌) over FIX: OrdType Q, RefOrderID (1080) for a named listing; and the
cbeex-2023 rules as a broker sees them (no run of the network: the application only)."""
from __future__ import annotations

import itertools

import pytest

from ccerx.engine.core.exchange import Exchange
from ccerx.engine.core.rules import CBEEX_2023, CONTINUOUS
from ccerx.engine.formats.config import load_instruments
from ccerx.gateway.config import ConfigError, GatewayConfig
from ccerx.gateway.fix import dictionary
from ccerx.gateway.fix.application import FixMessage, SessionKey
from ccerx.gateway.fix.translate import ExchangeApplication

B1 = SessionKey("FIX.4.4", "CCERX", "BROKER01")
B2 = SessionKey("FIX.4.4", "CCERX", "BROKER02")
T0 = 1_767_225_600_000_000_000
_seq = itertools.count(1)


def make_app(rules):
    config = GatewayConfig.demo()
    exchange = Exchange(load_instruments(None), config.build_accounts(), config.fee_ppm, rules)
    clock = itertools.count(T0, 1_000_000)
    return ExchangeApplication(exchange, config.comp_id, config.brokers, clock=lambda: next(clock))


def order(cl, account, side, qty, *extra):
    return FixMessage.of("D", (34, next(_seq)), (11, cl), (1, account), (55, "CCER-AFF"),
                         (54, side), (60, "20260101-00:00:00.000"), (38, qty), *extra)


def reports(out, session):
    return [m for k, m in out if k == session and m.msg_type == "8"]


@pytest.mark.parametrize("rules", [CONTINUOUS, CBEEX_2023], ids=lambda r: r.name)
def test_a_take_trades_at_the_best_level_only_and_expires_its_rest(rules):
    app = make_app(rules)
    app.on_message(B2, order("s1", "HOLD02", "2", 100, (40, "2"), (44, "62.00")))
    app.on_message(B2, order("s2", "HOLD02", "2", 100, (40, "2"), (44, "62.01")))
    out = app.on_message(B1, order("t1", "EMIT01", "1", 150, (40, "Q")))
    mine = reports(out, B1)
    assert [(m.get(150), m.get(39)) for m in mine] == [("0", "0"), ("F", "1"), ("C", "C")]
    assert mine[0].get(40) == "Q" and mine[0].get(44) == "62.00"   # priced at the best level
    assert (mine[1].get(32), mine[1].get(31)) == ("100", "62.00")
    assert mine[2].get(151) == "0" and mine[2].get(14) == "100"
    assert "best level" in mine[2].get(58)
    assert app.exchange.books["CCER-AFF"].best_ask() == 6201     # the next level untouched


def test_a_take_names_its_listing_by_ref_order_id():
    app = make_app(CBEEX_2023)
    app.on_message(B2, order("s1", "HOLD02", "2", 100, (40, "2"), (44, "62.00")))
    app.on_message(B2, order("s2", "HOLD02", "2", 100, (40, "2"), (44, "62.00")))
    out = app.on_message(B1, order("t1", "EMIT01", "1", 30, (40, "Q"), (1080, "BROKER02:s2")))
    fills = [m for m in reports(out, B2) if m.get(150) == "F"]
    assert [m.get(11) for m in fills] == ["s2"]                   # not the older s1
    out = app.on_message(B1, order("t2", "EMIT01", "1", 30, (40, "Q"), (1080, "BROKER02:nope")))
    (rejected,) = reports(out, B1)
    assert rejected.get(150) == "8" and rejected.get(58).startswith("order_not_resting")


def test_ref_order_id_on_a_limit_order_is_refused():
    app = make_app(CONTINUOUS)
    out = app.on_message(B1, order("l1", "EMIT01", "1", 30, (40, "2"), (44, "62.00"),
                                   (1080, "BROKER02:s1")))
    (rejected,) = reports(out, B1)
    assert rejected.get(150) == "8" and "1080" in rejected.get(58)
    assert app.exchange.books["CCER-AFF"].best_bid() is None


def test_under_cbeex_2023_ioc_and_amends_are_not_permitted_with_the_way_out():
    app = make_app(CBEEX_2023)
    out = app.on_message(B1, order("i1", "EMIT01", "1", 10, (40, "2"), (44, "62.00"), (59, "3")))
    (rejected,) = reports(out, B1)
    assert rejected.get(39) == "8" and rejected.get(58).startswith("not_permitted")
    app.on_message(B1, order("d1", "EMIT01", "1", 10, (40, "2"), (44, "62.00")))
    out = app.on_message(B1, FixMessage.of(
        "G", (34, next(_seq)), (41, "d1"), (11, "d2"), (55, "CCER-AFF"), (54, "1"),
        (60, "20260101-00:00:00.000"), (38, 20), (40, "2"), (44, "62.00")))
    (refused,) = [m for k, m in out if m.msg_type == "9"]
    assert "cancel the order and enter a new one" in refused.get(58)


def test_the_dictionary_accepts_ordtype_q_and_ref_order_id_on_a_new_order_only():
    assert dictionary.valid_value(40, "Q")
    assert 1080 in dictionary.MESSAGES["D"].fields
    assert 1080 not in dictionary.MESSAGES["G"].fields


def test_the_gateway_config_chooses_the_rules():
    demo = GatewayConfig.demo()
    assert demo.rule_profile() == CBEEX_2023                      # serve's default
    assert demo.rule_profile("continuous") == CONTINUOUS          # --rules wins
    from ccerx.gateway.config import DEMO_CONFIG
    custom = GatewayConfig.from_toml_text(DEMO_CONFIG.replace(
        '[gateway]\n', '[gateway]\nrules = "continuous"\nmax_order_qty = 500\n', 1))
    assert custom.rule_profile().name == "continuous" and custom.rule_profile().max_qty == 500
    with pytest.raises(ConfigError, match="gateway.rules"):
        GatewayConfig.from_toml_text(DEMO_CONFIG.replace('[gateway]\n',
                                                         '[gateway]\nrules = "nyse"\n', 1))
