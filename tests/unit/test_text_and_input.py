"""Text and numbers at the edges (issue 12 items 2, 8 and 11): Chinese text travels as FIX
EncodedText, control characters never reach the wire, only ASCII digits are numbers, cash is
deposited as cash, and passwords stay out of logs and error messages."""
from __future__ import annotations

import logging

import orjson
import pytest
import simplefix

from ccerx.engine.core.commands import Deposit, Malformed, SetTradingStatus
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.core.types import (DecimalFormatError, InstrumentSpec, PriceError, RejectReason,
                                     parse_cny_to_fen, parse_decimal_units, price_field)
from ccerx.engine.formats.config import account_from_row, load_instruments
from ccerx.engine.formats.ndjson import parse_command
from ccerx.gateway.config import ConfigError, GatewayConfig
from ccerx.gateway.control import ControlServer, Refused, handle_line
from ccerx.gateway.fix import codec
from ccerx.gateway.fix.application import FixMessage, SessionKey
from ccerx.gateway.fix.fix44_spec import FIELDS
from ccerx.gateway.fix.translate import ExchangeApplication, whole_tonnes
from ccerx.gateway.server import GatewayServer, SessionSettings

NOW = 1_780_000_000_000_000_000
B1 = SessionKey("FIX.4.4", "CCERX", "BROKER01")
NOTE = "系统检查"


# ------------------------------------------------------------------ FIX text fields (item 2)
def test_ascii_text_is_plain_text_and_chinese_is_encoded_text():
    assert codec.text_fields(58, "market closed") == [(58, "market closed")]
    fields = codec.text_fields(58, NOTE)
    data = NOTE.encode("utf-8")
    assert fields == [(58, "\\u7cfb\\u7edf\\u68c0\\u67e5"), (354, str(len(data))),
                      (355, data.decode("latin-1"))]
    assert codec.declare_encoding(list(fields))[-1] == (347, "UTF-8")
    assert codec.declare_encoding([(58, "plain")]) == [(58, "plain")]
    assert codec.text_fields(107, "林业碳汇")[1][0] == 350           # SecurityDesc's pair
    # a control character can end a field early: escaped in both forms, never on the wire raw
    for text in ("a\x01b=1", "停\x01止"):
        for _, value in codec.text_fields(58, text):
            assert "\x01" not in value and "\x01" not in value.encode("latin-1").decode("utf-8")


def test_received_encoded_text_is_decoded_where_text_is_read():
    data = NOTE.encode("utf-8").decode("latin-1")
    assert codec.read_text([(347, "UTF-8"), (58, "?"), (354, "12"), (355, data)]) == NOTE
    assert codec.read_text([(58, "plain")]) == "plain"
    assert codec.read_text([(35, "5")]) is None
    gbk = "系统".encode("gbk").decode("latin-1")
    assert codec.read_text([(347, "GBK"), (355, gbk)]) == "系统"


def exchange_application():
    config = GatewayConfig.demo()
    exchange = Exchange(load_instruments(None), config.build_accounts())
    application = ExchangeApplication(exchange, config.comp_id, config.brokers)
    gateway = GatewayServer("127.0.0.1", 0, [
        SessionSettings(config.session_key(b), application) for b in config.brokers])
    return application, gateway


def stored(gateway, key) -> list[bytes]:
    return [raw for _, raw in gateway.sessions[key].store.get(1, 1000)]


def test_a_chinese_halt_note_goes_out_as_encoded_text_that_a_stock_parser_reads():
    application, gateway = exchange_application()
    outbound = application.run_operator_command(SetTradingStatus(False, NOTE, NOW, True))
    gateway.deliver(outbound)                           # framed by the real session layer
    [raw] = stored(gateway, B1)
    assert codec.parse(raw)                            # our own codec accepts it
    parser = simplefix.FixParser()
    parser.append_buffer(raw)
    message = parser.get_message()
    assert message.get(35) == b"h" and message.get(340) == b"1"
    assert message.get(347) == b"UTF-8" and message.get(355).decode("utf-8") == NOTE
    assert int(message.get(354)) == len(message.get(355))
    assert message.get(58).isascii()
    header = raw.split(b"\x0135=h\x01")[1].split(b"\x01336=")[0]   # 347 is in the header
    assert b"347=UTF-8" in header
    # the next logon and a TradingSessionStatusRequest are answered with it too
    [(_, status)] = application.on_logon(B1)
    assert codec.read_text(status.fields) == NOTE


