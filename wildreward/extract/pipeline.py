"""``run_extract``: chat logs -> WildFB-style data set on Ray Data.

Stages, each written as Parquet under ``<output_dir>/stages/<name>/`` with a ``_DONE.json`` marker, so a re-run
with the same output dir skips finished stages; the two LLM stages (annotate, refusal) also resume inside the
stage, skipping ids already written:

    read -> turns (rule filters) -> annotate (LLM actors) -> refusal (LLM judge) -> mining (MiniLM actors)
         -> final (labels, RM text) -> train/ + test/ (split by conversation)

Deviation from the original scripts: rule filters run before annotation (no LLM call on a turn that would be
dropped anyway), so a filtered turn cannot lend its feedback label to hindsight mining of the turn before it.
"""
from __future__ import annotations

import hashlib
import json
import time
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from wildreward import ray_compat as rc
from wildreward.config import save_config
from wildreward.extract import schema
from wildreward.extract.backends import UNAVAILABLE
from wildreward.extract.config import AnnotatorConfig, ExtractConfig, FilterConfig, ReadConfig, RefusalConfig
from wildreward.extract.report import write_report
from wildreward.logs import stage_logger
from wildreward.storage import Location, read_table
from wildreward.template import build_rm_text

READ_BATCH_ROWS = 1000
UDF_BATCH_ROWS = 1024  # rows per call of the row-wise Python UDFs (their memory follows the batch)
TALLY = "_tally"  # read stage: each read task's own count of the rows it made, checked against the rows written


log = stage_logger("extract")


# ---------------------------------------------------------------- Ray Data UDFs (run in workers)

def read_udf(specs: pa.Table, cfg: ReadConfig, tally: str) -> Iterator[pa.Table]:
    from wildreward.extract.read import read_task

    for spec in specs.to_pylist():
        rows, n = [], 0
        for row in read_task(spec, cfg):
            rows.append(row)
            n += 1
            if len(rows) >= READ_BATCH_ROWS:
                yield schema.to_table(rows, schema.CONVERSATION)
                rows = []
        if rows:
            yield schema.to_table(rows, schema.CONVERSATION)
        write_tally(Location.parse(tally), spec, n)


def write_tally(folder: Location, spec: dict, rows: int) -> None:
    """One file per read task, named by its spec: a retried task overwrites its own count."""
    name = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    (folder / f"{name}.json").write_text(json.dumps({**spec, "rows": rows}))


def turns_udf(convs: pa.Table, cfg: FilterConfig) -> pa.Table:
    from wildreward.extract.filters import filter_reason
    from wildreward.extract.turns import extract_turns

    rows = []
    for conv in convs.to_pylist():
        for turn in extract_turns(conv):
            turn["drop_reason"] = filter_reason(turn, cfg)
            rows.append(turn)
    return schema.to_table(rows, schema.TURN)


def keep_null(table: pa.Table, column: str) -> pa.Table:
    return table.filter(pc.is_null(table[column]))


def drop_ids(table: pa.Table, ids: pa.Array) -> pa.Table:
    return table.filter(pc.invert(pc.is_in(table["id"], value_set=ids)))


class AnnotateUDF:
    """Actor: one LLM backend per actor, rating the feedback of each turn."""

    def __init__(self, cfg: AnnotatorConfig):
        from wildreward.extract.labellers import make_labeller

        self.annotate = make_labeller(cfg)

    def __call__(self, turns: pa.Table) -> pa.Table:
        rows = turns.to_pylist()
        for row, result in zip(rows, self.annotate(rows)):
            row.pop("drop_reason", None)
            row.update(result)
        return schema.to_table(rows, schema.ANNOTATED)


REFUSAL_COLUMNS = ["id", "label", "query", "response", "error"]


def refusal_candidates_udf(table: pa.Table, cfg: RefusalConfig) -> pa.Table:
    from wildreward.extract.refine import needs_refusal_check

    rows = [r for r in table.to_pylist()
            if r["error"] is None and needs_refusal_check(r["label"], r["response"], cfg)]
    return pa.Table.from_pylist([{k: r[k] for k in ("id", "query", "response")} for r in rows],
                                schema=pa.schema([("id", pa.string()), ("query", pa.string()), ("response", pa.string())]))


class JudgeUDF:
    """Actor: the refusal judge (the same LLM as the annotator, as in the paper; the cascade's LLM when the
    labeller is a classifier)."""

    def __init__(self, cfg: AnnotatorConfig):
        from wildreward.extract.annotate import RefusalJudge
        from wildreward.extract.labellers import llm_config

        self.judge = RefusalJudge(llm_config(cfg))

    def __call__(self, rows: pa.Table) -> pa.Table:
        items = rows.to_pylist()
        out = [{"id": row["id"], **result} for row, result in zip(items, self.judge(items))]
        return schema.to_table(out, schema.VERDICT)


