"""A local multi-node Ray cluster for tests and benchmarks, and a trace of its nodes and actor pools.

:class:`FakeAutoscalingCluster` runs Ray's ``fake_multinode`` node provider (autoscaler v1): a head plus one worker
node type whose "nodes" are extra raylets on this machine. It is used instead of
``ray.cluster_utils.AutoscalingCluster``, which runs ``ray stop --force`` (ending every Ray on the machine), binds
the default ports (6379, 8265, 10001, 52365) and loads ``fake_multi_node/example.yaml``, which the Ray 2.60 wheel
does not ship. Ours uses free ports and its own temp dir (so ``ray.init("auto")`` elsewhere never finds it) and, on
shutdown, ends only its own processes.

:class:`ClusterTrace` samples (time, alive nodes, actors of one Ray Data pool) in a background thread.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from wildreward import ray_compat as rc

# ---------------------------------------------------------------- own processes only


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_marked(marker: str) -> list[psutil.Process]:
    """Processes whose command line contains ``marker`` (a private temp dir), with all their descendants.

    Ray workers and agents rewrite their titles (``ray::IDLE``...), so they are found as descendants of the
    raylet / monitor / driver whose command line still names the temp dir."""
    roots = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.pid != os.getpid() and any(marker in part for part in proc.info["cmdline"] or []):
                roots.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    found = {p.pid: p for p in roots}
    for root in roots:
        try:
            for child in root.children(recursive=True):
                if child.pid != os.getpid():
                    found.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            continue
    return list(found.values())


def terminate(procs: list[psutil.Process], grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL whatever is left after ``grace_s``."""
    for proc in procs:
        try:
            proc.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace_s)


def kill_marked(marker: str) -> int:
    """End every process of ours (see :func:`processes_marked`); returns how many there were. Repeated because
    a process can spawn a child between the scan and the kill."""
    total = 0
    for _ in range(3):
        procs = processes_marked(marker)
        if not procs:
            break
        total += len(procs)
        terminate(procs)
    return total


# ---------------------------------------------------------------- the fake multi-node cluster

class FakeAutoscalingCluster:
    """A head node plus an autoscaled worker node type, all on this machine (fake_multinode provider, autoscaler v1).

    ``worker_cpus`` / ``min_workers`` / ``max_workers`` describe the one worker type (``min_workers == max_workers``
    makes a fixed-size cluster); ``idle_timeout_minutes`` is how long a worker node above ``min_workers`` must be
    idle before the autoscaler removes it."""

    WORKER_TYPE = "ray.worker.cpu"

    def __init__(self, head_cpus: int = 1, worker_cpus: int = 1, max_workers: int = 2, min_workers: int = 0,
                 idle_timeout_minutes: float = 0.1, object_store_bytes: int = 150 << 20):
        self.head_cpus, self.worker_cpus = head_cpus, worker_cpus
        self.min_workers, self.max_workers = min_workers, max_workers
        self.idle_timeout_minutes, self.object_store_bytes = idle_timeout_minutes, object_store_bytes
        self.temp_dir: str | None = None
        self.port = self.dashboard_port = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def autoscaling_config(self) -> dict:
        # Ray's fake_multi_node/example.yaml, with our head resources, one worker type and the GCS port we chose.
        return {
            "cluster_name": "wildreward_fake",
            "max_workers": self.max_workers,
            "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                         "disable_launch_config_check": True, "gcs_address": self.address},
            "available_node_types": {
                "ray.head.default": {"resources": {"CPU": self.head_cpus}, "node_config": {}, "max_workers": 0},
                self.WORKER_TYPE: {"resources": {"CPU": self.worker_cpus,
                                                 "object_store_memory": self.object_store_bytes},
                                   "node_config": {}, "min_workers": self.min_workers, "max_workers": self.max_workers},
            },
            "head_node_type": "ray.head.default", "auth": {}, "upscaling_speed": 1.0,
            "idle_timeout_minutes": self.idle_timeout_minutes, "docker": {}, "initialization_commands": [],
            "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
            "head_start_ray_commands": [], "worker_start_ray_commands": [], "file_mounts": {},
            "cluster_synced_files": [], "file_mounts_sync_continuously": False, "rsync_exclude": [],
            "rsync_filter": [],
        }

    def start(self) -> "FakeAutoscalingCluster":
        # A short private temp dir: Unix socket paths under it must stay below ~107 characters.
        self.temp_dir = tempfile.mkdtemp(prefix="wrfake_", dir="/tmp")
        self.port, self.dashboard_port = free_port(), free_port()
        config = Path(self.temp_dir) / "autoscaling.json"
        config.write_text(json.dumps(self.autoscaling_config()))
        env = {**os.environ, **rc.LOCAL_RAY_ENV, "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_FAKE_CLUSTER": "1",
               # A loaded 2-CPU machine can take over a minute to start a node (60 s is Ray's default).
               "RAY_raylet_start_wait_time_s": "300"}
        env.pop("RAY_ADDRESS", None)
        cmd = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--node-ip-address=127.0.0.1",
               f"--port={self.port}", f"--temp-dir={self.temp_dir}", f"--autoscaling-config={config}",
               f"--num-cpus={self.head_cpus}", f"--object-store-memory={self.object_store_bytes}",
               "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
               f"--dashboard-agent-listen-port={free_port()}", f"--ray-client-server-port={free_port()}",
               "--disable-usage-stats"]
        try:
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=120)
        except subprocess.CalledProcessError as err:
            self.shutdown()
            raise RuntimeError(f"ray start failed:\n{err.stdout}") from err
        except BaseException:
            self.shutdown()
            raise
        return self

    def save_logs(self, dest: Path) -> None:
        """Copy the autoscaler's and Ray Data's logs (the reasons for every scaling decision) to ``dest``."""
        if self.temp_dir is None:
            return
        for session in Path(self.temp_dir).glob("session_2*"):
            for pattern in ("monitor.*", "ray-data/*.log"):
                for log in (session / "logs").glob(pattern):
                    dest.mkdir(parents=True, exist_ok=True)
                    shutil.copy(log, dest / log.name)

    def shutdown(self) -> int:
        """End this cluster's processes (and only them); returns how many there were."""
        if self.temp_dir is None:
            return 0
        killed = kill_marked(self.temp_dir)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        self.temp_dir = None
        return killed

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.shutdown()


