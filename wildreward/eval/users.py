"""Users vs performance (paper §4.2, "more users yield stronger reward models"): at a fixed number of training
examples, vary how many distinct users the examples come from, train one RM per (users, seed) point, score each on
held-out users and on the preference benchmarks, plot every metric against the number of users.

Held-out users. Before any point is built, the users (``user_key``) are split into a training pool and a
held-out pool: a seeded share of the users with ``train_data`` rows, plus every user seen only in ``test_data``, is
held out. Points sample only training-pool rows of ``train_data``; the held-out set (consistency AUC, held-out
accuracy) is rows of held-out users only, so a point is never tested on a person it learnt from. Disjointness is
checked in code and a violation raises.

Sampling. Examples are drawn round-robin over the chosen users (one row per user per round, random rows within a
user), so a point with U users really spreads its N examples over U people instead of letting one heavy user
dominate. A point with fewer examples than users, or whose users hold fewer than N rows, cannot be built and is
reported as infeasible.

Scoring. Every point goes through the eval stage (``run_eval``) on the same seeded benchmark subsets and the same
held-out rows, so points differ only by their model; the random and length baselines come from the same runs.

Logs without user ids (ShareGPT, Arena, the WildChat sample here) can use ``user_key: conversation_id``: each
conversation then stands for one user, which the report says.
"""
from __future__ import annotations

import json
import math
from typing import Any, Iterable, Literal, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from wildreward import ray_compat as rc
from wildreward.config import Section, load_config, save_config
from wildreward.plots import pyplot
from wildreward.storage import Location, read_table, save_png

HELD_OUT_METRICS = ("consistency_auc", "accuracy", "spearman")  # measured on the held-out users' rows
BASELINES = ("random", "length")
# summary_table's name for the consistency column; reported under HELD_OUT_METRICS' name so that both agree
SUMMARY_CONSISTENCY = "Consistency AUC"


class UsersScalingConfig(Section):
    output_dir: str = "outputs/users_scaling"
    train_data: list[str] = Field(default_factory=list, description="extract's train/ folder(s).")
    test_data: list[str] = Field(default_factory=list, description=(
        "extract's test/ folder(s): their rows of held-out users join the held-out set; rows of training-pool "
        "users there are not used."))
    n_examples: int = Field(256, ge=1, description="Training examples per point, the same for every point.")
    user_counts: list[int] = Field(default_factory=lambda: [8, 32, 128], description="Distinct users per point.")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    user_key: Literal["user_id", "conversation_id"] = "user_id"
    held_out_fraction: float = Field(0.2, ge=0, lt=1, description=(
        "Share of the users with training rows set aside before any point is built, with every user found only "
        "in test_data: no point trains on them, and the held-out set is their rows only."))
    split_seed: int = Field(0, description="Seed of the users split and of the held-out row cap.")
    max_held_out_rows: int | None = Field(1000, ge=1, description=(
        "Seeded subset of the held-out users' rows that every point is scored on; null = all."))
    train_config: str | None = Field(None, description="A `wildreward train` YAML for every point.")
    train_overrides: list[str] = Field(default_factory=list, description="Dotted overrides for every point.")
    eval_config: str | None = Field(None, description=(
        "A `wildreward eval` YAML for every point (benchmarks, data_dir, actors); model_dir, output_dir and "
        "consistency_data are set per point."))
    eval_overrides: list[str] = Field(default_factory=list, description="Dotted eval overrides for every point.")
    max_pairs: int | None = Field(100, ge=1, description=(
        "Per benchmark, a seeded subset of this many pairs (RM-Bench: prompts), the same for every point; null = "
        "all. eval_overrides may override it."))
    plot_columns: list[str] | None = Field(None, description=(
        "Metrics plotted, one panel each: consistency_auc, accuracy, spearman or an eval summary column (e.g. "
        "`RM-B Hard`); null = consistency_auc and every benchmark column the eval reports."))
    max_parallel: int = Field(1, ge=1, description="Points trained at once (each asks for its own Train workers).")

    @model_validator(mode="after")
    def _check(self):
        if not self.user_counts or min(self.user_counts) < 1:
            raise ValueError("user_counts must be positive")
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        return self


