"""Write the sample LOBSTER file pair in this folder from our own generated order flow.

    python samples/lobster/make_sample.py [OUT_DIR]      # default: this folder

A seeded CCER-AFF flow (benchmarks/flows.py, the model behind `ccerx gen-flow`) runs through
the matching engine; what a LOBSTER message file would record of it is written out: type 1 an
order that rests (with its open quantity once its own executions are done), 2 a quantity
reduction that keeps priority, 3 a delete (cancel, expiry, or the old order of an amend that
loses priority, which comes back as a new order), 4 an execution of a resting order (the
aggressor is not in the file, as in LOBSTER). Prices are CNY x 10,000, Direction the side
of the order (of the resting one for executions), Time seconds after midnight, Beijing
time. The order book file holds, after each message, five levels of (ask price, ask size,
bid price, bid size), empty levels as LOBSTER fills them. After every command the levels
written are checked against the engine's own book, so the pair describes what happened.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from ccerx.benchmarks.flows import FlowParams, write_flow
from ccerx.engine.core.events import OrderAccepted, OrderAmended, OrderCancelled, TradeExecuted
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.core.types import DEFAULT_INSTRUMENTS, Side
from ccerx.engine.formats.binary import iter_flow_commands

SYMBOL, SEED, ROWS, LEVELS = "CCER-AFF", 2024, 400, 5
NAME = f"{SYMBOL}_2024-01-22_34200000_57600000_{{kind}}_{LEVELS}.csv"
NO_ASK, NO_BID = 9_999_999_999, -9_999_999_999
BEIJING_MIDNIGHT_NS = 1_705_852_800 * 10**9          # 2024-01-22 00:00 +08:00


class Recorder:
    """LOBSTER rows of one credit type from engine events, and the book they describe."""

    def __init__(self, spec):
        self.spec = spec
        self.resting: dict[int, list] = {}          # LOBSTER id -> [side, ticks, open qty]
        self.ids: dict[str, int] = {}               # engine order id -> LOBSTER id
        self.last_id = 1000
        self.messages: list[str] = []
        self.books: list[str] = []

    def row(self, ts: int, kind: int, lob_id: int, size: int, ticks: int, side: Side) -> None:
        seconds = (ts - BEIJING_MIDNIGHT_NS) / 1e9
        price = ticks * self.spec.tick_units // 100
        direction = 1 if side == Side.BUY else -1
        self.messages.append(f"{seconds:.9f},{kind},{lob_id},{size},{price},{direction}")
        self.books.append(self.book_row())

    def levels(self, side: Side) -> list[tuple[int, int]]:
        totals: dict[int, int] = {}
        for s, ticks, qty in self.resting.values():
            if s == side:
                totals[ticks] = totals.get(ticks, 0) + qty
        return sorted(totals.items(), reverse=side == Side.BUY)[:LEVELS]

    def book_row(self) -> str:
        asks, bids = self.levels(Side.SELL), self.levels(Side.BUY)
        cells = []
        for k in range(LEVELS):
            ask = (asks[k][0] * self.spec.tick_units // 100, asks[k][1]) if k < len(asks) else (NO_ASK, 0)
            bid = (bids[k][0] * self.spec.tick_units // 100, bids[k][1]) if k < len(bids) else (NO_BID, 0)
            cells += [*ask, *bid]
        return ",".join(map(str, cells))

    def command(self, events, ts: int) -> None:
        """One command's events: executions and deletes as they happen, then the order that
        came in (or came back from an amend) if some of it rests."""
        incoming = {}                                # engine id -> [side, ticks, open qty]
        for e in events:
            if getattr(e, "instrument", SYMBOL) != SYMBOL:
                continue
            if isinstance(e, OrderAccepted):
                if e.price is not None:
                    incoming[e.order_id] = [e.side, e.price, e.qty]
            elif isinstance(e, TradeExecuted):
                resting_id = e.sell_order_id if e.aggressor == Side.BUY else e.buy_order_id
                aggressor_id = e.buy_order_id if e.aggressor == Side.BUY else e.sell_order_id
                lob = self.ids[resting_id]
                order = self.resting[lob]
                order[2] -= e.qty
                if not order[2]:
                    del self.resting[lob]
                self.row(ts, 4, lob, e.qty, e.price, order[0])
                if aggressor_id in incoming:
                    incoming[aggressor_id][2] -= e.qty
            elif isinstance(e, OrderCancelled):
                if e.order_id in incoming:           # an IOC/FOK/market remainder: never rested
                    del incoming[e.order_id]
                    continue
                lob = self.ids.get(e.order_id)
                if lob in self.resting:
                    side, ticks, _ = self.resting.pop(lob)
                    self.row(ts, 3, lob, e.cancelled_qty, ticks, side)
            elif isinstance(e, OrderAmended):
                lob = self.ids.get(e.order_id)
                if lob not in self.resting:
                    continue
                side, ticks, open_qty = self.resting[lob]
                if e.priority_kept and e.price == ticks and e.open_qty < open_qty:
                    self.resting[lob][2] = e.open_qty
                    self.row(ts, 2, lob, open_qty - e.open_qty, ticks, side)
                else:                                # priority lost: out, and back as new
                    del self.resting[lob]
                    self.row(ts, 3, lob, open_qty, ticks, side)
                    del self.ids[e.order_id]
                    incoming[e.order_id] = [side, e.price, e.open_qty]
        for order_id, (side, ticks, qty) in incoming.items():
            if qty > 0:
                self.last_id += 1
                lob = self.ids[order_id] = self.last_id
                self.resting[lob] = [side, ticks, qty]
                self.row(ts, 1, lob, qty, ticks, side)

    def check(self, exchange: Exchange) -> None:
        book = exchange.books[SYMBOL]
        for side in (Side.SELL, Side.BUY):
            ours = self.levels(side)
            theirs = [(price, qty) for price, qty, _ in book.depth(side, LEVELS)]
            assert ours == theirs, (side, ours, theirs)


def make(out_dir: Path) -> tuple[Path, Path]:
    spec = next(s for s in DEFAULT_INSTRUMENTS if s.symbol == SYMBOL)
    params = FlowParams(instruments=(spec,), instrument_weights=(1.0,), invalid_share=0.0,
                        rate=50.0)
    exchange, recorder = Exchange(), Recorder(spec)
    with tempfile.TemporaryDirectory() as tmp:
        flow = Path(tmp) / "flow.ndjson"
        write_flow(flow, SEED, 20 * ROWS, params)
        for command in iter_flow_commands(flow):
            recorder.command(exchange.apply(command), command.ts)
            recorder.check(exchange)
            if len(recorder.messages) >= ROWS:
                break
    out_dir.mkdir(parents=True, exist_ok=True)
    messages = out_dir / NAME.format(kind="message")
    orderbook = out_dir / NAME.format(kind="orderbook")
    messages.write_text("\n".join(recorder.messages) + "\n")
    orderbook.write_text("\n".join(recorder.books) + "\n")
    return messages, orderbook


if __name__ == "__main__":
    written = make(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
    print("wrote " + ", ".join(map(str, written)))
