"""Outputs on an object store: :mod:`wildreward.storage` against a local S3 (moto's server), then extract and train
writing every output to ``s3://`` and the exported model scored straight from its URI.

Nothing may land on the local disk in place of the bucket (``Path("s3://x").resolve()`` would silently make a
folder called ``s3:``), so each run's working directory is checked to stay empty.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from wildreward.testing.fake_cluster import free_port
from tests.conftest import CHATLOGS, SHARED
from wildreward.storage import Location, fetch_dir, read_table
from wildreward.testing.openai_stub import start_stub

BUCKET = "wildreward-test"


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on loopback; the AWS_* variables point pyarrow (and Ray workers started after this
    fixture) at it, as they would at a real endpoint."""
    pytest.importorskip("moto")
    import boto3

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client = boto3.client("s3")
        deadline = time.time() + 30
        while True:
            try:
                client.create_bucket(Bucket=BUCKET)
                break
            except Exception:
                if time.time() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.3)
        yield client
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def keys(client, prefix: str) -> set[str]:
    """Object keys under ``prefix``, without it; pyarrow's empty folder markers (``sub/``) left out."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {obj["Key"][len(prefix):] for page in pages for obj in page.get("Contents", [])
            if not obj["Key"].endswith("/")}


# ---------------------------------------------------------------- Location


def test_local_location_reads_writes_lists_and_deletes(tmp_path):
    root = Location.parse(tmp_path / "out")
    assert root.is_local and str(root) == str((tmp_path / "out").resolve())
    (root / "a" / "x.parquet").write_text("1")
    (root / "a" / "y.json").write_text("2")
    (root / "a" / "b.parquet").write_text("3")
    assert [loc.name for loc in (root / "a").glob("*.parquet")] == ["b.parquet", "x.parquet"]
    assert (root / "a" / "y.json").read_text() == "2"
    assert fetch_dir(root) == tmp_path / "out"
    (root / "a").rmtree()
    assert not (root / "a").exists() and (root / "a").glob("*") == []


def test_uris_with_options_are_refused():
    with pytest.raises(ValueError, match="options in the URI are not accepted"):
        Location.parse("s3://bucket/x?access_key=SECRET")


def test_uris_with_credentials_are_refused_without_echoing_them():
    with pytest.raises(ValueError, match="credentials in the URI are not accepted") as err:
        Location.parse("s3://AKIAXX:SECRETYY@my-bucket/wildfb")
    assert "SECRETYY" not in str(err.value) and "AKIAXX" not in str(err.value)


def test_s3_location_and_fetch_dir_cache(s3, tmp_path):
    root = Location.parse(f"s3://{BUCKET}/loc")
    assert not root.exists() and str(root / "m") == f"s3://{BUCKET}/loc/m"
    with pytest.raises(TypeError, match="not on a local disk"):
        open(root / "m")
    (root / "m" / "weights.bin").write_bytes(b"\x00" * 10)
    (root / "m" / "meta.json").write_text('{"v": 1}')
    assert keys(s3, "loc/") == {"m/weights.bin", "m/meta.json"}
    assert [loc.name for loc in (root / "m").glob("*.json")] == ["meta.json"]
    first = fetch_dir(root / "m", cache_root=tmp_path / "cache")
    assert (first / "meta.json").read_text() == '{"v": 1}' and (first / "weights.bin").stat().st_size == 10
    assert fetch_dir(root / "m", cache_root=tmp_path / "cache") == first  # cached, not fetched again
    (root / "m" / "meta.json").write_text('{"v": 22}')
    second = fetch_dir(root / "m", cache_root=tmp_path / "cache")
    assert second != first and (second / "meta.json").read_text() == '{"v": 22}'
    local = tmp_path / "up"
    (local / "sub").mkdir(parents=True)
    (local / "sub" / "f.txt").write_text("hello")
    (root / "up").upload(local)
    assert keys(s3, "loc/up/") == {"sub/f.txt"}
    (root / "m").rmtree()
    assert keys(s3, "loc/m/") == set()
    with pytest.raises(FileNotFoundError):
        fetch_dir(root / "m", cache_root=tmp_path / "cache")


# ---------------------------------------------------------------- stages on s3


@pytest.fixture(scope="module")
def s3_ray(s3):
    """Ray started after the AWS variables are set, so its workers inherit them."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_extract_then_train_write_everything_to_s3(s3, s3_ray, tmp_path, tiny_bert, monkeypatch):
    from wildreward.config import load_config
    from wildreward.extract.config import ExtractConfig
    from wildreward.extract.pipeline import run_extract
    from wildreward.rm import RewardModel
    from wildreward.train.config import TrainConfig
    from wildreward.train.pipeline import run_train

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("WILDREWARD_CACHE", str(tmp_path / "cache"))
    stub = start_stub(latency_ms=0)
    try:
        cfg = load_config(ExtractConfig, None, [
            f"output_dir=s3://{BUCKET}/run/extract", f"read.paths=[{CHATLOGS / 'lmsys_chat_sample.jsonl'}]",
            "read.max_conversations=100", "annotator.backend=http", f"annotator.http.base_url={stub.url}",
            "refusal.enabled=false",
            "mining.enabled=false", "split.test_size=40"])
        stats = run_extract(cfg)
        again = run_extract(cfg)  # every stage is found done on s3 and reused
    finally:
        stub.stop()
    assert all(stats["reconciled"].values()) and stats["final"]["kept"] > 100
    assert again["split"] == stats["split"]
    written = keys(s3, "run/extract/")
    assert {"config.yaml", "run_info.json", "stats.json", "dataset_card.md", "funnel.png",
            "stages/read/_DONE.json", "stages/annotate/_CONFIG_KEY", "stages/split/_DONE.json"} <= written
    assert any(k.startswith("train/") and k.endswith(".parquet") for k in written)
    remote = Location.parse(f"s3://{BUCKET}/run/extract")
    assert json.loads((remote / "stats.json").read_text())["split"] == stats["split"]
    assert read_table(remote / "train", ["id"]).num_rows == stats["split"]["train"]["rows"]
    assert list(cwd.iterdir()) == [], "something was written locally instead of to the bucket"

    train_cfg = load_config(TrainConfig, None, [
        f"model.backbone={tiny_bert}", f"data.train=[s3://{BUCKET}/run/extract/train]",
        f"data.test=[s3://{BUCKET}/run/extract/test]", f"output_dir=s3://{BUCKET}/run/train",
        "batch.global_batch_size=16", "batch.micro_batch_size=8", "data.max_train_rows=64",
        "checkpoint.every_steps=2", "model.max_length=256", "dist.strategy=ddp", "dist.num_workers=1"])
    summary = run_train(train_cfg)
    assert summary["model_dir"] == f"s3://{BUCKET}/run/train/model" and summary["steps"] == 4
    written = keys(s3, "run/train/")
    assert {"config.yaml", "metrics.jsonl", "metrics.csv", "eval.json", "curves.png", "predictions.parquet",
            "model/wildreward.json", "model/model.safetensors"} <= written
    assert any(k.startswith("ray/wildreward-rm/checkpoint_") for k in written), sorted(written)
    metrics = [json.loads(line) for line in (Location.parse(f"s3://{BUCKET}/run/train") / "metrics.jsonl")
               .read_text().splitlines()]
    assert [r["step"] for r in metrics if r["kind"] == "train"] == [1, 2, 3, 4]
    assert list(cwd.iterdir()) == [], "something was written locally instead of to the bucket"

    # The exported model scores the same from its URI as from a plain local copy.
    preds = Location.parse(f"s3://{BUCKET}/run/train/predictions.parquet")
    predicted = pq.read_table(preds.path, filesystem=preds.fs).to_pylist()
    test_rows = {r["id"]: r for r in read_table(remote / "test", ["id", "history", "query", "response"]).to_pylist()}
    rows = [test_rows[p["id"]] for p in predicted[:8]]
    from_uri = RewardModel(f"s3://{BUCKET}/run/train/model").score(rows)
    local_copy = Location.parse(f"s3://{BUCKET}/run/train/model").download(tmp_path / "copy")
    assert from_uri == pytest.approx(RewardModel(local_copy).score(rows), abs=1e-6)
    assert from_uri == pytest.approx([p["reward"] for p in predicted[:8]], abs=1e-4)

    # Eval reads the model and the held-out split from the bucket and writes its report there.
    from wildreward.eval.config import EvalConfig
    from wildreward.eval.pipeline import run_eval

    eval_cfg = load_config(EvalConfig, None, [
        f"model_dir=s3://{BUCKET}/run/train/model", f"consistency_data=s3://{BUCKET}/run/extract/test",
        f"output_dir=s3://{BUCKET}/run/eval", f"data_dir={SHARED / 'data'}", "benchmarks=[llmbar]", "max_pairs=6",
        "num_actors=1"])
    report = run_eval(eval_cfg)
    assert report["consistency"]["rows"] == stats["split"]["test"]["rows"]
    written = keys(s3, "run/eval/")
    assert {"config.yaml", "report.json", "report.md", "pair_scores.parquet", "consistency_scores.parquet"} <= written
    assert json.loads(Location.parse(f"s3://{BUCKET}/run/eval/report.json").read_text())["examples"] == \
        report["examples"]
    assert list(cwd.iterdir()) == [], "something was written locally instead of to the bucket"

    # Users-scaling: the subsets, every point's training run and the report go to the bucket.
    from wildreward.eval.users import UsersScalingConfig, run_users_scaling

    scaling = run_users_scaling(UsersScalingConfig(
        output_dir=f"s3://{BUCKET}/run/users", train_data=[f"s3://{BUCKET}/run/extract/train"],
        test_data=[f"s3://{BUCKET}/run/extract/test"], user_key="conversation_id", n_examples=4, user_counts=[4],
        seeds=[0], train_overrides=[f"model.backbone={tiny_bert}", "model.max_length=256", "dist.num_workers=1",
                                    "dist.strategy=ddp", "batch.global_batch_size=4", "batch.micro_batch_size=4",
                                    "max_steps=1"]))  # 4 users always hold 4 rows, whatever the stub's labels
    (point,) = scaling["points"]
    assert point["model_dir"] == f"s3://{BUCKET}/run/users/points/users4_seed0/train_out/model"
    assert point["consistency_auc"] is None or 0 <= point["consistency_auc"] <= 1
    written = keys(s3, "run/users/")
    assert {"report.json", "users_scaling.png", "points/users4_seed0/train/part-0.parquet",
            "points/users4_seed0/train_out/predictions.parquet"} <= written
    assert list(cwd.iterdir()) == [], "something was written locally instead of to the bucket"