# ---------------------------------------------------------------- users: split and sampling

def split_users(train_users: Iterable[str], test_users: Iterable[str], held_out_fraction: float, seed: int
                ) -> tuple[set[str], set[str]]:
    """(training pool, held-out pool). A seeded share of the users with training rows is held out (at least one
    when the share is > 0, never all of them); users found only in the test rows are held out as well, since no
    point can train on them anyway (with conversation ids, extract's test split is already such users)."""
    names = sorted(set(train_users))
    test_only = set(test_users) - set(names)
    if not names:
        raise ValueError("no user has training rows")
    n_held = 0 if held_out_fraction == 0 else min(len(names) - 1, max(1, round(held_out_fraction * len(names))))
    order = np.random.default_rng(seed).permutation(len(names))
    held_out = {names[i] for i in order[:n_held]} | test_only
    if not held_out:
        raise ValueError("no held-out user: set held_out_fraction > 0, or give test_data rows of other users")
    return set(names) - held_out, held_out


def check_disjoint(users: Iterable[str], held_out: set[str], what: str) -> None:
    """Raise if any of ``users`` is a held-out user: a point must never be tested on someone it trained on."""
    leaked = sorted(set(users) & held_out)
    if leaked:
        raise RuntimeError(f"{what} holds {len(leaked)} held-out user(s), e.g. {leaked[:3]}: the users split leaked")


def sample_by_users(users: Sequence[str], n_examples: int, n_users: int, seed: int) -> list[int]:
    """Row indices: ``n_users`` distinct users chosen at random, then ``n_examples`` rows taken round-robin across
    them. Raises ValueError when there are too few users, fewer examples than users, or too few rows among the
    chosen ones."""
    if n_examples < n_users:  # round-robin would stop after n_examples users: the point would have fewer
        raise ValueError(f"n_examples={n_examples} < {n_users} users: every user needs at least one example")
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
    if user_key not in table.column_names:
        raise ValueError(f"{paths} have no {user_key} column")
    users = table[user_key]
    if users.null_count:
        hint = " (this log has no user ids: set user_key=conversation_id)" if user_key == "user_id" else ""
        raise ValueError(f"{users.null_count} of {table.num_rows} rows have no {user_key}{hint}")
    return table


def rows_of(table: pa.Table, key: str, users: set[str]) -> pa.Table:
    return table.filter(pa.array([u in users for u in table[key].to_pylist()], pa.bool_()))


def build_pools(cfg: UsersScalingConfig, out: Location) -> tuple[pa.Table, set[str], dict]:
    """Split the users, write the held-out set to ``out/held_out``; returns (training-pool rows of train_data,
    held-out users, the pools' sizes for the report)."""
    key = cfg.user_key
    train = read_user_column(cfg.train_data, key)
    test = read_user_column(cfg.test_data, key) if cfg.test_data else train.slice(0, 0)
    train_users, test_users = set(train[key].to_pylist()), set(test[key].to_pylist())
    pool_users, held_users = split_users(train_users, test_users, cfg.held_out_fraction, cfg.split_seed)
    pool = rows_of(train, key, pool_users)
    held = pa.concat_tables([rows_of(train, key, held_users), rows_of(test, key, held_users)],
                            promote_options="default")
    n_held_rows = held.num_rows
    if cfg.max_held_out_rows and held.num_rows > cfg.max_held_out_rows:
        keep = np.random.default_rng(cfg.split_seed).choice(held.num_rows, cfg.max_held_out_rows, replace=False)
        held = held.take(sorted(keep))
    check_disjoint(pool[key].to_pylist(), held_users, "the training pool")
    check_disjoint(held[key].to_pylist(), pool_users, "the held-out set (as training-pool users)")
    with (out / "held_out" / "part-0.parquet").open_write() as fh:
        pq.write_table(held, fh)
    pools = {"user_key": key, "held_out_fraction": cfg.held_out_fraction, "split_seed": cfg.split_seed,
             "training_pool": {"users": len(pool_users), "rows": pool.num_rows},
             "held_out": {"users": len(held_users), "users_only_in_test_data": len(held_users - train_users),
                          "rows": n_held_rows, "rows_used": held.num_rows,
                          "users_used": len(set(held[key].to_pylist())), "dir": str(out / "held_out")},
             "test_rows_of_training_pool_users_unused": test.num_rows - rows_of(test, key, held_users).num_rows}
    return pool, held_users, pools


