"""The exchange application against a real Exchange: FIX messages in, FIX messages out (no network)."""
from __future__ import annotations

import itertools

import pytest

from ccerx.engine.formats.config import load_instruments
from ccerx.engine.core.exchange import Exchange
from ccerx.gateway.config import GatewayConfig
from ccerx.gateway.fix.application import FixMessage, SessionKey
from ccerx.gateway.fix.translate import ExchangeApplication, utc_timestamp

B1 = SessionKey("FIX.4.4", "CCERX", "BROKER01")
B2 = SessionKey("FIX.4.4", "CCERX", "BROKER02")
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
_seq = itertools.count(1)


@pytest.fixture
def app():
    config = GatewayConfig.demo()
    exchange = Exchange(load_instruments(None), config.build_accounts())
    clock = itertools.count(T0, 1_000_000)
    return ExchangeApplication(exchange, config.comp_id, config.brokers, clock=lambda: next(clock))


def msg(msg_type, *fields):
    return FixMessage.of(msg_type, (34, next(_seq)), *fields)


def new_order(cl, account, side, qty, price=None, symbol="CCER-AFF", ord_type="2", tif=None):
    fields = [(11, cl), (1, account), (55, symbol), (54, side), (60, "20260101-00:00:00.000"),
              (38, qty), (40, ord_type)]
    if price is not None:
        fields.append((44, price))
    if tif is not None:
        fields.append((59, tif))
    return msg("D", *fields)


def cancel(cl, orig, side="1", symbol="CCER-AFF", order_id=None):
    fields = [(41, orig), (11, cl), (55, symbol), (54, side), (60, "20260101-00:00:00.000"),
              (38, 1)]
    if order_id:
        fields.insert(1, (37, order_id))
    return msg("F", *fields)


def replace(cl, orig, qty, price, side="1", symbol="CCER-AFF", order_id=None):
    fields = [(41, orig), (11, cl), (55, symbol), (54, side), (60, "20260101-00:00:00.000"),
              (38, qty), (40, "2"), (44, price)]
    if order_id:
        fields.insert(0, (37, order_id))
    return msg("G", *fields)


def only(out, session=None):
    assert len(out) == 1, out
    key, message = out[0]
    if session is not None:
        assert key == session
    return message


def reports(out, session):
    return [m for k, m in out if k == session and m.msg_type == "8"]


def test_new_order_is_acknowledged_with_fix44_values(app):
    report = only(app.on_message(B1, new_order("c1", "EMIT01", "1", 100, "61.50")), B1)
    assert report.msg_type == "8"
    assert report.get(37) == "BROKER01:c1" and report.get(11) == "c1"
    assert (report.get(150), report.get(39)) == ("0", "0")
    assert (report.get(151), report.get(14), report.get(6)) == ("100", "0", "0")
    assert (report.get(1), report.get(55), report.get(54), report.get(44)) == (
        "EMIT01", "CCER-AFF", "1", "61.50")
    assert report.get(59) == "0"
    assert report.get(60) == utc_timestamp(T0 + 1_000_000)  # the clock's second reading (first: boot id)
    assert app.exchange.books["CCER-AFF"].best_bid() == 6150
    # the engine saw the broker as the order's owner
    assert app.exchange.books["CCER-AFF"].orders["BROKER01:c1"].owner == "BROKER01"


def test_cross_between_brokers_sends_fills_to_both_owners(app):
    app.on_message(B2, new_order("s1", "HOLD02", "2", 100, "62.00"))
    out = app.on_message(B1, new_order("b1", "EMIT01", "1", 60, "62.10"))
    buyer = reports(out, B1)
    seller = reports(out, B2)
    assert [r.get(150) for r in buyer] == ["0", "F"]
    fill = buyer[1]
    assert (fill.get(39), fill.get(32), fill.get(31), fill.get(151), fill.get(14), fill.get(6)) == (
        "2", "60", "62.00", "0", "60", "62.00")
    assert fill.get(12) == "22.32" and fill.get(13) == "3"  # 0.6% of 3720.00 CNY
    assert len(seller) == 1
    maker = seller[0]
    assert (maker.get(37), maker.get(11), maker.get(150), maker.get(39)) == (
        "BROKER02:s1", "s1", "F", "1")
    assert (maker.get(32), maker.get(31), maker.get(151), maker.get(14)) == ("60", "62.00", "40", "60")
    exec_ids = [m.get(17) for _, m in out if m.msg_type == "8"]
    assert len(set(exec_ids)) == len(exec_ids)


def test_avg_px_is_exact_decimal_over_several_fills(app):
    app.on_message(B2, new_order("s1", "HOLD02", "2", 1, "62.00"))
    app.on_message(B2, new_order("s2", "HOLD02", "2", 2, "62.01"))
    out = app.on_message(B1, new_order("b1", "EMIT01", "1", 3, "62.01"))
    last = reports(out, B1)[-1]
    assert (last.get(39), last.get(14), last.get(6)) == ("2", "3", "62.006667")


