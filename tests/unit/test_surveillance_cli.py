"""`ccerx surveil` end to end: an events file written by `ccerx replay --events-out` and a data
directory written by the durable engine give the same alerts, byte for byte on every run; the
directory is left as it was; the cases move open -> under review -> closed with a Chinese
note, refused changes change nothing; bad input is refused before anything is written."""
from __future__ import annotations

import hashlib
import os

import orjson
import pytest

from ccerx.engine.core.commands import CancelOrder, EndOfDay, NewOrder
from ccerx.engine.durable.exchange import DurableExchange
from ccerx.scripts.ccerx import main

S = 1_000_000_000
T0 = 1_772_415_000 * S


def commands():
    """A spoof (a large bid near the touch cancelled after 10 s) and a related pair trading
    with each other, among ordinary trades; then the close."""
    out, n = [], 0

    def order(account, side, qty, price_cents, t):
        nonlocal n
        n += 1
        out.append(NewOrder(f"o{n}", account, "CCER-AFF", side, "limit", "day",
                            price_cents * 10_000, qty, T0 + t * S))
        return f"o{n}"
    for k in range(3):
        order(f"S{k}", "sell", 100, 6200, k)
        order(f"B{k}", "buy", 100, 6200, k)
    order("MM", "buy", 500, 6190, 10)
    order("MM2", "sell", 500, 6210, 10)
    spoof = order("SPOOF", "buy", 6_000, 6195, 100)
    out.append(CancelOrder(spoof, T0 + 110 * S))
    order("GRP-A", "sell", 800, 6210, 200)     # lifts MM2's ask? no: same price, rests behind
    order("GRP-B", "buy", 1_300, 6210, 201)    # takes MM2 (500) then GRP-A (800)
    order("GRP-B", "sell", 800, 6190, 300)     # hits MM (500), then rests 300
    order("GRP-A", "buy", 300, 6190, 301)      # takes GRP-B's rest
    out.append(EndOfDay(T0 + 5 * 3600 * S))
    return out


def to_line(command) -> bytes:
    if type(command) is NewOrder:
        price = command.price_units // 10_000
        return orjson.dumps({"op": "new", "ts": command.ts, "order_id": command.order_id,
                             "account": command.account, "instrument": command.instrument,
                             "side": command.side, "type": "limit", "tif": "day",
                             "price": f"{price // 100}.{price % 100:02d}", "qty": command.qty})
    if type(command) is CancelOrder:
        return orjson.dumps({"op": "cancel", "order_id": command.order_id, "ts": command.ts})
    return orjson.dumps({"op": "eod", "ts": command.ts})


RELATED = """
[[relation]]
kind = "beneficial_owner"
name = "张三"
accounts = ["GRP-A", "GRP-B"]
"""


@pytest.fixture
def events_file(tmp_path):
    flow = tmp_path / "flow.ndjson"
    flow.write_bytes(b"\n".join(map(to_line, commands())) + b"\n")
    events = tmp_path / "events.ndjson"
    assert main(["replay", str(flow), "--events-out", str(events)]) == 0
    return events


def surveil(*args) -> int:
    return main(["surveil", *map(str, args)])


def test_events_file_alerts_summary_and_byte_identical_reruns(tmp_path, events_file, capsys):
    related = tmp_path / "related.toml"
    related.write_text(RELATED, encoding="utf-8")
    for out in ("a", "b"):
        assert surveil(events_file, "--related", related, "--out", tmp_path / out) == 0
    first = (tmp_path / "a" / "alerts.ndjson").read_bytes()
    assert first == (tmp_path / "b" / "alerts.ndjson").read_bytes()
    assert (tmp_path / "a" / "summary.txt").read_bytes() == (tmp_path / "b" / "summary.txt").read_bytes()
    alerts = [orjson.loads(line) for line in first.splitlines()]
    assert {(a["rule"], a["kind"]) for a in alerts} == {("spoofing", "large_cancel"),
                                                         ("wash", "related")}
    wash = next(a for a in alerts if a["rule"] == "wash")
    assert wash["accounts"] == ["GRP-A", "GRP-B"] and wash["details"]["relation_name"] == "张三"
    assert wash["evidence"] and wash["article"] == "44(2)"
    summary = (tmp_path / "a" / "summary.txt").read_text()
    assert "spoofing" in summary and "44(4)" in summary
    for name in ("alerts.ndjson", "summary.txt", "cases.sqlite"):
        assert os.stat(tmp_path / "a" / name).st_mode & 0o777 == 0o600
    # a rerun into the same store adds nothing
    capsys.readouterr()
    assert surveil(events_file, "--related", related, "--out", tmp_path / "a") == 0
    assert "0 new, 2 already there" in capsys.readouterr().out


def _digest(directory):
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(directory.iterdir()) if p.is_file()}


def test_data_directory_read_only_gives_the_events_file_alerts(tmp_path, events_file):
    data = tmp_path / "data"
    exchange = DurableExchange(data, ledger=None, log=lambda text: None)
    exchange.apply_many(commands())
    exchange.close()
    before = _digest(data)
    assert surveil(data, "--out", tmp_path / "from-dir") == 0
    assert _digest(data) == before
    assert surveil(events_file, "--out", tmp_path / "from-file") == 0
    from_dir = (tmp_path / "from-dir" / "alerts.ndjson").read_bytes()
    assert from_dir and from_dir == (tmp_path / "from-file" / "alerts.ndjson").read_bytes()


