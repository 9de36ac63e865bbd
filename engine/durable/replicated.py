"""The replicated command log: NATS JetStream, one leader, hot standbys (issue 15).

Theory of operation. Every node of a cluster runs the same deterministic engine (a
DurableExchange over its own data directory) and applies the same command stream, so every
node holds the same state. The stream is a JetStream stream replicated with Raft (publish
acknowledgements come after a quorum of the stream's replicas stored the message); the
exchange's own journal on each node is a local copy of a prefix of it.

Names (fixed; see `STREAM`, `SUBJECT`, `LEASE_BUCKET` below):
    stream  CCERX_CMDS     subject ccerx.cmds, `replicas` copies (3 in a three-server cluster)
    bucket  CCERX_LEADER   key `leader`: the leader's lease (a TTL'd key-value entry)
    bucket  CCERX_NODES    key <node>: {"stream_seq", "cmd_seq", "at", "role"}, where the
                           node's journal ends (see "Retention"), put every HEARTBEAT_S
    objects CCERX_SNAPSHOTS  join bundles `stream-<stream seq>` (see "Snapshots")
    message headers        Ccerx-Kind: batch | term | checkpoint | sessions,
                           Ccerx-Term: <term>, Ccerx-Seq: <first command seq> (batch),
                           Ccerx-Sessions: <bytes of session records at the end> (batch)
                           Ccerx-Fronts: [[front, epoch, k, first cmd seq, count], ...]
                           (batch: the front batches among its commands; see "Fronts")
    body                   batch: the journal's own command rows (journal.encode_command),
                           orjson, then the session records if any; sessions: session
                           records only; term/checkpoint: {"cmd_seq", "hash", "node", "fix",
                           "confirmed": {relay: last instruction the ledger confirmed}}
    files in DIR           cluster-status.json (for operators), cluster-position.json (where
                           a restart resumes), set-aside-<time>-<pid>/ (files before a rejoin)
    subject ccerx.front.in core NATS (not a stream): front batches to the leader, headers
                           Ccerx-Front: <name>, Ccerx-Front-Epoch, Ccerx-Front-Seq: <k>;
                           body: command rows (journal.encode_command), orjson

Session records. The leader's FIX gateway (gateway/cluster.py) hands the node what its
sessions' stores took (messages sent, sequence numbers, resets: opaque bytes here, see
gateway.fix.store.SessionReplicator) through `sessions`: a batch carries the records made
after its commands were applied and not after its last command (so a command and the
execution reports it caused are one message: both in the stream or neither), and the gateway
publishes what no batch carried (`publish_sessions`) before its bytes reach a socket. A
standby hands each record blob to `sessions.mirror`, in stream order; once it leads, its FIX
stores hold what the old leader's held and the brokers' sessions continue.

Which order: apply, publish, acknowledge. The leader applies a command to its engine first
(the FIX gateway applies a whole event-loop iteration with apply_deferred), publishes the
batch's rows when the gateway commits, and writes nothing to any socket before JetStream
acknowledged the publish. Publishing before applying would need a second copy of the
engine's validation to know what to publish, or would publish commands the engine then
refuses (harmless, but the order a follower sees would no longer be "what the leader
applied"); applying first keeps the engine the only judge and the stream exactly the
sequence of commands the leader's engine applied. The price: between apply and publish the
leader's memory is ahead of the stream. If a publish fails (refused, or not acknowledged
within `publish_timeout_s`), the leader is *fenced*: it writes nothing more and the process
exits (`EXIT_FENCED`), as a JournalFailed engine refuses everything; nothing applied after
the last acknowledged batch was ever acknowledged to anyone, and a standby takes over from
the stream. The local journal is written after the publish was acknowledged, so it is always
a prefix of the stream and a restarted node continues from it.

Fencing. The lease is a key created with `create` (only if absent) in a bucket whose TTL is
`lease_s`; the leader renews it with `update(last=revision)` every `lease_s / 4`. The
revision of the create is the leader's *term*. Before it accepts anything, a new leader
catches up with the stream and publishes a `term` marker; every message is published with
`Nats-Expected-Last-Sequence` = the last stream sequence the publisher applied, so JetStream
appends only for a node that has seen the whole stream. Once the new leader's marker is in,
a deposed leader's next publish is refused (it then fences itself); a batch it got in before
the marker is part of the stream (it was acknowledged after the publish, so it is real
history) and the new leader applies it before its marker. Followers check that every batch
carries the term of the last marker. A `Nats-Msg-Id` of term.first-seq lets a publish that
timed out be retried without a duplicate (the ack says `duplicate`).

State checks. The leader publishes a checkpoint (command seq and state hash) every
`checkpoint_every` commands and when idle; its term marker carries one too. A follower that
reaches the same command seq with another hash stops at once (`EXIT_DIVERGED`): a node whose
state differs from the leader's must never take over.

Settlement. Every node makes the same settlement instructions (deterministically, with the
same ids) but only the leader runs the relays; a new leader starts its relays from its own
cursor, so it re-sends what the old leader may already have delivered, and the ledger's
idempotence (one settlement row per instruction id) absorbs it. The nodes share one ledger.
The leader's checkpoints carry its relays' cursors (`confirmed`); a standby remembers the
highest it saw (`delivered()`: the ledger is shared, so what one leader's relay confirmed is
confirmed for all). A join bundle carries, besides the snapshot, every instruction after
those cursors up to the snapshot (from the standby's outbox, which holds everything after
its own cursors); the joined node keeps them in `journal-base.json` (recovery puts them in
its outbox) and starts its relay cursors there, not at the snapshot. So a joined node that
leads after every older node is gone delivers what the ledger may lack, each instruction
once in the ledger (the ledger also refuses a gap, so without them it would deliver nothing).

A node's roles: standby (applies the stream; closes FIX logons unanswered, refuses operator
commands) ->
leader (after winning the lease and publishing its marker) -> fenced (exits). A leader never
becomes a standby again within the same process. A planned stop (SIGTERM) of the leader
publishes what it applied, refuses anything after, and deletes its lease, so a standby takes
over within a poll instead of a TTL. A restarted node opens its own data directory (its
journal is a prefix of the stream) and follows the stream after `cluster-position.json`
(below, "Retention"), skipping what its journal holds past it; a new node (an empty data
directory) joins from the newest snapshot (below) and applies the stream after it. A
standby keeps every settlement instruction in its outbox until it leads (it starts its relays
then), so its memory grows with the day's trades.

Losing a NATS server: the client reconnects to another; a stream whose Raft leader died is
unavailable for its election (seconds with nats-server 2.9), and publishes are retried with the
same Nats-Msg-Id for up to `publish_timeout_s` meanwhile (acknowledgements wait, nothing is
lost or doubled). If the lease bucket's Raft group is the one electing, the lease may lapse
and a standby take over; the old leader's next publish is refused and it stops.

Takeover time after a leader dies: at most `lease_s` (the lease expires) + `poll_s` (a
standby notices) + the catch-up (the standbys are hot: usually the last batch or none) + one
publish. With the defaults, under 3.5 s (measured: benchmarks/README.md, "Replication").

Snapshots for joining. Every standby, at the first checkpoint after each `snapshot_every`
commands, if it is no more than BUNDLE_MAX_LAG messages behind the stream's end (a node
catching up puts none), writes a local snapshot (DurableExchange.snapshot) and puts a *join
bundle*, zlib-compressed, into the JetStream object store CCERX_SNAPSHOTS, object
`stream-<stream seq>` (the newest two are kept): the snapshot file, the data directory's
opening.json, the FIX stores as one session blob (every stored message and both sequence
numbers per session, taken on the gateway's loop after every record mirrored up to that
stream seq), and {stream seq, command seq, last instruction, term, state hash, leader, relay
names, `confirmed` cursors, `pending` instruction rows} (see "Settlement"). A checkpoint is the point because the state hash there was just compared with the
leader's. The snapshot is taken in the cluster thread, so the standby applies nothing while
it is written (~0.1-0.5 s for a 1 MB state here); compressing and putting run meanwhile.
A node started on an empty data directory loads the newest bundle before its engine opens:
it writes the snapshot, the opening and `journal-base.json` (its journal starts after the
snapshot: journal.write_base; with the instructions the ledger had not confirmed, see
"Settlement"), cursor files at the bundle's `confirmed` and `cluster-position.json`,
mirrors the session blob into its FIX stores, and subscribes to the stream at the next
stream seq (`joined from snapshot` in its log; `joined_at` and
`first_stream_seq` in cluster-status.json, whose cmd_seq and state_hash start as the
bundle's: that state was checked at the bundle's checkpoint). The next checkpoint compares its state hash with
the leader's as for any node. The bundle's opening is used, not the node's own config (as
for any existing data directory). No bundle (a cluster younger than `snapshot_every`, or no
standby): it replays from stream seq 1 as before.

Retention. The standby that put a bundle then trims the stream: a JetStream purge of every
message up to P = min(the older of the two kept bundles' stream seq, the position of every
node that reported within `retain_s`). Nothing is trimmed with fewer than two bundles, with
`retain_s` None (`--cluster-retain all`), or without bundles (`snapshot_every` 0, or no
standby), nor while the purging node cannot read its own report. A node's position is the last
stream seq whose commands its journal durably holds, with the command seq and the stream's
term there: written to DIR/cluster-position.json at every checkpoint it matched (a standby)
or published (the leader, once its local journal holds the checkpoint's commands) and at a
join, and put into the bucket CCERX_NODES when it changes and every HEARTBEAT_S (1 s)
(`at`: the reporter's clock). So a running node, however far behind, is never trimmed past,
and neither is one that stopped less than `retain_s` ago; one down for longer is left behind.
A restarted node reads its position file and the stream's first seq before its engine opens:
if the stream still holds the message after its position, it follows from there, taking the
term and the leader from the file (no need of seq 1); if not (or it has no position file and
the stream no longer starts at 1), its files (snapshots, journal, opening, base, cursors,
position, status) go to DIR/set-aside-<time>-<pid>/ (nothing in them is lost: its journal is a
prefix of the stream) and it joins from the newest bundle as a new node would, saying so in
its log ("is behind the stream"); with no bundle it refuses to start (JoinFailed). A node
trimmed past while it runs (its report lapsed, e.g. cut off from NATS for `retain_s`) sees a
gap and stops (EXIT_FENCED) saying the stream was trimmed past it; started again, it rejoins.
A position file that claims commands its journal lacks is refused at start (the journal lost
acknowledged commands). Default `retain_s` 3600: a node back within an hour catches up from
its own journal; the stream holds at most that hour plus two bundles' worth of commands.

Fronts (issue 15 item 4). `ccerx serve --cluster ... --front NAME` runs a *front gateway*: FIX
sessions of its own (its brokers, local FIX stores as in the single-node server), and a
replica of the engine: a ClusterNode with front=True, which follows the stream exactly like a
standby (own data directory, state hash checked at every checkpoint, joins from a bundle when
its directory is empty) but never stands for leader, mirrors no FIX session records and puts
no join bundles. Its application validates FIX as always and forwards each command instead of
applying it; the commands of one event-loop iteration (at most FRONT_BATCH_MAX) form *front
batch* k (k = 1, 2, ... within the front process's *epoch*, its start time in ns), sent by core
NATS to FRONT_SUBJECT (gateway/front.py). The leader hands each front batch to its gateway's
loop (the engine thread), which calls apply_front_batch: applied (deferred, all its commands
one after the other) only if it is the front's next (k == 1 of a newer epoch, or the last k +
1 of the same epoch), else dropped (a duplicate, a gap, an older epoch); the commit follows at
once, and the stream message that carries those commands names them in Ccerx-Fronts (a
message cut never splits a front batch: message_cuts). Every node notes each front's last
(epoch, k) from those headers (front_last; also from messages whose rows a restarted node
already had; a join bundle's meta carries it), so a new leader knows which front batches are
in. A front applies the stream on its gateway's loop (hand_over, apply_handed): the
commands of its own batches get its requests' answers, everyone else's are translated
neutrally (fills of its brokers' orders, market data, trading status): an acknowledgement
leaves a front only after its command is in the stream with quorum. A front batch not seen
in the stream after a second (the leader died, or dropped it) is re-sent with every later one,
in order (go-back-N), so a front's brokers stay logged on through a leader's failover and
see a pause; each order is entered once. A front refuses logons until it has applied what
the stream held when it started (`ready`). A front's epoch is above every epoch of its name
in the stream (its clock at start, or the last one + 1: taken again before its first batch),
so a restart with its clock behind still leads to batches the leader takes.

What the leader takes from FRONT_SUBJECT (apply_front_batch; a batch is checked whole before
any of it is applied, and refused whole, with a log line at most every FRONT_REFUSAL_LOG_S;
nothing a front sends stops the leader): a valid front name (letters, digits, - and _, at
most FRONT_NAME_MAX), 1-FRONT_BATCH_MAX rows decoded by decode_front_batch, a whitelist of
what a front's FIX application makes, NewOrder, CancelOrder and AmendOrder, each field
type-checked (never journal.decode_command, whose pickled rows would run the sender's code),
for brokers other than those the leader's own gateway serves. What a client of the NATS
cluster can still do (no front is authenticated here; the trust boundary is NATS's own
authentication and permissions, README "NATS authorization"): enter, cancel and amend orders
as any broker the leader does not serve itself (the engine's pre-trade checks apply: the
account must be the broker's, the credits or the money there), with timestamps of its
choosing; send batches under a front's name, which that front logs loudly (and a batch with
a later epoch makes the leader refuse the front's own until it restarts); and, with rights on
ccerx.cmds or the buckets, anything: only the nodes may publish there.

Threads: the NATS client runs in this module's own thread and event loop; the engine thread
(the gateway's event loop) blocks on each publish as it blocked on the journal's fsync, and
the standby applies the stream in the NATS thread under the exchange's lock.
"""
from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
import zlib
from typing import Callable, NamedTuple, Optional

