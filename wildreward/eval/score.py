"""Score (history, query, response) examples with a reward model or a baseline.

Every scorer returns :class:`Scored`: one score or ``None`` per input example, with the error that explains a
``None``. A failure is never replaced by a default score; the metrics leave such pairs out and count them.
Identical examples are scored once (a benchmark reply often appears in several pairs, RM-Bench's in three).
"""
from __future__ import annotations

import json
import math
from typing import Callable, NamedTuple, Sequence

import numpy as np
import pyarrow as pa

from wildreward import ray_compat as rc
from wildreward.rm import META_FILE
from wildreward.storage import Location
from wildreward.serve.client import RewardClient, RewardServiceError

SCORED_SCHEMA = pa.schema([("idx", pa.int64()), ("score", pa.float64()), ("error", pa.string())])
ENDPOINT_CHUNK = 512  # examples between two progress lines; the client sends them concurrently


class Scored(NamedTuple):
    scores: list[float | None]
    errors: list[str | None]


def describe(err: Exception) -> str:
    return f"{type(err).__name__}: {err}"[:500]


def as_item(ex: dict) -> dict:
    """The fields a reward model reads (the request item of `wildreward serve`)."""
    return {"history": ex.get("history") or [], "query": ex.get("query"), "response": ex.get("response")}


def example_key(ex: dict) -> str:
    return json.dumps(as_item(ex), ensure_ascii=False)


def deduplicate(examples: Sequence[dict]) -> tuple[list[dict], list[int]]:
    """-> (distinct examples in first-seen order, position of each input example in that list)."""
    first: dict[str, int] = {}
    unique, where = [], []
    for ex in examples:
        key = example_key(ex)
        if key not in first:
            first[key] = len(unique)
            unique.append(ex)
        where.append(first[key])
    return unique, where


def check_model_dir(path: str) -> None:
    if not (Location.parse(path) / META_FILE).exists():
        raise FileNotFoundError(f"{path} is not a wildreward reward model (no {META_FILE}); "
                                "give the model/ folder written by `wildreward train`")


def score_examples(examples: Sequence[dict], *, model_dir: str | None = None, endpoint: str | None = None,
                   batch_size: int = 32, num_actors: int = 1, num_cpus: float = 1.0, num_gpus: float = 0.0,
                   dtype: str = "fp32") -> Scored:
    """Reward of each example from a model directory (Ray Data actor pool) or a served model (``endpoint``)."""
    if (model_dir is None) == (endpoint is None):
        raise ValueError("give exactly one of model_dir and endpoint")
    unique, where = deduplicate(examples)
    if endpoint is not None:
        scored = score_with_endpoint(unique, endpoint, batch_size)
    else:
        check_model_dir(model_dir)
        scored = score_with_actors(unique, model_dir, batch_size=batch_size, num_actors=num_actors,
                                   num_cpus=num_cpus, num_gpus=num_gpus, dtype=dtype)
    return Scored([scored.scores[k] for k in where], [scored.errors[k] for k in where])


# ---------------------------------------------------------------- actor pool

class RewardScorer:
    """Actor: holds one RewardModel; rows are {idx, example (JSON)} so every block has the same Arrow schema,
    whatever the history looks like."""

    def __init__(self, model_dir: str, num_gpus: float, dtype: str):
        import torch

        from wildreward.rm import RewardModel

        self.rm = RewardModel(model_dir, device="cuda" if num_gpus > 0 else "cpu",
                              dtype=torch.bfloat16 if dtype == "bf16" else torch.float32)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = [json.loads(e) for e in batch["example"].to_pylist()]
        try:
            results = [(s, None) for s in self.rm.score(rows)]
        except Exception:  # noqa: BLE001 - find the rows that fail and score the others
            results = [self.score_one(row) for row in rows]
        results = [checked(s, e) for s, e in results]
        return pa.table({"idx": batch["idx"], "score": [s for s, _ in results], "error": [e for _, e in results]},
                        schema=SCORED_SCHEMA)

    def score_one(self, row: dict) -> tuple[float | None, str | None]:
        try:
            return self.rm.score([row])[0], None
        except Exception as err:  # noqa: BLE001 - recorded per row and counted in the report
            return None, describe(err)


