"""MQTT: publish settlement instructions and fill notices; consume them into a ledger.

Publisher (`MqttPublisher`, a ledger adapter). The relay thread calls `deliver(batch)`; the
publisher runs its own asyncio event loop in its own thread, so neither matching nor the
relay's thread ever runs network code. Each instruction goes as compact JSON (orjson) at
QoS 1 to `ccer/v1/settle/{instrument}` (cash deposits: `settle/CNY`), and a fill (or
deposit) notice to `ccer/v1/fills/{member}` for each side whose account belongs to a broker
member. At most `window` publishes are in
flight at once; `deliver()` returns only when the broker has acknowledged (PUBACK) every
message of the batch. If the broker is down, or a PUBACK does not come within
`publish_timeout`, the connection is dropped and `deliver()` raises: the relay keeps the
instructions in the outbox, backs off (exponentially, up to its maximum) and delivers the
batch again on a new connection. The broker may therefore see a message twice; the consumer
applies by instruction id.

Consumer (`SettlementConsumer`). Subscribes to `ccer/v1/settle/+` at QoS 1 with a
persistent session (fixed client id, clean_session False), so the broker queues instructions
while the consumer is away. Acknowledgements are manual: a message is PUBACKed only after the
ledger transaction that applied it has committed, so a consumer crash loses nothing.
Instructions are applied in stream order: an instruction that arrives ahead of a gap waits in
memory (unacknowledged) until the missing one arrives.

aiomqtt (2.x) does not expose manual acknowledgement; we switch it on and acknowledge through
its paho client (`client._client`), which is the documented paho API (`manual_ack_set`, `ack`).
"""
from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from typing import Optional, Sequence

import aiomqtt
import orjson

from ccerx.engine.durable.settlement import (DepositInstruction, Instruction, SettlementInstruction,
                          instruction_from_json)
from ccerx.engine.core.types import format_fen, format_price_units
from ccerx.engine.ledger.sql import exchange_of

TOPIC_PREFIX = "ccer/v1"


def _topic_part(text: str) -> str:
    """MQTT topic level from a name: wildcards and separators are not allowed in it."""
    return "".join("_" if c in "+#/" else c for c in text) or "_"


def fill_notice(inst: SettlementInstruction, buying: bool) -> dict:
    fee = inst.buy_fee if buying else inst.sell_fee
    return {"type": "fill", "settlement_id": inst.id, "trade_id": inst.trade_id,
            "instrument": inst.instrument, "account": inst.buyer if buying else inst.seller,
            "side": "buy" if buying else "sell", "qty": inst.qty,
            "price": format_price_units(inst.price_units), "gross": format_fen(inst.gross_fen),
            "fee": format_fen(fee), "trade_date": inst.trade_date,
            "settle_date": inst.settle_date, "ts": inst.ts}


def deposit_notice(inst: DepositInstruction) -> dict:
    return {"type": "deposit", **inst.to_json()}


def messages_for(inst: Instruction, prefix: str = TOPIC_PREFIX) -> list[tuple[str, bytes]]:
    out = [(f"{prefix}/settle/{_topic_part(inst.instrument)}", orjson.dumps(inst.to_json()))]
    if type(inst) is DepositInstruction:
        if inst.member:
            out.append((f"{prefix}/fills/{_topic_part(inst.member)}",
                        orjson.dumps(deposit_notice(inst))))
        return out
    if inst.buyer_member:
        out.append((f"{prefix}/fills/{_topic_part(inst.buyer_member)}",
                    orjson.dumps(fill_notice(inst, True))))
    if inst.seller_member:
        out.append((f"{prefix}/fills/{_topic_part(inst.seller_member)}",
                    orjson.dumps(fill_notice(inst, False))))
    return out