import orjson

from pathlib import Path

from ccerx.engine.core.commands import AmendOrder, CancelOrder, NewOrder
from ccerx.engine.core.types import PriceError, RejectReason
from ccerx.engine.durable import journal as jr
from ccerx.engine.durable import snapshot as snap
from ccerx.engine.durable.exchange import OPENING
from ccerx.engine.durable.files import private_dir, write_atomic

STREAM, SUBJECT = "CCERX_CMDS", "ccerx.cmds"
LEASE_BUCKET, LEASE_KEY = "CCERX_LEADER", "leader"
H_KIND, H_TERM, H_SEQ = "Ccerx-Kind", "Ccerx-Term", "Ccerx-Seq"
H_SESSIONS = "Ccerx-Sessions"    # batch: bytes of session records after the command rows
BATCH, TERM, CHECKPOINT, SESSIONS = "batch", "term", "checkpoint", "sessions"
SNAPSHOT_BUCKET, SNAPSHOT_PREFIX = "CCERX_SNAPSHOTS", "stream-"
BUNDLE_MAGIC = b"CCERXJOIN2\n"   # then 4 parts: u64 length + zlib (level 1)
KEEP_BUNDLES = 2
BUNDLE_MAX_LAG = 10               # stream messages behind: a node catching up puts no bundle
STATUS_FILE = "cluster-status.json"
# retention (module doc, "Retention"): where a node resumes, what it reports, what it sets aside
POSITION_FILE = "cluster-position.json"
NODES_BUCKET = "CCERX_NODES"      # key: node name, value {"stream_seq", "cmd_seq", "at"}
SET_ASIDE_PREFIX = "set-aside-"   # DIR/set-aside-<time>-<pid>/: a node's files before a rejoin
REPORT_S = 0.5                    # how often a node reports a new position
HEARTBEAT_S = 1.0                 # and an unchanged one (its report's `at` says it runs)
EXIT_FENCED, EXIT_DIVERGED = 3, 4
MAX_ROWS_PER_MESSAGE = 2000      # ~200 KB; NATS refuses payloads over 1 MB by default

# ---- front gateways (module doc, "Fronts"; issue 15 item 4)
FRONT_SUBJECT = "ccerx.front.in"  # core NATS: front batches, to the leader
H_FRONT, H_FRONT_EPOCH, H_FRONT_SEQ = "Ccerx-Front", "Ccerx-Front-Epoch", "Ccerx-Front-Seq"
H_FRONTS = "Ccerx-Fronts"         # batch: [[front, epoch, k, first cmd seq, count], ...]
FRONT_BATCH_MAX = 500             # commands in one front batch (a stream message holds whole ones)
FRONT_NAME_MAX = 64               # a front's name: letters, digits, - and _ (as --front checks)
FRONT_TEXT_MAX = 256              # any string of a front batch's row, in characters
FRONT_REFUSAL_LOG_S = 10.0        # a refused front batch is logged at most this often
_INT64 = 1 << 63
_FRONT_SIDES = frozenset(("buy", "sell"))                 # what gateway/fix/translate.py
_FRONT_ORDER_TYPES = frozenset(("market", "limit", "take"))   # makes of FIX fields
_FRONT_TIFS = frozenset(("day", "ioc", "fok", None))
_FRONT_PRICE_REASONS = {r.value: r for r in (RejectReason.INVALID_PRICE, RejectReason.OFF_TICK)}


def valid_front_name(name) -> bool:
    """A front's name: 1-FRONT_NAME_MAX ASCII letters, digits, - and _."""
    return (type(name) is str and 0 < len(name) <= FRONT_NAME_MAX and name.isascii()
            and name.replace("-", "").replace("_", "").isalnum())


def _text(value, optional: bool = False) -> str:
    if value is None and optional:
        return value
    if type(value) is not str or not 0 < len(value) <= FRONT_TEXT_MAX:
        raise ValueError(f"not a string of 1-{FRONT_TEXT_MAX} characters: {str(value)[:40]!r}")
    return value


def _int(value, optional: bool = False, least: int = -_INT64) -> int:
    if value is None and optional:
        return value
    if type(value) is not int or not least <= value < _INT64:   # (bool is not int here)
        raise ValueError(f"not an integer of 64 bits: {str(value)[:40]!r}")
    return value


def _price(value):
    if type(value) is list:
        if len(value) != 2 or value[0] not in _FRONT_PRICE_REASONS:
            raise ValueError(f"not a price error: {str(value)[:40]!r}")
        return PriceError(_FRONT_PRICE_REASONS[value[0]], _text(value[1]))
    return _int(value, optional=True)


def _enum(value, allowed: frozenset) -> str:
    if (value is not None and type(value) is not str) or value not in allowed:
        raise ValueError(f"not one of {sorted(map(str, allowed))}: {str(value)[:40]!r}")
    return value


