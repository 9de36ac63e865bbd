"""An attacker's review of the replicated exchange (issue 15) with real NATS and real nodes: a
hostile NATS client on ccerx.front.in, and `ccerx cluster status` about a node that is dead.
Each test shows a finding and is a strict xfail until the product is fixed (then remove the
mark). The same findings without processes: tests/unit/test_cluster_attack.py."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import orjson
import pytest

from ccerx.benchmarks.replication import NATS_SERVER
from ccerx.engine.durable.replicated import (FRONT_SUBJECT, H_FRONT, H_FRONT_EPOCH,
                                             H_FRONT_SEQ)
from tests.integration.cluster_helpers import Cluster
from ccerx.engine.durable.cluster_status import SILENT_S
from tests.serve_process import REPO

pytestmark = pytest.mark.skipif(
    not os.path.exists(NATS_SERVER) and not os.environ.get("CCERX_REQUIRE_SERVICES"),
    reason="nats-server is not installed (.ci/run installs it)")


@pytest.fixture
def cluster(tmp_path):
    started = Cluster(tmp_path)
    yield started
    started.stop()


def status_code(cluster: Cluster, *nodes: str) -> tuple[int, str]:
    """`ccerx cluster status` as an operator runs it, with the nodes' data directories."""
    done = subprocess.run([sys.executable, "-m", "ccerx.scripts.ccerx", "cluster", "status",
                           "--cluster", cluster.nats.urls,
                           *(str(cluster.data_dir(n)) for n in nodes)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout + done.stderr


def publish_front_batch(cluster: Cluster, name: str, epoch: int, k: int, data: bytes) -> None:
    """What any client of the NATS cluster can send: no credentials, no front process."""
    import nats

    async def send():
        nc = await nats.connect(cluster.nats.urls.split(","), connect_timeout=2)
        try:
            await nc.publish(FRONT_SUBJECT, data, headers={
                H_FRONT: name, H_FRONT_EPOCH: str(epoch), H_FRONT_SEQ: str(k)})
            await nc.flush()
        finally:
            await nc.close()
    asyncio.run(send())


def test_a_hostile_front_batch_does_not_stop_the_leader(cluster):
    leader = cluster.leader
    publish_front_batch(cluster, "mallory", 1, 1,
                        orjson.dumps([[1, "BROKER01:x", "not a time", "BROKER01"]]))
    time.sleep(2)
    assert cluster.nodes[leader].proc.poll() is None, cluster.log(leader)[-1500:]


# (was a strict xfail: cluster status judged a node by its status file's stream seq only, so
# a standby killed while the stream is quiet (lag 0) was 'healthy')
def test_cluster_status_sees_a_dead_standby(cluster):
    code, text = status_code(cluster, *cluster.nodes)
    assert code == 0, text
    standby = sorted(set(cluster.nodes) - {cluster.leader})[0]
    cluster.nodes[standby].kill()
    time.sleep(SILENT_S + 1)            # nodes report every second; silent over 5 s: stopped
    code, text = status_code(cluster, *cluster.nodes)
    assert code == 1, f"{standby} was killed -9, status says:\n{text}"



def front_orders(first: int, count: int) -> bytes:
    """Rows of a front batch: BROKER02's orders (accepted or not, each is a command; the
    nodes serve BROKER01 only: a leader takes no front's commands for its own brokers)."""
    return orjson.dumps([[0, f"BROKER02:a{n}", "HOLD01", "CCER-AFF", "sell", "limit", "day",
                          62000000, 1, time.time_ns(), "BROKER02"]
                         for n in range(first, first + count)])


# (was a strict xfail: _join_from_bundle wrote cluster-position.json without the bundle's
# 'fronts', so a joined node restarted before its first matched checkpoint resumed with
# front_last empty and, as leader, refused a quiet front's next batch as a gap for ever)
def test_a_joined_node_restarted_at_once_then_leading_takes_the_fronts_next_batch(tmp_path):
    cluster = Cluster(tmp_path, options=("--cluster-snapshot-every", "50",
                                         "--brokers", "BROKER01"))
    try:
        epoch = time.time_ns()          # a front "f1" (this test speaks its protocol)
        publish_front_batch(cluster, "f1", epoch, 1, front_orders(1, 120))
        standbys = set(cluster.nodes) - {cluster.leader}
        deadline = time.monotonic() + 20
        while not any("put a join bundle" in cluster.log(n) for n in standbys):
            assert time.monotonic() < deadline, cluster.logs()
            time.sleep(0.2)
        time.sleep(1)                   # (the bundle is put in the background)
        cluster.start("n4")             # joins from the bundle; the stream is quiet after it
        assert "joined from snapshot" in cluster.log("n4"), cluster.log("n4")
        cluster.nodes["n4"].kill()      # a quick restart, before any new checkpoint
        cluster.start("n4", "-restarted")
        assert "resumes from its data directory" in cluster.log("n4"), cluster.log("n4")
        for name in ("n1", "n2", "n3"):
            cluster.nodes[name].kill()
        assert cluster.wait_leader({"n4"}) == "n4"
        _, before = cluster.stream_state()
        for _ in range(3):              # the front re-sends its batch 2 every second
            publish_front_batch(cluster, "f1", epoch, 2, front_orders(200, 1))
            time.sleep(1)
        _, after = cluster.stream_state()
        assert after > before, "the leader dropped front f1's batch 2:\n" + cluster.log("n4")
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop()
