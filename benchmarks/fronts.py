"""Front gateways (issue 15 item 4): acknowledged orders/s with 1, 2 and 4 gateway processes
of one replicated exchange, against the single-process server, in one run on this machine.

    python -m ccerx.benchmarks.fronts [--sessions 8] [--orders 20000] [--window 50]
                                      [--gateways 1,2,4] [--rounds 1]

Every configuration gets the same FIX sessions (BROKER01..nn of the gateway load benchmark's
config) and the same closed-loop order flow (benchmarks/gateway_load.py: every session keeps
--window orders unacknowledged, acknowledgement = the first ExecutionReport 150=0/8):

    single    `ccerx serve` with its local journal, all sessions (the baseline);
    G = 1     a three-node `ccerx serve --cluster` on a three-server NATS cluster on loopback,
              every session on the leader (the leader is the only gateway process);
    G = 2, 4  the same cluster plus G - 1 `--front` processes; session k is served by gateway
              process k % G (the leader and the nodes `--brokers` group 0, front fi group i).

Printed per configuration: orders/s (acknowledged / span from the first send to the last
acknowledgement), ack latency p50/p99 (us), the CPU seconds all exchange processes (nodes,
fronts, their ledger processes; not NATS) used per order, and the 1-minute load average at
the start. A configuration whose orders were not all acknowledged, or whose replicas (nodes
and fronts) do not end at the same command and state hash, says so.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ccerx.benchmarks.gateway_load import Harness, RunSpec, _children, broker_ids
from ccerx.benchmarks.replication import NatsCluster, start_serve, status, wait_leader


def cpu_seconds(pids: list) -> float:
    """User + system CPU of these processes and their children so far."""
    total = 0
    for pid in pids:
        for each in [pid] + _children(pid):
            try:
                with open(f"/proc/{each}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def wait_log(log: Path, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{log}: no {text!r} within {timeout} s")


def replicas_agree(dirs: list, timeout: float = 20) -> bool:
    """Every node and front ends at the same command and state hash (their checkpoint
    status files; the leader's idle checkpoint is the last)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = {(status(d).get("cmd_seq"), status(d).get("state_hash")) for d in dirs}
        if len(seen) == 1 and None not in next(iter(seen)):
            return True
        time.sleep(0.2)
    return False


def measure(label: str, procs: list, addresses: list, args, work: Path) -> dict:
    harness = Harness(sessions=args.sessions, connect=addresses[0], spread=addresses,
                      workdir=work)
    pids = [proc.pid for proc in procs]
    before = cpu_seconds(pids)
    result = harness.run(RunSpec(label, args.orders, 0.0, args.window))
    used = cpu_seconds(pids) - before
    return {"label": label, "per_s": result["sustained_per_s"], "ok": result["ok"],
            "acked": result["acked"], "p50": result["latency_us"].get("p50"),
            "p99": result["latency_us"].get("p99"),
            "cpu_us_per_order": round(used / args.orders * 1e6),
            "load": result["loadavg_1min_at_start"]}


def run_single(args, work: Path, common: list) -> dict:
    proc, port = start_serve([*common, "--data-dir", str(work / "single")], work / "single.log")
    try:
        return measure("single process, local journal", [proc], [("127.0.0.1", port)], args,
                       work)
    finally:
        proc.kill()
        proc.wait()


def run_cluster(gateways: int, args, work: Path, common: list) -> dict:
    brokers = broker_ids(args.sessions)
    groups = [",".join(b for k, b in enumerate(brokers) if k % gateways == g)
              for g in range(gateways)]
    nats = NatsCluster(work)
    nodes: dict = {}
    fronts: list = []
    try:
        for name in ("n1", "n2", "n3"):
            nodes[name] = start_serve(
                [*common, "--data-dir", str(work / name), "--cluster", nats.urls, "--node", name,
                 "--ledger", str(work / "ledger.sqlite"), "--brokers", groups[0]],
                work / f"{name}.log")
        leader = wait_leader(work, nodes)
        addresses = [("127.0.0.1", nodes[leader][1])]
        for g in range(1, gateways):
            log = work / f"f{g}.log"
            proc, port = start_serve([*common, "--data-dir", str(work / f"f{g}"), "--cluster",
                                      nats.urls, "--front", f"f{g}", "--brokers", groups[g]],
                                     log)
            fronts.append(proc)
            wait_log(log, "caught up with the stream")
            addresses.append(("127.0.0.1", port))
        procs = [proc for proc, _ in nodes.values()] + fronts
        dirs = [work / name for name in nodes] + [work / f"f{g}" for g in range(1, gateways)]
        fronts_text = ("" if gateways == 1 else
                       f" + {gateways - 1} front{'s' if gateways > 2 else ''}")
        label = f"{gateways} gateway process{'es' if gateways > 1 else ''} (leader{fronts_text})"
        row = measure(label, procs, addresses, args, work)
        if not replicas_agree(dirs):
            row["ok"] = False
            row["label"] += " (REPLICAS DIFFER)"
        return row
    finally:
        for proc in [proc for proc, _ in nodes.values()] + fronts:
            proc.kill()
            proc.wait()
        nats.stop()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=8)
    p.add_argument("--orders", type=int, default=20_000)
    p.add_argument("--window", type=int, default=50)
    p.add_argument("--gateways", default="1,2,4")
    p.add_argument("--rounds", type=int, default=1, help="repeat the whole set (noise)")
    p.add_argument("--keep", action="store_true", help="keep the working directory")
    args = p.parse_args(argv)
    counts = [int(g) for g in args.gateways.split(",") if g]
    if any(g < 1 or g > args.sessions for g in counts):
        p.error("--gateways: 1 to --sessions processes")
    root = Path(tempfile.mkdtemp(prefix="ccerx-fronts-"))
    config = root / "gateway.toml"
    config.write_text(subprocess.run(
        [sys.executable, "-m", "ccerx.scripts.ccerx", "bench-gateway", "--print-config",
         "--sessions", str(args.sessions)], capture_output=True, text=True, check=True).stdout)
    common = ["--config", str(config), "--rules", "continuous", "--control", "none"]
    rows = []
    for round_ in range(args.rounds):
        work = root / f"round-{round_}-single"
        work.mkdir()
        rows.append(run_single(args, work, common))
        for gateways in counts:
            work = root / f"round-{round_}-g{gateways}"
            work.mkdir()
            rows.append(run_cluster(gateways, args, work, common))
    print(f"{args.sessions} sessions, {args.orders:,} orders closed loop (window {args.window}),"
          f" {os.cpu_count()} cores")
    print(f"{'configuration':<44} {'orders/s':>9} {'p50 us':>8} {'p99 us':>8} "
          f"{'CPU us/order':>13} {'load':>5}")
    for row in rows:
        missing = "" if row["ok"] else f"  (NOT ALL ACKNOWLEDGED: {row['acked']:,})"
        print(f"{row['label']:<44} {row['per_s']:>9,} {row['p50'] or 0:>8,} "
              f"{row['p99'] or 0:>8,} {row['cpu_us_per_order']:>13,} {row['load']:>5}{missing}")
    if args.keep:
        print(f"kept {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