def decode_front_batch(data: bytes, refused_owners=frozenset()) -> list:
    """A front batch's body -> its commands, or ValueError (the whole batch is refused). A
    whitelist (module doc, "Fronts"): only what a front's FIX application makes (NewOrder,
    CancelOrder, AmendOrder: gateway/fix/translate.py), each field of its type (ints are ints
    of 64 bits, never bools; strings 1-FRONT_TEXT_MAX characters; sides, order types, times in
    force and price errors among the engine's), at most FRONT_BATCH_MAX, each for a broker
    (owner) not in `refused_owners` (the leader's own gateway's brokers never come from a
    front). Never journal.decode_command: its _PICKLED rows would run the sender's code."""
    try:
        rows = orjson.loads(data)
    except orjson.JSONDecodeError as err:
        raise ValueError(f"not JSON: {err}") from None
    if type(rows) is not list or not 0 < len(rows) <= FRONT_BATCH_MAX:
        raise ValueError(f"not a list of 1-{FRONT_BATCH_MAX} rows")
    commands = []
    for n, row in enumerate(rows):
        try:
            commands.append(_front_command(row, refused_owners))
        except (ValueError, TypeError, IndexError) as err:
            raise ValueError(f"row {n}: {err}") from None
    return commands


def _front_command(row, refused_owners):
    if type(row) is not list or not row:
        raise ValueError("not a command row")
    tag, size = row[0], len(row)
    if type(tag) is not int:
        tag = None
    if tag == jr.NEW_TAG and size in (11, 12):      # (the journal's row layouts)
        command = NewOrder(_text(row[1]), _text(row[2]), _text(row[3]),
                           _enum(row[4], _FRONT_SIDES), _enum(row[5], _FRONT_ORDER_TYPES),
                           _enum(row[6], _FRONT_TIFS), _price(row[7]), _int(row[8]),
                           _int(row[9], least=0), _text(row[10]),
                           _text(row[11], optional=True) if size == 12 else None)
    elif tag == jr._CANCEL and size == 4:
        command = CancelOrder(_text(row[1]), _int(row[2], least=0), _text(row[3]))
    elif tag == jr._AMEND and size == 6:
        command = AmendOrder(_text(row[1]), _price(row[2]), _int(row[3], optional=True),
                             _int(row[4], least=0), _text(row[5]))
    else:
        raise ValueError(f"not a command a front makes (new order, cancel, amend): tag "
                         f"{str(row[0])[:20]!r}, {size} fields")
    if command.owner in refused_owners:
        raise ValueError(f"broker {command.owner!r} is served by the leader's own gateway")
    return command


class ClusterSettings(NamedTuple):
    servers: tuple                   # nats://host:port, ...
    node: str
    replicas: int = 3
    lease_s: float = 2.5
    poll_s: float = 0.2
    checkpoint_every: int = 1000
    idle_checkpoint_s: float = 0.5
    publish_timeout_s: float = 12.0   # rides out a stream's Raft election (nats-server 2.9)
    snapshot_every: int = 100_000     # commands between join bundles (0: none)
    # trim the stream below the oldest kept join bundle, held back by every node that
    # reported its position within retain_s seconds (None: keep every message)
    retain_s: Optional[float] = 3600.0


class NotLeader(RuntimeError):
    """A command reached a standby: only the leader applies commands."""


class JoinFailed(ConnectionError):
    """A new node could not read the join bundles (NATS unreachable): nothing was written."""


class ReplicationFailed(RuntimeError):
    """A publish was refused or not acknowledged in time: this node must stop leading."""


def parse_servers(text: str) -> tuple:
    """`nats://h:p,nats://h2:p2` (or host:port) -> a tuple of nats:// URLs; ValueError if bad."""
    servers = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        url = part if "://" in part else f"nats://{part}"
        scheme, _, rest = url.partition("://")
        host, sep, port = rest.rpartition(":")
        if scheme not in ("nats", "tls") or not sep or not host or not port.isdigit():
            raise ValueError(f"--cluster: {part!r} is not nats://HOST:PORT")
        servers.append(url)
    if not servers:
        raise ValueError("--cluster needs at least one nats://HOST:PORT")
    return tuple(servers)


def message_cuts(first_seq: int, count: int, entries: list, most: int) -> list:
    """How a leader's batch of `count` rows (from command `first_seq`) is cut into stream
    messages of about `most` rows: [(start, end) offsets], never through a front batch
    (entries [name, epoch, k, first cmd seq, count]), so that each front batch is wholly in
    the stream with its entry or not at all."""
    cuts, start = [], 0
    while start < count:
        end = min(start + most, count)
        for entry in entries:
            low = entry[3] - first_seq
            if low < end < low + entry[4]:
                end = low + entry[4]
        cuts.append((start, end))
        start = end
    return cuts


def shown_servers(servers) -> str:
    """The NATS server URLs fit to print: `user:password@` or a `token@` without its secret."""
    shown = []
    for url in servers:
        scheme, sep, rest = str(url).partition("://")
        userinfo, at, hostport = rest.rpartition("@")
        if at:
            user, colon, _ = userinfo.partition(":")
            rest = f"{user}:***@{hostport}" if colon else f"***@{hostport}"
        shown.append(f"{scheme}{sep}{rest}")
    return ", ".join(shown)


class ReplicatedJournal:
    """The local journal of a cluster node, with the stream in front of it (see module doc).

    DurableExchange appends batch records and commits as before; here `append` only holds the
    rows and `commit` publishes them (leader) before writing them to the local journal. On a
    standby (`publishing` False) the rows come from the stream and are only written locally."""

    def __init__(self, inner: jr.Journal, node: "ClusterNode"):
        self.inner = inner
        self.node = node
        self.publishing = False
        self._held: list = []        # (rows, instructions, streams) not yet published
        self.position_due: Optional[tuple] = None   # (stream seq, cmd seq, term) to note

    @property
    def next_seq(self) -> int:
        return self.inner.next_seq + sum(len(rows) for rows, _, _ in self._held)

    @property
    def next_instruction(self) -> int:
        return self.inner.next_instruction + sum(len(made) for _, made, _ in self._held)

    def append(self, commands: list, instructions: list, streams=None) -> None:
        self._held.append((commands, instructions, streams))

    def commit(self) -> None:
        held, self._held = self._held, []
        if held and self.publishing:
            rows = [row for batch, _, _ in held for row in batch]
            self.node.publish_batch(self.inner.next_seq, rows)   # fences the node on failure
        for commands, instructions, streams in held:
            self.inner.append(commands, instructions, streams)
        self.inner.commit()
        if self.position_due is not None:    # a checkpoint of the leader's covers it now
            due, self.position_due = self.position_due, None
            self.node.note_position_soon(*due)

    def rotate(self):
        self.commit()
        return self.inner.rotate()

    def close(self) -> None:
        self.commit()
        self.inner.close()

    def __getattr__(self, name):
        return getattr(self.inner, name)


class LeaderGate:
    """What the gateway and the operator socket hold instead of the engine: commands pass
    only on the leader; reads pass everywhere."""

    def __init__(self, node: "ClusterNode"):
        self._node = node
        self._exchange = node.exchange

    def _check(self) -> None:
        if not self._node.leading:
            raise NotLeader(self._node.refusal())

    def apply(self, command):
        self._check()
        events = self._exchange.apply(command)
        self._node.applied_cmds += 1
        return events

    def apply_many(self, commands):
        self._check()
        commands = list(commands)
        events = self._exchange.apply_many(commands)
        self._node.applied_cmds += len(commands)
        return events

    def apply_deferred(self, command):
        self._check()
        events = self._exchange.apply_deferred(command)
        self._node.applied_cmds += 1
        return events

    def commit(self) -> None:
        if self._node.leading:       # a standby has nothing deferred (and sends Logouts)
            self._exchange.commit()

    def close(self) -> None:
        self._node.close()

    def __getattr__(self, name):
        return getattr(self._exchange, name)


