"""Issue 14 item 2 over FIX, without a network: the kill switch and restrictions told to the
member (News B + ExecutionReports 150=4), OrderMassCancelRequest (q) -> OrderMassCancelReport
(r) + ExecutionReports, drop copy sessions, and position limits from the gateway config."""
from __future__ import annotations

import itertools

import pytest

from ccerx.engine.core.commands import Restrict
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.formats.config import load_instruments
from ccerx.gateway.config import DEMO_CONFIG, ConfigError, GatewayConfig
from ccerx.gateway.fix import dictionary
from ccerx.gateway.fix.application import FixMessage, SessionKey
from ccerx.gateway.fix.codec import read_text
from ccerx.gateway.fix.translate import ExchangeApplication

B1 = SessionKey("FIX.4.4", "CCERX", "BROKER01")
B2 = SessionKey("FIX.4.4", "CCERX", "BROKER02")
DC = SessionKey("FIX.4.4", "CCERX", "BROKER01-DC")
T0 = 1_767_225_600_000_000_000
_seq = itertools.count(1)

EXTRA = """
[[broker]]
comp_id = "BROKER01-DC"
drop_copy_for = "BROKER01"

[limits]
report_pct = "50"
[limits.key_emission_unit]
per_instrument = 1000
total = 1500
"""


def make_app(text=DEMO_CONFIG + EXTRA):
    config = GatewayConfig.from_toml_text(text)
    exchange = Exchange(load_instruments(None), config.build_accounts())
    clock = itertools.count(T0, 1_000_000)
    return ExchangeApplication(exchange, config.comp_id, config.brokers, clock=lambda: next(clock))


@pytest.fixture
def app():
    return make_app()


def msg(msg_type, *fields):
    return FixMessage.of(msg_type, (34, next(_seq)), *fields)


def new_order(cl, account, side, qty, price="62.00", symbol="CCER-AFF"):
    return msg("D", (11, cl), (1, account), (55, symbol), (54, side),
               (60, "20260101-00:00:00.000"), (38, qty), (40, "2"), (44, price))


def mass_cancel(cl, kind, symbol=None, side=None):
    fields = [(11, cl), (530, kind)]
    if symbol:
        fields.append((55, symbol))
    if side:
        fields.append((54, side))
    return msg("q", *fields, (60, "20260101-00:00:00.000"))


def to(out, session, msg_type=None):
    return [m for k, m in out if k == session and (msg_type is None or m.msg_type == msg_type)]


def valid(message: FixMessage):
    """The gateway's own FIX 4.4 dictionary accepts the body (as a broker's engine would)."""
    raw = [(8, "FIX.4.4"), (9, "0"), (35, message.msg_type), (49, "CCERX"), (56, "B"),
           (34, "1"), (52, "20260101-00:00:00.000")]
    raw += [f for f in message.fields if f[0] != 35] + [(10, "000")]
    dictionary.validate(raw)


def test_mass_cancel_of_one_symbol_cancels_only_the_members_own_orders(app):
    app.on_message(B1, new_order("a", "EMIT01", "1", 10, "61.00"))
    app.on_message(B1, new_order("b", "EMIT01", "1", 10, "61.10"))
    app.on_message(B1, new_order("c", "EMIT01", "1", 10, "74.00", symbol="CCER-SOL"))
    app.on_message(B2, new_order("d", "EMIT02", "1", 10, "61.20"))
    out = app.on_message(B1, mass_cancel("mc1", "1", "CCER-AFF"))
    report = out[0][1]
    assert out[0][0] == B1 and report.msg_type == "r"
    assert (report.get(11), report.get(530), report.get(531), report.get(533)) == (
        "mc1", "1", "1", "2")
    ers = to(out, B1, "8")
    assert sorted(m.get(11) for m in ers) == ["a", "b"]
    assert {(m.get(150), m.get(39)) for m in ers} == {("4", "4")}
    assert set(app.exchange.books["CCER-AFF"].orders) == {"BROKER02:d"}
    for m in [report, *ers]:
        valid(m)
    everything = app.on_message(B1, mass_cancel("mc2", "7"))
    assert everything[0][1].get(533) == "1" and to(everything, B2) == []
    assert "BROKER01:c" not in app.exchange.books["CCER-SOL"].orders