def test_cancel_then_status_and_too_late(app):
    app.on_message(B1, new_order("c1", "EMIT01", "1", 100, "61.50"))
    report = only(app.on_message(B1, cancel("c2", "c1")), B1)
    assert (report.get(150), report.get(39), report.get(11), report.get(41)) == ("4", "4", "c2", "c1")
    assert report.get(151) == "0"
    assert "BROKER01:c1" not in app.exchange.books["CCER-AFF"].orders
    status = only(app.on_message(B1, msg("H", (11, "c2"), (55, "CCER-AFF"), (54, "1"))), B1)
    assert (status.get(150), status.get(39), status.get(37)) == ("I", "4", "BROKER01:c1")
    again = only(app.on_message(B1, cancel("c3", "c2")), B1)
    assert again.msg_type == "9"
    assert (again.get(434), again.get(102), again.get(39)) == ("1", "0", "4")


def test_replace_changes_price_and_total_qty_and_tracks_latest_cl_ord_id(app):
    app.on_message(B1, new_order("c1", "EMIT01", "1", 100, "61.50"))
    report = only(app.on_message(B1, replace("c2", "c1", 150, "61.60")), B1)
    assert (report.get(150), report.get(39), report.get(11), report.get(41)) == ("5", "0", "c2", "c1")
    assert (report.get(38), report.get(44), report.get(151)) == ("150", "61.60", "150")
    order = app.exchange.books["CCER-AFF"].orders["BROKER01:c1"]
    assert (order.price, order.open_qty) == (6160, 150)
    # a replace that crosses: Replaced, then the fill, for the latest ClOrdID
    app.on_message(B2, new_order("s1", "HOLD02", "2", 40, "61.70"))
    out = app.on_message(B1, replace("c3", "c2", 150, "61.70"))
    mine = reports(out, B1)
    assert [r.get(150) for r in mine] == ["5", "F"]
    assert mine[1].get(11) == "c3" and (mine[1].get(14), mine[1].get(151)) == ("40", "110")
    # cancel by the latest ClOrdID works; the old one is too late no more: it names the same order
    report = only(app.on_message(B1, cancel("c4", "c3")), B1)
    assert (report.get(150), report.get(39), report.get(14)) == ("4", "4", "40")


def test_replace_reject_is_an_order_cancel_reject(app):
    app.on_message(B1, new_order("c1", "EMIT01", "1", 100, "61.50"))
    reject = only(app.on_message(B1, replace("c2", "c1", 100, "99.00")), B1)
    assert reject.msg_type == "9"
    assert (reject.get(434), reject.get(102), reject.get(39)) == ("2", "99", "0")
    assert "band" in reject.get(58)
    assert app.exchange.books["CCER-AFF"].orders["BROKER01:c1"].price == 6150
    # the refused replace's ClOrdID did not become a name of the order
    unknown = only(app.on_message(B1, cancel("c3", "c2")), B1)
    assert (unknown.msg_type, unknown.get(102)) == ("9", "1")
    assert "BROKER01:c1" in app.exchange.books["CCER-AFF"].orders
    status = only(app.on_message(B1, msg("H", (11, "c2"), (55, "CCER-AFF"), (54, "1"))), B1)
    assert status.get(37) != "BROKER01:c1"


def test_account_of_another_broker_is_rejected_and_never_reaches_the_engine(app):
    before = app.exchange.seq
    report = only(app.on_message(B1, new_order("c1", "HOLD02", "2", 10, "62.00")), B1)
    assert (report.get(150), report.get(39), report.get(103)) == ("8", "8", "15")
    assert "not registered to broker BROKER01" in report.get(58)
    assert app.exchange.seq == before
    missing = only(app.on_message(B1, msg("D", (11, "c2"), (55, "CCER-AFF"), (54, "1"),
                                           (60, "20260101-00:00:00.000"), (38, 1), (40, "2"),
                                           (44, "62.00"))), B1)
    assert missing.get(103) == "15" and "Account (1) is required" in missing.get(58)


def test_a_broker_cannot_cancel_or_replace_another_brokers_order(app):
    app.on_message(B2, new_order("s1", "HOLD02", "2", 10, "62.00"))
    by_id = only(app.on_message(B1, cancel("x1", "s1", side="2", order_id="BROKER02:s1")), B1)
    assert by_id.msg_type == "9" and by_id.get(102) == "2"
    assert "only its own orders" in by_id.get(58)
    by_cl = only(app.on_message(B1, cancel("x2", "s1", side="2")), B1)
    assert by_cl.msg_type == "9" and by_cl.get(102) == "1"
    amend = only(app.on_message(B1, replace("x3", "s1", 5, "62.00", side="2",
                                            order_id="BROKER02:s1")), B1)
    assert amend.msg_type == "9" and amend.get(434) == "2" and amend.get(102) == "2"
    status = only(app.on_message(B1, msg("H", (37, "BROKER02:s1"), (11, "s1"), (55, "CCER-AFF"),
                                         (54, "2"))), B1)
    assert (status.get(150), status.get(39)) == ("I", "8")
    resting = app.exchange.books["CCER-AFF"].orders["BROKER02:s1"]
    assert (resting.open_qty, resting.price) == (10, 6200)


