"""The embedded ledger in a process of its own (issue 13 item 4: the settlement relay must not
compete with the event loop for the interpreter lock). Real SQLite, real child processes,
real kill -9 of the ledger's process."""
from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.integration.durable_helpers import assert_ledger_matches, wait_until

from ccerx.benchmarks.durability import accounts_table, flow
from ccerx.engine.durable.exchange import DurableExchange
from ccerx.engine.ledger.process import LedgerProcess
from ccerx.engine.ledger.sqlite import SqliteLedger


def open_files(pid) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            found.add(os.readlink(fd))
        except OSError:
            pass
    return found


def children(pid) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.append(int(entry.name))
    return found


def test_trades_settle_in_the_ledger_process_and_survive_its_kill_9(tmp_path):
    path = tmp_path / "engine" / "ledger.sqlite"
    (tmp_path / "engine").mkdir()
    ledger = LedgerProcess(SqliteLedger, path)
    ex = DurableExchange(tmp_path / "engine", accounts=accounts_table(20), ledger=ledger)
    commands = list(flow(3000, seed=5, n_accounts=20))
    try:
        assert ledger.pid != os.getpid()
        assert str(path) not in open_files(os.getpid())      # SQLite is the child's alone
        assert str(path) in open_files(ledger.pid)
        for i in range(0, 1500, 100):
            ex.apply_many(commands[i:i + 100])
        wait_until(lambda: ex.relays["ledger"].delivered > 0, 20, "a first delivery")
        os.kill(ledger.pid, signal.SIGKILL)                  # the ledger process dies
        for i in range(1500, 3000, 100):
            ex.apply_many(commands[i:i + 100])
        assert ex.wait_settled(60), ex.relays["ledger"].last_error
        assert ledger.starts == 2                            # started again on the same file
        trades = ex.outbox.last_seq
        assert trades > 100
        assert_ledger_matches(ledger, ex.accounts, trades)   # nothing lost, nothing twice
    finally:
        ex.close(settle_timeout=0)
    pid = ledger.pid
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_serve_settles_outside_the_gateway_process(tmp_path, start_serve):
    data = tmp_path / "data"
    server = start_serve("--data-dir", str(data))
    ledger_file = str(data / "ledger.sqlite")
    pid = server.proc.pid
    assert ledger_file not in open_files(pid)
    assert any(ledger_file in open_files(child) for child in children(pid))