def candidates_udf(group: pa.Table, lookahead: int) -> pa.Table:
    from wildreward.extract.mine import find_mining_candidates

    return schema.to_table(find_mining_candidates(group.to_pylist(), lookahead), schema.CANDIDATE)


class SimilarityUDF:
    def __init__(self, encoder: str, batch_tokens: int):
        from wildreward.extract.mine import SimilarityScorer
        from wildreward.models import resolve_model

        self.score = SimilarityScorer(resolve_model(encoder), batch_tokens)

    def __call__(self, candidates: pa.Table) -> pa.Table:
        sims = self.score(candidates.to_pylist()) if candidates.num_rows else []
        return candidates.append_column("similarity", pa.array(sims, pa.float64()))


def final_udf(table: pa.Table, mined: dict, verdicts: dict, variant: str) -> pa.Table:
    from wildreward.extract.refine import apply_refusal_verdict, map_label

    rows = []
    for row in table.to_pylist():
        raw, drop = row["label"], None
        mine = mined.get(row["id"])
        verdict = verdicts.get(row["id"])
        if row["error"] is not None:
            drop = "annotation_error"
        elif verdict is not None and verdict[1] is not None:
            drop = "refusal_judge_error"
        else:
            if mine is not None:
                raw = mine["label"]
            if verdict is not None:
                raw = apply_refusal_verdict(raw, verdict[0], variant)
        level = map_label(raw) if drop is None else None
        if drop is None and level is None:
            drop = "neutral"
        messages = list(row["history"]) + [{"role": "user", "content": row["query"]},
                                           {"role": "assistant", "content": row["response"]}]
        rows.append({**row, "annotator_label": row["label"], "raw_label": raw if drop is None else None,
                     "label": level, "mined_from": mine["mined_from"] if mine else None,
                     "similarity": mine["similarity"] if mine else None,
                     "refusal_verdict": verdict[0] if verdict else None, "messages": messages,
                     "text": build_rm_text(row["history"], row["query"], row["response"]), "drop_reason": drop})
    return schema.to_table(rows, schema.FINAL)


def split_udf(table: pa.Table, test_ids: pa.Array, test: bool) -> pa.Table:
    kept = keep_null(table, "drop_reason")
    in_test = pc.is_in(kept["conversation_id"], value_set=test_ids)
    return kept.filter(in_test if test else pc.invert(in_test))


# ---------------------------------------------------------------- driver side

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


def written_ids(stage_dir: Location) -> pa.Array:
    """Ids already written by an interrupted run; files cut off mid-write are deleted (their rows redo)."""
    ids = []
    for path in stage_dir.glob("*.parquet"):
        try:
            ids.append(pq.read_table(path.path, columns=["id"], filesystem=path.fs)["id"])
        except (pa.ArrowInvalid, OSError):
            log(f"removing unreadable partial file {path.name}")
            path.unlink()
    return pa.concat_arrays([c.combine_chunks() for c in ids]) if ids else pa.array([], pa.string())


