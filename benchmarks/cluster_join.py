"""A new cluster node: joining from a snapshot versus replaying the stream from its start.

Three `ccerx serve --cluster` nodes on a three-server NATS cluster (loopback) take a closed
loop of FIX orders (`ccerx bench-gateway`); the standbys put join bundles every
--snapshot-every commands (engine/durable/replicated.py, "Snapshots"). Then, in the same
run, a fourth node starts on an empty data directory and joins from the newest bundle; the
bundles are deleted and a fifth node starts on an empty directory and replays the stream from
seq 1 (the nodes run with --cluster-retain all, so the stream still starts there). For each: seconds from its start until its own checkpoint check reports the leader's
command seq and state hash (DIR/cluster-status.json), and the stream messages it read.

    python -m ccerx.benchmarks.cluster_join [--orders 40000] [--snapshot-every 10000]
"""
from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ccerx.benchmarks.replication import (NatsCluster, bench, start_serve, status,
                                          wait_leader)
from ccerx.engine.durable.replicated import SNAPSHOT_BUCKET


async def delete_bundles(urls: str) -> int:
    import nats
    nc = await nats.connect(urls.split(","))
    try:
        store = await nc.jetstream().object_store(SNAPSHOT_BUCKET)
        names = [info.name for info in await store.list(ignore_deletes=True)]
        for name in names:
            await store.delete(name)
        return len(names)
    finally:
        await nc.close()


def time_to_catch_up(root: Path, name: str, common: list, urls: str, target: tuple,
                     timeout: float = 300) -> tuple[float, dict, str]:
    started = time.monotonic()
    proc, _ = start_serve([*common, "--data-dir", str(root / name), "--cluster", urls,
                           "--node", name, "--ledger", str(root / "ledger.sqlite")],
                          root / f"{name}.log")
    try:
        while time.monotonic() - started < timeout:
            st = status(root / name)
            if (st.get("cmd_seq"), st.get("state_hash")) == target:
                return time.monotonic() - started, st, (root / f"{name}.log").read_text()
            if proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"{name} did not catch up; see {root / name}.log")
    finally:
        proc.terminate()
        proc.wait(30)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--orders", type=int, default=40_000)
    p.add_argument("--snapshot-every", type=int, default=10_000)
    p.add_argument("--sessions", type=int, default=4)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--keep", action="store_true", help="keep the working directory")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="ccerx-join-"))
    config = root / "gateway.toml"
    config.write_text(subprocess.run(
        [sys.executable, "-m", "ccerx.scripts.ccerx", "bench-gateway", "--print-config",
         "--sessions", str(args.sessions)], capture_output=True, text=True, check=True).stdout)
    # every message kept: the fifth node replays from stream seq 1 (by default the standbys
    # trim the stream below the older of the two kept bundles)
    common = ["--config", str(config), "--rules", "continuous", "--control", "none",
              "--cluster-snapshot-every", str(args.snapshot_every), "--cluster-retain", "all"]
    nats = NatsCluster(root)
    nodes: dict = {}
    try:
        for name in ("n1", "n2", "n3"):
            nodes[name] = start_serve([*common, "--data-dir", str(root / name), "--cluster",
                                       nats.urls, "--node", name,
                                       "--ledger", str(root / "ledger.sqlite")],
                                      root / f"{name}.log")
        leader = wait_leader(root, nodes)
        load = bench(nodes[leader][1], args, "", args.orders, root / "bench")
        time.sleep(3)                         # the standbys' last bundle, the idle checkpoint
        st = status(root / leader)
        target = (st["cmd_seq"], st["state_hash"])
        joined_s, joined, log = time_to_catch_up(root, "n4", common, nats.urls, target)
        deleted = asyncio.run(delete_bundles(nats.urls))
        genesis_s, replayed, _ = time_to_catch_up(root, "n5", common, nats.urls, target)
    finally:
        for proc, _ in nodes.values():
            proc.kill()
        nats.stop()
    line = next((ln for ln in log.splitlines() if "joined from snapshot" in ln), "(none)")
    print(f"load: {args.orders:,} orders closed loop, {load['sustained_per_s']:,} acknowledged/s;"
          f" the leader at command {target[0]:,}, stream seq {st['stream_seq']:,}")
    print(f"join from a snapshot: {joined_s:.2f} s to the leader's state "
          f"(first stream message read {joined['first_stream_seq']:,}); {line.strip()}")
    print(f"replay from stream seq 1 ({deleted} bundles deleted first): {genesis_s:.2f} s "
          f"(first stream message read {replayed['first_stream_seq']:,})")
    print(f"ratio: {genesis_s / joined_s:.2f}x")
    if args.keep:
        print(f"kept {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