def test_a_mass_cancel_it_cannot_do_is_refused_in_the_report(app):
    app.on_message(B1, new_order("a", "EMIT01", "1", 10, "61.00"))
    for kind, symbol, reason in (("3", None, "0"), ("1", "CCER-XXX", "1"), ("1", None, "1")):
        out = app.on_message(B1, mass_cancel("m" + kind, kind, symbol))
        assert len(out) == 1
        report = out[0][1]
        assert (report.get(531), report.get(532), report.get(533)) == ("0", reason, "0")
        valid(report)
    assert "BROKER01:a" in app.exchange.books["CCER-AFF"].orders


def test_kill_tells_the_member_by_news_then_cancels_its_orders_with_execution_reports(app):
    app.on_message(B1, new_order("a", "EMIT01", "1", 10, "61.00"))
    app.on_message(B1, new_order("s", "HOLD01", "2", 10, "63.00"))
    app.on_message(B2, new_order("d", "EMIT02", "1", 10, "61.20"))
    events = []
    out = app.run_operator_command(Restrict("member", "BROKER01", "both", True, T0), events)
    mine = to(out, B1)
    assert [m.msg_type for m in mine] == ["B", "8", "8"]
    news = mine[0]
    assert news.get(148) == "kill switch" and "BROKER01" in read_text(news.fields)
    valid(news)
    assert {(m.get(150), m.get(11)) for m in mine[1:]} == {("4", "a"), ("4", "s")}
    assert all("kill switch" in m.get(58) for m in mine[1:])
    assert to(out, B2) == []
    # the drop copy of BROKER01 gets the ExecutionReports, not the News
    assert [m.get(11) for m in to(out, DC)] == [m.get(11) for m in mine[1:]]
    refused = to(app.on_message(B1, new_order("e", "EMIT01", "1", 10, "61.00")), B1)[0]
    assert refused.get(150) == "8" and "restricted" in refused.get(58)
    lifted = app.run_operator_command(Restrict("member", "BROKER01", "none", False, T0))
    assert to(lifted, B1)[0].get(148) == "restriction lifted"
    assert to(app.on_message(B1, new_order("f", "EMIT01", "1", 10, "61.00")), B1)[0].get(150) == "0"


def test_the_drop_copy_gets_every_execution_report_and_may_send_no_orders(app):
    out = app.on_message(B1, new_order("a", "EMIT01", "1", 10, "62.00"))
    assert [m.get(11) for m in to(out, DC)] == ["a"]
    out = app.on_message(B2, new_order("x", "HOLD02", "2", 10, "62.00"))    # trades with a
    copies = to(out, DC)
    assert [(m.get(11), m.get(150)) for m in copies] == [("a", "F")]
    assert copies[0] is to(out, B1)[0]
    refused = app.on_message(DC, new_order("z", "EMIT01", "1", 10, "62.00"))
    assert [(k, m.msg_type, m.get(380)) for k, m in refused] == [(DC, "j", "4")]
    assert app.exchange.books["CCER-AFF"].orders == {}


def test_position_limits_from_the_config_reject_over_fix(app):
    assert app.exchange.accounts.limits          # genesis: from [limits]
    report = to(app.on_message(B1, new_order("a", "EMIT01", "1", 1001, "61.00")), B1)[0]
    assert report.get(150) == "8" and report.get(58).startswith("position_limit")
    assert report.get(103) == "3"
    assert to(app.on_message(B1, new_order("b", "EMIT01", "1", 1000, "61.00")), B1)[0].get(150) == "0"


@pytest.mark.parametrize("extra, error", [
    ('\n[limits.nobody]\ntotal = 5\n', "participant type"),
    ('\n[limits.key_emission_unit]\ntotal = -5\n', "positive"),
    ('\n[limits]\nreport_pct = "150"\n', "report_pct"),
    ('\n[[broker]]\ncomp_id = "DC2"\ndrop_copy_for = "NOBODY"\n', "drop_copy_for"),
])
def test_bad_risk_settings_in_the_config_are_refused(extra, error):
    with pytest.raises(ConfigError, match=error):
        GatewayConfig.from_toml_text(DEMO_CONFIG + extra)


