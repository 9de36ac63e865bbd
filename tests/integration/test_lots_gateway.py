"""Credits as lots at the gateway and the operator's desk (issue 11 items 2, 6, 8, 9), end to
end: a real `ccerx serve` (cbeex-2023), brokers over real TCP, the operator through the real
`ccerx operator` command on the control socket.

The operator lists a project-vintage (Art.17) and moves lots in (one of them listed on its first
transfer in); the listing is in the SecurityList with its project (SecurityAltID 455,
source 456=H, the registry) and vintage (Stipulation PROD, production year) but cannot trade
until the next trading day; after the close a holder sells the afforestation contract, the
buyer's and the seller's fills name the delivered lots (NoUnderlyings 711); the operator
retires credits with a purpose in Chinese. Every message the gateway sent fits the broker
kit's dictionary.
"""
from __future__ import annotations

import orjson
import pytest

from ccerx.gateway.config import DEMO_CONFIG
from ccerx.scripts.ccerx import main as ccerx
from tests.fixclient import Broker, now, s, sync
from tests.integration.test_broker_kit import (XML, KitDictionary, _run_quickfix, _settings,
                                               quickfix_initiator, wire_fields)  # noqa: F401

PROJECT_1, PROJECT_2 = "CCER-14-2024-0001", "CCER-14-2024-0002"


def _entries(message, count_tag: int, first_tag: int) -> list[list[tuple[int, str]]]:
    """The instances of the repeating group `count_tag` (first field `first_tag`), each as
    its (tag, value) list up to the next instance or the trailer; nested groups inline."""
    fields = [(tag, value.decode()) for tag, value in message]
    start = [t for t, _ in fields].index(count_tag) + 1
    out: list[list[tuple[int, str]]] = []
    for tag, value in fields[start:]:
        if tag == 10:
            break
        if tag == first_tag:
            out.append([])
        if out:
            out[-1].append((tag, value))
    return out


def _attributes(entry) -> dict[str, str]:
    """InstrAttrib texts "Name=value" (871=99) of a SecurityList entry."""
    texts = [v for t, v in entry if t == 872]
    return dict(text.partition("=")[::2] for text in texts)


def _stipulations(entry, type_tag=233, value_tag=234) -> dict[str, str]:
    types = [v for t, v in entry if t == type_tag]
    values = [v for t, v in entry if t == value_tag]
    return dict(zip(types, values))


def _security_list(broker, req_id) -> dict[str, list[tuple[int, str]]]:
    broker.send("x", (320, req_id), (559, "4"))
    answer = broker.expect("y", where=lambda m: s(m, 320) == req_id)
    assert s(answer, 560) == "0"
    return {dict(e)[55]: e for e in _entries(answer, 146, 55)}


@pytest.fixture
def market(tmp_path, start_serve):
    # the demo, but HOLD01 holds no pooled credits: what it sells are the lots moved in below
    config = tmp_path / "gateway.toml"
    config.write_text(DEMO_CONFIG.replace(
        'credits = { "CCER-AFF" = 1000000, "CCER-SOL" = 1000000, "CCER-OWF" = 1000000, '
        '"CCER-MGV" = 1000000 }\n', "", 1))
    server = start_serve("--data-dir", str(tmp_path / "data"), "--config", str(config))
    b1, b2 = Broker("BROKER01", server.port), Broker("BROKER02", server.port)
    b1.logon("demo01", reset=True)
    b1.expect("h")
    b2.logon("demo02", reset=True)
    b2.expect("h")
    yield server, b1, b2
    b1.close()
    b2.close()


