"""The README's NATS authorization block (issue 15, "NATS authorization") on a real nats-server:
a node and a front, each with its own NATS user, trade as without it; a client without a user
cannot connect; the front's user cannot write the command stream, the lease or the snapshots,
nor purge or delete the stream. The block is taken from README.md as written (the passwords
filled in), so the README cannot drift from what was tested."""
from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time

import pytest

from ccerx.benchmarks.replication import NATS_SERVER, free_port, wait_port
from ccerx.engine.durable.replicated import FRONT_SUBJECT, LEASE_BUCKET, STREAM, SUBJECT
from tests.fixclient import Broker, s
from tests.serve_process import REPO, ServeProcess

pytestmark = pytest.mark.skipif(
    not os.path.exists(NATS_SERVER) and not os.environ.get("CCERX_REQUIRE_SERVICES"),
    reason="nats-server is not installed (.ci/run installs it)")

README = (REPO / "README.md").read_text()


def readme_authorization() -> str:
    block = README.split("**NATS authorization:**", 1)[1]
    return re.search(r"```\n(authorization \{.*?)```", block, re.S).group(1)


@pytest.fixture
def nats_with_users(tmp_path):
    port = free_port()
    conf = tmp_path / "nats.conf"
    conf.write_text(f'listen: "127.0.0.1:{port}"\n'
                    f'jetstream {{ store_dir: "{tmp_path / "js"}" }}\n'
                    + readme_authorization().replace("$NODE_PASS", '"node-pw"')
                    .replace("$FRONT_PASS", '"front-pw"'))
    with open(tmp_path / "nats.log", "w") as log:
        proc = subprocess.Popen([NATS_SERVER, "-c", str(conf)], stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        wait_port(port)
        yield port
    finally:
        proc.kill()
        proc.wait(10)


def attempt(port: int, user: str, action) -> str:
    """Run action(nc, js) as `user` (None: no credentials); '' if it worked, else why not."""
    import nats

    async def run() -> str:
        errors: list = []

        async def on_error(err):
            errors.append(repr(err))
        creds = f"{user}:{user}-pw@" if user else ""
        try:
            nc = await nats.connect(f"nats://{creds}127.0.0.1:{port}", connect_timeout=2,
                                    max_reconnect_attempts=0, allow_reconnect=False,
                                    error_cb=on_error)
        except Exception as err:
            return f"connect: {err!r}"
        try:
            await action(nc, nc.jetstream(timeout=2))
            await nc.flush()
            await asyncio.sleep(0.2)     # a permissions violation arrives asynchronously
        except Exception as err:
            errors.append(repr(err))
        finally:
            await nc.close()
        return "; ".join(errors)
    return asyncio.run(run())


def test_a_node_and_a_front_trade_under_the_readmes_nats_users(nats_with_users, tmp_path):
    port = nats_with_users
    node = ServeProcess(["--cluster", f"nats://node:node-pw@127.0.0.1:{port}", "--node", "n1",
                         "--replicas", "1", "--brokers", "BROKER01", "--control", "none",
                         "--data-dir", str(tmp_path / "n1"), "--log-level", "info"],
                        log_path=tmp_path / "n1.log", start_timeout=30)
    front = None
    try:
        front = ServeProcess(["--cluster", f"nats://front:front-pw@127.0.0.1:{port}",
                              "--front", "f1", "--brokers", "BROKER02",
                              "--data-dir", str(tmp_path / "f1"), "--log-level", "info"],
                             log_path=tmp_path / "f1.log", start_timeout=30)
        assert "node-pw" not in node.log_text() and "front-pw" not in front.log_text()
        broker = Broker("BROKER02", front.port)
        deadline = time.monotonic() + 30
        while True:                      # the front takes logons once it has caught up
            try:
                broker.logon("demo02", reset=True)
                break
            except (OSError, ConnectionError, TimeoutError):
                broker.close()
                assert time.monotonic() < deadline, front.log_text()[-1500:]
                time.sleep(0.2)
                broker = Broker("BROKER02", front.port)
        broker.new_order("auth-1", "HOLD02", "2", 5, "62.00")
        ack = broker.expect("8")      # through the leader and back from the stream
        assert (s(ack, 150), s(ack, 11)) == ("0", "auth-1"), ack
        broker.close()
    finally:
        if front is not None:
            front.kill()
        node.kill()

    def write(subject):
        async def act(nc, js):
            await nc.publish(subject, b"[]")
        return act
    # no user: no connection at all
    assert attempt(port, None, write(FRONT_SUBJECT)).startswith("connect:")
    # the front's user may send front batches, and nothing that writes the exchange's state
    assert attempt(port, "front", write(FRONT_SUBJECT)) == ""
    for subject in (SUBJECT, f"$KV.{LEASE_BUCKET}.leader", "$O.CCERX_SNAPSHOTS.C.x"):
        assert "permissions violation" in attempt(port, "front", write(subject)).lower(), subject

    async def purge(nc, js):
        await js.purge_stream(STREAM)

    async def delete(nc, js):
        await js.delete_stream(STREAM)
    assert attempt(port, "front", purge) != "" and attempt(port, "front", delete) != ""
    # the node's user may not pose as a front
    assert "permissions violation" in attempt(port, "node", write(FRONT_SUBJECT)).lower()