class ClusterNode:
    """One node: its engine, its JetStream connection (a thread with its own event loop),
    the lease, and the stream applied in order. See the module doc."""

    def __init__(self, settings: ClusterSettings, open_exchange: Callable, log=None,
                 data_dir=None, front: bool = False):
        """open_exchange(journal_hook) opens the node's DurableExchange (start_relays=False)
        with the given journal hook. `data_dir`, the directory it opens: if it is empty, the
        node first loads the newest join bundle into it (module doc, "Snapshots").
        front=True: a front gateway's replica (module doc, "Fronts"): it follows the stream,
        never stands for leader, puts no join bundles."""
        self.settings = settings
        self.front = front
        # fronts (module doc, "Fronts"): front name -> [epoch, k] of its last batch in the
        # stream (every node); the leader's entries applied but not yet published; a
        # front's hooks (set by its gateway): hand_over(seq, headers, data) from the NATS
        # thread, on_applied(first cmd seq, events per command, entries) where it applies
        self.front_last: dict[str, list] = {}
        # the same, of front batches in the stream only (a leader's front_last also holds
        # those applied but not yet published): what a position file and a bundle record
        self.front_in_stream: dict[str, list] = {}
        self._front_entries: list = []
        self.front_handler: Optional[Callable] = None   # leader: (name, epoch, k, data)
        self.hand_over: Optional[Callable] = None
        self.on_applied: Optional[Callable] = None
        self.ready = False            # a front: caught up with the stream as it was at start
        self.front_applied_seq = 0    # a front: the last stream message its gateway applied
        self.fronts_dropped = 0       # leader: front batches dropped (duplicates and gaps)
        self.fronts_refused = 0       # leader: of those, refused (decode_front_batch, names)
        self._front_refusal_logged = -FRONT_REFUSAL_LOG_S
        self._fronts_refused_logged = 0
        # leader: the brokers its own gateway serves (set by FrontIntake): never from a front
        self.front_refused_owners: frozenset = frozenset()
        # a front applies the stream messages queued on its loop with one commit (apply_handed
        # with defer=True, then commit_deferred): commands applied, not yet in the journal
        self._deferred_rows = 0
        self._deferring = False
        self._position_due: Optional[tuple] = None    # a front: noted after its next commit
        self._log = log if log is not None else (lambda text: print(text, file=sys.stderr,
                                                                    flush=True))
        self.joined: Optional[dict] = None     # the bundle's meta, if this node joined by one
        self._joined_sessions = b""
        started = time.monotonic()
        resume: Optional[dict] = None     # where a restarted node's own directory ends
        if data_dir is not None and is_empty_data_dir(data_dir):
            self._join_from_bundle(Path(data_dir))
        elif data_dir is not None:
            resume = read_position(Path(data_dir))
            behind = self._behind_stream(resume)
            if behind:
                self._rejoin(Path(data_dir), behind)
                resume = None
        self.exchange = open_exchange(self._wrap_journal)
        self.engine = LeaderGate(self)
        self.leading = False
        self.term = 0                 # this node's term once it leads
        self.marker_term = 0          # term of the last marker applied (the stream's term)
        self.applied_stream_seq = 0   # last stream message applied (or published)
        self.since_checkpoint = 0
        self.last_publish = time.monotonic()
        self.leader_info: dict = {}
        self.fix_address = ""
        self._on_leader: Optional[Callable[[], None]] = None
        # the FIX gateway's session records (gateway.fix.store.SessionReplicator): take() the
        # blobs to publish with a batch, mirror(blob) on a standby; None: no gateway sessions
        self.sessions = None
        self.applied_cmds = 0         # leader: commands applied through the gate (journal seq)
        self.published_cmd_seq = 0    # leader: the last command in the stream
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cluster",
                                        daemon=True)
        self._nc = self._js = self._kv = self._sub = self._snapshots = None
        self._lease_rev = 0
        self._closed = False
        self._tasks: set = set()      # asyncio keeps only weak references to running tasks
        self._publishing: Optional[asyncio.Lock] = None   # made in the cluster loop
        self.first_stream_seq = 0     # the first stream message this process received
        # relay -> last instruction the leader's checkpoints said the ledger confirmed
        self.leader_confirmed: dict = {}
        self._since_bundle = 0        # commands applied since the last join bundle
        self._nodes = None            # the CCERX_NODES bucket (positions)
        # (stream seq, command seq) of the last position file written: what this node
        # reports, and where it would resume
        self.position: Optional[tuple] = None
        if self.joined is not None:
            meta = self.joined
            self.leader_confirmed = dict(meta.get("confirmed", {}))
            mine = self.exchange.state_hash()
            if mine != meta["hash"] or self.journal.next_seq - 1 != meta["cmd_seq"]:
                raise RuntimeError(f"the join bundle at stream seq {meta['stream_seq']} opened "
                                   f"to command {self.journal.next_seq - 1} with state hash "
                                   f"{mine}, not {meta['cmd_seq']} / {meta['hash']}")
            self.applied_stream_seq = meta["stream_seq"]
            self.front_last = dict(meta.get("fronts", {}))
            self.front_in_stream = dict(self.front_last)
            self.marker_term = meta["term"]
            self.leader_info = meta["leader"]
            self._log(f"ccerx serve: cluster node {settings.node} joined from snapshot at "
                      f"stream seq {meta['stream_seq']} (command {meta['cmd_seq']}, state hash "
                      f"{mine}) in {time.monotonic() - started:.2f} s; following the stream "
                      f"from stream seq {meta['stream_seq'] + 1}")
            self.position = (meta["stream_seq"], meta["cmd_seq"])
        elif resume is not None:
            held = self.journal.next_seq - 1
            if resume["cmd_seq"] > held:
                raise RuntimeError(
                    f"{POSITION_FILE} says commands up to {resume['cmd_seq']} (stream seq "
                    f"{resume['stream_seq']}) are in this node's journal, which ends at command "
                    f"{held}: the journal lost acknowledged commands. Move the data directory "
                    f"aside to rejoin from a bundle; do not run on a shorter journal.")
            self.applied_stream_seq = resume["stream_seq"]
            self.marker_term = resume["term"]
            self.leader_info = resume.get("leader") or {}
            self.position = (resume["stream_seq"], resume["cmd_seq"])
            self.front_last = dict(resume.get("fronts", {}))   # (the stream's, up to there)
            self.front_in_stream = dict(self.front_last)
            self._log(f"ccerx serve: cluster node {settings.node} resumes from its data "
                      f"directory at stream seq {resume['stream_seq']} (term {resume['term']}, "
                      f"journal to command {held})")
        else:
            self.position = (0, 0)        # from the stream's start: holds all of it back

    def _spawn(self, coroutine) -> asyncio.Task:
        """A task of the cluster thread, held until it ends (a task nobody holds may be
        garbage-collected while it waits)."""
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _wrap_journal(self, journal):
        self.journal = ReplicatedJournal(journal, self)
        return self.journal

    # ------------------------------------------------------------------ lifecycle
    def start(self, fix_address: str, on_leader: Callable[[], None], timeout: float = 15) -> None:
        """Connect, make sure the stream and the bucket exist, follow the stream and stand for
        election. on_leader() is called (in the cluster thread) once this node leads."""
        self.fix_address, self._on_leader = fix_address, on_leader
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._connect(), self._loop).result(timeout)
        if self.joined is not None:   # its state is the bundle's, checked at a checkpoint
            self._write_status(self.joined["cmd_seq"], self.joined["hash"])
        else:
            self._write_status()
        self._loop.call_soon_threadsafe(self._spawn, self._run())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        was_leading = self.leading
        if was_leading:
            # a planned stop hands over at once: publish what was applied, refuse anything
            # after it, then give the lease up (a standby takes it within a poll, not a TTL)
            with self.exchange._lock:
                self.exchange.commit()
                self.leading = False
            try:
                asyncio.run_coroutine_threadsafe(self._resign(), self._loop).result(5)
            except Exception:
                pass
        # the relays get time to deliver what is published; a standby delivers nothing
        self.exchange.close(settle_timeout=5.0 if was_leading else 0.0)
        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._disconnect(), self._loop).result(5)
            except Exception:
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)

    def refusal(self) -> str:
        if self.front:
            return (f"front {self.settings.node} is catching up with the stream"
                    if not self.ready else f"front {self.settings.node}")
        leader = self.leader_info
        where = (f"the leader is {leader.get('node')} at {leader.get('fix')}"
                 if leader else "no leader is known yet")
        return f"this node ({self.settings.node}) is a standby; {where}"

    def fence(self, reason: str, code: int = EXIT_FENCED) -> None:
        """Stop at once: nothing after this may leave the process."""
        self._log(f"ccerx serve: cluster node {self.settings.node} STOPPING: {reason}")
        try:
            sys.stderr.flush()
            sys.stdout.flush()
        finally:
            os._exit(code)

    # ------------------------------------------------------------------ NATS
    async def _connect(self) -> None:
        import nats
        from nats.js.api import KeyValueConfig, ObjectStoreConfig, StorageType, StreamConfig
        from nats.js.errors import BucketNotFoundError, NotFoundError

        said = [""]

        async def quiet(err):         # the client reconnects by itself: say each error once
            if repr(err) != said[0]:
                said[0] = repr(err)
                self._log(f"ccerx serve: NATS: {err!r}")
        s = self.settings
        # a few tries at start (an unreachable cluster is an error the operator must see),
        # then reconnect for ever: a running node rides out servers coming and going
        self._nc = await nats.connect(list(s.servers), name=f"ccerx-{s.node}",
                                      reconnect_time_wait=0.2, max_reconnect_attempts=5,
                                      connect_timeout=2, error_cb=quiet)
        self._nc.options["max_reconnect_attempts"] = -1
        self._js = self._nc.jetstream(timeout=2)
        deadline = time.monotonic() + 15     # a fresh cluster elects its meta leader first
        while True:
            try:
                try:
                    await self._js.stream_info(STREAM)
                except NotFoundError:
                    await self._js.add_stream(StreamConfig(
                        name=STREAM, subjects=[SUBJECT], num_replicas=s.replicas,
                        storage=StorageType.FILE))
                try:
                    self._kv = await self._js.key_value(LEASE_BUCKET)
                except BucketNotFoundError:
                    self._kv = await self._js.create_key_value(KeyValueConfig(
                        bucket=LEASE_BUCKET, ttl=s.lease_s, history=1, replicas=s.replicas))
                if self._nodes is None:
                    try:
                        self._nodes = await self._js.key_value(NODES_BUCKET)
                    except BucketNotFoundError:
                        self._nodes = await self._js.create_key_value(KeyValueConfig(
                            bucket=NODES_BUCKET, history=1, replicas=s.replicas))
                if s.snapshot_every and self._snapshots is None:
                    try:
                        self._snapshots = await self._js.object_store(SNAPSHOT_BUCKET)
                    except BucketNotFoundError:
                        self._snapshots = await self._js.create_object_store(
                            SNAPSHOT_BUCKET, ObjectStoreConfig(
                                bucket=SNAPSHOT_BUCKET, replicas=s.replicas,
                                storage=StorageType.FILE))
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.25)

    async def _resign(self) -> None:
        await self._kv.delete(LEASE_KEY, last=self._lease_rev)
        self._log(f"ccerx serve: cluster node {self.settings.node} gave up the lead")

    async def _disconnect(self) -> None:
        if self._nc is not None:
            await self._nc.close()

    async def _publish(self, kind: str, data: bytes, headers: dict) -> int:
        """Publish with the stream tail as the expected last sequence; retried (same msg id)
        until acknowledged or `publish_timeout_s`; ReplicationFailed when refused. One at a
        time, whichever thread asked (batches from the engine's, session records from the
        gateway's, checkpoints from this one): two publishes expecting the same tail would
        have one refused, which fences the node."""
        if self._publishing is None:
            self._publishing = asyncio.Lock()
        async with self._publishing:
            return await self._publish_one(kind, data, headers)

    async def _publish_one(self, kind: str, data: bytes, headers: dict) -> int:
        from nats.errors import Error as NatsError
        from nats.js.errors import APIError
        headers = {H_KIND: kind, H_TERM: str(self.term),
                   "Nats-Expected-Last-Sequence": str(self.applied_stream_seq), **headers}
        headers.setdefault("Nats-Msg-Id", f"{self.term}.{kind}.{self.applied_stream_seq}")
        deadline = time.monotonic() + self.settings.publish_timeout_s
        while True:
            try:
                ack = await self._js.publish(SUBJECT, data, timeout=1.0, headers=headers)
            except (NatsError, asyncio.TimeoutError, OSError) as err:
                # refused: another node appended (wrong last sequence) or the stream is gone;
                # anything else (no responders, timeouts, 503 while the stream's Raft group
                # elects a leader after a server died) is retried with the same Nats-Msg-Id
                if isinstance(err, APIError) and err.err_code in (10071, 10059):
                    raise ReplicationFailed(f"JetStream refused the {kind} publish: {err}") from None
                if time.monotonic() > deadline:
                    raise ReplicationFailed(f"no acknowledgement for the {kind} publish within "
                                            f"{self.settings.publish_timeout_s} s ({err!r})") from None
                await asyncio.sleep(0.05)
                continue
            if ack.seq != self.applied_stream_seq + 1:
                raise ReplicationFailed(f"the {kind} landed at stream seq {ack.seq}, expected "
                                        f"{self.applied_stream_seq + 1}")
            self.applied_stream_seq = ack.seq
            self.last_publish = time.monotonic()
            return ack.seq

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    # ------------------------------------------------------------------ leader: publishing
    def publish_batch(self, first_seq: int, rows: list) -> None:
        """In the engine thread, under the exchange's lock: publish applied commands; fence on
        failure (nothing of them has been acknowledged). The gateway sessions' records held
        since the last publish (the execution reports of these commands, among others) ride
        in the batch's last message: a command and the reports it caused are replicated
        together or not at all (what does not fit follows in `sessions` messages)."""
        try:
            last_cmd = first_seq + len(rows) - 1
            blobs = self.sessions.take(last_cmd) if self.sessions is not None else []
            entries = self.take_front_entries()
            cuts = message_cuts(first_seq, len(rows), entries, MAX_ROWS_PER_MESSAGE)
            last = cuts[-1][0]
            for start, end in cuts:
                part = orjson.dumps(rows[start:end])
                headers = {H_SEQ: str(first_seq + start),
                           "Nats-Msg-Id": f"{self.term}.{first_seq + start}"}
                fronts = [e for e in entries if start <= e[3] - first_seq < end]
                if fronts:
                    headers[H_FRONTS] = orjson.dumps(fronts).decode()
                if start == last and blobs:
                    attached = blobs.pop(0)
                    headers[H_SESSIONS] = str(len(attached))
                    part += attached
                self._call(self._publish(BATCH, part, headers))
                for name, epoch, k, _, _ in fronts:
                    self.front_in_stream[name] = [epoch, k]
            self.published_cmd_seq = last_cmd
            for blob in blobs:
                self._call(self._publish(SESSIONS, blob, {}))
            self.since_checkpoint += len(rows)
            if self.since_checkpoint >= self.settings.checkpoint_every:
                self._call(self._publish_checkpoint(CHECKPOINT, first_seq + len(rows) - 1))
        except Exception as err:     # ReplicationFailed, or anything unforeseen: stop
            self.fence(f"{err}; the commands since stream seq {self.applied_stream_seq} were "
                       f"never acknowledged")

    def publish_sessions(self, blob: bytes) -> None:
        """In the gateway's thread: publish session records that no batch carried (before
        the bytes they stand for are written); fence on failure."""
        if not self.leading:
            self.fence("a standby's FIX sessions produced output")
        try:
            with self.exchange._lock:
                self._call(self._publish(SESSIONS, blob, {}))
        except Exception as err:
            self.fence(f"{err}; FIX session records were never acknowledged")

    async def _publish_checkpoint(self, kind: str, cmd_seq: int) -> None:
        state_hash = self.exchange.state_hash()
        body = {"cmd_seq": cmd_seq, "hash": state_hash, "node": self.settings.node,
                "fix": self.fix_address, "confirmed": self.delivered()}
        await self._publish(kind, orjson.dumps(body), {})
        self.since_checkpoint = 0
        self._write_status(cmd_seq, state_hash)
        # a checkpoint after a batch precedes the batch's local journal write (commit)
        position = (self.applied_stream_seq, cmd_seq, self.term)
        if self.journal.inner.next_seq - 1 >= cmd_seq:
            self._note_position(*position)
        else:
            self.journal.position_due = position

    def delivered(self) -> dict:
        """Relay -> the last instruction the ledger confirmed, as far as this node knows: its
        own relays' cursors, raised to what the leader's checkpoints said its relays
        confirmed (the nodes share one ledger). A leader's checkpoints carry it; a standby's
        join bundle starts the joined node's relays there (module doc, "Settlement")."""
        return {name: max(relay.cursor.value, self.leader_confirmed.get(name, 0))
                for name, relay in self.exchange.relays.items()}

    async def _idle_checkpoint(self) -> None:
        lock = self.exchange._lock
        if not lock.acquire(blocking=False):
            return
        try:
            if self.exchange.uncommitted:
                return
            await self._publish_checkpoint(CHECKPOINT, self.journal.next_seq - 1)
        finally:
            lock.release()

    # ------------------------------------------------------------------ election
    async def _run(self) -> None:
        try:
            await (self._follow_as_front() if self.front else self._follow())
        except Exception as err:      # a node that cannot follow must not linger as a standby
            self.fence(f"following the stream failed: {err!r}")

    async def _follow(self) -> None:
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
        if self._joined_sessions and self.sessions is not None:
            self.sessions.mirror(self._joined_sessions)   # queued before any stream record
        self._joined_sessions = b""
        # after the bundle (joined), or the position file (restarted: the rest of its
        # journal's prefix is skipped message by message), or from the stream's start
        await self._subscribe(self.applied_stream_seq + 1)
        self._spawn(self._report_positions())
        watchdog = self._spawn(self._watch_subscription())
        value = orjson.dumps({"node": self.settings.node, "fix": self.fix_address})
        while not self._closed:
            try:
                revision = await self._kv.create(LEASE_KEY, value)
            except KeyWrongLastSequenceError:
                if self._closed:
                    return                   # we resigned meanwhile
                try:
                    entry = await self._kv.get(LEASE_KEY)
                    self.leader_info = orjson.loads(entry.value)
                except KeyNotFoundError:
                    self.leader_info = {}
                except Exception:
                    pass
                await asyncio.sleep(self.settings.poll_s)
                continue
            except Exception:
                await asyncio.sleep(self.settings.poll_s)
                continue
            watchdog.cancel()
            await self._promote(revision, value)
            return

    async def _watch_subscription(self) -> None:
        """A standby that lags the stream without progress for 2 s subscribes again from
        where it is (the client's ordered consumer does not always survive the loss of the
        server it was attached to)."""
        seen, since = self.applied_stream_seq, time.monotonic()
        while not self._closed and not self.leading:
            await asyncio.sleep(0.5)
            if self.applied_stream_seq != seen:
                seen, since = self.applied_stream_seq, time.monotonic()
                continue
            if time.monotonic() - since < 2:
                continue
            try:
                last = (await self._js.stream_info(STREAM)).state.last_seq
                if last > self.applied_stream_seq and not self.leading:
                    stale, self._sub = self._sub, None
                    if stale is not None:
                        try:
                            await stale.unsubscribe()
                        except Exception:
                            pass
                    await self._subscribe(self.applied_stream_seq + 1)
            except Exception:
                pass
            since = time.monotonic()

    async def _promote(self, revision: int, value: bytes) -> None:
        self._lease_rev = self.term = revision
        self.leader_info = orjson.loads(value)
        self._spawn(self._renew(value))
        if revision <= self.marker_term:
            self.fence(f"lease revision {revision} is not above the stream's term "
                       f"{self.marker_term} (was the {LEASE_BUCKET} bucket recreated?)")
        progress, seen = time.monotonic(), self.applied_stream_seq
        while True:
            if self.applied_stream_seq != seen:
                progress, seen = time.monotonic(), self.applied_stream_seq
            elif time.monotonic() - progress > 30:
                self.fence(f"won the lease but cannot catch up with the stream (stuck at "
                           f"stream seq {seen})")
            try:
                if self._sub is None:
                    await self._subscribe(self.applied_stream_seq + 1)
                info = await self._js.stream_info(STREAM)
                if self.applied_stream_seq < info.state.last_seq:
                    await asyncio.sleep(0.005)     # the subscription applies what is left
                    continue
                if self.marker_term == self.term:  # our marker landed after all (a publish
                    break                          # that timed out was stored)
                await self._sub.unsubscribe()
                self._sub = None
                with self.exchange._lock:
                    await self._publish_checkpoint(TERM, self.journal.next_seq - 1)
                break
            except Exception:     # someone appended after our catch-up, or NATS is electing
                stale, self._sub = self._sub, None     # a stream leader: catch up again
                if stale is not None:
                    try:
                        await stale.unsubscribe()
                    except Exception:
                        pass
                await asyncio.sleep(0.05)
        self.marker_term = self.term
        self.applied_cmds = self.published_cmd_seq = self.journal.next_seq - 1
        self.journal.publishing = True
        self.leading = True
        self._write_status(self.journal.next_seq - 1, self.exchange.state_hash())
        self._log(f"ccerx serve: cluster node {self.settings.node} leads (term {self.term}, "
                  f"stream seq {self.applied_stream_seq})")
        for relay in self.exchange.relays.values():
            relay.start()
        if self._on_leader is not None:
            self._on_leader()
        if self.front_handler is not None:    # (after on_leader: queued behind its take-over)
            await self._nc.subscribe(FRONT_SUBJECT, cb=self._on_front_batch)
        self._spawn(self._idle_loop())

    async def _renew(self, value: bytes) -> None:
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
        interval = self.settings.lease_s / 4
        while not self._closed:
            await asyncio.sleep(interval)
            if self._closed or not self.leading and self.marker_term == self.term:
                return                       # resigned (close) after leading
            try:
                self._lease_rev = await self._kv.update(LEASE_KEY, value, last=self._lease_rev)
            except KeyWrongLastSequenceError:
                if self._closed:
                    return                   # we resigned meanwhile
                try:
                    entry = await self._kv.get(LEASE_KEY)
                except KeyNotFoundError:
                    entry = None
                except Exception:
                    continue
                if entry is None:            # expired while NATS was out of reach: take it
                    try:                     # back (the stream's expected sequence still fences)
                        self._lease_rev = await self._kv.create(LEASE_KEY, value)
                        continue
                    except Exception:
                        pass
                self.fence("lost the leader lease to another node")
            except Exception:
                continue                     # NATS unreachable: publishes decide our fate

    async def _idle_loop(self) -> None:
        while not self._closed and self.leading:
            await asyncio.sleep(self.settings.idle_checkpoint_s / 2)
            if (self.since_checkpoint and time.monotonic() - self.last_publish
                    >= self.settings.idle_checkpoint_s):
                try:
                    await self._idle_checkpoint()
                except Exception as err:
                    self.fence(f"checkpoint: {err!r}")

    # ------------------------------------------------------------------ standby: applying
    async def _subscribe(self, start: int) -> None:
        from nats.js.api import ConsumerConfig, DeliverPolicy
        self._sub = await self._js.subscribe(
            SUBJECT, ordered_consumer=True, cb=self._on_message,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                                  opt_start_seq=max(1, start)))

    async def _on_message(self, msg) -> None:
        seq = msg.metadata.sequence.stream
        if seq <= self.applied_stream_seq or self.leading:
            return
        if seq != self.applied_stream_seq + 1:
            try:
                first = (await self._js.stream_info(STREAM)).state.first_seq
            except Exception:
                first = 0
            if first > self.applied_stream_seq + 1:
                self.fence(f"the stream was trimmed past this node (it starts at stream seq "
                           f"{first}, this node applied {self.applied_stream_seq}): start it "
                           f"again and it rejoins from the newest join bundle")
            self.fence(f"stream gap: message {seq} after {self.applied_stream_seq}",
                       EXIT_DIVERGED)
        if not self.first_stream_seq:
            self.first_stream_seq = seq
        if self.hand_over is not None:       # a front applies where its gateway translates
            self.applied_stream_seq = seq
            self.hand_over(seq, msg.headers or {}, msg.data)
            return
        try:
            checked = self.apply_message(msg.headers or {}, msg.data)
        except Exception as err:
            self.fence(f"cannot apply stream message {seq}: {err!r}", EXIT_DIVERGED)
        self.applied_stream_seq = seq
        if checked:                    # the journal holds every command up to here
            self._note_position(seq, self.journal.next_seq - 1, self.marker_term)
        if (checked and self.settings.snapshot_every
                and self._since_bundle >= self.settings.snapshot_every
                and msg.metadata.num_pending <= BUNDLE_MAX_LAG):
            self._since_bundle = 0
            try:
                self._make_bundle(seq)
            except Exception as err:   # a bundle is an optimisation: say so, keep following
                self._log(f"ccerx serve: cluster node {self.settings.node}: no join bundle at "
                          f"stream seq {seq}: {err!r}")

    def apply_message(self, headers: dict, data: bytes) -> bool:
        """Apply one stream message; True if it was a checkpoint this node's state matched."""
        kind, term = headers.get(H_KIND), int(headers.get(H_TERM, "0"))
        journal = self.journal
        if kind == BATCH:
            if term != self.marker_term:
                raise RuntimeError(f"a batch of term {term} in term {self.marker_term}")
            attached = int(headers.get(H_SESSIONS, "0"))
            blob = data[len(data) - attached:] if attached else b""
            first, rows = int(headers[H_SEQ]), orjson.loads(data[:len(data) - attached])
            fronts = orjson.loads(headers[H_FRONTS]) if H_FRONTS in headers else []
            for name, epoch, k, _, _ in fronts:    # (a restart's prefix included)
                self.front_last[name] = self.front_in_stream[name] = [epoch, k]
            next_seq = journal.next_seq + self._deferred_rows
            if first > next_seq:
                raise RuntimeError(f"commands {next_seq}..{first - 1} are missing")
            rows = rows[next_seq - first:]    # a restarted node has a prefix already
            if rows:
                commands = [jr.decode_command(row) for row in rows]
                if self._deferring:
                    events = self.exchange.apply_many(commands, _commit=False)
                    self._deferred_rows += len(rows)
                else:
                    events = self.exchange.apply_many(commands)
                self._since_bundle += len(rows)
                if self.on_applied is not None:
                    self.on_applied(next_seq, events, fronts)
            if blob and self.sessions is not None:
                self.sessions.mirror(blob)
        elif kind == SESSIONS:
            if term != self.marker_term:
                raise RuntimeError(f"session records of term {term} in term {self.marker_term}")
            if self.sessions is not None:
                self.sessions.mirror(data)
        elif kind in (TERM, CHECKPOINT):
            body = orjson.loads(data)
            if kind == TERM:
                if term <= self.marker_term:
                    raise RuntimeError(f"term {term} after term {self.marker_term}")
                self.marker_term = term
                self.leader_info = {"node": body["node"], "fix": body["fix"]}
            for name, confirmed in body.get("confirmed", {}).items():
                if confirmed > self.leader_confirmed.get(name, 0):
                    self.leader_confirmed[name] = confirmed
            # (behind it: a restart's prefix)
            if body["cmd_seq"] == journal.next_seq + self._deferred_rows - 1:
                mine = self.exchange.state_hash()
                if mine != body["hash"]:
                    self.fence(f"STATE DIVERGED at command {body['cmd_seq']}: the leader "
                               f"{body['node']} has state hash {body['hash']}, this node "
                               f"{mine}", EXIT_DIVERGED)
                self._write_status(body["cmd_seq"], mine)
                return True
        else:
            raise RuntimeError(f"unknown message kind {kind!r}")
        return False

    # ------------------------------------------------------------------ fronts (module doc)
    def apply_front_batch(self, name: str, epoch: int, k: int, data: bytes) -> Optional[list]:
        """Leader, in the engine thread (the gateway's loop): apply front `name`'s batch k of
        `epoch` (its process's start) if it is the next one: k == 1 of a newer epoch, or the
        last k + 1 of the same. Returns the events of each command, or None (dropped: not
        leading, a duplicate, a gap or an older epoch; the front re-sends what it has not
        seen in the stream; or refused: not a valid front name, or a row that is not a
        command a front makes, decode_front_batch; logged, at most every
        FRONT_REFUSAL_LOG_S). The whole batch is checked before any of it is applied; its
        commands are then applied one after the other (deferred: the next commit publishes
        them, with the entry in H_FRONTS)."""
        if not valid_front_name(name) or type(epoch) is not int or type(k) is not int \
                or not (0 < epoch < _INT64 and 0 < k < _INT64):
            self._refuse_front(f"a front batch under the name {str(name)[:80]!r} (epoch "
                               f"{str(epoch)[:20]}, k {str(k)[:20]}): not a front's")
            return None
        last = self.front_last.get(name)
        if last is None or epoch > last[0]:
            fits = k == 1
        else:
            fits = epoch == last[0] and k == last[1] + 1
        if not fits or not self.leading:
            self.fronts_dropped += 1
            return None
        try:
            commands = decode_front_batch(data, self.front_refused_owners)
        except ValueError as err:     # nothing applied, nothing noted
            self._refuse_front(f"front {name}'s batch {k} (epoch {epoch}) refused: {err}")
            return None
        first = self.applied_cmds + 1
        apply = self.engine.apply_deferred
        events = [apply(command) for command in commands]
        self.front_last[name] = [epoch, k]
        self._front_entries.append([name, epoch, k, first, len(commands)])
        return events

    def _refuse_front(self, why: str) -> None:
        """A front batch refused (module doc, "Fronts"): counted; one log line at most every
        FRONT_REFUSAL_LOG_S (any NATS client can send them), saying how many since the last."""
        self.fronts_dropped += 1
        self.fronts_refused += 1
        now = time.monotonic()
        if now - self._front_refusal_logged >= FRONT_REFUSAL_LOG_S:
            self._front_refusal_logged = now
            unlogged = self.fronts_refused - self._fronts_refused_logged - 1
            self._fronts_refused_logged = self.fronts_refused
            more = f" ({unlogged} more refused since the last such line)" if unlogged else ""
            self._log(f"ccerx serve: {why}{more}")

    def take_front_entries(self) -> list:
        """The front batches applied since the last publish (their H_FRONTS entries)."""
        entries, self._front_entries = self._front_entries, []
        return entries

    async def _on_front_batch(self, msg) -> None:
        """Leader, NATS thread: a front batch; its gateway applies it (front_handler)."""
        headers = msg.headers or {}
        try:
            name = headers[H_FRONT]
            epoch, k = int(headers[H_FRONT_EPOCH][:20]), int(headers[H_FRONT_SEQ][:20])
        except (KeyError, ValueError, TypeError):
            return
        if self.leading and self.front_handler is not None:
            self.front_handler(name, epoch, k, msg.data)

    def send_front_batch(self, epoch: int, k: int, data: bytes) -> None:
        """A front, from its gateway's thread: send batch k to the leader (core NATS, not
        waited for; a batch lost is re-sent by the gateway, gateway/front.py)."""
        headers = {H_FRONT: self.settings.node, H_FRONT_EPOCH: str(epoch),
                   H_FRONT_SEQ: str(k)}
        asyncio.run_coroutine_threadsafe(self._send_front(data, headers), self._loop)

    async def _send_front(self, data: bytes, headers: dict) -> None:
        try:
            await self._nc.publish(FRONT_SUBJECT, data, headers=headers)
        except Exception:
            pass                         # NATS out of reach: the gateway re-sends

    def apply_handed(self, seq: int, headers: dict, data: bytes, defer: bool = False) -> None:
        """A front, in its gateway's thread: apply stream message `seq` (handed over by
        `hand_over`, in stream order); stop loudly if it cannot be applied. defer=True: its
        commands reach the local journal at commit_deferred() (one fsync for the messages
        that queued up meanwhile); nothing that depends on them may leave before."""
        self._deferring = defer
        try:
            checked = self.apply_message(headers, data)
        except Exception as err:
            self.fence(f"cannot apply stream message {seq}: {err!r}", EXIT_DIVERGED)
        finally:
            self._deferring = False
        self.front_applied_seq = seq
        if checked:       # its position, once the local journal holds the checkpoint's commands
            due = (seq, self.journal.next_seq + self._deferred_rows - 1, self.marker_term)
            if self._deferred_rows:
                self._position_due = due
            else:
                self.note_position_soon(*due)

    def commit_deferred(self) -> None:
        """A front: write what apply_handed(defer=True) applied to the local journal (fsync)."""
        if self._deferred_rows:
            try:
                self.exchange.commit()
            except Exception as err:
                self.fence(f"cannot write the local journal: {err!r}")
            self._deferred_rows = 0
        if self._position_due is not None:
            due, self._position_due = self._position_due, None
            self.note_position_soon(*due)

    async def _follow_as_front(self) -> None:
        """A front follows the stream (never stands for leader); `ready` once it applied
        what the stream held when it started (its gateway takes logons from then on)."""
        self.front_applied_seq = self.applied_stream_seq
        # after the bundle (joined), its position file (restarted) or from the start
        await self._subscribe(self.applied_stream_seq + 1)
        self._spawn(self._report_positions())     # a front holds the trimming back too
        self._spawn(self._watch_subscription())
        target = None
        while not self._closed and not self.ready:
            try:
                if target is None:
                    target = (await self._js.stream_info(STREAM)).state.last_seq
                if self.front_applied_seq >= target:
                    self.ready = True
                    self._write_status()
                    self._log(f"ccerx serve: front {self.settings.node} caught up with the "
                              f"stream (stream seq {self.front_applied_seq})")
                    return
            except Exception:
                pass
            await asyncio.sleep(0.02)

    # ------------------------------------------------------------------ retention
    def _note_position(self, stream_seq: int, cmd_seq: int, term: int) -> None:
        """The journal holds every command of stream messages up to `stream_seq`: write it
        down (a restart resumes after it) and report it (it holds the trimming back)."""
        write_atomic(self.exchange.data_dir / POSITION_FILE, orjson.dumps(
            {"stream_seq": stream_seq, "cmd_seq": cmd_seq, "term": term,
             "leader": self.leader_info, "fronts": self.front_in_stream}))
        self.position = (stream_seq, cmd_seq)

    def note_position_soon(self, stream_seq: int, cmd_seq: int, term: int) -> None:
        """From the engine's thread: the file is written in the cluster thread."""
        self._loop.call_soon_threadsafe(self._note_position, stream_seq, cmd_seq, term)

    async def _report_positions(self) -> None:
        """Put this node's position into CCERX_NODES when it changes (at most every REPORT_S)
        and at least every HEARTBEAT_S: a node whose report is older than `retain_s` no
        longer holds the stream's trimming back, and one whose report is older than a few
        heartbeats is not running (`ccerx cluster status` says so)."""
        reported, at = None, 0.0
        while not self._closed:
            position = self.position
            if position is not None and (position != reported
                                         or time.monotonic() - at >= HEARTBEAT_S):
                role = "front" if self.front else "leader" if self.leading else "standby"
                try:
                    await self._nodes.put(self.settings.node, orjson.dumps(
                        {"stream_seq": position[0], "cmd_seq": position[1],
                         "at": time.time(), "role": role}))
                    reported, at = position, time.monotonic()
                except Exception:
                    pass                      # NATS unreachable: the next round tries again
            await asyncio.sleep(REPORT_S)

    async def _trim_stream(self, bundles: list) -> None:
        """After a join bundle was put: purge the stream's messages below the oldest kept
        bundle's stream seq, or below the position of the slowest node that reported within
        `retain_s`, whichever is lower. Only once KEEP_BUNDLES bundles exist (a joining node
        has a second one if the newest is unreadable)."""
        if self.settings.retain_s is None or len(bundles) < KEEP_BUNDLES:
            return
        oldest = int(bundles[-KEEP_BUNDLES][len(SNAPSHOT_PREFIX):])
        point, slowest = oldest, "the oldest kept join bundle"
        now, keys = time.time(), await self._nodes.keys()
        if self.settings.node not in keys:
            return                            # positions not readable yet: trim nothing
        for key in keys:
            try:
                report = orjson.loads((await self._nodes.get(key)).value)
            except Exception:
                continue                      # deleted meanwhile
            if now - report["at"] <= self.settings.retain_s and report["stream_seq"] < point:
                point, slowest = report["stream_seq"], f"node {key}"
        first = (await self._js.stream_info(STREAM)).state.first_seq
        if point + 1 <= first:
            return
        await self._js.purge_stream(STREAM, seq=point + 1)
        self._log(f"ccerx serve: cluster node {self.settings.node} trimmed the stream to start "
                  f"at stream seq {point + 1} (held back by {slowest}; was {first})")

    def _ask_cluster(self, coroutine, timeout: float, verb: str, doing: str):
        """Before the engine opens: run `coroutine` against NATS in a loop of its own; a
        failure is JoinFailed naming the cluster (without credentials) and what was asked."""
        try:
            return run_in_fresh_loop(coroutine, timeout)
        except Exception as err:
            raise JoinFailed(f"cannot {verb} the cluster at "
                             f"{shown_servers(self.settings.servers)}: {doing}: {err!r}") from None

    def _behind_stream(self, resume: Optional[dict]) -> str:
        """Before a restarted node opens its engine: why it cannot resume from its own
        directory (the stream was trimmed past where its journal ends), or ""."""
        bounds = self._ask_cluster(stream_bounds(self.settings), 30, "reach",
                                   "reading the stream's bounds")
        if bounds is None:
            return ""
        first, _ = bounds
        start = resume["stream_seq"] + 1 if resume is not None else 1
        if first <= start:
            return ""
        where = (f"its journal ends at stream seq {resume['stream_seq']}" if resume is not None
                 else f"it has no {POSITION_FILE} to say where its journal ends")
        return f"the stream now starts at stream seq {first} and {where}"

    def _rejoin(self, data_dir: Path, why: str) -> None:
        """A restarted node behind the stream: its files go to DIR/set-aside-<time>-<pid>/ (its
        journal is a prefix of the stream: nothing in it is lost) and it joins from the
        newest bundle as a new node would; refused loudly if there is no bundle."""
        aside = data_dir / f"{SET_ASIDE_PREFIX}{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"

        def set_aside() -> None:             # once a bundle is in hand
            aside.mkdir()
            moved = [path for _, path in snap.list_snapshots(data_dir)]
            moved += jr.segment_paths(data_dir) + sorted(data_dir.glob("cursor-*.json"))
            moved += [data_dir / name for name in (OPENING, jr.BASE_FILE, POSITION_FILE,
                                                   STATUS_FILE)]
            for path in moved:
                if path.exists():
                    path.rename(aside / path.name)
            self._log(f"ccerx serve: cluster node {self.settings.node} is behind the stream "
                      f"({why}); its files are set aside in {aside} and it rejoins from the "
                      f"newest join bundle")
        self._join_from_bundle(data_dir, set_aside)
        if self.joined is None:
            raise JoinFailed(f"cluster node {self.settings.node} is behind the stream ({why}) "
                             f"and there is no join bundle in {SNAPSHOT_BUCKET} to rejoin from "
                             f"(its data directory is left as it was)")

    # ------------------------------------------------------------------ join bundles
    def _make_bundle(self, stream_seq: int) -> None:
        """In the cluster thread, right after checkpoint `stream_seq` matched: snapshot the
        engine here (it only changes in this thread on a standby), the FIX stores on the
        gateway's loop (after every record mirrored so far), and put the bundle in the object
        store in the background."""
        started = time.monotonic()
        path = self.exchange.snapshot()
        last = self.journal.next_instruction - 1
        confirmed = {name: min(value, last) for name, value in self.delivered().items()}
        # what the ledger may still lack before the snapshot: this standby's outbox holds
        # every instruction after its own cursors, which are at or below `confirmed`
        floor = min(confirmed.values(), default=last)
        pending = [tuple(inst) for inst in self.exchange.outbox.read(floor, last - floor)]
        meta = {"stream_seq": stream_seq, "cmd_seq": self.journal.next_seq - 1,
                "instruction": last, "term": self.marker_term,
                "hash": self.exchange.state_hash(), "leader": self.leader_info,
                "node": self.settings.node, "relays": sorted(self.exchange.relays),
                "confirmed": confirmed, "pending": pending,
                "fronts": dict(self.front_in_stream)}    # (encoded in another thread)
        parts = [path.read_bytes(), (self.exchange.data_dir / OPENING).read_bytes()]
        sessions = self.sessions.snapshot() if self.sessions is not None else None
        self._spawn(self._put_bundle(meta, parts, sessions, started))

    async def _put_bundle(self, meta: dict, parts: list, sessions, started: float) -> None:
        try:
            blob = await asyncio.wrap_future(sessions) if sessions is not None else b""
            # compressing takes a while: not in this loop, which applies the stream
            bundle = await asyncio.to_thread(encode_bundle, meta, parts[0], parts[1], blob)
            store = self._snapshots
            await store.put(f"{SNAPSHOT_PREFIX}{meta['stream_seq']:016d}", bundle)
            names = sorted(info.name for info in await store.list(ignore_deletes=True)
                           if info.name.startswith(SNAPSHOT_PREFIX))
            for old in names[:-KEEP_BUNDLES]:
                try:
                    await store.delete(old)
                except Exception:
                    pass              # another standby deleted it first
            self._log(f"ccerx serve: cluster node {self.settings.node} put a join bundle at "
                      f"stream seq {meta['stream_seq']} (command {meta['cmd_seq']}, "
                      f"{len(bundle):,} bytes) in {time.monotonic() - started:.2f} s")
            try:
                await self._trim_stream(names[-KEEP_BUNDLES:])
            except Exception as err:   # the next bundle tries again
                self._log(f"ccerx serve: cluster node {self.settings.node}: stream not "
                          f"trimmed: {err!r}")
        except Exception as err:
            self._log(f"ccerx serve: cluster node {self.settings.node}: join bundle at stream "
                      f"seq {meta['stream_seq']} not stored: {err!r}")

    def _join_from_bundle(self, data_dir: Path, before_writing=None) -> None:
        """Before the engine opens an empty `data_dir`: fetch the newest join bundle and lay
        it out as a data directory whose journal starts after its snapshot. No bundle: the
        directory stays empty (the node replays the stream from seq 1). `before_writing()`
        runs once a bundle is fetched (a rejoin empties the directory then)."""
        started = time.monotonic()
        found = self._ask_cluster(fetch_newest_bundle(self.settings), 60, "join",
                                  "reading the join bundles")
        if found is None:
            return
        self._log(f"ccerx serve: cluster node {self.settings.node} fetched a join bundle "
                  f"({len(found):,} bytes) in {time.monotonic() - started:.2f} s")
        meta, snapshot_file, opening, sessions = decode_bundle(found)
        if before_writing is not None:
            before_writing()
        private_dir(data_dir)
        write_atomic(data_dir / OPENING, opening)
        write_atomic(snap.snapshot_path(data_dir, meta["cmd_seq"]), snapshot_file)
        # the relays start where the ledger was known to be; the instructions after that
        # and before the snapshot came in the bundle (a bundle without them: at the snapshot)
        confirmed = meta.get("confirmed", {})
        jr.write_base(data_dir, meta["cmd_seq"], meta["instruction"], meta.get("pending", ()))
        for name in meta["relays"]:
            write_atomic(data_dir / f"cursor-{name}.json", orjson.dumps(
                {"confirmed": confirmed.get(name, meta["instruction"])}))
        write_atomic(data_dir / POSITION_FILE, orjson.dumps(
            {"stream_seq": meta["stream_seq"], "cmd_seq": meta["cmd_seq"],
             "term": meta["term"], "leader": meta["leader"],
             "fronts": meta.get("fronts", {})}))   # (a restart before any checkpoint)
        self.joined, self._joined_sessions = meta, sessions

    # ------------------------------------------------------------------ status
    def _write_status(self, cmd_seq: Optional[int] = None, state_hash: Optional[str] = None):
        """DIR/cluster-status.json: what an operator (and the tests) read about this node."""
        write_atomic(self.exchange.data_dir / STATUS_FILE, orjson.dumps({
            "node": self.settings.node,
            "role": "leader" if self.leading else "front" if self.front else "standby",
            "term": self.term if self.leading else self.marker_term,
            "stream_seq": self.applied_stream_seq, "cmd_seq": cmd_seq,
            "first_stream_seq": self.first_stream_seq,
            "joined_at": self.joined["stream_seq"] if self.joined is not None else None,
            "state_hash": state_hash, "leader": self.leader_info}))


