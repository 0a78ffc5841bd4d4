"""The Ray Data UDFs of the extraction stages: functions and actor classes that run in Ray workers on pyarrow
batches. Each one wraps a plain-Python step of its own module (read, turns, filters, labellers, refine, mine),
imported inside the call so a worker only loads what its stage needs.
"""
from __future__ import annotations

import hashlib
import json
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from wildreward.extract import schema
from wildreward.extract.config import AnnotatorConfig, FilterConfig, ReadConfig, RefusalConfig
from wildreward.extract.refine import apply_refusal_verdict, map_label
from wildreward.storage import Location
from wildreward.template import build_rm_text

READ_BATCH_ROWS = 1000
TALLY = "_tally"  # read stage: each read task's own count of the rows it made, checked against the rows written
REFUSAL_COLUMNS = ["id", "label", "query", "response", "error"]


# ---------------------------------------------------------------- table filters

def keep_null(table: pa.Table, column: str) -> pa.Table:
    return table.filter(pc.is_null(table[column]))


def keep_valid(table: pa.Table, column: str) -> pa.Table:
    return table.filter(pc.is_valid(table[column]))


def keep_at_least(table: pa.Table, column: str, value: int) -> pa.Table:
    return table.filter(pc.fill_null(pc.greater_equal(table[column], value), False))


def drop_ids(table: pa.Table, ids: pa.Array) -> pa.Table:
    return table.filter(pc.invert(pc.is_in(table["id"], value_set=ids)))


# ---------------------------------------------------------------- read and turns

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


# ---------------------------------------------------------------- LLM stages

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


def lookahead_udf(turns: pa.Table, ids: pa.Array, cfg: FilterConfig) -> pa.Table:
    """The turns among ``ids`` that mining needs a label for and the annotate stage did not give one: dropped by a
    rule that applies after mining only (see ``mine.lends_label``)."""
    from wildreward.extract.mine import lends_label

    dropped = turns.filter(pc.and_(pc.is_valid(turns["drop_reason"]), pc.is_in(turns["id"], value_set=ids)))
    return dropped.filter(pa.array([lends_label(t, cfg) for t in dropped.to_pylist()], pa.bool_()))


def refusal_candidates_udf(table: pa.Table, cfg: RefusalConfig) -> pa.Table:
    from wildreward.extract.refine import needs_refusal_check

    rows = [r for r in table.to_pylist()
            if r["error"] is None and needs_refusal_check(r["label"], r["response"], cfg)]
    columns = ("id", "query", "response")
    return pa.Table.from_pylist([{k: r[k] for k in columns} for r in rows],
                                schema=pa.schema([(k, pa.string()) for k in columns]))


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


# ---------------------------------------------------------------- mining

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


# ---------------------------------------------------------------- final rows and split

def final_udf(table: pa.Table, mined: dict, verdicts: dict, variant: str) -> pa.Table:
    return schema.to_table([final_row(row, mined.get(row["id"]), verdicts.get(row["id"]), variant)
                            for row in table.to_pylist()], schema.FINAL)


def final_row(row: dict, mine: dict | None, verdict: tuple | None, variant: str) -> dict:
    """An annotated turn with its final label: mining first, then the refusal verdict; or the reason it is
    dropped. ``verdict`` is (verdict, judge_error)."""
    raw, drop = row["label"], None
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
    return {**row, "annotator_label": row["label"], "raw_label": raw if drop is None else None,
            "label": level, "mined_from": mine["mined_from"] if mine else None,
            "similarity": mine["similarity"] if mine else None,
            "refusal_verdict": verdict[0] if verdict else None, "messages": messages,
            "text": build_rm_text(row["history"], row["query"], row["response"]), "drop_reason": drop}


def split_udf(table: pa.Table, test_ids: pa.Array, test: bool) -> pa.Table:
    kept = keep_null(table, "drop_reason")
    in_test = pc.is_in(kept["conversation_id"], value_set=test_ids)
    return kept.filter(in_test if test else pc.invert(in_test))
