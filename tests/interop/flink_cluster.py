"""A standalone Apache Flink session cluster for the tests, started the way Flink's own
scripts start one: a JobManager (StandaloneSessionClusterEntrypoint) and TaskManagers
(TaskManagerRunner) as separate JVMs on loopback ports, configured by a config.yaml, jobs
submitted with the `flink run` command line (CliFrontend). The jars come from
tests/interop/flink (built by scripts/jvm_setup.sh)."""

import json
import os
import socket
import subprocess
import urllib.request
from pathlib import Path

from harness import wait_for

FLINK_DIR = Path(__file__).resolve().parent / "flink"
JOB_JAR = FLINK_DIR / "target" / "exacta-flink-interop-0.1.0.jar"


# What Flink's start scripts pass every JVM (env.java.opts.all in Flink's default config).
JVM_OPENS = ["--add-exports=java.base/sun.net.util=ALL-UNNAMED"] + [
    f"--add-opens=java.base/{package}=ALL-UNNAMED" for package in (
        "java.lang", "java.net", "java.io", "java.nio", "sun.nio.ch", "java.lang.reflect",
        "java.text", "java.time", "java.util", "java.util.concurrent",
        "java.util.concurrent.atomic", "java.util.concurrent.locks")]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def classpath():
    listed = FLINK_DIR / "target" / "classpath.txt"
    if not listed.exists() or not JOB_JAR.exists():
        raise AssertionError("the Flink job is not built: run scripts/jvm_setup.sh")
    return listed.read_text().strip()


class FlinkCluster:
    def __init__(self, root, slots=2, checkpoint_ms=1000):
        self.root = Path(root)
        self.conf = self.root / "conf"
        self.conf.mkdir(parents=True, exist_ok=True)
        self.rest_port = free_port()
        settings = {
            "jobmanager.rpc.address": "127.0.0.1",
            "jobmanager.rpc.port": free_port(),
            "jobmanager.bind-host": "127.0.0.1",
            "jobmanager.memory.process.size": "768m",
            "rest.address": "127.0.0.1",
            "rest.bind-address": "127.0.0.1",
            "rest.port": self.rest_port,
            "taskmanager.host": "127.0.0.1",
            "taskmanager.bind-host": "127.0.0.1",
            "taskmanager.numberOfTaskSlots": slots,
            "taskmanager.memory.process.size": "1280m",
            "taskmanager.memory.managed.fraction": 0.1,
            "parallelism.default": slots,
            "execution.checkpointing.interval": f"{checkpoint_ms} ms",
            "execution.checkpointing.dir": f"file://{self.root / 'checkpoints'}",
            "restart-strategy.type": "fixed-delay",
            "restart-strategy.fixed-delay.attempts": 1000000,
            "restart-strategy.fixed-delay.delay": "500 ms",
            # A killed TaskManager is noticed within seconds, not Flink's default 50 s.
            "heartbeat.interval": 1000,
            "heartbeat.timeout": 5000,
        }
        (self.conf / "config.yaml").write_text(
            "".join(f"{k}: {json.dumps(v) if isinstance(v, str) else v}\n"
                    for k, v in settings.items()))
        self.jobmanager = None
        self.taskmanagers = []
        self.logs = self.root / "logs"
        self.logs.mkdir(exist_ok=True)
        self.started = 0

    def _resources(self, which):
        """The JVM options and dynamic settings Flink's start scripts compute for a
        JobManager or TaskManager from config.yaml (BashJavaUtils GET_JM/TM_RESOURCE_PARAMS)."""
        r = subprocess.run(["java", "-cp", classpath(),
                            "org.apache.flink.runtime.util.bash.BashJavaUtils",
                            f"GET_{which}_RESOURCE_PARAMS", "--configDir", str(self.conf)],
                           capture_output=True, text=True, timeout=60)
        marker = "BASH_JAVA_UTILS_EXEC_RESULT:"
        lines = [line[len(marker):] for line in r.stdout.splitlines() if line.startswith(marker)]
        assert r.returncode == 0 and len(lines) >= 2, f"BashJavaUtils failed:\n{r.stdout}{r.stderr}"
        return lines[0].split(), lines[1].split()

    def _java(self, main, name, which):
        jvm, dynamic = self._resources(which)
        self.started += 1
        log = open(self.logs / f"{name}-{self.started}.log", "w")
        return subprocess.Popen(
            ["java", *jvm, *JVM_OPENS, "-cp", f"{JOB_JAR}:{classpath()}", main,
             "--configDir", str(self.conf), *dynamic],
            stdout=log, stderr=subprocess.STDOUT,
            env=dict(os.environ, FLINK_CONF_DIR=str(self.conf)))

    def start(self, taskmanagers=1):
        self.jobmanager = self._java(
            "org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint",
            "jobmanager", "JM")
        for _ in range(taskmanagers):
            self.start_taskmanager()
        self.wait(lambda: self.rest("/overview").get("taskmanagers", 0) >= taskmanagers, 90,
                  "the Flink cluster to start")

    def start_taskmanager(self):
        self.taskmanagers.append(self._java(
            "org.apache.flink.runtime.taskexecutor.TaskManagerRunner", "taskmanager", "TM"))

    def kill_taskmanager(self):
        """SIGKILL the newest TaskManager."""
        tm = self.taskmanagers.pop()
        tm.kill()
        tm.wait(10)

    def rest(self, path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.rest_port}{path}",
                                        timeout=5) as r:
                return json.loads(r.read())
        except OSError:
            return {}

    def submit(self, main_class, *args):
        """`flink run --detached -c MAIN_CLASS JOB_JAR ARGS`; returns the job id."""
        self.started += 1
        r = subprocess.run(
            ["java", *JVM_OPENS, "-cp", f"{JOB_JAR}:{classpath()}",
             "org.apache.flink.client.cli.CliFrontend", "run",
             "--detached", "-m", f"127.0.0.1:{self.rest_port}", "-c", main_class,
             str(JOB_JAR), *map(str, args)],
            capture_output=True, text=True, timeout=180,
            env=dict(os.environ, FLINK_CONF_DIR=str(self.conf)))
        out = r.stdout + r.stderr
        assert r.returncode == 0, f"flink run failed:\n{out[-4000:]}"
        return next(line.split()[-1] for line in out.splitlines() if "JobID" in line)

    def job_state(self, job_id):
        return self.rest(f"/jobs/{job_id}").get("state")

    def running_tasks(self, job_id):
        """How many of the job's subtasks are RUNNING."""
        vertices = self.rest(f"/jobs/{job_id}").get("vertices", [])
        return sum(v.get("tasks", {}).get("RUNNING", 0) for v in vertices)

    def total_tasks(self, job_id):
        return sum(v.get("parallelism", 0) for v in self.rest(f"/jobs/{job_id}").get("vertices", []))

    def checkpoints_completed(self, job_id):
        return self.rest(f"/jobs/{job_id}/checkpoints").get("counts", {}).get("completed", 0)

    def restarts(self, job_id):
        return self.rest(f"/jobs/{job_id}/checkpoints").get("counts", {}).get("restored", 0)

    @staticmethod
    def wait(condition, timeout, what):
        wait_for(condition, timeout, what, interval=0.3)

    def log_tail(self, chars=4000):
        return "\n".join(f"== {p.name}\n{p.read_text()[-chars:]}"
                         for p in sorted(self.logs.glob("*.log")))

    def stop(self):
        for p in self.taskmanagers + ([self.jobmanager] if self.jobmanager else []):
            p.terminate()
        for p in self.taskmanagers + ([self.jobmanager] if self.jobmanager else []):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.taskmanagers, self.jobmanager = [], None
