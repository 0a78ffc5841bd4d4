"""Users vs performance (paper §3, "user diversity"): at a fixed number of training examples, vary how many distinct
users the examples come from, train one RM per (users, seed) point, evaluate each, plot the curve.

Examples are drawn round-robin over the chosen users (one row per user per round, random rows within a user), so a
point with U users really spreads its N examples over U people instead of letting one heavy user dominate. A
point whose users hold fewer than N rows in total cannot be built and is reported as infeasible.

Logs without user ids (ShareGPT, the WildChat sample here) can use ``user_key: conversation_id``: each conversation
then stands for one user, which the report says.
"""
from __future__ import annotations

import json
from typing import Any, Literal, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from wildreward import ray_compat as rc
from wildreward.config import Section, load_config, save_config
from wildreward.plots import pyplot
from wildreward.storage import Location, read_table, save_png


class UsersScalingConfig(Section):
    output_dir: str = "outputs/users_scaling"
    train_data: list[str] = Field(default_factory=list, description="extract's train/ folder(s).")
    test_data: list[str] = Field(default_factory=list, description="extract's test/ folder(s): the held-out set.")
    n_examples: int = Field(256, ge=1, description="Training examples per point, the same for every point.")
    user_counts: list[int] = Field(default_factory=lambda: [8, 32, 128], description="Distinct users per point.")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    user_key: Literal["user_id", "conversation_id"] = "user_id"
    train_config: str | None = Field(None, description="A `wildreward train` YAML for every point.")
    train_overrides: list[str] = Field(default_factory=list, description="Dotted overrides for every point.")
    max_parallel: int = Field(1, ge=1, description="Points trained at once (each asks for its own Train workers).")

    @model_validator(mode="after")
    def _check(self):
        if not self.user_counts or min(self.user_counts) < 1:
            raise ValueError("user_counts must be positive")
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        return self


def sample_by_users(users: Sequence[str], n_examples: int, n_users: int, seed: int) -> list[int]:
    """Row indices: ``n_users`` distinct users chosen at random, then ``n_examples`` rows taken round-robin across
    them. Raises ValueError when there are too few users, or too few rows among the chosen ones."""
    rng = np.random.default_rng(seed)
    rows_by_user: dict[str, list[int]] = {}
    for i, user in enumerate(users):
        rows_by_user.setdefault(user, []).append(i)
    if n_users > len(rows_by_user):
        raise ValueError(f"{n_users} users asked for, the data has {len(rows_by_user)}")
    names = sorted(rows_by_user)
    chosen = [names[i] for i in rng.choice(len(names), size=n_users, replace=False)]
    queues = [list(rng.permutation(rows_by_user[u])) for u in chosen]
    picked: list[int] = []
    while len(picked) < n_examples and any(queues):
        for queue in queues:
            if queue and len(picked) < n_examples:
                picked.append(int(queue.pop()))
    if len(picked) < n_examples:
        raise ValueError(f"{n_users} users (seed {seed}) hold only {len(picked)} rows < n_examples={n_examples}")
    return sorted(picked)


def read_user_column(paths: list[str], user_key: str) -> pa.Table:
    table = pa.concat_tables([read_table(p) for p in paths], promote_options="default")
    users = table[user_key]
    if users.null_count:
        hint = " (this log has no user ids: set user_key=conversation_id)" if user_key == "user_id" else ""
        raise ValueError(f"{users.null_count} of {table.num_rows} rows have no {user_key}{hint}")
    return table


def plan_points(cfg: UsersScalingConfig, table: pa.Table, out: Location) -> tuple[list[dict], list[dict]]:
    """Write each feasible point's training subset; returns (points, infeasible)."""
    users = table[cfg.user_key].to_pylist()
    points, infeasible = [], []
    for n_users in cfg.user_counts:
        for seed in cfg.seeds:
            try:
                rows = sample_by_users(users, cfg.n_examples, n_users, seed)
            except ValueError as err:
                infeasible.append({"users": n_users, "seed": seed, "reason": str(err)})
                continue
            point_dir = out / "points" / f"users{n_users}_seed{seed}"
            with (point_dir / "train" / "part-0.parquet").open_write() as fh:
                pq.write_table(table.take(rows), fh)
            points.append({"users": n_users, "seed": seed, "dir": str(point_dir)})
    return points, infeasible


