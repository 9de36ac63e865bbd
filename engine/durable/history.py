"""One order's history re-derived from a data directory: the newest snapshot before the
order, then the journal after it, replayed through the deterministic engine (a scratch copy:
the live engine is not touched).

What it is for: the engine keeps only resting orders (and the ids it has seen today). When a
crash lost the execution reports of an order that has since finished (filled, cancelled,
refused), nothing else knows what became of it; the gateway asks here when a broker resends
such an order as a possible duplicate (gateway/fix/translate.py), so the broker is told its
true status. A rare path (after a crash): it costs a replay from the snapshot before the
order (at most one snapshot interval plus what followed the order).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, NamedTuple, Optional

from ccerx.engine.core.events import (OrderAccepted, OrderAmended, OrderCancelled,
                                      OrderRejected, TradeExecuted)
from ccerx.engine.durable import journal as jr
from ccerx.engine.durable import snapshot as snap


class OrderHistory(NamedTuple):
    order_id: str
    accepted: Optional[OrderAccepted]     # None: the engine refused it (`rejected`)
    rejected: Optional[OrderRejected]
    amended: Optional[OrderAmended]       # the latest amend
    trades: tuple                         # TradeExecuted involving it, in order
    cancelled: Optional[OrderCancelled]   # its end, if not filled


def order_histories(data_dir: Path, order_ids: Iterable[str]) -> dict[str, OrderHistory]:
    """{order id: OrderHistory} for those of `order_ids` whose NewOrder the journal holds
    (the others are left out)."""
    wanted, found = set(order_ids), {}
    at_most = None
    while wanted:
        restored, _ = snap.latest_valid(Path(data_dir), at_most)
        if restored is None:
            break
        snap_seq, exchange, _ = restored
        seen = _replay(Path(data_dir), snap_seq, exchange, wanted)
        found.update(seen)
        wanted -= set(seen)
        if snap_seq == 0:
            break
        at_most = snap_seq - 1            # older orders: from an older snapshot
    return found


def order_history(data_dir: Path, order_id: str) -> Optional[OrderHistory]:
    return order_histories(data_dir, (order_id,)).get(order_id)


def _replay(data_dir: Path, snap_seq: int, exchange, wanted: set) -> dict[str, OrderHistory]:
    events: dict[str, list] = {}
    for record in jr.scan(data_dir, decode_after=snap_seq).records:
        if record.last_seq <= snap_seq:
            continue
        rows = record.command_rows()
        if record.first_seq <= snap_seq:
            rows = rows[snap_seq + 1 - record.first_seq:]
        for row in rows:
            for event in exchange.apply(jr.decode_command(row)):
                kind = type(event)
                if kind is TradeExecuted:
                    for order_id in (event.buy_order_id, event.sell_order_id):
                        if order_id in events:
                            events[order_id].append(event)
                    continue
                order_id = getattr(event, "order_id", None)
                if order_id not in wanted:
                    continue
                if kind is OrderAccepted or (kind is OrderRejected and event.op == "new"):
                    if order_id not in events:        # (a later duplicate is refused too)
                        events[order_id] = [event]
                elif order_id in events:
                    events[order_id].append(event)
    histories = {}
    for order_id, seen in events.items():
        first = seen[0]
        amends = [e for e in seen if type(e) is OrderAmended]
        ends = [e for e in seen if type(e) is OrderCancelled]
        histories[order_id] = OrderHistory(
            order_id, first if type(first) is OrderAccepted else None,
            first if type(first) is OrderRejected else None, amends[-1] if amends else None,
            tuple(e for e in seen if type(e) is TradeExecuted), ends[-1] if ends else None)
    return histories
