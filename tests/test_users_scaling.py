"""Users vs performance: the users split (no point ever trains on a held-out user), round-robin sampling over
users, infeasible points, the aggregation over seeds, defensive reading of the eval's summary columns, the written
report, and a tiny end-to-end run (train + eval per point, two points in parallel on a local Ray)."""
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import write_toy_rm_data
from wildreward.config import load_config
from wildreward.eval.users import (UsersScalingConfig, build_pools, check_disjoint, intervals, markdown, not_evaluated,
                                   numeric_row, panels, plan_points, plot_curves, point_eval_config,
                                   read_user_column, run_users_scaling, sample_by_users, split_users, summarize)
from wildreward.storage import Location

REPO = Path(__file__).resolve().parents[1]
USERS = ["a"] * 10 + ["b"] * 3 + ["c"] * 1 + ["d"] * 6


def test_sample_spreads_rows_over_the_chosen_users():
    rows = sample_by_users(USERS, 8, 4, seed=0)
    assert len(rows) == len(set(rows)) == 8
    per_user = Counter(USERS[i] for i in rows)
    # round-robin over all 4 users: c runs out after 1 row, the other 7 rows are spread 2/2/3
    assert per_user["c"] == 1 and sorted(per_user.values()) == [1, 2, 2, 3]
    assert sample_by_users(USERS, 8, 4, seed=0) == rows  # deterministic per seed


def test_sample_uses_exactly_the_requested_number_of_users():
    for seed in range(5):
        rows = sample_by_users(USERS, 4, 2, seed)
        assert len({USERS[i] for i in rows}) == 2


def test_infeasible_points_raise():
    with pytest.raises(ValueError, match="5 users asked for, the data has 4"):
        sample_by_users(USERS, 5, 5, 0)
    with pytest.raises(ValueError, match="hold only"):
        sample_by_users(["a", "b", "b"], 3, 1, seed=0)  # user a alone (1 row) or b alone (2 rows) < 3
    with pytest.raises(ValueError, match="every user needs at least one example"):
        sample_by_users(USERS, 3, 4, 0)  # 3 examples cannot come from 4 users


def test_missing_user_ids_name_the_fix(tmp_path):
    pq.write_table(pa.table({"user_id": [None, "u"], "conversation_id": ["c1", "c2"]}), tmp_path / "t.parquet")
    with pytest.raises(ValueError, match="user_key=conversation_id"):
        read_user_column([str(tmp_path)], "user_id")
    assert read_user_column([str(tmp_path)], "conversation_id").num_rows == 2


# ---------------------------------------------------------------- the users split

def test_split_users_is_a_seeded_partition():
    users = [f"u{i}" for i in range(20)] * 3
    pool, held = split_users(users, [], 0.25, seed=7)
    assert pool | held == set(users) and not pool & held and len(held) == 5
    assert split_users(reversed(users), [], 0.25, seed=7) == (pool, held)  # the order of rows does not matter
    assert split_users(users, [], 0.25, seed=8) != (pool, held)
    assert len(split_users(["a", "b"], [], 0.01, 0)[1]) == 1 and len(split_users(["a", "b"], [], 0.99, 0)[0]) == 1
    # users seen only in the test rows are held out on top of the share; test users with training rows are not
    pool2, held2 = split_users(users, ["u0", "t1", "t2"], 0.25, seed=7)
    assert (pool2, held2) == (pool, held | {"t1", "t2"})
    assert split_users(["a", "b"], ["c"], 0.0, 0) == ({"a", "b"}, {"c"})
    with pytest.raises(ValueError, match="no held-out user"):
        split_users(["a", "b"], ["a"], 0.0, 0)


def test_check_disjoint_fails_loudly():
    check_disjoint(["a", "b"], {"c"}, "x")
    with pytest.raises(RuntimeError, match="point p holds 1 held-out user"):
        check_disjoint(["a", "c", "c"], {"c", "d"}, "point p")


def toy_users_data(root, train_users: int = 12, test_users: int = 16):
    """Toy extract output whose train rows come from ``train_users`` users (8 rows each) and whose test rows come
    from ``test_users`` users, some of them also in train (extract splits by conversation, not by user)."""
    data = write_toy_rm_data(root, train_rows=8 * train_users, test_rows=32)
    for split, n_users in (("train", train_users), ("test", test_users)):
        table = pq.read_table(data / split)
        table = table.append_column("user_id", pa.array([f"user{i % n_users}" for i in range(table.num_rows)]))
        pq.write_table(table, data / split / "part-0.parquet")
    return data


