"""Credits as lots on the FIX wire (gateway/fix/lots.py), without a network: what the
SecurityList says of a contract with a vintage range and of a pooled instrument, and the
NoUnderlyings of a fill that delivered a contract's default lot and a project lot.
tests/integration/test_lots_gateway.py runs listings, trades and retirements end to end."""
from __future__ import annotations

import itertools

import pytest

from ccerx.engine.core.commands import DefineInstrument, Deposit
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.core.types import InstrumentSpec
from ccerx.engine.formats.config import load_instruments
from ccerx.gateway.config import GatewayConfig
from ccerx.gateway.fix.application import FixMessage, SessionKey
from ccerx.gateway.fix.lots import attribute_texts, delivered_lots, vintage_text
from ccerx.gateway.fix.translate import ExchangeApplication

B1 = SessionKey("FIX.4.4", "CCERX", "BROKER01")
B2 = SessionKey("FIX.4.4", "CCERX", "BROKER02")
T0 = 1_767_225_600_000_000_000
_seq = itertools.count(1)


@pytest.fixture
def app():
    config = GatewayConfig.demo()
    exchange = Exchange(load_instruments(None), config.build_accounts())
    clock = itertools.count(T0, 1_000_000)
    return ExchangeApplication(exchange, config.comp_id, config.brokers, clock=lambda: next(clock))


def _send(app, session, msg_type, *fields):
    return app.on_message(session, FixMessage.of(msg_type, (34, next(_seq)), *fields))


def _order(app, session, cl, account, side, qty, price, symbol="CCER-AFF"):
    return _send(app, session, "D", (11, cl), (1, account), (55, symbol), (54, side),
                 (60, "20260101-00:00:00.000"), (38, qty), (40, "2"), (44, price))


def _entries(fields, count_tag, first_tag):
    start = [t for t, _ in fields].index(count_tag) + 1
    out = []
    for tag, value in fields[start:]:
        if tag == first_tag:
            out.append([])
        out[-1].append((tag, value))
    return out


def _security_list(app) -> dict:
    [(_, answer)] = _send(app, B1, "x", (320, "sl"), (559, "4"))
    return {dict(e)[55]: e for e in _entries(answer.fields, 146, 55)}


def test_a_contract_with_a_vintage_range_and_a_pooled_instrument(app):
    for spec in (InstrumentSpec("AFF-RECENT", credit_type="afforestation", vintage_from=2021,
                                vintage_to=2023),
                 InstrumentSpec("AFF-NEW", credit_type="afforestation", vintage_from=2022),
                 InstrumentSpec("FLOW1")):
        app.run_operator_command(DefineInstrument(spec, T0))
    entries = _security_list(app)
    recent = entries["AFF-RECENT"]
    assert [v for t, v in recent if t in (233, 234)] == ["PRICE", "55.80-68.20", "PROD",
                                                         "2021-2023"]
    assert (872, "Kind=contract") in recent
    assert (762, "afforestation") in recent and 455 not in dict(recent)
    assert dict(recent)[232] == "2"
    assert [v for t, v in entries["AFF-NEW"] if t == 234][1] == "2022-"
    pooled = dict(entries["FLOW1"])
    assert not {454, 455, 460, 762} & set(pooled) and pooled[232] == "1"
    assert not any(v.startswith("Kind=") for t, v in entries["FLOW1"] if t == 872)
    assert "contract: any afforestation lot of vintage 2021-2023; " in dict(recent)[58]


def test_a_fill_names_the_default_lot_by_the_contracts_symbol(app):
    # EMIT01 holds 10 t of CCER-AFF from before lots (its default lot) and 20 t of a 2022 lot
    for deposit in (Deposit("D-1", "EMIT01", "CCER-AFF", 10, T0),
                    Deposit("D-2", "EMIT01", None, 20, T0, credit_type="afforestation",
                            project="CCER-14-2024-0009", vintage=2022)):
        app.run_operator_command(deposit)
    _order(app, B1, "s1", "EMIT01", "2", 30, "62.00")
    out = _order(app, B2, "b1", "EMIT02", "1", 30, "62.00")
    fills = [m for _, m in out if m.msg_type == "8" and m.get(150) == "F"]
    assert len(fills) == 2                             # the buyer's and the seller's
    for fill in fills:
        tags = [t for t, _ in fill.fields]
        assert tags.index(55) < tags.index(711) < tags.index(54)
        default, lot = _entries(fill.fields[tags.index(711):tags.index(54)], 711, 311)
        assert default == [(311, "CCER-AFF"), (879, "10")]
        assert lot == [(311, "CCER-14-2024-0009@2022"), (457, "1"), (458, "CCER-14-2024-0009"),
                       (459, "H"), (879, "20"), (887, "1"), (888, "PROD"), (889, "2022")]


def test_a_pooled_delivery_has_no_underlyings(app):
    _order(app, B2, "s1", "HOLD02", "2", 5, "62.00")      # HOLD02: the default lot only
    out = _order(app, B1, "b1", "EMIT01", "1", 5, "62.00")
    [fill] = [m for k, m in out if k == B1 and m.get(150) == "F"]
    assert 711 not in fill
    assert delivered_lots("CCER-AFF", ()) == []


def test_the_texts():
    listing = InstrumentSpec("AFF-1", credit_type="afforestation", project="P-1", vintage=2023,
                             tradable_from=3)
    assert vintage_text(listing) == "2023"
    assert attribute_texts(listing, 1) == ("Kind=listing", "TradableFrom=D+2")
    assert attribute_texts(listing, 3) == ("Kind=listing",)
    upto = InstrumentSpec("AFF-OLD", credit_type="afforestation", vintage_to=2020)
    assert vintage_text(upto) == "-2020" and vintage_text(InstrumentSpec("CCER-AFF")) == ""
