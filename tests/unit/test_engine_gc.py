"""The engine leaves no reference cycles: what it drops is freed by reference counting.

This is what makes pausing the cyclic collector during a replay safe (engine/replay.py).
A change that leaves an order linked to its level or neighbours after removal fails here.

gc.collect() counts the garbage of the whole process, so the replay runs in an interpreter of
its own (tests/isolated.py).
"""
from pathlib import Path

from tests.isolated import run_isolated

SAMPLES = Path(__file__).resolve().parents[2] / "samples"

REPLAY = """
import gc, sys
from pathlib import Path
from ccerx.engine.formats.config import load_accounts
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.formats.ndjson import parse_command

samples = Path(sys.argv[1])
commands = [parse_command(line) for line in (samples / "sample-flow.ndjson").open("rb")]
exchange = Exchange(accounts=load_accounts(samples / "accounts.json"))
gc.collect()
gc.disable()
try:
    traded = 0
    for command in commands:
        traded += len(exchange.apply(command))
    unreachable = gc.collect()
finally:
    gc.enable()
print(len(commands), traded, unreachable)
"""


def test_a_replay_with_accounts_leaves_nothing_for_the_cycle_collector():
    commands, traded, unreachable = run_isolated(REPLAY, str(SAMPLES))
    assert traded > commands  # the flow really matched and cancelled
    assert unreachable == 0
