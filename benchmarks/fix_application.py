"""Cost of the exchange application alone: FIX NewOrderSingle in, execution reports out.

In process, no sockets and no session layer: the parsed message goes to
ExchangeApplication.on_message over a real Exchange with the demo accounts, so the figure is
the gateway's translation + permissions + engine + report building per order. It checks its
end state (engine invariants, every order answered) so a fast wrong run fails.

    python -m ccerx.benchmarks.fix_application [--orders 50000] [--seed 1]
"""
from __future__ import annotations

import argparse
import random
import time

from ccerx.engine.formats.config import load_instruments
from ccerx.engine.core.exchange import Exchange
from ccerx.gateway.config import GatewayConfig
from ccerx.gateway.fix.application import FixMessage
from ccerx.gateway.fix.translate import ExchangeApplication


def make_orders(config: GatewayConfig, n: int, seed: int) -> list:
    rnd = random.Random(seed)
    keys = [config.session_key(b) for b in config.brokers]
    orders = []
    for i in range(n):
        key = keys[i % len(keys)]
        suffix = key.their_comp_id[-2:]
        side = rnd.choice("12")
        account = ("EMIT" if side == "1" else "HOLD") + suffix
        price = f"{rnd.randint(6100, 6300) // 100}.{rnd.randint(6100, 6300) % 100:02d}"
        orders.append((key, FixMessage.of(
            "D", (8, "FIX.4.4"), (9, 150), (49, key.their_comp_id), (56, key.our_comp_id), (34, i + 2),
            (52, "20260101-09:30:00.000"), (11, f"c{i}"), (1, account), (55, "CCER-AFF"), (54, side),
            (60, "20260101-09:30:00.000"), (38, rnd.randint(1, 50)), (40, "2"), (44, price))))
    return orders


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    config = GatewayConfig.demo()
    exchange = Exchange(load_instruments(None), config.build_accounts())
    app = ExchangeApplication(exchange, config.comp_id, config.brokers)
    orders = make_orders(config, args.orders, args.seed)
    on_message = app.on_message
    outbound = 0
    start = time.perf_counter_ns()
    for key, message in orders:
        outbound += len(on_message(key, message))
    elapsed = time.perf_counter_ns() - start
    exchange.check()
    answered = sum(1 for o in app._by_cl_ord_id.values())  # every ClOrdID was processed
    assert answered == args.orders, (answered, args.orders)
    print(f"{args.orders:,} orders, {outbound:,} messages out in {elapsed / 1e9:.3f} s: "
          f"{args.orders / (elapsed / 1e9):,.0f} orders/s, {elapsed / args.orders / 1000:.1f} us/order")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