def fingerprint(*parts) -> str:
    """Short hash of the config parts a stage's output depends on (upstream keys included)."""
    blob = json.dumps([p.model_dump(mode="json") if hasattr(p, "model_dump") else p for p in parts], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_stage(out: Location, name: str, key: str, build: Callable[[Location], dict], resumable: bool = False) -> dict:
    """Run ``build`` into ``stages/<name>`` unless a finished run with the same config ``key`` is there.

    Resumable (LLM) stages keep a partial output written under the same key and refuse to mix in rows made
    under another one: paid-for annotations are never deleted behind the user's back.
    """
    stage_dir = out / "stages" / name
    marker, key_file = stage_dir / "_DONE.json", stage_dir / "_CONFIG_KEY"
    same = key_file.exists() and key_file.read_text() == key
    if marker.exists() and same:
        log(f"stage {name}: already done, reusing {stage_dir}")
        return json.loads(marker.read_text())
    if stage_dir.exists():
        if resumable and not same and any(stage_dir.glob("*.parquet")):
            raise RuntimeError(f"{stage_dir} holds output made with a different config; use another output_dir "
                               f"or delete that folder to redo stage {name}")
        if not resumable or not same:
            stage_dir.rmtree()
    stage_dir.mkdir()
    key_file.write_text(key)
    log(f"stage {name}: running")
    start = time.time()
    stats = build(stage_dir)
    stats["seconds"] = round(time.time() - start, 1)
    stats["started_at"] = round(start, 1)  # epoch seconds: lines stages up with outside traces (memory, load)
    marker.write_text(json.dumps(stats, indent=2))
    log(f"stage {name}: done in {stats['seconds']} s")
    return stats


def unavailable(errors) -> pa.Array:
    """Mask of the error strings that mark a row whose backend stayed unreachable (retried by the next run)."""
    return pc.fill_null(pc.starts_with(errors.cast(pa.string()), UNAVAILABLE), False)


def drop_unavailable(stage_dir: Location, column: str) -> int:
    """Take the rows whose backend was unreachable out of an earlier run's files, so that resuming retries them.
    Files are rewritten in place: one cut off by a crash is removed by ``written_ids`` and its rows are redone."""
    dropped = 0
    for path in stage_dir.glob("*.parquet"):
        try:
            failed = unavailable(pq.read_table(path.path, columns=[column], filesystem=path.fs)[column])
        except (pa.ArrowInvalid, OSError):
            continue  # a partial file: written_ids removes it
        n = pc.sum(failed).as_py() or 0
        if n:
            table = pq.read_table(path.path, filesystem=path.fs).filter(pc.invert(failed))
            if table.num_rows:
                pq.write_table(table, path.path, filesystem=path.fs)
            else:
                path.unlink()
            dropped += n
    return dropped


def run_llm_stage(ds, stage_dir: Location, udf: type, cfg: AnnotatorConfig, error_column: str) -> int:
    """Resume-aware actor-pool pass: skip ids already in ``stage_dir``, append the rest. Returns rows redone.

    Rows whose backend stayed unreachable are retried by the next run. When more than
    ``cfg.max_unavailable_rate`` of the rows end that way (an endpoint down mid-run), the stage fails rather than
    finishing: a finished stage would keep them as errors for good."""
    retried = drop_unavailable(stage_dir, error_column)
    if retried:
        log(f"retrying {retried} rows whose backend was unavailable in the earlier run")
    done = written_ids(stage_dir)
    if len(done):
        log(f"resuming: {len(done)} rows already written")
        ds = rc.map_tables(ds, drop_ids, ids=done)
    # An actor handles one batch at a time: an HTTP batch must hold several times the request concurrency or
    # request slots idle at every batch boundary.
    batch = max(cfg.batch_size, 4 * cfg.http.concurrency) if cfg.backend == "http" else cfg.batch_size
    # Small blocks = small output files = little work lost to a crash (one file is written per block).
    todo = rc.rechunk(ds, rows_per_block=8 * batch)
    n = todo.count()  # a streaming pass over text, no LLM; nothing left -> no LLM actors are started
    if n:
        rc.write_parquet(rc.map_with_actors(todo, udf, {"cfg": cfg}, batch_size=batch,
                                            min_actors=cfg.min_actors, max_actors=cfg.max_actors,
                                            num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus), str(stage_dir))
    errors = read_table(stage_dir, [error_column])[error_column]
    failed = pc.sum(unavailable(errors)).as_py() or 0
    if failed > cfg.max_unavailable_rate * len(errors):
        raise RuntimeError(f"{stage_dir.name}: {failed} of {len(errors)} rows got no answer from the annotator "
                           f"backend after {cfg.http.max_retries} retries (over max_unavailable_rate="
                           f"{cfg.max_unavailable_rate}); fix the endpoint and run again with the same output_dir: "
                           "only those rows are redone")
    return n


def check_unique(stage_dir: Location, expected: int, what: str) -> None:
    ids = read_table(stage_dir, ["id"])["id"]
    unique = len(pc.unique(ids))
    if unique != len(ids) or len(ids) != expected:
        raise RuntimeError(f"{what}: {len(ids)} rows written, {unique} unique ids, {expected} expected")


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


def run_extract(cfg: ExtractConfig) -> dict:
    """Run (or resume) the whole extraction stage; returns the stats also written to ``stats.json``."""
    if cfg.annotator.backend == "classifier" and not cfg.annotator.classifier.model_dir:
        raise ValueError("annotator.backend=classifier needs annotator.classifier.model_dir (a model trained by "
                         "`wildreward labeller`)")
    out = Location.parse(cfg.output_dir)
    save_config(cfg, out, "extract")
    rc.init_ray(object_store_fraction=cfg.object_store_fraction)
    stages = out / "stages"
    stats: dict = {}
    # Everything that changes what the annotator answers; not throughput settings (actors, batch sizes).
    llm = cfg.annotator.model_dump(include={"backend", "mode", "model", "unclear_feedback", "temperature", "max_tokens",
                                            "max_field_chars", "engine_kwargs"})
    llm["extra_body"] = cfg.annotator.http.extra_body
    if cfg.annotator.backend == "classifier":
        llm["classifier"] = cfg.annotator.classifier.model_dump(exclude={"batch_size"})
    keys = {"read": fingerprint(cfg.read)}
    keys["turns"] = fingerprint(keys["read"], cfg.filters)
    keys["annotate"] = fingerprint(keys["turns"], llm)
    keys["refusal"] = fingerprint(keys["annotate"], cfg.refusal)
    keys["mining"] = fingerprint(keys["annotate"], cfg.mining)
    keys["final"] = fingerprint(keys["refusal"], keys["mining"])
    keys["split"] = fingerprint(keys["final"], cfg.split)

    def read(d: Location) -> dict:
        from wildreward.extract.read import plan_read_tasks

        skipped: list = []
        specs = plan_read_tasks(cfg.read, skipped)
        log(f"reading {len(specs)} read tasks from {len(cfg.read.paths)} path(s); {len(skipped)} file(s) in them "
            "skipped as not chat logs")
        rc.write_parquet(rc.map_tables(rc.from_items(specs), read_udf, cfg=cfg.read, tally=str(d / TALLY)), str(d))
        counted = read_stats(d)
        # quarantine/ is written with the read stage, so it is redone exactly when the read stage is.
        (out / "quarantine").rmtree()
        if counted["quarantined"]:
            q = rc.read_parquet(str(d), columns=["source_file", "line", "conversation_id", "quarantine_reason",
                                                 "raw"])
            rc.write_parquet(rc.map_tables(q, lambda t: t.filter(pc.is_valid(t["quarantine_reason"]))),
                             str(out / "quarantine"))
        return {**counted, "skipped_files": len(skipped)}

    stats["read"] = run_stage(out, "read", keys["read"], read)

    def turns(d: Location) -> dict:
        convs = rc.map_tables(rc.read_parquet(str(stages / "read")), keep_null, column="quarantine_reason")
        rc.write_parquet(rc.map_tables(convs, turns_udf, rows_per_batch=UDF_BATCH_ROWS, cfg=cfg.filters), str(d))
        t = read_table(d, ["drop_reason", "language"])
        from wildreward.extract.filters import RULES

        dropped = counts(t, "drop_reason")
        kept = dropped.pop("null", 0)
        return {"turns": t.num_rows, "kept": kept, "dropped": {r: dropped.get(r, 0) for r in RULES},
                "languages_before_filter": dict(sorted(counts(t, "language").items(), key=lambda kv: -kv[1])[:15])}

    stats["turns"] = run_stage(out, "turns", keys["turns"], turns)

    def annotate(d: Location) -> dict:
        kept = rc.map_tables(rc.read_parquet(str(stages / "turns")), keep_null, column="drop_reason")
        redone = run_llm_stage(kept, d, AnnotateUDF, cfg.annotator, "error")
        check_unique(d, stats["turns"]["kept"], "annotate")
        t = read_table(d, ["label", "error", "annotation"])
        unseen = pc.sum(pc.fill_null(pc.match_substring(t["annotation"], "unseen_language"), False)).as_py() or 0
        return {"annotated": t.num_rows, "annotated_this_run": redone, "errors": t.num_rows - t["error"].null_count,
                "error_kinds": prefix_counts(t["error"]), "unseen_language": unseen,
                "labels": counts(t.filter(pc.is_null(t["error"])), "label"),
                "backend": cfg.annotator.backend, "mode": cfg.annotator.mode, "model": cfg.annotator.model}

    stats["annotate"] = run_stage(out, "annotate", keys["annotate"], annotate, resumable=True)

    def refusal(d: Location) -> dict:
        if not cfg.refusal.enabled:
            return {"enabled": False}
        cands = rc.map_tables(rc.read_parquet(str(stages / "annotate"), columns=REFUSAL_COLUMNS),
                              refusal_candidates_udf, rows_per_batch=UDF_BATCH_ROWS, cfg=cfg.refusal)
        run_llm_stage(cands, d, JudgeUDF, cfg.annotator, "judge_error")
        t = read_table(d, ["id", "verdict", "judge_error"])
        return {"enabled": True, "variant": cfg.refusal.variant, "judged": t.num_rows,
                "verdicts": counts(t.filter(pc.is_null(t["judge_error"])), "verdict"),
                "judge_errors": prefix_counts(t["judge_error"])}

    stats["refusal"] = run_stage(out, "refusal", keys["refusal"], refusal, resumable=True)

    def mining(d: Location) -> dict:
        if not cfg.mining.enabled:
            return {"enabled": False}
        labelled = rc.map_tables(
            rc.read_parquet(str(stages / "annotate"), columns=["id", "conversation_id", "turn_index", "label", "feedback"]),
            lambda t: t.filter(pc.is_valid(t["label"])))
        cands = rc.group_map(labelled, "conversation_id", lambda g: candidates_udf(g, cfg.mining.lookahead))
        scored = rc.map_with_actors(cands, SimilarityUDF, {"encoder": cfg.mining.encoder,
                                                           "batch_tokens": cfg.mining.batch_tokens},
                                    batch_size=cfg.mining.batch_size, num_cpus=cfg.mining.num_cpus)
        rc.write_parquet(scored, str(d))
        t = read_table(d, ["id"])
        return {"enabled": True, "candidates": t.num_rows, "threshold": cfg.mining.threshold}

    stats["mining"] = run_stage(out, "mining", keys["mining"], mining)

    def final(d: Location) -> dict:
        from wildreward.extract.mine import resolve_mining

        mined: dict = {}
        if cfg.mining.enabled:
            c = read_table(stages / "mining", ["id", "future_id", "offset", "future_label", "similarity"]).to_pylist()
            mined = resolve_mining(c, [r["similarity"] for r in c], cfg.mining.threshold, cfg.mining.mined_label)
        verdicts: dict = {}
        if cfg.refusal.enabled:
            verdicts = {r["id"]: (r["verdict"], r["judge_error"])
                        for r in read_table(stages / "refusal", ["id", "verdict", "judge_error"]).to_pylist()}
        rc.write_parquet(rc.map_tables(rc.read_parquet(str(stages / "annotate")), final_udf,
                                       rows_per_batch=UDF_BATCH_ROWS, mined=mined,
                                       verdicts=verdicts, variant=cfg.refusal.variant), str(d))
        check_unique(d, stats["annotate"]["annotated"], "final")
        t = read_table(d, ["id", "drop_reason", "label", "refusal_verdict", "raw_label", "annotator_label"])
        dropped = counts(t, "drop_reason")
        kept = dropped.pop("null", 0)
        # Kept rows whose label mining set, and those the refusal verdict changed, each against the label it had
        # before that step (mining comes first), so neither count takes in the other's changes.
        mined_kept = relabelled = 0
        for row in t.filter(pc.is_null(t["drop_reason"])).to_pylist():
            before = mined[row["id"]]["label"] if row["id"] in mined else row["annotator_label"]
            relabelled += row["refusal_verdict"] is not None and row["raw_label"] != before
            mined_kept += row["id"] in mined and row["raw_label"] == before
        return {"kept": kept, "dropped": dropped, "mined": len(mined), "mined_kept": mined_kept,
                "refusal_relabelled": relabelled, "levels": counts(t.filter(pc.is_null(t["drop_reason"])), "label")}

    stats["final"] = run_stage(out, "final", keys["final"], final)

    def split(d: Location) -> dict:
        from wildreward.extract.split import assign_test_conversations

        t = read_table(stages / "final", ["conversation_id", "drop_reason"])
        t = t.filter(pc.is_null(t["drop_reason"]))
        per_conv = {r["values"]: r["counts"] for r in pc.value_counts(t["conversation_id"]).to_pylist()}
        if t.num_rows and cfg.split.test_size >= t.num_rows:
            log(f"WARNING: split.test_size={cfg.split.test_size} >= the {t.num_rows} kept rows: every row goes to "
                "test and train is empty; set split.test_size lower to train on this data")
        test_ids = pa.array(sorted(assign_test_conversations(per_conv, cfg.split.test_size, cfg.split.seed)),
                            pa.string())
        for name, is_test in (("train", False), ("test", True)):
            (out / name).rmtree()
            rc.write_parquet(rc.map_tables(rc.read_parquet(str(stages / "final")), split_udf, test_ids=test_ids,
                                           test=is_test), str(out / name))
        rows = {name: read_table(out / name, ["conversation_id"]) for name in ("train", "test")}
        leak = set(rows["train"]["conversation_id"].to_pylist()) & set(rows["test"]["conversation_id"].to_pylist())
        if leak:
            raise RuntimeError(f"{len(leak)} conversations are in both train and test")
        return {name: {"rows": r.num_rows, "conversations": len(pc.unique(r["conversation_id"]))}
                for name, r in rows.items()}

    stats["split"] = run_stage(out, "split", keys["split"], split)
    write_report(out, cfg, stats)
    log(f"outputs: {out / 'train'}, {out / 'test'}; stats: {out / 'stats.json'}; card: {out / 'dataset_card.md'}")
    return stats