# ---------------------------------------------------------------------- join bundles
def is_empty_data_dir(data_dir) -> bool:
    """No snapshot and no journal: a new node (what DurableExchange would call fresh)."""
    data_dir = Path(data_dir)
    return not snap.list_snapshots(data_dir) and not jr.segment_paths(data_dir) \
        if data_dir.exists() else True


def read_position(data_dir: Path) -> Optional[dict]:
    """DIR/cluster-position.json ({"stream_seq", "cmd_seq", "term", "leader"}), or None."""
    try:
        return orjson.loads((Path(data_dir) / POSITION_FILE).read_bytes())
    except FileNotFoundError:
        return None


async def stream_bounds(settings: ClusterSettings) -> Optional[tuple[int, int]]:
    """(first, last) stream seq of CCERX_CMDS, or None if the stream does not exist yet."""
    import nats
    from nats.js.errors import NotFoundError
    async def quiet(err):            # the caller says what failed, once
        pass
    nc = await nats.connect(list(settings.servers), name=f"ccerx-{settings.node}-probe",
                            max_reconnect_attempts=5, connect_timeout=2, error_cb=quiet)
    try:
        try:
            info = await nc.jetstream(timeout=5).stream_info(STREAM)
        except NotFoundError:
            return None
        return info.state.first_seq, info.state.last_seq
    finally:
        await nc.close()