@pytest.mark.parametrize("price, reason, text", [
    ("62.001", "99", "off_tick"),
    ("abc", "99", "invalid_price"),
    ("70.00", "3", "price_out_of_band"),
    ("-1", "99", "invalid_price"),
])
def test_bad_prices_are_rejected(app, price, reason, text):
    report = only(app.on_message(B1, new_order("c1", "EMIT01", "1", 10, price)), B1)
    assert (report.get(150), report.get(39), report.get(103)) == ("8", "8", reason)
    assert report.get(58).startswith(text)
    assert report.get(37) == "NONE" and report.get(44) == price


def test_insufficient_funds_and_credits(app):
    funds = only(app.on_message(B1, new_order("c1", "HOLD01", "1", 10, "62.00")), B1)
    assert (funds.get(150), funds.get(103)) == ("8", "3")
    assert funds.get(58).startswith("insufficient_funds")
    credits = only(app.on_message(B1, new_order("c2", "EMIT01", "2", 10, "62.00")), B1)
    assert (credits.get(150), credits.get(103)) == ("8", "3")
    assert credits.get(58).startswith("insufficient_credits")


@pytest.mark.parametrize("fields, reason", [
    ({38: "10.5"}, "13"),
    ({54: "5"}, "11"),
    ({40: "3"}, "11"),
    ({59: "1"}, "11"),
    ({55: "CCER-XXX"}, "1"),
])
def test_unsupported_order_characteristics(app, fields, reason):
    order = new_order("c1", "EMIT01", "1", 10, "62.00")
    for tag, value in fields.items():
        order.set(tag, value)
    report = only(app.on_message(B1, order), B1)
    assert (report.get(150), report.get(103)) == ("8", reason)


def test_duplicate_cl_ord_id_is_rejected_without_touching_the_first_order(app):
    app.on_message(B1, new_order("c1", "EMIT01", "1", 100, "61.50"))
    dup = only(app.on_message(B1, new_order("c1", "EMIT01", "1", 5, "61.00")), B1)
    assert (dup.get(150), dup.get(103)) == ("8", "6")
    status = only(app.on_message(B1, msg("H", (11, "c1"), (55, "CCER-AFF"), (54, "1"))), B1)
    assert (status.get(39), status.get(38), status.get(44)) == ("0", "100", "61.50")
    # another broker may use the same ClOrdID
    other = only(app.on_message(B2, new_order("c1", "EMIT02", "1", 5, "61.00")), B2)
    assert other.get(150) == "0" and other.get(37) == "BROKER02:c1"


def test_ioc_remainder_expires(app):
    app.on_message(B2, new_order("s1", "HOLD02", "2", 10, "62.00"))
    out = app.on_message(B1, new_order("b1", "EMIT01", "1", 25, "62.00", tif="3"))
    mine = reports(out, B1)
    assert [(r.get(150), r.get(39)) for r in mine] == [("0", "0"), ("F", "1"), ("C", "C")]
    assert (mine[-1].get(14), mine[-1].get(151)) == ("10", "0")


def test_market_order_without_price(app):
    app.on_message(B2, new_order("s1", "HOLD02", "2", 10, "62.00"))
    out = app.on_message(B1, new_order("m1", "EMIT01", "1", 10, ord_type="1"))
    mine = reports(out, B1)
    assert [r.get(150) for r in mine] == ["0", "F"]
    assert mine[-1].get(39) == "2" and mine[-1].get(40) == "1" and mine[-1].get(44) is None


def test_unknown_order_status(app):
    status = only(app.on_message(B1, msg("H", (11, "nope"), (55, "CCER-AFF"), (54, "1"),
                                         (790, "q1"))), B1)
    assert (status.get(150), status.get(39), status.get(103), status.get(790)) == ("I", "8", "5", "q1")


@pytest.mark.parametrize("msg_type", ["R", "AE", "E", "AF"])
def test_unsupported_message_gets_business_message_reject(app, msg_type):
    incoming = msg(msg_type, (131, "r1"))
    reject = only(app.on_message(B1, incoming), B1)
    assert reject.msg_type == "j"
    assert (reject.get(372), reject.get(380), reject.get(45)) == (msg_type, "3", incoming.get(34))


def test_unknown_session_is_refused(app):
    stranger = SessionKey("FIX.4.4", "CCERX", "BROKER99")
    reject = only(app.on_message(stranger, new_order("c1", "EMIT01", "1", 1, "62.00")), stranger)
    assert reject.msg_type == "j" and reject.get(380) == "4"