def test_a_chinese_reject_text_is_encoded_too():
    from ccerx.gateway.fix.translate import business_reject
    message = business_reject(FixMessage.of("Z", (34, 5)), "3", f"不支持的消息 {NOTE}")
    assert codec.read_text(message.fields) == f"不支持的消息 {NOTE}"
    assert (347, "UTF-8") in message.fields and message.get(58).isascii()


# ------------------------------------------------------------------ notes (item 11)
@pytest.mark.parametrize("note", ["halt\x01" + "58=injected", "a\nb", "tab\there", "nul\x00",
                                  "del\x7f", "c1\x85", "rtl\u202eoverride", "line\u2028sep"])
def test_a_note_with_control_characters_is_refused(note):
    line = f'{{"op":"status","open":false,"note":{_json(note)}}}'
    command = parse_command(line)
    assert type(command) is Malformed and "control character" in command.text
    refused = handle_line(line.encode(), clock=lambda: NOW)
    assert type(refused) is Refused and "control character" in refused.error


@pytest.mark.parametrize("note", [NOTE, "午休 12:00–13:00", "全角　空格", "halt"])
def test_notes_in_chinese_and_plain_text_are_accepted(note):
    line = f'{{"op":"status","open":false,"note":{_json(note)}}}'
    assert parse_command(line) == SetTradingStatus(False, note, None)


def _json(text: str) -> str:
    return orjson.dumps(text).decode()


# ------------------------------------------------------------------ digits (item 11)
NOT_ASCII_DIGITS = ["１００", "١٠٠", "۱۰۰", "1０0", "१००", "１００.００", "100.０1", "-１"]


@pytest.mark.parametrize("text", NOT_ASCII_DIGITS)
def test_only_ascii_digits_are_decimals(text):
    with pytest.raises(DecimalFormatError):
        parse_decimal_units(text, 100)
    with pytest.raises(DecimalFormatError):
        parse_cny_to_fen(text)
    refused = price_field(text)
    assert type(refused) is PriceError and refused.reason is RejectReason.INVALID_PRICE


@pytest.mark.parametrize("text", NOT_ASCII_DIGITS)
def test_every_edge_refuses_non_ascii_digits(text):
    cash = parse_command(f'{{"op":"deposit","deposit_id":"F","account":"A","cash":"{text}"}}')
    assert type(cash) is Malformed and "cash must be" in cash.text
    assert type(handle_line(
        f'{{"op":"deposit","deposit_id":"F","account":"A","cash":"{text}"}}'.encode())) is Refused
    with pytest.raises(Exception, match="whole number of tonnes"):
        whole_tonnes(text)                              # FIX OrderQty
    with pytest.raises(ValueError, match="cash"):
        account_from_row({"account": "A1", "type": "project_owner", "member": "B",
                          "cash": text}, allow_member=True)   # accounts files
    with pytest.raises(ValueError):
        InstrumentSpec.from_fields("X", ref_price=text)  # instrument files


def test_ascii_decimals_still_parse():
    assert parse_cny_to_fen("100") == 10_000 and parse_cny_to_fen("0.01") == 1
    assert parse_decimal_units("-62.010", 1_000_000) == -62_010_000
    assert whole_tonnes("100") == 100


# ------------------------------------------------------------------ cash is cash (item 11)
def test_a_cny_deposit_given_as_instrument_and_qty_is_refused():
    line = '{"op":"deposit","deposit_id":"F-1","account":"EMIT01","instrument":"CNY","qty":1000000}'
    command = parse_command(line)
    assert type(command) is Malformed and '"cash"' in command.text and "CNY" in command.text
    refused = handle_line(line.encode(), clock=lambda: NOW)
    assert type(refused) is Refused and '"cash"' in refused.error
    assert parse_command(line.replace('"instrument":"CNY","qty":1000000', '"cash":"10000.00"')) \
        == Deposit("F-1", "EMIT01", "CNY", 1_000_000, None)


