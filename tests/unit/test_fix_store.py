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