def test_resting_order_executions_go_to_its_owner_after_a_restart(app):
    app.on_message(B2, new_order("s1", "HOLD02", "2", 10, "62.00"))
    # a new application over the same (restored) engine adopts the resting order
    clock = itertools.count(T0 + 10**12, 1_000_000)
    again = ExchangeApplication(app.exchange, "CCERX", ["BROKER01", "BROKER02"],
                                clock=lambda: next(clock))
    out = again.on_message(B1, new_order("b1", "EMIT01", "1", 10, "62.00"))
    maker = reports(out, B2)
    assert len(maker) == 1 and (maker[0].get(11), maker[0].get(39)) == ("s1", "2")


# ------------------------------------------------------------------ market data
def md_request(req_id, kind, symbols, depth=5, types=("0", "1", "2"), update_type=None):
    fields = [(262, req_id), (263, kind), (264, depth)]
    if update_type is not None:
        fields.append((265, update_type))
    fields.append((267, len(types)))
    fields += [(269, t) for t in types]
    fields.append((146, len(symbols)))
    fields += [(55, s) for s in symbols]
    return msg("V", *fields)


def entries(message, first_tag):
    """Repeating-group entries of a W/X as dicts, split at the group's first tag."""
    out, current = [], None
    for tag, value in message.fields:
        if tag == first_tag:
            current = {}
            out.append(current)
        if current is not None:
            current[tag] = value
    return out


def test_snapshot_then_increments_on_book_changes_and_trades(app):
    app.on_message(B2, new_order("s1", "HOLD02", "2", 10, "62.10"))
    app.on_message(B2, new_order("s2", "HOLD02", "2", 5, "62.10"))
    snap = only(app.on_message(B1, md_request("md1", "1", ["CCER-AFF"])), B1)
    assert (snap.msg_type, snap.get(262), snap.get(55), snap.get(268)) == ("W", "md1", "CCER-AFF", "1")
    assert entries(snap, 269) == [{269: "1", 270: "62.10", 271: "15", 346: "2", 290: "1"}]

    out = app.on_message(B2, new_order("b9", "EMIT02", "1", 7, "61.90"))
    x = [m for k, m in out if k == B1 and m.msg_type == "X"]
    assert len(x) == 1 and x[0].get(262) == "md1"
    assert entries(x[0], 279) == [{279: "0", 269: "0", 55: "CCER-AFF", 270: "61.90", 271: "7", 346: "1"}]

    out = app.on_message(B1, new_order("b1", "EMIT01", "1", 12, "62.10"))
    x = only([(k, m) for k, m in out if m.msg_type == "X"], B1)
    assert entries(x, 279) == [
        {279: "1", 269: "1", 55: "CCER-AFF", 270: "62.10", 271: "3", 346: "1"},
        {279: "0", 269: "2", 55: "CCER-AFF", 270: "62.10", 271: "10"},
        {279: "0", 269: "2", 55: "CCER-AFF", 270: "62.10", 271: "2"},
    ]
    # a later snapshot carries the last trade
    snap = only(app.on_message(B2, md_request("md2", "0", ["CCER-AFF"])), B2)
    assert entries(snap, 269)[-1] == {269: "2", 270: "62.10", 271: "2"}

    # unsubscribe: no more increments
    assert app.on_message(B1, md_request("md1", "2", ["CCER-AFF"])) == []
    out = app.on_message(B2, new_order("b10", "EMIT02", "1", 1, "61.00"))
    assert [m for _, m in out if m.msg_type == "X"] == []


def test_depth_limit_deletes_levels_that_fall_out_of_view(app):
    app.on_message(B1, new_order("b1", "EMIT01", "1", 1, "61.00"))
    snap = only(app.on_message(B2, md_request("d1", "1", ["CCER-AFF"], depth=1, types=("0",))), B2)
    assert [e[270] for e in entries(snap, 269)] == ["61.00"]
    out = app.on_message(B1, new_order("b2", "EMIT01", "1", 2, "61.50"))
    x = only([(k, m) for k, m in out if m.msg_type == "X"], B2)
    assert [(e[279], e[270]) for e in entries(x, 279)] == [("2", "61.00"), ("0", "61.50")]


def test_full_refresh_subscription_gets_snapshots(app):
    only(app.on_message(B1, md_request("f1", "1", ["CCER-SOL"], update_type="0")), B1)
    out = app.on_message(B2, new_order("s1", "HOLD02", "2", 3, "75.50", symbol="CCER-SOL"))
    snap = only([(k, m) for k, m in out if k == B1], B1)
    assert snap.msg_type == "W" and entries(snap, 269)[0][270] == "75.50"


@pytest.mark.parametrize("request_msg, reason", [
    (md_request("e1", "1", ["CCER-XXX"]), "0"),
    (md_request("e2", "5", ["CCER-AFF"]), "4"),
    (md_request("e3", "1", ["CCER-AFF"], types=("0", "7")), "8"),
    (md_request("e4", "1", ["CCER-AFF"], depth="x"), "5"),
    (md_request("e5", "1", ["CCER-AFF"], update_type="3"), "6"),
])
def test_bad_market_data_requests_are_rejected(app, request_msg, reason):
    reject = only(app.on_message(B1, request_msg), B1)
    assert reject.msg_type == "Y" and reject.get(281) == reason