def plan_points(cfg: UsersScalingConfig, pool: pa.Table, held_out: set[str], out: Location
                ) -> tuple[list[dict], list[dict]]:
    """Write each feasible point's training subset, drawn from the training pool only; returns (points,
    infeasible)."""
    users = pool[cfg.user_key].to_pylist()
    points, infeasible = [], []
    for n_users in cfg.user_counts:
        for seed in cfg.seeds:
            try:
                rows = sample_by_users(users, cfg.n_examples, n_users, seed)
            except ValueError as err:
                infeasible.append({"users": n_users, "seed": seed, "reason": str(err)})
                continue
            subset = pool.take(rows)
            check_disjoint(subset[cfg.user_key].to_pylist(), held_out, f"point users{n_users}_seed{seed}")
            point_dir = out / "points" / f"users{n_users}_seed{seed}"
            with (point_dir / "train" / "part-0.parquet").open_write() as fh:
                pq.write_table(subset, fh)
            points.append({"users": n_users, "seed": seed, "dir": str(point_dir)})
    return points, infeasible


# ---------------------------------------------------------------- one point: train, then score

def train_point(point: dict, cfg: dict, held_out_dir: str) -> dict:
    """Train and score one point (runs as a Ray task; what it launches asks for its own resources)."""
    from wildreward.train.config import TrainConfig
    from wildreward.train.pipeline import run_train

    base = UsersScalingConfig.model_validate(cfg)
    overrides = [*base.train_overrides, f"data.train=[{point['dir']}/train]", f"data.test=[{held_out_dir}]",
                 f"output_dir={point['dir']}/train_out", f"seed={point['seed']}",
                 f"checkpoint.name=users{point['users']}_seed{point['seed']}"]
    summary = run_train(load_config(TrainConfig, base.train_config, overrides))
    held_out = summary.get("eval") or {}
    scores = score_point(point_eval_config(base, point, summary["model_dir"], held_out_dir))
    return {**point, "model_dir": summary["model_dir"], "final_loss": summary["final_loss"],
            **{k: held_out.get(k) for k in ("accuracy", "mae", "spearman")}, **scores}


def point_eval_config(base: UsersScalingConfig, point: dict, model_dir: str, held_out_dir: str):
    """The eval stage's config for one point: every point gets the same benchmark subsets and held-out rows (the
    eval seed is not the point's seed), so points differ only by their model."""
    from wildreward.eval.config import EvalConfig

    knob = [f"max_pairs={'null' if base.max_pairs is None else base.max_pairs}"]
    # the held-out rows are already chosen (and capped) here: the eval scores all of them
    fixed = [f"model_dir={model_dir}", "endpoint=null", f"output_dir={point['dir']}/eval",
             f"consistency_data={held_out_dir}", "max_consistency_rows=null"]
    return load_config(EvalConfig, base.eval_config, [*knob, *base.eval_overrides, *fixed])


def score_point(eval_cfg) -> dict:
    """run_eval, read back through the summary table: the RM's columns and the baselines' columns."""
    from wildreward.eval.pipeline import run_eval
    from wildreward.eval.report import summary_table

    table = summary_table(run_eval(eval_cfg))
    rm = table.get("rm") or {}
    rows = {scorer: numeric_row(table.get(scorer) or {}) for scorer in ("rm", *BASELINES)}
    return {"consistency_auc": rows["rm"].pop("consistency_auc", None), "benchmarks": rows["rm"],
            "intervals": intervals(rm), "not_evaluated": not_evaluated(rm),
            "baselines": {s: rows[s] for s in BASELINES}, "eval_dir": eval_cfg.output_dir}


def numeric(value: Any) -> float | None:
    """A summary cell as a float: a plain number, or the ``value`` of a ``summary_table`` cell
    ({value, lo, hi, note}); None otherwise."""
    if isinstance(value, dict):
        value = value.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    return float(value) if math.isfinite(value) else None


