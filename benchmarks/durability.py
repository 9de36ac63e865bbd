"""Durability and settlement benchmarks: journal throughput, recovery time, MQTT delivery.

    python -m ccerx.benchmarks.durability journal  [--commands 200000]
    python -m ccerx.benchmarks.durability recovery [--commands 1000000]
    python -m ccerx.benchmarks.durability mqtt     [--commands 100000] [--broker HOST:PORT]
    python -m ccerx.benchmarks.durability ledger   [--commands 100000]

Every benchmark checks its end state (state hash of the recovered engine against the writer's;
ledger balances against the engine's accounts), so a fast wrong answer fails loudly.

The flow (`flow()`) is a seeded, pre-funded, multi-day order flow over the four CCER credit
types: limit orders within a few ticks of the reference price (so the books stay deep and
trade), cancels, amends, some market IOC orders, and an end of day every `day_length`
commands (day orders expire, prices roll to the VWAP close).
"""
from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from ccerx.engine.core.commands import AmendOrder, CancelOrder, EndOfDay, NewOrder
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.core.risk import Account, Accounts
from ccerx.engine.core.types import DEFAULT_INSTRUMENTS, ParticipantType

DAY_NS = 86_400 * 10 ** 9
OPEN_TS = 1_706_059_800_000_000_000     # 2024-01-24 09:30 Beijing


def accounts_table(n: int = 200, cash_fen: int = 10 ** 12, credits: int = 10 ** 7) -> Accounts:
    """n pre-funded accounts A0000.. registered to 10 broker members M00..M09."""
    symbols = [s.symbol for s in DEFAULT_INSTRUMENTS]
    types = list(ParticipantType)
    return Accounts([Account(f"A{i:04d}", types[i % len(types)], f"M{i % 10:02d}", cash_fen,
                             credits={s: credits for s in symbols}) for i in range(n)])


def flow(n: int, seed: int = 1, n_accounts: int = 200, day_length: int = 250_000):
    """n engine commands (deterministic for a seed)."""
    rnd = random.Random(seed)
    specs = list(DEFAULT_INSTRUMENTS)
    refs = {s.symbol: s.ref_ticks for s in specs}
    live: list[str] = []
    ts = OPEN_TS
    day_start = OPEN_TS
    for i in range(n):
        ts += 1_000_000   # 1 ms apart
        if i and i % day_length == 0:
            yield EndOfDay(ts)
            live.clear()
            day_start += DAY_NS
            ts = day_start
            continue
        r = rnd.random()
        if r < 0.22 and live:
            j = rnd.randrange(len(live))
            live[j], live[-1] = live[-1], live[j]
            yield CancelOrder(live.pop(), ts)
        elif r < 0.27 and live:
            oid = live[rnd.randrange(len(live))]
            if rnd.random() < 0.5:
                yield AmendOrder(oid, None, rnd.randint(1, 50) * 10, ts)
            else:
                spec = specs[int(oid.split("-")[1])]
                yield AmendOrder(oid, (refs[spec.symbol] + rnd.randint(-20, 20)) * spec.tick_units,
                                 None, ts)
        else:
            k = rnd.randrange(len(specs))
            spec = specs[k]
            side = "buy" if rnd.random() < 0.5 else "sell"
            account = f"A{rnd.randrange(n_accounts):04d}"
            qty = rnd.randint(1, 50) * 10
            oid = f"o{i}-{k}"
            if rnd.random() < 0.04:
                yield NewOrder(oid, account, spec.symbol, side, "market", "ioc", None, qty, ts)
            else:
                lean = -3 if side == "buy" else 3
                price = (refs[spec.symbol] + lean + rnd.randint(-25, 25)) * spec.tick_units
                live.append(oid)
                yield NewOrder(oid, account, spec.symbol, side, "limit", "day", price, qty, ts)


def _dir(base: str | None) -> Path:
    return Path(tempfile.mkdtemp(prefix="ccerx-durability-", dir=base))


def _check_ledger(ex, ledger) -> None:
    ledger.check()
    for account in ex.accounts.by_id.values():
        assert ledger.balance(account.account, "CNY") == account.cash, account.account
        for symbol, qty in account.credits.items():
            assert ledger.balance(account.account, symbol) == qty, (account.account, symbol)


