"""Front gateways (issue 15 item 4): FIX processes that feed the leader's sequenced stream.

Theory of operation (the node's side: engine/durable/replicated.py, "Fronts").

    front   `ccerx serve --cluster URLS --front NAME`: its brokers' FIX sessions are its own
            (local stores, as in the single-node server). The exchange application validates
            as always, but hands each command to FrontLink.forward instead of applying it.
            The commands of one event-loop iteration (at most FRONT_BATCH_MAX) are one front
            batch, numbered k = 1, 2, ... within the process's epoch (its start, ns), sent by
            core NATS to the leader. The front's replica applies the stream in order, on this
            loop: the commands of its own batches (the stream message's H_FRONTS entry names
            them by command seq) are translated with their requests, everyone else's with a
            neutral one (fills of its brokers' resting orders, market data, trading status).
            So an acknowledgement leaves only once its command is in the stream with quorum.
            A batch not seen in the stream RESEND_AFTER_S after it was sent (the leader died,
            or dropped it as a gap) is sent again with every later one, in order (go-back-N);
            the leader applies each (epoch, k) once. Logons are refused until the replica has
            caught up with the stream as it was at start (a PossDup resend is then answered
            from what is in the stream).
    leader  FrontIntake: the NATS thread hands each front batch over to the gateway's loop,
            where the node applies it if it is the front's next (apply_front_batch, deferred,
            consecutively), its events go through the leader's own application with the
            neutral request (its brokers' fills against front orders, its market data), and a
            commit follows at once (the publish), output or not.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from typing import Optional

import orjson

from ccerx.engine.durable import journal as jr
from ccerx.engine.durable.replicated import (FRONT_BATCH_MAX, FRONT_REFUSAL_LOG_S,
                                             decode_front_batch, valid_front_name)

log = logging.getLogger("gateway.front")

RESEND_AFTER_S = 1.0     # a front batch unseen in the stream this long: re-send from it on
RESEND_CHECK_S = 0.2
# Stream messages applied with one commit of the local journal (one fsync, ~2.5 ms here: one
# per message held the loop most of the time under load), at most this many per loop turn.
STREAM_GROUP_MAX = 200


class FrontLink:
    """A front's gateway side: forward() batches commands to the leader; apply_handed()
    applies each stream message on the loop and translates its events."""

    def __init__(self, node):
        self.node = node
        self.name = node.settings.node
        if not valid_front_name(self.name):
            raise ValueError(f"front name {self.name!r}: 1-64 letters, digits, - and _")
        # the epoch: above every one of this name in the stream (a previous run's, with the
        # clock ahead then; or a batch sent under this name by another NATS client), taken
        # again before the first batch, once the replica has caught up (_send)
        self.epoch = self._next_epoch(time.time_ns())
        self._epoch_fixed = False
        self._foreign_logged = -FRONT_REFUSAL_LOG_S
        self.application = self.server = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._batch: list = []                  # (journal row, request) of this iteration
        self._scheduled = False
        self._k = 0
        self._unconfirmed: OrderedDict = OrderedDict()   # k -> [data, requests, sent at]
        self._resender: Optional[asyncio.Task] = None
        self.resent = 0                          # batches sent again (figures, tests)
        self._stream: deque = deque()            # (seq, headers, data) handed over, in order
        self._applied: list = []                 # (first cmd seq, events, entries) to answer

    def attach(self, application, server, loop) -> None:
        """Once the application and the server exist (before the node starts following)."""
        self.application, self.server, self._loop = application, server, loop
        node = self.node
        node.hand_over = self._handed
        node.on_applied = lambda first, events, fronts: self._applied.append(
            (first, events, fronts))
        self._resender = loop.create_task(self._resend_forever())

    # ------------------------------------------------------------------ out: to the leader
    def _next_epoch(self, at_least: int) -> int:
        last = self.node.front_last.get(self.name)
        return max(at_least, last[0] + 1) if last else at_least

    def forward(self, command, request) -> None:
        """The application's hook (in the loop): the command joins this iteration's batch
        unless the leader would refuse it (replicated.decode_front_batch: e.g. a Symbol over
        FRONT_TEXT_MAX characters), which would refuse the whole batch, and every later one
        re-sent with it, for ever: such a command is logged and dropped (not answered)."""
        row = jr.encode_command(command)        # (once: the batch is made of these rows)
        try:
            decode_front_batch(orjson.dumps([row]))
        except ValueError as err:
            log.error("front %s: a command the leader would refuse is not forwarded: %s",
                      self.name, err)
            return
        self._batch.append((row, request))
        if len(self._batch) >= FRONT_BATCH_MAX:
            self._send()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._send)

    def _send(self) -> None:
        self._scheduled = False
        batch, self._batch = self._batch, []
        if not batch:
            return
        if not self._epoch_fixed:         # caught up (logons wait for it): fix the epoch
            self.epoch, self._epoch_fixed = self._next_epoch(self.epoch), True
        self._k += 1
        data = orjson.dumps([row for row, _ in batch])
        self._unconfirmed[self._k] = [data, [request for _, request in batch],
                                      time.monotonic()]
        self.node.send_front_batch(self.epoch, self._k, data)

    async def _resend_forever(self) -> None:
        while True:
            await asyncio.sleep(RESEND_CHECK_S)
            if not self._unconfirmed:
                continue
            now = time.monotonic()
            oldest = next(iter(self._unconfirmed.values()))
            if now - oldest[2] < RESEND_AFTER_S:
                continue
            for k, entry in self._unconfirmed.items():
                entry[2] = now
                self.node.send_front_batch(self.epoch, k, entry[0])
                self.resent += 1
            log.info("front %s: re-sent front batches %d..%d (not in the stream after %.1f s)",
                     self.name, next(iter(self._unconfirmed)), self._k, RESEND_AFTER_S)

    # ------------------------------------------------------------------ in: from the stream
    def _handed(self, seq: int, headers: dict, data: bytes) -> None:     # NATS thread
        self._stream.append((seq, headers, data))
        self._loop.call_soon_threadsafe(self._apply_stream)

    def _apply_stream(self) -> None:
        """Apply the stream messages that queued up (one local journal commit for them all),
        then answer: nothing is sent before its command is in this front's journal, so a
        restarted front never answers a command twice."""
        queue, node = self._stream, self.node
        if not queue:
            return
        for _ in range(min(len(queue), STREAM_GROUP_MAX)):
            node.apply_handed(*queue.popleft(), defer=True)
        node.commit_deferred()
        applied, self._applied = self._applied, []
        for first_seq, events, fronts in applied:
            self._answer(first_seq, events, fronts)
        if queue:
            self._loop.call_soon(self._apply_stream)

    def _answer(self, first_seq: int, events: list, fronts: list) -> None:
        """Commands first_seq... of a stream message were applied: tell whom it concerns."""
        mine: dict = {}
        for name, epoch, k, first, count in fronts:
            if name != self.name:
                continue
            if epoch != self.epoch:
                if self._epoch_fixed or epoch > self.epoch:
                    self._foreign(epoch, k)
                continue
            entry = self._unconfirmed.pop(k, None)
            if entry is None:
                continue
            for offset, request in enumerate(entry[1][:count]):
                mine[first + offset] = request
        translate = self.application.translate_applied
        out: list = []
        for offset, applied in enumerate(events):
            out += translate(applied, mine.get(first_seq + offset))
        if out:
            self.server.deliver(out)

    def _foreign(self, epoch: int, k: int) -> None:
        """A batch under this front's name that this process did not send is in the stream:
        another NATS client publishes as this front (README, "NATS authorization")."""
        now = time.monotonic()
        if now - self._foreign_logged < FRONT_REFUSAL_LOG_S:
            return
        self._foreign_logged = now
        log.error("front %s: THE STREAM HOLDS A BATCH UNDER THIS FRONT'S NAME THAT IT DID NOT "
                  "SEND (epoch %d, batch %d; this process's epoch is %d): another client of "
                  "the NATS cluster publishes to the front subject as this front%s",
                  self.name, epoch, k, self.epoch,
                  " (the leader now refuses this front's batches: restart it, it takes an "
                  "epoch above)" if epoch > self.epoch else "")

    def close(self) -> None:
        if self._resender is not None:
            self._resender.cancel()


class FrontIntake:
    """The leader's side: front batches from the NATS thread, applied on the gateway's loop
    (in arrival order, each batch whole), translated by the leader's own application."""

    def __init__(self, node, application, server, loop):
        self.node, self.application, self.server, self._loop = node, application, server, loop
        self._queue: deque = deque()
        node.front_refused_owners = frozenset(application.sessions)   # never from a front
        node.front_handler = self._received

    def _received(self, name: str, epoch: int, k: int, data: bytes) -> None:   # NATS thread
        self._queue.append((name, epoch, k, data))
        self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        queue, node = self._queue, self.node
        out: list = []
        applied = False
        translate = self.application.translate_applied
        while queue:
            name, epoch, k, data = queue.popleft()
            try:
                events = node.apply_front_batch(name, epoch, k, data)
            except Exception as err:     # the engine failed mid-batch on a checked batch
                node.fence(f"applying front {name}'s batch {k}: {err!r}")
            if events is None:
                continue
            applied = True
            for each in events:
                out += translate(each)
        if out:
            self.server.deliver(out)         # (its flush commits first)
        if applied:
            self._loop.call_soon(node.engine.commit)    # published now, output or not
