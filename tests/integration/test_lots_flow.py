"""Issue 11 "Done when", through the real CLI: `ccerx replay --rules cbeex-2023` of a flow over
project-vintage listings and type contracts (samples/lots-flow.ndjson, made by `ccerx gen-flow
--lots`) gives not_permitted for every IOC/FOK/market/amend line; holding_period for a sell
of a product bought fewer than 5 trading days (end-of-day closes) before, and success on the
fifth; take orders that never pass the best level; type-contract trades that carry the lots
delivered; per-lot holdings that balance to the tonne (deposits = holdings + retired).

Everything is read back from what the CLI writes: --events-out, --book-out, --accounts-out.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from ccerx.engine.core.lots import STANDARD_CONTRACTS

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "lots-flow.ndjson"
SAMPLE_ACCOUNTS = ROOT / "samples" / "lots-accounts.json"
SAMPLE_COMMAND = ("gen-flow", "--seed", "2024", "--commands", "4000", "--lots", "3",
                  "--rules", "cbeex-2023")
HOLDING_DAYS = 5


def ccerx(*args, cwd: Path, timeout=300) -> subprocess.CompletedProcess:
    exe = shutil.which("ccerx") or str(Path(sys.executable).with_name("ccerx"))
    assert os.path.exists(exe), "the ccerx console command is not installed (pip install -e .)"
    return subprocess.run([exe, *map(str, args)], capture_output=True, timeout=timeout, cwd=cwd)


def read_ndjson(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    out = tmp_path_factory.mktemp("lots")
    done = ccerx("replay", SAMPLE, "--accounts", SAMPLE_ACCOUNTS, "--rules", "cbeex-2023",
                 "--events-out", out / "events.ndjson", "--book-out", out / "book.json",
                 "--accounts-out", out / "final.json", "--json", cwd=out)
    assert done.returncode == 0, done.stderr.decode()
    return {"lines": read_ndjson(SAMPLE), "events": read_ndjson(out / "events.ndjson"),
            "book": json.loads((out / "book.json").read_text()),
            "final": json.loads((out / "final.json").read_text()),
            "summary": json.loads(done.stdout)}


def test_the_sample_is_what_gen_flow_writes(tmp_path):
    done = ccerx(*SAMPLE_COMMAND, "--out", tmp_path / "flow.ndjson",
                 "--accounts-out", tmp_path / "accounts.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    assert (tmp_path / "flow.ndjson").read_bytes() == SAMPLE.read_bytes()
    assert (tmp_path / "accounts.json").read_bytes() == SAMPLE_ACCOUNTS.read_bytes()


def test_the_flow_holds_listings_contracts_deposits_takes_retirements_and_closes(replayed):
    ops = Counter(line["op"] for line in replayed["lines"])
    assert ops["instrument"] >= 8 and ops["deposit"] >= 20 and ops["retire"] >= 5
    assert ops["eod"] == 10
    news = [line for line in replayed["lines"] if line["op"] == "new"]
    assert sum(1 for n in news if n["type"] == "take") > 100
    assert sum(1 for n in news if "target" in n) > 20
    instruments = Counter(n["instrument"] for n in news)
    assert sum(v for k, v in instruments.items() if k.startswith("CCER-")) > 300
    assert sum(v for k, v in instruments.items() if not k.startswith("CCER-")) > 300
    projects = {(line["credit_type"], line["project"], line["vintage"])
                for line in replayed["lines"] if line["op"] == "deposit"}
    for credit_type in ("afforestation", "solar_thermal", "offshore_wind", "mangrove"):
        mine = {(p, v) for t, p, v in projects if t == credit_type}
        assert len({p for p, _ in mine}) >= 2 and len({v for _, v in mine}) >= 2
    # mostly accepted: what is rejected is what the rules refuse on purpose
    reasons = Counter(e["reason"] for e in replayed["events"] if e["type"] == "rejected")
    assert set(reasons) == {"not_permitted", "holding_period"}, reasons
    assert not any(e["type"] == "deposit_rejected" for e in replayed["events"])
    assert replayed["summary"]["rules"] == "cbeex-2023"


def test_ioc_fok_market_and_amend_lines_are_not_permitted(replayed):
    refused = {(e["op"], e["order_id"]): e["reason"] for e in replayed["events"]
               if e["type"] == "rejected"}
    special = [line for line in replayed["lines"]
               if line["op"] == "amend" or (line["op"] == "new" and (
                   line.get("tif") in ("ioc", "fok") or line["type"] == "market"))]
    kinds = Counter("amend" if l["op"] == "amend" else l.get("tif") if l["type"] == "limit"
                    else "market" for l in special)
    assert set(kinds) == {"amend", "ioc", "fok", "market"}, kinds
    amends = [l for l in special if l["op"] == "amend"]
    for line in special:
        if line["op"] == "new":
            assert refused.get(("new", line["order_id"])) == "not_permitted", line
    assert sum(1 for e in replayed["events"] if e["type"] == "rejected" and e["op"] == "amend"
               and e["reason"] == "not_permitted") == len(amends)
    assert not any(e["type"] == "amended" for e in replayed["events"])
    accepted = {e["order_id"] for e in replayed["events"] if e["type"] == "accepted"}
    assert not accepted & {l["order_id"] for l in special if l["op"] == "new"}


def test_holding_period_refuses_a_resale_before_the_fifth_trading_day_and_allows_it_on_it(
        replayed):
    lines = {l["order_id"]: l for l in replayed["lines"] if l["op"] == "new"}
    day = 0                              # trading day: end-of-day closes applied so far
    closes_seen = set()
    last_buy: dict = {}
    refused, fifth_day_sells = [], []
    for event in replayed["events"]:
        kind = event["type"]
        if kind == "day_closed":
            if event["ts"] not in closes_seen:
                closes_seen.add(event["ts"])
                day += 1
        elif kind == "trade":
            last_buy[(event["buy_account"], event["instrument"])] = day
        elif kind in ("accepted", "rejected") and event.get("order_id") in lines \
                and event.get("op", "new") == "new":
            line = lines[event["order_id"]]
            if line["side"] != "sell":
                continue
            bought = last_buy.get((line["account"], line["instrument"]))
            if kind == "rejected" and event["reason"] == "holding_period":
                assert bought is not None and day - bought < HOLDING_DAYS, (line, day, bought)
                assert f"trading day {bought + HOLDING_DAYS}" in event["text"]
                refused.append((line["account"], line["instrument"], day - bought))
            elif kind == "accepted":
                assert bought is None or day - bought >= HOLDING_DAYS, (line, day, bought)
                if bought is not None and day - bought == HOLDING_DAYS:
                    fifth_day_sells.append((line["account"], line["instrument"]))
    assert {gap for _, _, gap in refused} == {1, 2, 3, 4}
    assert fifth_day_sells, "no resale accepted on the fifth trading day"
    assert {(a, i) for a, i in fifth_day_sells} <= {(a, i) for a, i, _ in refused}


def test_take_orders_never_pass_the_best_level(replayed):
    """Rebuild every book from the events; at each take, the price it was accepted at is the
    best level of the other side, and every trade it makes is at that price (and, with a
    target, with that listing)."""
    lines = {l["order_id"]: l for l in replayed["lines"] if l["op"] == "new"}
    resting: dict = {}                   # order id -> [instrument, side, price, open qty]
    take = None                          # [order id, price, target] of the take being matched
    takes = traded_takes = 0
    for event in replayed["events"]:
        kind = event["type"]
        if kind == "accepted":
            take = None
            if event["order_type"] == "take":
                takes += 1
                other = "sell" if event["side"] == "buy" else "buy"
                prices = [o[2] for o in resting.values()
                          if o[0] == event["instrument"] and o[1] == other]
                best = (min(prices) if other == "sell" else max(prices)) if prices else None
                price = None if event["price"] is None else Decimal(event["price"])
                assert price == best, (event, best)
                take = [event["order_id"], price, lines[event["order_id"]].get("target")]
            else:
                resting[event["order_id"]] = [event["instrument"], event["side"],
                                              Decimal(event["price"]), event["qty"]]
        elif kind == "trade":
            if take is not None and take[0] in (event["buy_order_id"], event["sell_order_id"]):
                traded_takes += 1
                assert Decimal(event["price"]) == take[1], (event, take)
                maker = event["sell_order_id"] if take[0] == event["buy_order_id"] \
                    else event["buy_order_id"]
                assert take[2] in (None, maker), (event, take)
            for oid in (event["buy_order_id"], event["sell_order_id"]):
                if oid in resting:
                    resting[oid][3] -= event["qty"]
                    if not resting[oid][3]:
                        del resting[oid]
        elif kind == "cancelled":
            resting.pop(event["order_id"], None)
    assert takes > 100 and traded_takes > 100


def test_type_contract_trades_carry_the_lots_they_deliver(replayed):
    events = replayed["events"]
    credit_type = {e["project"]: e["credit_type"] for e in events if e["type"] == "deposited"}
    specs = {e["symbol"]: e for e in events if e["type"] == "instrument"}
    contract_trades = 0
    for trade in (e for e in events if e["type"] == "trade"):
        spec = specs.get(trade["instrument"]) or {
            "credit_type": STANDARD_CONTRACTS[trade["instrument"]]}
        lots = trade["lots"]
        assert sum(lot["qty"] for lot in lots) == trade["qty"]
        if "project" in spec:            # a listing delivers exactly its lot
            assert lots == [{"project": spec["project"], "vintage": spec["vintage"],
                             "qty": trade["qty"]}]
        else:                                # eligible lots in the allocation order
            contract_trades += 1
            assert all(credit_type[lot["project"]] == spec["credit_type"] for lot in lots)
            order = [(lot["vintage"], lot["project"]) for lot in lots]
            assert order == sorted(order), trade
    assert contract_trades > 100
    assert any(len(t.get("lots", ())) > 1 for t in events if t["type"] == "trade")


def test_per_lot_holdings_balance_to_the_tonne(replayed):
    events, final = replayed["events"], replayed["final"]
    deposited, retired_events = Counter(), Counter()
    for e in events:
        if e["type"] == "deposited":
            assert e["asset"] == f"{e['project']}@{e['vintage']}"
            deposited[e["asset"]] += e["amount"]
        elif e["type"] == "retired":
            retired_events[e["asset"]] += e["qty"]
    held, retired = Counter(), Counter()
    for account in final["accounts"]:
        held.update(account["credits"])
        retired.update(account.get("retired", {}))
        assert not account["credits_reserved"]          # the last close expired every order
    assert set(deposited) == set(final["lots"]) - set(
        k for k in final["lots"] if k not in deposited and k not in held)
    for key in deposited:
        assert deposited[key] == held[key] + retired[key], key
    assert set(held) <= set(deposited)
    assert retired == retired_events and sum(retired.values()) > 0
    assert all(not side for book in replayed["book"].values() for side in book.values())


def test_the_same_generator_under_continuous_rules_is_all_accepted(tmp_path):
    done = ccerx("gen-flow", "--seed", "5", "--commands", "3000", "--lots", "2", "--out",
                 tmp_path / "flow.ndjson", "--accounts-out", tmp_path / "accounts.json",
                 cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    done = ccerx("replay", tmp_path / "flow.ndjson", "--accounts", tmp_path / "accounts.json",
                 "--events-out", tmp_path / "events.ndjson", cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    events = read_ndjson(tmp_path / "events.ndjson")
    kinds = Counter(e["type"] for e in events)
    assert "rejected" not in kinds and "deposit_rejected" not in kinds, \
        Counter(e["reason"] for e in events if "reason" in e)
    assert kinds["amended"] and kinds["retired"] and kinds["trade"] > 200


def test_without_lots_gen_flow_writes_the_same_bytes_as_before(tmp_path):
    """The sample pooled flow was made by `ccerx gen-flow --seed 2024 --commands 20000`
    before --lots existed (benchmarks/README.md)."""
    done = ccerx("gen-flow", "--seed", "2024", "--commands", "20000", "--out",
                 tmp_path / "flow.ndjson", "--accounts-out", tmp_path / "accounts.json",
                 cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    assert (tmp_path / "flow.ndjson").read_bytes() == (ROOT / "samples" /
                                                      "sample-flow.ndjson").read_bytes()
    assert (tmp_path / "accounts.json").read_bytes() == (ROOT / "samples" /
                                                        "accounts.json").read_bytes()


@pytest.mark.parametrize("args, said", [
    (("--rules", "cbeex-2023"), "give --lots N as well"),
    (("--days", "3"), "give --lots N as well"),
    (("--lots", "2", "--rate", "10"), "--rate belongs to the pooled one-day model"),
    (("--lots", "2", "--param", "lifetime_s=2"), "with --lots, expected NAME=VALUE"),
    (("--lots", "-1"), "--lots must be >= 0"),
    (("--lots", "2", "--commands", "30"), "needs at least"),
])
def test_gen_flow_lots_options_refused_clearly_and_nothing_written(tmp_path, args, said):
    base = {"--commands": "500"}
    flat = list(args)
    if "--commands" not in flat:
        flat += ["--commands", base["--commands"]]
    done = ccerx("gen-flow", "--seed", "1", *flat, "--out", tmp_path / "flow.ndjson",
                 cwd=tmp_path)
    assert done.returncode == 2 and said in done.stderr.decode(), done.stderr.decode()
    assert not (tmp_path / "flow.ndjson").exists()
