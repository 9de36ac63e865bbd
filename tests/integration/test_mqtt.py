"""Settlement over MQTT against the real Mosquitto on 127.0.0.1:1883.

A plain aiomqtt subscriber (not our consumer) checks what actually arrives on the wire; then
our consumer applies the stream to a SQLite ledger. Every test uses its own topic prefix and
client ids, so runs sharing the broker never see each other's messages."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import uuid

import aiomqtt
import orjson
import pytest
from tests.integration.durable_helpers import (BROKER, ConsumerThread, assert_ledger_matches, forget_session,
                             service_or_skip, unique_prefix, wait_until, write_accounts)

from ccerx.benchmarks.durability import accounts_table, flow
from ccerx.engine.core.commands import Deposit
from ccerx.engine.formats.config import load_accounts
from ccerx.engine.durable.exchange import DurableExchange
from ccerx.engine.core.events import TradeExecuted
from ccerx.engine.ledger.mqtt import MqttPublisher
from ccerx.engine.ledger.mqtt_consumer import SettlementConsumer
from ccerx.engine.ledger.sqlite import SqliteLedger
from ccerx.engine.durable.settlement import SettlementInstruction


@pytest.fixture(autouse=True)
def broker():
    service_or_skip(*BROKER, "Mosquitto")


class Subscriber:
    """An independent subscriber collecting everything under a prefix (own thread + loop)."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.received: list[tuple[str, bytes]] = []
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.stop_event = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self.run(),),
                                       daemon=True)

    async def run(self):
        self.stop_event = asyncio.Event()
        async with aiomqtt.Client(*BROKER, identifier=f"sub-{uuid.uuid4().hex[:8]}") as client:
            await client.subscribe(f"{self.prefix}/#", qos=1)
            self.ready.set()

            async def read():
                async for message in client.messages:
                    self.received.append((str(message.topic), bytes(message.payload)))

            reader = asyncio.create_task(read())
            await self.stop_event.wait()
            reader.cancel()

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(10)


def run_flow(ex, n=1500, seed=41, accounts=20):
    trades = []
    commands = list(flow(n, seed=seed, n_accounts=accounts))
    for i in range(0, n, 100):
        for events in ex.apply_many(commands[i:i + 100]):
            trades += [e for e in events if type(e) is TradeExecuted]
    return trades


