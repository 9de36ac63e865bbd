"""Collector pauses (issue 13 item 3). The resting book is doubly linked (an order knows its
level and neighbours), so the live book holds cycles by design, and a full collection
re-traverses it: that is the pause `ccerx bench` and `ccerx serve` keep off the hot path.
What the engine drops must not hold cycles, so that reference counting frees it and only the
youngest generation needs collecting while it runs (tests/unit/test_engine_gc.py checks a
replay with accounts; here: no accounts, amends, and the close lapsing every day order)."""
from pathlib import Path

from tests.isolated import run_isolated

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


CLOSED_DAY = """
import gc, sys
from pathlib import Path
from ccerx.engine.core.commands import EndOfDay
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.formats.ndjson import parse_command

commands = [parse_command(line) for line in (Path(sys.argv[1]) / "sample-flow.ndjson").open("rb")]
exchange = Exchange()
gc.collect()
gc.disable()
try:
    for command in commands:
        exchange.apply(command)
    resting = sum(len(book.orders) for book in exchange.books.values())
    exchange.apply(EndOfDay(None))       # every resting day order lapses
    lapsed_and_dropped = gc.collect()
    left = sum(len(book.orders) for book in exchange.books.values())
finally:
    gc.enable()
print(resting, left, lapsed_and_dropped)
"""


def test_a_day_without_accounts_closed_at_the_end_leaves_nothing_for_the_collector():
    # (in an interpreter of its own: gc.collect() counts the whole process, tests/isolated.py)
    resting, left, lapsed_and_dropped = run_isolated(CLOSED_DAY, str(SAMPLES))
    assert resting > 100 and left == 0
    assert lapsed_and_dropped == 0


TIMED_PASS = """
import gc
from ccerx.benchmarks.bench import collector_off_the_hot_path

before = gc.get_threshold()
assert gc.get_freeze_count() == 0
loaded = [[i] for i in range(1000)]       # tracked objects, loaded before the pass
with collector_off_the_hot_path():
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(loaded)
    young, middle, old = gc.get_threshold()
    assert young == before[0] and middle >= 1 << 30 and old >= 1 << 30
assert gc.get_threshold() == before and gc.get_freeze_count() == 0
with collector_off_the_hot_path(collecting=False):   # --no-gc: left alone
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before
print(1)
"""


def test_the_timed_pass_runs_with_the_loaded_objects_frozen_and_only_young_collections():
    # (in an interpreter of its own: the collector's state is the whole process's, and a
    # thread another test left running may switch it off meanwhile, tests/isolated.py)
    assert run_isolated(TIMED_PASS) == [1]
