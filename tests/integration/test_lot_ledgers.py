"""Credits as lots end to end with the real services (issue 11 items 1, 2, 7, 8): a contract
trade delivering two lots (and the default lot) and a retirement travel over the real
Mosquitto (127.0.0.1:1883) to a consumer that applies them to the real PostgreSQL
(127.0.0.1:5432, database `test`), which then reconciles with the engine per lot to the tonne.
And a journal written by the engine before lots existed (the commit before them, run from a
`git archive` of it) recovers, settles and reconciles exactly as before, then trades lots."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import io
import uuid
from pathlib import Path

import orjson
import pytest
from tests.integration.durable_helpers import (BROKER, ConsumerThread, forget_session,
                                               service_or_skip, unique_prefix, wait_until)
from tests.integration.test_ledger_postgres import pg_ledger  # noqa: F401 (fixture)
from tests.integration.test_mqtt import Subscriber
from tests.unit.test_lot_settlement import P1, P2, PURPOSE, TS, lot_day, table

from ccerx.engine.core.commands import Deposit, EndOfDay, NewOrder, Retire
from ccerx.engine.core.events import Retired, TradeExecuted
from ccerx.engine.core.lots import lot_key
from ccerx.engine.core.rules import CBEEX_2023, CONTINUOUS
from ccerx.engine.durable import journal as jr
from ccerx.engine.durable.exchange import DurableExchange
from ccerx.engine.durable.settlement import instruction_from_row
from ccerx.engine.ledger.mqtt import MqttPublisher
from ccerx.engine.ledger.mqtt_consumer import SettlementConsumer
from ccerx.engine.ledger.sqlite import SqliteLedger

REPO = Path(__file__).resolve().parents[2]
BEFORE_LOTS = "a114cc3"          # the last commit before credits as lots (ca79dc7)


@pytest.mark.parametrize("rules", [CONTINUOUS, CBEEX_2023], ids=lambda r: r.name)
def test_two_lots_and_a_retirement_over_mosquitto_into_postgres_reconcile_per_lot(
        tmp_path, pg_ledger, rules):  # noqa: F811
    service_or_skip(*BROKER, "Mosquitto")
    ledger = pg_ledger
    prefix = unique_prefix()
    consumer_id = f"cons-{uuid.uuid4().hex[:8]}"
    with Subscriber(prefix) as sub:
        publisher = MqttPublisher(*BROKER, client_id=f"pub-{uuid.uuid4().hex[:8]}",
                                  prefix=prefix)
        ex = DurableExchange(tmp_path / "engine", accounts=table(), ledger=None,
                             adapters={"mqtt": publisher}, rules=rules)
        opening = orjson.loads((tmp_path / "engine" / "opening.json").read_bytes())["accounts"]
        ledger.open_accounts([tuple(r) for r in opening])
        consumer = ConsumerThread(SettlementConsumer(ledger, *BROKER, client_id=consumer_id,
                                                     prefix=prefix, log=lambda t: None)).start()
        try:
            events = lot_day(ex)
            [trade] = [e for e in events if type(e) is TradeExecuted]
            [retired] = [e for e in events if type(e) is Retired]
            assert trade.lots == ((None, None, 5), (P1, 2022, 30), (P2, 2023, 25))
            assert ex.wait_settled(60)
            last = ex.maker.next_seq - 1
            wait_until(lambda: ledger.applied_seq() >= last, 30, "every instruction")
            assert ledger.reconcile(ex.accounts) == []
            assert ledger.balances("EMIT")["EMIT"] == {
                "CNY": ex.accounts.get("EMIT").cash, "CCER-AFF": 5, lot_key(P1, 2022): 10,
                lot_key(P2, 2023): 25}
            [r] = ledger.retirements()
            assert (r["certificate"], r["purpose"], r["holding"], r["qty"]) == (
                retired.certificate, PURPOSE, lot_key(P1, 2022), 20)
            statement = ledger.statement("EMIT", "2026-12-03")
            assert statement["retirements"][0]["certificate"] == retired.certificate
            assert {h["holding"]: h["qty"] for h in statement["holdings"]} == {
                "CCER-AFF": 5, lot_key(P1, 2022): 10, lot_key(P2, 2023): 25}
            wait_until(lambda: any(t == f"{prefix}/settle/RETIRE" for t, _ in sub.received),
                       30, "the retirement on the wire")
        finally:
            consumer.stop()
            ex.close()
            forget_session(*BROKER, consumer_id)
    assert consumer.error is None
    on_wire = {}
    for topic, payload in sub.received:
        on_wire.setdefault(topic, []).append(orjson.loads(payload))
    [retire] = {m["id"]: m for m in on_wire[f"{prefix}/settle/RETIRE"]}.values()
    assert retire["kind"] == "retire" and retire["purpose"] == PURPOSE
    assert retire["certificate"] == retired.certificate
    assert {m["id"] for m in on_wire[f"{prefix}/settle/{lot_key(P1, 2022)}"]} == {"CCERX-D1"}
    [instruction] = {m["id"]: m for m in on_wire[f"{prefix}/settle/CCER-AFF"]}.values()
    assert instruction["lots"] == [{"project": None, "vintage": None, "qty": 5},
                                   {"project": P1, "vintage": 2022, "qty": 30},
                                   {"project": P2, "vintage": 2023, "qty": 25}]
    fills = [m for m in on_wire[f"{prefix}/fills/M2"] if m["type"] == "fill"]
    assert fills and all(f["lots"] == instruction["lots"] for f in fills)
    assert any(m["type"] == "retirement" for m in on_wire[f"{prefix}/fills/M2"])
    if rules is CBEEX_2023:
        [batch] = {m["id"]: m for m in on_wire[f"{prefix}/settle/CLEARING"]}.values()
        assert batch["deliveries"] == [{"id": instruction["id"], "instrument": "CCER-AFF",
                                        "lots": instruction["lots"]}]
        assert batch["lots"] == {"CCER-AFF": 5, lot_key(P1, 2022): 30, lot_key(P2, 2023): 25}


# ---------------------------------------------------------------- a journal from before lots
OLD_WRITER = """
import json, sys
import ccerx.engine as engine
assert engine.__path__[0].startswith(sys.argv[2]), engine.__path__
from ccerx.engine.core.commands import Deposit, EndOfDay, NewOrder
from ccerx.engine.core.risk import Account, Accounts
from ccerx.engine.core.rules import CBEEX_2023, CONTINUOUS
from ccerx.engine.core.types import ParticipantType
from ccerx.engine.durable.exchange import DurableExchange
TS = %d
accounts = Accounts([Account("HOLD", ParticipantType.PROJECT_OWNER, "M1", 0,
                             credits={"CCER-AFF": 5}),
                     Account("EMIT", ParticipantType.KEY_EMISSION_UNIT, "M2", 10_000_000),
                     Account("EMIT2", ParticipantType.KEY_EMISSION_UNIT, "M2", 10_000_000)])
