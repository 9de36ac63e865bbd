"""Cost of a gateway restart learning the day's orders from its FIX stores (issue 12 item 10).

A day of crossing orders goes through ExchangeApplication over a real Exchange; every message
it sends is stored by a Session in a FileStore, as `ccerx serve` stores it. Then, as at a
restart, the stores are reopened and a new application reads them
(ExchangeApplication.on_session_restored). Two baselines from the same run, on the same
files: reopening the stores (what every restart pays already) and one pass that parses every
stored message with the gateway's codec (codec.split_fields). The end state is checked: the
restarted application answers an OrderStatusRequest for every order exactly as the original
does, so a fast wrong recovery fails.

    python -m ccerx.benchmarks.gateway_restart [--pairs 50000]
"""
from __future__ import annotations

import argparse
import itertools
import tempfile
import time

from ccerx.engine.core.exchange import Exchange
from ccerx.engine.formats.config import load_instruments
from ccerx.gateway.config import GatewayConfig
from ccerx.gateway.fix import codec
from ccerx.gateway.fix.application import FixMessage
from ccerx.gateway.fix.session import Session
from ccerx.gateway.fix.store import FileStore
from ccerx.gateway.fix.translate import ExchangeApplication

T0 = 1_767_225_600_000_000_000            # 2026-01-01T00:00:00Z
STATUS_FIELDS = (37, 11, 39, 14, 151, 6, 38, 44, 1, 55, 54, 40, 59)


def order(cl: str, account: str, side: str, qty: int, price: str) -> FixMessage:
    return FixMessage.of("D", (34, 1), (11, cl), (1, account), (55, "CCER-AFF"), (54, side),
                         (60, "20260101-00:00:00.000"), (38, qty), (40, "2"), (44, price))


def status(app: ExchangeApplication, key, cl: str) -> list:
    [(_, report)] = app.on_message(key, FixMessage.of("H", (34, 1), (11, cl), (55, "CCER-AFF"),
                                                      (54, "1")))
    return [report.get(tag) for tag in STATUS_FIELDS]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=50_000, help="crossing order pairs (2 orders, "
                    "4 stored messages each)")
    args = ap.parse_args(argv)
    config = GatewayConfig.demo()
    exchange = Exchange(load_instruments(None), config.build_accounts())
    clock = itertools.count(T0, 1_000_000)
    app = ExchangeApplication(exchange, config.comp_id, config.brokers, clock=lambda: next(clock))
    buyer, seller = (config.session_key(b) for b in config.brokers)
    directory = tempfile.mkdtemp(prefix="gateway-restart-")
    sessions = {key: Session(key, None, FileStore(directory, key.their_comp_id))
                for key in (buyer, seller)}
    for i in range(args.pairs):
        out = (app.on_message(seller, order(f"s{i}", "HOLD02", "2", 1 + i % 3, "62.00"))
               + app.on_message(buyer, order(f"b{i}", "EMIT01", "1", 1 + i % 3, "62.00")))
        for key, message in out:
            sessions[key].send(message, T0 / 1e9)
    for session in sessions.values():
        session.store.close()
    stored = sum(s.store.next_sender - 1 for s in sessions.values())

    started = time.perf_counter()
    stores = {key: FileStore(directory, key.their_comp_id) for key in sessions}
    open_s = time.perf_counter() - started

    started = time.perf_counter()
    fields = sum(len(codec.split_fields(raw)) for store in stores.values()
                 for _, raw in store.each(1, store.next_sender - 1))
    parse_s = time.perf_counter() - started

    again = ExchangeApplication(exchange, config.comp_id, config.brokers,
                                clock=lambda: next(clock))
    started = time.perf_counter()
    for key, store in stores.items():
        again.on_session_restored(key, store.each(1, store.next_sender - 1))
    restore_s = time.perf_counter() - started

    for i in range(args.pairs):                          # the end state: every order as before
        for key, cl in ((buyer, f"b{i}"), (seller, f"s{i}")):
            if status(again, key, cl) != status(app, key, cl):
                raise SystemExit(f"restored order {cl} answers differently after the restart")
    print(f"{stored:,} stored messages ({fields:,} fields), {2 * args.pairs:,} orders")
    print(f"reopen the stores (baseline)        {open_s:7.2f} s  {open_s / stored * 1e6:6.1f} us/message")
    print(f"parse every message (codec)         {parse_s:7.2f} s  {parse_s / stored * 1e6:6.1f} us/message")
    print(f"learn the day's orders (restore)    {restore_s:7.2f} s  {restore_s / stored * 1e6:6.1f} us/message"
          f"  = {restore_s / open_s:.1f}x reopening, {restore_s / parse_s:.2f}x the codec pass")
    for store in stores.values():
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
