"""The README's main command path: a loopback Ray head + `ray job submit` of jobs/pipeline.py (extract -> train ->
eval -> serve as one job); a second run skips the finished stages."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as pads
import pytest
import yaml

from tests.conftest import REPO, SHARED

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(1200)]


def test_run_local_submits_the_pipeline_and_resumes(tmp_path, chatlogs, tiny_lm, tiny_bert):
    logs = tmp_path / "logs"
    logs.mkdir()
    lines = (chatlogs / "wildchat_sample.jsonl").read_bytes().splitlines()[:12]
    (logs / "wildchat.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump({
        "extract": {"read": {"paths": [str(logs)]}, "annotator": {"model": tiny_lm, "batch_size": 4},
                    "split": {"test_size": 3}},
        "train": {"model": {"backbone": tiny_bert, "max_length": 256}, "dist": {"num_workers": 1},
                  "batch": {"global_batch_size": 2, "micro_batch_size": 1, "length_group_size": 4}},
        "eval": {"max_pairs": 6, "num_actors": 1},
        "serve": {"port": 8398, "num_cpus": 0.25}}))
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PIPELINE_CONFIG": str(config), "RAY_PORT": "6391",
           "RAY_DASHBOARD_PORT": "8277", "WILDREWARD_SHARED": str(SHARED)}
    env.pop("RAY_ADDRESS", None)

    def run_local(*overrides):
        proc = subprocess.run(["bash", str(REPO / "jobs" / "run_local.sh"), *overrides], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=1000)
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0, log[-4000:]
        return log

    log = run_local("train.optim.lr=1e-4")
    assert log.count("SUCCEEDED") == 1 and f"outputs in {out}" in log
    # No progress bar of the held-out set from inside the train workers (it repeated until the workers exited).
    bars = [line for line in log.splitlines() if "Dataset validation" in line and " row [" in line]
    assert not bars, bars[:3]
    assert pads.dataset(str(out / "extract" / "train"), format="parquet").count_rows() > 0
    assert (out / "extract" / "stats.json").exists() and (out / "extract" / "config.yaml").exists()
    assert (out / "train" / "model" / "wildreward.json").exists() and (out / "train" / "eval.json").exists()
    assert yaml.safe_load((out / "train" / "config.yaml").read_text())["optim"]["lr"] == 1e-4
    report = json.loads((out / "eval" / "report.json").read_text())
    assert set(report["benchmarks"]) == {"rm_bench", "llmbar", "xstest", "hh_harmless", "rewardbench",
                                         "judgebench_gpt4o", "judgebench_claude", "ppe_human", "ppe_correctness"}
    # the hub benchmarks are not in ../shared/data: listed as not evaluated, with no score
    assert all(report["benchmarks"][b]["status"].startswith("not evaluated (file absent: ")
               for b in ("rewardbench", "judgebench_gpt4o", "judgebench_claude", "ppe_human", "ppe_correctness"))
    check = json.loads((out / "serve" / "check.json").read_text())
    assert check["checked_items"] > 0 and check["max_abs_diff"] < 1e-3
    stages = json.loads((out / "pipeline.json").read_text())["stages"]
    assert [s for s, info in stages.items() if not info["skipped"]] == ["extract", "train", "eval", "serve"]

    # The same output dir: finished stages are not redone (serve always redeploys, so it is left out here).
    log = run_local("stages=[extract,train,eval]")
    for stage in ("extract", "train", "eval"):
        assert f"{stage}: done before" in log
    # The head was stopped on exit.
    status = subprocess.run([str(Path(sys.executable).parent / "ray"), "status", "--address", "127.0.0.1:6391"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert status.returncode != 0
