"""What an operator asks of a replicated exchange (`ccerx cluster status`): who leads, how the
stream and its copies stand, which join bundles exist, and where each node is.

Read-only: it reads the JetStream stream, the lease bucket and the snapshot object store that
engine/durable/replicated.py writes (names there), and the nodes' own `cluster-status.json`
files when their data directories are given. Never takes the lease, never publishes.

Health (the exit code of the command): `healthy` is True when a node holds the lease and
renewed it within half its TTL (by the NATS server's clock against this machine's), every
node that ever reported in CCERX_NODES reported within SILENT_S (nodes and fronts report
every HEARTBEAT_S; by the reporters' clocks against this machine's), the
stream's Raft group has a leader and every replica is current and online, and every node
given by its data directory follows the stream within `max_lag` messages with the state hash
of any other node at the same command seq. Each problem is one line of `problems`.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import NamedTuple, Optional

import orjson

from ccerx.engine.durable.replicated import (HEARTBEAT_S, LEASE_BUCKET, LEASE_KEY,
                                             NODES_BUCKET, SNAPSHOT_BUCKET, SNAPSHOT_PREFIX,
                                             STATUS_FILE, STREAM, run_in_fresh_loop,
                                             shown_servers)

DEFAULT_MAX_LAG = 100      # stream messages a following node may be behind and still be well
SILENT_S = 5 * HEARTBEAT_S  # a node whose last report is older has stopped (or lost NATS)


class ClusterStatus(NamedTuple):
    stream: Optional[dict]    # messages, first/last seq, bytes, replicas, raft leader, peers
    lease: Optional[dict]     # {"node", "fix", "revision", "ttl_s", "renewed_s_ago"};
                              # None: nobody leads
    bundles: list             # [{"name", "stream_seq", "bytes"}], oldest first
    reports: dict             # node -> its last CCERX_NODES report, with "silent_s"
    nodes: list               # each given data directory's status file, with "lag"
    problems: list            # one line per problem; [] means healthy

    @property
    def healthy(self) -> bool:
        return not self.problems

    def to_json(self) -> bytes:
        return orjson.dumps({**self._asdict(), "healthy": self.healthy},
                            option=orjson.OPT_INDENT_2)


async def _answer(ask, what: str, errors: list, tries: int = 3):
    """One JetStream API call, asked again while the cluster elects (a server just died);
    None (and a line in `errors`) if it never answers."""
    from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError
    for attempt in range(tries):
        try:
            return await ask()
        except (BucketNotFoundError, KeyNotFoundError, NotFoundError):
            return None
        except Exception as err:       # timeouts, 503 while a Raft group elects its leader
            if attempt == tries - 1:
                errors.append(f"JetStream did not tell {what}: {err!r}")
            await asyncio.sleep(0.5)
    return None


async def _read_nats(servers: list) -> tuple[Optional[dict], Optional[dict], list, list]:
    import nats

    async def quiet(err) -> None:      # a server that is down is reported, not traced
        pass
    nc = await nats.connect(servers, name="ccerx-cluster-status", max_reconnect_attempts=2,
                            connect_timeout=2, allow_reconnect=True, error_cb=quiet)
    errors: list = []
    try:
        js = nc.jetstream(timeout=3)
        stream = None
        info = await _answer(lambda: js.stream_info(STREAM), f"the stream {STREAM}", errors)
        if info is not None:
            cluster = info.cluster
            peers = []
            if cluster is not None:
                peers.append({"server": cluster.leader, "role": "leader", "current": True,
                              "offline": False, "lag": 0})
                for peer in cluster.replicas or []:
                    peers.append({"server": peer.name, "role": "follower",
                                  "current": bool(peer.current), "offline": bool(peer.offline),
                                  "lag": peer.lag or 0})
            stream = {"name": STREAM, "messages": info.state.messages,
                      "first_seq": info.state.first_seq, "last_seq": info.state.last_seq,
                      "bytes": info.state.bytes, "replicas": info.config.num_replicas,
                      "raft_leader": cluster.leader if cluster is not None else None,
                      "peers": peers}

        async def ask_lease():
            # the lease key's last message, for its time: a leader renews every TTL/4
            kv = await js.key_value(LEASE_BUCKET)
            ttl = (await kv.status()).ttl
            last = await js.get_last_msg(f"KV_{LEASE_BUCKET}", f"$KV.{LEASE_BUCKET}.{LEASE_KEY}")
            if (last.headers or {}).get("KV-Operation") in ("DEL", "PURGE") or not last.data:
                return None                      # given up (a planned stop) or never taken
            age = max(0.0, time.time() - last.time.timestamp()) if last.time else None
            return {**orjson.loads(last.data), "revision": last.seq, "ttl_s": ttl,
                    "renewed_s_ago": None if age is None else round(age, 2)}
        lease = await _answer(ask_lease, "who holds the leader lease", errors)

        async def ask_bundles():
            items = await (await js.object_store(SNAPSHOT_BUCKET)).list(ignore_deletes=True)
            return [{"name": item.name, "bytes": item.size,
                     "stream_seq": int(item.name[len(SNAPSHOT_PREFIX):])}
                    for item in items if item.name.startswith(SNAPSHOT_PREFIX)]
        bundles = await _answer(ask_bundles, "the join bundles", errors) or []
        bundles.sort(key=lambda b: b["stream_seq"])

        async def ask_reports():
            kv = await js.key_value(NODES_BUCKET)
            found = {}
            for key in await kv.keys():
                try:
                    found[key] = orjson.loads((await kv.get(key)).value)
                except Exception:
                    continue              # deleted meanwhile
            return found
        reports = await _answer(ask_reports, "the nodes' reports", errors) or {}
        return stream, lease, bundles, reports, errors
    finally:
        await nc.close()


def read_node(data_dir: Path) -> dict:
    """A node's own status file (what it last wrote), or why there is none."""
    try:
        status = orjson.loads((Path(data_dir) / STATUS_FILE).read_bytes())
    except FileNotFoundError:
        return {"dir": str(data_dir), "error": f"no {STATUS_FILE}: not a cluster node's "
                                               "data directory, or it never started"}
    except orjson.JSONDecodeError as err:
        return {"dir": str(data_dir), "error": f"{STATUS_FILE} is damaged: {err}"}
    status["dir"] = str(data_dir)
    status["age_s"] = round(time.time() - (Path(data_dir) / STATUS_FILE).stat().st_mtime, 1)
    return status


