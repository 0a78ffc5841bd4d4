"""Shared benchmark plumbing: results as JSON + markdown, peak memory of a process tree, timers."""
from __future__ import annotations

import gzip
import json
import os
import shutil
import platform
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil

from wildreward.config import library_versions

RESULTS = Path(__file__).resolve().parent / "results"


def process_title(cmdline: list[str]) -> str:
    """What a process is, for memory breakdowns: Ray workers retitle themselves (``ray::MapWorker(...)``,
    ``ray::IDLE``); Ray's Python daemons (dashboard agent, log monitor, ...) and our stubs are named by their script
    or ``-m`` module, since their interpreter path alone lumps them together."""
    if not cmdline:
        return ""
    title = cmdline[0]
    if Path(title).name.startswith("python"):
        args = iter(cmdline[1:])
        for arg in args:
            if arg == "-m":
                title = f"python -m {next(args, '')}"
                break
            if not arg.startswith("-"):
                title = f"python {Path(arg).name}"
                break
    return title[:60]


class PeakMemory:
    """Samples the summed PSS (RSS where PSS is unavailable) of this process and all its descendants (the Ray
    workers and actors of an embedded cluster included) and keeps the peak, which processes made it up
    (``peak_breakdown``: MB by process title, largest first) and when it happened (``peak_at_s``). Two more peaks
    tell kinds of growth apart: the summed USS (``peak_private_mb``: heap and other private pages) and the bytes
    allocated in /dev/shm (``peak_shm_mb``: Ray's object store lives there, and its pages count in the PSS of
    every process that maps them). ``peak_between`` gives the peak of a time window (a pipeline stage)."""

    def __init__(self, interval_s: float = 0.25):
        self.interval_s, self.peak_bytes = interval_s, 0
        self.samples: list[tuple[float, int, str, int]] = []  # (epoch s, total, largest title, its bytes)
        self.peak_breakdown: dict[str, float] = {}
        self.peak_at_s = 0.0
        self.peak_private_bytes = self.peak_shm_bytes = 0
        self._t0 = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> tuple[dict[str, int], int]:
        me = psutil.Process()
        by_name: dict[str, int] = {}
        private = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                info = proc.memory_full_info()
                title = process_title(proc.cmdline()) or proc.name()
                by_name[title] = by_name.get(title, 0) + getattr(info, "pss", info.rss)
                private += getattr(info, "uss", info.rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
                pass
        return by_name, private

    def _run(self):
        while not self._stop.is_set():
            sample, private = self._sample()
            self.peak_private_bytes = max(self.peak_private_bytes, private)
            try:
                self.peak_shm_bytes = max(self.peak_shm_bytes, shutil.disk_usage("/dev/shm").used)
            except OSError:  # no /dev/shm (not Linux)
                pass
            total = sum(sample.values())
            top = max(sample.items(), key=lambda kv: kv[1], default=("", 0))
            self.samples.append((time.time(), total, *top))
            if total > self.peak_bytes:
                self.peak_bytes, self.peak_at_s = total, round(time.perf_counter() - self._t0, 1)
                self.peak_breakdown = {k: round(v / 2**20, 1) for k, v in
                                       sorted(sample.items(), key=lambda kv: -kv[1])[:8]}
            self._stop.wait(self.interval_s)

    def __enter__(self):
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def peak_between(self, start: float, end: float) -> dict:
        """Peak PSS (MB) of the samples taken between two epoch times, and its largest process."""
        inside = [x for x in self.samples if start <= x[0] <= end]
        if not inside:
            return {}
        _, total, title, top = max(inside, key=lambda x: x[1])
        return {"peak_mb": round(total / 2**20, 1), "largest": title, "largest_mb": round(top / 2**20, 1)}

    @property
    def peak_mb(self) -> float:
        return round(self.peak_bytes / 2**20, 1)

    @property
    def peak_private_mb(self) -> float:
        return round(self.peak_private_bytes / 2**20, 1)

    @property
    def peak_shm_mb(self) -> float:
        return round(self.peak_shm_bytes / 2**20, 1)


@contextmanager
def timed(into: dict, key: str):
    start = time.perf_counter()
    yield
    into[key] = round(time.perf_counter() - start, 3)


def kept_turns(path: str, n: int) -> list[dict]:
    """The first ``n`` turns of a chat-log file (or ``package:sharegpt``), in file order, from conversations that
    read cleanly and passing the rule filters: real annotator input, without starting Ray. A ``.turns.jsonl.gz``
    file holds turns saved by ``save_turns`` (what ``gpu_check.sh --prepare`` carries to the GPU machine)."""
    if path.endswith(TURNS_SUFFIX):
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            return [json.loads(line) for line, _ in zip(fh, range(n))]
    from wildreward.extract.config import FilterConfig, ReadConfig
    from wildreward.extract.filters import filter_reason
    from wildreward.extract.read import plan_read_tasks, read_task
    from wildreward.extract.turns import extract_turns

    read_cfg, filters = ReadConfig(paths=[path]), FilterConfig()
    turns = []
    for spec in plan_read_tasks(read_cfg):
        for conv in read_task(spec, read_cfg):
            if conv["quarantine_reason"] is not None:
                continue
            for turn in extract_turns(conv):
                if filter_reason(turn, filters) is None:
                    turns.append(turn)
                    if len(turns) == n:
                        return turns
    return turns


TURNS_SUFFIX = ".turns.jsonl.gz"
TURN_FIELDS = ("id", "conversation_id", "turn_index", "history", "query", "response", "feedback")


def save_turns(path: str, turns: list[dict], fields: tuple[str, ...] = TURN_FIELDS) -> None:
    """Write ``fields`` of each turn for ``kept_turns`` to read back elsewhere (no chat logs needed there)."""
    if not path.endswith(TURNS_SUFFIX):
        raise ValueError(f"{path}: a turns file must end with {TURNS_SUFFIX}")
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for turn in turns:
            fh.write(json.dumps({k: turn[k] for k in fields}, ensure_ascii=False) + "\n")


def write_results(name: str, results: dict, markdown: str) -> Path:
    """Write ``results/<name>.json`` (numbers + machine + versions) and ``results/<name>.md``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                           "memory_gb": round(psutil.virtual_memory().total / 2**30, 1)},
               "versions": library_versions(), "results": results}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(f"# {name}\n\n{markdown.strip()}\n\nMachine: {payload['machine']}; "
                                        f"measured {payload['time_utc']}.\n")
    return RESULTS / f"{name}.json"


def remove_work_dir(path: Path, keep: bool) -> None:
    """Benchmarks write models and checkpoints (GBs) to a temp dir; drop it unless asked to keep it."""
    if keep:
        print(f"work dir kept: {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)
