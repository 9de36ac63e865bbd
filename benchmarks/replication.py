"""Replication figures (issue 15), one run on this machine:

1. order-to-acknowledgement latency of `ccerx serve` with its local journal, then of the
   leader of a three-node `ccerx serve --cluster` (stream CCERX_CMDS with 3 replicas on a
   three-server NATS JetStream cluster on loopback, two hot standbys), both measured with the
   FIX gateway load benchmark (benchmarks/gateway_load.py, `--connect`) at the same rates;
2. takeover time: a planned stop (SIGTERM) and then a kill -9 of the leader, until another
   node leads (its cluster-status.json says so: its term marker is in the stream), and until
   a broker's Logon is accepted.

    python -m ccerx.benchmarks.replication [--sessions 4] [--rates 1000,2000] [--seconds 5]

Needs `nats-server` (Debian package nats-server) and nats-py (`pip install 'ccerx[cluster]'`).
`NatsCluster` is also what tests/integration/test_cluster.py starts.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
STATUS_FILE = "cluster-status.json"     # engine/durable/replicated.py


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


class NatsCluster:
    """`size` nats-server processes with JetStream, routed to each other, on loopback ports;
    their configs, stores and logs under `root`."""

    def __init__(self, root: Path, size: int = 3):
        self.root = Path(root)
        self.client_ports = [free_port() for _ in range(size)]
        route_ports = [free_port() for _ in range(size)]
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in route_ports)
        self.procs: list = []
        for i in range(size):
            conf = self.root / f"nats-{i}.conf"
            conf.write_text(
                f'server_name: "s{i}"\nlisten: "127.0.0.1:{self.client_ports[i]}"\n'
                f'jetstream {{ store_dir: "{self.root / f"js-{i}"}" }}\n'
                f'cluster {{ name: "ccerx", listen: "127.0.0.1:{route_ports[i]}", '
                f'routes: [{routes}] }}\n')
            with open(self.root / f"nats-{i}.log", "w") as log:
                self.procs.append(subprocess.Popen([NATS_SERVER, "-c", str(conf)], stdout=log,
                                                   stderr=subprocess.STDOUT))
        try:
            for port in self.client_ports:
                wait_port(port)
        except BaseException:
            self.stop()
            raise

    @property
    def urls(self) -> str:
        return ",".join(f"nats://127.0.0.1:{p}" for p in self.client_ports)

    def kill(self, i: int) -> None:
        self.procs[i].kill()
        self.procs[i].wait(10)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def start_serve(args: list, log: Path) -> tuple:
    proc = subprocess.Popen([sys.executable, "-m", "ccerx.scripts.ccerx", "serve", "--port", "0",
                             *args], stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)
    line = proc.stdout.readline()
    found = re.search(r"listening on [\d.]+:(\d+)", line)
    if found is None:
        proc.kill()
        raise RuntimeError(f"ccerx serve did not start: {line!r}; see {log}")
    return proc, int(found.group(1))


def status(data_dir: Path) -> dict:
    try:
        return json.loads((data_dir / STATUS_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def bench(port: int, args, rates: str, closed_loop_orders: int, out: Path) -> dict:
    """One run of the gateway load benchmark against a running server (a fresh one per run:
    the benchmark's ClOrdIDs start at 0 every run)."""
    subprocess.run([sys.executable, "-m", "ccerx.scripts.ccerx", "bench-gateway", "--connect",
                    f"127.0.0.1:{port}", "--sessions", str(args.sessions), "--rates", rates,
                    "--seconds", str(args.seconds), "--closed-loop-orders",
                    str(closed_loop_orders), "--no-plots", "--out", str(out)],
                   check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((out / "result.json").read_text())["runs"][0]


def logon_accepted(port: int) -> bool:
    """A broker's Logon (the generated config's first broker) is answered 35=A."""
    import simplefix
    from ccerx.benchmarks.gateway_load import password_of
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            message = simplefix.FixMessage()
            for tag, value in ((8, "FIX.4.4"), (35, "A"), (49, "BROKER01"), (56, "CCERX"),
                               (34, 1), (98, 0), (108, 30), (141, "Y"), (553, "BROKER01"),
                               (554, password_of("BROKER01"))):
                message.append_pair(tag, value, header=tag in (8, 35, 49, 56, 34))
            message.append_utc_timestamp(52, header=True)
            sock.sendall(message.encode())
            parser = simplefix.FixParser()
            parser.append_buffer(sock.recv(4096))
            answer = parser.get_message()
            return answer is not None and answer.get(35) == b"A"
    except OSError:
        return False


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=4)
    p.add_argument("--rates", default="1000,2000")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--closed-loop-orders", type=int, default=20_000)
    p.add_argument("--keep", action="store_true", help="keep the working directory")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="ccerx-replication-"))
    config = root / "gateway.toml"
    config.write_text(subprocess.run(
        [sys.executable, "-m", "ccerx.scripts.ccerx", "bench-gateway", "--print-config",
         "--sessions", str(args.sessions)], capture_output=True, text=True, check=True).stdout)
    common = ["--config", str(config), "--rules", "continuous", "--control", "none"]
    runs = [(f"open loop {rate}/s", rate, 0) for rate in args.rates.split(",") if rate]
    runs.append(("closed loop", "", args.closed_loop_orders))
    rows, takeovers = [], []
    for n, (label, rates, closed) in enumerate(runs):
        work = root / f"run-{n}"
        work.mkdir()
        proc, port = start_serve([*common, "--data-dir", str(work / "local")], work / "local.log")
        try:
            local = bench(port, args, rates, closed, work / "bench-local")
        finally:
            proc.kill()
        nats = NatsCluster(work)
        nodes: dict = {}
        try:
            for name in ("n1", "n2", "n3"):
                proc, port = start_serve([*common, "--data-dir", str(work / name), "--cluster",
                                          nats.urls, "--node", name,
                                          "--ledger", str(work / "ledger.sqlite")],
                                         work / f"{name}.log")
                nodes[name] = (proc, port)
            leader = wait_leader(work, nodes)
            replicated = bench(nodes[leader][1], args, rates, closed, work / "bench-cluster")
            rows.append((label, local, replicated))
            if n == len(runs) - 1:
                # three nodes: a planned stop (SIGTERM: the leader gives its lease up), then a
                # crash (kill -9: the lease must expire)
                for how in ("SIGTERM", "kill -9"):
                    proc = nodes[leader][0]
                    proc.terminate() if how == "SIGTERM" else proc.kill()
                    stopped = time.monotonic()
                    del nodes[leader]
                    leader = wait_leader(work, nodes)
                    leads = time.monotonic() - stopped
                    while not logon_accepted(nodes[leader][1]):
                        time.sleep(0.01)
                    takeovers.append((how, leads, time.monotonic() - stopped))
                    proc.wait(30)
        finally:
            for proc, _ in nodes.values():
                proc.kill()
            nats.stop()
    print(f"{'run':<20} {'local p50/p99/p99.9 us':>26} {'cluster p50/p99/p99.9 us':>28} "
          f"{'acked/s local/cluster':>24}")
    for label, a, b in rows:
        la, lb = a["latency_us"], b["latency_us"]
        print(f"{label:<20} {la['p50']:>8,}/{la['p99']:>7,}/{la['p99.9']:>8,} "
              f"{lb['p50']:>10,}/{lb['p99']:>7,}/{lb['p99.9']:>8,} "
              f"{a['sustained_per_s']:>12,}/{b['sustained_per_s']:<10,}"
              f"{'' if a['ok'] and b['ok'] else '  (NOT ALL ACKNOWLEDGED)'}")
    for how, leads, logon in takeovers:
        print(f"takeover after {how} of the leader: another node leads after {leads:.2f} s, "
              f"accepts a logon after {logon:.2f} s")
    if args.keep:
        print(f"kept {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def wait_leader(root: Path, nodes: dict, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, (proc, _) in nodes.items():
            if proc.poll() is None and status(root / name).get("role") == "leader":
                return name
        time.sleep(0.01)
    raise RuntimeError("no leader")


if __name__ == "__main__":
    raise SystemExit(main())
