"""`ccerx cluster status`: who leads a replicated exchange, how its stream and copies stand,
which join bundles exist, where each node is (engine/durable/cluster_status.py)."""
from __future__ import annotations

import sys
import time


def add_parser(sub) -> None:
    p = sub.add_parser("cluster", help="a replicated exchange (serve --cluster): its status",
                       description="Read-only views of a replicated exchange on NATS "
                                   "JetStream (see `ccerx serve --cluster`).")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    s = actions.add_parser(
        "status", help="the leader, the stream and its copies, join bundles, the nodes",
        description="Ask the NATS cluster who holds the leader lease, how the command stream "
                    "CCERX_CMDS and its copies stand (Raft leader, followers current or "
                    "behind, offline) and which join bundles exist; with nodes' data "
                    "directories, also each node's role, stream position, lag and state hash "
                    "(from its cluster-status.json). Exit 0 healthy, 1 not healthy (each "
                    "problem is named), 2 if no NATS server answers.")
    s.add_argument("--cluster", required=True, metavar="nats://HOST:PORT[,...]",
                   help="the NATS servers, as given to `ccerx serve --cluster`")
    s.add_argument("data_dirs", nargs="*", metavar="DATA_DIR",
                   help="nodes' data directories on this machine (optional)")
    s.add_argument("--max-lag", type=int, default=None, metavar="N",
                   help="stream messages a node may be behind and still count as healthy "
                        "(default 100)")
    s.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                   help="ask again every 0.5 s until healthy, for at most SECONDS (scripts "
                        "that start a cluster); then print the last answer")
    s.add_argument("--json", action="store_true", help="print JSON (for monitoring)")
    s.set_defaults(run=run)


def run(args) -> int:
    from ccerx.engine.durable.cluster_status import DEFAULT_MAX_LAG, cluster_status, describe
    from ccerx.engine.durable.replicated import parse_servers
    try:
        servers = parse_servers(args.cluster)
    except ValueError as err:
        print(f"ccerx cluster status: {err}", file=sys.stderr)
        return 2
    max_lag = DEFAULT_MAX_LAG if args.max_lag is None else args.max_lag
    if max_lag < 0:
        print("ccerx cluster status: --max-lag must be 0 or more", file=sys.stderr)
        return 2
    if args.wait < 0:
        print("ccerx cluster status: --wait must be 0 or more", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.wait
    while True:
        try:
            status = cluster_status(servers, args.data_dirs, max_lag)
        except ConnectionError as err:
            status = err
        if (not isinstance(status, ConnectionError) and status.healthy
                or time.monotonic() + 0.5 > deadline):
            break
        time.sleep(0.5)
    if isinstance(status, ConnectionError):
        print(f"ccerx cluster status: {status}", file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.write(status.to_json().decode() + "\n")
    else:
        print(describe(status))
    return 0 if status.healthy else 1