rules = CBEEX_2023 if sys.argv[3] == "cbeex-2023" else CONTINUOUS
ex = DurableExchange(sys.argv[1], accounts=accounts, rules=rules)
for c in (Deposit("ISS-1", "HOLD", "CCER-AFF", 300, TS),
          Deposit("F-1", "EMIT2", "CNY", 12_345, TS + 1),
          NewOrder("s1", "HOLD", "CCER-AFF", "sell", "limit", "day", 62_000_000, 200, TS + 2),
          NewOrder("b1", "EMIT", "CCER-AFF", "buy", "limit", "day", 62_000_000, 120, TS + 3),
          NewOrder("b2", "EMIT2", "CCER-AFF", "buy", "limit", "day", 62_000_000, 30, TS + 4),
          EndOfDay(TS + 3_600_000_000_000)):
    ex.apply(c)
assert ex.wait_settled(30)
print(json.dumps({"hash": ex.state_hash(), "balances": ex.ledger.balances(),
                  "last": ex.maker.next_seq - 1}))
ex.close()
"""


def old_engine(tmp_path: Path) -> Path:
    """The engine package of the commit before lots, importable as ccerx.engine."""
    try:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", BEFORE_LOTS, "engine"],
                                 capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"no git history to take the engine before lots from: {err}")
    source = tmp_path / "old-source"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(source, filter="data")
    package = tmp_path / "old-package" / "ccerx"
    package.mkdir(parents=True)
    (package / "engine").symlink_to(source / "engine")
    return package.parent


@pytest.mark.parametrize("rules", [CONTINUOUS, CBEEX_2023], ids=lambda r: r.name)
def test_a_pooled_journal_from_before_lots_recovers_and_reconciles_as_before(tmp_path, rules):
    package = old_engine(tmp_path)
    data = tmp_path / "d"
    env = {**os.environ, "PYTHONPATH": str(package)}
    done = subprocess.run([sys.executable, "-c", OLD_WRITER % TS, str(data), str(package),
                           rules.name], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    old = json.loads(done.stdout)
    [old_statements] = [p.read_bytes() for p in (data / "statements").iterdir()]
    ex = DurableExchange(data, accounts=table(), rules=rules)
    try:
        assert ex.state_hash() == old["hash"]
        assert ex.wait_settled(10)
        ledger = ex.ledger
        assert ledger.balances() == old["balances"] and ledger.applied_seq() == old["last"]
        assert ledger.reconcile(ex.accounts) == []
        # every instruction the new code reads back from the old journal is, byte for byte,
        # the one the old ledger holds (the ledger refuses an id with other content)
        scanned = jr.scan(data)
        rows = [row for record in scanned.records for row in record.instructions]
        assert len(rows) == old["last"]
        ledger.deliver([instruction_from_row(row) for row in rows])
        # the old close's statements, asked again, are what the old ledger wrote
        st = orjson.loads(old_statements)
        assert ledger.close_statements(st["trade_date"], st["upto_seq"]) == st["statements"]
        assert "holdings" not in st["statements"][0]
        # and the old books go on with lots: deposits, a contract trade of lots, a retirement
        day2 = TS + 86_400_000_000_000
        for command in (
                Deposit("ISS-2", "HOLD", None, 40, day2, None, "afforestation", P1, 2022),
                NewOrder("s2", "HOLD", "CCER-AFF", "sell", "limit", "day", 62_000_000, 180,
                         day2 + 1),      # the default lot (155 t) first, then 25 t of P1 2022
                NewOrder("b3", "EMIT2", "CCER-AFF", "buy", "limit", "day", 62_000_000, 180,
                         day2 + 2),
                EndOfDay(day2 + 3_600_000_000_000),
                Retire("R-1", "EMIT2", P1, 2022, 10, PURPOSE, None, day2 + 3_700_000_000_000)):
            ex.apply(command)
        assert ex.wait_settled(10)
        assert ledger.reconcile(ex.accounts) == []
        assert ledger.balance("EMIT2", lot_key(P1, 2022)) == 15
        assert ledger.balance("EMIT2", "CCER-AFF") == 30 + 155
        hash_after = ex.state_hash()
    finally:
        ex.close()
    again = DurableExchange(data, accounts=table(), rules=rules)
    try:
        assert again.state_hash() == hash_after
        assert again.wait_settled(10)
        assert again.ledger.reconcile(again.accounts) == []
    finally:
        again.close()
    ledger = SqliteLedger(data / "ledger.sqlite")
    try:
        assert len(ledger.retirements()) == 1
    finally:
        ledger.close()
