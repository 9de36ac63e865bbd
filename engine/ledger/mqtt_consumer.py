"""The settlement consumer service: applies instructions from MQTT to a ledger and confirms.

`SettlementConsumer` (run by `ccerx ledger consume`) is the consuming half of the protocol
described in engine/ledger/mqtt.py (topics and message schema live there):

* It subscribes to `PREFIX/settle/+` at QoS 1 with a persistent session (fixed client id,
  clean_session False), so the broker queues instructions while it is away.
* It applies instructions in stream order, idempotently (the ledger applies by instruction id:
  a re-sent one changes nothing), one ledger transaction per gathered batch. An instruction
  that arrives ahead of a gap waits in memory until the missing one arrives.
* After each committed batch it publishes the highest applied `seq` per exchange on
  `PREFIX/confirm`, retained, QoS 1. The publisher advances its cursor only on this
  confirmation, so an instruction the broker lost (a PUBACK only means "received") is sent
  again.
* It asks for the tail on `PREFIX/request` (QoS 1, "send everything after these"): when it
  (re)connects, when an instruction waits behind a gap for `gap_wait` s, and when nothing
  came for `tail_after` s (a lost tail has nothing after it to reveal the gap). The publisher
  answers by re-sending from the asked point.

Acknowledgements are manual: a message is PUBACKed only after the ledger transaction of its
batch has committed, so the broker redelivers what a crashed consumer had not applied (the
publisher would send it again anyway; this saves the wait). aiomqtt (2.x) does not expose
manual acknowledgement; we switch it on and acknowledge through its paho client
(`client._client`), which is the documented paho API (`manual_ack_set`, `ack`).
"""
from __future__ import annotations

import asyncio
import sys
import time
from typing import Optional

import aiomqtt
import orjson

from ccerx.engine.durable.settlement import Instruction, instruction_from_json
from ccerx.engine.ledger.mqtt import (TOPIC_PREFIX, confirm_topic, confirmation, request_topic,
                                      tail_request)
from ccerx.engine.ledger.sql import exchange_of


