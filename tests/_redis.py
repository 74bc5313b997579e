"""Real Redis for the tests: one redis-server, or a Redis Cluster of three masters.

Both have the same face (``url``, ``prefix``, ``client()``, ``flush()``, ``stop()``,
``start()``, ``close()``), so a test written for one Redis runs on a cluster unchanged.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from typing import Any, ClassVar, Protocol

import pytest

redis = pytest.importorskip("redis")

from _support import free_port  # noqa: E402
from redis.backoff import NoBackoff  # noqa: E402
from redis.retry import Retry  # noqa: E402

from sse_tasks.brokers.redis.partitioned import partition_of, partition_prefixes  # noqa: E402


def _binary(name: str) -> str:
    binary = shutil.which(name)
    if binary is None:
        pytest.skip(f"{name} is not installed (.ci/run installs it)")
    return binary


def _until_ping(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with redis.Redis(port=port, socket_timeout=1) as client:
                client.ping()
                return
        except redis.exceptions.ConnectionError:
            time.sleep(0.02)
    raise RuntimeError(f"redis-server on port {port} did not start")


class Redis(Protocol):
    url: str
    #: The prefix the broker's keys get on it (``sse_tasks``; a cluster's is a hash tag).
    prefix: str

    def client(self, prefix: str | None = None) -> Any: ...

    def prefix_of(self, task_id: str) -> tuple[str, int]: ...

    def flush(self) -> None: ...

    def stop(self, *, save: bool) -> None: ...

    def start(self) -> None: ...

    def close(self) -> None: ...


class RedisServer:
    """A redis-server of a test's own, which it may stop, restart and flush."""

    prefix = "sse_tasks"

    def __init__(self, *extra: str, port: int | None = None) -> None:
        self.binary = _binary("redis-server")
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="sse-tasks-redis-")
        self.extra = extra
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir]
        args += ["--save", "", "--appendonly", "no", *self.extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _until_ping(self.port)
        except BaseException:
            self.close()
            raise

    def client(self, prefix: str | None = None) -> Any:
        return redis.Redis(port=self.port, socket_timeout=5)

    def prefix_of(self, task_id: str) -> tuple[str, int]:
        """The prefix of the keys of ``task_id``, and its partition (one here)."""
        return self.prefix, 0

    def flush(self) -> None:
        with self.client() as client:
            client.flushall()

    def stop(self, *, save: bool) -> None:
        """Shut down (saving the data first when ``save``): connections drop at once."""
        # No retries: the connection dropping is the answer (redis-py would retry it for seconds).
        with redis.Redis(port=self.port, socket_timeout=5, retry=Retry(NoBackoff(), 0)) as client:
            try:
                client.shutdown(save=save, nosave=not save)
            except redis.exceptions.ConnectionError:
                pass
        assert self.proc is not None
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


#: A cluster node talks to the others on its port + 10000.
CLUSTER_BUS = 10_000


class RedisCluster:
    """A Redis Cluster of three masters (three ``redis-server --cluster-enabled yes``, joined
    with ``redis-cli --cluster create``), for a test or a session."""

    #: The broker's partitions on a cluster (its default), and the key prefix of each.
    partitions = 3
    prefixes: ClassVar[list[str]] = [
        "{" + name + "}" for name in partition_prefixes("sse_tasks", 3, cluster=True)
    ]
    #: The prefix of the first partition's keys.
    prefix = prefixes[0]

    def __init__(self, *extra: str) -> None:
        cli = _binary("redis-cli")
        extra = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", *extra)
        self.nodes: list[RedisServer] = []
        try:
            for _ in range(3):
                self.nodes.append(RedisServer(*extra, port=free_port(also=CLUSTER_BUS)))
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            subprocess.run(
                [cli, "--cluster", "create", *addresses, "--cluster-yes"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30,
            )  # fmt: skip
            self._until_ok()
        except BaseException:
            self.close()
            raise
        self.url = "redis+cluster://" + ",".join(addresses)

    def _until_ok(self) -> None:
        """Every node sees every slot served (a cluster answers CLUSTERDOWN until then)."""
        deadline = time.monotonic() + 30
        for node in self.nodes:
            while True:
                with node.client() as client:
                    if client.cluster("info")["cluster_state"] == "ok":
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("the Redis Cluster did not come up")
                time.sleep(0.05)

    def prefix_of(self, task_id: str) -> tuple[str, int]:
        """The prefix of the keys of ``task_id`` (its partition's hash tag), and its partition."""
        part = partition_of(task_id, self.partitions)
        return self.prefixes[part], part

    def owner(self, prefix: str | None = None) -> RedisServer:
        """The node that holds the keys under ``prefix`` (its hash tag's slot; by default
        the first partition's)."""
        slot = redis.crc.key_slot((prefix or self.prefix).encode())
        with self.nodes[0].client() as client:
            for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    port = int(master[1])
        return next(node for node in self.nodes if node.port == port)

    def move(self) -> None:
        """Move the slot of the broker's keys, keys and all, to another master (what a
        resharding does): clients still on the old master get ``MOVED``."""
        source = self.owner()
        target = next(node for node in self.nodes if node is not source)
        slot = redis.crc.key_slot(self.prefix.encode())
        with source.client() as old, target.client() as new:
            old_id, new_id = old.execute_command("CLUSTER", "MYID"), new.execute_command("CLUSTER", "MYID")
            new.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", old_id)
            old.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", new_id)
            while keys := old.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                old.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
            for node in (target, source, *self.nodes):
                with node.client() as client:
                    client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", new_id)
        assert self.owner() is target

    def client(self, prefix: str | None = None) -> Any:
        """A client of the node holding the keys under ``prefix`` (the first partition's)."""
        return self.owner(prefix).client()

    def flush(self) -> None:
        for node in self.nodes:
            node.flush()

    def stop(self, *, save: bool) -> None:
        """Shut every node down, the broker's first: its connections drop at once."""
        owner = self.owner()
        for node in sorted(self.nodes, key=lambda node: node is not owner):
            node.stop(save=save)

    def start(self) -> None:
        """Restart every node (each with its saved cluster configuration); return once the
        cluster serves every slot again, as one redis-server returns once it answers."""
        for node in self.nodes:
            node.start()
        self._until_ok()

    def close(self) -> None:
        for node in self.nodes:
            node.close()


def make_redis(kind: str, *extra: str) -> Redis:
    """``"redis"``: one redis-server; ``"cluster"``: a three-master Redis Cluster."""
    return RedisCluster(*extra) if kind == "cluster" else RedisServer(*extra)
