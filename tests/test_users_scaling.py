"""Users vs performance: round-robin sampling over users, infeasible points, and a tiny end-to-end run with two
points trained in parallel on a local Ray."""
import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import write_toy_rm_data
from wildreward.eval.users import UsersScalingConfig, read_user_column, run_users_scaling, sample_by_users

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
        sample_by_users(USERS, 4, 5, 0)
    with pytest.raises(ValueError, match="hold only"):
        sample_by_users(["a", "b", "b"], 3, 1, seed=0)  # user a alone (1 row) or b alone (2 rows) < 3


def test_missing_user_ids_name_the_fix(tmp_path):
    pq.write_table(pa.table({"user_id": [None, "u"], "conversation_id": ["c1", "c2"]}), tmp_path / "t.parquet")
    with pytest.raises(ValueError, match="user_key=conversation_id"):
        read_user_column([str(tmp_path)], "user_id")
    assert read_user_column([str(tmp_path)], "conversation_id").num_rows == 2


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_users_scaling_end_to_end(ray_local, tiny_bert, tmp_path):
    data = write_toy_rm_data(tmp_path / "data", train_rows=96, test_rows=32)
    table = pq.read_table(data / "train")  # 96 rows from 12 users with 8 rows each
    table = table.append_column("user_id", pa.array([f"user{i % 12}" for i in range(table.num_rows)]))
    pq.write_table(table, data / "train" / "part-0.parquet")
    cfg = UsersScalingConfig(
        output_dir=str(tmp_path / "out"), train_data=[str(data / "train")], test_data=[str(data / "test")],
        n_examples=32, user_counts=[4, 12, 3], seeds=[0], max_parallel=2,
        train_overrides=[f"model.backbone={tiny_bert}", "model.max_length=256", "dist.num_workers=1",
                         "batch.global_batch_size=8", "batch.micro_batch_size=4", "max_steps=2",
                         "checkpoint.every_steps=2"])
    report = run_users_scaling(cfg)
    assert [(p["users"], p["seed"]) for p in report["points"]] == [(4, 0), (12, 0)]
    assert report["infeasible"][0]["users"] == 3 and "hold only 24 rows" in report["infeasible"][0]["reason"]
    for point in report["points"]:
        subset = pq.read_table(f"{point['dir']}/train")
        assert subset.num_rows == 32 and len(set(subset["user_id"].to_pylist())) == point["users"]
        assert 0 <= point["accuracy"] <= 1 and 0 <= point["consistency_auc"] <= 1
    assert [c["users"] for c in report["curves"]["accuracy"]] == [4, 12]
    assert json.loads((tmp_path / "out" / "report.json").read_text())["n_examples"] == 32
    assert (tmp_path / "out" / "users_scaling.png").stat().st_size > 10_000
