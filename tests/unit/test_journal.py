"""The write-ahead journal, snapshots and recovery of the durable exchange."""
from __future__ import annotations

import os

import pytest

from ccerx.benchmarks.durability import accounts_table, flow
from ccerx.engine.durable import journal as jr
from ccerx.engine.durable import snapshot as snap
from ccerx.engine.core.commands import (AmendOrder, CancelOrder, DefineInstrument, EndOfDay, Malformed,
                             NewOrder)
from ccerx.engine.durable.exchange import DurableExchange, JournalFailed
from ccerx.engine.core.exchange import Exchange
from ccerx.engine.core.types import InstrumentSpec, PriceError, RejectReason

COMMANDS = [
    NewOrder("o1", "A1", "CCER-AFF", "buy", "limit", "day", 62_010_000, 100, 17, "B1"),
    NewOrder("o2", "A1", "CCER-AFF", "sell", "market", None, None, 5, None, None),
    NewOrder("o3", "A1", "CCER-AFF", "buy", "limit", "day",
             PriceError(RejectReason.OFF_TICK, "price '62.001' is not a multiple"), 5, 1),
    NewOrder("o4", 7, ["x"], {"a": 1}, 1.5, True, None, 2.0, 3),      # raw edge junk: pickled
    NewOrder("o5", "A1", "CCER-AFF", "buy", "limit", "day", 1 << 70, 1, 1),  # huge int: pickled
    CancelOrder("o1", 18, "B1"),
    CancelOrder(None),
    AmendOrder("o1", None, 80, 19, None),
    AmendOrder("o1", PriceError(RejectReason.INVALID_PRICE, "bad"), None, 20, "B2"),
    DefineInstrument(InstrumentSpec.from_fields("CCER-NEW", tick="0.05", ref_price="10.05",
                                                band_pct="7.5", name="new"), 21),
    EndOfDay(22),
    EndOfDay(),
    Malformed(None, None, "line is not valid JSON"),
    Malformed("new", "o9", "bad", 23),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: type(c).__name__)
def test_command_codec_is_exact(command):
    back = jr.decode_command(jr.encode_command(command))
    assert back == command
    assert type(back) is type(command)
    assert [type(v) for v in back] == [type(v) for v in command]


def test_unknown_command_type_raises():
    with pytest.raises(TypeError):
        jr.encode_command(("not", "a", "command"))


def _write(directory, batches):
    scanned = jr.scan(directory)
    journal = jr.Journal.open_for_append(directory, scanned)
    for rows in batches:
        journal.append([jr.encode_command(c) for c in rows], [])
    journal.commit()
    journal.close()
    return journal


def test_records_roundtrip_in_order(tmp_path):
    _write(tmp_path, [COMMANDS[:3], COMMANDS[3:7], COMMANDS[7:]])
    scanned = jr.scan(tmp_path)
    assert scanned.torn is None
    assert scanned.last_seq == len(COMMANDS)
    assert [r.first_seq for r in scanned.records] == [1, 4, 8]
    assert list(jr.iter_commands(scanned.records)) == COMMANDS


@pytest.mark.parametrize("damage", ["cut_payload", "cut_header", "flip_byte", "garbage"])
def test_torn_tail_stops_at_last_whole_record(tmp_path, damage):
    _write(tmp_path, [COMMANDS[:3], COMMANDS[3:7], COMMANDS[7:]])
    (segment,) = jr.segment_paths(tmp_path)
    data = segment.read_bytes()
    ends = []
    pos = len(jr.MAGIC)
    for _ in range(3):
        length = int.from_bytes(data[pos:pos + 4], "little")
        pos += jr.HEADER_SIZE + length
        ends.append(pos)
    last_start = ends[1]
    if damage == "cut_payload":
        segment.write_bytes(data[:-5])
    elif damage == "cut_header":
        segment.write_bytes(data[:last_start + 10])
    elif damage == "flip_byte":
        segment.write_bytes(data[:-3] + bytes([data[-3] ^ 0xFF]) + data[-2:])
    else:
        segment.write_bytes(data + b"\x07" * 40)
        last_start = ends[2]
    scanned = jr.scan(tmp_path)
    assert scanned.torn is not None and scanned.torn.offset == last_start
    expect = 14 if damage == "garbage" else 7
    assert scanned.last_seq == expect
    # reopening cuts the tail off, keeps it aside, and appends after the last whole record
    journal = jr.Journal.open_for_append(tmp_path, scanned)
    assert journal.next_seq == expect + 1
    journal.append([jr.encode_command(EndOfDay(99))], [])
    journal.commit()
    journal.close()
    again = jr.scan(tmp_path)
    assert again.torn is None and again.last_seq == expect + 1
    assert list(tmp_path.glob("journal-*.log.torn-*"))


def _ref(commands):
    ex = Exchange(accounts=accounts_table(20))
    for c in commands:
        ex.apply(c)
    return ex