def test_the_control_socket_takes_the_risk_ops_stamped_and_refuses_a_bad_one():
    from ccerx.engine.core.commands import SetLimits
    from ccerx.gateway.control import Refused, handle_line
    assert handle_line(b'{"op":"kill","member":"BROKER01"}', clock=lambda: 5) == Restrict(
        "member", "BROKER01", "both", True, 5)
    assert handle_line(b'{"op":"restrict","account":"EMIT01","side":"sell"}',
                       clock=lambda: 5) == Restrict("account", "EMIT01", "sell", False, 5)
    assert handle_line(b'{"op":"unrestrict","account":"EMIT01"}', clock=lambda: 5) == Restrict(
        "account", "EMIT01", "none", False, 5)
    assert handle_line(b'{"op":"limits","limits":{"project_owner":{"total":10}}}',
                       clock=lambda: 5) == SetLimits((("project_owner", None, 10),), 0, 5)
    refused = handle_line(b'{"op":"restrict","account":"EMIT01","side":"up"}')
    assert type(refused) is Refused and "side" in refused.error


def test_a_large_holder_is_reported_to_the_operator(app, caplog):
    app.on_message(B2, new_order("s", "HOLD02", "2", 600, "62.00"))
    with caplog.at_level("WARNING", logger="gateway.risk"):
        out = app.on_message(B1, new_order("b", "EMIT01", "1", 600, "62.00"))
    assert [m.get(150) for m in to(out, B1, "8")] == ["0", "F"]
    assert any("Art.38 large holder: account EMIT01 holds 600 t of CCER-AFF (limit 1000 t)"
               in r.getMessage() for r in caplog.records)


def test_an_accounts_restriction_is_news_to_its_member_only(app):
    out = app.run_operator_command(Restrict("account", "EMIT02", "buy", False, T0))
    assert [(k, m.msg_type, m.get(148)) for k, m in out] == [(B2, "B", "restricted")]
    assert "buy orders" in read_text(out[0][1].fields)
    refused = to(app.on_message(B2, new_order("b", "EMIT02", "1", 10, "61.00")), B2)[0]
    assert refused.get(150) == "8" and "restricted" in refused.get(58)
    assert to(app.on_message(B2, new_order("s", "HOLD02", "2", 10, "63.00")), B2)[0].get(150) == "0"


@pytest.mark.parametrize("argv, request_", [
    (["restrict", "EMIT01", "--side", "sell"], {"op": "restrict", "account": "EMIT01", "side": "sell"}),
    (["restrict", "--member", "BROKER01"], {"op": "restrict", "member": "BROKER01", "side": "both"}),
    (["kill", "EMIT01"], {"op": "kill", "account": "EMIT01"}),
    (["unrestrict", "--member", "BROKER01"], {"op": "unrestrict", "member": "BROKER01"}),
    (["limits", "key_emission_unit=500000/1000000", "project_owner=-/9", "--report-pct", "50"],
     {"op": "limits", "limits": {"key_emission_unit": {"per_instrument": 500000, "total": 1000000},
                                 "project_owner": {"total": 9}}, "report_pct": "50"}),
    (["limits"], {"op": "limits", "limits": {}, "report_pct": "0"}),
])
def test_ccerx_operator_builds_the_risk_requests(argv, request_):
    import argparse
    from ccerx.scripts import cmd_operator
    parser = argparse.ArgumentParser()
    cmd_operator.add_parser(parser.add_subparsers())
    args = parser.parse_args(["operator", *argv])
    assert cmd_operator.requests_for(args) == [request_]
    assert type(handle_line_of(request_)).__name__ in ("Restrict", "SetLimits")


def handle_line_of(request):
    import orjson
    from ccerx.gateway.control import handle_line
    return handle_line(orjson.dumps(request), clock=lambda: 1)


def test_ccerx_operator_refuses_an_account_and_a_member_together(capsys):
    from ccerx.scripts.ccerx import main
    assert main(["operator", "kill", "EMIT01", "--member", "BROKER01", "--control",
                 "/nonexistent.sock"]) == 2
    assert "ACCOUNT or --member" in capsys.readouterr().err
