"""Private Redis deployments past one server, on loopback: a 3+3 Redis Cluster, and a
primary, a replica and three Sentinels. Started by tests (tests/cluster_plugin.py), which
may kill a primary to watch a failover.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis
from redis.cluster import ClusterNode, RedisCluster

from tests.redis_process import RedisProcess

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
# How long a primary may stay silent before its replica takes over. Short, so a killed
# primary is replaced within about two seconds.
NODE_TIMEOUT_MS = 1000


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too (ephemeral ports may exceed 55535)."""
    for _ in range(200):
        port = random.randint(20000, 29999)
        if _port_is_free(port) and _port_is_free(port + 10000):
            return port
    raise RuntimeError("no free loopback port pair for a cluster node")


class RedisNode(RedisProcess):
    """A RedisProcess that can be killed outright (SIGKILL), as a crashed machine would be."""

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None

    def info_role(self) -> str:
        return str(self.client().info("replication")["role"])


class ClusterDeployment:
    """Three primaries, each with one replica (`redis-cli --cluster create --cluster-replicas 1`)."""

    def __init__(self, *, primaries: int = 3, maxmemory: str = "64mb") -> None:
        self.nodes: list[RedisNode] = []
        for _ in range(primaries * 2):
            node = RedisNode(
                maxmemory=maxmemory,
                extra=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    str(NODE_TIMEOUT_MS),
                    # A replica promotes itself however long it was cut off (test clusters are young).
                    "--cluster-replica-validity-factor",
                    "0",
                ],
            )
            node.port = cluster_port()
            self.nodes.append(node)

    def start(self) -> ClusterDeployment:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [REDIS_CLI, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        self.wait_until_ok()
        return self

    def url(self, db: int = 0) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def client(self) -> RedisCluster:
        return RedisCluster(
            startup_nodes=[ClusterNode("127.0.0.1", node.port) for node in self.nodes if node.running],
            require_full_coverage=False,
            socket_timeout=5,
        )

    def primaries(self) -> list[RedisNode]:
        return [node for node in self.nodes if node.running and node.info_role() == "master"]

    def node_for(self, key: bytes) -> RedisNode:
        """The running primary that serves `key`'s slot now."""
        from redis.crc import key_slot

        slot = key_slot(key)
        for node in self.primaries():
            for start, end, *_ in node.client().execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end and _[0][1] == node.port:
                    return node
        raise LookupError(f"no primary serves slot {slot}")

    def wait_until_ok(self, timeout: float = 30.0) -> None:
        """Until every running node says the cluster is ok with all 16384 slots served."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                infos = [node.client().cluster("info") for node in self.nodes if node.running]
                if all(i["cluster_state"] == "ok" and int(i["cluster_slots_ok"]) == 16384 for i in infos):
                    return
            except redis.RedisError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the test cluster was not ok within {timeout} s")

    def flush(self) -> None:
        for node in self.primaries():
            node.client().flushall()

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()


class SentinelDeployment:
    """A primary, one replica and three Sentinels watching them as `tokencache`."""

    MASTER = "tokencache"

    def __init__(self, *, maxmemory: str = "64mb") -> None:
        self.primary = RedisNode(maxmemory=maxmemory)
        self.replica = RedisNode(maxmemory=maxmemory)
        self.sentinels: list[_SentinelProcess] = [_SentinelProcess() for _ in range(3)]

    def start(self) -> SentinelDeployment:
        self.primary.start()
        self.replica.extra = ["--replicaof", "127.0.0.1", str(self.primary.port)]
        self.replica.start()
        for sentinel in self.sentinels:
            sentinel.start(self.MASTER, self.primary.port)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.replica.client().info("replication").get("master_link_status") == "up" and all(
                s.knows_replica(self.MASTER) for s in self.sentinels
            ):
                return self
            time.sleep(0.1)
        raise RuntimeError("the test Sentinels did not see the replica within 30 s")

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.MASTER}/{db}"

    def current_primary_port(self) -> int:
        for sentinel in self.sentinels:
            try:
                _host, port = sentinel.client().sentinel_get_master_addr_by_name(self.MASTER)
                return int(port)
            except redis.RedisError:
                continue
        raise RuntimeError("no Sentinel answers")

    def cleanup(self) -> None:
        for sentinel in self.sentinels:
            sentinel.cleanup()
        self.replica.cleanup()
        self.primary.cleanup()


class _SentinelProcess(RedisNode):
    """`redis-server <conf> --sentinel` (Sentinel rewrites its config file, so it gets one)."""

    def start(self, master: str = "", primary_port: int = 0) -> _SentinelProcess:  # type: ignore[override]
        conf = Path(self.directory) / "sentinel.conf"
        conf.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    "bind 127.0.0.1",
                    f"dir {self.directory}",
                    f"sentinel monitor {master} 127.0.0.1 {primary_port} 2",
                    f"sentinel down-after-milliseconds {master} {NODE_TIMEOUT_MS}",
                    f"sentinel failover-timeout {master} 5000",
                    f"sentinel parallel-syncs {master} 1",
                    "",
                ]
            )
        )
        from tests.redis_process import REDIS_SERVER, _die_with_parent

        self._process = subprocess.Popen(
            [REDIS_SERVER, str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-sentinel did not answer on 127.0.0.1:{self.port}")

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def knows_replica(self, master: str) -> bool:
        try:
            return bool(self.client().sentinel_slaves(master))
        except redis.RedisError:
            return False