def test_duplicate_md_req_id_and_logout_drops_subscriptions(app):
    app.on_message(B1, md_request("md1", "1", ["CCER-AFF"]))
    dup = only(app.on_message(B1, md_request("md1", "1", ["CCER-AFF"])), B1)
    assert dup.msg_type == "Y" and dup.get(281) == "1"
    app.on_logout(B1)
    out = app.on_message(B2, new_order("s1", "HOLD02", "2", 1, "62.00"))
    assert [m for _, m in out if m.msg_type == "X"] == []


def test_security_list_has_tick_lot_and_band(app):
    reply = only(app.on_message(B1, msg("x", (320, "sl1"), (559, "4"))), B1)
    assert (reply.msg_type, reply.get(320), reply.get(560), reply.get(146)) == ("y", "sl1", "0", "4")
    listed = entries(reply, 55)
    aff = next(e for e in listed if e[55] == "CCER-AFF")
    assert aff[561] == "1" and aff[562] == "1" and aff[15] == "CNY"
    assert (aff[233], aff[234]) == ("PRICE", "55.80-68.20")
    attrs = [v for t, v in reply.fields if t == 872]
    assert "TickSize=0.01" in attrs and "PriceBandPct=10" in attrs
    one = only(app.on_message(B1, msg("x", (320, "sl2"), (559, "0"), (55, "CCER-MGV"))), B1)
    assert one.get(146) == "1" and one.get(55) == "CCER-MGV"
    none = only(app.on_message(B1, msg("x", (320, "sl3"), (559, "0"), (55, "NOPE"))), B1)
    assert none.get(560) == "2"
    unsupported = only(app.on_message(B1, msg("x", (320, "sl4"), (559, "2"))), B1)
    assert unsupported.get(560) == "1"


def test_engine_invariants_hold_after_a_session(app):
    app.on_message(B2, new_order("s1", "HOLD02", "2", 30, "62.00"))
    app.on_message(B1, new_order("b1", "EMIT01", "1", 10, "62.00"))
    app.on_message(B1, replace("b2", "b1", 20, "61.00"))
    app.on_message(B2, cancel("s2", "s1", side="2"))
    app.exchange.check()
    cash, _ = app.exchange.accounts.totals()
    assert cash == 2 * 100_000_000 * 100


def test_cancel_by_own_order_id_when_orig_cl_ord_id_is_unknown(app):
    app.on_message(B1, new_order("c1", "EMIT01", "1", 10, "61.50"))
    report = only(app.on_message(B1, cancel("c2", "lost", order_id="BROKER01:c1")), B1)
    assert (report.get(150), report.get(11), report.get(41)) == ("4", "c2", "c1")


# ------------------------------------------------------------------ FIX 4.4 dictionary conformance
# The FIX 4.4 layouts (QuickFIX spec/FIX44.xml) of every message the application sends, cut
# down to the tags it may use: body tags allowed (groups flattened), required tags, enums.
# credits as lots (gateway/fix/lots.py): FIX 4.4's Instrument block (SecurityAltID, Product,
# SecuritySubType) and a fill's delivered lots (UndInstrmtGrp)
LOT_IDENTITY = {454, 455, 456, 460, 762}
LOT_UNDERLYINGS = {711, 311, 457, 458, 459, 879, 887, 888, 889}
FIX44_LAYOUT = {
    "8": ({37, 11, 41, 790, 17, 150, 39, 103, 1, 55, 54, 38, 40, 44, 59, 32, 31, 151, 14, 6, 60,
           12, 13, 58, *LOT_UNDERLYINGS}, {37, 17, 150, 39, 54, 151, 14, 6}),
    "9": ({37, 11, 41, 39, 1, 60, 434, 102, 58}, {37, 11, 41, 39, 434}),
    "j": ({45, 372, 379, 380, 58}, {372, 380}),
    "W": ({262, 55, 268, 269, 270, 15, 271, 346, 290, *LOT_IDENTITY}, {268}),
    "X": ({262, 268, 279, 269, 55, 270, 271, 346, 290}, {268, 279}),
    "Y": ({262, 281, 58}, {262}),
    "y": ({320, 322, 560, 393, 893, 146, 55, 107, 870, 871, 872, 15, 232, 233, 234, 561, 562, 58,
           *LOT_IDENTITY}, {320, 322, 560}),
    "h": ({335, 336, 340, 567, 58}, {336, 340}),
}
FIX44_ENUMS = {
    150: set("03456789ABCDEFGHI"), 39: set("0123456789ABCDE"),
    103: {str(n) for n in range(16)} | {"99"}, 102: {str(n) for n in range(7)} | {"99"},
    434: {"1", "2"}, 380: {str(n) for n in range(8)}, 269: set("0123456789ABC"),
    279: {"0", "1", "2"}, 281: set("012345678"), 560: set("012345"),
    871: {str(n) for n in range(1, 24)} | {"99"}, 233: {"PRICE", "PROD"}, 13: set("123456"),
    460: {str(n) for n in range(1, 14)},
    54: set("123456789ABCDEFG"), 40: set("123456789ABCDEFGHIJKLMP"), 59: set("01234567"),
    893: {"Y", "N"}, 340: set("0123456"), 567: {"1", "99"},
}
NUMERIC = {14, 151, 38, 32, 31, 44, 6, 12, 270, 271, 346, 290, 268, 146, 870, 232, 561, 562, 393,
           454, 711, 457, 879, 887}


