"""The embedded default ledger: one SQLite file, WAL, synchronous=FULL (see sql.py).

A confirmed `deliver()` has been committed with a full fsync, so the relay may advance its
cursor. One connection, used under a lock, so the relay thread and queries from other threads
can share the object.
"""
from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path

from ccerx.engine.durable.files import make_private, private_sqlite, sqlite_companions
from ccerx.engine.ledger.sql import SqlLedger


class SqliteLedger(SqlLedger):
    name = "sqlite"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.RLock()
        private_sqlite(self.path)     # 0600 before sqlite creates it (and its -wal, -shm) 0644
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                    timeout=30.0)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self._create_schema()
        make_private(*sqlite_companions(self.path))

    def q(self, sql: str) -> str:
        return sql.replace("{p}", "")

    def _execute(self, sql: str, params=()):
        return self.conn.execute(sql, params)

    @contextlib.contextmanager
    def _tx(self):
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self.conn.close()
