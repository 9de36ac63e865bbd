"""Orders whose execution reports were lost with a crash (issue 15, item 1).

kill -9 between the engine's journal commit and the FIX store's flush: the engine holds the
orders (and their fills, cancels), the store neither counted their MsgSeqNums nor kept their
reports, and the broker never received them. The orders are finished, so the gateway does
not know them after the restart (it learns the resting ones from the engine, the rest from
the store). The broker resends them with PossDupFlag; each must be answered with its true
status (150=I: filled, cancelled), never as a duplicate ClOrdID rejected (39=8): the
gateway re-derives a lost order's history from the journal.

(A cluster node does the same from its own journal; there the reports travel with their
commands in the replicated log, see test_cluster.py.)"""
from __future__ import annotations

from tests.fixclient import Broker, now, s, sync
from tests.serve_process import ServeProcess


class _ResendingBroker(Broker):
    """Keeps the gateway's ResendRequest (`resend_from`) for the test to resend its orders."""
    resend_from = None

    def _on_message(self, message) -> None:
        if s(message, 35) == "2":
            self.received.append(message)
            self.next_in = max(self.next_in, int(s(message, 34)) + 1)
            self.resend_from = int(s(message, 7))
            return
        super()._on_message(message)


def _log_on(broker: Broker, password: str, **kw) -> None:
    reply = broker.logon(password, **kw)
    assert s(reply, 35) == "A", s(reply, 58)
    broker.expect("h")


def test_finished_orders_whose_reports_were_lost_answer_a_resend_with_their_status(tmp_path):
    data = tmp_path / "data"
    b1 = _ResendingBroker("BROKER01", 0)
    with ServeProcess(["--data-dir", str(data)], log_path=tmp_path / "serve.log") as server:
        b1.port = server.port
        b2 = Broker("BROKER02", server.port)
        _log_on(b1, "demo01", reset=True)
        _log_on(b2, "demo02", reset=True)
        first_seq, first_report = b1.next_out, b1.next_in
        b1.new_order("done-fill", "HOLD01", "2", 10, "62.00")
        b1.new_order("done-cxl", "HOLD01", "2", 7, "64.00")
        assert [s(m, 150) for m in b1.reports(2)] == ["0", "0"]
        b2.new_order("b1", "EMIT02", "1", 10, "62.00")                 # fills done-fill
        assert s(b1.expect("8"), 39) == "2"
        b1.send("F", (41, "done-cxl"), (11, "done-cxl-c"), (55, "CCER-AFF"), (54, "2"),
                (60, now()))
        assert s(b1.expect("8"), 150) == "4"
        server.kill()                                                  # kill -9
    b1.close()
    # what the crash leaves when the store's flushes after the orders did not happen: their
    # MsgSeqNums not counted in, their reports (2 acks, a fill, a cancel) never kept
    path = data / "fix" / "FIX.4.4_CCERX_BROKER01.seqnums"
    next_sender, next_target = (int(n) for n in path.read_bytes().split())
    assert (next_sender, next_target) == (b1.next_in, b1.next_out)
    path.write_bytes(b"%020d %020d\n" % (first_report, first_seq))
    b1.next_in = first_report
    with ServeProcess(["--data-dir", str(data)], log_path=tmp_path / "serve2.log") as server:
        b1.port = server.port
        _log_on(b1, "demo01")
        assert b1.resend_from == first_seq
        b1.send("D", (11, "done-fill"), (1, "HOLD01"), (55, "CCER-AFF"), (54, "2"), (60, now()),
                (38, 10), (40, "2"), (44, "62.00"), seq=first_seq, poss_dup=True)
        b1.send("D", (11, "done-cxl"), (1, "HOLD01"), (55, "CCER-AFF"), (54, "2"), (60, now()),
                (38, 7), (40, "2"), (44, "64.00"), seq=first_seq + 1, poss_dup=True)
        b1.send("4", (123, "Y"), (36, b1.next_out), seq=first_seq + 2, poss_dup=True)
        answers = b1.reports(2)
        assert [(s(m, 11), s(m, 150), s(m, 39), s(m, 14), s(m, 151), s(m, 6)) for m in answers] \
            == [("done-fill", "I", "2", "10", "0", "62.00"), ("done-cxl", "I", "4", "0", "0", "0")]
        assert all(s(m, 37) == "BROKER01:" + s(m, 11) for m in answers)
        # and the gateway knows them from now on
        b1.send("H", (11, "done-fill"), (55, "CCER-AFF"), (54, "2"))
        status = b1.expect("8", where=lambda m: s(m, 150) == "I")
        assert (s(status, 39), s(status, 14)) == ("2", "10")
        sync(b1, "after the resend")
        assert not any(s(m, 39) == "8" for m in b1.received if s(m, 35) == "8")