# ------------------------------------------------------------------ applied, then failed (item 2)
def test_an_applied_command_whose_delivery_fails_is_answered_as_applied(tmp_path):
    application, _ = exchange_application()

    def deliver(outbound):
        raise RuntimeError("broken pipe to the brokers")

    control = ControlServer(tmp_path / "c.sock", application, deliver, clock=lambda: NOW)
    response = orjson.loads(control.respond(b'{"op":"status","open":false,"note":"x"}'))
    assert application.exchange.trading_open is False            # it was applied
    assert response["applied"] is True and response["ok"] is False
    assert "internal error" not in response["error"]
    assert "applied" in response["error"] and "broken pipe to the brokers" in response["error"]
    assert response["events"][0]["type"] == "status"


# ------------------------------------------------------------------ passwords (item 8)
def test_every_password_field_of_the_dictionary_is_redacted():
    password_tags = {tag for tag, (name, _) in FIELDS.items() if "Password" in name}
    assert {554, 925} <= password_tags <= codec.SECRET_TAGS
    raw = codec.encode([(34, "1"), (49, "B"), (52, "x"), (56, "C")],
                       [(98, "0"), (108, "30"), (553, "B"), (554, "hunter2"), (925, "s3cret!")],
                       "A")
    shown = codec.pretty(raw)
    assert "hunter2" not in shown and "s3cret!" not in shown and "554=***" in shown
    assert "925=***" in shown and "553=B" in shown
    broken = raw.replace(b"\x0110=", b"10=")                    # garbled: still redacted
    assert "hunter2" not in codec.pretty(broken)
    assert "hunter2" not in repr(FixMessage.of("A", (554, "hunter2")))


def test_a_garbled_logon_is_logged_without_its_password(caplog):
    application, gateway = exchange_application()
    session = gateway.sessions[B1]
    raw = codec.encode([(34, "1"), (49, "BROKER01"), (52, codec.utc_timestamp(0)),
                        (56, "CCERX")], [(98, "0"), (108, "30"), (554, "hunter2")], "A")
    raw = raw[:-4] + b"%03d\x01" % ((int(raw[-4:-1]) + 1) % 256)  # a wrong CheckSum
    caplog.set_level(logging.INFO)
    session.connection_made(0.0)
    session.receive_data(raw, 0.0)
    assert "garbled" in caplog.text and "hunter2" not in caplog.text


@pytest.mark.parametrize("password", ["hunter2", "pa$$w0rd", "scrypt$hunter2", "x" * 60])
def test_a_plaintext_password_in_a_config_is_not_echoed(password):
    text = f"""
[gateway]
comp_id = "CCERX"
[[broker]]
comp_id = "BROKER01"
password = "{password}"
"""
    with pytest.raises(ConfigError) as refused:
        GatewayConfig.from_toml_text(text, "test.toml")
    message = str(refused.value)
    assert "password" in message and password not in message and "hunter2" not in message


def test_instrument_names_in_chinese_are_accepted_and_control_characters_refused():
    assert InstrumentSpec.from_fields("X", ref_price="1.00", name="林业碳汇").name == "林业碳汇"
    for name in ("a\x01b", "two\nlines", 7):
        with pytest.raises(ValueError, match="name must be"):
            InstrumentSpec.from_fields("X", ref_price="1.00", name=name)


def test_a_symbol_is_ascii_and_a_chinese_symbol_is_refused_with_a_pointer_to_name():
    # a Symbol (55) goes out in FIX messages that the codec frames as bytes: a Chinese symbol
    # could not be sent (and no broker could send it back); the Chinese goes in the name
    for symbol in ("碳汇-1", "CCER AFF", "CCER\x01AFF"):
        with pytest.raises(ValueError, match="printable ASCII"):
            InstrumentSpec.from_fields(symbol, ref_price="1.00")
    assert InstrumentSpec.from_fields("CCER-NEW", ref_price="1.00").symbol == "CCER-NEW"
