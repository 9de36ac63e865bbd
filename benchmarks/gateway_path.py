"""Cost of the gateway's whole message path in process, without sockets.

NewOrderSingle bytes -> framing -> parse -> dictionary validation -> session (sequence
numbers, SendingTime, CompIDs) -> exchange application -> engine -> ExecutionReports ->
encode -> message store -> bytes to send, for N broker sessions driven the way
gateway/server.py drives them (one receive_data per chunk of --batch orders of one session,
then data_to_send of every session that has output). Stores are FileStores in a temporary
directory, as `ccerx serve` uses. Same order mix as benchmarks/gateway_load.py. It checks its
end state: every order acknowledged (ExecutionReport with its ClOrdID), engine invariants.

    python -m ccerx.benchmarks.gateway_path [--orders 100000] [--sessions 10] [--batch 8] [--profile]

Time is this process's CPU time (other work on the machine does not inflate it). The
figure is an upper bound for the TCP gateway: it leaves out the event loop, the socket
system calls and the client.
"""
from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

from ccerx.benchmarks.gateway_load import (GATEWAY_COMP_ID, broker_ids, encode_orders, fix_frame,
                                     make_orders, utc_text)
from ccerx.engine.formats.config import load_instruments
from ccerx.engine.core.exchange import Exchange
from ccerx.gateway.config import GatewayConfig
from ccerx.gateway.fix.session import Session
from ccerx.gateway.fix.store import FileStore
from ccerx.gateway.fix.translate import ExchangeApplication


def plain_config(n: int) -> GatewayConfig:
    """n brokers as in gateway_load, without passwords (no scrypt in a path benchmark)."""
    credits = ", ".join(f'"{s}" = 1000000000' for s in ("CCER-AFF", "CCER-SOL", "CCER-OWF",
                                                        "CCER-MGV"))
    text = f'[gateway]\ncomp_id = "{GATEWAY_COMP_ID}"\n'
    for broker in broker_ids(n):
        nn = broker[-2:]
        text += (f'\n[[broker]]\ncomp_id = "{broker}"\n'
                 f'[[broker.account]]\naccount = "EMIT{nn}"\ntype = "key_emission_unit"\n'
                 f'cash = "1000000000000.00"\n'
                 f'[[broker.account]]\naccount = "HOLD{nn}"\ntype = "project_owner"\n'
                 f'credits = {{ {credits} }}\n')
    return GatewayConfig.from_toml_text(text)


def build(n_sessions: int, store_dir: Path, durable: bool = False):
    config = plain_config(n_sessions)
    if durable:     # what `ccerx serve` runs: journal, group commit, SQLite ledger relay
        from ccerx.engine.durable.exchange import DurableExchange
        exchange = DurableExchange(store_dir / "engine", load_instruments(None),
                                   config.build_accounts())
    else:
        exchange = Exchange(load_instruments(None), config.build_accounts())
    app = ExchangeApplication(exchange, config.comp_id, config.brokers, group_commit=durable)
    sessions = {}
    dirty = set()

    def route(outbound):
        now = time.time()
        for key, message in outbound:
            session = sessions[key]
            session.send(message, now)
            dirty.add(session)

    for broker in broker_ids(n_sessions):
        key = config.session_key(broker)
        sessions[key] = Session(key, app, FileStore(store_dir, broker), router=route,
                                authenticate=config.authenticate)
    return exchange, app, list(sessions.values()), dirty


def run(orders: int, n_sessions: int, batch: int, seed: int = 1, durable: bool = False) -> dict:
    with tempfile.TemporaryDirectory(prefix="gateway-path-") as tmp:
        exchange, app, sessions, dirty = build(n_sessions, Path(tmp), durable)
        commit = exchange.commit if durable else (lambda: None)
        now = time.time()
        for session, broker in zip(sessions, broker_ids(n_sessions)):
            session.connection_made(now)
            session.receive_data(fix_frame([(35, "A"), (34, "1"), (49, broker),
                                            (52, utc_text(now)), (56, GATEWAY_COMP_ID),
                                            (98, "0"), (108, "30"), (141, "Y")]), now)
            assert session.logged_on, session.close_reason
            session.data_to_send()
        per_session = encode_orders(make_orders(orders, seed), n_sessions, utc_text(now))
        # Chunks in arrival order: batch orders of session 0, then of session 1, ...
        chunks = []
        longest = max(len(f) for f in per_session)
        for start in range(0, longest, batch):
            for s, frames in enumerate(per_session):
                part = frames[start:start + batch]
                if part:
                    chunks.append((sessions[s], b"".join(frame for _, frame in part)))
        out = []
        clock = time.process_time_ns      # CPU time: the machine is shared, wall time is noisy
        t0 = clock()
        for session, data in chunks:
            now = time.time()
            session.receive_data(data, now)
            dirty.add(session)
            commit()                        # as GatewayServer(before_write=...) does
            while dirty:
                out.append(dirty.pop().data_to_send())
        elapsed = clock() - t0
        exchange.check()
        if durable:
            exchange.close()
        wire = b"".join(out)
        acked = set(re.findall(rb"\x0135=8\x01.*?\x0111=(\d+)\x01", wire))
        assert len(acked) == orders, (len(acked), orders)
        messages = wire.count(b"\x0110=")
        return {"orders": orders, "sessions": n_sessions, "batch": batch,
                "messages_out": messages, "seconds": elapsed / 1e9,
                "orders_per_s": orders / (elapsed / 1e9), "us_per_order": elapsed / orders / 1e3}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, default=100_000)
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8, help="orders per receive_data call")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--durable", action="store_true",
                    help="the durable engine of `ccerx serve` (journal with one fsync per chunk, "
                         "SQLite ledger relay thread), as in the server")
    ap.add_argument("--profile", action="store_true", help="cProfile, top 30 by own time")
    args = ap.parse_args(argv)
    if args.profile:
        import cProfile
        import pstats
        prof = cProfile.Profile()
        prof.enable()
        r = run(args.orders, args.sessions, args.batch, args.seed, args.durable)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
    else:
        r = run(args.orders, args.sessions, args.batch, args.seed, args.durable)
    print(f"{r['orders']:,} orders over {r['sessions']} sessions ({r['batch']} per chunk), "
          f"{r['messages_out']:,} messages out in {r['seconds']:.3f} CPU s: "
          f"{r['orders_per_s']:,.0f} orders/s, {r['us_per_order']:.1f} us/order")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
