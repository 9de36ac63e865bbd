"""The same ledger on PostgreSQL (psycopg 3), for an exchange that outgrows one file.

Same schema, invariants and idempotency as the SQLite ledger (sql.py holds both). Tables can
live in their own schema (`schema=`), created if missing, so several ledgers (or test runs)
share one database without colliding. A confirmed `deliver()` is a committed transaction.
"""
from __future__ import annotations

import contextlib
import re
import threading

try:
    import psycopg
except ImportError as err:       # an optional part: pip install "ccerx[postgres]"
    raise ImportError('the PostgreSQL ledger needs psycopg: pip install "ccerx[postgres]"') from err

from ccerx.engine.ledger.sql import SqlLedger

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresLedger(SqlLedger):
    name = "postgres"

    def __init__(self, conninfo: str = "host=127.0.0.1 port=5432 dbname=test user=postgres",
                 schema: str = "ccerx_ledger"):
        if not _IDENT.match(schema):
            raise ValueError(f"schema must be a lower-case SQL identifier, not {schema!r}")
        self.schema = schema
        self._lock = threading.RLock()
        self.conn = psycopg.connect(conninfo, autocommit=True)
        self.conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        self._create_schema()

    def q(self, sql: str) -> str:
        return sql.replace("{p}", f'"{self.schema}".').replace("?", "%s")

    def _execute(self, sql: str, params=()):
        return self.conn.execute(sql, params)

    @contextlib.contextmanager
    def _tx(self):
        with self._lock, self.conn.transaction():
            yield

    def _create_schema(self) -> None:
        # index names are schema-local in PostgreSQL and must not carry the schema prefix
        from ccerx.engine.ledger.sql import SCHEMA
        with self._tx():
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    if "CREATE INDEX" in statement:
                        statement = statement.replace("INDEX IF NOT EXISTS {p}", "INDEX IF NOT EXISTS ")
                    self._execute(self.q(statement))

    def drop(self) -> None:
        """Remove the schema and everything in it (tests)."""
        with self._lock:
            self.conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

    def close(self) -> None:
        with self._lock:
            self.conn.close()