def test_recovery_reproduces_state_hash_with_and_without_snapshots(tmp_path):
    commands = list(flow(6000, seed=5, n_accounts=20, day_length=2500))
    for every in (10 ** 9, 1000):
        directory = tmp_path / f"every{every}"
        ex = DurableExchange(directory, accounts=accounts_table(20), ledger=None,
                             snapshot_every=every)
        for i in range(0, 4000, 250):
            ex.apply_many(commands[i:i + 250])
        mid_hash = ex.state_hash()
        ex.close()
        back = DurableExchange(directory, ledger=None, snapshot_every=every)
        assert back.recovery.last_seq == 4000
        assert back.state_hash() == mid_hash == _ref(commands[:4000]).state_hash()
        if every == 1000:
            assert back.recovery.snapshot_seq == 4000 and back.recovery.replayed == 0
        else:
            assert back.recovery.snapshot_seq == 0 and back.recovery.replayed == 4000
        back.check()
        back.apply(commands[4000])
        back.apply_many(commands[4001:])
        final = back.state_hash()
        back.close()
        assert final == _ref(commands).state_hash()


def test_snapshot_restores_exact_state(tmp_path):
    commands = list(flow(3000, seed=9, n_accounts=20))
    ex = _ref(commands)
    snap.write(tmp_path, 3000, ex, {"settlement": {}})
    seq, restored, extra = snap.restore(snap.snapshot_path(tmp_path, 3000))
    assert seq == 3000 and restored.state_hash() == ex.state_hash()
    restored.check()
    # and it behaves the same afterwards
    more = list(flow(500, seed=10, n_accounts=20))
    assert [restored.apply(c) for c in more] == [ex.apply(c) for c in more]


def test_corrupt_latest_snapshot_falls_back_to_an_older_one(tmp_path):
    commands = list(flow(3000, seed=2, n_accounts=20))
    ex = DurableExchange(tmp_path, accounts=accounts_table(20), ledger=None, snapshot_every=1000)
    for i in range(0, 3000, 500):
        ex.apply_many(commands[i:i + 500])
    expected = ex.state_hash()
    ex.close()
    newest = snap.list_snapshots(tmp_path)[-1][1]
    data = bytearray(newest.read_bytes())
    data[-10] ^= 0x55
    newest.write_bytes(bytes(data))
    back = DurableExchange(tmp_path, ledger=None, log=lambda text: None)
    assert back.recovery.skipped_snapshots and back.recovery.snapshot_seq == 2000
    assert back.state_hash() == expected
    back.close()


def test_nothing_is_acknowledged_before_it_is_in_the_journal(tmp_path):
    ex = DurableExchange(tmp_path, accounts=accounts_table(20), ledger=None)
    commands = list(flow(300, seed=3, n_accounts=20))
    for n, command in enumerate(commands, 1):
        ex.apply(command)
        # another reader sees the command as soon as apply returned
        if n % 50 == 0:
            assert jr.scan(tmp_path).last_seq == n
    ex.close()


def test_failed_journal_write_stops_the_engine(tmp_path):
    ex = DurableExchange(tmp_path, accounts=accounts_table(20), ledger=None)
    commands = list(flow(20, seed=3, n_accounts=20))
    ex.apply(commands[0])
    os.close(ex.journal.fd)              # the disk goes away
    with pytest.raises(JournalFailed):
        ex.apply(commands[1])
    with pytest.raises(JournalFailed):   # and it stays refused: memory is ahead of the disk
        ex.apply(commands[2])
    ex.journal.fd = None
    ex.close()
    back = DurableExchange(tmp_path, ledger=None)
    assert back.recovery.last_seq == 1
    assert back.state_hash() == _ref(commands[:1]).state_hash()
    back.close()


def test_data_directory_is_locked(tmp_path):
    ex = DurableExchange(tmp_path, ledger=None)
    with pytest.raises(RuntimeError, match="open in another process"):
        DurableExchange(tmp_path, ledger=None)
    ex.close()


def test_existing_directory_ignores_other_config_and_says_so(tmp_path):
    DurableExchange(tmp_path, accounts=accounts_table(20), ledger=None).close()
    back = DurableExchange(tmp_path, accounts=accounts_table(5), ledger=None)
    assert back.recovery.config_ignored
    assert len(back.accounts.by_id) == 20
    back.close()


def test_missing_journal_segment_is_refused_not_replayed_around(tmp_path):
    commands = list(flow(3000, seed=2, n_accounts=20))
    ex = DurableExchange(tmp_path, accounts=accounts_table(20), ledger=None, snapshot_every=1000)
    for i in range(0, 3000, 500):
        ex.apply_many(commands[i:i + 500])
    ex.close()
    for seq, path in snap.list_snapshots(tmp_path)[1:]:
        path.unlink()                                   # only the genesis snapshot is left
    (tmp_path / "journal-0000000000001001.log").unlink()
    with pytest.raises(RuntimeError, match="journal damaged before its last segment"):
        DurableExchange(tmp_path, ledger=None)
    # the gap check behind it: a snapshot followed by a journal that starts too late
    (tmp_path / "journal-0000000000000001.log").unlink()
    with pytest.raises(RuntimeError, match="lacks commands 1-2000"):
        DurableExchange(tmp_path, ledger=None)
