"""Fault injection: kill -9, broker outage, double delivery, torn journal write.

Each test ends with the same three checks: nothing lost (every trade settled), nothing applied
twice (one settlement per trade id), ledger balanced (and equal to the engine's accounts)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
from tests.integration.durable_helpers import (ConsumerThread, Mosquitto, assert_ledger_matches, unique_prefix,
                             wait_until, write_accounts, write_commands)

from ccerx.benchmarks.durability import accounts_table, flow
from ccerx.engine.durable import journal as jr
from ccerx.engine.formats.config import load_accounts
from ccerx.engine.durable.exchange import DurableExchange
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.ledger.mqtt import MqttPublisher
from ccerx.engine.ledger.mqtt_consumer import SettlementConsumer
from ccerx.engine.ledger.sqlite import SqliteLedger
from ccerx.engine.formats.ndjson import parse_command

REPO = Path(__file__).resolve().parents[2]


def reference(commands_file: Path, accounts_file: Path, upto: int | None = None) -> Exchange:
    """An uninterrupted, in-memory run over the first `upto` commands of the file."""
    ex = Exchange(accounts=load_accounts(accounts_file))
    with commands_file.open("rb") as f:
        for n, line in enumerate(f, 1):
            if upto is not None and n > upto:
                break
            ex.apply(parse_command(line))
    return ex


def journaled_replay(data_dir: Path, commands: Path, accounts: Path, batch: int = 20):
    return subprocess.Popen([sys.executable, "-m", "ccerx.scripts.ccerx", "recover", "--data-dir",
                             str(data_dir), "--accounts", str(accounts), "--feed", str(commands),
                             "--batch", str(batch), "--snapshot-every", "1500", "--json"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_kill_9_mid_replay_and_restart(tmp_path):
    commands, accounts, data = tmp_path / "flow.ndjson", tmp_path / "accounts.json", tmp_path / "d"
    write_commands(commands, flow(6000, seed=51, n_accounts=30, day_length=2500))
    write_accounts(accounts, 30)
    kills = []
    for kill_at in (1200, 3500):
        proc = journaled_replay(data, commands, accounts)
        try:
            wait_until(lambda: data.exists() and jr.scan(data).last_seq >= kill_at, 60,
                       f"{kill_at} journaled commands")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        # recovered state == an uninterrupted run over the same durable prefix
        recovered = DurableExchange(data, ledger=None, log=lambda text: None)
        durable = recovered.recovery.last_seq
        assert kill_at <= durable < 6000
        assert recovered.state_hash() == reference(commands, accounts, durable).state_hash()
        recovered.check()
        recovered.close()
        kills.append(durable)
    # restart the same command: it resumes after the journal's end and finishes
    proc = journaled_replay(data, commands, accounts)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    summary = json.loads(out)
    full = reference(commands, accounts)
    assert summary["fed"] == 6000 - kills[-1] and summary["last_seq"] == 6000
    assert summary["state_hash"] == full.state_hash()
    ledger = SqliteLedger(data / "ledger.sqlite")
    assert_ledger_matches(ledger, full.accounts, full.next_trade_id - 1)
    ledger.close()


def test_broker_stops_mid_stream_and_comes_back(tmp_path):
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    prefix = unique_prefix()
    ledger = SqliteLedger(tmp_path / "consumer.sqlite")
    publisher = MqttPublisher("127.0.0.1", broker.port, client_id="fault-pub", prefix=prefix,
                              publish_timeout=3.0)
    ex = DurableExchange(tmp_path / "engine", accounts=accounts_table(20), ledger=None,
                         adapters={"mqtt": publisher})
    opening = orjson.loads((tmp_path / "engine" / "opening.json").read_bytes())["accounts"]
    ledger.open_accounts([tuple(r) for r in opening])
    consumer = ConsumerThread(SettlementConsumer(ledger, "127.0.0.1", broker.port,
                                                 client_id="fault-consumer", prefix=prefix,
                                                 max_backoff=1.0, log=lambda t: None)).start()
    commands = list(flow(4000, seed=61, n_accounts=20))
    try:
        for i in range(0, 1500, 100):
            ex.apply_many(commands[i:i + 100])
        broker.stop()
        # matching goes on while the broker is down; instructions wait in the outbox
        started = time.monotonic()
        for i in range(1500, 3000, 100):
            ex.apply_many(commands[i:i + 100])
        blocked_for = time.monotonic() - started
        relay = ex.relays["mqtt"]
        wait_until(lambda: relay.failures > 0, 20, "the relay to notice the outage")
        assert relay.cursor.value < ex.outbox.last_seq
        time.sleep(1.0)
        broker.start()
        for i in range(3000, 4000, 100):
            ex.apply_many(commands[i:i + 100])
        trades = ex.outbox.last_seq
        assert ex.wait_settled(60), relay.last_error
        c = consumer.consumer
        wait_until(lambda: ledger.applied_seq() >= trades, 60,
                   lambda: f"the consumer ({ledger.applied_seq()} of {trades}; applied "
                           f"{c.applied}, duplicates {c.duplicates}, connects {c.connects}, "
                           f"waiting {({e: sorted(w)[:3] for e, w in c._waiting.items()})})")
        assert_ledger_matches(ledger, ex.accounts, trades)
        assert publisher.connects >= 2 and consumer.consumer.connects >= 2
        assert blocked_for < 30          # sanity only: it did not wait for the broker
    finally:
        consumer.stop()
        ex.close(settle_timeout=0)
        ledger.close()
        broker.stop()


class Twice:
    """Delivers every batch to the real adapter two times (a relay that always retries)."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name
        self.keeps_accounts = inner.keeps_accounts
        if inner.keeps_accounts:
            self.open_accounts = inner.open_accounts
            self.close_statements = inner.close_statements

    def deliver(self, batch):
        self.inner.deliver(batch)
        self.inner.deliver(batch)

    def close(self):
        self.inner.close()


