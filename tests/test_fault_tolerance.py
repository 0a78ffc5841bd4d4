"""Fault tolerance of the extraction stage, with nothing lost and nothing doubled.

Already covered elsewhere (not repeated here): a training worker failing mid-run and an interrupted training run
resuming from its checkpoint (tests/test_train_ray.py, ``fail_once_at_step``); a Serve replica killed under load
(tests/test_serve.py); malformed *lines* quarantined one by one (tests/test_read.py) and end to end
(tests/test_extract_pipeline.py, together with a crash simulated by deleting annotation files).

Here: an annotator actor killed mid-annotation; the driver killed (SIGKILL) mid-annotation and the same command
re-run; whole bad input files (binary garbage, wrong schema, empty, not UTF-8, corrupt Parquet and gzip) next to
a good one. The annotator is the ``http`` backend against :func:`wildreward.testing.openai_stub.start_stub`,
whose label is a hash of the prompt, so every label written can be checked against the one the stub gave for that
very row.
"""
from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from wildreward.testing.fake_cluster import free_port, is_pool_actor, kill_marked, processes_marked, wait_for
from tests.conftest import CHATLOGS, REPO
from wildreward import ray_compat as rc
from wildreward.config import load_config
from wildreward.extract.config import ExtractConfig
from wildreward.extract.pipeline import run_extract
from wildreward.storage import read_table
from wildreward.testing import openai_stub

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(600)]

LMSYS = CHATLOGS / "lmsys_chat_sample.jsonl"
STUB_LATENCY_MS = 100


@pytest.fixture(scope="module")
def stub():
    server = openai_stub.start_stub(latency_ms=STUB_LATENCY_MS)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ray_dash():
    """A local Ray (2 CPUs) with its dashboard on a free loopback port: the state API that finds the annotator
    actors is served by the dashboard. Yields (dashboard URL, session dir)."""
    import ray

    port = free_port()
    ctx = ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port,
                   log_to_driver=False)
    yield f"http://127.0.0.1:{port}", ctx.address_info["session_dir"]
    ray.shutdown()


def overrides(out: Path, logs, stub_url: str, *extra: str) -> list[str]:
    return [f"output_dir={out}", f"read.paths=[{logs}]", "annotator.backend=http", "annotator.model=stub-model",
            f"annotator.http.base_url={stub_url}", "annotator.http.concurrency=2", "annotator.batch_size=4",
            "annotator.num_cpus=0.5", "mining.enabled=false", "split.test_size=20", *extra]


def extract_config(*args, **kwargs) -> ExtractConfig:
    return load_config(ExtractConfig, None, overrides(*args, **kwargs))


def stub_label(row: dict, cfg: ExtractConfig) -> int:
    """The label the stub gives this turn (argmax of its prompt-hash distribution), 1..5."""
    from wildreward.extract.annotate import build_feedback_prompt

    prompt = build_feedback_prompt(row, cfg.annotator.mode, cfg.annotator.max_field_chars)[-1]["content"]
    logprobs = openai_stub.fake_logprobs(prompt)
    return 1 + max(range(len(logprobs)), key=logprobs.__getitem__)


def check_outputs(out: Path, stats: dict, cfg: ExtractConfig) -> dict:
    """Every kept turn annotated exactly once with the label the annotator gave it; no id twice in any output."""
    assert all(stats["reconciled"].values())
    assert stats["annotate"]["annotated"] == stats["turns"]["kept"] > 0
    assert stats["annotate"]["errors"] == 0
    ann = read_table(out / "stages" / "annotate")
    assert len(pc.unique(ann["id"])) == ann.num_rows == stats["turns"]["kept"]
    wrong = [r["id"] for r in ann.to_pylist() if r["label"] != stub_label(r, cfg)]
    assert not wrong, f"{len(wrong)} rows carry a label the annotator did not give them: {wrong[:5]}"
    final = read_table(out / "stages" / "final", ["id"])
    assert len(pc.unique(final["id"])) == final.num_rows == ann.num_rows
    split = pa.concat_tables([read_table(out / name, ["id", "label"]) for name in ("train", "test")])
    assert len(pc.unique(split["id"])) == split.num_rows == stats["final"]["kept"]
    return {r["id"]: r["label"] for r in split.to_pylist()}