def checked(score: float | None, error: str | None) -> tuple[float | None, str | None]:
    if score is not None and not math.isfinite(score):
        return None, f"non-finite score {score}"
    return score, error


def score_with_actors(examples: list[dict], model_dir: str, *, batch_size: int, num_actors: int, num_cpus: float,
                      num_gpus: float, dtype: str) -> Scored:
    if not examples:
        return Scored([], [])
    rc.init_ray()
    items = [{"idx": i, "example": json.dumps(as_item(ex), ensure_ascii=False)} for i, ex in enumerate(examples)]
    ds = rc.from_items(items, num_blocks=math.ceil(len(items) / batch_size))
    ds = rc.map_with_actors(ds, RewardScorer, {"model_dir": model_dir, "num_gpus": num_gpus, "dtype": dtype},
                            batch_size=batch_size, min_actors=1, max_actors=num_actors, num_cpus=num_cpus,
                            num_gpus=num_gpus)
    scores: list[float | None] = [None] * len(examples)
    errors: list[str | None] = ["not returned by the scoring pool"] * len(examples)
    for row in ds.take_all():
        scores[row["idx"]], errors[row["idx"]] = row["score"], row["error"]
    return Scored(scores, errors)


# ---------------------------------------------------------------- served model

def score_with_endpoint(examples: list[dict], url: str, batch_size: int) -> Scored:
    scores: list[float | None] = []
    errors: list[str | None] = []
    with RewardClient(url, texts_per_request=batch_size) as client:
        try:
            client.info()
        except Exception as err:  # noqa: BLE001 - any failure here means no service to evaluate
            raise RewardServiceError(f"reward service at {url} is not reachable: {describe(err)}") from None
        for start in range(0, len(examples), ENDPOINT_CHUNK):
            chunk = examples[start:start + ENDPOINT_CHUNK]
            try:
                results = [(r["reward"], None) for r in client.score([as_item(ex) for ex in chunk])]
            except RewardServiceError:
                # One bad item fails its whole request: retry one by one so only the bad items are lost.
                results = [score_one(client, ex) for ex in chunk]
            for s, e in results:
                s, e = checked(s, e)
                scores.append(s)
                errors.append(e)
            print(f"[eval] {url}: {len(scores)}/{len(examples)} distinct examples scored "
                  f"({sum(e is not None for e in errors)} failed)", flush=True)
    return Scored(scores, errors)


def score_one(client: RewardClient, ex: dict) -> tuple[float | None, str | None]:
    try:
        return client.score([as_item(ex)])[0]["reward"], None
    except RewardServiceError as err:
        return None, describe(err)


# ---------------------------------------------------------------- baselines

def well_formed(ex: dict) -> dict:
    """Raise on an example no model can read, so the baselines fail on it just as the models do."""
    if not isinstance(ex.get("query"), str) or not isinstance(ex.get("response"), str):
        raise TypeError("query and response must be strings")
    return ex


def score_each(examples: Sequence[dict], fn: Callable[[dict], float]) -> Scored:
    scores: list[float | None] = []
    errors: list[str | None] = []
    for ex in examples:
        try:
            scores.append(float(fn(well_formed(ex))))
            errors.append(None)
        except Exception as err:  # noqa: BLE001 - recorded per example and counted in the report
            scores.append(None)
            errors.append(describe(err))
    return Scored(scores, errors)


def length_scores(examples: Sequence[dict]) -> Scored:
    """The longer reply wins: score = its length in characters."""
    return score_each(examples, lambda ex: len(ex["response"]))


def random_scores(examples: Sequence[dict], seed: int) -> Scored:
    """Seeded uniform scores, one per distinct example (a repeated reply keeps its score)."""
    unique, _ = deduplicate(examples)
    draws = dict(zip(map(example_key, unique), np.random.default_rng(seed).uniform(size=len(unique))))
    return score_each(examples, lambda ex: draws[example_key(ex)])