def cluster_status(servers: list, data_dirs: list = (), max_lag: int = DEFAULT_MAX_LAG,
                   timeout: float = 30) -> ClusterStatus:
    """Ask NATS, read the nodes' files, judge. ConnectionError if no NATS server answers."""
    try:
        stream, lease, bundles, reports, errors = run_in_fresh_loop(
            _read_nats(list(servers)), timeout)
    except Exception as err:
        raise ConnectionError(f"no NATS server of {shown_servers(servers)} answered: "
                              f"{err!r}") from None
    problems = list(errors)
    if stream is None and not errors:
        problems.append(f"no stream {STREAM}: no node has started on this NATS cluster")
    else:
        if stream["raft_leader"] is None:
            problems.append(f"the stream {STREAM} has no Raft leader (an election, or fewer "
                            "than a quorum of its servers are up): publishes wait")
        for peer in stream["peers"]:
            if peer["offline"]:
                problems.append(f"stream copy on NATS server {peer['server']} is offline")
            elif not peer["current"]:
                problems.append(f"stream copy on NATS server {peer['server']} is not current "
                                f"(behind by {peer['lag']} operations, or its server is "
                                "unreachable)")
        if len(stream["peers"]) < stream["replicas"]:
            problems.append(f"the stream has {len(stream['peers'])} of its "
                            f"{stream['replicas']} copies")
    if lease is None and not any("lease" in e for e in errors):
        problems.append("no node holds the leader lease: the exchange takes no orders")
    elif lease is not None and lease.get("ttl_s") and lease.get("renewed_s_ago") is not None \
            and lease["renewed_s_ago"] > lease["ttl_s"] / 2:
        problems.append(f"the leader {lease['node']} has not renewed its lease for "
                        f"{lease['renewed_s_ago']} s (it renews every {lease['ttl_s'] / 4} s): "
                        f"stopped or stuck; a standby takes over once the lease expires "
                        f"({lease['ttl_s']} s)")
    now = time.time()
    for name, report in sorted(reports.items()):
        report["silent_s"] = round(max(0.0, now - float(report.get("at", 0))), 1)
        if report["silent_s"] > SILENT_S:
            problems.append(f"node {name} has not reported for {report['silent_s']} s "
                            f"(nodes report every {HEARTBEAT_S:g} s): stopped, or cut off "
                            "from NATS")
    nodes = [read_node(Path(d)) for d in data_dirs]
    last = stream["last_seq"] if stream is not None else 0
    hash_at: dict = {}
    for node in nodes:
        if "error" in node:
            problems.append(f"{node['dir']}: {node['error']}")
            continue
        node["lag"] = max(0, last - int(node.get("stream_seq") or 0))
        if node.get("role") == "leader" and (lease is None or lease.get("node") != node["node"]):
            problems.append(f"node {node['node']} says it leads but does not hold the lease "
                            "(a stale status file: has it stopped?)")
        elif node.get("cmd_seq") is None:
            problems.append(f"node {node['node']} is starting: it has not yet checked its "
                            "state against a leader's checkpoint")
        elif node["lag"] > max_lag:
            problems.append(f"node {node['node']} is {node['lag']} stream messages behind")
        if node.get("cmd_seq") is not None and node.get("state_hash"):
            seen = hash_at.setdefault(node["cmd_seq"], (node["node"], node["state_hash"]))
            if seen[1] != node["state_hash"]:
                problems.append(f"STATE DIFFERS at command {node['cmd_seq']}: {seen[0]} has "
                                f"{seen[1]}, {node['node']} has {node['state_hash']}")
    return ClusterStatus(stream, lease, bundles, reports, nodes, problems)