# ---------------------------------------------------------------- (a) an annotator actor dies mid-job

def test_killed_annotator_actor_is_restarted_and_nothing_is_lost(tmp_path, ray_dash, stub):
    """SIGKILL on one annotator actor's process while annotation files are being written (a crash or OOM kill):
    Ray Data's actor pool actors restart (max_restarts=-1) and their lost tasks are retried, so the job completes
    with every kept turn annotated once."""
    dashboard, session_dir = ray_dash
    out = tmp_path / "run"
    cfg = extract_config(out, LMSYS, stub.url, "annotator.min_actors=2", "annotator.max_actors=2")
    ann_dir = out / "stages" / "annotate"
    stop, kill = threading.Event(), {}

    def killer():
        try:
            while not stop.is_set():
                if any(ann_dir.glob("*.parquet")) and not (ann_dir / "_DONE.json").exists():
                    alive = [a for a in rc.cluster_state(dashboard)["actors"]
                             if is_pool_actor(a, "AnnotateUDF") and a["state"] == "ALIVE" and a["pid"]]
                    ours = {p.pid for p in processes_marked(session_dir)}
                    if alive:
                        victim = alive[0]
                        assert victim["pid"] in ours, f"pid {victim['pid']} is not a process of this test's Ray"
                        os.kill(victim["pid"], signal.SIGKILL)
                        kill.update(victim, files_before=len(list(ann_dir.glob("*.parquet"))))
                        break
                stop.wait(0.2)
            while not stop.is_set():  # watch the same actor come back
                again = [a for a in rc.cluster_state(dashboard)["actors"] if a["actor_id"] == kill["actor_id"]]
                if again and again[0]["state"] == "ALIVE" and again[0]["num_restarts"] >= 1:
                    kill["restarted_pid"] = again[0]["pid"]
                    break
                stop.wait(0.2)
        except Exception as err:  # reported by the test
            kill["error"] = repr(err)

    requests_before = stub.stats().get("feedback", {}).get("requests", 0)
    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        stats = run_extract(cfg)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert "error" not in kill, kill["error"]
    assert "pid" in kill, "annotation finished before an actor could be killed: make the backlog bigger"
    print(f"killed {kill['class_name']} pid {kill['pid']} with {kill['files_before']} annotation files written; "
          f"restarted as pid {kill.get('restarted_pid')}")
    assert kill.get("restarted_pid") not in (None, kill["pid"]), "the killed actor was not restarted"
    check_outputs(out, stats, cfg)
    assert stats["annotate"]["annotated_this_run"] == stats["annotate"]["annotated"]
    # Rows in flight on the killed actor were sent again (at least once), none was skipped.
    requests = stub.stats()["feedback"]["requests"] - requests_before
    assert requests >= stats["annotate"]["annotated"]


# ---------------------------------------------------------------- (b) the driver dies; the same command is re-run

# ~290 kept turns in 5 annotation blocks of 64 (8 x the 8-row HTTP batch); the refusal judge, another resumable
# LLM stage, is left out to keep the test short.
DRIVER_RUN = ["read.max_conversations=100", "refusal.enabled=false"]