# ---------------------------------------------------------------------------- journal
def bench_journal(n: int, base: str | None) -> list[dict]:
    from ccerx.engine.durable.exchange import DurableExchange
    commands = list(flow(n))
    ref = Exchange(accounts=accounts_table())
    t0 = time.perf_counter()
    for c in commands:
        ref.apply(c)
    engine_s = time.perf_counter() - t0
    rows = [{"mode": "engine only (no journal)", "batch": "-", "commands": n,
             "seconds": engine_s, "per_s": n / engine_s}]
    for batch in (1, 10, 100, 1000):
        count = n if batch >= 100 else min(n, 2_000 * batch)
        directory = _dir(base)
        ex = DurableExchange(directory, accounts=accounts_table(), ledger=None,
                             snapshot_every=1 << 62)
        t0 = time.perf_counter()
        for i in range(0, count, batch):
            ex.apply_many(commands[i:i + batch])
        seconds = time.perf_counter() - t0
        if count == n:
            assert ex.state_hash() == ref.state_hash(), "journaled run diverged"
        size = ex.journal.bytes_written
        ex.close()
        shutil.rmtree(directory)
        rows.append({"mode": "journal + fsync per batch", "batch": batch, "commands": count,
                     "seconds": seconds, "per_s": count / seconds, "bytes_per_cmd": size / count})
    return rows


# ---------------------------------------------------------------------------- recovery
def bench_recovery(n: int, base: str | None) -> list[dict]:
    from ccerx.engine.durable.exchange import DurableExchange
    rows = []
    commands = list(flow(n))
    for label, every in (("journal only (no snapshot after genesis)", 1 << 62),
                         ("snapshot every 250,000 commands", 250_000),
                         ("snapshot every 251,000 (worst case: long tail to replay)", 251_000)):
        directory = _dir(base)
        ex = DurableExchange(directory, accounts=accounts_table(), ledger=None,
                             snapshot_every=every)
        t0 = time.perf_counter()
        for i in range(0, n, 1000):
            ex.apply_many(commands[i:i + 1000])
        write_s = time.perf_counter() - t0
        expected = ex.state_hash()
        trades = ex.outbox.last_seq
        ex.close()
        t0 = time.perf_counter()
        back = DurableExchange(directory, ledger=None, snapshot_every=every)
        seconds = time.perf_counter() - t0
        assert back.state_hash() == expected, "recovered state differs"
        replayed = back.recovery.replayed
        back.close()
        shutil.rmtree(directory)
        rows.append({"mode": label, "commands": n, "trades": trades, "write_s": write_s,
                     "replayed": replayed, "recovery_s": seconds})
    return rows


# ---------------------------------------------------------------------------- ledger relay
def bench_ledger(n: int, base: str | None) -> list[dict]:
    from ccerx.engine.durable.exchange import DurableExchange
    commands = list(flow(n))
    directory = _dir(base)
    ex = DurableExchange(directory, accounts=accounts_table(), start_relays=False)
    for i in range(0, n, 1000):
        ex.apply_many(commands[i:i + 1000])
    count = ex.outbox.last_seq
    relay = ex.relays["ledger"]
    t0 = time.perf_counter()
    relay.drain()
    seconds = time.perf_counter() - t0
    _check_ledger(ex, ex.ledger)
    ex.close()
    shutil.rmtree(directory)
    return [{"mode": "outbox -> SQLite ledger (relay batch 500, WAL, synchronous=FULL)",
             "instructions": count, "seconds": seconds, "per_s": count / seconds}]


# ---------------------------------------------------------------------------- mqtt
def bench_mqtt(n: int, base: str | None, broker: str) -> list[dict]:
    import orjson

    from ccerx.engine.durable.exchange import DurableExchange
    from ccerx.engine.ledger.mqtt import MqttPublisher
    from ccerx.engine.ledger.mqtt_consumer import SettlementConsumer
    from ccerx.engine.ledger.sqlite import SqliteLedger
    host, _, port = broker.rpartition(":")
    commands = list(flow(n))
    directory = _dir(base)
    tag = f"bench-{int(time.time() * 1000)}"
    prefix = f"{tag}/ccer/v1"     # a topic space of our own on a possibly shared broker
    publisher = MqttPublisher(host, int(port), client_id=f"{tag}-pub", window=64, prefix=prefix)
    ex = DurableExchange(directory, accounts=accounts_table(), ledger=None,
                         adapters={"mqtt": publisher}, start_relays=False)
    for i in range(0, n, 1000):
        ex.apply_many(commands[i:i + 1000])
    count = ex.outbox.last_seq
    ledger = SqliteLedger(directory / "consumer.sqlite")
    opening = orjson.loads((directory / "opening.json").read_bytes())["accounts"]
    ledger.open_accounts([tuple(r) for r in opening])
    consumer = SettlementConsumer(ledger, host, int(port), client_id=f"{tag}-consumer",
                                  prefix=prefix, log=lambda text: None)
    stop = threading.Event()
    consumer_loop = asyncio.new_event_loop()
    async_stop = asyncio.Event()

    def consume():
        asyncio.set_event_loop(consumer_loop)
        consumer_loop.run_until_complete(consumer.run(async_stop))

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    while consumer.connects == 0:
        time.sleep(0.01)
    baseline_s, messages = _plain_publish(host, int(port), f"{tag}-plain/ccer/v1",
                                          ex.outbox.read(0, count), 64)
    t0 = time.perf_counter()
    relay = ex.relays["mqtt"]
    relay.drain()
    publish_s = time.perf_counter() - t0
    while ledger.applied_seq() < count:
        time.sleep(0.01)
    end_to_end_s = time.perf_counter() - t0
    consumer_loop.call_soon_threadsafe(async_stop.set)
    thread.join(10)
    stop.set()
    _check_ledger(ex, ledger)
    assert ledger.settlement_count() == count
    ex.close()
    ledger.close()
    shutil.rmtree(directory)
    return [{"mode": "baseline: plain aiomqtt QoS 1 publish of the same messages, window 64",
             "instructions": count, "messages": messages, "seconds": baseline_s,
             "per_s": count / baseline_s},
            {"mode": "outbox -> MQTT QoS 1 + 2 fill notices each, each batch confirmed by "
                     "the consumer", "instructions": count, "seconds": publish_s,
             "per_s": count / publish_s, "resends": publisher.resends,
             "confirm_timeouts": publisher.confirm_timeouts,
             "consumer_confirmations": consumer.confirmations,
             "consumer_duplicates": consumer.duplicates},
            {"mode": "engine outbox -> MQTT -> consumer -> SQLite ledger (end to end)",
             "instructions": count, "seconds": end_to_end_s, "per_s": count / end_to_end_s}]