def users_in(folder) -> set[str]:
    return set(pq.read_table(folder)["user_id"].to_pylist())


def test_points_never_train_on_held_out_users(tmp_path):
    data = toy_users_data(tmp_path / "data")
    cfg = UsersScalingConfig(train_data=[str(data / "train")], test_data=[str(data / "test")], n_examples=16,
                             user_counts=[2, 4, 8], seeds=[0, 1, 2], held_out_fraction=0.25)
    out = Location.parse(tmp_path / "out")
    pool, held_users, pools = build_pools(cfg, out)
    points, infeasible = plan_points(cfg, pool, held_users, out)
    assert len(points) == 9 and not infeasible  # 9 pool users with 8 rows each
    held_dir = tmp_path / "out" / "held_out"
    # 12 users with training rows (a quarter held out: 3) and 4 users found only in test/ (held out too)
    assert users_in(held_dir) == held_users and len(held_users) == 3 + 4
    assert {"user12", "user13", "user14", "user15"} <= held_users and pools["held_out"]["users_only_in_test_data"] == 4
    for point in points:  # read back what training will read
        assert not users_in(f"{point['dir']}/train") & held_users, point
    # the held-out set is every row of the held-out users, from train/ and test/, and nothing else
    train, test = pq.read_table(data / "train"), pq.read_table(data / "test")
    held_rows = sum(u in held_users for t in (train, test) for u in t["user_id"].to_pylist())
    assert pq.read_table(held_dir).num_rows == pools["held_out"]["rows"] == held_rows
    assert pools["training_pool"]["rows"] == sum(u not in held_users for u in train["user_id"].to_pylist())
    assert pools["training_pool"]["users"] + pools["held_out"]["users"] == 16 and pools["training_pool"]["users"] == 9
    assert pools["test_rows_of_training_pool_users_unused"] == test.num_rows - sum(
        u in held_users for u in test["user_id"].to_pylist())


def test_a_point_with_a_held_out_user_is_refused(tmp_path):
    data = toy_users_data(tmp_path / "data")
    cfg = UsersScalingConfig(train_data=[str(data / "train")], n_examples=96, user_counts=[12], seeds=[0])
    out = Location.parse(tmp_path / "out")
    _, held_users, _ = build_pools(cfg, out)
    everyone = pq.read_table(data / "train")  # a pool that wrongly still holds the held-out users
    with pytest.raises(RuntimeError, match="held-out user"):
        plan_points(cfg, everyone, held_users, out)


def test_held_out_rows_are_capped_with_a_seed(tmp_path):
    data = toy_users_data(tmp_path / "data")
    cfg = UsersScalingConfig(train_data=[str(data / "train")], test_data=[str(data / "test")],
                             held_out_fraction=0.5, max_held_out_rows=10)
    _, held_users, pools = build_pools(cfg, Location.parse(tmp_path / "a"))
    build_pools(cfg, Location.parse(tmp_path / "b"))
    assert pools["held_out"]["rows"] > 10 and pools["held_out"]["rows_used"] == 10
    first, second = pq.read_table(tmp_path / "a" / "held_out"), pq.read_table(tmp_path / "b" / "held_out")
    assert first["id"].to_pylist() == second["id"].to_pylist()
    assert set(first["user_id"].to_pylist()) <= held_users


# ---------------------------------------------------------------- over seeds, summary columns, outputs

RESULTS = [
    {"users": 4, "seed": 0, "consistency_auc": 0.6, "benchmarks": {"LLMBar": 0.5}},
    {"users": 4, "seed": 1, "consistency_auc": 0.8, "benchmarks": {"LLMBar": 0.7}},
    {"users": 4, "seed": 2, "consistency_auc": None, "benchmarks": {"LLMBar": 0.9}},  # one class: no AUC
    {"users": 16, "seed": 0, "consistency_auc": 0.75, "benchmarks": {}},
]