class MqttPublisher:
    """Ledger adapter that publishes to an MQTT broker (see the module doc)."""

    name = "mqtt"
    keeps_accounts = False    # a transport: the consumer's ledger keeps the accounts

    def __init__(self, host: str = "127.0.0.1", port: int = 1883, *,
                 client_id: Optional[str] = None, window: int = 64,
                 prefix: str = TOPIC_PREFIX, fills: bool = True, connect_timeout: float = 3.0,
                 publish_timeout: float = 10.0):
        self.host, self.port = host, port
        # clean sessions: nothing is kept on the broker, so every process may have its own id
        self.client_id = client_id or f"ccerx-settlement-{os.getpid()}"
        self.window = window
        self.prefix = prefix
        self.fills = fills
        self.connect_timeout = connect_timeout
        self.publish_timeout = publish_timeout
        self.published = 0
        self.connects = 0
        self._client: Optional[aiomqtt.Client] = None
        self.loop_errors = 0
        self._loop = asyncio.new_event_loop()
        # a broker that vanishes leaves paho/aiomqtt callbacks failing on a closed socket;
        # the failed deliver() already reports it, so count these instead of printing them
        self._loop.set_exception_handler(self._on_loop_error)
        self._thread = threading.Thread(target=self._loop.run_forever, name="mqtt-publisher",
                                        daemon=True)
        self._thread.start()

    def _on_loop_error(self, loop, context) -> None:
        self.loop_errors += 1

    # -- called from the relay thread
    def deliver(self, instructions: Sequence[Instruction]) -> None:
        if not instructions:
            return
        future = asyncio.run_coroutine_threadsafe(self._deliver(instructions), self._loop)
        future.result()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._disconnect(), self._loop).result(timeout=5)
        except Exception:
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    # -- on the publisher's own loop
    async def _connect(self) -> aiomqtt.Client:
        if self._client is not None:
            return self._client
        client = aiomqtt.Client(self.host, self.port, identifier=self.client_id,
                                clean_session=True, timeout=self.connect_timeout,
                                max_inflight_messages=self.window)
        client.pending_calls_threshold = self.window + 1   # the window bounds them, not a warning
        await client.__aenter__()
        self._client = client
        self.connects += 1
        return client

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.__aexit__(None, None, None), 2.0)
            except Exception:
                pass

    async def _deliver(self, instructions) -> None:
        try:
            client = await self._connect()
            window = asyncio.Semaphore(self.window)
            prefix, fills = self.prefix, self.fills

            async def send(topic: str, payload: bytes) -> None:
                async with window:
                    await client.publish(topic, payload, qos=1)

            sends = []
            for inst in instructions:
                messages = messages_for(inst, prefix)
                if not fills:
                    messages = messages[:1]
                sends.extend(send(topic, payload) for topic, payload in messages)
            await asyncio.wait_for(asyncio.gather(*sends), self.publish_timeout)
            self.published += len(instructions)
        except BaseException:
            await self._disconnect()
            raise


