"""A cluster of real `exacta` processes on their own loopback addresses (127.0.0.11, .12,
...): each node serves Kafka clients and its cluster port there, and all share one
`--voters` list."""

import os
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from harness import BIN, frame, kstr, roundtrip, wait_for


def free_port(host):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, node_id, host, root):
        self.id = node_id
        self.host = host
        self.port = free_port(host)
        self.cluster_port = free_port(host)
        self.metrics_port = free_port(host)
        self.data_dir = Path(root) / f"node{node_id}"
        self.log_path = Path(root) / f"node{node_id}.log"
        self.proc = None

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    @property
    def voter(self):
        return f"{self.id}@{self.host}:{self.cluster_port}"

    def args(self, voters):
        return [str(BIN), "serve", "--node-id", str(self.id), "--listen", self.address,
                "--cluster-listen", f"{self.host}:{self.cluster_port}", "--voters", voters,
                "--metrics-listen", f"{self.host}:{self.metrics_port}",
                "--data-dir", str(self.data_dir)]

    def start(self, voters):
        self.starts = getattr(self, "starts", 0) + 1
        log = open(self.log_path, "a")
        log.write(f"--- start {self.starts}\n")
        log.flush()
        self.proc = subprocess.Popen(self.args(voters), stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL)
        log.close()
        wait_for(lambda: f"exacta listening on {self.address}" in self.this_start()
                 or self.proc.poll() is not None, 30, f"node {self.id} to listen")
        assert self.proc.poll() is None, self.log()[-2000:]

    def this_start(self):
        return self.log().rsplit(f"--- start {self.starts}\n", 1)[-1]

    def caught_up(self):
        """Registered, and the metadata applied up to this start."""
        return "cluster metadata caught up" in self.this_start()

    def kill9(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self):
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
            self.proc = None

    def metrics(self):
        """The node's Prometheus metrics: {name{labels}: value}."""
        import urllib.request
        with urllib.request.urlopen(f"http://{self.host}:{self.metrics_port}/metrics",
                                    timeout=10) as r:
            text = r.read().decode()
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in text.splitlines() if line and not line.startswith("#")}

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        return self.log_path.read_text() if self.log_path.exists() else ""

    def partition_bytes(self, topic, partition):
        d = self.data_dir / f"{topic}-{partition}"
        return b"".join(p.read_bytes() for p in sorted(d.glob("*.log")))


class Cluster:
    def __init__(self, root, size=3):
        Path(root).mkdir(parents=True, exist_ok=True)
        self.nodes = [Node(i + 1, f"127.0.0.{11 + i}", root) for i in range(size)]
        self.voters = ",".join(n.voter for n in self.nodes)

    @property
    def bootstrap(self):
        return ",".join(n.address for n in self.nodes)

    def start(self):
        for n in self.nodes:
            n.start(self.voters)
        for n in self.nodes:
            wait_for(n.caught_up, 30, f"node {n.id} to join")
        return self

    def node(self, node_id):
        return self.nodes[node_id - 1]

    def restart(self, node_id, wait=True):
        node = self.node(node_id)
        node.start(self.voters)
        if wait:
            wait_for(node.caught_up, 30, f"node {node_id} to rejoin")

    def stop(self):
        for n in self.nodes:
            n.kill9()


def create_topic(cluster, topic, partitions=3, rf=3, configs=None):
    """Creates TOPIC through any node; returns the admin client used."""
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    futures = admin.create_topics([NewTopic(topic, partitions, rf, config=configs or {})],
                                  operation_timeout=20)
    futures[topic].result()
    return admin


def partitions(admin, topic):
    """TOPIC's partitions as the metadata has them."""
    # A metadata request librdkafka had sent to the node just killed fails as a timeout
    # (it does not resend it); ask again.
    for _ in range(5):
        try:
            return admin.list_topics(topic, timeout=3).topics[topic].partitions
        except KafkaException as e:
            last = e
    raise last


def all_in_sync(admin, *topics):
    """Whether every partition of TOPICS has all its replicas in sync."""
    return all(len(p.isrs) == len(p.replicas)
               for t in topics for p in partitions(admin, t).values())


def node_socket(node):
    s = socket.create_connection((node.host, node.port), timeout=10)
    s.settimeout(10)
    return s


def find_coordinator(node, key, key_type=0):
    """FindCoordinator v1 for KEY (0: a group, 1: a transactional id) sent to NODE:
    (error, node id, host, port)."""
    with node_socket(node) as s:
        _, body = roundtrip(s, frame(10, 1, 1, kstr(key) + bytes([key_type])))
    error, = struct.unpack(">h", body[4:6])
    pos = 6
    length, = struct.unpack(">h", body[pos:pos + 2])
    pos += 2 + max(length, 0)
    node_id, = struct.unpack(">i", body[pos:pos + 4])
    pos += 4
    length, = struct.unpack(">h", body[pos:pos + 2])
    host = body[pos + 2:pos + 2 + length].decode()
    port, = struct.unpack(">i", body[pos + 2 + length:pos + 6 + length])
    return error, node_id, host, port