def operator(server, capsys, *argv) -> tuple[int, list[dict]]:
    code = ccerx(["operator", "--control", str(server.control), *argv])
    out = capsys.readouterr().out
    return code, [orjson.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_listing_lots_trading_them_over_fix_and_retiring_them(market, capsys):
    server, b1, b2 = market
    # Art.17: the operator lists a project-vintage; it trades from the next trading day
    code, [listed] = operator(server, capsys, "list", "AFF-0001-2023", "--credit-type",
                              "afforestation", "--project", PROJECT_1, "--vintage", "2023",
                              "--price", "62.00", "--name", "塞罕坝造林碳汇 2023")
    assert code == 0, listed
    [defined] = listed["events"]
    assert (defined["type"], defined["symbol"], defined["project"], defined["vintage"],
            defined["tradable_from"]) == ("instrument", "AFF-0001-2023", PROJECT_1, 2023, 1)
    # lots moved in from the registry; the second is listed on its first transfer in
    code, [moved] = operator(server, capsys, "deposit", "HOLD01", "30000", "--credit-type",
                             "afforestation", "--project", PROJECT_1, "--vintage", "2023",
                             "--id", "ISS-1")
    assert code == 0, moved
    assert moved["events"][0]["asset"] == f"{PROJECT_1}@2023"
    code, [moved] = operator(server, capsys, "deposit", "HOLD01", "20000", "--credit-type",
                             "afforestation", "--project", PROJECT_2, "--vintage", "2021",
                             "--list-symbol", "AFF-0002-2021", "--list-price", "58.00",
                             "--id", "ISS-2")
    assert code == 0, moved
    assert [e["type"] for e in moved["events"]] == ["deposited", "instrument"]

    # the broker sees both listings and the contracts, with their attributes
    entries = _security_list(b1, "sl1")
    listing = entries["AFF-0001-2023"]
    fields = dict(listing)
    assert (fields[455], fields[456], fields[460], fields[762]) == (PROJECT_1, "H", "2",
                                                                   "afforestation")
    assert _stipulations(listing)["PROD"] == "2023"
    assert _attributes(listing)["Kind"] == "listing"
    assert _attributes(listing)["TradableFrom"] == "D+1"
    assert fields[351] == "塞罕坝造林碳汇 2023"                      # EncodedSecurityDesc
    assert _stipulations(entries["AFF-0002-2021"])["PROD"] == "2021"
    contract = entries["CCER-AFF"]
    assert (dict(contract)[762], _attributes(contract)["Kind"]) == ("afforestation", "contract")
    assert 455 not in dict(contract) and "PROD" not in _stipulations(contract)
    assert "TradableFrom" not in _attributes(contract)

    # not before the next trading day
    b1.new_order("early", "HOLD01", "2", 100, "62.00", symbol="AFF-0001-2023")
    refused = b1.expect("8")
    assert (s(refused, 150), s(refused, 103)) == ("8", "2")
    assert s(refused, 58).startswith("not_yet_tradable: ")

    code, [closed] = operator(server, capsys, "eod")
    assert code == 0, closed
    assert "TradableFrom" not in _attributes(_security_list(b1, "sl2")["AFF-0001-2023"])

    # market data of a listing names its lot too
    b2.send("V", (262, "md1"), (263, "0"), (264, "0"), (267, "2"), (269, "0"), (269, "1"),
            (146, "1"), (55, "AFF-0001-2023"))
    snapshot = b2.expect("W")
    assert (s(snapshot, 55), s(snapshot, 455), s(snapshot, 456), s(snapshot, 762)) == (
        "AFF-0001-2023", PROJECT_1, "H", "afforestation")

    # the contract delivers the oldest vintage first; both fills name the lots delivered
    b1.new_order("s1", "HOLD01", "2", 25000, "62.00", symbol="CCER-AFF")
    assert s(b1.expect("8"), 150) == "0"
    b2.new_order("b1", "EMIT02", "1", 25000, "62.00", symbol="CCER-AFF")
    bought = b2.expect("8", where=lambda m: s(m, 150) == "F")
    sold = b1.expect("8", where=lambda m: s(m, 150) == "F")
    for fill in (bought, sold):
        assert s(fill, 711) == "2"
        lots = _entries(fill, 711, 311)
        assert [dict(lot)[311] for lot in lots] == [f"{PROJECT_2}@2021", f"{PROJECT_1}@2023"]
        assert [(dict(lot)[457], dict(lot)[458], dict(lot)[459], dict(lot)[879])
                for lot in lots] == [("1", PROJECT_2, "H", "20000"), ("1", PROJECT_1, "H", "5000")]
        assert [_stipulations(lot, 888, 889) for lot in lots] == [{"PROD": "2021"},
                                                                 {"PROD": "2023"}]

    # retirement (注销) by the operator, with its purpose in Chinese
    code, [retired] = operator(server, capsys, "retire", "HOLD01", "1000", "--project",
                               PROJECT_1, "--vintage", "2023", "--purpose", "2024年度清缴抵销",
                               "--id", "R-1")
    assert code == 0, retired
    [event] = retired["events"]
    assert (event["type"], event["asset"], event["qty"], event["purpose"]) == (
        "retired", f"{PROJECT_1}@2023", 1000, "2024年度清缴抵销")
    assert event["certificate"].startswith("CCERX-RC-")
    code, [again] = operator(server, capsys, "retire", "HOLD01", "1000", "--project",
                             PROJECT_1, "--vintage", "2023", "--purpose", "again", "--id", "R-1")
    assert code == 1 and again["events"][0]["reason"] == "duplicate_retire_id"
    code, [unknown] = operator(server, capsys, "retire", "HOLD01", "1", "--project", "CCER-NONE",
                               "--vintage", "2023", "--purpose", "x", "--id", "R-2")
    assert code == 1 and unknown["events"][0]["reason"] == "unknown_lot"
    code, [too_much] = operator(server, capsys, "retire", "HOLD01", "24001", "--project",
                                PROJECT_1, "--vintage", "2023", "--purpose", "x", "--id", "R-3")
    assert code == 1 and too_much["events"][0]["reason"] == "insufficient_credits", too_much
    code, [accounts] = operator(server, capsys, "accounts", "--json")
    holder = accounts["accounts"]["HOLD01"]
    assert {key: t for key, t in holder["credits"].items() if t} == {f"{PROJECT_1}@2023": 24000}

    sync(b1, "end1")
    sync(b2, "end2")
    kit = KitDictionary(XML)
    failures = [(problems, fields) for m in b1.received + b2.received
                if (problems := kit.validate(fields := wire_fields(m)))]
    assert failures == []
    assert "Traceback" not in server.log_text()


@pytest.mark.parametrize("argv, complaint", [
    (["deposit", "HOLD01", "100", "--project", PROJECT_1, "--vintage", "2023"],
     "--credit-type, --project and --vintage"),
    (["deposit", "HOLD01", "100", "--credit-type", "afforestation", "--project", PROJECT_1,
      "--vintage", "2023x"], "--vintage must be a year"),
    (["deposit", "HOLD01", "CCER-AFF", "100", "--credit-type", "afforestation", "--project",
      PROJECT_1, "--vintage", "2023"], "not an ASSET"),
    (["deposit", "HOLD01", "CCER-AFF", "100", "--list-symbol", "X"], "--list-symbol"),
    (["deposit", "HOLD01", "100", "--credit-type", "afforestation", "--project", PROJECT_1,
      "--vintage", "2023", "--list-symbol", "AFF-1"], "--list-price"),
    (["retire", "HOLD01", "100", "--purpose", "x"], "--project and --vintage, or --instrument"),
    (["retire", "HOLD01", "100", "--project", PROJECT_1, "--vintage", "2023",
      "--instrument", "CCER-AFF", "--purpose", "x"], "--project and --vintage, or --instrument"),
    (["retire", "HOLD01", "1.5", "--instrument", "CCER-AFF", "--purpose", "x"], "whole tonnes"),
    (["list", "AFF-1", "--credit-type", "afforestation", "--project", PROJECT_1, "--vintage",
      "year", "--price", "62.00"], "--vintage must be a year"),
])
def test_operator_lot_commands_refuse_bad_arguments(tmp_path, capsys, argv, complaint):
    # refused before anything is sent: no server needed (the socket does not exist)
    assert ccerx(["operator", "--control", str(tmp_path / "none.sock"), *argv]) == 2
    assert complaint in capsys.readouterr().err


def test_lot_requests_the_engine_refuses_change_nothing(tmp_path, start_serve, capsys):
    server = start_serve("--data-dir", str(tmp_path / "data"))
    # a listing of an unknown credit type, a deposit of a lot that is already listed under
    # another symbol, a retirement of credits its holder does not have
    code, [bad] = operator(server, capsys, "list", "AFF-9", "--credit-type", "peat", "--project",
                           PROJECT_1, "--vintage", "2023", "--price", "62.00")
    assert code == 1 and "credit_type must be one of" in bad.get("error", "") + str(bad)
    code, [listed] = operator(server, capsys, "list", "AFF-1", "--credit-type", "afforestation",
                              "--project", PROJECT_1, "--vintage", "2023", "--price", "62.00")
    assert code == 0, listed
    code, [again] = operator(server, capsys, "deposit", "HOLD01", "5", "--credit-type",
                             "afforestation", "--project", PROJECT_1, "--vintage", "2023",
                             "--list-symbol", "AFF-2", "--list-price", "62.00", "--id", "D-1")
    assert code == 1 and "already listed as AFF-1" in again["events"][0]["text"]
    code, [none] = operator(server, capsys, "retire", "EMIT01", "5", "--instrument", "CCER-AFF",
                            "--purpose", "抵销", "--id", "R-9")
    assert code == 1 and none["events"][0]["reason"] == "insufficient_credits", none
    code, [state] = operator(server, capsys, "state", "--json")
    assert sorted(state["state"]["instruments"]) == ["AFF-1", "CCER-AFF", "CCER-MGV",
                                                    "CCER-OWF", "CCER-SOL"]
    assert state["state"]["instruments"]["AFF-1"]["kind"] == "listing"
    # the operator's table says what each instrument delivers
    assert ccerx(["operator", "--control", str(server.control), "state"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "delivers" in table[1]
    [row] = [line for line in table if line.startswith("AFF-1 ")]
    assert f"{PROJECT_1} 2023" in row
    [row] = [line for line in table if line.startswith("CCER-AFF ")]
    assert "afforestation" in row


def test_a_listing_and_its_lots_survive_a_restart(tmp_path, start_serve, capsys):
    data = str(tmp_path / "data")
    server = start_serve("--data-dir", data)
    code, [listed] = operator(server, capsys, "deposit", "HOLD01", "700", "--credit-type",
                              "mangrove", "--project", "CCER-09-2025-0003", "--vintage", "2024",
                              "--list-symbol", "MGV-0003-2024", "--list-price", "88.00",
                              "--id", "ISS-9")
    assert code == 0, listed
    assert server.terminate() == 0
    server = start_serve("--data-dir", data, log_name="serve2.log")
    broker = Broker("BROKER01", server.port)
    try:
        broker.logon("demo01", reset=True)
        broker.expect("h")
        entry = _security_list(broker, "sl1")["MGV-0003-2024"]
        assert (dict(entry)[455], dict(entry)[762]) == ("CCER-09-2025-0003", "mangrove")
        assert _stipulations(entry)["PROD"] == "2024"
        assert _attributes(entry)["TradableFrom"] == "D+1"     # still not before tomorrow
        assert operator(server, capsys, "eod")[0] == 0
        broker.new_order("s1", "HOLD01", "2", 700, "88.00", symbol="MGV-0003-2024")
        assert s(broker.expect("8"), 150) == "0"
    finally:
        broker.close()
    code, [accounts] = operator(server, capsys, "accounts", "--json")
    held = accounts["accounts"]["HOLD01"]
    assert (held["credits"]["CCER-09-2025-0003@2024"],
            held["credits_reserved"]["CCER-09-2025-0003@2024"]) == (700, 700)


def test_a_quickfix_initiator_reads_the_lots_its_fill_delivered(tmp_path, start_serve, capsys,
                                                               quickfix_initiator):
    """A real FIX engine (QuickFIX C++ with the kit's settings and dictionary) buys 15 t of
    CCER-AFF; the 10 t offered come from two lots of a holder without pooled credits, and
    QuickFIX accepts the fill's NoUnderlyings (nested groups) without a Reject."""
    config = tmp_path / "gateway.toml"
    holdings = ('credits = { "CCER-AFF" = 1000000, "CCER-SOL" = 1000000, "CCER-OWF" = 1000000, '
                '"CCER-MGV" = 1000000 }\n')
    config.write_text(DEMO_CONFIG.replace(holdings, "", 2))
    server = start_serve("--data-dir", str(tmp_path / "data"), "--config", str(config))
    for n, (project, vintage, qty) in enumerate(((PROJECT_1, "2023", "4"),
                                                 (PROJECT_2, "2021", "6"))):
        code, [moved] = operator(server, capsys, "deposit", "HOLD02", qty, "--credit-type",
                                 "afforestation", "--project", project, "--vintage", vintage,
                                 "--id", f"ISS-{n}")
        assert code == 0, moved
    seller = Broker("BROKER02", server.port)
    try:
        seller.logon("demo02", reset=True)
        seller.expect("h")
        seller.new_order("s1", "HOLD02", "2", 10, "62.00")
        assert s(seller.expect("8"), 150) == "0"
        code, lines = _run_quickfix(quickfix_initiator, _settings(tmp_path, server.port, XML),
                                    tmp_path)
        seller.expect("8", where=lambda m: s(m, 150) == "F")
    finally:
        seller.close()
    assert code == 0, lines
    assert not [line for line in lines if line.startswith("OUT ") and "|35=3|" in line], lines
    [fill] = [line for line in lines if line.startswith("IN ") and "|150=F|" in line]
    assert (f"|711=2|311={PROJECT_2}@2021|457=1|458={PROJECT_2}|459=H|879=6|887=1|888=PROD|"
            f"889=2021|311={PROJECT_1}@2023|") in fill, fill
