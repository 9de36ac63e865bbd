"""The operator control channel: the sans-IO line protocol, then the socket server in-process
(a real Unix-domain socket, a real exchange application, a real gateway for deliveries)."""
from __future__ import annotations

import asyncio
import os
import socket
import stat

import orjson
import pytest

from ccerx.engine.core.commands import Deposit, EndOfDay, NewOrder, SetTradingStatus
from ccerx.engine.formats.config import load_instruments
from ccerx.engine.core.exchange import Exchange
from ccerx.gateway.config import GatewayConfig
from ccerx.gateway.control import (ControlServer, ControlUnavailable, LineSplitter, Refused, handle_line,
                             operator_request)
from ccerx.gateway.fix.application import FixMessage, SessionKey
from ccerx.gateway.fix.translate import ExchangeApplication
from ccerx.gateway.server import GatewayServer, SessionSettings

NOW = 1_780_000_000_000_000_000
B2 = SessionKey("FIX.4.4", "CCERX", "BROKER02")


# ------------------------------------------------------------------ LineSplitter
def test_lines_are_cut_at_newlines_whatever_the_chunks():
    splitter = LineSplitter(max_line=100)
    assert splitter.feed(b'{"op":"eod"}\n{"op":') == [b'{"op":"eod"}']
    assert splitter.feed(b'"status"') == []
    assert splitter.feed(b',"open":true}\r\n\n') == [b'{"op":"status","open":true}\r', b""]
    assert splitter.finish() == []


def test_a_line_over_the_limit_is_refused_once_and_never_buffered():
    splitter = LineSplitter(max_line=16)
    [refused] = splitter.feed(b"x" * 17)                  # refused as soon as it passes the limit
    assert type(refused) is Refused and "longer than 16 bytes" in refused.error
    assert splitter.feed(b"y" * 1000) == []               # the rest of it is dropped as it comes
    assert len(splitter._buffer) == 0
    assert splitter.feed(b'yy\n{"op":"eod"}\n') == [b'{"op":"eod"}']   # the next line is fine
    refused, ok = splitter.feed(b"z" * 17 + b"\nok\n")   # a long line arriving whole, too
    assert type(refused) is Refused and ok == b"ok"
    assert splitter.feed(b"0123456789abcdef\n") == [b"0123456789abcdef"]   # the limit itself is fine


def test_an_unterminated_request_at_the_end_is_refused_not_applied():
    splitter = LineSplitter()
    assert splitter.feed(b'{"op":"eod"}') == []
    [refused] = splitter.finish()
    assert "incomplete" in refused.error
    splitter = LineSplitter(max_line=4)
    splitter.feed(b"toolong")
    assert splitter.finish() == []                         # already answered when it overflowed


