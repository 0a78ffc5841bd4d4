"""``run_train``: the driver side of ``wildreward train``.

Reads and checks the data set (Ray Data), fixes a seeded row order, runs the per-worker loop
(:mod:`wildreward.train.loop`) under Ray Train's TorchTrainer, then exports the last checkpoint to plain HF
format and writes the report:

    <output_dir>/model/          AutoModelForSequenceClassification (safetensors) + tokenizer + wildreward.json
    <output_dir>/metrics.jsonl   per-step train records and eval records; metrics.csv (train steps)
    <output_dir>/eval.json       final held-out metrics; predictions.parquet (id, label, logits, reward)
    <output_dir>/curves.png      loss, learning rate, throughput, padding efficiency, eval metrics
    <output_dir>/ray/<name>/     Ray Train checkpoints (default storage; re-run with the same name to resume)
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from wildreward import ray_compat as rc
from wildreward.config import save_config
from wildreward.logs import stage_logger
from wildreward.plots import pyplot
from wildreward.storage import Location, save_png
from wildreward.train.config import TrainConfig

BAD_ROW_EXAMPLES = 5


log = stage_logger("train")


def order_key_udf(table: pa.Table, seed: int) -> pa.Table:
    """A seeded hash of the row id: sorting on it gives a random but reproducible row order."""
    keys = [int.from_bytes(hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=8).digest(), "big") >> 1
            for i in table["id"].to_pylist()]
    return table.append_column("order_key", pa.array(keys, pa.int64()))


def bad_rows_udf(table: pa.Table, num_levels: int, columns: tuple[str, ...]) -> pa.Table:
    from wildreward.train.data import find_bad_rows

    return find_bad_rows(table, num_levels, columns)


def label_counts_udf(table: pa.Table) -> pa.Table:
    counts = pc.value_counts(table["label"])
    return pa.table({"label": counts.field("values"), "n": counts.field("counts")})


def count_labels(ds) -> dict[int, int]:
    counts: dict[int, int] = {}
    for row in rc.map_tables(ds, label_counts_udf).take_all():
        counts[int(row["label"])] = counts.get(int(row["label"]), 0) + int(row["n"])
    return dict(sorted(counts.items()))


def load_split(paths: list[str], cfg: TrainConfig, limit: int | None, name: str, shuffle: bool):
    """Parquet -> (dataset, rows); refuses data with bad rows, naming a few of them."""
    from wildreward.train.data import columns_for

    columns = columns_for(cfg.model.input)
    missing = [p for p in paths if not Path(p).exists() and "://" not in p]
    if missing:
        raise FileNotFoundError(f"data.{name}: {missing} not found")
    ds = rc.read_parquet(paths, columns=list(columns))
    if limit:
        ds = ds.limit(limit)
    ds = ds.materialize()  # read once: the checks, the count and the ordering below all reuse it
    bad = rc.map_tables(ds, bad_rows_udf, num_levels=cfg.model.num_levels, columns=columns).take_all()
    if bad:
        counts: dict[str, int] = {}
        for row in bad:
            counts[row["reason"]] = counts.get(row["reason"], 0) + 1
        examples = ", ".join(f"{r['id']} ({r['reason']})" for r in bad[:BAD_ROW_EXAMPLES])
        raise ValueError(f"data.{name}: {len(bad)} unusable rows {counts}, e.g. {examples}. Labels must be "
                         f"1..{cfg.model.num_levels}; query and response must be non-empty. Fix or filter the data.")
    rows = ds.count()
    if shuffle:
        ds = rc.map_tables(ds, order_key_udf, seed=cfg.seed).sort("order_key")
    # Even blocks make Ray's equal split assign the same rows to the same rank on every run.
    ds = ds.repartition(max(1, min(rows, 4 * cfg.dist.num_workers)), shuffle=False).materialize()
    return ds, rows


def plan_steps(cfg: TrainConfig, train_rows: int) -> tuple[int, int]:
    """(optimizer steps per epoch, total steps). Each worker gets train_rows // workers rows (the equal split
    drops the remainder) and forms micro-batches window by window; trailing micro-batches that cannot fill a
    step are skipped."""
    from wildreward.train.data import micro_batches_per_epoch

    rows_per_worker = train_rows // cfg.dist.num_workers
    window_rows = cfg.batch.length_group_size * cfg.batch.micro_batch_size
    steps = micro_batches_per_epoch(rows_per_worker, window_rows, cfg.batch.micro_batch_size) // cfg.grad_accum
    if steps == 0:
        raise ValueError(f"{train_rows} training rows over {cfg.dist.num_workers} workers give no full optimizer "
                         f"step of {cfg.batch.global_batch_size} rows; lower batch.global_batch_size")
    total = steps * cfg.epochs
    return steps, min(total, cfg.max_steps) if cfg.max_steps else total


def check_max_length(cfg: TrainConfig) -> None:
    """Fail before starting workers when the template alone does not fit ``model.max_length``."""
    from wildreward.models import resolve_model
    from wildreward.rm import load_tokenizer
    from wildreward.template import build_rm_text

    tok = load_tokenizer(resolve_model(cfg.model.backbone), cfg.model.trust_remote_code)
    overhead = len(tok(build_rm_text(None, "", ""), verbose=False)["input_ids"])
    if cfg.model.max_length < overhead + 32:
        raise ValueError(f"model.max_length={cfg.model.max_length} is too small: the RM template alone takes "
                         f"{overhead} tokens with this tokenizer; use at least {overhead + 32}")


def run_train(cfg: TrainConfig) -> dict[str, Any]:
    from wildreward.ordinal import balanced_pos_weights
    from wildreward.train.loop import train_loop

    out = Location.parse(cfg.output_dir)
    cfg = cfg.model_copy(update={"output_dir": str(out)})
    if not cfg.data.train:
        raise ValueError("data.train is empty: give the train/ folder of `wildreward extract`")
    check_max_length(cfg)
    save_config(cfg, out, "train")
    rc.init_ray(preserve_order=True)  # `data.max_*_rows` must pick the same rows in a resumed run
    train_ds, train_rows = load_split(cfg.data.train, cfg, cfg.data.max_train_rows, "train", shuffle=True)
    datasets = {"train": train_ds}
    test_rows = 0
    if cfg.data.test:
        datasets["validation"], test_rows = load_split(cfg.data.test, cfg, cfg.data.max_test_rows, "test",
                                                       shuffle=False)
    if not test_rows and (out / "predictions.parquet").exists():  # an earlier run's: the export would use them
        (out / "predictions.parquet").unlink()
    steps_per_epoch, total_steps = plan_steps(cfg, train_rows)
    labels = count_labels(train_ds)
    pos_weight = None
    if cfg.optim.threshold_weights == "balanced":
        pos_weight = balanced_pos_weights(labels, cfg.model.num_levels, cfg.optim.max_pos_weight)
    log(f"train labels {labels}" + (f"; threshold weights {[round(w, 2) for w in pos_weight]}" if pos_weight else ""))
    log(f"train rows {train_rows}, test rows {test_rows}; backbone {cfg.model.backbone}, head {cfg.model.head}, "
        f"{cfg.dist.strategy}" + (f" ZeRO-{cfg.dist.zero_stage}" if cfg.dist.strategy == "deepspeed" else "")
        + f", {cfg.dist.num_workers} workers, {cfg.dist.precision}")
    storage = cfg.checkpoint.storage_path or str(out / "ray")
    result = rc.fit_torch(
        train_loop, {"cfg": cfg.model_dump(mode="json"), "train_rows": train_rows, "test_rows": test_rows,
                     "storage_path": storage, "pos_weight": pos_weight,
                     "steps_per_epoch": steps_per_epoch, "total_steps": total_steps},
        datasets=datasets, split=["train"], num_workers=cfg.dist.num_workers, use_gpu=cfg.dist.use_gpu,
        cpus_per_worker=cfg.dist.cpus_per_worker, name=cfg.checkpoint.name, storage_path=storage,
        max_failures=cfg.checkpoint.max_failures, num_to_keep=cfg.checkpoint.num_to_keep)
    model_dir = out / "model"
    with rc.result_checkpoint(result) as ckpt, model_dir.local_folder() as target:  # exported on the driver
        export_checkpoint(ckpt, cfg, target)
    summary = write_report(out)
    summary["model_dir"] = str(model_dir)
    log(f"model: {model_dir}")
    return summary


def export_checkpoint(checkpoint_dir: Path, cfg: TrainConfig, target: Path) -> Path:
    """A Ray Train checkpoint (ZeRO shards or DDP) -> HF directory + wildreward.json with score statistics."""
    from wildreward.rm import build_model, save_reward_model
    from wildreward.train.engine import consolidated_state_dict

    model, tok = build_model(cfg.model.backbone, cfg.model.head, cfg.model.num_levels,
                             trust_remote_code=cfg.model.trust_remote_code, from_config_only=True)
    model.load_state_dict(consolidated_state_dict(checkpoint_dir, cfg))
    stats: dict[str, Any] = {}
    predictions = Location.parse(cfg.output_dir) / "predictions.parquet"  # this run's final validation's
    if predictions.exists():
        import pyarrow.parquet as pq

        table = pq.read_table(predictions.path, filesystem=predictions.fs)
        reward, label = np.array(table["reward"].to_pylist()), np.array(table["label"].to_pylist())
        stats = {"split": "test", "n": int(len(reward)), "mean": float(reward.mean()), "std": float(reward.std()),
                 **{f"p{q}": float(np.percentile(reward, q)) for q in (5, 25, 50, 75, 95)},
                 "mean_by_label": {str(int(y)): float(reward[label == y].mean()) for y in np.unique(label)}}
        stats["calibration"] = fit_satisfaction_calibration(reward, label, cfg.model.num_levels)
    return save_reward_model(model, tok, target, max_length=cfg.model.max_length, truncation=cfg.model.truncation,
                             score_stats=stats, extra={"backbone": cfg.model.backbone, "input": cfg.model.input})


def fit_satisfaction_calibration(reward: np.ndarray, label: np.ndarray, num_levels: int) -> dict[str, Any]:
    """Platt scaling of the reward to P(user satisfied) on the held-out split, served as ``p_satisfied``; a
    split with one class only records why there is no fit."""
    from wildreward.eval.metrics import fit_platt
    from wildreward.ordinal import satisfied_min_level

    first = satisfied_min_level(num_levels)
    satisfied = (label >= first).astype(int)
    out: dict[str, Any] = {"target": f"P(label >= {first})", "n": int(len(label)),
                           "positives": int(satisfied.sum())}
    if 0 < satisfied.sum() < len(satisfied):
        out["a"], out["b"] = fit_platt(reward, satisfied)
    else:
        out["skipped"] = "the held-out split has one class only"
    return out


def write_report(out: Location) -> dict[str, Any]:
    """metrics.jsonl -> metrics.csv, eval.json and curves.png."""
    from wildreward.train.common import read_metrics

    records = read_metrics(out)
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    if train:
        keys = list(train[0])
        lines = [",".join(keys)] + [",".join(str(r.get(k, "")) for k in keys) for r in train]
        (out / "metrics.csv").write_text("\n".join(lines) + "\n")
    summary = {"steps": train[-1]["step"] if train else 0, "final_loss": train[-1]["loss"] if train else None,
               "eval": evals[-1] if evals else None}
    (out / "eval.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_curves(train, evals, out / "curves.png")
    return summary


def plot_curves(train: list[dict], evals: list[dict], path: Location) -> None:
    plt = pyplot()

    panels = [("loss", "train loss"), ("lr", "learning rate"), ("samples_per_s", "samples/s"),
              ("padding_efficiency", "padding efficiency")]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(4 * (len(panels) + 1), 3.2))
    steps = [r["step"] for r in train]
    for ax, (key, title) in zip(axes, panels):
        ax.plot(steps, [r[key] for r in train])
        ax.set_title(title)
        ax.set_xlabel("step")
    ax = axes[-1]
    for key in ("accuracy", "spearman", "mae"):
        ax.plot([r["step"] for r in evals], [r[key] for r in evals], marker="o", label=key)
    ax.set_title("held-out")
    ax.set_xlabel("step")
    if evals:
        ax.legend()
    fig.tight_layout()
    save_png(fig, path, dpi=100)
    plt.close(fig)
