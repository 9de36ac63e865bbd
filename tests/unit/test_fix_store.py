"""The FIX file store recovers exactly what was committed by a flush."""
from ccerx.gateway.fix.store import FileStore


def test_messages_spilled_to_disk_but_never_flushed_are_not_resent_after_a_crash(tmp_path):
    store = FileStore(tmp_path, "S")
    store.set(1, b"first")
    store.next_sender = 2
    store.flush()                                  # committed: seq 1
    store.set(2, b"phantom")                       # a later batch...
    store._body.flush()
    store._index.flush()                           # ...whose buffers spilled, then a crash
    reopened = FileStore(tmp_path, "S")
    assert reopened.next_sender == 2
    assert reopened.get(1, 10) == [(1, b"first")]
    reopened.set(2, b"real")                       # the number is reused for what is sent next
    reopened.next_sender = 3
    reopened.flush()
    assert FileStore(tmp_path, "S").get(1, 10) == [(1, b"first"), (2, b"real")]


import pytest

from ccerx.gateway.fix.store import StoreCorrupt


def _committed(tmp_path, next_sender=3, next_target=5):
    store = FileStore(tmp_path, "S")
    for seq in range(1, next_sender):
        store.set(seq, b"msg%d" % seq)
    store.next_sender, store.next_target = next_sender, next_target
    store.flush()
    store.close()


@pytest.mark.parametrize("content", [
    b"00000000000000000003 0000000000000000000500000\n",            # trailing bytes of a longer write
    b"00000000000000000003 00000000000000000005\n0000000000\n",
    b"3 5 7\n", b"3\n", b"garbage\n", b"0 0\n", b"\x00" * 42,
    b"1" * 25 + b" 5\n",                                             # beyond 20 digits
])
def test_a_corrupt_seqnums_file_stops_the_store_from_opening_instead_of_starting_at_1(tmp_path, content):
    _committed(tmp_path)
    (tmp_path / "S.seqnums").write_bytes(content)
    with pytest.raises(StoreCorrupt) as refused:
        FileStore(tmp_path, "S")
    assert "S.seqnums" in str(refused.value) and "refusing" in str(refused.value)


def test_legacy_and_empty_seqnums_files_open(tmp_path):
    _committed(tmp_path)
    (tmp_path / "S.seqnums").write_bytes(b"3 5\n")
    store = FileStore(tmp_path, "S")
    assert (store.next_sender, store.next_target, len(store.get(1, 10))) == (3, 5, 2)
    store.close()
    (tmp_path / "S.seqnums").write_bytes(b"")      # created, then a crash before its first write
    store = FileStore(tmp_path, "S")
    assert (store.next_sender, store.next_target) == (1, 1)
    store.close()


def test_the_seqnums_file_is_always_exactly_the_last_numbers_written(tmp_path):
    _committed(tmp_path)
    store = FileStore(tmp_path, "S")
    store.next_target = 6
    store.flush()
    with open(tmp_path / "S.seqnums", "ab") as fh:    # bytes left behind past the record
        fh.write(b"0000000000000000000099\n")
    store.next_target = 7
    store.flush()
    store.close()
    assert (tmp_path / "S.seqnums").read_bytes() == b"%020d %020d\n" % (3, 7)
    reopened = FileStore(tmp_path, "S")
    assert (reopened.next_sender, reopened.next_target) == (3, 7)
    reopened.close()


def test_a_sequence_number_too_wide_for_the_file_is_refused_and_the_file_kept(tmp_path):
    _committed(tmp_path)
    store = FileStore(tmp_path, "S")
    store.next_target = 10**25
    with pytest.raises(ValueError):
        store.flush()
    assert (tmp_path / "S.seqnums").read_bytes() == b"%020d %020d\n" % (3, 5)
    store.next_target = 5
    store.close()


def test_both_stores_implement_the_message_store_protocol(tmp_path):
    from ccerx.gateway.fix.store import FileStore, MemoryStore, MessageStore
    for store in (MemoryStore(), FileStore(tmp_path, "S")):
        assert isinstance(store, MessageStore)
        store.set(1, b"8=FIX.4.4\x01")
        store.next_sender = 2
        assert store.get(1, 1) == [(1, b"8=FIX.4.4\x01")] == list(store.each(1, 1))
        store.close()

    class Half:                      # a store missing each() and flush() is not one
        next_sender = next_target = 1

        def set(self, seq, raw): ...

        def get(self, begin, end): return []

        def reset(self): ...

        def close(self): ...
    assert not isinstance(Half(), MessageStore)