def assert_fix44(message: FixMessage) -> None:
    allowed, required = FIX44_LAYOUT[message.msg_type]
    tags = [tag for tag, _ in message.fields[1:]]
    assert set(tags) <= allowed, f"{message.msg_type}: non-standard tags {set(tags) - allowed}"
    assert required <= set(tags), f"{message.msg_type}: missing {required - set(tags)}"
    for tag, value in message.fields[1:]:
        assert value != "", f"{message.msg_type}: empty {tag}"
        if tag in FIX44_ENUMS:
            assert value in FIX44_ENUMS[tag], f"{message.msg_type}: {tag}={value}"
        if tag in NUMERIC:
            float(value)  # PRICE/QTY/AMT/INT formats: plain decimals
            assert "e" not in value.lower()
        if tag == 60:
            assert len(value) == 21 and value[8] == "-"
    for count_tag, first in ((268, 269 if message.msg_type == "W" else 279), (146, 55), (870, 871),
                             (232, 233)):
        if count_tag in message:
            counts = [int(v) for v in message.get_all(count_tag)]
            assert sum(counts) == len(message.get_all(first)), f"{message.msg_type}: {count_tag}"


def test_every_outgoing_message_fits_the_fix44_dictionary(app):
    sent = []

    def run(session, message):
        out = app.on_message(session, message)
        sent.extend(m for _, m in out)
        return out

    run(B1, md_request("md", "1", ["CCER-AFF", "CCER-SOL"]))
    run(B2, md_request("mf", "1", ["CCER-AFF"], update_type="0"))
    run(B2, new_order("s1", "HOLD02", "2", 30, "62.00"))
    run(B1, new_order("b1", "EMIT01", "1", 10, "62.00"))
    run(B1, new_order("b2", "EMIT01", "1", 5, "61.00"))
    run(B1, replace("b3", "b2", 50, "62.00"))
    run(B1, new_order("b4", "EMIT01", "1", 5, "61.00", tif="3"))
    run(B1, new_order("m1", "EMIT01", "1", 5, ord_type="1"))
    run(B1, cancel("b5", "b3"))
    run(B1, cancel("b6", "b3"))
    run(B1, replace("b7", "nope", 1, "62.00"))
    run(B1, new_order("bad", "HOLD02", "1", 5, "61.00"))
    run(B1, new_order("bad2", "EMIT01", "1", "1.5", "61.00"))
    run(B1, new_order("bad3", "EMIT01", "1", 5, "61.001"))
    run(B1, msg("H", (11, "b1"), (55, "CCER-AFF"), (54, "1")))
    run(B1, msg("H", (11, "zz"), (55, "CCER-AFF"), (54, "1")))
    run(B1, msg("R", (131, "q")))
    run(B1, md_request("bad", "1", ["NOPE"]))
    run(B1, md_request("md", "2", ["CCER-AFF"]))
    run(B1, msg("x", (320, "a"), (559, "4")))
    run(B1, msg("x", (320, "b"), (559, "3")))
    sent.extend(m for _, m in app.on_logon(B1))
    run(B1, msg("g", (335, "t1"), (263, "0")))
    run(B1, msg("g", (335, "t2"), (336, "CONTINUOUS"), (263, "2")))
    run(B1, msg("g", (335, "t3"), (336, "AUCTION"), (263, "1")))
    run(B1, msg("g", (263, "1")))
    assert {m.msg_type for m in sent} == set(FIX44_LAYOUT)
    for message in sent:
        assert_fix44(message)


# ------------------------------------------------------------------ robustness
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