def test_every_instruction_delivered_twice_embedded_and_over_mqtt(tmp_path):
    # our own broker: doubling the stream can outrun a consumer on a broker with the default
    # queue limit (1000 messages per client), which then drops messages (see the README)
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    server = ("127.0.0.1", broker.port)
    prefix = unique_prefix()
    consumer_id = f"twice-{uuid.uuid4().hex[:8]}"
    mqtt_ledger = SqliteLedger(tmp_path / "consumer.sqlite")
    embedded = SqliteLedger(tmp_path / "embedded.sqlite")
    publisher = MqttPublisher(*server, client_id=f"{consumer_id}-pub", prefix=prefix)
    ex = DurableExchange(tmp_path / "engine", accounts=accounts_table(20), ledger=Twice(embedded),
                         adapters={"mqtt": Twice(publisher)})
    opening = orjson.loads((tmp_path / "engine" / "opening.json").read_bytes())["accounts"]
    mqtt_ledger.open_accounts([tuple(r) for r in opening])
    consumer = ConsumerThread(SettlementConsumer(mqtt_ledger, *server, client_id=consumer_id,
                                                 prefix=prefix, log=lambda t: None)).start()
    try:
        commands = list(flow(2000, seed=71, n_accounts=20))
        for i in range(0, 2000, 200):
            ex.apply_many(commands[i:i + 200])
        trades = ex.outbox.last_seq
        assert ex.wait_settled(60)
        wait_until(lambda: mqtt_ledger.applied_seq() >= trades, 60, "the consumer")
        wait_until(lambda: consumer.consumer.duplicates >= trades, 30, "the duplicates")
        assert_ledger_matches(mqtt_ledger, ex.accounts, trades)
        assert_ledger_matches(embedded, ex.accounts, trades)
        accounts_before = {a.account: a.cash for a in ex.accounts.by_id.values()}
    finally:
        consumer.stop()
        ex.close()
        broker.stop()
    # and a third time from the start: rewind the embedded relay's cursor and reopen
    (tmp_path / "engine" / "cursor-ledger.json").write_bytes(b'{"confirmed": 0}')
    again = SqliteLedger(tmp_path / "embedded.sqlite")
    ex = DurableExchange(tmp_path / "engine", ledger=again)
    assert ex.recovery.pending["ledger"] == trades
    assert ex.wait_settled(60)
    assert_ledger_matches(again, ex.accounts, trades)
    assert {a.account: a.cash for a in ex.accounts.by_id.values()} == accounts_before
    ex.close()
    mqtt_ledger.close()


def test_torn_journal_write_recovers_to_the_last_whole_record(tmp_path):
    commands, accounts, data = tmp_path / "flow.ndjson", tmp_path / "accounts.json", tmp_path / "d"
    write_commands(commands, flow(3000, seed=81, n_accounts=20))
    write_accounts(accounts, 20)
    lines = commands.read_bytes().splitlines()
    parsed = [parse_command(line) for line in lines]
    ex = DurableExchange(data, accounts=load_accounts(accounts))
    for i in range(0, 2000, 100):
        ex.apply_many(parsed[i:i + 100])
    assert ex.wait_settled(30)
    ex.close()
    # 1. the process died in the middle of writing a record: half a frame at the end
    (segment,) = jr.segment_paths(data)
    whole = segment.read_bytes()
    torn = jr.frame(2001, [jr.encode_command(c) for c in parsed[2000:2100]], 999_999, [])
    segment.write_bytes(whole + torn[:len(torn) // 2])
    proc = subprocess.run([sys.executable, "-m", "ccerx.scripts.ccerx", "recover", "--data-dir",
                           str(data), "--json"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "torn tail" in proc.stderr and "stopped at the last whole record" in proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["last_seq"] == 2000
    assert summary["state_hash"] == reference(commands, accounts, 2000).state_hash()
    assert segment.read_bytes() == whole                  # cut back to the last whole record
    assert list(data.glob("journal-*.torn-*"))            # the torn bytes kept for inspection
    # 2. the last whole record itself is damaged (a bad sector): recovery stops before it
    data2 = tmp_path / "d2"
    ex = DurableExchange(data2, accounts=load_accounts(accounts), ledger=None)
    for i in range(0, 2000, 100):
        ex.apply_many(parsed[i:i + 100])
    ex.close()
    (segment2,) = jr.segment_paths(data2)
    raw = bytearray(segment2.read_bytes())
    raw[-7] ^= 0x40
    segment2.write_bytes(bytes(raw))
    said = []
    ex = DurableExchange(data2, ledger=None, log=said.append)
    assert ex.recovery.last_seq == 1900 and "checksum mismatch" in str(ex.recovery.torn)
    assert said and "torn tail" in said[0]
    assert ex.state_hash() == reference(commands, accounts, 1900).state_hash()
    # continuing from there reaches the same final state as an uninterrupted run
    ex.apply_many(parsed[1900:])
    assert ex.state_hash() == reference(commands, accounts).state_hash()
    ex.close()
    # nothing lost or doubled in the ledger of case 1 either, after finishing the flow
    ex = DurableExchange(data)
    ex.apply_many(parsed[2000:])
    assert ex.wait_settled(30)
    full = reference(commands, accounts)
    assert ex.state_hash() == full.state_hash()
    assert_ledger_matches(ex.ledger, full.accounts, full.next_trade_id - 1)
    ex.close()