def test_summarize_over_seeds_by_hand():
    auc = summarize(RESULTS, "consistency_auc")
    # users 4: seeds 0 and 1 only; mean 0.7, sample std sqrt((0.1² + 0.1²) / 1) = 0.14142;
    # 95% interval of the mean: t(0.975, 1 dof) = 12.7062 × 0.14142 / sqrt(2) = 1.27062
    assert [(c["users"], c["n"]) for c in auc] == [(4, 2), (16, 1)]
    assert auc[0]["mean"] == pytest.approx(0.7) and auc[0]["std"] == pytest.approx(math.sqrt(0.02))
    assert auc[0]["ci95"] == pytest.approx(1.27062, abs=1e-4)
    assert auc[1] == {"users": 16, "n": 1, "mean": 0.75, "std": 0.0, "ci95": None}
    # LLMBar, users 4: 0.5, 0.7, 0.9 -> mean 0.7, std sqrt(0.08 / 2) = 0.2, t(0.975, 2) = 4.30265 × 0.2 / sqrt(3)
    (llmbar,) = summarize(RESULTS, "LLMBar")
    assert (llmbar["n"], llmbar["mean"], llmbar["std"]) == (3, pytest.approx(0.7), pytest.approx(0.2))
    assert llmbar["ci95"] == pytest.approx(0.49683, abs=1e-4)
    assert summarize(RESULTS, "RM-B Hard") == []


def test_summary_columns_are_read_defensively():
    row = {"LLMBar": 0.625, "Consistency AUC": 0.7, "RM-B Hard": {"value": 0.4, "ci95": [0.3, 0.5]},
           "RM-B Easy": float("nan"), "note": "text", "n": True, "HH Harmless": np.float64(0.5)}
    assert numeric_row(row) == {"LLMBar": 0.625, "consistency_auc": 0.7, "RM-B Hard": 0.4, "HH Harmless": 0.5}
    # the eval's cells: value with its bootstrap interval; a benchmark whose file is absent has no value, a note
    cells = {"LLMBar": {"value": 0.6, "lo": 0.5, "hi": 0.7}, "Consistency AUC": {"value": 0.7, "lo": None, "hi": None},
             "PPE Human": {"value": None, "lo": None, "hi": None, "note": "not evaluated (file absent: x)"}}
    assert numeric_row(cells) == {"LLMBar": 0.6, "consistency_auc": 0.7}
    assert intervals(cells) == {"LLMBar": [0.5, 0.7]}
    assert not_evaluated(cells) == {"PPE Human": "not evaluated (file absent: x)"}


def test_panels_default_and_asked_for():
    curves = {"consistency_auc": [{"users": 4}], "accuracy": [{"users": 4}], "spearman": [],
              "RM-B Hard": [{"users": 4}], "ECE (RM-B Normal)": [{"users": 4}], "LLMBar": [{"users": 4}]}
    assert panels(UsersScalingConfig(), curves) == (["consistency_auc", "RM-B Hard", "LLMBar"], [])
    asked = UsersScalingConfig(plot_columns=["accuracy", "RM-B Hard Domain-avg", "spearman"])
    assert panels(asked, curves) == (["accuracy"], ["RM-B Hard Domain-avg", "spearman"])


def test_each_point_is_scored_by_the_eval_stage_on_the_held_out_users(tmp_path):
    cfg = UsersScalingConfig(max_pairs=7, eval_overrides=["benchmarks=[llmbar]", "num_actors=1",
                                                          "endpoint=http://elsewhere"])
    point = {"users": 4, "seed": 2, "dir": str(tmp_path / "p")}
    ev = point_eval_config(cfg, point, str(tmp_path / "model"), str(tmp_path / "held_out"))
    assert (ev.max_pairs, ev.benchmarks, ev.num_actors, ev.endpoint) == (7, ["llmbar"], 1, None)
    assert (ev.model_dir, ev.consistency_data, ev.output_dir) == (
        str(tmp_path / "model"), str(tmp_path / "held_out"), str(tmp_path / "p" / "eval"))
    assert ev.seed == 0 and ev.max_consistency_rows is None  # same subsets for every point; all held-out rows
    assert point_eval_config(cfg.model_copy(update={"eval_overrides": ["max_pairs=3"]}), point, "m", "h").max_pairs \
        == 3
    assert point_eval_config(cfg.model_copy(update={"max_pairs": None}), point, "m", "h").max_pairs is None


def test_default_job_config_reaches_the_four_local_benchmarks(tmp_path):
    cfg = load_config(UsersScalingConfig, REPO / "jobs" / "configs" / "users_scaling_default.yaml")
    cfg = cfg.model_copy(update={"eval_config": str(REPO / cfg.eval_config)})
    ev = point_eval_config(cfg, {"users": 16, "seed": 0, "dir": str(tmp_path)}, "m", "h")
    assert (ev.benchmarks, ev.max_pairs) == (["rm_bench", "llmbar", "xstest", "hh_harmless"], 50)
    assert cfg.plot_columns[0] == "consistency_auc" and max(cfg.user_counts) <= cfg.n_examples


