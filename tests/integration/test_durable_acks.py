"""Acknowledgements wait for the journal's fsync; the event loop does not (issue 13 item 4).

A real gateway (asyncio, TCP) over a real DurableExchange whose journal commit is held by a
gate: the journal's write and fsync happen, but only when the test opens the gate, as a disk
that stalls would. While it is shut, the broker whose order waits gets nothing (not its
ExecutionReport, and not a Heartbeat that would overtake it), and another broker's
TestRequest is answered at once: the loop never waits for the disk. Once the gate opens, the
acknowledgement arrives, in sequence, after the fsync returned.
"""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from ccerx.engine.durable.exchange import DurableExchange
from ccerx.engine.formats.config import load_instruments
from ccerx.gateway.config import GatewayConfig
from ccerx.gateway.fix.application import SessionKey
from ccerx.gateway.fix.translate import ExchangeApplication
from ccerx.gateway.server import GatewayServer, SessionSettings
from ccerx.scripts.cmd_serve import gateway_durability

from tests.fixclient import Broker, s

BROKERS = ("BROKER01", "BROKER02")


class GatedJournal:
    """The engine's journal, whose commit() (the fsync) waits for `gate`; counts commits."""

    def __init__(self, inner):
        self.inner = inner
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = threading.Event()    # a commit is held at the gate
        self.fsynced_seq = 0                # the last command seq a finished commit covers

    def commit(self) -> None:
        if not self.gate.is_set():
            self.waiting.set()
            self.gate.wait(30)
        self.inner.commit()
        self.fsynced_seq = self.inner.next_seq - 1

    def __getattr__(self, name):
        return getattr(self.inner, name)


class Gateway:
    """GatewayServer over the durable engine, wired as `ccerx serve` wires it, in a thread."""

    def __init__(self, data_dir):
        self.journal = None

        def hook(journal):
            self.journal = GatedJournal(journal)
            return self.journal
        self.engine = DurableExchange(data_dir, load_instruments(None),
                                      GatewayConfig.demo().build_accounts(), ledger=None,
                                      journal_hook=hook)
        app = ExchangeApplication(self.engine, "CCERX", BROKERS, group_commit=True)
        sessions = [SessionSettings(SessionKey("FIX.4.4", "CCERX", b), app) for b in BROKERS]
        self.server = GatewayServer("127.0.0.1", 0, sessions, store_dir=data_dir / "fix",
                                    **gateway_durability(self.engine, console=False))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    def stop(self) -> None:
        self.journal.gate.set()
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        self.engine.close(settle_timeout=0)


@pytest.fixture
def gateway(tmp_path):
    running = Gateway(tmp_path)
    yield running
    running.stop()


def nothing_arrives(broker: Broker, seconds: float) -> bool:
    try:
        broker.read(seconds)
    except TimeoutError:
        return True
    return False


def test_an_ack_waits_for_its_fsync_while_the_loop_answers_everyone_else(gateway):
    one, two = Broker("BROKER01", gateway.server.port), Broker("BROKER02", gateway.server.port)
    one.logon("pw", reset=True)
    two.logon("pw", reset=True)
    one.expect("h")                                  # the trading session status at logon
    two.expect("h")

    gateway.journal.gate.clear()                     # the disk stalls
    one.new_order("A1", "EMIT01", 1, 10, price="62.00")
    assert gateway.journal.waiting.wait(5)           # the order's commit reached the fsync
    one.send("1", (112, "behind-the-ack"))           # its answer must not overtake the ack
    started = time.monotonic()
    two.send("1", (112, "other-session"))
    heartbeat = two.expect("0", timeout=2)           # answered while the fsync is held
    assert s(heartbeat, 112) == "other-session"
    assert time.monotonic() - started < 2
    assert nothing_arrives(one, 0.5)                 # no ack, no heartbeat: the fsync holds
    assert gateway.journal.fsynced_seq == 0

    gateway.journal.gate.set()                       # the disk comes back
    ack = one.expect("8")
    assert (s(ack, 11), s(ack, 150)) == ("A1", "0")
    assert gateway.journal.fsynced_seq >= 1          # the fsync covering it had returned
    heartbeat = one.expect("0")
    assert s(heartbeat, 112) == "behind-the-ack"
    assert int(s(heartbeat, 34)) == int(s(ack, 34)) + 1 and not one.gaps
    one.logout()
    two.logout()


def test_many_orders_over_a_slow_disk_are_all_acked_in_order_and_durable(gateway, tmp_path):
    """Orders keep arriving while a group is being fsynced: they gather into the next group,
    every ack arrives in sequence, and each one's command is on disk when it does."""
    one = Broker("BROKER01", gateway.server.port)
    one.logon("pw", reset=True)
    one.expect("h")
    gateway.journal.gate.clear()
    for i in range(50):
        one.new_order(f"B{i}", "EMIT01", 1, 1 + i, price="62.00")
    assert gateway.journal.waiting.wait(5)
    assert nothing_arrives(one, 0.3)
    gateway.journal.gate.set()
    acks = one.reports(50)
    assert [s(a, 11) for a in acks] == [f"B{i}" for i in range(50)]
    assert not one.gaps
    assert gateway.journal.fsynced_seq >= 50
    assert gateway.engine.durable_ticket >= 2        # at least two groups (one was held)
    one.logout()


def test_kill_9_loses_no_acknowledged_order(tmp_path, start_serve):
    """`ccerx serve` as shipped (the journal's writer thread), killed with SIGKILL while
    orders stream in: every order the broker got an ExecutionReport for is in the journal."""
    from ccerx.engine.core.commands import NewOrder
    from ccerx.engine.durable import journal as jr

    data = tmp_path / "data"
    server = start_serve("--data-dir", str(data))
    broker = Broker("BROKER01", server.port)
    broker.logon("demo01", reset=True)
    for i in range(400):
        side, account = (1, "EMIT01") if i % 2 else (2, "HOLD01")
        broker.new_order(f"K{i}", account, side, 1 + i % 7, price="62.00")
        if i == 300:
            broker.expect("8", where=lambda m: s(m, 11) == "K150")   # acks are flowing
    server.kill()                                      # mid-stream: no shutdown, no flush
    acked = set()
    while True:
        try:
            message = broker.read(2)
        except (TimeoutError, OSError):
            break
        if message is None:
            break
        if s(message, 35) == "8":
            acked.add(s(message, 11))
    acked |= {s(m, 11) for m in broker.received if s(m, 35) == "8"}
    journaled = {c.order_id for c in jr.iter_commands(jr.scan(data).records)
                 if type(c) is NewOrder}
    assert len(acked) > 150
    assert {f"BROKER01:{cl}" for cl in acked} <= journaled
