"""A ledger adapter whose ledger lives in a process of its own (issue 13 item 4).

Why. The relay that settles trades into the embedded SQLite ledger runs in the engine's
process; building and running each instruction's SQL is Python work that holds the
interpreter lock, about a quarter of an order's cost in `ccerx serve`, taken from the event
loop that answers brokers. `LedgerProcess(SqliteLedger, path)` starts the ledger in a child
process and forwards every call to it over a pipe: the relay thread only pickles a batch
(C code) and waits for the answer with the lock released.

Contract. Calls are the wrapped ledger's own (deliver, open_accounts, close_statements,
balances, ...), made one at a time, in order; a call returns what the child's call returned or
raises what it raised. If the child dies (killed, crashed) the call in progress raises
LedgerProcessGone and the next call starts a new child on the same file: the relay keeps its
cursor and delivers the batch again, which the ledger applies once (it is idempotent by
instruction seq). The child exits when the parent closes the adapter or dies (end of file on
its pipe), so no ledger outlives its engine.
"""
from __future__ import annotations

import multiprocessing
import signal
import threading
from typing import Optional


class LedgerProcessGone(ConnectionError):
    """The ledger's process died during a call (the call may or may not have been applied)."""


def _serve(conn, factory, args) -> None:
    """The child: build the ledger, answer calls until told to close or the parent goes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # the parent decides when to close
    ledger = factory(*args)
    while True:
        try:
            name, call_args, call_kwargs = conn.recv()
        except (EOFError, OSError):
            break                                      # the parent is gone
        try:
            result = ("ok", getattr(ledger, name)(*call_args, **call_kwargs))
        except BaseException as err:                   # handed to the caller as it is
            result = ("err", err)
        try:
            conn.send(result)
        except Exception as err:                       # e.g. an unpicklable exception
            conn.send(("err", RuntimeError(f"{name}: {result[1]!r} ({err})")))
        if name == "close":
            break
    conn.close()


class LedgerProcess:
    """`factory(*args)` (e.g. SqliteLedger, path) built and run in a child process."""

    def __init__(self, factory, *args):
        self._factory, self._args = factory, args
        self.name = getattr(factory, "name", factory.__name__)
        self.keeps_accounts = getattr(factory, "keeps_accounts", False)
        self._context = multiprocessing.get_context("spawn")   # never fork a threaded engine
        self._lock = threading.Lock()
        self._conn = None
        self._process: Optional[multiprocessing.Process] = None
        self.starts = 0
        self._closed = False
        with self._lock:
            self._start()

    @property
    def pid(self) -> Optional[int]:
        return self._process.pid if self._process is not None else None

    def _start(self) -> None:
        parent, child = self._context.Pipe()
        process = self._context.Process(target=_serve, args=(child, self._factory, self._args),
                                        name=f"ledger-{self.name}", daemon=True)
        process.start()
        child.close()
        self._conn, self._process = parent, process
        self.starts += 1

    def _call(self, name: str, *args, **kwargs):
        with self._lock:
            if self._closed:
                raise ValueError(f"the {self.name} ledger process is closed")
            if self._conn is None:
                self._start()
            try:
                self._conn.send((name, args, kwargs))
                status, value = self._conn.recv()
            except (EOFError, OSError) as err:
                self._conn.close()
                self._conn = None
                self._process.join(5)
                raise LedgerProcessGone(f"the {self.name} ledger process died during "
                                        f"{name}(): {err!r}") from err
        if status == "err":
            raise value
        return value

    # the adapter interface (engine/ledger/base.py), forwarded
    def deliver(self, instructions) -> None:
        self._call("deliver", list(instructions))

    def open_accounts(self, opening) -> int:
        return self._call("open_accounts", list(opening))

    def close_statements(self, trade_date: str, upto_seq: int) -> list:
        return self._call("close_statements", trade_date, upto_seq)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conn, process = self._conn, self._process
            self._conn = None
        if conn is not None:
            try:
                conn.send(("close", (), {}))
                conn.recv()
            except (EOFError, OSError):
                pass
            conn.close()
        if process is not None:
            process.join(10)
            if process.is_alive():
                process.kill()

    def __getattr__(self, name: str):
        # any other method of the ledger (balances, applied_seq, statement, check, ...)
        if name.startswith("_") or not callable(getattr(self._factory, name, None)):
            raise AttributeError(name)
        return lambda *args, **kwargs: self._call(name, *args, **kwargs)
