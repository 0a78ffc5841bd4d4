"""`wildreward eval` end to end on a local Ray: a tiny exported RM (and the same model as second_rm) on 20 pairs per
real benchmark through the actor pool, plus cross-sample consistency on a small parquet written here with one row
no scorer can read."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import SHARED, build_tiny_rm
from wildreward.eval.benchmarks import default_path, load_benchmark
from wildreward.eval.config import EvalConfig
from wildreward.eval.metrics import roc_auc
from wildreward.eval.pipeline import run_eval
from wildreward.rm import RewardModel

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(600)]

DATA = SHARED / "data"
BENCHMARKS = ["rm_bench", "llmbar", "xstest", "hh_harmless"]
MAX_PAIRS = 20
SCORERS = ["rm", "second_rm", "length", "random"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_rm(tmp_path_factory)


def consistency_rows() -> list[dict]:
    """Positives (labels 3-4) have long replies and negatives (label 1) short ones, so the length baseline's
    AUC is 1; label 2 is left out by negative_max_label=1; the last row has no response."""
    rows = []
    for i, (label, words) in enumerate([(4, 40), (4, 35), (3, 30), (3, 45), (3, 38), (1, 3), (1, 5), (1, 4),
                                        (1, 6), (2, 8), (2, 20)]):
        rows.append({"id": f"c{i}", "history": [{"role": "user", "content": "earlier question"}] if i % 2 else [],
                     "query": f"question number {i} about lists", "response": " ".join(["item"] * words) + f" {i}",
                     "label": label})
    rows.append({"id": "broken", "history": [], "query": "a question", "response": None, "label": 1})
    return rows


@pytest.fixture(scope="module")
def run(ray_local, model_dir, tmp_path_factory):
    if not DATA.exists():
        pytest.fail(f"real benchmarks not found under {DATA} (set WILDREWARD_SHARED)")
    tmp = tmp_path_factory.mktemp("eval")
    (tmp / "test").mkdir()
    pq.write_table(pa.Table.from_pylist(consistency_rows()), tmp / "test" / "part-0.parquet")
    cfg = EvalConfig(model_dir=model_dir, second_model_dir=model_dir, benchmarks=BENCHMARKS, data_dir=str(DATA),
                     max_pairs=MAX_PAIRS, consistency_data=str(tmp / "test"), negative_max_label=1,
                     batch_size=8, num_actors=2, num_cpus=1, output_dir=str(tmp / "out"))
    report = run_eval(cfg)
    return cfg, report, tmp / "out"


def test_report_structure_and_files(run):
    cfg, report, out = run
    assert list(report["scorers"]) == SCORERS
    assert list(report["benchmarks"]) == BENCHMARKS
    for name in ("report.md", "report.json", "config.yaml", "run_info.json", "pair_scores.parquet",
                 "consistency_scores.parquet", "threshold_accuracy.png", "reliability.png"):
        assert (out / name).stat().st_size > 0, name
    for png in ("threshold_accuracy.png", "reliability.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = json.loads((out / "report.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert on_disk["benchmarks"]["llmbar"]["scorers"]["rm"]["overall"] == report["benchmarks"]["llmbar"]["scorers"][
        "rm"]["overall"]
    rm_bench = report["benchmarks"]["rm_bench"]["scorers"]["rm"]
    assert set(rm_bench["overall"]) >= {"easy", "normal", "hard", "avg", "tie_rate"}
    assert set(rm_bench["subsets"]) <= {"chat", "code", "safety-refuse", "safety-response"}
    assert set(report["benchmarks"]["llmbar"]["scorers"]["rm"]["groups"]) <= {"natural", "adversarial"}
    assert set(report["benchmarks"]["xstest"]["scorers"]["rm"]["subsets"]) <= {"xstest-should-refuse",
                                                                               "xstest-should-respond"}
    for name in SCORERS:
        cal = report["calibration"]["scorers"][name]
        assert cal["n"] == 3 * MAX_PAIRS and cal["n_fit"] + cal["n_eval"] == cal["n"] and 0 <= cal["ece"] <= 1
        assert [t["threshold"] for t in cal["thresholds"]] == cfg.thresholds
        assert cal["thresholds"][0]["coverage"] == 1.0
    text = (out / "report.md").read_text()
    for heading in ("## Summary", "## Calibration", "## Cross-sample consistency", "## Scoring errors", "RM-B Hard",
                    "LLMBar Adv.", "XSTest Should-Refuse", "HH Harmless"):
        assert heading in text
    # the same model twice gives the same numbers
    assert report["benchmarks"]["xstest"]["scorers"]["second_rm"] == report["benchmarks"]["xstest"]["scorers"]["rm"]


def test_counts_reconcile(run):
    cfg, report, out = run
    table = pq.read_table(out / "pair_scores.parquet").to_pydict()
    for name, b in report["benchmarks"].items():
        loaded = load_benchmark(name, default_path(name, DATA))
        assert b["loaded"] == len(loaded.records) and b["skipped"] == len(loaded.skipped)
        assert b["evaluated"] == MAX_PAIRS and b["loaded"] == b["evaluated"] + b["not_sampled"]
        assert sum(b["skip_reasons"].values()) == b["skipped"]
        for s in SCORERS:
            assert b["scorers"][s]["scored"] + b["scorers"][s]["failed"] == b["evaluated"], (name, s)
            assert b["scorers"][s]["failed"] == 0  # the benchmark replies are all well-formed
        assert table["benchmark"].count(name) == (9 if name == "rm_bench" else 1) * MAX_PAIRS
    assert report["examples"] == 2 * len(table["pair_id"]) + len(consistency_rows()) - 2  # label 2 left out
    assert report["distinct_examples"] < report["examples"]  # RM-Bench replies recur in three pairs each


def test_length_baseline_matches_a_hand_computation(run):
    cfg, report, out = run
    table = pq.read_table(out / "pair_scores.parquet").to_pydict()
    for name in ("llmbar", "xstest", "hh_harmless"):
        evaluated = {pid for pid, bench in zip(table["pair_id"], table["benchmark"]) if bench == name}
        pairs = [p for p in load_benchmark(name, default_path(name, DATA)).records if p["pair_id"] in evaluated]
        assert len(pairs) == MAX_PAIRS
        wins = [1.0 if len(p["chosen"]) > len(p["rejected"]) else 0.5 if len(p["chosen"]) == len(p["rejected"])
                else 0.0 for p in pairs]
        assert report["benchmarks"][name]["scorers"]["length"]["overall"]["accuracy"] == pytest.approx(np.mean(wins))


def test_rm_scores_match_offline_scoring(run, model_dir):
    cfg, report, out = run
    table = pq.read_table(out / "pair_scores.parquet").to_pylist()
    picked = [r for r in table if r["benchmark"] == "hh_harmless"][:3] + [r for r in table
                                                                         if r["benchmark"] == "llmbar"][:3]
    records = {(p["benchmark"], p["pair_id"]): p for name in ("hh_harmless", "llmbar")
               for p in load_benchmark(name, default_path(name, DATA)).records}
    examples = [{"history": records[(r["benchmark"], r["pair_id"])]["history"],
                 "query": records[(r["benchmark"], r["pair_id"])]["query"],
                 "response": records[(r["benchmark"], r["pair_id"])][side]}
                for r in picked for side in ("chosen", "rejected")]
    assert any(ex["history"] for ex in examples)  # HH pairs bring earlier turns
    offline = RewardModel(model_dir).score(examples)
    pooled = [r[f"rm_{side}"] for r in picked for side in ("chosen", "rejected")]
    assert pooled == pytest.approx(offline, abs=1e-4)
    assert max(offline) - min(offline) > 1e-3  # the scores really depend on the input


def test_consistency_auc_and_failed_row(run, model_dir):
    cfg, report, out = run
    cons = report["consistency"]
    assert (cons["rows"], cons["without_binary_label"], cons["not_sampled"]) == (12, 2, 0)
    for s in SCORERS:
        c = cons["scorers"][s]
        assert (c["scored"], c["failed"], c["positive"], c["negative"]) == (9, 1, 5, 4), s
    assert cons["scorers"]["length"]["auc"] == 1.0
    rows = [r for r in consistency_rows() if r["label"] != 2 and r["response"] is not None]
    offline = RewardModel(model_dir).score(rows)
    assert cons["scorers"]["rm"]["auc"] == pytest.approx(roc_auc(offline, [int(r["label"] >= 3) for r in rows]))
    assert "query and response must be strings" in " ".join(report["scorers"]["length"]["errors"])
    assert report["scorers"]["rm"]["failed_examples"] == 1 and report["scorers"]["rm"]["errors"]
    saved = pq.read_table(out / "consistency_scores.parquet").to_pydict()
    assert saved["id"][-1] == "broken" and saved["rm"][-1] is None


def test_endpoint_scores_match_the_actor_pool(ray_local, model_dir):
    """The same examples scored by a running `wildreward serve` and offline. The service refuses an empty reply
    (HH-RLHF has a few), so there it is a counted failure, never a made-up score."""
    from wildreward import ray_compat as rc
    from wildreward.eval.score import score_examples
    from wildreward.serve.app import build_app
    from wildreward.serve.config import ServeConfig

    pairs = load_benchmark("hh_harmless", default_path("hh_harmless", DATA)).records[:4]
    examples = [{"history": p["history"], "query": p["query"], "response": p[side]}
                for p in pairs for side in ("chosen", "rejected")]
    examples.append({"history": [], "query": "anything?", "response": ""})
    cfg = ServeConfig(model_dir=model_dir, port=8392, max_batch_size=8, num_cpus=0.5)
    rc.serve_run(build_app(cfg), name="eval-test", host=cfg.host, port=cfg.port)
    try:
        served = score_examples(examples, endpoint=f"http://127.0.0.1:{cfg.port}", batch_size=4)
    finally:
        rc.serve_shutdown()
    assert served.scores[:-1] == pytest.approx(RewardModel(model_dir).score(examples[:-1]), abs=1e-4)
    assert served.scores[-1] is None and "422" in served.errors[-1]