def _plain_publish(host: str, port: int, prefix: str, instructions, window: int):
    """The same-run baseline: a bare aiomqtt client publishing the same messages at QoS 1
    (each PUBACKed, `window` in flight), no relay, no outbox, no confirmation."""
    import aiomqtt

    from ccerx.engine.ledger.mqtt import messages_for
    messages = [m for inst in instructions for m in messages_for(inst, prefix)]

    async def run() -> float:
        async with aiomqtt.Client(host, port, identifier=f"{prefix.split('/')[0]}-plain",
                                  max_inflight_messages=window) as client:
            client.pending_calls_threshold = window + 1
            gate = asyncio.Semaphore(window)

            async def send(topic, payload):
                async with gate:
                    await client.publish(topic, payload, qos=1)
            t0 = time.perf_counter()
            await asyncio.gather(*(send(t, p) for t, p in messages))
            return time.perf_counter() - t0
    return asyncio.run(run()), len(messages)


class OwnBroker:
    """A private Mosquitto on a free port with unbounded per-client queues (the default limit
    of 1000 queued messages makes a broker drop QoS 1 messages for a consumer that falls
    behind a fast publisher)."""

    def __enter__(self) -> str:
        import getpass
        import socket
        import subprocess
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir = Path(tempfile.mkdtemp(prefix="ccerx-mosquitto-"))
        conf = self.dir / "mosquitto.conf"
        conf.write_text(f"user {getpass.getuser()}\nlistener {self.port} 127.0.0.1\n"
                        f"allow_anonymous true\nmax_queued_messages 0\n"
                        f"max_inflight_messages 100\n")
        self.process = subprocess.Popen(["mosquitto", "-c", str(conf)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return f"127.0.0.1:{self.port}"
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def _print(rows: list[dict]) -> None:
    for row in rows:
        print("  ".join(f"{k}={v:,.2f}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in row.items()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ccerx.benchmarks.durability")
    parser.add_argument("which", choices=("journal", "recovery", "ledger", "mqtt", "all"))
    parser.add_argument("--commands", type=int)
    parser.add_argument("--broker", metavar="HOST:PORT",
                        help="MQTT broker (default: start a private mosquitto on a free port)")
    parser.add_argument("--dir", help="where to put the data directories (default: /tmp)")
    args = parser.parse_args(argv)
    todo = ("journal", "recovery", "ledger", "mqtt") if args.which == "all" else (args.which,)
    defaults = {"journal": 200_000, "recovery": 1_000_000, "ledger": 100_000, "mqtt": 100_000}
    for which in todo:
        n = args.commands or defaults[which]
        print(f"== {which} ({n:,} commands)")
        if which == "journal":
            _print(bench_journal(n, args.dir))
        elif which == "recovery":
            _print(bench_recovery(n, args.dir))
        elif which == "ledger":
            _print(bench_ledger(n, args.dir))
        elif args.broker:
            _print(bench_mqtt(n, args.dir, args.broker))
        else:
            with OwnBroker() as broker:
                print(f"(private mosquitto on {broker})")
                _print(bench_mqtt(n, args.dir, broker))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