def start_cli(out: Path, stub_url: str, ray_tmp: str, log: Path) -> subprocess.Popen:
    """``python -m wildreward.cli extract ...`` with a private local Ray whose files (and so its processes'
    command lines) live under ``ray_tmp``."""
    env = {**os.environ, **rc.LOCAL_RAY_ENV, "RAY_TMPDIR": ray_tmp, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "wildreward.cli", "extract", *overrides(out, LMSYS, stub_url, *DRIVER_RUN)]
    with open(log, "ab") as fh:
        return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def test_driver_killed_mid_annotation_resumes_without_duplicates(tmp_path, ray_dash, stub):
    # The uninterrupted reference, in this process.
    ref_cfg = extract_config(tmp_path / "reference", LMSYS, stub.url, *DRIVER_RUN)
    reference = check_outputs(tmp_path / "reference", run_extract(ref_cfg), ref_cfg)

    out, log = tmp_path / "run", tmp_path / "cli.log"
    ann_dir = out / "stages" / "annotate"
    ray_tmp = tempfile.mkdtemp(prefix="wrdrv_", dir="/tmp")  # short: Unix socket paths live under it
    try:
        first = start_cli(out, stub.url, ray_tmp, log)
        try:
            started = wait_for(lambda: first.poll() is not None or any(ann_dir.glob("*.parquet")), 300, 0.2)
            assert started and first.poll() is None, f"the run ended before any annotation was written:\n" \
                                                     f"{log.read_text()[-3000:]}"
            written = len(list(ann_dir.glob("*.parquet")))
            first.send_signal(signal.SIGKILL)  # the driver only: its Ray is left to notice on its own
            first.wait(timeout=30)
        finally:
            if first.poll() is None:
                first.kill()
        assert not (ann_dir / "_DONE.json").exists()
        # Ray ends a dead driver's local cluster by itself (its reaper); leftovers would be killed here, and
        # a worker still writing would race with the re-run.
        cleaned = wait_for(lambda: not processes_marked(ray_tmp), 60, 1.0)
        leftovers = kill_marked(ray_tmp)
        print(f"killed the driver with {written} annotation file(s) written; Ray cleaned up on its own: "
              f"{cleaned} ({leftovers} process(es) left)")

        second = start_cli(out, stub.url, ray_tmp, log)
        try:
            assert second.wait(timeout=420) == 0, log.read_text()[-5000:]
        finally:
            if second.poll() is None:
                second.kill()
    finally:
        kill_marked(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)

    stats = json.loads((out / "stats.json").read_text())
    assert 0 < stats["annotate"]["annotated_this_run"] < stats["annotate"]["annotated"], stats["annotate"]
    assert "resuming:" in log.read_text()
    resumed = check_outputs(out, stats, ref_cfg)
    assert resumed == reference  # same ids, same labels, same train/test rows as the uninterrupted run
    ref_stats = json.loads((tmp_path / "reference" / "stats.json").read_text())
    timing = {"seconds", "started_at"}
    for stage in ("read", "turns", "final", "split"):
        assert {k: v for k, v in stats[stage].items() if k not in timing} == \
               {k: v for k, v in ref_stats[stage].items() if k not in timing}, stage


# ---------------------------------------------------------------- (c) bad input files next to a good one

