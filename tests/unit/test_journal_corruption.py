"""Corruption in the middle of the newest journal segment is not a torn tail: recovery
refuses (nothing acknowledged is cut) and leaves the directory exactly as it was."""
import subprocess
import sys
from pathlib import Path

import pytest

from ccerx.engine.core.commands import NewOrder
from ccerx.engine.durable.exchange import DurableExchange
from ccerx.engine.durable.recovery import RecoveryRefused
from ccerx.engine.core.types import DEFAULT_INSTRUMENTS


def fill(data_dir: Path, n: int) -> None:
    ex = DurableExchange(data_dir, DEFAULT_INSTRUMENTS, None)
    for i in range(n):
        ex.apply(NewOrder(f"o{i}", "A", "CCER-AFF", "buy" if i % 2 else "sell", "limit", None,
                          (6100 + i % 50) * 10_000 if i % 2 else (6200 + i % 50) * 10_000, 1,
                          i))
    ex.close()


def snapshot_of(directory: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_a_flipped_bit_before_later_records_refuses_recovery_and_changes_nothing(tmp_path):
    fill(tmp_path, 200)
    [segment] = sorted(tmp_path.glob("journal-*.log"))
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 1
    segment.write_bytes(bytes(data))
    before = snapshot_of(tmp_path)
    with pytest.raises(RecoveryRefused, match="corrupt record"):
        DurableExchange(tmp_path, DEFAULT_INSTRUMENTS, None)
    assert snapshot_of(tmp_path) == before


def test_a_torn_last_record_is_still_cut_and_reported(tmp_path):
    fill(tmp_path, 200)
    [segment] = sorted(tmp_path.glob("journal-*.log"))
    segment.write_bytes(segment.read_bytes()[:-3])   # the last write, torn
    ex = DurableExchange(tmp_path, DEFAULT_INSTRUMENTS, None)
    assert ex.recovery.torn is not None and not ex.recovery.torn.corrupt
    assert ex.recovery.last_seq == 199
    ex.close()


def test_the_command_line_says_why_without_a_traceback(tmp_path):
    fill(tmp_path, 50)
    [segment] = sorted(tmp_path.glob("journal-*.log"))
    data = bytearray(segment.read_bytes())
    data[len(data) // 3] ^= 1
    segment.write_bytes(bytes(data))
    done = subprocess.run([sys.executable, "-m", "ccerx.scripts.ccerx", "recover", "--data-dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 2
    assert "corrupt record" in done.stderr and "Traceback" not in done.stderr


def test_a_journal_shorter_than_what_the_ledger_confirmed_refuses_recovery(tmp_path):
    """A journal cut back (a segment restored from an old backup, say) below what the ledger
    relay already confirmed has lost acknowledged, settled commands: refuse, clearly."""
    from ccerx.benchmarks.durability import accounts_table, flow
    ex = DurableExchange(tmp_path, accounts=accounts_table(10), start_relays=False)
    ex.apply_many(list(flow(800, seed=5, n_accounts=10)))
    ex.relays["ledger"].drain()
    confirmed = ex.relays["ledger"].cursor.value
    ex.close()
    [segment] = sorted(tmp_path.glob("journal-*.log"))
    data = segment.read_bytes()
    segment.write_bytes(data[:len(data) * 2 // 3])          # whole records lost, a torn tail
    before = snapshot_of(tmp_path)
    with pytest.raises(RecoveryRefused, match=f"confirmed instruction {confirmed}"):
        DurableExchange(tmp_path)
    assert snapshot_of(tmp_path) == before                   # nothing cut, nothing moved
    done = subprocess.run([sys.executable, "-m", "ccerx.scripts.ccerx", "recover", "--data-dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "beyond the journal's last" in done.stderr
