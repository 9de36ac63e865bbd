"""The engine's events, once durable, to the console: the trade tape, live surveillance, and
the browsers' server-sent event streams.

`observe(engine, publish)` wraps the engine object's `apply_many` (on the instance, before the
FIX application and the gateway take its methods): events of `apply` and `apply_many` are
durable when those return and are published at once; events of `apply_deferred` wait for the
next `commit()`, the point at which the gateway also lets brokers see them. So the console never
shows a trade a crash could still take back.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Callable, Optional

from ccerx.engine.core.events import LargeHolderReported, LimitsSet, RestrictionChanged, TradeExecuted
from ccerx.engine.formats.ndjson import event_to_dict, market_state
from ccerx.engine.surveillance.cases import CaseStore
from ccerx.engine.surveillance.monitor import Surveillance

log = logging.getLogger("gateway.console")
TAPE = 500                      # trades kept for the tape page
CLIENT_QUEUE = 1000             # messages a slow browser may fall behind before it is dropped


def observe(engine, publish: Callable[[list], None]) -> None:
    """Publish the engine's events once durable (see the module docstring). A failure of
    `publish` is logged and goes no further: the console must never stop the exchange."""
    pending: list = []
    unguarded = publish

    def publish(events):
        try:
            unguarded(events)
        except Exception:
            log.exception("console: publishing %d events failed", len(events))

    many = getattr(engine, "apply_many", None)
    if many is None:                  # a plain in-memory Exchange: nothing to wait for
        apply = engine.apply

        def apply_now(command):
            events = apply(command)
            publish(events)
            return events
        engine.apply = apply_now
        return

    # The durable engine runs every path through apply_many: apply() is apply_many((c,)),
    # apply_deferred() is apply_many((c,), _commit=False), commit() is apply_many(()) when
    # something is held. So one wrapper sees each event once, and sees when it is durable.
    def apply_many(commands, _commit: bool = True):
        batches = many(commands, _commit)
        for events in batches:
            pending.extend(events)
        if _commit and pending:
            done = pending[:]
            pending.clear()
            publish(done)
        return batches
    engine.apply_many = apply_many


class ConsoleState:
    """What the pages show beyond the exchange's own state: the tape, the last price, the
    live alerts; and the open event streams of the browsers."""

    def __init__(self, exchange, case_store: Optional[CaseStore] = None,
                 surveillance_config=None, related=None):
        self.exchange = exchange
        self.tape: deque = deque(maxlen=TAPE)
        self.last_price: dict[str, int] = {}
        # live from the server's start (a restart begins afresh; `ccerx surveil DATA_DIR`
        # goes over the whole journal)
        self.surveillance = Surveillance(surveillance_config, related,
                                         specs=list(exchange.specs.values()))
        self.case_store = case_store
        self.alerts: deque = deque(maxlen=1000)
        # risk notices (Art.37-39, 46): large holders reported, limits set, restrictions
        self.notices: deque = deque(maxlen=500)
        self.clients: set[asyncio.Queue] = set()
        self._state_due = False

    def publish(self, events: list) -> None:
        """Events in (durable, in sequence): update the tape and surveillance, tell browsers."""
        if not events:
            return
        messages = []
        specs = self.exchange.specs
        new_alerts = []
        for event in events:
            kind = type(event)
            try:
                new_alerts += self.surveillance.feed(event)
            except Exception:            # surveillance must never stop trading
                log.exception("surveillance failed on %r", event)
            if kind is TradeExecuted:
                self.last_price[event.instrument] = event.price
                row = event_to_dict(event, specs)
                self.tape.append(row)
                messages.append({"type": "trade", "trade": row})
            elif kind is LargeHolderReported or kind is RestrictionChanged or kind is LimitsSet:
                row = event_to_dict(event, specs)
                self.notices.append(row)
                messages.append({"type": "notice", "notice": row})
        if new_alerts:
            self.alerts.extend(new_alerts)
            if self.case_store is not None:
                try:
                    self.case_store.add_alerts(new_alerts, "ccerx serve (live)")
                except Exception:
                    log.exception("storing %d alerts failed", len(new_alerts))
            messages += [{"type": "alert", "alert": a.to_json()} for a in new_alerts]
        messages.append({"type": "book", "instruments": sorted(
            {getattr(e, "instrument", None) for e in events} - {None})})
        for message in messages:
            self.send(message)
        self._schedule_state()

    def _schedule_state(self) -> None:
        """One market-state message per burst of events (at most every 0.2 s)."""
        if self._state_due or not self.clients:
            return
        self._state_due = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._state_due = False
            return
        loop.call_later(0.2, self._send_state)

    def _send_state(self) -> None:
        self._state_due = False
        self.send({"type": "state", "state": self.market()})

    def send(self, message: dict) -> None:
        for queue in list(self.clients):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:       # a browser that does not read: drop it
                self.clients.discard(queue)   # its stream ends (see app.events)

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(CLIENT_QUEUE)
        self.clients.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self.clients.discard(queue)

    # ---------------------------------------------------------------- reads
    def market(self) -> dict:
        """market_state plus each instrument's name, last price and VWAP (decimal text), and
        the settlement relays' progress."""
        state = market_state(self.exchange)
        for symbol, row in state["instruments"].items():
            spec = self.exchange.specs[symbol]
            volume, turnover, _ = self.exchange.day_stats[symbol]
            last = self.last_price.get(symbol)
            row["name"] = spec.name
            if spec.kind != "pooled":     # credits as lots: what it delivers, and whether
                row["credit_type"] = spec.credit_type     # it trades yet (Art.17)
                row["tradable"] = spec.tradable_from <= getattr(self.exchange, "closes", 0)
            row["last"] = None if last is None else spec.ticks_to_text(last)
            row["vwap"] = (spec.ticks_to_text((2 * turnover + volume) // (2 * volume))
                           if volume else None)
        state["time_ns"] = time.time_ns()
        # the durable engine's settlement relays: how far each ledger has confirmed
        relays = getattr(self.exchange, "relays", None) or {}
        made = getattr(getattr(self.exchange, "outbox", None), "last_seq", None)
        state["settlement"] = {name: {"confirmed": relay.cursor.value, "made": made,
                                      "last_error": (str(relay.last_error)
                                                     if relay.last_error else None)}
                               for name, relay in relays.items()}
        return state

    def book(self, symbol: str, levels: Optional[int]) -> dict:
        """Price levels of one book, best first: [[price, tonnes, orders], ...] per side."""
        book = self.exchange.books[symbol]
        spec = self.exchange.specs[symbol]
        out = {}
        for name, side in (("bids", book.bids), ("asks", book.asks)):
            rows = []
            for level in side.iter_levels():
                if levels is not None and len(rows) == levels:
                    break
                rows.append([spec.ticks_to_text(level.price), level.total_qty, level.count])
            out[name] = rows
        return {"symbol": symbol, "name": spec.name, **out}