def test_instructions_and_fill_notices_arrive_as_published(tmp_path):
    prefix = unique_prefix()
    consumer_id = f"cons-{uuid.uuid4().hex[:8]}"
    ledger = SqliteLedger(tmp_path / "consumer.sqlite")
    with Subscriber(prefix) as sub:
        publisher = MqttPublisher(*BROKER, client_id=f"pub-{uuid.uuid4().hex[:8]}",
                                  prefix=prefix, window=16)
        ex = DurableExchange(tmp_path / "engine", accounts=accounts_table(20), ledger=None,
                             adapters={"mqtt": publisher})
        opening = orjson.loads((tmp_path / "engine" / "opening.json").read_bytes())["accounts"]
        ledger.open_accounts([tuple(r) for r in opening])
        # the relay counts an instruction settled only when a consumer confirms it
        consumer = ConsumerThread(SettlementConsumer(ledger, *BROKER, client_id=consumer_id,
                                                     prefix=prefix, log=lambda t: None)).start()
        try:
            # about 300 trades, 900 messages: under the shared broker's default queue limit of
            # 1000 messages per client, which a busy machine's subscriber could otherwise hit
            trades = run_flow(ex, n=600)
            assert ex.wait_settled(60)
            wait_until(lambda: len([t for t, _ in sub.received if "/confirm" not in t
                                    and "/request" not in t]) >= 3 * len(trades), 30,
                       f"all messages ({len(sub.received)} of {3 * len(trades)})")
            # the consumer's confirmation of the last one (retained) is on the wire too
            final = orjson.dumps({"applied": {"CCERX": len(trades)}, "consumer": consumer_id})
            wait_until(lambda: (f"{prefix}/confirm", final) in sub.received, 30,
                       "the consumer's confirmation of the last instruction")
            members = {a.account: a.member for a in ex.accounts.by_id.values()}
        finally:
            consumer.stop()
            ex.close()
            ledger.close()
            forget_session(*BROKER, consumer_id)
    assert consumer.error is None
    assert publisher.resends == 0
    settle = [(t, p) for t, p in sub.received if "/settle/" in t]
    fills = [(t, p) for t, p in sub.received if "/fills/" in t]
    assert len(settle) == len(trades) > 100 and len(fills) == 2 * len(trades)
    by_trade = {t.trade_id: t for t in trades}
    per_stream: dict[str, list[int]] = {}
    for topic, payload in settle:
        assert b" " not in payload                          # compact JSON
        body = orjson.loads(payload)
        inst = SettlementInstruction.from_json(body)
        trade = by_trade[inst.trade_id]
        assert topic == f"{prefix}/settle/{trade.instrument}"
        assert (inst.qty, inst.buyer, inst.seller, inst.buy_fee, inst.sell_fee) == (
            trade.qty, trade.buy_account, trade.sell_account, trade.buy_fee, trade.sell_fee)
        assert inst.gross_fen == trade.price * trade.qty        # 0.01 CNY ticks: 1 tick = 1 fen
        assert isinstance(body["price"], str) and isinstance(body["gross"], str)
        per_stream.setdefault(body["stream"], []).append(body["stream_seq"])
    for seqs in per_stream.values():                      # QoS 1, one publisher: in order
        assert seqs == list(range(1, len(seqs) + 1))
    notices = [orjson.loads(p) | {"topic": t} for t, p in fills]
    for notice in notices[:50]:
        trade = by_trade[notice["trade_id"]]
        member = members[notice["account"]]
        assert notice["topic"] == f"{prefix}/fills/{member}"
        assert notice["account"] == (trade.buy_account if notice["side"] == "buy"
                                     else trade.sell_account)


def test_engine_to_mqtt_to_consumer_to_ledger(tmp_path):
    prefix = unique_prefix()
    consumer_id = f"cons-{uuid.uuid4().hex[:8]}"
    ledger = SqliteLedger(tmp_path / "consumer.sqlite")
    publisher = MqttPublisher(*BROKER, client_id=f"pub-{uuid.uuid4().hex[:8]}", prefix=prefix)
    ex = DurableExchange(tmp_path / "engine", accounts=accounts_table(20), ledger=None,
                         adapters={"mqtt": publisher})
    opening = orjson.loads((tmp_path / "engine" / "opening.json").read_bytes())["accounts"]
    ledger.open_accounts([tuple(r) for r in opening])
    consumer = ConsumerThread(SettlementConsumer(ledger, *BROKER, client_id=consumer_id,
                                                 prefix=prefix, log=lambda t: None)).start()
    try:
        trades = run_flow(ex, n=700, seed=43)    # < 1000 instructions: the default broker
        # queue limit per client (mosquitto max_queued_messages) can never be reached
        ex.apply_many([Deposit("ISS-9", "A0003", "CCER-MGV", 777),      # issuance batch
                       Deposit("FUND-9", "A0004", "CNY", 12_345_678)])  # cash paid in
        trades += run_flow(ex, n=700, seed=44)
        assert ex.wait_settled(60)
        wait_until(lambda: ledger.applied_seq() >= len(trades) + 2, 60, "the consumer")
        assert_ledger_matches(ledger, ex.accounts, len(trades), deposits=2)
        assert consumer.consumer.applied == len(trades) + 2
    finally:
        consumer.stop()
        ex.close()
        ledger.close()
        forget_session(*BROKER, consumer_id)
    assert consumer.error is None


