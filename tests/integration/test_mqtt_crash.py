"""Settlement over MQTT survives kill -9 of the broker (issue 12 item 3).

A private Mosquitto with the README's settings (persistence on, default autosave, unlimited
queues) is killed with SIGKILL at seeded random points while instructions flow, once or more
with the consumer online and once with it offline at the time, and restarted on the same port.
A PUBACK only means the broker received a message: what it had not saved dies with it. The
publisher must therefore hold every instruction until the consumer confirms it is applied to
its ledger, and re-send after reconnecting; at the end every instruction is applied exactly
once and the consumer's ledger equals the engine's accounts."""
from __future__ import annotations

import random
import time

import orjson
import pytest
from tests.integration.durable_helpers import (ConsumerThread, Mosquitto, assert_ledger_matches,
                                               unique_prefix, wait_until)

from ccerx.benchmarks.durability import accounts_table, flow
from ccerx.engine.durable.exchange import DurableExchange
from ccerx.engine.ledger.mqtt import MqttPublisher
from ccerx.engine.ledger.mqtt_consumer import SettlementConsumer
from ccerx.engine.ledger.sqlite import SqliteLedger

CHUNK = 50


def crash_run(tmp_path, seed: int, rounds: list[str], commands_per_round: int,
              settle_timeout: float = 40.0) -> None:
    """Feed `rounds` x `commands_per_round` commands; in each round kill -9 the broker at a
    random point, with the consumer "online" or "offline" at the time, then restart it."""
    rnd = random.Random(seed)
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    prefix = unique_prefix()
    ledger = SqliteLedger(tmp_path / "consumer.sqlite")
    publisher = MqttPublisher("127.0.0.1", broker.port, client_id=f"crash-pub-{seed}",
                              prefix=prefix, publish_timeout=2.0)
    ex = DurableExchange(tmp_path / "engine", accounts=accounts_table(20), ledger=None,
                         adapters={"mqtt": publisher})
    opening = orjson.loads((tmp_path / "engine" / "opening.json").read_bytes())["accounts"]
    ledger.open_accounts([tuple(r) for r in opening])
    log: list[str] = []

    def consumer_thread() -> ConsumerThread:
        return ConsumerThread(SettlementConsumer(
            ledger, "127.0.0.1", broker.port, client_id=f"crash-consumer-{seed}", prefix=prefix,
            max_backoff=0.5, log=log.append)).start()

    consumer = consumer_thread()
    commands = list(flow(len(rounds) * commands_per_round, seed=seed, n_accounts=20))
    try:
        for n, mode in enumerate(rounds):
            part = commands[n * commands_per_round:(n + 1) * commands_per_round]
            chunks = [part[i:i + CHUNK] for i in range(0, len(part), CHUNK)]
            if mode == "offline":
                consumer.stop()
                assert consumer.error is None
                for chunk in chunks:
                    ex.apply_many(chunk)
                time.sleep(rnd.uniform(0.3, 1.5))   # the publisher hands them to the broker
                broker.kill()
                time.sleep(rnd.uniform(0.1, 0.5))
                broker.start()
                consumer = consumer_thread()
                continue
            kill_at = rnd.randrange(len(chunks))
            for i, chunk in enumerate(chunks):
                ex.apply_many(chunk)
                time.sleep(0.02)                     # instructions flow while we feed
                if i == kill_at:
                    time.sleep(rnd.uniform(0.0, 0.3))
                    broker.kill()
                    time.sleep(rnd.uniform(0.1, 0.5))
                    broker.start()
        instructions = ex.outbox.last_seq
        assert instructions > 300 * len(rounds)
        c = consumer.consumer

        def state() -> str:
            relay = ex.relays["mqtt"]
            return (f"relay at {relay.cursor.value} of {instructions} (error "
                    f"{relay.last_error!r}); publisher confirmed {publisher.confirmed}, "
                    f"connects {publisher.connects}, resends {publisher.resends}, requests "
                    f"{publisher.requests}; ledger at {ledger.applied_seq()}, consumer "
                    f"connects {c.connects}, requests {c.requests}, waiting "
                    f"{ {e: sorted(w)[:3] for e, w in c._waiting.items()} }; log {log[-3:]}")
        assert ex.wait_settled(settle_timeout), state()
        wait_until(lambda: ledger.applied_seq() >= instructions, settle_timeout,
                   lambda: f"the consumer's ledger: {state()}")
        assert_ledger_matches(ledger, ex.accounts, instructions)
        assert publisher.connects >= 2               # it did reconnect (not after every kill:
        # one may fall while its relay is backing off from the previous one)
    finally:
        consumer.stop()
        ex.close(settle_timeout=0)
        ledger.close()
        broker.stop()
    assert consumer.error is None


def test_broker_killed_with_consumer_online_and_offline(tmp_path):
    crash_run(tmp_path, seed=12_003, rounds=["online", "offline", "online"],
              commands_per_round=1200)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_broker_killed_many_times(tmp_path, seed):
    rounds = random.Random(seed).choices(["online", "offline"], k=6)
    crash_run(tmp_path, seed=seed, rounds=rounds + ["online", "offline"],
              commands_per_round=3000, settle_timeout=120.0)