def encode_bundle(meta: dict, snapshot_file: bytes, opening: bytes, sessions: bytes) -> bytes:
    """meta, snapshot file, opening.json, session blob: each zlib-compressed (FIX messages
    and the snapshot's JSON shrink ~6x, and the fetch is what a joining node waits for)."""
    parts = [zlib.compress(part, 1) for part in (orjson.dumps(meta), snapshot_file, opening,
                                                  sessions)]
    return BUNDLE_MAGIC + b"".join(len(part).to_bytes(8, "little") + part for part in parts)


def decode_bundle(data: bytes) -> tuple[dict, bytes, bytes, bytes]:
    """(meta, snapshot file, opening.json, session blob); ValueError if it is not a bundle."""
    if not data.startswith(BUNDLE_MAGIC):
        raise ValueError("not a ccerx join bundle")
    parts, at = [], len(BUNDLE_MAGIC)
    for _ in range(4):
        length = int.from_bytes(data[at:at + 8], "little")
        at += 8
        if at + length > len(data):
            raise ValueError("a join bundle cut short")
        try:
            parts.append(zlib.decompress(data[at:at + length]))
        except zlib.error as err:
            raise ValueError(f"a join bundle's part is damaged: {err}") from None
        at += length
    return orjson.loads(parts[0]), parts[1], parts[2], parts[3]


