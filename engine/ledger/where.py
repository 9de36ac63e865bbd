"""Where a ledger is, as a user writes it (`ccerx serve --ledger`, `ccerx ledger --db`).

    ledger.sqlite                                 a SQLite file (the embedded default)
    postgresql://USER@HOST:PORT/DB?schema=NAME    a PostgreSQL database (psycopg's URL; also
                                                  postgres://); `schema` (default ccerx_ledger)
                                                  is the ledger's own schema, created if missing

A PostgreSQL ledger is the one the nodes of a cluster on several machines share: a SQLite file
lives on one machine. The URL's password, if any (`user:password@` or `?password=`), is
never printed: `describe` shows the URL without it and `scrub` takes it out of a driver's
error message.
"""
from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

DATABASE_SCHEMES = ("postgresql://", "postgres://")
DEFAULT_SCHEMA = "ccerx_ledger"


def is_database_url(where: str) -> bool:
    return str(where).startswith(DATABASE_SCHEMES)


def split_database_url(where: str) -> tuple[str, str]:
    """(the URL psycopg connects with, the schema); ValueError for a URL it cannot be."""
    parts = urlsplit(where)
    if not parts.hostname and not parts.path.strip("/"):
        raise ValueError(f"{describe(where)}: name the host or the database")
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in query if key == "schema"]
    if len(schemas) > 1:
        raise ValueError(f"{describe(where)}: one schema= only")
    schema = schemas[0] if schemas else DEFAULT_SCHEMA
    rest = urlencode([(key, value) for key, value in query if key != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


def _passwords(where: str) -> list:
    """The password(s) a database URL carries, as written and decoded (userinfo, ?password=)."""
    parts = urlsplit(where)
    found = [parts.password] if parts.password else []
    found += [value for key, value in parse_qsl(parts.query, keep_blank_values=True)
              if key == "password" and value]
    for raw in [word for word in parts.query.split("&") if word.startswith("password=")]:
        found.append(raw[len("password="):])
    found += [unquote(word) for word in found]
    return sorted({word for word in found if word}, key=len, reverse=True)


def scrub(text: str, where: str) -> str:
    """`text` (a driver's error, say) without the password(s) of the URL `where`."""
    for word in _passwords(str(where)):
        text = text.replace(word, "***")
    return text


def describe(where: str) -> str:
    """`where` fit to print: a database URL without its password (userinfo or ?password=)."""
    where = str(where)
    if not is_database_url(where):
        return where
    if not _passwords(where):
        return where                   # (as written: urlunsplit would also drop an empty //)
    parts = urlsplit(where)
    if parts.password is not None:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1))
    query = [(key, "***" if key == "password" else value)
             for key, value in parse_qsl(parts.query, keep_blank_values=True)]
    shown = urlunsplit(parts._replace(query=urlencode(query, safe="*")))
    return scrub(shown, where)


def open_ledger(where):
    """The ledger at `where` (a SQLite path or a database URL), created if missing.
    ValueError for a bad URL or schema; the driver's own error if the server is unreachable."""
    if is_database_url(str(where)):
        from ccerx.engine.ledger.postgres import PostgresLedger
        conninfo, schema = split_database_url(str(where))
        try:
            return PostgresLedger(conninfo, schema=schema)
        except ValueError:
            raise
        except Exception as err:       # the driver's words may quote the password
            raise ConnectionError(f"the ledger at {describe(where)}: "
                                  f"{scrub(str(err), where)}") from None
    from ccerx.engine.ledger.sqlite import SqliteLedger
    return SqliteLedger(where)


def missing_database_ledger(where: str):
    """Why the database ledger at `where` does not exist (None if it does), without creating
    anything: a query must never make an empty ledger out of a mistyped schema."""
    import psycopg
    conninfo, schema = split_database_url(where)
    try:
        conn = psycopg.connect(conninfo, autocommit=True)
    except Exception as err:          # the driver's words may quote the password
        raise ConnectionError(f"the ledger at {describe(where)}: "
                              f"{scrub(str(err), where)}") from None
    with conn:
        found = {row[0] for row in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (schema,))}
    if not {"accounts", "postings", "settlements"} <= found:
        return f"no ccerx ledger in schema {schema!r} of that database"
    return None
