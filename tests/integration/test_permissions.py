"""Issue 12 item 7: what the exchange keeps is private to its user, whatever the umask.

Journal, snapshots, cursors, statements, FIX message stores, ledger.sqlite (with -wal/-shm)
and opening.json hold orders, balances and broker identities: every directory under a data
directory is 0700 and every file 0600, with umask 022 (the usual) and 000 (the worst)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ccerx.engine.core.commands import EndOfDay, NewOrder
from ccerx.engine.core.types import price_field
from ccerx.engine.durable.exchange import DurableExchange
from ccerx.engine.formats.config import load_instruments
from ccerx.gateway.config import GatewayConfig
from ccerx.gateway.fix.store import FileStore
from tests.fixclient import Broker, s

TS = 1_700_000_000_000_000_000


@pytest.fixture(params=[0o022, 0o000], ids=lambda u: f"umask{u:03o}")
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def loose_modes(root: Path) -> list[str]:
    """Every entry under root (root included) whose mode is not private, as 'path mode'."""
    found = []
    entries = [root] + sorted(root.rglob("*"))
    for path in entries:
        st = os.lstat(path)
        want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
        if stat.S_IMODE(st.st_mode) != want:
            found.append(f"{path.relative_to(root.parent)} {stat.S_IMODE(st.st_mode):o}")
    return found


def kinds(root: Path) -> set[str]:
    return {p.name.split("-")[0].split(".")[-1] for p in root.rglob("*")}


def test_durable_exchange_ledger_and_fix_store_are_private(tmp_path, umask):
    data = tmp_path / "data"
    ex = DurableExchange(data, load_instruments(None), GatewayConfig.demo().build_accounts())
    ex.apply(NewOrder("s1", "HOLD01", "CCER-AFF", "sell", "limit", None, price_field("62.00"),
                      10, TS, "BROKER01"))
    ex.apply(NewOrder("b1", "EMIT02", "CCER-AFF", "buy", "limit", None, price_field("62.00"),
                      10, TS + 1, "BROKER02"))
    ex.apply(EndOfDay(TS + 2))
    ex.snapshot()
    assert ex.wait_settled(30)
    store = FileStore(data / "fix", "CCERX-BROKER01")
    store.set(1, b"8=FIX.4.4\x01")
    store.next_sender = 2
    store.flush()
    store.reset()
    store.close()
    assert loose_modes(data) == []           # while open: -wal and -shm exist
    ex.close()

    # a torn journal tail is moved aside on the next open: that copy is private too
    segment = sorted(data.glob("journal-*.log"))[-1]
    with open(segment, "ab") as f:
        f.write(b"\x07torn")
    ex = DurableExchange(data, load_instruments(None), GatewayConfig.demo().build_accounts())
    ex.close()
    names = {p.name for p in data.rglob("*")}
    assert any(".torn-" in n for n in names)
    assert {"opening.json", "ledger.sqlite", "LOCK", "statements"} <= names
    assert any(n.endswith(".seqnums") for n in names)
    assert any(n.startswith("cursor-") for n in names)
    assert loose_modes(data) == []


def test_a_data_directory_made_readable_is_tightened_on_open(tmp_path):
    data = tmp_path / "data"
    DurableExchange(data, load_instruments(None), GatewayConfig.demo().build_accounts(),
                    ledger=None).close()
    os.chmod(data, 0o755)
    DurableExchange(data, load_instruments(None), GatewayConfig.demo().build_accounts(),
                    ledger=None).close()
    assert loose_modes(data) == []


def test_ccerx_serve_keeps_its_data_private(tmp_path, umask, start_serve):
    data = tmp_path / "srv" / "data"             # two directories the server creates
    server = start_serve("--data-dir", str(data))
    b1, b2 = Broker("BROKER01", server.port), Broker("BROKER02", server.port)
    assert s(b1.logon("demo01"), 35) == "A" and s(b2.logon("demo02"), 35) == "A"
    b2.new_order("s1", "HOLD02", "2", 10, "62.00")
    b2.expect("8")
    b1.new_order("b1", "EMIT01", "1", 10, "62.00")
    ack, fill = b1.reports(2)
    assert s(fill, 150) == "F"
    assert loose_modes(data) == []
    assert os.stat(tmp_path / "srv").st_mode & 0o777 == 0o700
    b1.logout()
    b2.logout()
    assert server.terminate() == 0
    assert (data / "ledger.sqlite").exists() and any((data / "fix").iterdir())
    assert loose_modes(data) == []