def describe(status: ClusterStatus) -> str:
    """The status as an operator reads it on a terminal."""
    lines = []
    lease = status.lease
    lines.append(f"leader: {lease['node']} (FIX {lease['fix']}; holds the lease)"
                 if lease else "leader: none")
    stream = status.stream
    if stream is not None:
        lines.append(f"stream {stream['name']}: seq {stream['first_seq']}..{stream['last_seq']}"
                     f", {stream['messages']:,} messages, {stream['bytes']:,} bytes, "
                     f"{stream['replicas']} copies")
        for peer in stream["peers"]:
            state = ("offline" if peer["offline"] else "current" if peer["current"]
                     else f"NOT current (behind by {peer['lag']}, or unreachable)")
            lines.append(f"  copy on {peer['server']}: {peer['role']}, {state}")
    if status.bundles:
        lines.append("join bundles: " + ", ".join(
            f"{b['name']} ({b['bytes']:,} bytes)" for b in status.bundles))
    else:
        lines.append("join bundles: none (a new node replays the stream from its start)")
    for name, report in sorted(status.reports.items()):
        lines.append(f"node {name} reports: {report.get('role', '?')}, journal to stream seq "
                     f"{report['stream_seq']} (command {report['cmd_seq']}), "
                     f"{report['silent_s']} s ago")
    for node in status.nodes:
        if "error" in node:
            lines.append(f"node at {node['dir']}: {node['error']}")
            continue
        lines.append(f"node {node['node']}: {node['role']}, term {node['term']}, stream seq "
                     f"{node['stream_seq']} (behind by {node['lag']}), command "
                     f"{node['cmd_seq']}, state {node['state_hash']}, written "
                     f"{node['age_s']} s ago")
    lines.append("healthy" if status.healthy else "NOT HEALTHY:")
    lines.extend(f"  - {problem}" for problem in status.problems)
    return "\n".join(lines)
