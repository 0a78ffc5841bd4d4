"""The README's main command path: a loopback Ray head + `ray job submit` of jobs/extract.py, then of
jobs/train_rm.py on its output, then of jobs/eval_rm.py on the trained model."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as pads
import pytest
import yaml

from tests.conftest import REPO, SHARED

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]


def test_run_local_submits_extract_train_and_eval_jobs(tmp_path, chatlogs, tiny_lm, tiny_bert):
    logs = tmp_path / "logs"
    logs.mkdir()
    lines = (chatlogs / "wildchat_sample.jsonl").read_bytes().splitlines()[:12]
    (logs / "wildchat.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    config = tmp_path / "extract.yaml"
    config.write_text(yaml.safe_dump({
        "read": {"paths": [str(logs)]}, "annotator": {"model": tiny_lm, "batch_size": 4},
        "split": {"test_size": 3}}))
    train_config = tmp_path / "train.yaml"
    train_config.write_text(yaml.safe_dump({
        "model": {"backbone": tiny_bert, "max_length": 256}, "dist": {"num_workers": 1},
        "batch": {"global_batch_size": 2, "micro_batch_size": 1, "length_group_size": 4}}))
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "EXTRACT_CONFIG": str(config), "TRAIN_CONFIG": str(train_config),
           "RAY_PORT": "6391", "RAY_DASHBOARD_PORT": "8277", "WILDREWARD_SHARED": str(SHARED)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(["bash", str(REPO / "jobs" / "run_local.sh"), "train.optim.lr=1e-4", "eval.max_pairs=6",
                           "eval.num_actors=1"], cwd=REPO, env=env, capture_output=True, text=True, timeout=800)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert log.count("SUCCEEDED") == 3 and f"reward model in {out}/train/model" in log
    assert pads.dataset(str(out / "extract" / "train"), format="parquet").count_rows() > 0
    assert (out / "extract" / "stats.json").exists() and (out / "extract" / "config.yaml").exists()
    assert (out / "train" / "model" / "wildreward.json").exists() and (out / "train" / "eval.json").exists()
    report = json.loads((out / "eval" / "report.json").read_text())
    assert set(report["benchmarks"]) == {"rm_bench", "llmbar", "xstest", "hh_harmless"}
    assert (out / "eval" / "report.md").exists()
    # The head was stopped on exit.
    status = subprocess.run([str(Path(sys.executable).parent / "ray"), "status", "--address", "127.0.0.1:6391"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert status.returncode != 0