class SettlementConsumer:
    """Applies instructions from MQTT to a ledger (SqliteLedger / PostgresLedger), in stream
    order, idempotently, acknowledging each message only after its transaction committed."""

    def __init__(self, ledger, host: str = "127.0.0.1", port: int = 1883, *,
                 client_id: str = "ccerx-ledger-consumer", prefix: str = TOPIC_PREFIX,
                 max_batch: int = 500, linger: float = 0.01, max_backoff: float = 5.0,
                 log=None):
        self.ledger = ledger
        self.linger = linger
        self.host, self.port = host, port
        self.client_id = client_id
        self.topic = f"{prefix}/settle/+"
        self.max_batch = max_batch
        self.max_backoff = max_backoff
        self.log = log if log is not None else (lambda text: print(text, file=sys.stderr))
        self.applied = 0
        self.duplicates = 0
        self.malformed = 0
        self.connects = 0
        self.last_message = time.monotonic()
        self._applied_seq: dict[str, int] = {}
        self._waiting: dict[str, dict[int, list]] = {}   # exchange -> seq -> [inst, msgs]
        self._gap_warned = 0.0

    async def run(self, stop: Optional[asyncio.Event] = None,
                  idle_exit: Optional[float] = None) -> None:
        """Consume until `stop` is set (or no message came for `idle_exit` seconds)."""
        stop = stop or asyncio.Event()
        backoff = 0.1
        while not stop.is_set():
            connects = self.connects
            try:
                await self._session(stop, idle_exit)
                return
            except Exception as err:   # broker gone, or the ledger refused: retry later
                if self.connects != connects:
                    backoff = 0.1      # it was up: start the backoff again from the bottom
                self._applied_seq.clear()
                self._waiting.clear()
                self.log(f"ledger consumer: {type(err).__name__}: {err}; "
                         f"retrying in {backoff:.1f} s")
                if idle_exit is not None and time.monotonic() - self.last_message > idle_exit:
                    return
                try:
                    await asyncio.wait_for(stop.wait(), backoff)
                except asyncio.TimeoutError:
                    pass
                backoff = min(backoff * 2, self.max_backoff)

    async def _session(self, stop: asyncio.Event, idle_exit: Optional[float]) -> None:
        client = aiomqtt.Client(self.host, self.port, identifier=self.client_id,
                                clean_session=False, timeout=3.0)
        client._client.manual_ack_set(True)
        # unacknowledged messages of a previous connection will be redelivered
        self._waiting.clear()
        async with client:
            self.connects += 1
            await client.subscribe(self.topic, qos=1)
            # A reader task moves messages into our own queue. Waiting on aiomqtt's iterator
            # with a timeout would be wrong: cancelling its __anext__ can drop a message it
            # already took off the client's queue; an asyncio.Queue.get() cancels safely.
            inbox: asyncio.Queue = asyncio.Queue()

            async def read() -> None:
                async for message in client.messages:
                    inbox.put_nowait(message)

            reader = asyncio.create_task(read())
            try:
                while not stop.is_set():
                    if reader.done():
                        reader.result()          # the broker went away: MqttError
                        return
                    wait = 0.2 if idle_exit is None else min(0.2, idle_exit)
                    try:
                        message = await asyncio.wait_for(inbox.get(), wait)
                    except asyncio.TimeoutError:
                        idle = time.monotonic() - self.last_message
                        if idle_exit is not None and idle > idle_exit:
                            return
                        self._warn_gap(idle)
                        continue
                    batch = await self._gather(inbox, message)
                    self.last_message = time.monotonic()
                    self._handle(client, batch)
            finally:
                reader.cancel()
                try:
                    await reader
                except BaseException:
                    pass

    async def _gather(self, inbox: asyncio.Queue, first) -> list:
        """Collect what arrives within `linger` s (up to max_batch) so one ledger commit
        covers many instructions: the client reads one packet per event-loop turn, so without
        lingering every commit (an fsync) would carry a single instruction."""
        batch = [first]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.linger
        while len(batch) < self.max_batch:
            if not inbox.empty():
                batch.append(inbox.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(inbox.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    def _warn_gap(self, idle: float) -> None:
        """Say so (every 10 s) when instructions wait behind a missing one."""
        if idle < 10 or time.monotonic() - self._gap_warned < 10:
            return
        for exchange, waiting in self._waiting.items():
            if waiting:
                self._gap_warned = time.monotonic()
                self.log(f"ledger consumer: gap in the {exchange} stream: waiting for "
                         f"instruction {self._applied_seq[exchange] + 1}, {len(waiting)} later "
                         f"ones held (did the broker drop messages? see max_queued_messages)")

    def _handle(self, client: aiomqtt.Client, batch: list) -> None:
        ready: list[Instruction] = []
        acks: list = []
        for message in batch:
            try:
                inst = instruction_from_json(orjson.loads(message.payload))
            except (ValueError, orjson.JSONDecodeError) as err:
                self.malformed += 1
                self.log(f"ledger consumer: not an instruction on {message.topic}: {err}")
                acks.append(message)
                continue
            exchange = exchange_of(inst.id)
            if exchange not in self._applied_seq:
                self._applied_seq[exchange] = self.ledger.applied_seq(exchange)
            if inst.seq <= self._applied_seq[exchange]:
                ready.append(inst)         # the ledger checks it is a true duplicate
                acks.append(message)
                self.duplicates += 1
                continue
            waiting = self._waiting.setdefault(exchange, {})
            entry = waiting.get(inst.seq)
            if entry is None:
                waiting[inst.seq] = [inst, message]
            else:
                entry.append(message)
                self.duplicates += 1
        applied_now = 0
        for exchange, waiting in self._waiting.items():
            seq = self._applied_seq[exchange]
            while seq + 1 in waiting:
                entry = waiting.pop(seq + 1)
                ready.append(entry[0])
                acks.extend(entry[1:])
                seq += 1
                applied_now += 1
            self._applied_seq[exchange] = seq
        if ready:
            ready.sort(key=lambda i: i.seq)
            self.ledger.deliver(ready)     # one committed transaction
            self.applied += applied_now
        paho = client._client
        for message in acks:
            paho.ack(message.mid, message.qos)
