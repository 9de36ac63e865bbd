"""MQTT: publish settlement instructions and fill notices, and the protocol that confirms them.

Topics (under a prefix, default `ccer/v1`) and message schema (compact JSON, orjson):

    PREFIX/settle/{instrument}  publisher -> consumer, QoS 1: one instruction (cash deposits
                                travel on settle/CNY, a lot's deposits on settle/{lot key},
                                e.g. settle/CCER-14-2024-0001@2023; day-end clearing batches,
                                cbeex-2023, on settle/CLEARING; retirements (注销) on
                                settle/RETIRE: see settlement.py); `seq` numbers the
                                exchange's whole stream, so the consumer applies a batch only
                                after the trades it delivers, whatever topic each came on
    PREFIX/fills/{member}       publisher -> brokers' members, QoS 1: a fill, deposit or
                                retirement notice for each side whose account belongs to a
                                member (at least once); a fill of a trade that delivered lots
                                carries them as "lots": [{"project", "vintage", "qty"}]
    PREFIX/confirm              consumer -> publisher, QoS 1, RETAINED:
                                {"applied": {"CCERX": 1234}, "consumer": "<client id>"}, the
                                highest seq per exchange committed to the consumer's ledger
    PREFIX/request              consumer -> publisher, QoS 1: {"after": {"CCERX": 1200},
                                "consumer": ...}, "send everything after these again" (an
                                exchange left out: everything you hold); it confirms `after` too

Theory of operation. A PUBACK only means the broker received a message: a broker killed before
it saved its queues loses what it had PUBACKed (with the consumer online or offline). So the
publisher never counts an instruction as delivered until the consumer says it is in its
ledger:

* `MqttPublisher` (a ledger adapter) is called by the settlement relay's thread with a batch
  (`deliver(batch)`); it runs its own asyncio loop in its own thread, so neither matching nor
  the relay's thread ever runs network code. It publishes the batch (at most `window` QoS 1
  publishes in flight), then waits until a confirmation covers the batch's last `seq`; only
  then does `deliver()` return and the relay advance its durable cursor. It subscribes to
  `confirm` and `request` only while it waits (the retained confirmation arrives at once);
  messages from the broker in between its own publishes slowed publishing. While waiting it
  re-sends: from the asked point when a request comes, from the confirmed point when no
  confirmation came for `confirm_timeout` s (the wait then doubles, up to
  `max_confirm_timeout`, so a consumer that is away for hours does not pile up copies).
* A lost connection (the broker died), a publish without PUBACK within `publish_timeout`, or
  a restart of the engine makes `deliver()` raise (or never return): the relay keeps the
  batch, backs off and delivers it again on a new connection, i.e. everything after its
  cursor (the confirmed point) is sent again after any reconnect or restart.
* The consumer (engine/ledger/mqtt_consumer.py) applies by instruction id, so every copy
  after the first changes nothing; it confirms after each commit and asks for the tail when
  it (re)connects, sees a gap, or hears nothing for a while.

One confirming consumer per prefix: the retained confirmation is that consumer's position
(a second ledger needs a prefix of its own). The relay's engine thread never waits for any of
this; instructions wait in the outbox (the journal) meanwhile.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from typing import Optional, Sequence

import aiomqtt
import orjson

from ccerx.engine.core.lots import lots_json
from ccerx.engine.durable.settlement import (DepositInstruction, Instruction,
                                             RetireInstruction, SettlementInstruction)
from ccerx.engine.core.types import format_fen, format_price_units
from ccerx.engine.ledger.sql import exchange_of

TOPIC_PREFIX = "ccer/v1"


def _topic_part(text: str) -> str:
    """MQTT topic level from a name: wildcards and separators are not allowed in it."""
    return "".join("_" if c in "+#/" else c for c in text) or "_"


def fill_notice(inst: SettlementInstruction, buying: bool) -> dict:
    fee = inst.buy_fee if buying else inst.sell_fee
    out = {"type": "fill", "settlement_id": inst.id, "trade_id": inst.trade_id,
           "instrument": inst.instrument, "account": inst.buyer if buying else inst.seller,
           "side": "buy" if buying else "sell", "qty": inst.qty,
           "price": format_price_units(inst.price_units), "gross": format_fen(inst.gross_fen),
           "fee": format_fen(fee), "trade_date": inst.trade_date,
           "settle_date": inst.settle_date, "ts": inst.ts}
    if inst.lots:                        # (a pooled delivery's notice is as it always was)
        out["lots"] = lots_json(inst.lots)
    return out


def deposit_notice(inst: DepositInstruction) -> dict:
    return {"type": "deposit", **inst.to_json()}


def retirement_notice(inst: RetireInstruction) -> dict:
    return {"type": "retirement", **inst.to_json()}


def messages_for(inst: Instruction, prefix: str = TOPIC_PREFIX) -> list[tuple[str, bytes]]:
    out = [(f"{prefix}/settle/{_topic_part(inst.instrument)}", orjson.dumps(inst.to_json()))]
    kind = inst.kind
    if kind == "clearing":              # on its own topic, settle/CLEARING; no fill notices
        return out
    if kind == "deposit" or kind == "retire":
        if inst.member:
            notice = deposit_notice(inst) if kind == "deposit" else retirement_notice(inst)
            out.append((f"{prefix}/fills/{_topic_part(inst.member)}", orjson.dumps(notice)))
        return out
    if inst.buyer_member:
        out.append((f"{prefix}/fills/{_topic_part(inst.buyer_member)}",
                    orjson.dumps(fill_notice(inst, True))))
    if inst.seller_member:
        out.append((f"{prefix}/fills/{_topic_part(inst.seller_member)}",
                    orjson.dumps(fill_notice(inst, False))))
    return out


def confirm_topic(prefix: str = TOPIC_PREFIX) -> str:
    return f"{prefix}/confirm"


def request_topic(prefix: str = TOPIC_PREFIX) -> str:
    return f"{prefix}/request"


def confirmation(applied: dict[str, int], consumer: str) -> bytes:
    """The consumer's position: the highest seq per exchange committed to its ledger."""
    return orjson.dumps({"applied": applied, "consumer": consumer})


