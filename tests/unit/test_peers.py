"""The peers harness (benchmarks/peers.py): the flow cleaning and the trade/volume check, on a
small flow against ccerx itself and the harness's lean book (no peer is installed here)."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import orjson

from ccerx.benchmarks.peers import DRIVER, agreement, ccerx_counts, clean_flow
from ccerx.engine.core.events import OrderRejected
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.formats.ndjson import parse_command

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def _driver():
    spec = importlib.util.spec_from_file_location("peers_driver", DRIVER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny_flow():
    return (SAMPLES / "sample-flow.ndjson").read_bytes().splitlines()[:4000]


def test_the_cleaned_flow_holds_only_what_every_engine_expresses_and_ccerx_rejects_none_of_it():
    kept, dropped = clean_flow(_tiny_flow() + [b"{not json", b'{"op":"eod"}'])
    assert dropped["op amend"] > 0 and dropped["malformed line"] >= 1 and dropped["op eod"] == 1
    exchange = Exchange()
    seen = set()
    for line in kept:
        obj = orjson.loads(line)
        assert (obj["op"], obj.get("type"), obj.get("tif")) in {
            ("new", "limit", "day"), ("new", "market", "ioc"), ("cancel", None, None)}
        if obj["op"] == "new":
            assert obj["account"] not in seen   # one account per order: no self-trade rules
            seen.add(obj["account"])
        events = exchange.apply(parse_command(line))
        assert not any(type(e) is OrderRejected for e in events)
    reference = ccerx_counts(kept)
    assert reference["trades"] > 100 and reference["volume"] > reference["trades"]


def test_ccerx_through_its_driver_and_the_lean_book_agree_with_the_reference(tmp_path):
    kept, _ = clean_flow(_tiny_flow())
    flow = tmp_path / "clean.ndjson"
    flow.write_bytes(b"\n".join(kept) + b"\n")
    reference = ccerx_counts(kept)
    done = subprocess.run([sys.executable, str(DRIVER), "ccerx", str(flow), "verify"],
                          capture_output=True, text=True, check=True)
    assert agreement(reference, json.loads(done.stdout)) == "agree"
    lean = _driver().run("lean", str(flow), "verify")
    assert agreement(reference, lean) == "agree"
    assert lean["commands"] == len(kept)


def test_the_check_names_a_difference_in_trades_or_volume():
    reference = {"trades": 10, "volume": 500}
    assert agreement(reference, {"trades": 10, "volume": 500}) == "agree"
    assert agreement(reference, {"trades": 11, "volume": 500}).startswith("DIFFER: trades 11")
    assert "volume 499" in agreement(reference, {"trades": 10, "volume": 499})
    assert agreement(reference, {"trades": None, "volume": 500}).startswith("agree (volume")
    assert agreement(reference, {"trades": None, "volume": 1}).startswith("DIFFER")