class SettlementConsumer:
    """Applies instructions from MQTT to a ledger (SqliteLedger / PostgresLedger), in stream
    order, idempotently, acknowledging each message only after its transaction committed and
    then confirming the applied position to the publisher (see the module doc)."""

    def __init__(self, ledger, host: str = "127.0.0.1", port: int = 1883, *,
                 client_id: str = "ccerx-ledger-consumer", prefix: str = TOPIC_PREFIX,
                 max_batch: int = 500, linger: float = 0.01, max_backoff: float = 5.0,
                 gap_wait: float = 0.5, tail_after: float = 3.0, log=None):
        self.ledger = ledger
        self.linger = linger
        self.host, self.port = host, port
        self.client_id = client_id
        self.topic = f"{prefix}/settle/+"
        self.confirm_topic = confirm_topic(prefix)
        self.request_topic = request_topic(prefix)
        self.max_batch = max_batch
        self.max_backoff = max_backoff
        self.gap_wait = gap_wait          # s an instruction may wait behind a gap before we ask
        self.tail_after = tail_after      # s of silence before we ask for the tail
        self.log = log if log is not None else (lambda text: print(text, file=sys.stderr))
        self.applied = 0
        self.duplicates = 0
        self.malformed = 0
        self.connects = 0
        self.confirmations = 0
        self.requests = 0
        self.last_message = time.monotonic()
        self._exchanges: set[str] = set()            # every stream seen by this process
        self._applied_seq: dict[str, int] = {}       # exchange -> committed in the ledger
        self._waiting: dict[str, dict[int, Instruction]] = {}   # ahead of a gap
        self._gap_since: Optional[float] = None
        self._last_request = 0.0
        self._gap_warned = 0.0
        self._confirm_due = asyncio.Event()

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
        self._gap_since = None
        self._confirm_due = asyncio.Event()
        async with client:
            self.connects += 1
            await client.subscribe(self.topic, qos=1)
            # the ledger is the truth: what it holds is confirmed, and the rest asked for
            for exchange in self._exchanges:
                self._applied_seq[exchange] = self.ledger.applied_seq(exchange)
            if self._applied_seq:
                await self._confirm(client)
            await self._request(client)
            # A reader task moves messages into our own queue. Waiting on aiomqtt's iterator
            # with a timeout would be wrong: cancelling its __anext__ can drop a message it
            # already took off the client's queue; an asyncio.Queue.get() cancels safely.
            inbox: asyncio.Queue = asyncio.Queue()

            async def read() -> None:
                async for message in client.messages:
                    inbox.put_nowait(message)

            async def confirm() -> None:
                while True:
                    await self._confirm_due.wait()
                    self._confirm_due.clear()
                    await self._confirm(client)

            tasks = [asyncio.create_task(read()), asyncio.create_task(confirm())]
            try:
                while not stop.is_set():
                    for task in tasks:
                        if task.done():
                            task.result()        # the broker went away: MqttError
                            return
                    wait = 0.2 if idle_exit is None else min(0.2, idle_exit)
                    try:
                        message = await asyncio.wait_for(inbox.get(), wait)
                    except asyncio.TimeoutError:
                        idle = time.monotonic() - self.last_message
                        if idle_exit is not None and idle > idle_exit:
                            break
                        self._warn_gap(idle)
                        await self._ask_if_due(client)
                        continue
                    batch = await self._gather(inbox, message)
                    self.last_message = time.monotonic()
                    self._handle(client, batch)
                    await self._ask_if_due(client)
                if self._confirm_due.is_set():  # leaving: say what the last commit applied
                    await asyncio.wait_for(self._confirm(client), 3.0)
            finally:
                for task in tasks:
                    task.cancel()
                    try:
                        await task
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

    # ---------------------------------------------------------------- protocol messages
    async def _confirm(self, client: aiomqtt.Client) -> None:
        """Publish what the ledger has committed (retained: a publisher that connects later
        reads it at once)."""
        await client.publish(self.confirm_topic,
                             confirmation(dict(self._applied_seq), self.client_id),
                             qos=1, retain=True)
        self.confirmations += 1

    async def _request(self, client: aiomqtt.Client) -> None:
        """Ask the publisher to send everything after what we applied (an exchange we have
        not seen yet is absent: everything it holds)."""
        self._last_request = time.monotonic()
        self.requests += 1
        await client.publish(self.request_topic,
                             tail_request(dict(self._applied_seq), self.client_id), qos=1)

    async def _ask_if_due(self, client: aiomqtt.Client) -> None:
        now = time.monotonic()
        if any(self._waiting.values()):
            if self._gap_since is None:
                self._gap_since = now
        else:
            self._gap_since = None
        since_request = now - self._last_request
        gap = self._gap_since is not None and now - self._gap_since >= self.gap_wait
        if (gap and since_request >= max(self.gap_wait, 1.0)) or (
                now - self.last_message >= self.tail_after and since_request >= self.tail_after):
            await self._request(client)

    def _warn_gap(self, idle: float) -> None:
        """Say so (every 10 s) when instructions wait behind a missing one."""
        if idle < 10 or time.monotonic() - self._gap_warned < 10:
            return
        for exchange, waiting in self._waiting.items():
            if waiting:
                self._gap_warned = time.monotonic()
                self.log(f"ledger consumer: gap in the {exchange} stream: waiting for "
                         f"instruction {self._applied_seq[exchange] + 1}, {len(waiting)} later "
                         f"ones held; asked the publisher to send again from there")

    def _handle(self, client: aiomqtt.Client, batch: list) -> None:
        """Apply what is in order (one transaction), hold what is ahead of a gap, then
        acknowledge the whole batch. Held ones are acknowledged too: unacknowledged they would
        take the few in-flight slots the broker allows a client, and enough of them would stop
        it sending the missing one; nor are they needed to be safe, since the publisher keeps
        every instruction until we confirm it."""
        ready: list[Instruction] = []
        for message in batch:
            try:
                inst = instruction_from_json(orjson.loads(message.payload))
            except (ValueError, orjson.JSONDecodeError) as err:
                self.malformed += 1
                self.log(f"ledger consumer: not an instruction on {message.topic}: {err}")
                continue
            exchange = exchange_of(inst.id)
            if exchange not in self._applied_seq:
                self._applied_seq[exchange] = self.ledger.applied_seq(exchange)
                self._exchanges.add(exchange)
            if inst.seq <= self._applied_seq[exchange]:
                ready.append(inst)         # the ledger checks it is a true duplicate
                self.duplicates += 1
                continue
            waiting = self._waiting.setdefault(exchange, {})
            if inst.seq in waiting:
                self.duplicates += 1
            waiting[inst.seq] = inst
        applied_now = 0
        for exchange, waiting in self._waiting.items():
            seq = self._applied_seq[exchange]
            while seq + 1 in waiting:
                ready.append(waiting.pop(seq + 1))
                seq += 1
                applied_now += 1
            self._applied_seq[exchange] = seq
        if ready:
            ready.sort(key=lambda i: i.seq)
            self.ledger.deliver(ready)     # one committed transaction
            self.applied += applied_now
            self._confirm_due.set()        # duplicates too: the publisher may not know yet
        paho = client._client
        for message in batch:
            paho.ack(message.mid, message.qos)