_values = {
    11: st.sampled_from(["a", "b", "c", "", "x" * 70]),
    41: st.sampled_from(["a", "b", "c", "zz"]),
    37: st.sampled_from(["BROKER01:a", "BROKER02:a", "NONE"]),
    1: st.sampled_from(["EMIT01", "HOLD01", "EMIT02", "HOLD02", "", "NOBODY"]),
    55: st.sampled_from(["CCER-AFF", "CCER-SOL", "NOPE", ""]),
    54: st.sampled_from(["1", "2", "3", ""]),
    38: st.sampled_from(["1", "10", "0", "-5", "1.5", "abc", "100000", "1e3", ""]),
    40: st.sampled_from(["1", "2", "3"]),
    44: st.sampled_from(["62.00", "61.99", "62.005", "1e2", "abc", "-1", "0", "68.20", ""]),
    59: st.sampled_from(["0", "1", "3", "4"]),
    262: st.sampled_from(["m1", "m2"]), 263: st.sampled_from(["0", "1", "2", "9"]),
    264: st.sampled_from(["0", "1", "x"]), 269: st.sampled_from(["0", "1", "2", "5"]),
    320: st.just("s"), 559: st.sampled_from(["0", "4", "9"]),
    335: st.sampled_from(["t1", ""]), 336: st.sampled_from(["CONTINUOUS", "AUCTION", ""]),
}
_random_message = st.tuples(
    st.sampled_from([B1, B2]),
    st.sampled_from(["D", "F", "G", "H", "V", "x", "g", "Q"]),
    st.lists(st.sampled_from(sorted(_values)), max_size=9).flatmap(
        lambda tags: st.tuples(*[st.tuples(st.just(t), _values[t]) for t in tags])))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_random_message, max_size=25))
def test_random_messages_never_raise_and_keep_the_engine_consistent(app, script):
    for session, msg_type, fields in script:
        out = app.on_message(session, msg(msg_type, *fields))
        for key, message in out:
            assert key in (B1, B2) and message.msg_type in FIX44_LAYOUT
    app.exchange.check()


def test_subscriptions_per_session_are_bounded(app):
    from ccerx.gateway.marketdata import MAX_SUBSCRIPTIONS_PER_SESSION
    for n in range(MAX_SUBSCRIPTIONS_PER_SESSION):
        assert only(app.on_message(B1, md_request(f"m{n}", "1", ["CCER-AFF"]))).msg_type == "W"
    refused = only(app.on_message(B1, md_request("one-more", "1", ["CCER-AFF"])), B1)
    assert refused.msg_type == "Y" and "at most" in refused.get(58)
    assert only(app.on_message(B2, md_request("m0", "1", ["CCER-AFF"]))).msg_type == "W"


# ------------------------------------------------------------------ restart: orders from the FIX store
STATUS_FIELDS = (37, 11, 39, 14, 151, 6, 38, 44, 1, 55, 54, 40, 59, 103)


class Wire:
    """The brokers' FIX stores: every message the application sends is stored as a session
    would store it (framed, numbered), as `ccerx serve` keeps them across a restart."""

    def __init__(self, app):
        from ccerx.gateway.fix.session import Session
        from ccerx.gateway.fix.store import MemoryStore
        self.app = app
        self.sessions = {key: Session(key, None, MemoryStore()) for key in (B1, B2)}

    def run(self, key, message):
        out = self.app.on_message(key, message)
        for to, m in out:
            self.sessions[to].send(m, T0 / 1e9)
        return out

    def operator(self, command):
        for to, m in self.app.run_operator_command(command):
            self.sessions[to].send(m, T0 / 1e9)

    def restart(self):
        clock = itertools.count(T0 + 10**12, 1_000_000)
        again = ExchangeApplication(self.app.exchange, "CCERX", ["BROKER01", "BROKER02"],
                                    clock=lambda: next(clock))
        for key, session in self.sessions.items():
            store = session.store
            again.on_session_restored(key, store.each(1, store.next_sender - 1))
        return again


def status_of(app, key, cl):
    status = only(app.on_message(key, msg("H", (11, cl), (55, "CCER-AFF"), (54, "1"))), key)
    return [(tag, status.get(tag)) for tag in STATUS_FIELDS]


def trading_day(wire):
    wire.run(B2, new_order("s1", "HOLD02", "2", 10, "62.00"))
    wire.run(B1, new_order("b1", "EMIT01", "1", 10, "62.10"))          # both filled
    wire.run(B1, new_order("c1", "EMIT01", "1", 5, "61.00"))
    wire.run(B1, cancel("c2", "c1"))                                     # cancelled
    wire.run(B1, new_order("p1", "EMIT01", "1", 20, "61.50"))
    wire.run(B2, new_order("s2", "HOLD02", "2", 5, "61.50"))             # p1 partly filled
    wire.run(B1, replace("p2", "p1", 30, "61.60"))                       # and replaced
    wire.run(B2, new_order("s3", "HOLD02", "2", 3, "61.60"))             # AvgPx 61.5375
    wire.run(B1, new_order("x1", "HOLD02", "1", 1, "61.00"))             # refused: not its account
    wire.run(B1, new_order("i1", "EMIT01", "1", 4, "60.00", tif="3"))    # expired (IOC)


B1_ORDERS, B2_ORDERS = ("b1", "c1", "c2", "p1", "p2", "x1", "i1"), ("s1", "s2", "s3")