def tail_request(after: dict[str, int], consumer: str) -> bytes:
    """"Send everything after these seqs again" (an exchange left out: all you hold)."""
    return orjson.dumps({"after": after, "consumer": consumer})


def read_positions(payload: bytes, key: str) -> dict[str, int]:
    """{exchange: seq} from a confirmation (key "applied") or a request ("after");
    raises ValueError on anything else."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as err:
        raise ValueError(f"not JSON: {err}") from None
    positions = body.get(key) if isinstance(body, dict) else None
    if not isinstance(positions, dict) or not all(
            isinstance(k, str) and type(v) is int and v >= 0 for k, v in positions.items()):
        raise ValueError(f"no {key!r} object of exchange -> sequence number")
    return positions


class MqttPublisher:
    """Ledger adapter that publishes to an MQTT broker (see the module doc)."""

    name = "mqtt"
    keeps_accounts = False    # a transport: the consumer's ledger keeps the accounts

    def __init__(self, host: str = "127.0.0.1", port: int = 1883, *,
                 client_id: Optional[str] = None, window: int = 64,
                 prefix: str = TOPIC_PREFIX, fills: bool = True, connect_timeout: float = 3.0,
                 publish_timeout: float = 10.0, confirm_timeout: float = 10.0,
                 max_confirm_timeout: float = 300.0):
        self.host, self.port = host, port
        # clean sessions: nothing is kept on the broker, so every process may have its own id
        self.client_id = client_id or f"ccerx-settlement-{os.getpid()}"
        self.window = window
        self.prefix = prefix
        self.fills = fills
        self.connect_timeout = connect_timeout
        self.publish_timeout = publish_timeout
        self.confirm_timeout = confirm_timeout
        self.max_confirm_timeout = max_confirm_timeout
        self.published = 0          # instructions confirmed by the consumer
        self.connects = 0
        self.resends = 0            # times part of a batch was published again
        self.confirm_timeouts = 0
        self.requests = 0           # tail requests received
        self.malformed = 0          # confirmations or requests we could not read
        self.confirmed: dict[str, int] = {}   # exchange -> highest seq the consumer applied
        self.listening = False      # subscribed to confirmations and requests (while waiting)
        self._client: Optional[aiomqtt.Client] = None
        self._reader: Optional[asyncio.Task] = None
        self._wake = asyncio.Event()                 # a confirmation, request or disconnect
        self._batch_exchange: Optional[str] = None   # set while a deliver() waits
        self._resend_after: Optional[int] = None     # asked to re-send after this seq
        self._cancelled = False
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
        """Publish, and return once the consumer confirmed the batch's last instruction is
        in its ledger; raises if the connection is lost first (or on `cancel()`)."""
        if not instructions:
            return
        future = asyncio.run_coroutine_threadsafe(self._deliver(instructions), self._loop)
        # poll for done-ness, not for TimeoutError: the delivery's own timeouts raise that too
        while not concurrent.futures.wait([future], timeout=0.2).done:
            if self._cancelled:
                future.cancel()
                raise ConnectionAbortedError("the MQTT publisher is closing; the batch stays "
                                             "in the outbox")
        future.result()

    def cancel(self) -> None:
        """Make a deliver() in progress (waiting for a consumer that may be away) raise; the
        relay calls this when it stops. Any later deliver() raises too."""
        self._cancelled = True
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    def close(self) -> None:
        self._cancelled = True
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
        if self._client is not None and self._reader is not None and not self._reader.done():
            return self._client
        await self._disconnect()
        client = aiomqtt.Client(self.host, self.port, identifier=self.client_id,
                                clean_session=True, timeout=self.connect_timeout,
                                max_inflight_messages=self.window)
        client.pending_calls_threshold = self.window + 1   # the window bounds them, not a warning
        await client.__aenter__()
        self._client = client
        self.connects += 1
        # the reader also notices a lost connection, subscribed or not
        self._reader = asyncio.create_task(self._read(client))
        return client

    async def _listen(self, client: aiomqtt.Client, on: bool) -> None:
        """(Un)subscribe to confirmations and requests. Only while a batch waits: every
        message the broker sends us while we publish slowed publishing measurably (0.54x ->
        0.34x of a plain publish). On subscribing the retained confirmation arrives at once."""
        topics = [confirm_topic(self.prefix), request_topic(self.prefix)]
        if on:
            await client.subscribe([(topic, 1) for topic in topics])
        else:
            await client.unsubscribe(topics)
        self.listening = on

    async def _disconnect(self) -> None:
        self.listening = False
        client, self._client = self._client, None
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
        if client is not None:
            try:
                await asyncio.wait_for(client.__aexit__(None, None, None), 2.0)
            except Exception:
                pass

    async def _read(self, client: aiomqtt.Client) -> None:
        """Confirmations and tail requests from the consumer (ends when the connection does)."""
        confirm, request = confirm_topic(self.prefix), request_topic(self.prefix)
        try:
            async for message in client.messages:
                topic = str(message.topic)
                try:
                    positions = read_positions(bytes(message.payload),
                                               "applied" if topic == confirm else "after")
                except ValueError:
                    self.malformed += 1
                    continue
                for exchange, seq in positions.items():
                    if seq > self.confirmed.get(exchange, 0):
                        self.confirmed[exchange] = seq
                if topic == request and self._batch_exchange is not None:
                    self.requests += 1
                    after = positions.get(self._batch_exchange, 0)
                    if self._resend_after is None or after < self._resend_after:
                        self._resend_after = after
                self._wake.set()
        finally:
            self._wake.set()

    async def _publish(self, client: aiomqtt.Client, instructions) -> None:
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

    async def _deliver(self, instructions) -> None:
        exchange, last = exchange_of(instructions[0].id), instructions[-1].seq
        try:
            if self._cancelled:
                raise ConnectionAbortedError("the MQTT publisher is closing")
            client = await self._connect()
            self._batch_exchange, self._resend_after = exchange, None
            await self._publish(client, instructions)
            wait = self.confirm_timeout
            listening = self.confirmed.get(exchange, 0) < last
            if listening:
                await self._listen(client, True)
            while self.confirmed.get(exchange, 0) < last:
                if self._cancelled:
                    raise ConnectionAbortedError("the MQTT publisher is closing")
                if self._reader is None or self._reader.done():
                    raise ConnectionError("connection to the MQTT broker lost before the "
                                          f"consumer confirmed instruction {last}")
                if self._resend_after is not None:
                    after, self._resend_after = self._resend_after, None
                    tail = [inst for inst in instructions if inst.seq > after]
                    if tail:
                        self.resends += 1
                        await self._publish(client, tail)
                    continue
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), wait)
                except asyncio.TimeoutError:
                    # confirmations go through the broker too: send again what is unconfirmed
                    self.confirm_timeouts += 1
                    self._resend_after = self.confirmed.get(exchange, 0)
                    wait = min(wait * 2, self.max_confirm_timeout)
            self.published += len(instructions)
            if listening:
                await self._listen(client, False)
        except BaseException:
            await self._disconnect()
            raise
        finally:
            self._batch_exchange = None