def numeric_row(row: dict) -> dict[str, float]:
    """Columns by name, read defensively: the summary table's columns change as protocols are added."""
    out = {}
    for column, value in row.items():
        number = numeric(value)
        if number is not None:
            out["consistency_auc" if column == SUMMARY_CONSISTENCY else column] = number
    return out


def intervals(row: dict) -> dict[str, list[float]]:
    """The eval's own 95% interval of each column of one point (pairs resampled), where it gives one."""
    out = {}
    for column, value in row.items():
        if isinstance(value, dict) and numeric(value.get("lo")) is not None and numeric(value.get("hi")) is not None:
            out[column] = [float(value["lo"]), float(value["hi"])]
    return out


def not_evaluated(row: dict) -> dict[str, str]:
    """Columns without a number (a benchmark file absent, no scored pair), with the eval's note: never a zero."""
    return {column: (value.get("note") if isinstance(value, dict) else None) or "no value"
            for column, value in row.items() if numeric(value) is None}


# ---------------------------------------------------------------- over seeds: curves, baselines

def metric_value(point: dict, metric: str) -> float | None:
    value = point.get(metric) if metric in HELD_OUT_METRICS else (point.get("benchmarks") or {}).get(metric)
    return numeric(value)


def summarize(results: list[dict], metric: str) -> list[dict]:
    """Per user count, over the seeds where ``metric`` has a value: n, mean, sample standard deviation (ddof=1;
    0 with one seed) and the half width of the t-based 95% interval of the mean (None with one seed)."""
    from scipy import stats

    by_users: dict[int, list[float]] = {}
    for r in results:
        value = metric_value(r, metric)
        if value is not None:
            by_users.setdefault(r["users"], []).append(value)
    curve = []
    for users, values in sorted(by_users.items()):
        n = len(values)
        std = float(np.std(values, ddof=1)) if n > 1 else 0.0
        ci95 = float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)) if n > 1 else None
        curve.append({"users": users, "n": n, "mean": float(np.mean(values)), "std": std, "ci95": ci95})
    return curve


def baseline_levels(results: list[dict]) -> dict[str, dict[str, float]]:
    """metric -> scorer -> mean over points (the same subsets for every point, so they barely vary)."""
    values: dict[str, dict[str, list[float]]] = {}
    for r in results:
        for scorer, row in (r.get("baselines") or {}).items():
            for metric, value in row.items():
                values.setdefault(metric, {}).setdefault(scorer, []).append(value)
    return {m: {s: float(np.mean(v)) for s, v in by.items()} for m, by in values.items()}


def metric_names(results: list[dict]) -> list[str]:
    """Held-out metrics first, then every benchmark column in the order the eval reports them."""
    columns = list(HELD_OUT_METRICS)
    for r in results:
        columns += [c for c in (r.get("benchmarks") or {}) if c not in columns]
    return columns


def panels(cfg: UsersScalingConfig, curves: dict[str, list[dict]]) -> tuple[list[str], list[str]]:
    """(metrics to plot, asked-for metrics that no point reported). By default the consistency AUC and every
    benchmark column; calibration (ECE) and the held-out accuracy / Spearman stay in the tables."""
    wanted = cfg.plot_columns if cfg.plot_columns is not None else \
        ["consistency_auc", *[m for m in curves if m not in HELD_OUT_METRICS and not m.startswith("ECE")]]
    return [m for m in wanted if curves.get(m)], [m for m in wanted if not curves.get(m)]


# ---------------------------------------------------------------- outputs