def train_point(point: dict, cfg: dict) -> dict:
    """Train and score one point (runs as a Ray task when points run in parallel)."""
    from wildreward.train.config import TrainConfig
    from wildreward.train.pipeline import run_train

    base = UsersScalingConfig.model_validate(cfg)
    overrides = [*base.train_overrides, f"data.train=[{point['dir']}/train]",
                 f"data.test=[{','.join(base.test_data)}]", f"output_dir={point['dir']}/train_out",
                 f"seed={point['seed']}", f"checkpoint.name=users{point['users']}_seed{point['seed']}"]
    summary = run_train(load_config(TrainConfig, base.train_config, overrides))
    held_out = summary.get("eval") or {}
    return {**point, "model_dir": summary["model_dir"], "final_loss": summary["final_loss"],
            **{k: held_out.get(k) for k in ("accuracy", "mae", "spearman")},
            "consistency_auc": consistency_auc(Location.parse(point["dir"]) / "train_out" / "predictions.parquet")}


def consistency_auc(predictions: Location) -> float | None:
    """ROC-AUC of the held-out rewards against satisfied / not satisfied (None with one class only)."""
    from wildreward.eval.metrics import roc_auc
    from wildreward.ordinal import SATISFIED_MIN_LEVEL

    if not predictions.exists():
        return None
    table = read_table(predictions, ["reward", "label"])
    satisfied = np.asarray(table["label"].to_pylist()) >= SATISFIED_MIN_LEVEL
    if satisfied.all() or not satisfied.any():
        return None
    return roc_auc(np.asarray(table["reward"].to_pylist()), satisfied.astype(int))


def summarize(results: list[dict], metric: str) -> list[dict]:
    """Mean and standard deviation of ``metric`` over seeds, per user count."""
    by_users: dict[int, list[float]] = {}
    for r in results:
        if r.get(metric) is not None:
            by_users.setdefault(r["users"], []).append(float(r[metric]))
    return [{"users": u, "n": len(v), "mean": float(np.mean(v)), "std": float(np.std(v))}
            for u, v in sorted(by_users.items())]


def plot_curve(curves: dict[str, list[dict]], path: Location, title: str) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.4), squeeze=False)
    for ax, (metric, curve) in zip(axes[0], curves.items()):
        if curve:
            ax.errorbar([c["users"] for c in curve], [c["mean"] for c in curve], yerr=[c["std"] for c in curve],
                        marker="o", capsize=4)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("distinct users in training data")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_png(fig, path, dpi=120)
    plt.close(fig)


def run_users_scaling(cfg: UsersScalingConfig) -> dict[str, Any]:
    out = Location.parse(cfg.output_dir)
    cfg = cfg.model_copy(update={"output_dir": str(out)})
    if not cfg.train_data or not cfg.test_data:
        raise ValueError("train_data and test_data are both needed (extract's train/ and test/ folders)")
    save_config(cfg, out, "users_scaling")
    table = read_user_column(cfg.train_data, cfg.user_key)
    points, infeasible = plan_points(cfg, table, out)
    if not points:
        raise ValueError(f"no feasible point: {infeasible}")
    rc.init_ray()
    results = rc.run_tasks(train_point, [(p, cfg.model_dump(mode="json")) for p in points], cfg.max_parallel)
    metrics = ("accuracy", "spearman", "consistency_auc")
    curves = {m: summarize(results, m) for m in metrics}
    report = {"n_examples": cfg.n_examples, "user_key": cfg.user_key, "distinct_users_available":
              len(set(table[cfg.user_key].to_pylist())), "points": results, "infeasible": infeasible,
              "curves": curves}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    who = "users" if cfg.user_key == "user_id" else "conversations (no user ids: one conversation = one user)"
    plot_curve(curves, out / "users_scaling.png", f"{cfg.n_examples} training examples from N distinct {who}")
    return report
