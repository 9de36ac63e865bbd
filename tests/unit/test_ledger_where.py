"""Where a ledger is (engine/ledger/where.py): a SQLite path or a postgresql:// URL."""
from __future__ import annotations

import subprocess
import sys

import pytest

from ccerx.engine.ledger import where
from ccerx.engine.ledger.sqlite import SqliteLedger


def test_a_path_is_a_sqlite_file_and_a_url_is_a_database(tmp_path):
    assert not where.is_database_url(str(tmp_path / "ledger.sqlite"))
    assert where.is_database_url("postgresql://postgres@127.0.0.1/test")
    assert where.is_database_url("postgres://db.example/ledger")
    ledger = where.open_ledger(tmp_path / "ledger.sqlite")
    try:
        assert isinstance(ledger, SqliteLedger) and (tmp_path / "ledger.sqlite").is_file()
    finally:
        ledger.close()


def test_the_schema_is_ours_and_the_rest_goes_to_the_driver():
    url, schema = where.split_database_url(
        "postgresql://u@h:5433/db?connect_timeout=3&schema=ccerx_day1&sslmode=require")
    assert schema == "ccerx_day1"
    assert url == "postgresql://u@h:5433/db?connect_timeout=3&sslmode=require"
    assert where.split_database_url("postgresql://u@h/db") == ("postgresql://u@h/db",
                                                                 where.DEFAULT_SCHEMA)
    with pytest.raises(ValueError, match="one schema"):
        where.split_database_url("postgresql://u@h/db?schema=a&schema=b")
    with pytest.raises(ValueError, match="name the host or the database"):
        where.split_database_url("postgresql://")


def test_a_password_is_never_shown():
    shown = where.describe("postgresql://ops:s3cret@db.example:5432/ledger?schema=x")
    assert "s3cret" not in shown and shown == "postgresql://ops:***@db.example:5432/ledger?schema=x"
    assert where.describe("/var/ccerx/ledger.sqlite") == "/var/ccerx/ledger.sqlite"


def test_a_bad_schema_is_refused_before_connecting():
    with pytest.raises(ValueError, match="lower-case SQL identifier"):
        where.open_ledger('postgresql://u@127.0.0.1:1/db?schema=x";drop')


def test_ledger_queries_name_an_unreachable_database_without_its_password():
    done = subprocess.run([sys.executable, "-m", "ccerx.scripts.ccerx", "ledger", "balances",
                           "--db", "postgresql://ops:s3cret@127.0.0.1:1/test?connect_timeout=2"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "postgresql://ops:***@127.0.0.1:1/test" in done.stderr
    assert "s3cret" not in done.stderr + done.stdout


def test_serve_names_an_unreachable_ledger_database_without_its_password(tmp_path):
    """`ccerx serve --ledger URL` with a server that does not answer: one clear line, exit 2,
    no traceback, no password (libpq quotes parts of the URL in its own error)."""
    done = subprocess.run([sys.executable, "-m", "ccerx.scripts.ccerx", "serve", "--port", "0",
                           "--data-dir", str(tmp_path / "data"), "--control", "none",
                           "--ledger", "postgresql://ops:s3cr%ZZet@127.0.0.1:1/test"
                                       "?connect_timeout=2&password=hunter2"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "the ledger at postgresql://" in done.stderr
    assert "s3cr" not in done.stderr + done.stdout and "hunter2" not in done.stderr


def test_a_bad_database_url_is_named_once_as_written():
    done = subprocess.run([sys.executable, "-m", "ccerx.scripts.ccerx", "ledger", "balances",
                           "--db", "postgresql://"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == "ccerx ledger: postgresql://: name the host or the database"
