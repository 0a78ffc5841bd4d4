"""``run_extract``: chat logs -> WildFB-style data set on Ray Data, as a table of stages.

Each stage is a function ``(run, stage_dir) -> stats`` that writes Parquet under ``<output_dir>/stages/<name>/``;
``resume.run_stage`` skips a stage already finished under the same config, and the LLM stages (annotate, refusal,
lookahead) also resume inside the stage, skipping ids already written. The Ray Data UDFs are in ``udfs``.

    read -> turns (rule verdicts) -> annotate (LLM, turns that pass the rules) -> refusal (LLM judge)
         -> lookahead (LLM, rule-dropped turns that follow a neutral turn) -> mining (MiniLM)
         -> final (labels, RM text) -> train/ + test/ (split by conversation)

Order of filters and mining, as in the original scripts: mining sees the labels of the turns that follow a
neutral turn whether or not those pass the rule filters, and the filters decide which turns become training rows
(``mine`` says why). The LLM is only asked about turns that can matter: training rows (annotate), and the
rule-dropped turns within ``mining.lookahead`` after a neutral one (lookahead).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial

import pyarrow as pa
import pyarrow.compute as pc

from wildreward import ray_compat as rc
from wildreward.config import save_config
from wildreward.extract.config import ExtractConfig
from wildreward.extract.report import write_report
from wildreward.extract.resume import check_unique, fingerprint, run_llm_stage, run_stage
from wildreward.extract.udfs import (REFUSAL_COLUMNS, TALLY, AnnotateUDF, JudgeUDF, SimilarityUDF, candidates_udf,
                                     final_udf, keep_at_least, keep_null, keep_valid, lookahead_udf, read_udf,
                                     refusal_candidates_udf, split_udf, turns_udf)
from wildreward.logs import stage_logger
from wildreward.storage import Location, read_table

log = stage_logger("extract")

UDF_BATCH_ROWS = 1024  # rows per call of the row-wise Python UDFs (their memory follows the batch)
MINING_COLUMNS = ["id", "conversation_id", "turn_index", "label", "feedback"]


@dataclass
class Run:
    """What a stage function reads: the config, the output folder and the stats of the stages before it."""
    cfg: ExtractConfig
    out: Location
    stats: dict = field(default_factory=dict)

    def stage(self, name: str) -> Location:
        return self.out / "stages" / name


# ---------------------------------------------------------------- counting

def counts(table: pa.Table, column: str) -> dict:
    """Value counts of a column as {value: n}, nulls under the key 'null', sorted by value."""
    values = table[column]
    out = {str(v["values"]): v["counts"] for v in pc.value_counts(values.drop_null()).to_pylist()}
    if values.null_count:
        out["null"] = values.null_count
    return dict(sorted(out.items()))


def prefix_counts(column) -> dict:
    """Counts of the part before ':' of non-null reason/error strings ("invalid_json: ..." -> "invalid_json")."""
    values = [v.split(":")[0] for v in column.drop_null().to_pylist()]
    return counts(pa.table({"v": pa.array(values, pa.string())}), "v") if values else {}


def label_stats(stage_dir: Location) -> dict:
    """Rows, errors and raw labels of an annotated stage."""
    t = read_table(stage_dir, ["label", "error", "annotation"])
    unseen = pc.sum(pc.fill_null(pc.match_substring(t["annotation"], "unseen_language"), False)).as_py() or 0
    return {"annotated": t.num_rows, "errors": t.num_rows - t["error"].null_count,
            "error_kinds": prefix_counts(t["error"]), "unseen_language": unseen,
            "labels": counts(t.filter(pc.is_null(t["error"])), "label")}


def read_stats(stage_dir: Location) -> dict:
    """Stats of the written read stage. ``records`` is what the read tasks counted themselves (``TALLY``), so a row
    lost or doubled between reader and disk stops the run here, before any LLM call; so do duplicate ids."""
    records = sum(json.loads(f.read_text())["rows"] for f in (stage_dir / TALLY).glob("*.json"))
    t = read_table(stage_dir, ["conversation_id", "source", "quarantine_reason"])
    if t.num_rows != records:
        raise RuntimeError(f"read: the read tasks made {records} rows, {t.num_rows} were written to {stage_dir}")
    kept = t.filter(pc.is_null(t["quarantine_reason"]))
    check_unique_conversations(stage_dir, kept["conversation_id"])
    return {"records": records, "conversations": kept.num_rows, "quarantined": prefix_counts(t["quarantine_reason"]),
            "sources": counts(kept, "source")}


def check_unique_conversations(stage_dir: Location, ids: pa.ChunkedArray) -> None:
    """Turn ids, and so the annotation resume and check_unique, are built from conversation ids: a duplicate would
    be annotated (paid for) before check_unique failed. Stopping here is simpler than choosing which copy to keep,
    and the same conversation in two input files is a mistake to fix in the input."""
    tally = pc.value_counts(ids)
    dups = tally.field("values").filter(pc.greater(tally.field("counts"), 1))
    if not len(dups):
        return
    rows = read_table(stage_dir, ["conversation_id", "source_file", "line", "quarantine_reason"])
    rows = rows.filter(pc.and_(pc.is_null(rows["quarantine_reason"]),
                               pc.is_in(rows["conversation_id"], value_set=dups[:3]))).to_pylist()
    where = ", ".join(f"{r['conversation_id']} at {r['source_file']}:{r['line']}"
                      for r in sorted(rows, key=lambda r: (r["conversation_id"], r["source_file"], r["line"])))
    raise RuntimeError(f"read: {len(dups)} conversation ids occur more than once (e.g. {where}); remove the "
                       "duplicates from the input")


# ---------------------------------------------------------------- stages

def read_stage(run: Run, d: Location) -> dict:
    from wildreward.extract.read import plan_read_tasks

    cfg = run.cfg.read
    skipped: list = []
    specs = plan_read_tasks(cfg, skipped)
    log(f"reading {len(specs)} read tasks from {len(cfg.paths)} path(s); {len(skipped)} file(s) in them "
        "skipped as not chat logs")
    rc.write_parquet(rc.map_tables(rc.from_items(specs), read_udf, cfg=cfg, tally=str(d / TALLY)), str(d))
    counted = read_stats(d)
    # quarantine/ is written with the read stage, so it is redone exactly when the read stage is.
    (run.out / "quarantine").rmtree()
    if counted["quarantined"]:
        q = rc.read_parquet(str(d), columns=["source_file", "line", "conversation_id", "quarantine_reason", "raw"])
        rc.write_parquet(rc.map_tables(q, keep_valid, column="quarantine_reason"), str(run.out / "quarantine"))
    return {**counted, "skipped_files": len(skipped)}


def turns_stage(run: Run, d: Location) -> dict:
    from wildreward.extract.filters import RULES

    convs = rc.map_tables(rc.read_parquet(str(run.stage("read"))), keep_null, column="quarantine_reason")
    rc.write_parquet(rc.map_tables(convs, turns_udf, rows_per_batch=UDF_BATCH_ROWS, cfg=run.cfg.filters), str(d))
    t = read_table(d, ["drop_reason", "language"])
    dropped = counts(t, "drop_reason")
    kept = dropped.pop("null", 0)
    return {"turns": t.num_rows, "kept": kept, "dropped": {r: dropped.get(r, 0) for r in RULES},
            "languages_before_filter": dict(sorted(counts(t, "language").items(), key=lambda kv: -kv[1])[:15])}


def annotate_stage(run: Run, d: Location) -> dict:
    cfg = run.cfg.annotator
    kept = rc.map_tables(rc.read_parquet(str(run.stage("turns"))), keep_null, column="drop_reason")
    redone = run_llm_stage(kept, d, AnnotateUDF, cfg, "error")
    check_unique(d, run.stats["turns"]["kept"], "annotate")
    stats = label_stats(d)
    return {"annotated": stats.pop("annotated"), "annotated_this_run": redone, **stats,
            "backend": cfg.backend, "mode": cfg.mode, "model": cfg.model}


def refusal_stage(run: Run, d: Location) -> dict:
    cfg = run.cfg.refusal
    if not cfg.enabled:
        return {"enabled": False}
    cands = rc.map_tables(rc.read_parquet(str(run.stage("annotate")), columns=REFUSAL_COLUMNS),
                          refusal_candidates_udf, rows_per_batch=UDF_BATCH_ROWS, cfg=cfg)
    run_llm_stage(cands, d, JudgeUDF, run.cfg.annotator, "judge_error")
    t = read_table(d, ["id", "verdict", "judge_error"])
    return {"enabled": True, "variant": cfg.variant, "judged": t.num_rows,
            "verdicts": counts(t.filter(pc.is_null(t["judge_error"])), "verdict"),
            "judge_errors": prefix_counts(t["judge_error"])}


def lookahead_stage(run: Run, d: Location) -> dict:
    """Labels for mining only: the turns within ``mining.lookahead`` after a neutral training turn that the rule
    filters dropped (a short "ok, and in C?" reply is such a turn's query). They never become training rows."""
    from wildreward.extract.mine import NEUTRAL_RAW_LABEL, following_ids

    if not run.cfg.mining.enabled:
        return {"enabled": False}
    ann = read_table(run.stage("annotate"), ["conversation_id", "turn_index", "label"])
    neutral = ann.filter(pc.fill_null(pc.equal(ann["label"], NEUTRAL_RAW_LABEL), False))
    ids = following_ids(neutral, run.cfg.mining.lookahead)
    todo = rc.map_tables(rc.read_parquet(str(run.stage("turns"))), lookahead_udf, rows_per_batch=UDF_BATCH_ROWS,
                         ids=ids, cfg=run.cfg.filters)
    expected = todo.count()  # a pass over text, no LLM: the rows check_unique must find
    redone = run_llm_stage(todo, d, AnnotateUDF, run.cfg.annotator, "error")
    check_unique(d, expected, "lookahead")
    return {"enabled": True, "after_neutral": len(ids), "annotated_this_run": redone, **label_stats(d)}


def mining_stage(run: Run, d: Location) -> dict:
    from wildreward.extract.mine import POSITIVE_MIN_RAW_LABEL

    cfg = run.cfg.mining
    if not cfg.enabled:
        return {"enabled": False}
    turns = rc.map_tables(rc.read_parquet(str(run.stage("annotate")), columns=MINING_COLUMNS), keep_valid,
                          column="label")
    if any(run.stage("lookahead").glob("*.parquet")):
        # lookahead turns only ever serve as the positive future of a neutral training turn
        futures = rc.map_tables(rc.read_parquet(str(run.stage("lookahead")), columns=MINING_COLUMNS),
                                keep_at_least, column="label", value=POSITIVE_MIN_RAW_LABEL)
        turns = turns.union(futures)
    cands = rc.group_map(turns, "conversation_id", partial(candidates_udf, lookahead=cfg.lookahead))
    scored = rc.map_with_actors(cands, SimilarityUDF, {"encoder": cfg.encoder, "batch_tokens": cfg.batch_tokens},
                                batch_size=cfg.batch_size, num_cpus=cfg.num_cpus)
    rc.write_parquet(scored, str(d))
    return {"enabled": True, "candidates": read_table(d, ["id"]).num_rows, "threshold": cfg.threshold}


def final_stage(run: Run, d: Location) -> dict:
    mined, through_dropped = resolve_mined(run)
    verdicts: dict = {}
    if run.cfg.refusal.enabled:
        verdicts = {r["id"]: (r["verdict"], r["judge_error"])
                    for r in read_table(run.stage("refusal"), ["id", "verdict", "judge_error"]).to_pylist()}
    rc.write_parquet(rc.map_tables(rc.read_parquet(str(run.stage("annotate"))), final_udf,
                                   rows_per_batch=UDF_BATCH_ROWS, mined=mined, verdicts=verdicts,
                                   variant=run.cfg.refusal.variant), str(d))
    check_unique(d, run.stats["annotate"]["annotated"], "final")
    return final_stats(read_table(d, ["id", "drop_reason", "label", "refusal_verdict", "raw_label",
                                      "annotator_label"]), mined, through_dropped)


def resolve_mined(run: Run) -> tuple[dict, set]:
    """Mined labels by turn id, and the ids that only a lookahead (rule-dropped) turn rescued."""
    from wildreward.extract.mine import mined_only_through, resolve_mining

    cfg = run.cfg.mining
    if not cfg.enabled:
        return {}, set()
    c = read_table(run.stage("mining"), ["id", "future_id", "offset", "future_label", "similarity"]).to_pylist()
    sims = [r["similarity"] for r in c]
    lookahead = set(read_table(run.stage("lookahead"), ["id"])["id"].to_pylist())
    return (resolve_mining(c, sims, cfg.threshold, cfg.mined_label),
            mined_only_through(c, sims, cfg.threshold, lookahead))


def final_stats(t: pa.Table, mined: dict, through_dropped: set) -> dict:
    """Kept rows whose label mining set, and those the refusal verdict changed, each against the label it had
    before that step (mining comes first), so neither count takes in the other's changes. ``mined_via_dropped``:
    kept mined rows that filtering before mining (this project's earlier order) would have lost."""
    dropped = counts(t, "drop_reason")
    kept = dropped.pop("null", 0)
    mined_kept = relabelled = via_dropped = 0
    for row in t.filter(pc.is_null(t["drop_reason"])).to_pylist():
        before = mined[row["id"]]["label"] if row["id"] in mined else row["annotator_label"]
        relabelled += row["refusal_verdict"] is not None and row["raw_label"] != before
        mined_kept += row["id"] in mined and row["raw_label"] == before
        via_dropped += row["id"] in through_dropped and row["raw_label"] == before
    return {"kept": kept, "dropped": dropped, "mined": len(mined), "mined_kept": mined_kept,
            "mined_via_dropped": via_dropped, "refusal_relabelled": relabelled,
            "levels": counts(t.filter(pc.is_null(t["drop_reason"])), "label")}


def split_stage(run: Run, d: Location) -> dict:
    from wildreward.extract.split import assign_test_conversations

    cfg, out = run.cfg.split, run.out
    t = read_table(run.stage("final"), ["conversation_id", "drop_reason"])
    t = t.filter(pc.is_null(t["drop_reason"]))
    per_conv = {r["values"]: r["counts"] for r in pc.value_counts(t["conversation_id"]).to_pylist()}
    if t.num_rows and cfg.test_size >= t.num_rows:
        log(f"WARNING: split.test_size={cfg.test_size} >= the {t.num_rows} kept rows: every row goes to "
            "test and train is empty; set split.test_size lower to train on this data")
    test_ids = pa.array(sorted(assign_test_conversations(per_conv, cfg.test_size, cfg.seed)), pa.string())
    for name, is_test in (("train", False), ("test", True)):
        (out / name).rmtree()
        rc.write_parquet(rc.map_tables(rc.read_parquet(str(run.stage("final"))), split_udf, test_ids=test_ids,
                                       test=is_test), str(out / name))
    rows = {name: read_table(out / name, ["conversation_id"]) for name in ("train", "test")}
    leak = set(rows["train"]["conversation_id"].to_pylist()) & set(rows["test"]["conversation_id"].to_pylist())
    if leak:
        raise RuntimeError(f"{len(leak)} conversations are in both train and test")
    return {name: {"rows": r.num_rows, "conversations": len(pc.unique(r["conversation_id"]))}
            for name, r in rows.items()}


# (name, stage function, resumable): a resumable stage makes LLM calls and keeps the rows an interrupted run wrote.
STAGES = (
    ("read", read_stage, False),
    ("turns", turns_stage, False),
    ("annotate", annotate_stage, True),
    ("refusal", refusal_stage, True),
    ("lookahead", lookahead_stage, True),
    ("mining", mining_stage, False),
    ("final", final_stage, False),
    ("split", split_stage, False),
)


def stage_keys(cfg: ExtractConfig) -> dict[str, str]:
    """Each stage's config fingerprint, chained through the stages it reads, so a change redoes what it affects."""
    # Everything that changes what the annotator answers; not throughput settings (actors, batch sizes).
    llm = cfg.annotator.model_dump(include={"backend", "mode", "model", "unclear_feedback", "temperature",
                                            "max_tokens", "max_field_chars", "engine_kwargs"})
    llm["extra_body"] = cfg.annotator.http.extra_body
    if cfg.annotator.backend == "classifier":
        llm["classifier"] = cfg.annotator.classifier.model_dump(exclude={"batch_size"})
    keys = {"read": fingerprint(cfg.read)}
    keys["turns"] = fingerprint(keys["read"], cfg.filters)
    keys["annotate"] = fingerprint(keys["turns"], llm)
    keys["refusal"] = fingerprint(keys["annotate"], cfg.refusal)
    keys["lookahead"] = fingerprint(keys["annotate"], cfg.mining.enabled, cfg.mining.lookahead)
    keys["mining"] = fingerprint(keys["lookahead"], cfg.mining)
    keys["final"] = fingerprint(keys["refusal"], keys["mining"])
    keys["split"] = fingerprint(keys["final"], cfg.split)
    return keys


def run_extract(cfg: ExtractConfig) -> dict:
    """Run (or resume) the whole extraction stage; returns the stats also written to ``stats.json``."""
    if cfg.annotator.backend == "classifier" and not cfg.annotator.classifier.model_dir:
        raise ValueError("annotator.backend=classifier needs annotator.classifier.model_dir (a model trained by "
                         "`wildreward labeller`)")
    run = Run(cfg, Location.parse(cfg.output_dir))
    save_config(cfg, run.out, "extract")
    rc.init_ray(object_store_fraction=cfg.object_store_fraction)
    keys = stage_keys(cfg)
    for name, build, resumable in STAGES:
        run.stats[name] = run_stage(run.out, name, keys[name], partial(build, run), resumable)
    write_report(run.out, cfg, run.stats)
    log(f"outputs: {run.out / 'train'}, {run.out / 'test'}; stats: {run.out / 'stats.json'}; "
        f"card: {run.out / 'dataset_card.md'}")
    return run.stats