def test_pipeline_stages_are_wired_to_the_bucket_and_found_done_there(s3):
    from wildreward.config import load_config
    from wildreward.pipeline import PipelineConfig, done_marker, wire

    cfg = wire(load_config(PipelineConfig, None, [f"output_dir=s3://{BUCKET}/pipe", "stages=[extract,train,eval]"]))
    assert cfg.train.data.train == [f"s3://{BUCKET}/pipe/extract/train"]
    assert cfg.eval.model_dir == cfg.serve.model_dir == f"s3://{BUCKET}/pipe/train/model"
    marker = done_marker("train", cfg)
    assert str(marker) == f"s3://{BUCKET}/pipe/train/model/wildreward.json" and not marker.exists()
    marker.write_text("{}")
    assert done_marker("train", cfg).exists()
    assert wire(load_config(PipelineConfig, None, [f"output_dir=s3://{BUCKET}/pipe"])).dpo.output_dir == \
        f"s3://{BUCKET}/pipe/dpo"


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_online_dpo_writes_everything_to_s3(s3, s3_ray, tmp_path_factory, tiny_lm, tmp_path, monkeypatch):
    from tests.conftest import build_tiny_rm
    from wildreward import ray_compat as rc
    from wildreward.config import load_config
    from wildreward.dpo.config import DPOConfig
    from wildreward.dpo.pipeline import run_dpo
    from wildreward.serve.app import build_app
    from wildreward.serve.config import ServeConfig

    serve_cfg = ServeConfig(model_dir=build_tiny_rm(tmp_path_factory), name="dpo-rm-s3", port=free_port(),
                            num_cpus=0.25, max_batch_size=16)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    rc.serve_run(build_app(serve_cfg), name=serve_cfg.name, host=serve_cfg.host, port=serve_cfg.port)
    try:
        report = run_dpo(load_config(DPOConfig, None, [
            f"output_dir=s3://{BUCKET}/dpo", f"policy.path={tiny_lm}", "policy.max_prompt_tokens=128",
            "policy.max_response_tokens=8", "policy.n_samples=2", "policy.gradient_checkpointing=false",
            "rollout.backend=hf", "rollout.num_cpus_per_engine=0.25", f"rm.app_name={serve_cfg.name}",
            "batch.prompts_per_step=2", "dist.num_workers=1", "dist.strategy=ddp", "dist.cpus_per_worker=0.5",
            "max_steps=1",
            f"prompts.chatlogs=[{CHATLOGS / 'lmsys_chat_sample.jsonl'}]", "prompts.n=6", "eval.held_out_prompts=2",
            "eval.instruction_checks=false"]))
    finally:
        rc.serve_shutdown()
    assert report["policy_dir"] == f"s3://{BUCKET}/dpo/policy" and report["steps"] == 1
    written = keys(s3, "dpo/")
    assert {"config.yaml", "metrics.jsonl", "report.json", "curves.png", "policy/model.safetensors"} <= written
    assert any(k.startswith("ray/") for k in written), sorted(written)
    assert list(cwd.iterdir()) == [], "something was written locally instead of to the bucket"