def test_engine_restarts_while_instructions_are_unconfirmed(tmp_path):
    """The consumer is away, the broker is killed and the engine closed: the unconfirmed
    instructions wait after the relay's cursor and go out again from the reopened engine."""
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    prefix = unique_prefix()
    ledger = SqliteLedger(tmp_path / "consumer.sqlite")

    def engine(**kwargs) -> DurableExchange:
        publisher = MqttPublisher("127.0.0.1", broker.port, client_id="restart-pub",
                                  prefix=prefix, publish_timeout=2.0)
        return DurableExchange(tmp_path / "engine", ledger=None, adapters={"mqtt": publisher},
                               **kwargs)

    def consumer_thread() -> ConsumerThread:
        return ConsumerThread(SettlementConsumer(
            ledger, "127.0.0.1", broker.port, client_id="restart-consumer", prefix=prefix,
            max_backoff=0.5, log=lambda text: None)).start()

    ex = engine(accounts=accounts_table(20))
    opening = orjson.loads((tmp_path / "engine" / "opening.json").read_bytes())["accounts"]
    ledger.open_accounts([tuple(r) for r in opening])
    commands = list(flow(3000, seed=12_010, n_accounts=20))
    consumer = consumer_thread()
    try:
        ex.apply_many(commands[:1000])
        assert ex.wait_settled(30)
        confirmed = ex.outbox.last_seq
        consumer.stop()
        ex.apply_many(commands[1000:2000])
        assert not ex.wait_settled(1.5)            # nobody confirms: still pending
        broker.kill()
        ex.close(settle_timeout=0)
        broker.start()
        ex = engine()
        assert ex.recovery.pending["mqtt"] == ex.outbox.last_seq - confirmed > 0
        consumer = consumer_thread()
        ex.apply_many(commands[2000:])
        instructions = ex.outbox.last_seq
        assert ex.wait_settled(40)
        wait_until(lambda: ledger.applied_seq() >= instructions, 20, "the consumer")
        assert_ledger_matches(ledger, ex.accounts, instructions)
    finally:
        consumer.stop()
        ex.close(settle_timeout=0)
        ledger.close()
        broker.stop()
    assert consumer.error is None


def test_malformed_confirmations_are_ignored_and_requests_answered(tmp_path):
    """Garbage on the confirm and request topics changes nothing; a request for an earlier
    point is answered by sending from there again, and the copies change nothing."""
    import asyncio

    import aiomqtt

    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    prefix = unique_prefix()
    ledger = SqliteLedger(tmp_path / "consumer.sqlite")
    publisher = MqttPublisher("127.0.0.1", broker.port, client_id="odd-pub", prefix=prefix)
    ex = DurableExchange(tmp_path / "engine", accounts=accounts_table(20), ledger=None,
                         adapters={"mqtt": publisher})
    opening = orjson.loads((tmp_path / "engine" / "opening.json").read_bytes())["accounts"]
    ledger.open_accounts([tuple(r) for r in opening])

    def send(*messages) -> None:
        async def run():
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="odd-client") as c:
                for topic, payload in messages:
                    await c.publish(f"{prefix}/{topic}", payload, qos=1)
        asyncio.run(run())

    consumer = None
    try:
        ex.apply_many(list(flow(600, seed=12_020, n_accounts=20)))
        wait_until(lambda: publisher.listening, 10, "a batch waiting for its confirmation")
        send(("confirm", b"not json"), ("confirm", b'{"applied": {"CCERX": -5}}'),
             ("confirm", b'{"applied": {"CCERX": "99999"}}'), ("request", b"[1, 2]"),
             ("confirm", "确认".encode()))
        wait_until(lambda: publisher.malformed >= 5, 10, "the publisher to read them")
        assert ex.relays["mqtt"].cursor.value == 0 and publisher.confirmed == {}
        assert publisher.resends == 0
        send(("request", orjson.dumps({"after": {"CCERX": 0}})))     # send it all again
        wait_until(lambda: publisher.resends >= 1, 10, "the publisher to send it again")
        assert ex.relays["mqtt"].cursor.value == 0
        consumer = ConsumerThread(SettlementConsumer(
            ledger, "127.0.0.1", broker.port, client_id="odd-consumer", prefix=prefix,
            log=lambda text: None)).start()
        ex.apply_many(list(flow(1200, seed=12_021, n_accounts=20))[600:])
        assert ex.wait_settled(30)
        instructions = ex.outbox.last_seq
        wait_until(lambda: ledger.applied_seq() >= instructions, 20, "the consumer")
        assert_ledger_matches(ledger, ex.accounts, instructions)
    finally:
        if consumer is not None:
            consumer.stop()
        ex.close(settle_timeout=0)
        ledger.close()
        broker.stop()
    assert consumer.error is None
