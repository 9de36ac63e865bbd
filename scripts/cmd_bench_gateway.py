"""`ccerx bench-gateway`: load test of the FIX gateway (benchmarks/gateway_load.py)."""
from __future__ import annotations


def add_parser(sub) -> None:
    from ccerx.benchmarks.gateway_load import add_arguments
    p = sub.add_parser(
        "bench-gateway", help="load-test the FIX gateway: N broker sessions on loopback",
        description="Start `ccerx serve` (fresh engine and data directory per run) with a "
                    "generated config of N brokers, send NewOrderSingle from N FIX sessions "
                    "open loop at fixed offered rates (latency from each order's planned send "
                    "time) and closed loop at the maximum rate; report order-to-acknowledgement "
                    "latency percentiles (HDR histogram) and sustained orders/s. Writes "
                    "result.json and latency_spectrum.png into --out. Exit 1 if any order "
                    "went unacknowledged.")
    add_arguments(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from ccerx.benchmarks.gateway_load import run_cli
    return run_cli(args)