def write_bad_inputs(d: Path) -> dict[str, int]:
    """Good and bad chat-log files in ``d``; returns the number of good conversations per file name."""
    lines = LMSYS.read_bytes().splitlines()
    d.mkdir(parents=True)
    (d / "good.jsonl").write_bytes(b"\n".join(lines[:12]) + b"\n")
    rng = random.Random(0)
    (d / "garbage.jsonl").write_bytes(bytes(rng.randrange(256) for _ in range(3000)))
    (d / "garbage.parquet").write_bytes(bytes(rng.randrange(256) for _ in range(3000)))
    (d / "garbage.jsonl.gz").write_bytes(bytes(rng.randrange(256) for _ in range(3000)))
    (d / "empty.jsonl").write_bytes(b"")
    (d / "empty.parquet").write_bytes(b"")
    (d / "wrong_schema.jsonl").write_text("".join(json.dumps({"text": f"hello {i}", "score": i}) + "\n"
                                                  for i in range(3)))
    pq.write_table(pa.table({"prompt": ["a", "b"], "score": [1, 2]}), d / "wrong_schema.parquet")
    latin1 = {"conversation_id": "latin1", "conversation": [
        {"role": "user", "content": "Un café crème, s'il vous plaît"}, {"role": "assistant", "content": "Voilà."}]}
    (d / "latin1.jsonl").write_bytes(json.dumps(latin1, ensure_ascii=False).encode("latin-1") + b"\n")
    packed = gzip.compress(b"\n".join(lines[12:24]) + b"\n")
    (d / "truncated.jsonl.gz").write_bytes(packed[: len(packed) * 6 // 10])
    with gzip.open(d / "truncated.jsonl.gz") as fh:  # the lines that survive the cut
        survivors = 0
        try:
            for _ in fh:
                survivors += 1
        except EOFError:
            pass
    return {"good.jsonl": 12, "truncated.jsonl.gz": survivors}


EXPECTED_REASONS = {  # file -> quarantine reasons (prefix before ':') of its rows, in line order
    "garbage.parquet": ["unreadable_file"],
    "garbage.jsonl.gz": ["unreadable_file"],
    "empty.parquet": ["unreadable_file"],
    "wrong_schema.jsonl": ["missing_field"] * 3,
    "wrong_schema.parquet": ["missing_field"] * 2,
    "latin1.jsonl": ["invalid_encoding"],
    "truncated.jsonl.gz": ["unreadable_file"],
}


def test_bad_input_files_are_quarantined_and_the_good_rows_processed(tmp_path, ray_dash, stub):
    logs = tmp_path / "logs"
    good = write_bad_inputs(logs)
    assert 0 < good["truncated.jsonl.gz"] < 12
    out = tmp_path / "run"
    cfg = extract_config(out, logs, stub.url, "split.test_size=5")
    stats = run_extract(cfg)

    # The job finished; the good conversations went through, every bad record is in quarantine with a reason.
    check_outputs(out, stats, cfg)
    read = read_table(out / "stages" / "read", ["source_file", "line", "quarantine_reason"]).to_pylist()
    by_file: dict[str, list] = {}
    for row in sorted(read, key=lambda r: (r["source_file"], r["line"])):
        by_file.setdefault(Path(row["source_file"]).name, []).append(row)
    assert "empty.jsonl" not in by_file  # nothing to account for
    for name, n in good.items():
        assert sum(r["quarantine_reason"] is None for r in by_file[name]) == n, name
    for name, reasons in EXPECTED_REASONS.items():
        got = [r["quarantine_reason"].split(":")[0] for r in by_file[name] if r["quarantine_reason"]]
        assert got == reasons, (name, got)
    garbage = [r["quarantine_reason"] for r in by_file["garbage.jsonl"]]
    assert garbage and all(r and r.split(":")[0] in ("invalid_encoding", "invalid_json", "not_object")
                           for r in garbage)
    unreadable = [r for rows in by_file.values() for r in rows
                  if r["quarantine_reason"] and r["quarantine_reason"].startswith("unreadable_file")]
    assert {Path(r["source_file"]).name for r in unreadable} == {"garbage.parquet", "garbage.jsonl.gz",
                                                                 "empty.parquet", "truncated.jsonl.gz"}
    truncated = by_file["truncated.jsonl.gz"][-1]
    assert truncated["line"] == good["truncated.jsonl.gz"] + 1 and "EOFError" in truncated["quarantine_reason"]

    # Counts reconcile: records = conversations + quarantined, and the quarantine folder holds exactly those.
    quarantined = sum(r["quarantine_reason"] is not None for r in read)
    assert stats["read"]["records"] == len(read) == stats["read"]["conversations"] + quarantined
    assert stats["read"]["conversations"] == sum(good.values())
    assert sum(stats["read"]["quarantined"].values()) == quarantined
    q = read_table(out / "quarantine")
    assert q.num_rows == quarantined and q["quarantine_reason"].null_count == 0
    assert q["source_file"].null_count == 0 and q["line"].null_count == 0