# ------------------------------------------------------------------ handle_line
# line -> the command it must become (stamped with NOW, the server's clock), or a refusal text
ACCEPTED = [
    (b'{"op":"eod"}', EndOfDay(NOW)),
    (b'{"op":"status","open":false,"note":"halt"}', SetTradingStatus(False, "halt", NOW)),
    (b' {"op":"status","open":true} \r', SetTradingStatus(True, "", NOW)),
    (b'{"op":"deposit","deposit_id":"ISS-1","account":"HOLD01","instrument":"CCER-SOL",'
     b'"qty":50000}', Deposit("ISS-1", "HOLD01", "CCER-SOL", 50_000, NOW)),
    (b'{"op":"deposit","deposit_id":"F-1","account":"EMIT01","cash":"1000000.50"}',
     Deposit("F-1", "EMIT01", "CNY", 100_000_050, NOW)),
    # the engine judges the values (unknown account, bad amount): a reject, in sequence
    (b'{"op":"deposit","deposit_id":"F-2","account":"NOBODY","instrument":"CCER-SOL","qty":-1}',
     Deposit("F-2", "NOBODY", "CCER-SOL", -1, NOW)),
]
REFUSED = [
    (b'{"op":"new","order_id":"o1","account":"EMIT01","instrument":"CCER-AFF","side":"buy",'
     b'"type":"limit","price":"62.00","qty":1}', "op 'new' is not an operator command"),
    (b'{"op":"cancel","order_id":"o1"}', "op 'cancel' is not an operator command"),
    (b'{"op":"amend","order_id":"o1","qty":2}', "op 'amend' is not an operator command"),
    (b'{"op":"instrument","symbol":"X","tick":"0.01","lot":1,"max_qty":9,"ref_price":"1.00",'
     b'"band_pct":10}', "op 'instrument' is not an operator command"),
    (b'{"op":"shutdown"}', "op 'shutdown' is not an operator command"),
    (b'{"op":"' + b"x" * 100 + b'"}', "x... is not an operator command"),
    (b'{"op":7}', "op 7 is not an operator command"),
    (b'{"open":false}', "op None is not an operator command"),
    (b'{"op":"status","open":"no"}', 'status needs "open"'),
    (b'{"op":"deposit","deposit_id":"F-3","account":"EMIT01","cash":"1.00","qty":1}', "either"),
    (b'{"op":"deposit","deposit_id":"F-4","account":"EMIT01","cash":1000}', "cash must be"),
    (b'{"op":"eod","ts":-1}', "ts is set by the server"),
    (b'{"op":"eod","ts":4102444800000000000}', "ts is set by the server"),     # 2100: refused
    (b'{"op":"deposit","deposit_id":"F-5","account":"EMIT01","cash":"1.00","ts":5}',
     "ts is set by the server"),
    (b'{"op":"eod"', "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b'[{"op":"eod"}]', "not a JSON object"),
    (b"", "empty request line"),
    (b"  \r", "empty request line"),
]


@pytest.mark.parametrize("line,command", ACCEPTED)
def test_operator_commands_are_accepted_and_stamped(line, command):
    assert handle_line(line, clock=lambda: NOW) == command


@pytest.mark.parametrize("line,text", REFUSED)
def test_anything_else_is_refused_with_a_reason(line, text):
    refused = handle_line(line, clock=lambda: NOW)
    assert type(refused) is Refused and text in refused.error, refused


def test_refusals_name_the_allowed_ops_and_the_fix_route():
    error = handle_line(b'{"op":"new"}').error
    assert ("eod, status, deposit, limits, restrict, unrestrict, kill, retire, list, state or "
            "accounts" in error
            and "FIX" in error)


# ------------------------------------------------------------------ the socket server
class Rig:
    """An in-memory exchange behind its FIX application, a gateway (port 0) for deliveries
    and a control server on a socket in a temporary directory, all in this event loop."""

    def __init__(self, path):
        config = GatewayConfig.demo()
        self.exchange = Exchange(load_instruments(None), config.build_accounts())
        self.application = ExchangeApplication(self.exchange, config.comp_id, config.brokers)
        self.gateway = GatewayServer("127.0.0.1", 0, [
            SessionSettings(config.session_key(b), self.application) for b in config.brokers])
        self.control = ControlServer(path, self.application, self.gateway.deliver)
        self.path = path

    async def __aenter__(self):
        await self.gateway.start()
        await self.control.start()
        return self

    async def __aexit__(self, *exc):
        await self.control.stop()
        await self.gateway.stop()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


async def raw_exchange(path, data: bytes, half_close: bool = True) -> list[dict]:
    """Write bytes, optionally half-close, read response lines until the server closes."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(data)
    await writer.drain()
    if half_close:
        writer.write_eof()
    out = [orjson.loads(line) for line in (await reader.read()).splitlines()]
    writer.close()
    return out


def test_socket_is_private_and_removed_on_stop(tmp_path):
    path = tmp_path / "control.sock"

    async def scenario():
        async with Rig(path):
            st = os.stat(path)
            assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert not path.exists()
    run(scenario())


def test_eod_expires_orders_tells_their_broker_and_answers_with_the_events(tmp_path):
    path = tmp_path / "control.sock"

    async def scenario():
        async with Rig(path) as rig:
            rig.application.on_message(B2, FixMessage.of(
                "D", (34, 2), (11, "s1"), (1, "HOLD02"), (55, "CCER-AFF"), (54, "2"),
                (60, "20260101-02:00:00.000"), (38, 5), (40, "2"), (44, "63.00")))
            [response] = await operator_request(path, [{"op": "eod"}])
            assert response["ok"] is True
            types = [e["type"] for e in response["events"]]
            assert types.count("day_closed") == len(rig.exchange.specs)
            [cancelled] = [e for e in response["events"] if e["type"] == "cancelled"]
            assert (cancelled["order_id"], cancelled["reason"]) == ("BROKER02:s1", "eod")
            assert rig.exchange.books["CCER-AFF"].orders == {}
            # BROKER02 (logged out) has the expiry stored for it, to recover by ResendRequest
            stored = [raw for _, raw in rig.gateway.sessions[B2].store.get(1, 100)]
            assert any(b"\x0135=8\x01" in raw and b"\x01150=C\x01" in raw for raw in stored)
    run(scenario())


def test_refused_and_garbage_lines_change_nothing_and_the_server_keeps_serving(tmp_path):
    path = tmp_path / "control.sock"

    async def scenario():
        async with Rig(path) as rig:
            seq = rig.exchange.seq
            huge = b'{"op":"status","open":false,"note":"' + b"n" * 70_000 + b'"}\n'
            answers = await raw_exchange(path, b"garbage\n" + huge + b'{"op":"new"}\n\x00\xff\n'
                                         + b'{"op":"status","open":false,"note":"halt"}\n'
                                         + b'{"op":"eod"')   # cut off: never applied
            assert [a["ok"] for a in answers] == [False, False, False, False, True, False]
            assert "longer than" in answers[1]["error"] and "incomplete" in answers[5]["error"]
            assert rig.exchange.seq == seq + 1 and rig.exchange.trading_open is False

            # a client that goes away mid-line, or without reading its answers
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b'{"op":"status","open":tr')
            await writer.drain()
            writer.transport.abort()
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b'{"op":"status","open":true}\n' * 3)
            await writer.drain()
            writer.transport.abort()
            await asyncio.sleep(0.05)
            [answer] = await operator_request(path, [{"op": "status", "open": True}])
            assert answer["ok"] is True and rig.exchange.trading_open is True
    run(scenario())


def test_deposits_credit_accounts_and_rejected_ones_are_answered_not_ok(tmp_path):
    path = tmp_path / "control.sock"

    async def scenario():
        async with Rig(path) as rig:
            cash_before = rig.exchange.accounts.get("HOLD01").cash
            answers = await operator_request(path, [
                {"op": "deposit", "deposit_id": "F-1", "account": "HOLD01", "cash": "1000.00"},
                {"op": "deposit", "deposit_id": "ISS-1", "account": "EMIT01",
                 "instrument": "CCER-MGV", "qty": 700},
                {"op": "deposit", "deposit_id": "F-1", "account": "HOLD01", "cash": "1000.00"},
                {"op": "deposit", "deposit_id": "F-2", "account": "NOBODY", "cash": "1.00"},
            ])
            assert [a["ok"] for a in answers] == [True, True, False, False]
            [cash], [credits] = answers[0]["events"], answers[1]["events"]
            assert (cash["type"], cash["account"], cash["asset"], cash["amount"]) == \
                ("deposited", "HOLD01", "CNY", "1000.00")
            assert (credits["asset"], credits["amount"]) == ("CCER-MGV", 700)
            assert [a["events"][0]["reason"] for a in answers[2:]] == \
                ["duplicate_deposit_id", "unknown_account"]
            assert [(a["events"][0]["type"], a["events"][0]["deposit_id"])
                    for a in answers[2:]] == [("deposit_rejected", "F-1"),
                                              ("deposit_rejected", "F-2")]
            assert rig.exchange.accounts.get("HOLD01").cash == cash_before + 100_000
            assert rig.exchange.accounts.get("EMIT01").credits["CCER-MGV"] == 700
    run(scenario())


def test_many_requests_on_one_connection_are_answered_in_order(tmp_path):
    path = tmp_path / "control.sock"
    requests = [{"op": "status", "open": i % 2 == 1, "note": f"n{i}"} for i in range(2000)]

    async def scenario():
        async with Rig(path):
            answers = await operator_request(path, requests)
            assert [a["events"][0]["note"] for a in answers] == [r["note"] for r in requests]
    run(scenario())


def test_a_stale_socket_file_is_replaced_but_a_live_one_or_a_file_is_not(tmp_path):
    path = tmp_path / "control.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()                                  # left behind, nobody listening

    async def scenario():
        async with Rig(path):
            second = Rig(path)
            with pytest.raises(OSError, match="in use by another server"):
                await second.control.start()
            [answer] = await operator_request(path, [{"op": "eod"}])   # still ours
            assert answer["ok"] is True
        other = tmp_path / "notes.txt"
        other.write_text("keep me")
        with pytest.raises(OSError, match="not a socket"):
            await Rig(other).control.start()
        assert other.read_text() == "keep me"
    run(scenario())


def test_client_reports_an_unreachable_socket(tmp_path):
    with pytest.raises(ControlUnavailable, match="cannot reach the control socket"):
        run(operator_request(tmp_path / "absent.sock", [{"op": "eod"}]))


def test_a_socket_in_a_deep_directory_beyond_the_sun_path_limit_works(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "control.sock"
    assert len(str(path)) > 108                    # too long for a plain bind()

    async def scenario():
        async with Rig(path):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
            [answer] = await operator_request(path, [{"op": "status", "open": False}])
            assert answer["ok"] and answer["events"][0]["open"] is False
        assert not path.exists()
    run(scenario())


def test_state_query_shows_the_market_and_changes_nothing(tmp_path):
    path = tmp_path / "control.sock"

    async def scenario():
        async with Rig(path) as rig:
            rig.exchange.apply(NewOrder("o1", "EMIT01", "CCER-AFF", "buy", "limit", "day",
                                        61_990_000, 10, 5))
            seq = rig.exchange.seq
            [halted, answer] = await operator_request(path, [
                {"op": "status", "open": False, "note": "halt"}, {"op": "state"}])
            state = answer["state"]
            assert answer["ok"] and state["trading_open"] is False and state["seq"] == seq + 1
            aff = state["instruments"]["CCER-AFF"]
            assert (aff["best_bid"], aff["best_ask"], aff["resting_orders"]) == ("61.99", None, 1)
            assert aff["reference"] == "62.00" and aff["band"] == ["55.80", "68.20"]
            assert (aff["volume"], aff["turnover"], aff["trades"]) == (0, "0.00", 0)
            assert set(state["instruments"]) == set(rig.exchange.specs)
            assert rig.exchange.seq == seq + 1                 # the query applied nothing
            [refused] = await operator_request(path, [{"op": "state", "what": "all"}])
            assert not refused["ok"] and "takes no fields" in refused["error"]
    run(scenario())


def test_a_query_makes_what_it_shows_durable_first(tmp_path):
    path = tmp_path / "control.sock"

    async def scenario():
        async with Rig(path) as rig:
            commits = []
            rig.control.commit = lambda: commits.append(rig.exchange.seq)
            await operator_request(path, [{"op": "accounts"}])
            assert commits == [rig.exchange.seq]

            def broken():
                raise OSError("journal write failed")
            rig.control.commit = broken
            [answer] = await operator_request(path, [{"op": "state"}])
            assert not answer["ok"] and "journal write failed" in answer["error"]
    run(scenario())


def test_a_standby_refuses_operator_commands_as_not_applied(tmp_path):
    """On a standby of a cluster the engine refuses commands (NotLeader) before applying
    anything: the operator is told it was not applied, never 'internal error, may have been'."""
    from ccerx.engine.durable.replicated import NotLeader
    path = tmp_path / "control.sock"

    async def scenario():
        async with Rig(path) as rig:
            def refuse(command, events):
                raise NotLeader("this node is a standby; the leader is n1 at 127.0.0.1:9878")
            rig.application.run_operator_command = refuse
            [answer] = await operator_request(path, [{"op": "eod"}])
            assert answer["ok"] is False and "applied" not in answer
            assert answer["error"].startswith("not applied: ") and "leader is n1" in answer["error"]
            assert "internal error" not in answer["error"]
    run(scenario())
