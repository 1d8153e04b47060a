"""Starts the real `exacta` binary on an ephemeral loopback port with a temporary data dir.

Tests drive it with real clients (librdkafka via confluent-kafka, kafka-python) and, for
malformed input, with raw frames written by hand (`raw_*` helpers below).
"""

import os
import re
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("EXACTA_BIN", ROOT / "target" / "release" / "exacta"))
LISTEN_RE = re.compile(r"exacta listening on 127\.0\.0\.1:(\d+)")
PROXY_RE = re.compile(r"exacta proxy listening on 127\.0\.0\.1:(\d+)")


def wait_for(condition, timeout=30, what="condition", interval=0.1):
    """Poll CONDITION until it holds; fail naming WHAT after TIMEOUT seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


class Broker:
    """One broker process; restartable on the same port and data directory."""

    def __init__(self, data_dir, config=None):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = None
        if config:
            self.config_path = self.data_dir.parent / (self.data_dir.name + ".toml")
            self.config_path.write_text(config)
        self.port = 0
        self.proc = None
        self.log_path = self.data_dir.parent / (self.data_dir.name + ".log")
        self.starts = 0

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self, timeout=30, env=None):
        args = [str(BIN), "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", str(self.data_dir)]
        if self.config_path:
            args += ["--config", str(self.config_path)]
        self.starts += 1
        log = open(self.log_path, "a")
        log.write(f"--- start {self.starts}\n")
        log.flush()
        offset = self.log_path.stat().st_size
        full_env = dict(os.environ, **(env or {}))
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                     env=full_env)
        log.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = self.log_path.read_text()[offset:]
            m = LISTEN_RE.search(text)
            if m:
                self.port = int(m.group(1))
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with {self.proc.returncode}:\n{text}")
            time.sleep(0.02)
        raise RuntimeError("broker did not start:\n" + self.log_path.read_text()[offset:])

    def stop(self, timeout=30):
        """SIGTERM and wait: a graceful shutdown. Returns the exit code."""
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def kill9(self):
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None

    def restart(self):
        self.stop()
        return self.start()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        return self.log_path.read_text()

    def segment_files(self, topic, partition):
        d = self.data_dir / f"{topic}-{partition}"
        return sorted(d.glob("*.log"))


class FaultProxy:
    """`exacta proxy` in front of a broker, injecting faults (see crates/chaos)."""

    def __init__(self, upstream, log_path, drop=(), delay=(), seed=1, scenario=None):
        self.log_path = Path(log_path)
        args = [str(BIN), "proxy", "--upstream", upstream, "--seed", str(seed)]
        for rule in drop:
            args += ["--drop-response", rule]
        for rule in delay:
            args += ["--delay", rule]
        if scenario is not None:
            path = self.log_path.with_suffix(".toml")
            path.write_text(scenario)
            args += ["--scenario", str(path)]
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.time() + 30
        while time.time() < deadline:
            m = PROXY_RE.search(self.log_path.read_text())
            if m:
                self.port = int(m.group(1))
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError("proxy did not start:\n" + self.log_path.read_text())

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def dropped(self):
        return self.log_path.read_text().count("fault: dropped response")

    def delayed(self):
        return self.log_path.read_text().count("fault: delayed request")

    def injected(self):
        return self.log_path.read_text().count("fault: injected an error response")

    def duplicated(self):
        return self.log_path.read_text().count("fault: duplicated request")

    def blackholed(self):
        return self.log_path.read_text().count("fault: blackholed the connection")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)


# ---- raw frames, for malformed and edge-case requests ------------------------------------

def kstr(s):
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def kbytes(b):
    if b is None:
        return struct.pack(">i", -1)
    return struct.pack(">i", len(b)) + b


def frame(api_key, version, correlation_id, body, client_id="raw-test", flexible=False):
    header = struct.pack(">hhi", api_key, version, correlation_id) + kstr(client_id)
    if flexible:
        header += b"\x00"  # empty tagged fields
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def connect(broker, timeout=10):
    s = socket.create_connection(("127.0.0.1", broker.port), timeout=timeout)
    s.settimeout(timeout)
    return s


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def roundtrip(sock, data):
    """Sends a frame; returns (correlation id, response body after a v0 header)."""
    sock.sendall(data)
    size = struct.unpack(">i", recv_exact(sock, 4))[0]
    payload = recv_exact(sock, size)
    return struct.unpack(">i", payload[:4])[0], payload[4:]


def is_closed(sock, timeout=5):
    """True if the broker closed the connection (EOF or reset) within the timeout."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def parse_api_versions_v0(body):
    error, n = struct.unpack(">hi", body[:6])
    ranges = {}
    for i in range(n):
        key, lo, hi = struct.unpack(">hhh", body[6 + 6 * i: 12 + 6 * i])
        ranges[key] = (lo, hi)
    return error, ranges


def produce_v3(topic, partition, records, acks=-1, timeout_ms=10000):
    body = kstr(None) + struct.pack(">hi", acks, timeout_ms)
    body += struct.pack(">i", 1) + kstr(topic)
    body += struct.pack(">i", 1) + struct.pack(">i", partition) + kbytes(records)
    return body


def parse_produce_v3(body):
    """[(topic, partition, error_code, base_offset)]."""
    out = []
    pos = 0
    (nt,) = struct.unpack_from(">i", body, pos)
    pos += 4
    for _ in range(nt):
        (ln,) = struct.unpack_from(">h", body, pos)
        pos += 2
        name = body[pos:pos + ln].decode()
        pos += ln
        (np_,) = struct.unpack_from(">i", body, pos)
        pos += 4
        for _ in range(np_):
            idx, err, base, _ts = struct.unpack_from(">ihqq", body, pos)
            pos += 22
            out.append((name, idx, err, base))
    return out


def build_batch(values, compression=0, producer=(-1, -1, -1)):
    """A v2 record batch built by kafka-python's encoder (not ours)."""
    from kafka.record.default_records import DefaultRecordBatchBuilder

    pid, epoch, seq = producer
    b = DefaultRecordBatchBuilder(magic=2, compression_type=compression, is_transactional=False,
                                  producer_id=pid, producer_epoch=epoch, base_sequence=seq,
                                  batch_size=1 << 30)
    now = int(time.time() * 1000)
    for i, v in enumerate(values):
        b.append(i, timestamp=now, key=None, value=v, headers=[])
    return bytes(b.build())


def read_batch_headers(path):
    """(base_offset, last_offset, attributes) of every batch in a segment file."""
    data = Path(path).read_bytes()
    pos, out = 0, []
    while pos + 61 <= len(data):
        base, length = struct.unpack_from(">qi", data, pos)
        attrs, delta = struct.unpack_from(">hi", data, pos + 21)
        out.append((base, base + delta, attrs))
        pos += 12 + length
    return out