def test_report_markdown_and_plot(tmp_path):
    curves = {m: summarize(RESULTS, m) for m in ("consistency_auc", "accuracy", "LLMBar")}
    report = {"n_examples": 32, "curves": curves, "infeasible": [{"users": 64, "seed": 0, "reason": "too few"}],
              "baselines": {"LLMBar": {"random": 0.5, "length": 0.6}}, "missing_plot_columns": ["RM-B Hard"],
              "points": [{"not_evaluated": {"PPE Human": "not evaluated (file absent: x)"}}],
              "pools": {"user_key": "conversation_id", "split_seed": 0, "training_pool": {"users": 40, "rows": 90},
                        "held_out": {"users": 10, "rows": 25, "rows_used": 20, "users_used": 9}}}
    text = markdown(report)
    assert "| users | consistency_auc | LLMBar |" in text  # accuracy has no value anywhere: no column
    assert "| 4 | 0.700 ± 0.141 (n=2) | 0.700 ± 0.200 (n=3) |" in text and "| 16 | 0.750 ± 0.000 (n=1) | n/a |" in text
    assert "| random |  | 0.500 |" in text and "64 users, seed 0: too few" in text and "RM-B Hard" in text
    assert "training pool 40 users / 90 rows; held-out 10 users / 25 rows" in text
    assert "Not evaluated (no number, never a zero): PPE Human: not evaluated (file absent: x)" in text
    png = tmp_path / "u.png"
    plot_curves(curves, ["consistency_auc", "LLMBar"], report["baselines"], Location.parse(png), "t")
    assert png.stat().st_size > 10_000


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_users_scaling_end_to_end(ray_local, tiny_bert, tmp_path):
    data = toy_users_data(tmp_path / "data")
    cfg = UsersScalingConfig(
        output_dir=str(tmp_path / "out"), train_data=[str(data / "train")], test_data=[str(data / "test")],
        n_examples=32, user_counts=[4, 8, 3], seeds=[0], max_parallel=2, held_out_fraction=0.25, max_pairs=4,
        eval_overrides=["benchmarks=[rm_bench,llmbar]", "num_actors=1", "batch_size=16"],
        train_overrides=[f"model.backbone={tiny_bert}", "model.max_length=256", "dist.num_workers=1",
                         "batch.global_batch_size=8", "batch.micro_batch_size=4", "max_steps=2",
                         "checkpoint.every_steps=2"])
    report = run_users_scaling(cfg)
    assert [(p["users"], p["seed"]) for p in report["points"]] == [(4, 0), (8, 0)]
    assert report["infeasible"][0]["users"] == 3 and "hold only 24 rows" in report["infeasible"][0]["reason"]
    held_users = users_in(tmp_path / "out" / "held_out")
    assert len(held_users) == report["pools"]["held_out"]["users"] == 3 + 4  # a quarter of 12, 4 test-only users
    for point in report["points"]:
        subset = pq.read_table(f"{point['dir']}/train")
        assert subset.num_rows == 32 and len(set(subset["user_id"].to_pylist())) == point["users"]
        assert not set(subset["user_id"].to_pylist()) & held_users
        assert 0 <= point["accuracy"] <= 1 and 0 <= point["consistency_auc"] <= 1
        assert {"RM-B Hard", "LLMBar"} <= set(point["benchmarks"])  # scored on the benchmarks too
        evaluated = json.loads((Location.parse(point["eval_dir"]) / "report.json").read_text())
        assert evaluated["consistency"]["rows"] == report["pools"]["held_out"]["rows_used"]
    assert [c["users"] for c in report["curves"]["LLMBar"]] == [4, 8]
    assert {"random", "length"} <= set(report["baselines"]["LLMBar"])
    assert report["plotted"][0] == "consistency_auc" and "LLMBar" in report["plotted"]
    assert json.loads((tmp_path / "out" / "report.json").read_text())["n_examples"] == 32
    assert "| 4 |" in (tmp_path / "out" / "report.md").read_text()
    assert (tmp_path / "out" / "users_scaling.png").stat().st_size > 10_000