def test_after_a_restart_every_order_of_the_day_answers_as_before(app):
    wire = Wire(app)
    trading_day(wire)
    again = wire.restart()
    for key, names in ((B1, B1_ORDERS), (B2, B2_ORDERS)):
        for cl in names:
            assert status_of(again, key, cl) == status_of(app, key, cl), cl
    assert dict(status_of(again, B1, "b1"))[39] == "2" and dict(status_of(again, B1, "p2"))[6] == "61.5375"
    # a finished order is too late to cancel, not unknown; a refused ClOrdID stays used
    [(_, reject)] = again.on_message(B1, cancel("c3", "c1"))
    assert (reject.msg_type, reject.get(102), reject.get(39)) == ("9", "0", "4")
    [(_, dup)] = again.on_message(B1, new_order("x1", "EMIT01", "1", 1, "61.00"))
    assert (dup.get(39), dup.get(103)) == ("8", "6")
    again.exchange.check()


def test_orders_finished_before_the_last_close_are_forgotten_after_a_restart_too(app):
    from ccerx.engine.core.commands import EndOfDay
    wire = Wire(app)
    trading_day(wire)
    wire.operator(EndOfDay(T0 + 10**10))
    wire.run(B1, new_order("n1", "EMIT01", "1", 2, "61.00"))             # the next day
    again = wire.restart()
    for key, names in ((B1, B1_ORDERS + ("n1",)), (B2, B2_ORDERS)):
        for cl in names:
            assert status_of(again, key, cl) == status_of(app, key, cl), cl
    assert dict(status_of(again, B1, "b1"))[39] == "8"                   # unknown, as before


# ------------------------------------------------------------------ a resent NewOrderSingle (43=Y / 97=Y)
def resent(order_message, flag=43):
    """The same NewOrderSingle sent again as a possible duplicate (PossDupFlag or PossResend)."""
    return FixMessage([order_message.fields[0], (flag, "Y"), *order_message.fields[1:]])


def test_a_possible_duplicate_of_a_known_order_gets_its_status_not_a_reject(app):
    first = new_order("c1", "EMIT01", "1", 100, "61.50")
    app.on_message(B1, first)
    for flag in (43, 97):
        status = only(app.on_message(B1, resent(first, flag)), B1)
        assert (status.get(150), status.get(39), status.get(103)) == ("I", "0", None), flag
        assert (status.get(37), status.get(11), status.get(14), status.get(151)) == (
            "BROKER01:c1", "c1", "0", "100")
        assert "already received" in status.get(58)
    assert list(app.exchange.books["CCER-AFF"].orders) == ["BROKER01:c1"]   # entered once
    # without the flag a reused ClOrdID is still refused, and the order stays as it was
    dup = only(app.on_message(B1, new_order("c1", "EMIT01", "1", 100, "61.50")), B1)
    assert (dup.get(150), dup.get(39), dup.get(103)) == ("8", "8", "6")
    status = only(app.on_message(B1, msg("H", (11, "c1"), (55, "CCER-AFF"), (54, "1"))), B1)
    assert (status.get(39), status.get(151)) == ("0", "100")
    app.exchange.check()


def test_a_possible_duplicate_of_a_partly_filled_order_reports_its_fills(app):
    first = new_order("b1", "EMIT01", "1", 10, "62.00")
    app.on_message(B1, first)
    app.on_message(B2, new_order("s1", "HOLD02", "2", 4, "62.00"))
    status = only(app.on_message(B1, resent(first)), B1)
    assert (status.get(150), status.get(39), status.get(14), status.get(151), status.get(6)) == (
        "I", "1", "4", "6", "62.00")
    # a finished one answers with its final state; an unknown ClOrdID is a new order
    app.on_message(B2, new_order("s2", "HOLD02", "2", 6, "62.00"))
    status = only(app.on_message(B1, resent(first)), B1)
    assert (status.get(150), status.get(39), status.get(14), status.get(151)) == ("I", "2", "10", "0")
    fresh = only(app.on_message(B1, resent(new_order("n1", "EMIT01", "1", 1, "61.00"))), B1)
    assert (fresh.get(150), fresh.get(37)) == ("0", "BROKER01:n1")


def test_after_a_restart_a_resent_order_the_engine_holds_is_not_rejected(app):
    """The crash case: the engine journaled the order, the FIX store lost the MsgSeqNum, the
    broker resends the order with 43=Y. The restarted gateway knows it from the engine only."""
    first = new_order("c1", "EMIT01", "1", 10, "62.00")
    app.on_message(B1, first)
    app.on_message(B2, new_order("s1", "HOLD02", "2", 3, "62.00"))
    clock = itertools.count(T0 + 10**12, 1_000_000)
    again = ExchangeApplication(app.exchange, "CCERX", ["BROKER01", "BROKER02"],
                                clock=lambda: next(clock))
    status = only(again.on_message(B1, resent(first)), B1)
    assert (status.get(150), status.get(39), status.get(37), status.get(14), status.get(151)) == (
        "I", "1", "BROKER01:c1", "3", "7")
    assert list(again.exchange.books["CCER-AFF"].orders) == ["BROKER01:c1"]
    again.exchange.check()