async def fetch_newest_bundle(settings: ClusterSettings) -> Optional[bytes]:
    """The newest join bundle in CCERX_SNAPSHOTS, or None if there is none."""
    import nats
    from nats.js.errors import BucketNotFoundError, NotFoundError
    nc = await nats.connect(list(settings.servers), name=f"ccerx-{settings.node}-join",
                            max_reconnect_attempts=5, connect_timeout=2)
    try:
        js = nc.jetstream(timeout=5)
        try:
            store = await js.object_store(SNAPSHOT_BUCKET)
            infos = await store.list(ignore_deletes=True)
        except (BucketNotFoundError, NotFoundError):
            return None
        names = sorted(info.name for info in infos if info.name.startswith(SNAPSHOT_PREFIX))
        for name in reversed(names):
            try:
                return (await store.get(name)).data
            except NotFoundError:
                continue          # deleted meanwhile (a newer one was put): take the next
        return None
    finally:
        await nc.close()


def run_in_fresh_loop(coroutine, timeout: float):
    """Run a coroutine to its end in an event loop of its own thread (the caller's thread may
    be running one already)."""
    result: list = []

    def run():
        try:
            result.append((True, asyncio.run(asyncio.wait_for(coroutine, timeout))))
        except BaseException as err:
            result.append((False, err))
    thread = threading.Thread(target=run, name="cluster-join")
    thread.start()
    thread.join()
    ok, value = result[0]
    if not ok:
        raise value
    return value
