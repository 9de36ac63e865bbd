"""Shared pieces of the durability integration tests: a private Mosquitto, service checks,
the benchmark flow written as NDJSON and an accounts file, ledger-vs-engine comparison."""
from __future__ import annotations

import asyncio
import getpass
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import orjson
import pytest

from ccerx.benchmarks.durability import accounts_table
from ccerx.engine.core.commands import AmendOrder, CancelOrder, EndOfDay, NewOrder
from ccerx.engine.core.types import PRICE_UNITS_PER_CNY, format_fen, format_units

BROKER = ("127.0.0.1", 1883)


def service_or_skip(host: str, port: int, what: str) -> None:
    """Fail (CCERX_REQUIRE_SERVICES=1) or skip when nothing listens on host:port."""
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as err:
        message = f"{what} not reachable on {host}:{port}: {err}"
        if os.environ.get("CCERX_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)


def unique_prefix() -> str:
    """A topic prefix of our own, so concurrent runs on the shared broker never mix."""
    return f"test-{uuid.uuid4().hex[:10]}/ccer/v1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """Our own broker process (persistence on, unlimited queues) on a free port."""

    def __init__(self, directory: Path):
        if shutil.which("mosquitto") is None:
            message = "mosquitto is not installed"
            if os.environ.get("CCERX_REQUIRE_SERVICES") == "1":
                pytest.fail(message)
            pytest.skip(message)
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = directory / "mosquitto.conf"
        # `user`: started as root, mosquitto would switch to user mosquitto and could then
        # not write its persistence file here, silently losing queued messages on restart
        self.config.write_text(
            f"user {getpass.getuser()}\n"
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {directory}/\nmax_queued_messages 0\n"
            f"max_inflight_messages 100\nlog_dest file {directory}/mosquitto.log\n")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(["mosquitto", "-c", str(self.config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()           # SIGTERM: mosquitto saves its persistence file
            self.process.wait(timeout=10)
            self.process = None

    def kill(self) -> None:
        """kill -9: whatever the broker has not autosaved (every 30 min by default) is lost."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


class ConsumerThread:
    """A SettlementConsumer running in its own thread and event loop."""

    def __init__(self, consumer):
        self.consumer = consumer
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main():
            self.stop_event = asyncio.Event()
            await self.consumer.run(self.stop_event)

        try:
            self.loop.run_until_complete(main())
        except BaseException as err:
            self.error = err

    def start(self) -> "ConsumerThread":
        self.thread.start()
        deadline = time.monotonic() + 10
        while self.consumer.connects == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(10)


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
        time.sleep(0.02)


def forget_session(host: str, port: int, client_id: str) -> None:
    """Drop a persistent MQTT session we created on a shared broker."""
    import aiomqtt

    async def clean():
        async with aiomqtt.Client(host, port, identifier=client_id, clean_session=True):
            pass
    try:
        asyncio.run(clean())
    except Exception:
        pass


# ---------------------------------------------------------------------------- files
def _price(units: int) -> str:
    return format_units(units, PRICE_UNITS_PER_CNY, 2)


def command_line(command) -> bytes:
    kind = type(command)
    if kind is NewOrder:
        obj = {"op": "new", "ts": command.ts, "order_id": command.order_id,
               "account": command.account, "instrument": command.instrument,
               "side": command.side, "type": command.order_type, "tif": command.tif,
               "qty": command.qty}
        if command.price_units is not None:
            obj["price"] = _price(command.price_units)
    elif kind is CancelOrder:
        obj = {"op": "cancel", "ts": command.ts, "order_id": command.order_id}
    elif kind is AmendOrder:
        obj = {"op": "amend", "ts": command.ts, "order_id": command.order_id}
        if command.price_units is not None:
            obj["price"] = _price(command.price_units)
        if command.qty is not None:
            obj["qty"] = command.qty
    elif kind is EndOfDay:
        obj = {"op": "eod", "ts": command.ts}
    else:
        raise TypeError(command)
    return orjson.dumps(obj)


def write_commands(path: Path, commands) -> None:
    path.write_bytes(b"\n".join(command_line(c) for c in commands) + b"\n")


def write_accounts(path: Path, n: int) -> None:
    table = accounts_table(n)
    path.write_bytes(orjson.dumps({"fee_rate": "0.006", "accounts": [
        {"account": a.account, "type": a.participant_type.value, "member": a.member,
         "cash": format_fen(a.cash), "credits": a.credits} for a in table.by_id.values()]}))


def assert_ledger_matches(ledger, accounts, trades: int, deposits: int = 0) -> None:
    """Nothing lost, nothing applied twice, books balanced, balances equal the engine's."""
    ledger.check()
    assert ledger.settlement_count() == trades
    assert ledger.applied_seq() == trades + deposits
    for account in accounts.by_id.values():
        assert ledger.balance(account.account, "CNY") == account.cash, account.account
        for symbol, qty in account.credits.items():
            assert ledger.balance(account.account, symbol) == qty, (account.account, symbol)