def plot_curves(curves: dict[str, list[dict]], metrics: list[str], baselines: dict[str, dict[str, float]],
                path: Location, title: str) -> None:
    """One panel per metric: mean ± std over seeds against distinct users (log axis), baselines as lines."""
    plt = pyplot()
    ncols = max(1, min(4, len(metrics)))
    nrows = max(1, math.ceil(len(metrics) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        curve = curves[metric]
        ax.errorbar([c["users"] for c in curve], [c["mean"] for c in curve], yerr=[c["std"] for c in curve],
                    marker="o", capsize=4, label="RM (mean ± std over seeds)")
        for scorer, style in zip(BASELINES, (":", "--")):
            if scorer in baselines.get(metric, {}):
                ax.axhline(baselines[metric][scorer], color="grey", linestyle=style, label=scorer)
        ax.set_xscale("log", base=2)
        ax.set_xticks([c["users"] for c in curve], labels=[str(c["users"]) for c in curve])  # not only powers of 2
        ax.minorticks_off()
        ax.set_xlabel("distinct users in training data")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    if metrics:
        axes.flat[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_png(fig, path, dpi=120)
    plt.close(fig)


def cell(curve: list[dict], users: int) -> str:
    point = next((c for c in curve if c["users"] == users), None)
    return "n/a" if point is None else f"{point['mean']:.3f} ± {point['std']:.3f} (n={point['n']})"


def markdown(report: dict) -> str:
    curves, pools = report["curves"], report["pools"]
    metrics = [m for m in curves if curves[m]]
    users = sorted({c["users"] for m in metrics for c in curves[m]})
    lines = [f"# Users vs performance ({report['n_examples']} training examples per point)", "",
             f"Users are `{pools['user_key']}`" + ("" if pools["user_key"] == "user_id" else
                                                   " (no user ids: one conversation stands for one user)") +
             f". Split before any point was built (seed {pools['split_seed']}): training pool "
             f"{pools['training_pool']['users']} users / {pools['training_pool']['rows']} rows; held-out "
             f"{pools['held_out']['users']} users / {pools['held_out']['rows']} rows, of which "
             f"{pools['held_out']['rows_used']} rows ({pools['held_out']['users_used']} users) score every point. "
             "No point trained on a held-out user (checked).", "",
             "Mean ± sample std over seeds; consistency AUC, accuracy and Spearman on the held-out users' rows, "
             "the other columns from the eval stage's summary table.", "",
             "| users | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    lines += [f"| {u} | " + " | ".join(cell(curves[m], u) for m in metrics) + " |" for u in users]
    for scorer in BASELINES:
        values = [report["baselines"].get(m, {}).get(scorer) for m in metrics]
        lines.append(f"| {scorer} | " + " | ".join("" if v is None else f"{v:.3f}" for v in values) + " |")
    if report["infeasible"]:
        lines += ["", "Infeasible points: " + "; ".join(f"{p['users']} users, seed {p['seed']}: {p['reason']}"
                                                         for p in report["infeasible"])]
    absent = {c: note for p in report.get("points", []) for c, note in (p.get("not_evaluated") or {}).items()}
    if absent:
        lines += ["", "Not evaluated (no number, never a zero): " + "; ".join(f"{c}: {n}" for c, n in absent.items())]
    if report["missing_plot_columns"]:
        lines += ["", f"Asked to plot but not reported by any point: {', '.join(report['missing_plot_columns'])}"]
    return "\n".join(lines) + "\n"


def run_users_scaling(cfg: UsersScalingConfig) -> dict[str, Any]:
    out = Location.parse(cfg.output_dir)
    cfg = cfg.model_copy(update={"output_dir": str(out)})
    if not cfg.train_data:
        raise ValueError("train_data is needed (extract's train/ folders; test_data adds held-out users' rows)")
    save_config(cfg, out, "users_scaling")
    pool, held_out, pools = build_pools(cfg, out)
    points, infeasible = plan_points(cfg, pool, held_out, out)
    if not points:
        raise ValueError(f"no feasible point: {infeasible}")
    rc.init_ray()
    results = rc.run_tasks(train_point, [(p, cfg.model_dump(mode="json"), pools["held_out"]["dir"]) for p in points],
                           cfg.max_parallel)
    curves = {m: summarize(results, m) for m in metric_names(results)}
    plotted, missing = panels(cfg, curves)
    report = {"n_examples": cfg.n_examples, "user_key": cfg.user_key, "pools": pools, "points": results,
              "infeasible": infeasible, "curves": curves, "baselines": baseline_levels(results),
              "plotted": plotted, "missing_plot_columns": missing}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(markdown(report))
    who = "users" if cfg.user_key == "user_id" else "conversations (no user ids: one conversation = one user)"
    plot_curves(curves, plotted, report["baselines"], out / "users_scaling.png",
                f"{cfg.n_examples} training examples from N distinct {who}; test rows from held-out users")
    return report