def test_cases_review_and_close_with_a_chinese_note(tmp_path, events_file, capsys):
    out = tmp_path / "out"
    assert surveil(events_file, "--out", out) == 0
    [case] = [c for c in _cases(out, capsys) if c["rule"] == "spoofing"]
    assert case["state"] == "open"
    alert_id = case["id"]
    # closing needs a note; a refused change changes nothing
    assert surveil("case", "close", alert_id, "--out", out) == 2
    assert "needs a note" in capsys.readouterr().err
    assert surveil("case", "review", alert_id, "--out", out, "--operator", "王芳") == 0
    assert surveil("case", "review", alert_id, "--out", out) == 2
    assert "under_review: review is not possible" in capsys.readouterr().err
    note = "已核实：做市商误操作，已书面说明。\nsecond line"
    assert surveil("case", "close", alert_id, "--note", note, "--out", out,
                   "--operator", "王芳") == 0
    assert surveil("case", "close", alert_id, "--note", "bad\x01note", "--out", out) == 2
    capsys.readouterr()
    assert surveil("case", "show", alert_id, "--out", out) == 0
    shown = orjson.loads(capsys.readouterr().out)
    assert shown["state"] == "closed" and shown["note"] == note and shown["operator"] == "王芳"
    assert [h["to_state"] for h in shown["history"]] == ["open", "under_review", "closed"]
    assert shown["alert"]["evidence"] and shown["alert"]["accounts"] == ["SPOOF"]
    assert [c["id"] for c in _cases(out, capsys, "--state", "closed")] == [alert_id]
    assert surveil("case", "list", "--out", out) == 0
    assert "已核实" in capsys.readouterr().out
    assert surveil("case", "show", "nope-1", "--out", out) == 2
    assert "no alert 'nope-1'" in capsys.readouterr().err


def _cases(out, capsys, *extra):
    capsys.readouterr()
    assert surveil("case", "list", "--json", "--out", out, *extra) == 0
    return orjson.loads(capsys.readouterr().out)


def test_disclosures_file_and_bad_input(tmp_path, events_file, capsys):
    out = tmp_path / "out"
    disclosures = tmp_path / "disclosures.ndjson"
    disclosures.write_text(orjson.dumps({"ts": T0 + 4 * 3600 * S, "instrument": "CCER-AFF",
                                         "direction": "positive", "id": "公告-1",
                                         "note": "方法学修订"}).decode() + "\n", encoding="utf-8")
    assert surveil(events_file, "--disclosures", disclosures, "--out", out) == 0
    # bad lines: refused with their line number, nothing written
    bad = tmp_path / "bad.ndjson"
    bad.write_bytes(events_file.read_bytes() + b'{"type":"trade","seq":1}\n')
    assert surveil(bad, "--out", tmp_path / "never") == 2
    assert "line " in capsys.readouterr().err and not (tmp_path / "never").exists()
    disclosures.write_text('{"ts": 1, "instrument": "CCER-AFF", "direction": "up"}\n')
    assert surveil(events_file, "--disclosures", disclosures, "--out", tmp_path / "never") == 2
    assert "direction" in capsys.readouterr().err
    config = tmp_path / "s.toml"
    config.write_text("[wash]\nwindow = 5\n")
    assert surveil(events_file, "--config", config, "--out", tmp_path / "never") == 2
    assert "no setting 'window'" in capsys.readouterr().err and not (tmp_path / "never").exists()
    assert surveil(tmp_path, "--out", tmp_path / "never") == 2
    assert "not a ccerx data directory" in capsys.readouterr().err
    assert surveil("case", "list", "--out", tmp_path / "never") == 2


def test_surveil_the_simulation_from_the_command_line(tmp_path, capsys):
    """`ccerx surveil --simulate` (what benchmarks/README.md reports for five days), one day."""
    assert surveil("--simulate", "--days", "1", "--out", tmp_path / "sim") == 0
    summary = (tmp_path / "sim" / "summary.txt").read_text()
    assert "simulation 'default' (1 day, seed 1)" in summary
    alerts = [orjson.loads(line) for line in (tmp_path / "sim" / "alerts.ndjson").read_bytes().splitlines()]
    assert {a["rule"] for a in alerts} <= {"spoofing"} and len(alerts) <= 15
    assert surveil("--simulate", "--days", "1", "--out", tmp_path / "again") == 0
    assert (tmp_path / "again" / "alerts.ndjson").read_bytes() == (tmp_path / "sim" / "alerts.ndjson").read_bytes()


def test_an_event_type_of_a_newer_engine_is_skipped_and_said(tmp_path, events_file, capsys):
    newer = tmp_path / "newer.ndjson"
    newer.write_bytes(events_file.read_bytes() + b'{"type":"restricted","seq":999,"ts":1}\n')
    assert surveil(newer, "--out", tmp_path / "out") == 0
    assert "skipped 1 event of type 'restricted'" in (tmp_path / "out" / "summary.txt").read_text()
    garbage = tmp_path / "garbage.ndjson"
    garbage.write_bytes(events_file.read_bytes() + b'{"type":"restricted"}\n')
    assert surveil(garbage, "--out", tmp_path / "never") == 2
    assert "unknown event type 'restricted'" in capsys.readouterr().err


def test_the_engines_own_risk_control_events_are_known_not_skipped(tmp_path, events_file):
    """limits, large_holder and restriction are this engine's events (issue 14 item 2): not
    trading, so nothing to judge, but not 'a newer engine's' either."""
    with_controls = tmp_path / "controls.ndjson"
    with_controls.write_bytes(events_file.read_bytes()
                              + b'{"type":"restriction","seq":999,"ts":1,"account":"A1","side":"both"}\n'
                              + b'{"type":"large_holder","seq":1000,"ts":1,"account":"A1"}\n'
                              + b'{"type":"limits","seq":1001,"ts":1}\n')
    assert surveil(with_controls, "--out", tmp_path / "out") == 0
    assert "skipped" not in (tmp_path / "out" / "summary.txt").read_text()
