"""The engine leaves no reference cycles: what it drops is freed by reference counting.

This is what makes pausing the cyclic collector during a replay safe (engine/replay.py).
A change that leaves an order linked to its level or neighbours after removal fails here.
"""
import gc
from pathlib import Path

from ccerx.engine.formats.config import load_accounts
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.formats.ndjson import parse_command

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def test_a_replay_with_accounts_leaves_nothing_for_the_cycle_collector():
    commands = [parse_command(line) for line in (SAMPLES / "sample-flow.ndjson").open("rb")]
    exchange = Exchange(accounts=load_accounts(SAMPLES / "accounts.json"))
    gc.collect()
    gc.disable()
    try:
        traded = 0
        for command in commands:
            traded += len(exchange.apply(command))
        unreachable = gc.collect()
    finally:
        gc.enable()
    assert traded > len(commands)  # the flow really matched and cancelled
    assert unreachable == 0
