"""SessionReplicator and ReplicatedStore (gateway/fix/store.py): what a cluster leader's FIX
stores hand to the replicated log, and a standby's stores rebuilt from it (issue 15)."""
from __future__ import annotations

import pytest

from ccerx.gateway.fix.store import FileStore, SessionReplicator, decode_sessions


def msg(n: int, text: str = "") -> bytes:
    return b"8=FIX.4.4\x019=5\x0135=8\x0134=%d\x0158=%s\x0110=000\x01" % (n, text.encode())


@pytest.fixture
def leader(tmp_path):
    replicator = SessionReplicator()
    mark = [0]
    replicator.watermark = lambda: mark[0]
    stores = {name: replicator.wrap(FileStore(tmp_path / "leader", name)) for name in "AB"}
    return replicator, stores, mark


def mirrored(tmp_path, blobs, names="AB"):
    standby = SessionReplicator()
    stores = {name: standby.wrap(FileStore(tmp_path / "standby", name)) for name in names}
    for blob in blobs:
        standby.mirror(blob)
    return stores


def send(store, n: int, text: str = "") -> None:
    store.set(n, msg(n, text))
    store.next_sender = n + 1


def test_a_batch_takes_only_what_its_commands_made(leader, tmp_path):
    replicator, stores, mark = leader
    for n in (1, 2, 3):
        mark[0] = n                          # the report of command n, made after it
        send(stores["A"], n)
    stores["B"].next_target = 5              # a received message, after command 3
    taken = [entry for blob in replicator.take(upto=2) for entry in decode_sessions(blob)]
    assert taken == [("A", 3, 1, False, [(1, msg(1)), (2, msg(2))])]
    rest = [entry for blob in replicator.take(upto=3) for entry in decode_sessions(blob)]
    assert rest == [("A", 4, 1, False, [(3, msg(3))]), ("B", 1, 5, False, [])]
    assert replicator.take() == [] and not replicator.pending


def test_a_store_flush_publishes_all_it_holds_and_what_others_hold_up_to_the_log(leader):
    replicator, stores, mark = leader
    published = []
    replicator.publish = published.append
    replicator.published = lambda: 1
    mark[0] = 1
    send(stores["B"], 1)
    mark[0] = 2                              # command 2 is applied, not yet in the log
    send(stores["B"], 2)
    send(stores["A"], 1, "heartbeat")
    stores["A"].flush()                      # A's bytes go out: all of A, B up to command 1
    assert [e[0] for blob in published for e in decode_sessions(blob)] == ["B", "A"]
    assert [e[4] for blob in published for e in decode_sessions(blob)] == [
        [(1, msg(1))], [(1, msg(1, "heartbeat"))]]
    assert [e[0] for blob in replicator.take() for e in decode_sessions(blob)] == ["B"]


def test_a_standby_mirrors_messages_numbers_and_resets(leader, tmp_path):
    replicator, stores, mark = leader
    blobs = []
    for n in range(1, 6):
        send(stores["A"], n, "中文" * n)      # bytes as they are (UTF-8 text included)
    stores["A"].next_target = 9
    blobs += replicator.take()
    stores["B"].reset()
    send(stores["B"], 1)
    blobs += replicator.take()
    standby = mirrored(tmp_path, blobs)
    assert (standby["A"].next_sender, standby["A"].next_target) == (6, 9)
    assert standby["A"].get(1, 10) == stores["A"].get(1, 10)
    assert standby["B"].get(1, 10) == [(1, msg(1))]
    # what was set before a reset is not sent at all
    send(stores["A"], 6)
    stores["A"].reset()
    send(stores["A"], 1, "after")
    entries = [e for blob in replicator.take() for e in decode_sessions(blob)]
    assert entries == [("A", 2, 1, True, [(1, msg(1, "after"))])]


def test_large_takes_are_split_into_blobs_that_mirror_to_the_same_store(leader, tmp_path):
    replicator, stores, mark = leader
    for n in range(1, 201):
        send(stores["A"], n, "x" * 500)
    blobs = replicator.take(limit=20_000)
    assert len(blobs) > 3 and all(len(blob) < 21_000 for blob in blobs)
    standby = mirrored(tmp_path, blobs, "A")
    assert standby["A"].get(1, 200) == stores["A"].get(1, 200)
    assert standby["A"].next_sender == 201


def test_a_blob_cut_short_is_refused():
    with pytest.raises(ValueError):
        list(decode_sessions(b"A 2 1 0 1\n1 100\n8=FIX"))