def test_consumer_command_line(tmp_path):
    """`ccerx ledger consume` against the broker, fed by the engine's publisher."""
    prefix = unique_prefix()
    client_id = f"cli-{uuid.uuid4().hex[:8]}"
    write_accounts(tmp_path / "accounts.json", 20)
    publisher = MqttPublisher(*BROKER, client_id=f"pub-{client_id}", prefix=prefix)
    ex = DurableExchange(tmp_path / "engine", accounts=load_accounts(tmp_path / "accounts.json"),
                         ledger=None, adapters={"mqtt": publisher})
    db = tmp_path / "cli.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "ccerx.scripts.ccerx", "ledger", "consume",
                             "--broker", f"{BROKER[0]}:{BROKER[1]}", "--db", str(db),
                             "--accounts", str(tmp_path / "accounts.json"), "--prefix", prefix,
                             "--client-id", client_id, "--exit-when-idle", "3"],
                            stderr=subprocess.PIPE, text=True)
    ledger = None
    try:
        wait_until(lambda: db.exists(), 20, "the consumer to start")
        time.sleep(1.0)                          # let it subscribe
        trades = run_flow(ex, n=800, seed=47)
        assert ex.wait_settled(60)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert f"applied {len(trades)}," in err
        ledger = SqliteLedger(db)
        assert_ledger_matches(ledger, ex.accounts, len(trades))
    finally:
        if proc.poll() is None:
            proc.kill()
        ex.close()
        if ledger is not None:
            ledger.close()
        forget_session(*BROKER, client_id)


def test_a_cbeex_day_clears_over_mqtt_with_the_batch_on_its_own_topic(tmp_path):
    """Day-end clearing through the publisher and the consumer: the trades arrive pending, the
    batch on settle/CLEARING delivers them in the consumer's ledger."""
    from ccerx.engine.core.commands import EndOfDay
    from ccerx.engine.core.rules import CBEEX_2023
    from tests.unit.test_day_end_clearing import TS, day, table
    prefix = unique_prefix()
    consumer_id = f"cons-{uuid.uuid4().hex[:8]}"
    ledger = SqliteLedger(tmp_path / "consumer.sqlite")
    with Subscriber(prefix) as sub:
        publisher = MqttPublisher(*BROKER, client_id=f"pub-{uuid.uuid4().hex[:8]}",
                                  prefix=prefix)
        ex = DurableExchange(tmp_path / "engine", accounts=table(), ledger=None,
                             adapters={"mqtt": publisher}, rules=CBEEX_2023)
        opening = orjson.loads((tmp_path / "engine" / "opening.json").read_bytes())["accounts"]
        ledger.open_accounts([tuple(r) for r in opening])
        consumer = ConsumerThread(SettlementConsumer(ledger, *BROKER, client_id=consumer_id,
                                                     prefix=prefix, log=lambda t: None)).start()
        try:
            for command in day():
                ex.apply(command)
            assert ex.wait_settled(60)
            wait_until(lambda: ledger.applied_seq() >= 3, 30, "the pending trades")
            assert ledger.balance("EM1", "CCER-AFF") == 0        # pending: nothing moved
            ex.apply(EndOfDay(TS + 10))
            assert ex.wait_settled(60)
            wait_until(lambda: ledger.applied_seq() >= 4, 30, "the clearing batch")
            assert_ledger_matches(ledger, ex.accounts, 3, deposits=1)   # + the batch
            wait_until(lambda: any(t == f"{prefix}/settle/CLEARING" for t, _ in sub.received),
                       30, "the batch on the wire")
        finally:
            consumer.stop()
            ex.close()
            ledger.close()
            forget_session(*BROKER, consumer_id)
    assert consumer.error is None
    [(_, payload)] = [(t, p) for t, p in sub.received if t == f"{prefix}/settle/CLEARING"]
    batch = orjson.loads(payload)
    assert batch["kind"] == "clearing" and batch["batch_id"] == "CCERX-C20261203-1"
    assert batch["trades"] == 3 and batch["totals"]["qty"] == {"CCER-AFF": 130, "CCER-SOL": 50}