# ---------------------------------------------------------------- trace

def is_pool_actor(actor: dict, udf: str) -> bool:
    """An actor of the Ray Data actor pool running ``udf`` (a class name): Ray Data names the actor class
    ``MapWorker(MapBatches(<udf>))`` (fused operators add ``->...``)."""
    return actor["class_name"].startswith("MapWorker(") and udf in actor["class_name"]


class ClusterTrace:
    """Samples the cluster every ``interval_s`` in a background thread: alive nodes (head and workers), CPUs,
    and the Ray Data actor-pool actors whose repr names ``pool`` (e.g. ``"AnnotateUDF"``), alive and not yet alive.
    Use as a context manager; ``samples`` holds the trace, :meth:`write` saves it as JSON."""

    def __init__(self, dashboard_url: str, pool: str = "AnnotateUDF", interval_s: float = 0.5):
        self.dashboard_url, self.pool, self.interval_s = dashboard_url, pool, interval_s
        self.samples: list[dict] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cluster-trace", daemon=True)
        self._t0 = time.time()

    def sample(self) -> dict:
        state = rc.cluster_state(self.dashboard_url)
        pool = [a for a in state["actors"] if is_pool_actor(a, self.pool)]
        return {"t": round(time.time() - self._t0, 2), "nodes": len(state["nodes"]),
                "worker_nodes": sum(not n["is_head"] for n in state["nodes"]),
                "cpus": sum(n["cpus"] for n in state["nodes"]),
                "pool_alive": sum(a["state"] == "ALIVE" for a in pool),
                "pool_nodes": len({a["node_id"] for a in pool if a["state"] == "ALIVE"}),
                "pool_not_alive": sum(a["state"] != "ALIVE" for a in pool)}

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self.sample())
            except Exception as err:  # the state API can time out on a loaded machine: a gap, not a failure
                self.errors.append(f"{time.time() - self._t0:.1f}s: {type(err).__name__}: {str(err)[:200]}")
            self._stop.wait(self.interval_s)

    def mark(self, event: str) -> None:
        self.samples.append({"t": round(time.time() - self._t0, 2), "event": event})

    def __enter__(self):
        self._t0 = time.time()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)

    def series(self, key: str) -> list:
        return [s[key] for s in self.samples if key in s]

    def write(self, path: Path, **extra) -> Path:
        path.write_text(json.dumps({"pool": self.pool, "interval_s": self.interval_s, **extra,
                                    "samples": self.samples, "errors": self.errors}, indent=1))
        return path


def wait_for(predicate, timeout_s: float, interval_s: float = 1.0) -> bool:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()
