"""The FIX gateway of a cluster node (issue 15; the node itself: engine/durable/replicated.py).

A broker's FIX session must survive the loss of the leader: the new leader answers its Logon
with the sequence numbers the broker expects, without a reset, and a ResendRequest with the
messages the old leader sent (or stored for a broker that was logged out). So every node's
FIX stores hold what the leader's hold:

    leader   each session's store is a ReplicatedStore: what the session stores (messages,
             sequence numbers, resets) is held by a SessionReplicator; the node attaches it
             to the next batch of commands it publishes (a command and the execution
             reports it caused are one JetStream message), and a store flush publishes what
             no batch carried (heartbeats, logons, a MsgSeqNum received) before the bytes
             go to the socket. Nothing reaches a socket before it is in the stream.
    standby  the node hands every blob of session records to mirror(), which writes it into
             the same stores here (on the gateway's event loop, in stream order).
             The exchange application learns the day's orders from what is mirrored, as it
             comes (ExchangeApplication.learn_sent: a restart's learning, in pieces).
    joining  a standby puts its stores' whole content (stores_blob) into each join bundle
             (replicated.py, "Snapshots"); a node that joins from it mirrors that first.
    takeover once the node leads, the resting orders take the engine's numbers; nothing is
             read again (ExchangeApplication.take_learned_over).
"""
from __future__ import annotations

import concurrent.futures

from ccerx.gateway.fix.store import FileStore, SessionReplicator


class _OnLoop:
    """What the node holds as its `sessions`: take() in the engine thread (the gateway's),
    mirror() handed over to the gateway's event loop (the stores are the loop's)."""

    def __init__(self, replicator: SessionReplicator, loop):
        self._replicator, self._loop = replicator, loop

    def take(self, upto: int) -> list[bytes]:
        return self._replicator.take(upto)

    def mirror(self, blob: bytes) -> None:
        self._loop.call_soon_threadsafe(self._replicator.mirror, blob)

    def snapshot(self) -> concurrent.futures.Future:
        """Every store's content as one session blob (a join bundle's FIX part), taken on the
        loop after every blob mirrored before this call."""
        future: concurrent.futures.Future = concurrent.futures.Future()

        def take() -> None:
            try:
                future.set_result(stores_blob(self._replicator))
            except BaseException as err:
                future.set_exception(err)
        self._loop.call_soon_threadsafe(take)
        return future


def stores_blob(replicator: SessionReplicator) -> bytes:
    """The whole of every store as SessionReplicator blob entries with the reset flag: each
    stored message and both sequence numbers, so that mirror() on an empty node's stores
    makes them what these are (what a node that joins from a snapshot starts with)."""
    parts = []
    for name, store in sorted(replicator.stores.items()):
        inner = store.inner
        records = list(inner.each(1, inner.next_sender - 1))
        parts.append(b"%s %d %d 1 %d\n" % (name.encode(), inner.next_sender,
                                            inner.next_target, len(records)))
        for seq, raw in records:
            parts.append(b"%d %d\n" % (seq, len(raw)))
            parts.append(raw)
    return b"".join(parts)


def replicate_sessions(server, node, loop, application=None) -> SessionReplicator:
    """Put every file-backed session store of `server` (a GatewayServer) behind one
    SessionReplicator tied to `node` (a ClusterNode), before the node starts following the
    stream. `application` (the exchange application) learns from what is mirrored as it
    comes (learn_sent), so that taking over costs nothing per stored message."""
    replicator = SessionReplicator()
    keys = {}
    for key, session in server.sessions.items():
        if isinstance(session.store, FileStore):
            session.store = replicator.wrap(session.store)
            keys[session.store.name] = key
    if application is not None:
        replicator.mirrored = lambda name, records: application.learn_sent(keys[name], records)
    replicator.publish = node.publish_sessions
    replicator.watermark = lambda: node.applied_cmds
    replicator.published = lambda: node.published_cmd_seq
    node.sessions = _OnLoop(replicator, loop)
    return replicator


def take_over(application, server) -> None:
    """On the gateway's event loop, once this node leads (after every mirrored record, which
    were queued before): what the application learnt from them stands, the resting orders
    take the engine's numbers (ExchangeApplication.take_learned_over)."""
    application.take_learned_over()
