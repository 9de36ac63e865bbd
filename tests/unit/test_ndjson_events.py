"""The fast event lines (engine/formats/ndjson_events.py) are byte for byte the reference
lines: orjson.dumps(event_to_dict(event)) + newline, for every event of whole flows and for
text that JSON must escape or that is not ASCII."""
from pathlib import Path

import orjson

from ccerx.engine.core.commands import EndOfDay, Malformed
from ccerx.engine.core.events import (OrderAccepted, OrderAmended, OrderCancelled, OrderRejected,
                                      TradeExecuted)
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.formats.config import load_accounts
from ccerx.engine.formats.ndjson import event_to_dict, parse_command
from ccerx.engine.formats.ndjson_events import EventLines

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def _reference(events, specs) -> bytes:
    return b"".join(orjson.dumps(event_to_dict(e, specs)) + b"\n" for e in events)


def _events(exchange, commands):
    out = []
    for command in commands:
        out.extend(exchange.apply(command))
    return out


def test_every_event_of_the_sample_flow_with_and_without_accounts_is_the_reference_line():
    commands = [parse_command(line) for line in (SAMPLES / "sample-flow.ndjson").open("rb")]
    for accounts in (None, load_accounts(SAMPLES / "accounts.json")):
        exchange = Exchange(accounts=accounts)
        events = _events(exchange, commands + [EndOfDay(None)])
        kinds = {type(e) for e in events}
        assert {TradeExecuted, OrderAccepted, OrderRejected, OrderCancelled, OrderAmended} <= kinds
        lines = EventLines(exchange.specs)
        assert lines.encode(events) == _reference(events, exchange.specs)
        # and per command, as the replay's batch sink hands them over
        assert lines.encode_batches([[e] for e in events[:500]]) == _reference(events[:500], exchange.specs)


def test_text_json_escapes_or_that_is_not_ascii_comes_out_as_the_reference_gives_it():
    exchange = Exchange()
    specs = exchange.specs
    awkward = ['卖方"甲"', "a\\b", "tab\there", "line\nbreak", "\x00", "碳汇", "ok"]
    lines = []
    for i, name in enumerate(awkward):
        lines.append({"op": "new", "order_id": f"s{i}{name}", "account": name, "side": "sell",
                      "instrument": "CCER-AFF", "price": "62.00", "qty": 5})
        lines.append({"op": "new", "ts": 9, "order_id": f"b{i}{name}", "account": f"买{name}",
                      "side": "buy", "instrument": "CCER-AFF", "price": "62.00", "qty": 3})
        lines.append({"op": "cancel", "order_id": f"s{i}{name}"})
        lines.append({"op": "cancel", "ts": 5, "order_id": f"nope{name}"})
        lines.append({"op": "amend", "ts": 5, "order_id": f"b{i}{name}", "price": "61.00", "qty": 3})
    commands = [parse_command(orjson.dumps(line)) for line in lines]
    commands.append(Malformed(None, None, "no op"))
    commands.append(Malformed("new", '"quoted"', "bad \"thing\" 碳"))
    events = _events(exchange, commands)
    assert sum(type(e) is TradeExecuted for e in events) == len(awkward)
    assert EventLines(specs).encode(events) == _reference(events, specs)


def test_an_event_type_without_a_template_goes_through_the_reference():
    exchange = Exchange()
    events = _events(exchange, [parse_command(b'{"op":"status","open":false,"note":"\xe5\x8d\x88\xe4\xbc\x91"}'),
                                EndOfDay(7)])
    assert {type(e).__name__ for e in events} >= {"TradingStatusChanged"}
    assert EventLines(exchange.specs).encode(events) == _reference(events, exchange.specs)
    assert EventLines(exchange.specs).encode([]) == b""
