"""The PostgreSQL ledger against the real server (127.0.0.1:5432, database `test`).

Each test gets its own schema (dropped afterwards), so runs never collide. With
CCERX_REQUIRE_SERVICES=1 an unreachable server is a failure, otherwise a skip."""
from __future__ import annotations

import os
import uuid

import pytest

from tests.unit.ledger_contract import LedgerContract

from ccerx.benchmarks.durability import accounts_table, flow  # noqa: E402
from ccerx.engine.durable.exchange import DurableExchange  # noqa: E402

DSN = os.environ.get("CCERX_PG_DSN", "host=127.0.0.1 port=5432 dbname=test user=postgres "
                                     "connect_timeout=3")


def postgres_ledger(schema: str):
    try:
        from ccerx.engine.ledger.postgres import PostgresLedger
        return PostgresLedger(DSN, schema=schema)
    except Exception as err:     # psycopg.OperationalError and friends: server unreachable
        message = f"PostgreSQL not reachable ({DSN}): {err}"
        if os.environ.get("CCERX_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def pg_ledger():
    schema = f"t_{uuid.uuid4().hex[:12]}"
    ledger = postgres_ledger(schema)
    yield ledger
    if not ledger.conn.closed:       # a DurableExchange closes the adapters it was given
        ledger.close()
    cleaner = postgres_ledger(schema)
    cleaner.drop()
    cleaner.close()


class TestPostgresLedger(LedgerContract):
    @pytest.fixture
    def ledger(self, pg_ledger):
        return pg_ledger


def test_engine_settles_into_postgres(tmp_path, pg_ledger):
    ex = DurableExchange(tmp_path, accounts=accounts_table(20), ledger=pg_ledger)
    commands = list(flow(2000, seed=31, n_accounts=20))
    for i in range(0, 2000, 250):
        ex.apply_many(commands[i:i + 250])
    assert ex.wait_settled(30)
    pg_ledger.check()
    assert pg_ledger.settlement_count() == ex.outbox.last_seq > 50
    for account in ex.accounts.by_id.values():
        assert pg_ledger.balance(account.account, "CNY") == account.cash
        for symbol, qty in account.credits.items():
            assert pg_ledger.balance(account.account, symbol) == qty
    # the relay's cursor survives; reopening delivers nothing twice
    ex.close()
    again = postgres_ledger(pg_ledger.schema)
    ex = DurableExchange(tmp_path, ledger=again)
    assert ex.recovery.pending["ledger"] == 0
    assert again.settlement_count() == ex.outbox.last_seq
    ex.close(settle_timeout=0)


def test_two_ledgers_in_one_database_do_not_collide(pg_ledger):
    from tests.unit.ledger_contract import OPENING, instruction
    other = postgres_ledger(f"t_{uuid.uuid4().hex[:12]}")
    try:
        pg_ledger.open_accounts(OPENING)
        other.open_accounts(OPENING)
        pg_ledger.deliver([instruction(1)])
        assert pg_ledger.applied_seq() == 1 and other.applied_seq() == 0
    finally:
        other.drop()
        other.close()


def test_ledger_commands_read_a_postgresql_ledger_by_url(pg_ledger):
    """`ccerx ledger --db postgresql://...?schema=S` reads that schema's ledger; a schema with
    no ledger is refused and not created (a query never makes an empty ledger)."""
    import subprocess
    import sys
    from tests.unit.ledger_contract import OPENING, instruction
    pg_ledger.open_accounts(OPENING)
    pg_ledger.deliver([instruction(1)])
    url = "postgresql://postgres@127.0.0.1:5432/test?connect_timeout=3&schema="

    def ccerx(*args):
        return subprocess.run([sys.executable, "-m", "ccerx.scripts.ccerx", "ledger", *args],
                              capture_output=True, text=True, timeout=60)
    done = ccerx("check", "--db", url + pg_ledger.schema)
    assert done.returncode == 0 and done.stdout.startswith("ok: 1 settlement"), done.stderr
    done = ccerx("balances", "--db", url + pg_ledger.schema, "--json")
    assert done.returncode == 0 and OPENING[0][0] in done.stdout, done.stderr
    missing = f"t_{uuid.uuid4().hex[:12]}"
    done = ccerx("balances", "--db", url + missing)
    assert done.returncode == 2 and f"no ccerx ledger in schema {missing!r}" in done.stderr
    exists = pg_ledger.conn.execute("SELECT 1 FROM information_schema.schemata "
                                    "WHERE schema_name = %s", (missing,)).fetchall()
    assert exists == []
