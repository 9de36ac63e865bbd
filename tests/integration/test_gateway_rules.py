"""A day under the cbeex-2023 rules (the `ccerx serve` default) over real FIX sessions: take
orders, not_permitted, and the Art.29 holding period counted in closes, kept across a kill -9
(snapshot + journal replay)."""
from __future__ import annotations

from ccerx.gateway.control import operator_request_sync
from tests.fixclient import Broker, s


def _logged_on(comp_id: str, password: str, port: int) -> Broker:
    broker = Broker(comp_id, port)
    broker.logon(password, reset=True)
    broker.expect("h")
    return broker


def _close_day(server) -> None:
    [closed] = operator_request_sync(server.control, [{"op": "eod"}])
    assert closed["ok"] is True, closed


def test_take_not_permitted_and_the_holding_period_across_a_crash(tmp_path, start_serve):
    data = tmp_path / "data"
    server = start_serve("--data-dir", str(data))
    assert "rules cbeex-2023" in server.start_line
    b1 = _logged_on("BROKER01", "demo01", server.port)
    b2 = _logged_on("BROKER02", "demo02", server.port)
    try:
        b2.new_order("s1", "HOLD02", "2", 100, "62.00")
        b2.new_order("s2", "HOLD02", "2", 100, "62.05")
        b2.reports(2)
        # IOC is not permitted: cancel and re-enter instead
        b1.new_order("i1", "EMIT01", "1", 10, "62.05", tif="3")
        refused = b1.expect("8")
        assert s(refused, 150) == "8" and s(refused, 58).startswith("not_permitted")
        # the take (OrdType Q) trades at the best level only; its rest expires
        b1.new_order("t1", "EMIT01", "1", 150, ord_type="Q")
        ack, fill, expired = b1.reports(3)
        assert (s(ack, 150), s(ack, 40), s(ack, 44)) == ("0", "Q", "62.00")
        assert (s(fill, 150), s(fill, 32), s(fill, 31)) == ("F", "100", "62.00")
        assert (s(expired, 150), s(expired, 14), s(expired, 151)) == ("C", "100", "0")
        assert s(b2.expect("8"), 11) == "s1"
        # Art.29: EMIT01 bought CCER-AFF today: no sell before the fifth close
        b1.new_order("x1", "EMIT01", "2", 10, "62.00")
        held = b1.expect("8")
        assert s(held, 150) == "8" and s(held, 58).startswith("holding_period")
        assert "after 5 more closes" in s(held, 58)
        # and HOLD02 sold it: no buy back either
        b2.new_order("y1", "HOLD02", "1", 10, "61.00")
        assert s(b2.expect("8"), 58).startswith("holding_period")
    finally:
        b1.close()
        b2.close()

    server.kill()                      # kill -9: the state comes back from snapshot + journal
    server = start_serve("--data-dir", str(data), log_name="serve2.log")
    b1 = _logged_on("BROKER01", "demo01", server.port)
    try:
        for closes in range(1, 5):
            _close_day(server)
            b1.new_order(f"x{closes + 1}", "EMIT01", "2", 10, "62.00")
            held = b1.expect("8", where=lambda m: s(m, 150) == "8")
            assert f"after {5 - closes} more close" in s(held, 58)
        _close_day(server)
        b1.new_order("x6", "EMIT01", "2", 10, "62.00")
        assert s(b1.expect("8", where=lambda m: s(m, 11) == "x6"), 150) == "0"
    finally:
        b1.close()
    assert "Traceback" not in server.log_text()


def test_a_data_directory_keeps_the_rules_it_was_created_with(tmp_path, start_serve):
    data = tmp_path / "data"
    server = start_serve("--data-dir", str(data), "--rules", "continuous")
    assert "rules continuous" in server.start_line
    server.terminate()
    server = start_serve("--data-dir", str(data), log_name="serve2.log")
    assert "rules continuous" in server.start_line
    assert "keeps them" in server.log_text()
